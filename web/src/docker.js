// The Docker page of a host (#/docker/HOST, #/docker/HOST?tab=images|volumes|networks, and
// #/docker/HOST?container=ID for one container): the engine line, or the reason no engine
// answers; tabs Containers, Images, Volumes and Networks; a container's logs, stats,
// processes and inspect document; all kept live by the engine's events
// (`GET …/docker/events`, Server-Sent Events). What the user's role on the host cannot do is
// not offered (viewer: lists; developer: start, stop, logs, shell; operator: create, remove,
// pull, prune); the server refuses it either way, with one line the page shows.

import { api, atLeast, findHost, roleOn } from './api.js';
import { $, h } from './dom.js';
import { HostDocker } from './docker-api.js';
import { ContainerDetail } from './docker-container.js';
import { ContainersPanel } from './docker-containers.js';
import { ImagesPanel, NetworksPanel, VolumesPanel } from './docker-resources.js';
import { dockerHash } from './docker-ui.js';
import { hostChoices } from './hosts.js';
import { LiveEvents } from './live-events.js';

/** The tabs, in order: their name in the address, their title and their panel. */
const TABS = [
  { name: 'containers', title: 'Containers', Panel: ContainersPanel },
  { name: 'images', title: 'Images', Panel: ImagesPanel },
  { name: 'volumes', title: 'Volumes', Panel: VolumesPanel },
  { name: 'networks', title: 'Networks', Panel: NetworksPanel },
];
/** Events within this long are handled with one reload. */
const EVENT_DEBOUNCE_MS = 250;
/** Event actions that change nothing a page shows (a shell's exec, a terminal resized…). */
const UNCHANGING = /^(exec_|attach|detach|resize|top|copy|archive-path|extract-to-dir|export|commit)/;

