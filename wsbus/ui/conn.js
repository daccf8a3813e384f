// The dashboard's connection to the hub: one websocket on the page's own origin
// (/ws on the HTTP port), the hello, reconnects with backoff, resume from the last seq
// seen, requests answered by ref, sends resent with the same ref after a reconnect
// (the hub stores a ref once), acks queued while down. No DOM here.

export const SUBPROTOCOL = 'wsbus.v1.json';

// Close codes after which retrying unchanged cannot help (docs/PROTOCOL.md).
const FATAL = new Map([
  [1008, 'too many bad frames'],
  [4001, 'unauthorized'],
  [4002, 'bad hello'],
  [4009, 'replaced by a newer connection'],
]);

const BACKOFF_MIN = 500;
const BACKOFF_MAX = 5000;
const REQUEST_TIMEOUT = 15000;
// An application ping now and then notices a dead link (laptop sleep, a proxy that
// dropped the connection) sooner than TCP would.
const PING_EVERY = 25000;
const PING_TIMEOUT = 10000;
// Frames answering a request carry its ref.
const ANSWERS = new Set([
  'history_result', 'roster_result', 'leases_result', 'threads_result', 'pong',
  'hub_status_result',
]);

let refCounter = 0;
function newRef(prefix) {
  refCounter += 1;
  const rnd = crypto.getRandomValues(new Uint32Array(2));
  return `${prefix}-${rnd[0].toString(36)}${rnd[1].toString(36)}-${refCounter}`;
}

export function hubURL() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

/**
 * handlers: {
 *   state(name, detail)   connecting | connected | reconnecting | refused | closed
 *   welcome(frame, fresh) fresh: no resume point was sent (backfill with history)
 *   hubChanged(frame)     a different store answered: what is shown is stale
 *   frame(frame)          every other hub frame (event, receipt, presence, synced, ...)
 * }
 */
export class Connection {
  constructor(settings, handlers) {
    this.settings = settings;
    this.h = handlers;
    this.ws = null;
    this.stopped = true;
    this.lastSeq = null; // the resume point: the highest seq seen once synced
    this.hubId = null;
    this.welcome = null;
    this.backoff = BACKOFF_MIN;
    this.attempt = 0;
    this.timer = null;
    this.pinger = null;
    this.refusal = null; // the error frame that came before a close
    this.dropReason = null; // why the last good connection ended, until the next welcome
    this.requests = new Map(); // ref -> {resolve, reject, timer}
    this.sends = new Map(); // ref -> {frame, resolve, reject}: until ok or error
    this.acks = []; // acks made while down
  }

