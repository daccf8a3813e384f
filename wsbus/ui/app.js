// The wsbus operator dashboard: wiring between the connection (conn.js), the page's
// state and the DOM (view.js, roster.js). Plain ES2020 modules, no build step, no
// inline code (the hub serves the page with a strict Content-Security-Policy).

import {Connection} from './conn.js';
import {Roster} from './roster.js';
import {ThreadView} from './thread.js';
import {clear, duration, eventRow, pendingNote, showReceipts} from './view.js';

const MAX_EVENTS = 2000; // rows kept in the stream; the oldest go first
const BACKFILL = 200; // events per channel shown on a fresh connection
const LEASES_EVERY = 10000;
const STATUS_EVERY = 20000;
const STORE_KEY = 'wsbus.dashboard.v1'; // sessionStorage only: the token never outlives the tab
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const $ = (id) => document.getElementById(id);

const state = {
  settings: null,
  conn: null,
  me: new Set(), // the connection's names (welcome.names)
  channels: [], // the connection's channels (welcome.channels)
  limits: null,
  welcome: null,
  events: new Map(), // seq -> {ev, row}
  order: [], // seqs shown, ascending
  receipts: new Map(), // seq -> [receipt]: pushed to the page for what it sent
  ackable: new Set(), // seqs delivered to the page's names in `event` frames
  acked: new Set(),
  hubStatus: null, // the last hub_status_result; false: the hub has no such query
  known: new Set(), // names seen: suggestions for `to` and the agent filter
  session: 0, // connections started from the connect bar (tests wait on it)
  stick: true, // the stream follows new events while scrolled to its bottom
  autoTop: 0, // where the page last scrolled the stream to itself
  frame: 0, // a pending animation frame: count and scroll once per frame, not per event
  statusTimer: 0,
};
const roster = new Roster($('rosters'), (names) => rememberNames(names));
const thread = new ThreadView(state);
state.onReceipt = onReceipt; // the thread view's history brings receipts too
const openThread = (channel, name) => thread.show(channel, name);

// ------------------------------------------------------------------ settings

function splitChannels(text) {
  const list = String(text ?? '').split(',').map((c) => c.trim()).filter(Boolean);
  return [...new Set(list)];
}

function loadSettings() {
  const s = {name: 'operator', channels: ['default'], token: '', watch: false};
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || 'null');
    if (saved && typeof saved === 'object') {
      if (typeof saved.name === 'string') s.name = saved.name;
      if (Array.isArray(saved.channels)) s.channels = saved.channels.filter((c) => typeof c === 'string');
      if (typeof saved.token === 'string') s.token = saved.token;
      s.watch = saved.watch === true;
    }
  } catch {
    // unreadable: the defaults
  }
  // ?channels=a,b&name=x&watch=1 win over what the tab remembers (never a token in a URL:
  // it would land in the history, the logs and the Referer)
  const q = new URLSearchParams(location.search);
  if (q.has('name')) s.name = q.get('name').trim();
  if (q.has('channels')) s.channels = splitChannels(q.get('channels'));
  if (q.has('watch')) s.watch = ['1', 'true', 'yes', 'on'].includes(q.get('watch'));
  if (!s.channels.length) s.channels = ['default'];
  return s;
}

function saveSettings(s) {
  try {
    sessionStorage.setItem(STORE_KEY, JSON.stringify(s));
  } catch {
    // storage disabled: the settings last as long as the page
  }
}

function fillForm(s) {
  $('conn-name').value = s.name;
  $('conn-channels').value = s.channels.join(', ');
  $('conn-token').value = s.token;
  $('conn-watch').checked = s.watch;
}

function readForm() {
  const name = $('conn-name').value.trim();
  const channels = splitChannels($('conn-channels').value);
  if (name && !NAME_RE.test(name)) return {error: `"${name}" is not a name: letters, digits, . _ - (64 at most)`};
  if (!channels.length) return {error: 'give at least one channel'};
  const bad = channels.find((c) => !NAME_RE.test(c));
  if (bad) return {error: `"${bad}" is not a channel name: letters, digits, . _ - (64 at most)`};
  return {name, channels, token: $('conn-token').value.trim(), watch: $('conn-watch').checked};
}

// ------------------------------------------------------------------ connection

function connect(settings) {
  if (state.conn) state.conn.stop();
  resetView();
  state.session += 1;
  $('conn-state').dataset.session = String(state.session);
  $('conn-error').textContent = '';
  state.settings = settings;
  state.conn = new Connection(settings, {
    state: showState,
    welcome: onWelcome,
    hubChanged: () => resetView(),
    frame: onFrame,
  });
  state.conn.start();
}

