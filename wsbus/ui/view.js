// DOM builders. Everything from the bus is hostile input: it only ever reaches the page
// through textContent, attributes set with setAttribute/dataset, and class names chosen
// here (never from data). No innerHTML anywhere.

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

const pad = (n) => String(n).padStart(2, '0');

export function clock(ts) {
  const d = new Date(ts * 1000);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function stamp(ts) {
  return new Date(ts * 1000).toISOString();
}

export function duration(seconds) {
  let s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

// A receipt status becomes a class from this fixed list, never from the data itself.
const STATUSES = new Set(['read', 'submitted', 'unsubmitted', 'failed', 'session_down']);

/**
 * One event as a row. `me`: the page's names (direct events to them are marked);
 * `onThread(channel, thread)`: a click on the thread's button.
 */
export function eventRow(ev, me, onThread) {
  const row = el('article', 'ev');
  row.dataset.testid = 'event';
  row.dataset.seq = String(ev.seq);
  row.dataset.channel = ev.channel;
  row.dataset.from = ev.from;
  row.dataset.to = ev.to;
  row.dataset.thread = ev.thread ?? '';
  if (me.has(ev.from)) row.classList.add('ev-own');
  if (me.has(ev.to)) row.classList.add('ev-mine');
  if (ev.to === '*') row.classList.add('ev-broadcast');

  const head = el('header', 'ev-head');
  const time = el('time', 'ev-time', clock(ev.ts));
  time.dateTime = stamp(ev.ts);
  time.title = `${stamp(ev.ts)} · seq ${ev.seq}`;
  head.append(time, el('span', 'ev-chan', `#${ev.channel}`));
  const route = el('span', 'ev-route');
  route.append(
    el('span', 'ev-from', ev.from),
    el('span', 'ev-arrow', '→'),
    el('span', ev.to === '*' ? 'ev-to ev-all' : 'ev-to', ev.to === '*' ? 'everyone' : ev.to),
  );
  head.append(route);
  if (ev.thread) {
    const link = el('button', 'ev-thread', ev.thread);
    link.type = 'button';
    link.dataset.testid = 'thread-link';
    link.title = `open thread ${ev.thread}`;
    link.addEventListener('click', () => onThread(ev.channel, ev.thread));
    head.append(link);
  }
  if (ev.kind && ev.kind !== 'agent') head.append(el('span', 'ev-kind', ev.kind));
  if (ev.loop && Object.keys(ev.loop).length) {
    const counts = Object.entries(ev.loop).map(([n, c]) => `${n}: ${c}`).join(', ');
    head.append(el('span', 'ev-loop', `loop ${counts}`));
  }
  head.append(el('span', 'ev-seq', String(ev.seq)));

  const body = el('div', 'ev-body', ev.body);
  body.dataset.testid = 'event-body';
  const receipts = el('div', 'ev-receipts');
  receipts.dataset.testid = 'receipts';
  row.append(head, body, receipts);
  return row;
}

/** Replace the receipts shown on a row: the latest status per recipient. */
export function showReceipts(row, receipts) {
  const box = row.querySelector('.ev-receipts');
  if (!box) return;
  clear(box);
  const latest = new Map();
  for (const r of receipts) latest.set(r.by, r);
  for (const r of latest.values()) {
    const status = STATUSES.has(r.status) ? r.status : 'other';
    const chip = el('span', `rc rc-${status}`, `${r.status} by ${r.by} ${clock(r.ts)}`);
    chip.dataset.testid = 'receipt';
    chip.dataset.by = r.by;
    chip.dataset.status = r.status;
    if (r.reason) chip.title = r.reason;
    box.append(chip);
  }
}

export function pendingNote(row, text) {
  const box = row.querySelector('.ev-receipts');
  if (box && !box.firstChild) box.append(el('span', 'rc rc-waiting', text));
}

/** A channel's block in the sidebar: members (online first), then leases. */
export function rosterBlock(channel, members, leases) {
  const block = el('section', 'roster');
  block.dataset.testid = 'roster';
  block.dataset.channel = channel;
  const online = members.filter((m) => m.online).length;
  block.append(el('h3', 'roster-title', `#${channel} · ${online} online`));
  const list = el('ul', 'members');
  for (const m of members) list.append(memberItem(m));
  if (!members.length) list.append(el('li', 'empty', 'nobody yet'));
  block.append(list);
  if (leases.length) {
    block.append(el('h4', 'leases-title', 'Leases'));
    const ul = el('ul', 'leases');
    for (const l of leases) ul.append(leaseItem(l));
    block.append(ul);
  }
  return block;
}

function memberItem(m) {
  const li = el('li', m.online ? 'member online' : 'member offline');
  li.dataset.testid = 'member';
  li.dataset.name = m.name;
  li.dataset.state = m.online ? 'online' : 'offline';
  const dot = el('span', 'dot');
  dot.title = m.online ? 'connected' : 'not connected';
  const line = el('div', 'member-line');
  line.append(dot, el('span', 'member-name', m.name));
  if (m.kind && m.kind !== 'agent') line.append(el('span', 'tag', m.kind));
  if (m.tmuxState === 'up' || m.tmuxState === 'down') {
    const t = el('span', `tag tmux-${m.tmuxState}`, `tmux ${m.tmuxState}`);
    t.title = 'tmux session as last reported by the bridge serving this name';
    line.append(t);
  }
  if (m.connections > 1) line.append(el('span', 'tag', `×${m.connections}`));
  if (m.waiting) {
    const w = el('span', 'tag waiting', `✉ ${m.waiting.count}`);
    w.dataset.testid = 'waiting';
    w.title = `${m.waiting.count} direct message(s) not yet acknowledged; oldest #${m.waiting.oldest_seq} at ${stamp(m.waiting.oldest_ts)}`;
    line.append(w);
  }
  li.append(line);
  const about = [m.model, m.role, m.host, m.tmux && `pane ${m.tmux}`].filter(Boolean).join(' · ');
  if (about) li.append(el('div', 'member-about', about));
  if (!m.online && m.seen) li.append(el('div', 'member-about', `down since ${clock(m.seen)}`));
  return li;
}

function leaseItem(l) {
  const li = el('li', l.exclusive ? 'lease exclusive' : 'lease shared');
  li.dataset.testid = 'lease';
  li.dataset.holder = l.holder;
  li.dataset.id = String(l.id);
  li.append(el('div', 'lease-paths', l.paths.join('  ')));
  const left = l.until - Date.now() / 1000;
  const who = `${l.holder} · ${l.exclusive ? 'exclusive' : 'shared'} · ${duration(left)} left`;
  li.append(el('div', 'member-about', who));
  if (l.reason) li.append(el('div', 'member-about lease-reason', l.reason));
  li.title = `lease ${l.id}, until ${stamp(l.until)}`;
  return li;
}

export function note(text, className = 'note') {
  const n = el('div', className, text);
  n.dataset.testid = 'note';
  return n;
}
