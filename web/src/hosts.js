// The hosts page: the host table, kept live by the server's event stream
// (`GET /api/v1/hosts/events`, event `hosts`, data = the whole list).

import { checkSession } from './api.js';
import { $, ago, dateTime, h } from './dom.js';

/** How often "last seen" times are redrawn while the page is shown. */
const REDRAW_MS = 15_000;
/** Wait before opening a new event stream after the browser gave up on one. */
const RETRY_MS = 3_000;

export class HostsView {
  /**
   * @param {object} callbacks
   * @param {(host: object) => void} callbacks.onOpenTerminal   a new session on the host
   * @param {(host: object) => void} callbacks.onShowSessions   list the host's sessions
   * @param {(host: object) => void} callbacks.onOpenFiles      the host's file manager
   * @param {() => void} callbacks.onUnauthenticated
   */
  constructor({ onOpenTerminal, onShowSessions, onOpenFiles, onUnauthenticated }) {
    this.onOpenTerminal = onOpenTerminal;
    this.onShowSessions = onShowSessions;
    this.onOpenFiles = onOpenFiles;
    this.onUnauthenticated = onUnauthenticated;
    this.hosts = null; // the last list received
    this.source = null;
    this.retryTimer = null;
    this.redrawTimer = null;
  }

  show() {
    this.connect();
    this.redrawTimer = setInterval(() => this.render(), REDRAW_MS);
  }

  hide() {
    clearInterval(this.redrawTimer);
    clearTimeout(this.retryTimer);
    this.source?.close();
    this.source = null;
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.source?.close();
    const source = new EventSource('/api/v1/hosts/events');
    this.source = source;
    this.setLive('connecting');
    source.onopen = () => this.setLive('live');
    source.addEventListener('hosts', (event) => {
      this.hosts = JSON.parse(event.data);
      this.setLive('live');
      this.render();
    });
    source.onerror = async () => {
      if (source !== this.source) return;
      this.setLive('reconnecting');
      // While CONNECTING the browser retries by itself (a dropped stream). CLOSED means the
      // server answered with an error, such as 401 when the login expired.
      if (source.readyState !== EventSource.CLOSED) return;
      if ((await checkSession()) === 'unauthenticated') return this.onUnauthenticated();
      if (source === this.source) this.retryTimer = setTimeout(() => this.connect(), RETRY_MS);
    };
  }

  setLive(state) {
    const badge = $('#hosts-live');
    badge.dataset.state = state;
    badge.textContent = { connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…' }[state];
  }

  render() {
    if (!this.hosts) return;
    const body = $('#hosts-body');
    const hosts = [...this.hosts].sort((a, b) => a.name.localeCompare(b.name));
    body.replaceChildren(...hosts.map((host) => this.row(host)));
    if (hosts.length === 0) {
      body.append(h('tr', {}, h('td', { colspan: 8, class: 'muted' },
        'No hosts yet. `zpanel tokens create` prints the command that enrols one.')));
    }
    $('#hosts-count').textContent = `${hosts.filter((x) => x.status === 'online').length} of ${hosts.length} online`;
  }

  row(host) {
    const online = host.status === 'online';
    return h('tr', { dataset: { host: host.id, name: host.name, status: host.status, workspace: host.workspace } },
      h('td', { class: 'name' }, host.name, h('div', { class: 'muted mono small', title: host.id }, host.id.slice(0, 8))),
      h('td', { class: 'workspace' }, host.workspace || '—'),
      h('td', {}, h('span', { class: `status ${host.status}` }, host.status)),
      h('td', { title: dateTime(host.last_seen) }, online ? 'now' : ago(host.last_seen)),
      h('td', {}, host.os || '—'),
      h('td', {}, [host.kernel, host.arch].filter(Boolean).join(' · ') || '—'),
      h('td', { class: 'mono small' }, host.daemon_version || '—'),
      h('td', { class: 'actions' },
        h('button', {
          type: 'button',
          class: 'primary terminal',
          disabled: !online,
          title: online ? 'Open a new terminal session' : 'The host is offline',
          onclick: () => this.onOpenTerminal(host),
        }, 'Terminal'),
        h('button', { type: 'button', disabled: !online, onclick: () => this.onShowSessions(host) }, 'Sessions'),
        h('button', {
          type: 'button',
          class: 'files',
          disabled: !online,
          title: online ? 'Browse and edit files' : 'The host is offline',
          onclick: () => this.onOpenFiles(host),
        }, 'Files'),
      ),
    );
  }
}
