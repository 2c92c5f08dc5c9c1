// A container's logs (`GET …/containers/ID/logs`, Server-Sent Events: `log` {stream, text},
// then `end` {reason}): the last N lines and, when following, what the container writes
// next. Standard output and error are told apart, timestamps are shown on demand, the view
// scrolls along unless the reader scrolls up, and at most MAX_LINES lines stay on the page.
// Lines are drawn once a frame, however fast they come.
//
// The engine's timestamps are always asked for (and hidden unless wanted): when the stream
// is cut (the network, the control plane or the engine restarting), the viewer reads again
// from the second of the last line it has, and drops the lines it already shows.

import { h } from './dom.js';
import { streamError } from './live-events.js';

/** Lines kept on the page; older ones are dropped as new ones come. */
const MAX_LINES = 5_000;
/** How many of the last lines to start with. */
const TAILS = ['100', '500', '1000', '5000', 'all'];
/** The RFC 3339 timestamp the engine puts before each line, and the line. */
const TIMESTAMP = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) (.*)$/s;
/** Waits before reading a cut stream again: the first, and at most. */
const RESUME_FIRST_MS = 500;
const RESUME_MAX_MS = 10_000;
/** Marks a stream's unfinished line that is being dropped (it was shown before a cut). */
const SKIPPED = Symbol('skipped');

/** A timestamp's parts as nanoseconds since the epoch (BigInt), so lines compare exactly. */
function nanoseconds(date, fraction, zone) {
  const seconds = Date.parse(`${date}${zone}`) / 1000;
  return BigInt(seconds) * 1_000_000_000n + BigInt((fraction ?? '').padEnd(9, '0'));
}

export class LogViewer {
  constructor(context, id) {
    this.context = context;
    this.id = id;
    this.source = null;
    this.resumeTimer = null;
    this.resumeDelay = RESUME_FIRST_MS;
    this.pending = []; // {stream, text} not drawn yet
    this.frame = null;
    this.unfinished = { stdout: null, stderr: null }; // each stream's line not ended yet
    this.last = { stdout: null, stderr: null }; // each stream's newest line's time (ns)
    this.resumedAfter = null; // while reading again after a cut: `last` as it was
    this.count = 0; // lines on the page
    this.dropped = 0; // lines dropped from the top

    const restart = () => this.start();
    this.tail = h('select', { 'data-control': 'tail', onchange: restart },
      TAILS.map((n) => h('option', { value: n, selected: n === '500' }, n === 'all' ? 'all' : `last ${n}`)));
    this.follow = h('input', { type: 'checkbox', 'data-control': 'follow', checked: true, onchange: restart });
    this.timestamps = h('input', {
      type: 'checkbox',
      'data-control': 'timestamps',
      onchange: () => this.output.classList.toggle('with-timestamps', this.timestamps.checked),
    });
    this.autoScroll = h('input', {
      type: 'checkbox',
      'data-control': 'autoscroll',
      checked: true,
      onchange: () => this.autoScroll.checked && this.scrollDown(),
    });
    this.status = h('span', { class: 'log-status muted' });
    this.output = h('div', { class: 'log-output mono', role: 'log', tabindex: '0' });
    // Scrolling up stops following the end with the eyes; back at the bottom, it starts again.
    this.output.addEventListener('scroll', () => {
      const { scrollTop, clientHeight, scrollHeight } = this.output;
      this.autoScroll.checked = scrollTop + clientHeight >= scrollHeight - 8;
    });
    this.element = h('div', { class: 'logs' },
      h('div', { class: 'toolbar' },
        this.tail,
        h('label', { class: 'check' }, this.follow, 'Follow'),
        h('label', { class: 'check' }, this.timestamps, 'Timestamps'),
        h('label', { class: 'check' }, this.autoScroll, 'Auto-scroll'),
        h('span', { class: 'legend' }, h('span', { class: 'line stdout' }, 'stdout'), h('span', { class: 'line stderr' }, 'stderr')),
        h('span', { class: 'spacer' }),
        this.status,
        h('button', { type: 'button', 'data-action': 'reload', onclick: restart }, 'Reload'),
        h('button', { type: 'button', 'data-action': 'clear', onclick: () => this.clear() }, 'Clear'),
      ),
      this.output);
    this.start();
  }

  /** Reads the logs afresh with the options shown. */
  start() {
    this.stop();
    this.clear();
    this.last = { stdout: null, stderr: null };
    this.resumedAfter = null;
    this.resumeDelay = RESUME_FIRST_MS;
    this.open({ tail: this.tail.value === 'all' ? '' : this.tail.value });
  }

