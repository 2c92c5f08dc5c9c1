// The terminal page: one tab per session (host + session id, and the container for a shell
// inside one), each an xterm.js terminal on a TerminalConnection. The open tabs are kept in sessionStorage, so a reload reattaches each
// of them and the server replays its recent screen.

import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { WebLinksAddon } from '@xterm/addon-web-links';
import { api, checkSession } from './api.js';
import { TerminalConnection } from './connection.js';
import { $, ago, dateTime, h } from './dom.js';

const STORAGE_KEY = 'zpanel.terminals';
const encoder = new TextEncoder();

const THEME = {
  background: '#0b0e14',
  foreground: '#d5dae3',
  cursor: '#f0f3f8',
  selectionBackground: '#3a4a66',
  scrollbarSliderBackground: 'rgba(213, 218, 227, 0.12)',
  scrollbarSliderHoverBackground: 'rgba(213, 218, 227, 0.24)',
  scrollbarSliderActiveBackground: 'rgba(213, 218, 227, 0.32)',
  black: '#1c2130', brightBlack: '#5c6679',
  red: '#f0616d', brightRed: '#ff8a94',
  green: '#7bc96f', brightGreen: '#a4e598',
  yellow: '#e5c07b', brightYellow: '#f2d59b',
  blue: '#61a0ff', brightBlue: '#8cbcff',
  magenta: '#c792ea', brightMagenta: '#ddb6f7',
  cyan: '#56c8d8', brightCyan: '#8be2ee',
  white: '#d5dae3', brightWhite: '#ffffff',
};

/** What each connection state looks like on the tab and over the terminal. */
const STATE_TEXT = {
  connecting: 'connecting…',
  attached: '',
  reconnecting: 'reconnecting…',
  paused: 'signed out: sign in again to reconnect',
  ended: '',
  refused: 'refused:',
  taken: 'detached:',
};

// === impl TerminalsView ===

export class TerminalsView {
  /** @param {{onUnauthenticated: () => void, onOpenFiles: (host: string) => void}} callbacks */
  constructor({ onUnauthenticated, onOpenFiles }) {
    this.onUnauthenticated = onUnauthenticated;
    /** @type {Tab[]} */
    this.tabs = [];
    /** @type {Tab|null} */
    this.active = null;
    this.visible = false;
    this.sessionsHost = null; // {id, name} whose sessions the panel lists

    $('#new-session').addEventListener('click', () => {
      if (this.active) this.open({ host: this.active.host, hostName: this.active.hostName });
    });
    $('#list-sessions').addEventListener('click', () => {
      if (this.active) this.showSessions({ id: this.active.host, name: this.active.hostName });
    });
    $('#tab-files').addEventListener('click', () => {
      if (this.active) onOpenFiles(this.active.host);
    });
    $('#sessions-close').addEventListener('click', () => this.hideSessions());
    // Fit the visible terminal whenever its area changes size (window resize, view switch).
    new ResizeObserver(() => this.active?.fit()).observe($('#panes'));
  }