/** "1 container", "3 containers" */
function count(n, noun) {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

export class DockerView {
  /**
   * @param {object} callbacks
   * @param {() => void} callbacks.onUnauthenticated
   * @param {(tab: {host: string, hostName: string, container: string}) => void} callbacks.onOpenShell
   *        a terminal tab with a shell in the container
   */
  constructor({ onUnauthenticated, onOpenShell }) {
    this.onUnauthenticated = onUnauthenticated;
    this.onOpenShell = onOpenShell;
    this.host = null; // the host id or name in the address
    this.hostReady = Promise.resolve(null); // resolves to `context` once the host is read
    this.context = null; // what the panels share, for the host shown
    this.engine = null; // the last engine answer
    this.panel = null; // the tab or container shown
    this.panelKey = null;
    this.navigations = 0; // a newer navigation makes an older one's answers stale
    this.reloadTimer = null;
    this.reloadPanel = false; // whether the pending reload reads the panel too
    this.events = null;

    $('#docker-tabs').replaceChildren(...TABS.map((tab) =>
      h('a', { href: '#/docker', dataset: { tab: tab.name } }, tab.title)));
    $('#docker-engine-retry').addEventListener('click', () => this.loadEngine());
  }

  // === routing ===

  /** Shows what the address names: `host`, and a tab (`tab`) or a container (`container`). */
  async navigate({ host, query }) {
    const navigation = ++this.navigations;
    const tab = TABS.find((t) => t.name === query.get('tab')) ?? TABS[0];
    const container = query.get('container');
    this.clearMessages();
    if (!host) return this.showHostPicker();
    $('#docker-picker').hidden = true;
    $('#docker-layout').hidden = false;
    if (host !== this.host) {
      this.host = host;
      this.hostReady = this.switchHost(host);
    }
    const context = await this.hostReady;
    if (navigation !== this.navigations || !context) return;

    const key = container ? `container:${container}` : tab.name;
    for (const link of $('#docker-tabs').children) {
      link.href = context.hash({ tab: link.dataset.tab });
      link.classList.toggle('current', !container && link.dataset.tab === tab.name);
    }
    if (key === this.panelKey) return;
    this.panel?.dispose();
    this.panelKey = key;
    this.panel = container ? new ContainerDetail(context, container) : new tab.Panel(context);
    $('#docker-body').replaceChildren(this.panel.element);
    if (this.engine?.available) this.panel.load();
  }

  show() {}

  hide() {
    this.navigations += 1; // (a navigation still waiting for answers stops there)
    this.leaveHost();
    this.host = null; // read afresh when shown again
  }

  /**
   * Reads the host and its engine and listens to its events. Resolves to what the panels
   * share, or null when the host is unknown (or another one was asked for meanwhile).
   */
  async switchHost(host) {
    this.leaveHost();
    $('#docker-host').textContent = host;
    $('#docker-engine').textContent = '';
    $('#docker-tabs').hidden = true;
    $('#docker-unavailable').hidden = true;
    $('#docker-body').replaceChildren();
    let found;
    try {
      found = await findHost(host);
      if (!found) throw new Error(`unknown host ${host}`);
    } catch (e) {
      if (this.host === host) {
        this.host = null; // the next navigation asks again
        this.fail(e);
      }
      return null;
    }
    if (this.host !== host) return null;
    $('#docker-host').textContent = found.name;
    $('#docker-host').dataset.status = found.status;
    $('#nav-docker').setAttribute('href', dockerHash(found.id));
    const role = roleOn(found);
    const docker = new HostDocker(found.id);
    const context = {
      docker,
      host: found,
      may: { use: atLeast(role, 'developer'), manage: atLeast(role, 'operator') },
      hash: (where) => dockerHash(found.id, where),
      run: (call, success) => this.run(call, success),
      fail: (e) => this.fail(e),
      notify: (text) => this.notify(text),
      openShell: (container) => this.onOpenShell({ host: found.id, hostName: found.name, container }),
      onUnauthenticated: this.onUnauthenticated,
    };
    this.context = context;
    this.events = new LiveEvents({
      url: docker.eventsUrl(),
      events: { docker: (event) => this.onEvent(event) },
      badge: $('#docker-live'),
      onReopen: () => this.reloadSoon(),
      onRefused: (e) => e.status === 503 && this.loadEngine(),
      onUnauthenticated: this.onUnauthenticated,
    });
    await this.loadEngine();
    return this.context === context ? context : null;
  }

  /** Stops what the host shown had running. */
  leaveHost() {
    clearTimeout(this.reloadTimer);
    this.reloadPanel = false;
    this.events?.close();
    this.events = null;
    this.panel?.dispose();
    this.panel = null;
    this.panelKey = null;
    this.context = null;
    this.engine = null;
  }

  /** `#/docker` alone: choose a host. */
  async showHostPicker() {
    this.leaveHost();
    this.host = null;
    $('#docker-layout').hidden = true;
    const picker = $('#docker-picker');
    picker.hidden = false;
    try {
      const hosts = await api('GET', '/api/v1/hosts');
      picker.replaceChildren(...hostChoices('Docker', hosts, (host) => dockerHash(host.id)));
    } catch (e) {
      if (e.status === 401) return this.onUnauthenticated();
      picker.replaceChildren(h('p', { class: 'error', role: 'alert' }, e.message));
    }
  }

  // === the engine ===

  async loadEngine() {
    const context = this.context;
    if (!context) return;
    let engine;
    try {
      engine = await context.docker.engine();
    } catch (e) {
      engine = { available: false, message: e.message };
      if (e.status === 401) return this.onUnauthenticated();
    }
    if (context !== this.context) return;
    const wasAvailable = this.engine?.available;
    this.engine = engine;
    this.renderEngine();
    if (engine.available && !this.events.source) this.events.open();
    if (!engine.available) this.events.close();
    if (engine.available && !wasAvailable) this.panel?.load();
  }

  renderEngine() {
    const engine = this.engine;
    const line = $('#docker-engine');
    line.dataset.available = String(engine.available);
    $('#docker-unavailable').hidden = engine.available;
    $('#docker-unavailable-text').textContent = engine.available ? '' : engine.message || 'no Docker engine answers';
    $('#docker-tabs').hidden = !engine.available;
    $('#docker-body').hidden = !engine.available;
    if (!engine.available) {
      line.textContent = 'unavailable';
      line.title = '';
      return;
    }
    const platform = [engine.os, engine.arch].filter(Boolean).join('/');
    line.textContent = [
      `Docker ${engine.version}${engine.api_version ? ` (API ${engine.api_version})` : ''}`,
      platform,
      `${count(engine.containers, 'container')}, ${engine.running} running`,
      count(engine.images, 'image'),
    ].filter(Boolean).join(' · ');
    line.title = engine.endpoint ? `engine at ${engine.endpoint}` : '';
  }

  // === events, actions and messages ===

  /** An engine event: the panel that shows what it changed is read again (once for a burst). */
  onEvent(event) {
    if (UNCHANGING.test(event.action)) return;
    const panel = Boolean(this.panel?.wants(event));
    if (panel || event.kind === 'container' || event.kind === 'image') this.reloadSoon({ panel });
  }

  /** Reads the engine (and, unless `panel` is false, the panel) again, once for a burst. */
  reloadSoon({ panel = true } = {}) {
    this.reloadPanel ||= panel;
    clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(() => {
      const withPanel = this.reloadPanel;
      this.reloadTimer = null;
      this.reloadPanel = false;
      this.loadEngine();
      if (withPanel) this.panel?.load();
    }, EVENT_DEBOUNCE_MS);
  }

  /**
   * Runs a request the user asked for: on success says `success(result)` (when given) and
   * reads the panel again; on failure shows the server's line. Resolves whether it worked.
   */
  async run(call, success = null) {
    this.clearMessages();
    let result;
    try {
      result = await call();
    } catch (e) {
      this.fail(e);
      return false;
    }
    if (success) this.notify(success(result));
    this.reloadSoon();
    return true;
  }

  fail(e) {
    if (e.status === 401) return this.onUnauthenticated();
    $('#docker-notice').hidden = true;
    $('#docker-error').textContent = e.message;
    if (e.status === 503 && this.context) this.loadEngine();
  }

  notify(text) {
    $('#docker-error').textContent = '';
    $('#docker-notice').textContent = text;
    $('#docker-notice').hidden = false;
  }

  clearMessages() {
    $('#docker-error').textContent = '';
    $('#docker-notice').hidden = true;
  }
}