function showState(name, d) {
  const box = $('conn-state');
  box.dataset.state = name;
  const err = $('conn-error');
  switch (name) {
    case 'connecting':
      box.textContent = (d.attempt > 1 ? `connecting… (attempt ${d.attempt})` : 'connecting…')
        + (d.reason ? ` — ${d.reason}` : '');
      break;
    case 'connected': {
      const who = d.names.length ? d.names.join(', ') : '(no name: read only)';
      box.textContent = `connected as ${who}${state.settings.watch ? ' · watching' : ''}`;
      err.textContent = d.gap ? 'some history is gone (older than retention, or unknown to this hub)' : '';
      err.className = d.gap ? 'conn-error warn' : 'conn-error';
      break;
    }
    case 'reconnecting':
      box.textContent = `reconnecting in ${(d.delay / 1000).toFixed(1)} s — ${d.reason}`
        + (d.failed > 1 ? ` (${d.failed} tries)` : '');
      break;
    case 'refused':
      box.textContent = `refused: ${d.reason}`;
      err.textContent = d.reason;
      err.className = 'conn-error bad';
      break;
    default:
      box.textContent = 'disconnected';
  }
}

function onWelcome(w, fresh) {
  state.welcome = w;
  state.me = new Set(w.names);
  state.channels = w.channels;
  state.limits = w.limits;
  rememberNames(w.names);
  fillChannelSelects(w.channels);
  roster.channels(w.channels);
  roster.refreshAll(state.conn);
  showHub();
  refreshStatus();
  if (fresh) backfill(w.channels);
  if (thread.open) thread.load(false); // catch up with what came while away
}

function onFrame(f) {
  switch (f.op) {
    case 'event':
      onEvent(f);
      break;
    case 'receipt':
      onReceipt(f);
      break;
    case 'presence':
      roster.presence(f, state.conn);
      clearTimeout(state.statusTimer); // the connection counts changed: ask again, once
      state.statusTimer = setTimeout(refreshStatus, 1000);
      break;
    case 'error': {
      const err = $('conn-error');
      err.textContent = `${f.message} (${f.code})`;
      err.className = 'conn-error bad';
      break;
    }
    default:
      break;
  }
}

// What a connection without `watch` receives live, so backfilled history shows the same.
function mayShow(ev) {
  if (ev.to === '~leases' || ev.kind === 'lease') return false; // the leases panel has them
  if (state.settings.watch) return true;
  return ev.to === '*' || state.me.has(ev.to) || state.me.has(ev.from);
}

async function backfill(channels) {
  const limit = Math.min(BACKFILL, state.limits?.max_history ?? BACKFILL);
  await Promise.all(channels.map(async (channel) => {
    try {
      const page = await state.conn.request({op: 'history', channel, limit, receipts: true});
      for (const ev of page.events) if (mayShow(ev)) addEvent(ev);
      // the stored receipts of what this page may see them of (its own messages; all
      // of them with an admin token), as the live ones arrive
      for (const r of page.receipts ?? []) onReceipt(r);
    } catch (err) {
      notice(`history of #${channel}: ${err.message}`);
    }
  }));
}

async function refreshStatus() {
  if (state.hubStatus === false || !state.conn?.connected) return;
  try {
    state.hubStatus = await state.conn.request({op: 'hub_status'});
    roster.waiting(state.hubStatus.pending ?? []);
  } catch (err) {
    if (err.code === 'unknown_op') state.hubStatus = false; // an older hub
  }
  showHub();
}

function showHub() {
  const w = state.welcome;
  if (!w) return;
  const parts = [w.server || 'wsbus', `hub ${w.hub}`];
  const st = state.hubStatus;
  if (st) {
    if (st.version && !parts[0].includes(st.version)) parts.push(`v${st.version}`);
    if (typeof st.uptime === 'number') parts.push(`up ${duration(st.uptime)}`);
    if (st.engine) parts.push(String(st.engine));
    if (typeof st.connections === 'number') parts.push(`${st.connections} connections`);
    if (st.healthy === false) parts.push(`NOT STORING: ${st.problem ?? 'unhealthy'}`);
  }
  const info = $('hub-info');
  info.textContent = parts.join(' · ');
  info.classList.toggle('bad', st?.healthy === false);
}

// ------------------------------------------------------------------ events

function onEvent(ev) {
  if (!mayShow(ev)) return;
  addEvent(ev);
  if (state.me.has(ev.to)) {
    state.ackable.add(ev.seq);
    ackIfShown(ev.seq);
  }
}

