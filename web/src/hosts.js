// The hosts page: the host table, kept live by the server's event stream
// (`GET /api/v1/hosts/events`, event `hosts`, data = the whole list; a host's status is
// online, offline or revoked), with a way from each host to its terminals, files and Docker
// page; and the host picker other pages share.

import { $, ago, dateTime, h } from './dom.js';
import { LiveEvents } from './live-events.js';

/** How often "last seen" times are redrawn while the page is shown. */
const REDRAW_MS = 15_000;

export class HostsView {
  /**
   * @param {object} callbacks
   * @param {(host: object) => void} callbacks.onOpenTerminal   a new session on the host
   * @param {(host: object) => void} callbacks.onShowSessions   list the host's sessions
   * @param {(host: object) => void} callbacks.onOpenFiles      the host's file manager
   * @param {(host: object) => void} callbacks.onOpenDocker     the host's Docker page
   * @param {() => void} callbacks.onUnauthenticated
   */
  constructor({ onOpenTerminal, onShowSessions, onOpenFiles, onOpenDocker, onUnauthenticated }) {
    this.onOpenTerminal = onOpenTerminal;
    this.onShowSessions = onShowSessions;
    this.onOpenFiles = onOpenFiles;
    this.onOpenDocker = onOpenDocker;
    this.hosts = null; // the last list received
    this.redrawTimer = null;
    this.events = new LiveEvents({
      url: '/api/v1/hosts/events',
      events: {
        hosts: (hosts) => {
          this.hosts = hosts;
          this.render();
        },
      },
      badge: $('#hosts-live'),
      onUnauthenticated,
    });
  }

  show() {
    this.events.open();
    this.redrawTimer = setInterval(() => this.render(), REDRAW_MS);
  }

  hide() {
    clearInterval(this.redrawTimer);
    this.events.close();
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
    // a revoked host's certificate is refused: it stays listed (with its history) until deleted
    const away = host.status === 'revoked' ? 'The host was revoked' : 'The host is offline';
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
          title: online ? 'Open a new terminal session' : away,
          onclick: () => this.onOpenTerminal(host),
        }, 'Terminal'),
        h('button', { type: 'button', disabled: !online, onclick: () => this.onShowSessions(host) }, 'Sessions'),
        h('button', {
          type: 'button',
          class: 'files',
          disabled: !online,
          title: online ? 'Browse and edit files' : away,
          onclick: () => this.onOpenFiles(host),
        }, 'Files'),
        h('button', {
          type: 'button',
          class: 'docker',
          disabled: !online,
          title: online ? 'Containers, images, volumes and networks' : away,
          onclick: () => this.onOpenDocker(host),
        }, 'Docker'),
      ),
    );
  }
}

/** A page's heading and the hosts as links to `hrefOf(host)` (`#/files` alone, `#/docker` alone). */
export function hostChoices(title, hosts, hrefOf) {
  const sorted = [...hosts].sort((a, b) => a.name.localeCompare(b.name));
  return [
    h('h2', {}, title),
    h('p', { class: 'muted' }, 'Choose a host:'),
    h('div', { class: 'host-choices' }, sorted.map((host) =>
      h('a', { class: `button ${host.status}`, href: hrefOf(host), dataset: { name: host.name } },
        h('span', { class: `status ${host.status}` }), host.name))),
  ];
}