  /** Reads again after a cut, from the second of the oldest of the streams' last lines. */
  resume() {
    const times = Object.values(this.last).filter((t) => t !== null);
    if (times.length === 0) return this.start(); // nothing shown yet: nothing to skip
    this.resumedAfter = { ...this.last };
    const oldest = times.reduce((a, b) => (a < b ? a : b));
    this.open({ since: String(oldest / 1_000_000_000n) });
  }

  open({ tail = '', since = '' }) {
    const url = this.context.docker.logsUrl(this.id, { follow: this.follow.checked, tail, since, timestamps: true });
    const source = new EventSource(url);
    this.source = source;
    let opened = false;
    this.setStatus('connecting', this.resumedAfter ? 'reconnecting…' : 'connecting…');
    source.onopen = () => {
      opened = true;
      this.resumeDelay = RESUME_FIRST_MS;
      this.setStatus('open', this.follow.checked ? 'following' : 'reading');
    };
    source.addEventListener('log', (event) => {
      if (source !== this.source) return;
      this.pending.push(JSON.parse(event.data));
      this.frame ??= requestAnimationFrame(() => this.draw());
    });
    source.addEventListener('end', (event) => {
      if (source !== this.source) return;
      this.stop();
      this.setStatus('ended', `ended: ${JSON.parse(event.data).reason}`);
    });
    source.onerror = async () => {
      if (source !== this.source) return;
      // Never left to the browser's own retry, which would read the last lines again.
      this.stop();
      if (opened) return this.resumeLater('the stream was cut: reconnecting…');
      const error = await streamError(url);
      if (this.source !== null) return; // (read again meanwhile)
      if (error?.status === 401) return this.context.onUnauthenticated();
      // It answers now, or the network is away a little longer: try again later.
      if (error === null || error.status === 0) return this.resumeLater('the stream could not be opened: reconnecting…');
      this.setStatus('failed', error.message);
    };
  }

  /** Says `why` and resumes after a wait that doubles each time in a row. */
  resumeLater(why) {
    this.setStatus('cut', why);
    this.resumeTimer = setTimeout(() => this.resume(), this.resumeDelay);
    this.resumeDelay = Math.min(RESUME_MAX_MS, this.resumeDelay * 2);
  }

  stop() {
    clearTimeout(this.resumeTimer);
    this.source?.close();
    this.source = null;
  }

  clear() {
    this.output.replaceChildren();
    this.pending = [];
    this.unfinished = { stdout: null, stderr: null };
    this.count = 0;
    this.dropped = 0;
  }

  setStatus(state, text) {
    this.status.dataset.state = state;
    this.status.textContent = this.dropped ? `${text} · ${this.dropped} earlier lines dropped` : text;
    this.status.title = text;
  }

  /** Draws what came since the last frame, drops what is over MAX_LINES, and scrolls along. */
  draw() {
    this.frame = null;
    const fragment = document.createDocumentFragment();
    for (const { stream, text } of this.pending) {
      if (!text) continue;
      const parts = text.split('\n');
      parts.forEach((part, index) => {
        const piece = part.replace(/\r$/, '');
        // The first piece ends the stream's unfinished line, if it has one.
        let line = index === 0 ? this.unfinished[stream] : null;
        if (line === SKIPPED) {
          // (a line shown before the cut: its rest is shown already too)
        } else if (line) {
          line.append(piece);
        } else if (piece || index < parts.length - 1) {
          line = this.line(stream, piece);
          if (line !== SKIPPED) fragment.append(line);
        }
        // The last piece is unfinished unless the text ended with a newline.
        this.unfinished[stream] = index === parts.length - 1 && part !== '' ? line : null;
      });
    }
    this.pending = [];
    this.output.append(fragment);
    while (this.count > MAX_LINES) {
      this.output.firstElementChild.remove();
      this.count -= 1;
      this.dropped += 1;
    }
    if (this.dropped) this.setStatus(this.status.dataset.state, this.status.title);
    if (this.autoScroll.checked) this.scrollDown();
  }

  /** A new line of `stream` (its timestamp apart), or SKIPPED when it is shown already. */
  line(stream, text) {
    const stamped = TIMESTAMP.exec(text);
    if (stamped) {
      const [, date, fraction, zone, rest] = stamped;
      const time = nanoseconds(date, fraction, zone);
      const shownUpTo = this.resumedAfter?.[stream];
      if (shownUpTo != null && time <= shownUpTo) return SKIPPED;
      this.last[stream] = time;
      this.count += 1;
      return h('div', { class: `line ${stream}` }, h('span', { class: 'ts' }, `${date}${fraction ? `.${fraction}` : ''}${zone} `), rest);
    }
    this.count += 1;
    return h('div', { class: `line ${stream}` }, text);
  }

  scrollDown() {
    this.output.scrollTop = this.output.scrollHeight;
  }

  dispose() {
    this.stop();
    if (this.frame) cancelAnimationFrame(this.frame);
  }
}