function matches(ev) {
  const channel = $('filter-channel').value;
  const agent = $('filter-agent').value.trim().toLowerCase();
  const inThread = $('filter-thread').value.trim().toLowerCase();
  if (channel && ev.channel !== channel) return false;
  if (agent && !ev.from.toLowerCase().includes(agent) && !ev.to.toLowerCase().includes(agent)) return false;
  if (inThread && !(ev.thread ?? '').toLowerCase().includes(inThread)) return false;
  return true;
}

// Where seq goes in the ascending list (history can arrive after live events: bisect).
function position(seq) {
  let lo = 0;
  let hi = state.order.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (state.order[mid] < seq) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function addEvent(ev) {
  if (state.events.has(ev.seq)) return;
  const stream = $('stream');
  const row = eventRow(ev, state.me, openThread);
  row.hidden = !matches(ev);
  const at = position(ev.seq);
  const next = at < state.order.length ? state.events.get(state.order[at]).row : null;
  stream.insertBefore(row, next);
  state.order.splice(at, 0, ev.seq);
  state.events.set(ev.seq, {ev, row});
  const receipts = state.receipts.get(ev.seq);
  if (receipts) showReceipts(row, receipts);
  while (state.order.length > MAX_EVENTS) dropOldest();
  rememberNames([ev.from, ev.to]);
  thread.live(ev);
  later();
}

// Layout work once per frame: a burst of thousands of events must not lay out each time.
function later() {
  if (state.frame) return;
  state.frame = requestAnimationFrame(() => {
    state.frame = 0;
    showCount();
    const stream = $('stream');
    if (state.stick) {
      stream.scrollTop = stream.scrollHeight;
      state.autoTop = stream.scrollTop;
    }
  });
}

function dropOldest() {
  const seq = state.order.shift();
  const item = state.events.get(seq);
  state.events.delete(seq);
  state.receipts.delete(seq);
  state.ackable.delete(seq);
  state.acked.delete(seq);
  item?.row.remove();
}

function onReceipt(r) {
  // receipts for seqs not shown (sent from another tab of this name) must not pile up
  if (!state.receipts.has(r.seq) && state.receipts.size >= 2 * MAX_EVENTS) {
    state.receipts.delete(state.receipts.keys().next().value);
  }
  const list = state.receipts.get(r.seq) ?? [];
  // the same receipt may come twice: pushed live, and with a page of history
  if (list.some((x) => x.by === r.by && x.status === r.status && x.ts === r.ts)) return;
  list.push(r);
  state.receipts.set(r.seq, list);
  const item = state.events.get(r.seq);
  if (item) showReceipts(item.row, list);
  thread.receipts(r.seq, list);
}

// A person reading the dashboard did read a direct message to its name: ack `read`, once,
// when its row is shown (it passes the filters) in a visible tab.
function ackIfShown(seq) {
  if (state.acked.has(seq) || document.visibilityState !== 'visible') return;
  const item = state.events.get(seq);
  if (!item || item.row.hidden) return;
  state.acked.add(seq);
  state.conn.ack(seq, item.ev.to, 'read');
}

function ackShown() {
  for (const seq of state.ackable) ackIfShown(seq);
}

function applyFilters() {
  for (const {ev, row} of state.events.values()) row.hidden = !matches(ev);
  showCount();
  ackShown();
}

function showCount() {
  let shown = 0;
  for (const {row} of state.events.values()) if (!row.hidden) shown += 1;
  const total = state.events.size;
  $('stream-count').textContent = shown === total ? `${total} events` : `${shown} of ${total} events`;
}

function notice(text) {
  const err = $('conn-error');
  err.textContent = text;
  err.className = 'conn-error warn';
}

function rememberNames(names) {
  let changed = false;
  for (const n of names) {
    if (n && n !== '*' && !n.startsWith('~') && !state.known.has(n) && state.known.size < 500) {
      state.known.add(n);
      changed = true;
    }
  }
  if (!changed) return;
  const list = $('known-names');
  clear(list);
  for (const n of [...state.known].sort()) {
    const o = document.createElement('option');
    o.value = n;
    list.append(o);
  }
}

function fillChannelSelects(channels) {
  for (const id of ['filter-channel', 'compose-channel']) {
    const select = $(id);
    const keep = select.value;
    clear(select);
    if (id === 'filter-channel') select.append(new Option('all', ''));
    for (const c of channels) select.append(new Option(`#${c}`, c));
    if ([...select.options].some((o) => o.value === keep)) select.value = keep;
  }
}

function resetView() {
  state.events.clear();
  state.order = [];
  state.receipts.clear();
  state.ackable.clear();
  state.acked.clear();
  state.hubStatus = null;
  state.welcome = null;
  clear($('stream'));
  thread.close();
  roster.reset();
  later();
}

// ------------------------------------------------------------------ compose

function composeStatus(text, kind) {
  const out = $('compose-status');
  out.textContent = text;
  out.className = `compose-status ${kind}`;
  out.dataset.state = kind;
}

async function submitCompose(e) {
  e.preventDefault();
  const bodyBox = $('compose-body');
  const body = bodyBox.value;
  const to = $('compose-to').value.trim() || '*';
  const channel = $('compose-channel').value || state.channels[0];
  const replyTo = $('compose-thread').value.trim();
  if (!body.trim()) return composeStatus('nothing to send', 'bad');
  if (!state.conn) return composeStatus('not connected', 'bad');
  const from = state.welcome?.names?.[0];
  if (state.welcome && !from) return composeStatus('this connection has no name: set "act as"', 'bad');
  const draft = {to, body, channel};
  if (replyTo) draft.thread = replyTo;
  if (from) draft.from = from;
  composeStatus(state.conn.connected ? 'sending…' : 'queued: sent when the hub is back', 'wait');
  try {
    const {ok, frame} = await state.conn.send(draft);
    let text = `stored as seq ${ok.seq}${ok.duplicate ? ' (already stored)' : ''}`;
    if (ok.online === false) text += ` · ${to} is not connected: it waits`;
    composeStatus(text, 'ok');
    if (bodyBox.value === body) bodyBox.value = '';
    ownEvent(ok, frame);
  } catch (err) {
    composeStatus(err.code ? `${err.message} (${err.code})` : err.message, 'bad');
  }
}

// The hub does not echo a sender's own events (unless it watches): show what was sent.
function ownEvent(ok, frame) {
  const ev = {
    seq: ok.seq, ts: ok.ts, channel: frame.channel, from: frame.from ?? '', to: frame.to,
    body: frame.body, thread: frame.thread ?? null, kind: 'human', ref: frame.ref,
  };
  addEvent(ev);
  const item = state.events.get(ok.seq);
  if (item && ev.to !== '*' && !state.receipts.has(ok.seq)) {
    pendingNote(item.row, ok.online === false ? 'waiting for the recipient' : 'delivered, no receipt yet');
  }
}

function composeKey(e) {
  // Enter sends, Shift+Enter a new line; not while an input method composes a character
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('compose').requestSubmit();
  }
}

