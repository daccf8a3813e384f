// The thread view: one thread of one channel, read with `history` (thread filter) and
// kept current with the live events of that thread, with a way back to the stream.
// While it is open the compose box replies into it.

import {clear, eventRow, showReceipts} from './view.js';

const PAGE = 500;
const $ = (id) => document.getElementById(id);

export class ThreadView {
  /** app: {conn, me, receipts, limits, stick} (read when needed: they change). */
  constructor(app) {
    this.app = app;
    this.open = null; // {channel, thread, seqs, oldest, loaded}
    this.streamTop = 0; // where the stream was scrolled: a hidden element forgets it
    $('thread-back').addEventListener('click', () => this.close());
    $('thread-older').addEventListener('click', () => this.load(true));
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && this.open) this.close();
    });
  }

  show(channel, thread) {
    if (!this.open) this.streamTop = $('stream').scrollTop;
    this.open = {channel, thread, seqs: new Set(), oldest: null, loaded: false};
    $('stream-view').hidden = true;
    $('thread-view').hidden = false;
    $('thread-title').textContent = `Thread ${thread} · #${channel}`;
    $('thread-older').hidden = true;
    clear($('thread-events'));
    $('compose-thread').value = thread;
    $('compose-channel').value = channel;
    this.load(false);
  }

  close() {
    const open = this.open;
    this.open = null;
    $('thread-view').hidden = true;
    $('stream-view').hidden = false;
    const stream = $('stream');
    stream.scrollTop = this.app.stick ? stream.scrollHeight : this.streamTop;
    this.app.autoTop = stream.scrollTop; // the page's own scroll, not the person's
    if (open && $('compose-thread').value === open.thread) $('compose-thread').value = '';
  }

  /** The newest page (again, after a reconnect: rows already shown are skipped), or older. */
  async load(older) {
    const t = this.open;
    const conn = this.app.conn;
    if (!t || !conn) return;
    const status = $('thread-status');
    status.textContent = 'loading…';
    const limit = Math.min(PAGE, this.app.limits?.max_history ?? PAGE);
    const q = {op: 'history', channel: t.channel, thread: t.thread, limit, receipts: true};
    if (older && t.oldest !== null) q.before = t.oldest;
    try {
      const page = await conn.request(q);
      if (this.open !== t) return; // closed, or another thread, meanwhile
      const events = page.events.filter((ev) => ev.kind !== 'lease');
      for (const ev of older ? events.reverse() : events) this.add(ev, older);
      for (const r of page.receipts ?? []) this.app.onReceipt?.(r);
      if (older || !t.loaded) $('thread-older').hidden = !page.more;
      t.loaded = true;
      status.textContent = `${t.seqs.size} messages`;
    } catch (err) {
      status.textContent = err.message;
    }
  }

  /** A live event: shown when it belongs to the open thread. */
  live(ev) {
    const t = this.open;
    if (t && t.channel === ev.channel && t.thread === ev.thread) this.add(ev, false);
  }

  add(ev, atTop) {
    const t = this.open;
    if (t.seqs.has(ev.seq)) return;
    t.seqs.add(ev.seq);
    if (t.oldest === null || ev.seq < t.oldest) t.oldest = ev.seq;
    const row = eventRow(ev, this.app.me, (c, th) => this.show(c, th));
    const receipts = this.app.receipts.get(ev.seq);
    if (receipts) showReceipts(row, receipts);
    const box = $('thread-events');
    // the first page and live rows come in seq order; an older page comes newest first
    const later = atTop ? box.firstChild : [...box.children].find((r) => Number(r.dataset.seq) > ev.seq);
    box.insertBefore(row, later ?? null);
    $('thread-status').textContent = `${t.seqs.size} messages`;
  }

  receipts(seq, list) {
    const row = $('thread-events').querySelector(`[data-seq="${Number(seq)}"]`);
    if (row) showReceipts(row, list);
  }
}
