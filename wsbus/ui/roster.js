// Who is online per channel: `roster` answers (connected members and the registered
// roster), kept current by `presence` frames, plus the leases in force (`leases`).
// A name that went down stays listed, greyed, so an operator sees who left.

import {clear, rosterBlock} from './view.js';

const REFRESH_DELAY = 250; // presence often comes in bursts (a bridge with many names)

export class Roster {
  constructor(box, onNames) {
    this.box = box;
    this.onNames = onNames;
    this.list = []; // channels shown, in order
    this.members = new Map(); // channel -> Map name -> member
    this.leases = new Map(); // channel -> [lease]
    this.timers = new Map(); // channel -> pending refresh
    this.mail = new Map(); // "channel name" -> direct messages not yet acknowledged
  }

  /** hub_status's `pending`: mail waiting for each name (without a final receipt). */
  waiting(list) {
    this.mail = new Map(list.map((w) => [`${w.channel} ${w.name}`, w]));
    this.render();
  }

  reset() {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.list = [];
    this.members.clear();
    this.leases.clear();
    this.mail.clear();
    this.render();
  }

  channels(list) {
    this.list = list;
    for (const c of list) if (!this.members.has(c)) this.members.set(c, new Map());
    this.render();
  }

  refreshAll(conn) {
    for (const c of this.list) this.refresh(conn, c);
    this.refreshLeases(conn);
  }

  /** Apply a presence frame at once, then ask the hub for the whole roster. */
  presence(p, conn) {
    const byName = this.members.get(p.channel);
    if (!byName) return;
    const m = byName.get(p.name) ?? {name: p.name};
    m.online = p.state === 'up';
    for (const k of ['kind', 'model', 'role', 'host']) if (p[k]) m[k] = p[k];
    if (!m.online) m.seen = p.ts;
    byName.set(p.name, m);
    this.onNames([p.name]);
    this.render();
    clearTimeout(this.timers.get(p.channel));
    this.timers.set(p.channel, setTimeout(() => {
      this.timers.delete(p.channel);
      this.refresh(conn, p.channel);
    }, REFRESH_DELAY));
  }

  async refresh(conn, channel) {
    let res;
    try {
      res = await conn.request({op: 'roster', channel});
    } catch {
      return; // down or refused: the next presence or reconnect asks again
    }
    const before = this.members.get(channel);
    if (!before) return;
    const now = new Map();
    for (const m of res.members) {
      now.set(m.name, {...m, online: true});
    }
    for (const r of res.registered ?? []) {
      const m = now.get(r.name) ?? {name: r.name, online: false, seen: before.get(r.name)?.seen};
      for (const k of ['model', 'role', 'host']) if (!m[k] && r[k]) m[k] = r[k];
      if (r.state) m.tmuxState = r.state;
      now.set(r.name, m);
    }
    // names seen this session that are gone now: down
    for (const [name, m] of before) {
      if (!now.has(name)) {
        // gone without a presence frame (a hub restart): down since it was noticed
        const seen = m.online ? Date.now() / 1000 : m.seen;
        now.set(name, {...m, online: false, connections: 0, seen});
      }
    }
    this.members.set(channel, now);
    this.onNames([...now.keys()]);
    this.render();
  }

  async refreshLeases(conn) {
    await Promise.all(this.list.map(async (channel) => {
      try {
        const res = await conn.request({op: 'leases', channel});
        this.leases.set(channel, res.leases);
      } catch {
        // an older hub or a refused channel: no leases shown
      }
    }));
    this.render();
  }

  render() {
    clear(this.box);
    for (const channel of this.list) {
      const members = [...(this.members.get(channel) ?? new Map()).values()].sort(
        (a, b) => Number(b.online) - Number(a.online) || a.name.localeCompare(b.name),
      );
      for (const m of members) m.waiting = this.mail.get(`${channel} ${m.name}`);
      this.box.append(rosterBlock(channel, members, this.leases.get(channel) ?? []));
    }
  }
}