// ------------------------------------------------------------------ start

function start() {
  const settings = loadSettings();
  fillForm(settings);
  $('connect-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const s = readForm();
    if (s.error) {
      // the connection as it is goes on: only the form is wrong
      const err = $('conn-error');
      err.textContent = s.error;
      err.className = 'conn-error bad';
      return;
    }
    saveSettings(s);
    connect(s);
  });
  $('conn-stop').addEventListener('click', () => state.conn?.stop());
  for (const id of ['filter-channel', 'filter-agent', 'filter-thread']) {
    $(id).addEventListener('input', applyFilters);
  }
  $('filters').addEventListener('submit', (e) => e.preventDefault());
  $('filter-clear').addEventListener('click', () => {
    $('filter-channel').value = '';
    $('filter-agent').value = '';
    $('filter-thread').value = '';
    applyFilters();
  });
  // Follow new events until the person scrolls up; scrolling back down follows again.
  // The page's own scrolling also fires `scroll` (later, when more rows may have come):
  // only a move above where the page put it means the person scrolled.
  $('stream').addEventListener('scroll', () => {
    const s = $('stream');
    if (s.scrollHeight - s.scrollTop - s.clientHeight < 48) state.stick = true;
    else if (s.scrollTop < state.autoTop - 4) state.stick = false;
    // while following, no scroll anchoring: rows dropped at the top must not move the view
    s.classList.toggle('follow', state.stick);
  }, {passive: true});
  $('compose').addEventListener('submit', submitCompose);
  $('compose-body').addEventListener('keydown', composeKey);
  document.addEventListener('visibilitychange', ackShown);
  // Leases come and go without a frame to anyone (lease events are not delivered), and
  // the hub's status ages: ask again now and then.
  setInterval(() => {
    if (state.conn?.connected) roster.refreshLeases(state.conn);
  }, LEASES_EVERY);
  setInterval(refreshStatus, STATUS_EVERY);
  saveSettings(settings);
  connect(settings);
}

start();