  /** Reopens the tabs this browser tab had before a reload. */
  restore() {
    let saved = [];
    try {
      saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? '[]');
    } catch {
      // A damaged entry: start with no tabs.
    }
    for (const entry of saved) {
      const tab = this.open(entry, { activate: false });
      if (entry.active) this.activate(tab);
    }
    if (!this.active && this.tabs.length > 0) this.activate(this.tabs[0]);
  }

  /**
   * Opens a tab on `host`: a new session (a shell in `container` when given), or `session`
   * if given (focusing its tab if open).
   */
  open({ host, hostName, session = null, container = null }, { activate = true } = {}) {
    const existing = session && this.tabs.find((t) => t.host === host && t.session === session);
    if (existing) {
      this.activate(existing);
      return existing;
    }
    const tab = new Tab(this, { host, hostName, session, container });
    this.tabs.push(tab);
    $('#tabs').append(tab.tabElement);
    $('#panes').append(tab.pane);
    if (activate || !this.active) this.activate(tab);
    this.updateEmpty();
    return tab;
  }

  activate(tab) {
    for (const t of this.tabs) t.setActive(t === tab);
    this.active = tab;
    this.save();
    if (this.visible) tab.focus();
  }

  /** Closes a tab: the page detaches, the shell keeps running on the host. */
  closeTab(tab) {
    tab.dispose();
    const index = this.tabs.indexOf(tab);
    this.tabs.splice(index, 1);
    if (this.active === tab) {
      this.active = null;
      const next = this.tabs[Math.min(index, this.tabs.length - 1)];
      if (next) this.activate(next);
    }
    this.save();
    this.updateEmpty();
  }

  /** Detaches every tab (logout). */
  closeAll() {
    for (const tab of [...this.tabs]) this.closeTab(tab);
    sessionStorage.removeItem(STORAGE_KEY);
  }

  /** Reconnects the tabs that paused because the login had expired. */
  resumeAll() {
    for (const tab of this.tabs) tab.connection.resume();
  }

  show() {
    this.visible = true;
    this.active?.fit();
    this.active?.focus();
  }

  hide() {
    this.visible = false;
  }

  /** Keeps the tabs that have a session id (a new one gets it once attached). */
  save() {
    const entries = this.tabs
      .filter((t) => t.session && t.connection.state !== 'ended')
      .map((t) => ({
        host: t.host,
        hostName: t.hostName,
        session: t.session,
        container: t.container,
        active: t === this.active,
      }));
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(entries));
  }

  updateEmpty() {
    $('#terminals-empty').hidden = this.tabs.length > 0;
    $('#new-session').disabled = this.tabs.length === 0;
    $('#list-sessions').disabled = this.tabs.length === 0;
    $('#tab-files').disabled = this.tabs.length === 0;
    $('#nav-terminals').dataset.count = this.tabs.length ? String(this.tabs.length) : '';
  }

  // === the sessions panel: a host's sessions, to attach to or kill ===

  async showSessions(host) {
    this.sessionsHost = host;
    $('#sessions-title').textContent = `Sessions on ${host.name}`;
    $('#sessions').hidden = false;
    const body = $('#sessions-body');
    const error = $('#sessions-error');
    error.textContent = '';
    let sessions;
    try {
      sessions = await api('GET', `/api/v1/hosts/${encodeURIComponent(host.id)}/terminals`);
    } catch (e) {
      if (e.status === 401) return this.onUnauthenticated();
      error.textContent = e.message;
      body.replaceChildren();
      return;
    }
    if (this.sessionsHost !== host) return;
    body.replaceChildren(
      ...sessions.map((s) =>
        h('tr', {},
          h('td', { class: 'mono', title: s.id }, s.id.slice(0, 8)),
          h('td', {}, s.owner),
          h('td', {}, s.container ? `${s.local_user || 'default user'} in ${s.container}` : s.local_user),
          h('td', { title: dateTime(s.created_at) }, ago(s.created_at)),
          h('td', { title: dateTime(s.last_activity) }, ago(s.last_activity)),
          h('td', {}, `${s.cols}×${s.rows}`),
          h('td', {}, String(s.viewers)),
          h('td', { class: 'actions' },
            h('button', {
              type: 'button',
              onclick: () => {
                this.hideSessions();
                this.open({ host: host.id, hostName: host.name, session: s.id, container: s.container });
              },
            }, 'Attach'),
            h('button', { type: 'button', class: 'danger', onclick: () => this.kill(host, s.id) }, 'Kill'),
          ),
        ),
      ),
    );
    if (sessions.length === 0) {
      body.append(h('tr', {}, h('td', { colspan: 8, class: 'muted' }, 'No sessions on this host.')));
    }
  }

  hideSessions() {
    this.sessionsHost = null;
    $('#sessions').hidden = true;
    this.active?.focus();
  }

  async kill(host, sessionId) {
    if (!confirm(`Kill session ${sessionId.slice(0, 8)} on ${host.name}? Its shell gets SIGHUP.`)) return;
    try {
      await api('DELETE', `/api/v1/hosts/${encodeURIComponent(host.id)}/terminals/${encodeURIComponent(sessionId)}`);
    } catch (e) {
      if (e.status === 401) return this.onUnauthenticated();
      $('#sessions-error').textContent = e.message;
      return;
    }
    this.showSessions(host);
  }
}

// === impl Tab ===

