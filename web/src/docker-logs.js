// A container's logs (`GET …/containers/ID/logs`, Server-Sent Events: `log` {stream, text},
// then `end` {reason}): the last N lines and, when following, what the container writes
// next. Standard output and error are told apart, timestamps are shown on demand, the view
// scrolls along unless the reader scrolls up, and at most MAX_LINES lines stay on the page.
// Lines are drawn once a frame, however fast they come.

import { h } from './dom.js';
import { streamError } from './live-events.js';

/** Lines kept on the page; older ones are dropped as new ones come. */
const MAX_LINES = 5_000;
/** How many of the last lines to start with. */
const TAILS = ['100', '500', '1000', '5000', 'all'];
/** An RFC 3339 timestamp the engine put before a line (with "timestamps"). */
const TIMESTAMP = /^(\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:\d\d)) (.*)$/s;

export class LogViewer {
  constructor(context, id) {
    this.context = context;
    this.id = id;
    this.source = null;
    this.pending = []; // {stream, text} not drawn yet
    this.frame = null;
    this.unfinished = { stdout: null, stderr: null }; // each stream's line not ended yet
    this.count = 0; // lines on the page
    this.dropped = 0; // lines dropped from the top

    const restart = () => this.start();
    this.tail = h('select', { 'data-control': 'tail', onchange: restart },
      TAILS.map((n) => h('option', { value: n, selected: n === '500' }, n === 'all' ? 'all' : `last ${n}`)));
    this.follow = h('input', { type: 'checkbox', 'data-control': 'follow', checked: true, onchange: restart });
    this.timestamps = h('input', { type: 'checkbox', 'data-control': 'timestamps', onchange: restart });
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
    const url = this.context.docker.logsUrl(this.id, {
      follow: this.follow.checked,
      tail: this.tail.value === 'all' ? '' : this.tail.value,
      timestamps: this.timestamps.checked,
    });
    const source = new EventSource(url);
    this.source = source;
    let opened = false;
    this.setStatus('connecting', 'connecting…');
    source.onopen = () => {
      opened = true;
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
      if (opened) return this.setStatus('cut', 'the stream was cut: Reload reads the logs again');
      const error = await streamError(url);
      if (error?.status === 401) return this.context.onUnauthenticated();
      this.setStatus('failed', error?.message ?? 'the logs could not be read: Reload tries again');
    };
  }

  stop() {
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
        if (line) {
          line.append(piece);
        } else if (piece || index < parts.length - 1) {
          line = this.line(stream, piece);
          fragment.append(line);
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

  line(stream, text) {
    this.count += 1;
    const stamped = this.timestamps.checked && TIMESTAMP.exec(text);
    return h('div', { class: `line ${stream}` },
      stamped ? [h('span', { class: 'ts' }, stamped[1]), ' ', stamped[2]] : text);
  }

  scrollDown() {
    this.output.scrollTop = this.output.scrollHeight;
  }

  dispose() {
    this.stop();
    if (this.frame) cancelAnimationFrame(this.frame);
  }
}