  get connected() {
    return this.welcome !== null && this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  start() {
    this.stopped = false;
    this.open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    const ws = this.ws;
    this.detach();
    if (ws) ws.close(1000, 'closed by the page');
    this.failAll(new Error('disconnected'));
    for (const s of this.sends.values()) s.reject(new Error('disconnected'));
    this.sends.clear();
    this.h.state('closed', {});
  }

  open() {
    this.attempt += 1;
    this.h.state('connecting', {attempt: this.attempt, reason: this.dropReason});
    let ws;
    try {
      ws = new WebSocket(hubURL(), SUBPROTOCOL);
    } catch (err) {
      this.retry({code: 0, reason: String(err)});
      return;
    }
    this.ws = ws;
    this.welcome = null;
    this.refusal = null;
    this.sentResume = this.lastSeq;
    ws.onopen = () => ws.send(JSON.stringify(this.hello()));
    ws.onmessage = (m) => { if (ws === this.ws) this.receive(m.data); };
    ws.onclose = (e) => { if (ws === this.ws) this.closed(e); };
  }

  hello() {
    const s = this.settings;
    const hello = {op: 'hello', channels: s.channels, kind: 'human', client: 'wsbus-dashboard'};
    hello.capabilities = ['batch']; // `events` and `presences` frames: fewer, larger writes
    if (s.name) hello.name = s.name;
    if (s.token) hello.token = s.token; // a browser cannot set Authorization on a websocket
    if (s.watch) hello.watch = true;
    if (this.lastSeq !== null) hello.resume = this.lastSeq;
    return hello;
  }

  receive(data) {
    if (typeof data !== 'string') return; // the JSON subprotocol sends text only
    let f;
    try {
      f = JSON.parse(data);
    } catch {
      return;
    }
    if (f === null || typeof f !== 'object' || typeof f.op !== 'string') return;
    // a batch is the frames it carries, one by one, in order
    if (f.op === 'events' && Array.isArray(f.events)) {
      for (const one of f.events) this.frame(one);
      return;
    }
    if (f.op === 'presences' && Array.isArray(f.changes)) {
      // one change each: the frame gives their channel and time once
      for (const one of f.changes) {
        this.frame({ ...one, op: 'presence', channel: f.channel ?? one.channel, ts: f.ts ?? one.ts });
      }
      return;
    }
    this.frame(f);
  }

  frame(f) {
    if (f === null || typeof f !== 'object' || typeof f.op !== 'string') return;
    switch (f.op) {
      case 'welcome':
        this.welcomed(f);
        return;
      case 'event':
        // The cursor moves with events only once a resume point exists: without one
        // the hub first replays older pending direct events, and `synced` sets it.
        if (this.lastSeq !== null && f.seq > this.lastSeq) this.lastSeq = f.seq;
        break;
      case 'synced':
        this.lastSeq = Math.max(this.lastSeq ?? 0, f.seq);
        break;
      case 'ok':
        this.settle(f.ref, f, null);
        break;
      case 'error':
        if (this.welcome === null) this.refusal = f;
        if (f.ref && (this.settle(f.ref, null, f) || this.answer(f.ref, null, f))) return;
        break;
      default:
        if (ANSWERS.has(f.op) && f.ref && this.answer(f.ref, f, null)) return;
    }
    this.h.frame(f);
  }

  welcomed(w) {
    if (this.hubId !== null && w.hub !== this.hubId) {
      // Another store behind this URL: the cursor means nothing there. Start over.
      this.hubId = w.hub;
      this.lastSeq = null;
      this.h.hubChanged(w);
      const ws = this.ws;
      this.detach();
      ws.close(1000, 'hub changed');
      this.open();
      return;
    }
    this.hubId = w.hub;
    // Fields equal to their default are left out of frames: `recovered` absent is true.
    const recovered = w.recovered !== false;
    if (!recovered && this.lastSeq !== null && this.lastSeq > w.seq) {
      this.lastSeq = w.seq; // the hub never had our resume point: take its events from here
    }
    this.welcome = w;
    this.dropReason = null;
    this.backoff = BACKOFF_MIN;
    this.attempt = 0;
    // `recovered` means something only for a resume point sent
    const gap = this.sentResume !== null && !recovered;
    this.h.state('connected', {names: w.names, channels: w.channels, gap});
    this.h.welcome(w, this.sentResume === null);
    for (const s of this.sends.values()) this.write(s.frame); // same ref: stored once
    const acks = this.acks;
    this.acks = [];
    for (const a of acks) this.write(a);
    clearInterval(this.pinger);
    this.pinger = setInterval(() => this.ping(), PING_EVERY);
  }

  async ping() {
    try {
      await this.request({op: 'ping'}, PING_TIMEOUT);
    } catch (err) {
      if (this.ws && this.welcome && err.message === 'timed out') this.drop('no answer to ping');
    }
  }

  closed(e) {
    const wasUp = this.welcome !== null;
    this.detach();
    this.failAll(new Error('connection lost'));
    if (this.stopped) return;
    if (FATAL.has(e.code)) {
      const why = this.refusal?.message || e.reason || FATAL.get(e.code);
      this.h.state('refused', {code: e.code, reason: why, error: this.refusal});
      this.stopped = true;
      return;
    }
    // Why the connection went away says more than each failed retry after it (a
    // browser learns nothing from a refused upgrade but 1006).
    if (wasUp) this.dropReason = this.refusal?.message || e.reason || closeWords(e.code);
    this.retry(e);
  }

  // Give up on a connection that looks dead without waiting for its closing handshake.
  drop(reason) {
    const ws = this.ws;
    this.detach();
    try {
      ws.close(4000, reason);
    } catch {
      // already closing
    }
    this.failAll(new Error('connection lost'));
    this.dropReason = reason;
    this.retry({code: 4000, reason});
  }

  detach() {
    clearInterval(this.pinger);
    this.pinger = null;
    if (this.ws) {
      this.ws.onopen = this.ws.onmessage = this.ws.onclose = null;
    }
    this.ws = null;
    this.welcome = null;
  }

  retry(e) {
    // full backoff from 0.5 s to 5 s, a little jitter so many pages do not come back at once
    const delay = Math.round(this.backoff * (0.8 + 0.4 * Math.random()));
    this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX);
    const reason = this.dropReason || this.refusal?.message || e.reason || closeWords(e.code);
    this.h.state('reconnecting', {delay, code: e.code, reason, failed: this.attempt});
    clearTimeout(this.timer);
    this.timer = setTimeout(() => { if (!this.stopped) this.open(); }, delay);
  }

  write(frame) {
    if (!this.connected) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** A query (history, roster, leases, ping, hub_status): resolves with its answer. */
  request(frame, timeout = REQUEST_TIMEOUT) {
    const ref = newRef(frame.op[0]);
    return new Promise((resolve, reject) => {
      if (!this.write({...frame, ref})) {
        reject(new Error('not connected'));
        return;
      }
      const timer = setTimeout(() => {
        this.requests.delete(ref);
        reject(new Error('timed out'));
      }, timeout);
      this.requests.set(ref, {resolve, reject, timer});
    });
  }

  answer(ref, frame, error) {
    const r = this.requests.get(ref);
    if (!r) return false;
    this.requests.delete(ref);
    clearTimeout(r.timer);
    if (error) r.reject(Object.assign(new Error(error.message), {code: error.code}));
    else r.resolve(frame);
    return true;
  }

  failAll(err) {
    for (const r of this.requests.values()) {
      clearTimeout(r.timer);
      r.reject(err);
    }
    this.requests.clear();
  }

  /** Publish: resolves with the `ok`, rejects with the hub's `error`; kept across reconnects. */
  send(draft) {
    const frame = {op: 'send', ref: newRef('s'), ...draft};
    return new Promise((resolve, reject) => {
      this.sends.set(frame.ref, {frame, resolve, reject});
      this.write(frame); // else sent after the next welcome
    });
  }

  settle(ref, ok, error) {
    const s = this.sends.get(ref);
    if (!s) return false;
    this.sends.delete(ref);
    if (error) s.reject(Object.assign(new Error(error.message), {code: error.code}));
    else s.resolve({ok, frame: s.frame});
    return true;
  }

  ack(seq, name, status = 'read') {
    const frame = {op: 'ack', seq, status, name};
    if (!this.write(frame)) this.acks.push(frame);
  }

  get pendingSends() {
    return this.sends.size;
  }
}

function closeWords(code) {
  switch (code) {
    case 1000: return 'closed';
    case 1001: return 'the hub is restarting';
    case 1006: return 'connection lost';
    case 1009: return 'a frame was too big';
    case 4003: return 'no hello in time';
    case 4008: return 'too slow: resuming';
    case 4029: return 'rate limited';
    default: return `closed (${code})`;
  }
}