/** One session: its tab button, its pane (terminal + state overlay) and its connection. */
class Tab {
  constructor(view, { host, hostName, session, container }) {
    this.view = view;
    this.host = host;
    this.hostName = hostName || host;
    this.session = session;
    this.container = container || null; // the container the shell runs in, if any

    this.label = h('span', { class: 'label' });
    this.tabElement = h('div', { class: 'tab', role: 'tab', onclick: () => view.activate(this) },
      h('span', { class: 'dot' }),
      this.label,
      h('button', {
        type: 'button',
        class: 'close',
        title: 'Close the tab (the session keeps running on the host)',
        onclick: (event) => {
          event.stopPropagation();
          view.closeTab(this);
        },
      }, '×'),
    );
    this.overlayText = h('span', { class: 'text' });
    this.overlay = h('div', { class: 'overlay', hidden: true },
      h('span', { class: 'spinner' }),
      this.overlayText,
      h('button', { type: 'button', onclick: () => this.connection.resume() }, 'Reconnect'),
    );
    const screen = h('div', { class: 'screen' });
    this.pane = h('div', { class: 'pane', hidden: true }, screen, this.overlay);

    this.term = new Terminal({
      cursorBlink: true,
      fontFamily: '"DejaVu Sans Mono", "Cascadia Mono", Menlo, Consolas, monospace',
      fontSize: 14,
      lineHeight: 1.15, // (at 1.0 some fonts lose the underscore's bottom to the next row)
      scrollback: 5000,
      theme: THEME,
    });
    this.fitAddon = new FitAddon();
    this.term.loadAddon(this.fitAddon);
    this.term.loadAddon(new WebLinksAddon());
    this.term.attachCustomKeyEventHandler((event) => this.onKey(event));
    this.term.open(screen);

    this.connection = new TerminalConnection({
      host,
      session,
      container: this.container,
      term: this.term,
      checkSession,
      onState: (state, detail) => this.onState(state, detail),
      onAttached: (message) => {
        this.session = message.session;
        this.hostName = message.host_name || this.hostName;
        this.container = message.container || this.container;
        this.updateLabel();
        view.save();
      },
    });
    this.term.onData((text) => this.connection.sendInput(encoder.encode(text)));
    // Some mouse reports are raw bytes, one per character.
    this.term.onBinary((text) => this.connection.sendInput(Uint8Array.from(text, (c) => c.charCodeAt(0) & 0xff)));
    this.term.onResize(({ cols, rows }) => this.connection.resize(cols, rows));

    this.updateLabel();
    this.onState('connecting', '');
    // Connect once laid out, so the first size sent is the real one.
    requestAnimationFrame(() => {
      this.fit();
      this.connection.connect();
    });
  }

  /** Ctrl+Shift+C copies the selection; Ctrl+Shift+V pastes (through the browser's paste event). */
  onKey(event) {
    if (!(event.ctrlKey && event.shiftKey)) return true;
    if (event.code === 'KeyC') {
      if (event.type === 'keydown') {
        const selection = this.term.getSelection();
        if (selection) navigator.clipboard?.writeText(selection).catch(() => {});
      }
      event.preventDefault(); // (Chromium would open the element inspector)
      return false;
    }
    if (event.code === 'KeyV') {
      // Not handled by xterm.js as a key: the browser then fires a paste event on the
      // terminal's text area, which xterm.js sends as input (bracketed when the shell asks).
      return false;
    }
    return true;
  }

  onState(state, detail) {
    this.pane.dataset.state = state;
    this.tabElement.dataset.state = state;
    const text = STATE_TEXT[state] ?? state;
    this.overlayText.textContent = detail && state !== 'connecting' ? `${text} ${detail}` : text;
    this.overlay.hidden = !text;
    this.tabElement.title = `${this.where()} · session ${this.session ?? '(new)'}${text ? ` · ${text}` : ''}`;
    if (state === 'paused') this.view.onUnauthenticated();
    if (state === 'ended') {
      this.term.options.cursorBlink = false;
      this.term.options.disableStdin = true;
      this.view.save();
    }
  }

  /** "host", or "host · container" for a shell in a container. */
  where() {
    return this.container ? `${this.hostName} · ${this.container}` : this.hostName;
  }

  updateLabel() {
    this.label.textContent = `${this.where()} · ${this.session ? this.session.slice(0, 8) : 'new'}`;
    this.tabElement.dataset.host = this.host;
    this.tabElement.dataset.session = this.session ?? '';
    this.tabElement.dataset.container = this.container ?? '';
  }

  setActive(active) {
    this.tabElement.classList.toggle('active', active);
    this.tabElement.setAttribute('aria-selected', String(active));
    this.pane.hidden = !active;
    if (active) requestAnimationFrame(() => this.fit());
  }

  fit() {
    if (this.pane.hidden) return;
    try {
      this.fitAddon.fit();
    } catch {
      // Not laid out yet (the view is hidden): the next resize fits it.
    }
  }

  focus() {
    this.term.focus();
  }

  dispose() {
    this.connection.close();
    this.term.dispose();
    this.tabElement.remove();
    this.pane.remove();
  }
}
