// The fleet overview (#/metrics): every host the user sees with its status, labels, latest
// CPU, memory, load, fullest disk and network, and sparklines of its CPU and memory over the
// last hour (`GET /api/v1/metrics/overview`); sortable by a column, filtered by labels, kept
// up to date by the live samples' WebSocket and the hosts' event stream (statuses).

import { h } from './dom.js';
import { LiveEvents } from './live-events.js';
import { MetricsSocket, fullestDisk, metricsHash, overview, parsePairs, total, valueText } from './metrics-api.js';
import { sparkline } from './sparkline.js';

/** How much history the sparklines show. */
const WINDOW_SECONDS = 3600;
/** Changes within this long are drawn once. */
const RENDER_DELAY_MS = 250;
/** How often the rows are drawn anyway, so the sparklines move on while nothing comes. */
const REDRAW_MS = 30_000;

/** The sortable columns: how to read the value sorted by. */
const SORTS = {
  name: (host) => host.name.toLowerCase(),
  status: (host) => (host.status === 'online' ? 0 : 1),
  cpu: (host) => host.latest?.cpu ?? -1,
  memory: (host) => host.latest?.['memory.percent'] ?? -1,
  disk: (host) => fullestDisk(host.latest)?.percent ?? -1,
};

export class FleetPanel {
  /** @param {{onUnauthenticated: () => void}} callbacks */
  constructor({ onUnauthenticated }) {
    this.onUnauthenticated = onUnauthenticated;
    this.hosts = null; // the overview's entries, kept up to date
    this.sort = { key: 'name', descending: false };
    this.filter = {}; // labels a host must have
    this.loads = 0;
    this.renderTimer = null;
    this.redrawTimer = null;

    this.badge = h('span', { class: 'live' });
    this.count = h('span', { class: 'muted' });
    this.error = h('p', { class: 'error', role: 'alert' });
    this.filterInput = h('input', { placeholder: 'env=prod role=web', spellcheck: 'false', autocomplete: 'off', 'data-field': 'label-filter' });
    this.head = h('thead');
    this.body = h('tbody');
    this.element = h('div', { class: 'fleet-panel' },
      h('div', { class: 'heading' }, h('h2', {}, 'Metrics'), this.count, h('span', { class: 'spacer' }), this.badge),
      h('form', {
        class: 'filters',
        onsubmit: (event) => {
          event.preventDefault();
          this.applyFilter();
        },
      },
        h('label', {}, 'Labels', this.filterInput),
        h('button', { type: 'submit', class: 'primary' }, 'Filter'),
        h('button', {
          type: 'button',
          'data-action': 'clear-filter',
          onclick: () => {
            this.filterInput.value = '';
            this.applyFilter();
          },
        }, 'Clear')),
      this.error,
      h('div', { class: 'table-wrap' }, h('table', { class: 'grid fleet' }, this.head, this.body)));
    this.renderHead();

    this.socket = new MetricsSocket({
      badge: this.badge,
      onSample: (sample) => this.onSample(sample),
      onReopen: () => this.load(),
      onUnauthenticated,
    });
    this.events = new LiveEvents({
      url: '/api/v1/hosts/events',
      events: { hosts: (hosts) => this.onHosts(hosts) },
      onUnauthenticated,
    });
  }

  open() {
    this.error.textContent = '';
    this.load();
    this.socket.open();
    this.events.open();
    this.redrawTimer = setInterval(() => this.render(), REDRAW_MS);
  }

  close() {
    this.loads += 1; // (an answer still on its way is dropped)
    this.socket.close();
    this.events.close();
    clearTimeout(this.renderTimer);
    clearInterval(this.redrawTimer);
  }

  fail(e) {
    if (e.status === 401) return this.onUnauthenticated();
    this.error.textContent = e.message;
  }

  async load() {
    const load = ++this.loads;
    let hosts;
    try {
      hosts = await overview('1h');
    } catch (e) {
      if (load === this.loads) this.fail(e);
      return;
    }
    if (load !== this.loads) return;
    this.error.textContent = '';
    this.hosts = hosts;
    this.render();
  }

  /** A stored sample: the host's latest values, and the sparklines' newest point. */
  onSample({ host: id, at, values }) {
    const host = this.hosts?.find((x) => x.host === id);
    if (!host || (host.latest && at <= host.latest.at)) return;
    host.latest = { ...values, at };
    const since = at - WINDOW_SECONDS;
    for (const [series, value] of [[host.cpu, values.cpu], [host.memory, values['memory.percent']]]) {
      if (Number.isFinite(value)) series.push([at, value]);
      while (series.length > 0 && series[0][0] < since) series.shift();
    }
    this.renderSoon();
  }

  /** The hosts' list changed: statuses, or hosts that came or went (read the overview again). */
  onHosts(list) {
    if (!this.hosts) return;
    const known = new Set(this.hosts.map((host) => host.host));
    if (list.length !== known.size || list.some((host) => !known.has(host.id))) {
      this.load();
      return;
    }
    const statuses = new Map(list.map((host) => [host.id, host.status]));
    for (const host of this.hosts) host.status = statuses.get(host.host) ?? host.status;
    this.renderSoon();
  }

  applyFilter() {
    try {
      this.filter = parsePairs(this.filterInput.value, 'filter');
    } catch (e) {
      this.error.textContent = e.message;
      return;
    }
    this.error.textContent = '';
    this.render();
  }

  /** Adds a label (a chip clicked) to the filter. */
  filterBy(key, value) {
    this.filter = { ...this.filter, [key]: value };
    this.filterInput.value = Object.entries(this.filter).map(([k, v]) => `${k}=${v}`).join(' ');
    this.render();
  }

  sortBy(key) {
    this.sort = { key, descending: this.sort.key === key ? !this.sort.descending : false };
    this.renderHead();
    this.render();
  }

  renderHead() {
    const column = (title, key = null, number = false) => h('th', {
      class: number ? 'number' : null,
      'data-sort': key,
      'aria-sort': key ? (this.sort.key === key ? (this.sort.descending ? 'descending' : 'ascending') : 'none') : null,
      onclick: key ? () => this.sortBy(key) : null,
    }, title);
    this.head.replaceChildren(h('tr', {},
      column('Status', 'status'),
      column('Name', 'name'),
      column('Labels'),
      column('CPU', 'cpu', true),
      column('Memory', 'memory', true),
      column('Load', null, true),
      column('Disk', 'disk', true),
      column('Network', null, true),
      column('CPU, 1 h'),
      column('Memory, 1 h')));
  }

  renderSoon() {
    clearTimeout(this.renderTimer);
    this.renderTimer = setTimeout(() => this.render(), RENDER_DELAY_MS);
  }

  render() {
    clearTimeout(this.renderTimer);
    if (!this.hosts) return;
    const matches = (host) => Object.entries(this.filter).every(([key, value]) => host.labels?.[key] === value);
    const shown = this.hosts.filter(matches);
    const value = SORTS[this.sort.key];
    const order = this.sort.descending ? -1 : 1;
    shown.sort((a, b) => {
      const [x, y] = [value(a), value(b)];
      return (x < y ? -1 : x > y ? 1 : a.name.localeCompare(b.name)) * order;
    });
    const now = Date.now() / 1000;
    this.body.replaceChildren(...shown.map((host) => this.row(host, now)));
    if (shown.length === 0) {
      const text = this.hosts.length === 0 ? 'No hosts yet.' : 'No host has these labels.';
      this.body.append(h('tr', { class: 'none' }, h('td', { colspan: 10, class: 'muted' }, text)));
    }
    const online = this.hosts.filter((host) => host.status === 'online').length;
    this.count.textContent = `${shown.length} of ${this.hosts.length} hosts shown, ${online} online`;
  }

  row(host, now) {
    const latest = host.latest;
    const disk = fullestDisk(latest);
    const number = (text, title = null) => h('td', { class: 'number', title }, text);
    const until = Math.max(now, latest?.at ?? 0);
    return h('tr', { dataset: { host: host.host, name: host.name, status: host.status } },
      h('td', {}, h('span', { class: `status ${host.status}` }, host.status)),
      h('td', { class: 'name' }, h('a', { href: metricsHash(host.host) }, host.name)),
      h('td', { class: 'labels' }, Object.entries(host.labels ?? {}).map(([key, value]) =>
        h('button', {
          type: 'button',
          class: 'tag mono chip',
          title: `Show only hosts with ${key}=${value}`,
          onclick: () => this.filterBy(key, value),
        }, `${key}=${value}`))),
      h('td', { class: 'number', dataset: { metric: 'cpu' } }, valueText(latest?.cpu, 'percent')),
      number(valueText(latest?.['memory.percent'], 'percent')),
      number(valueText(latest?.load1, 'load'), 'load over 1 minute'),
      number(disk ? valueText(disk.percent, 'percent') : '—', disk ? `fullest: ${disk.mount}` : null),
      number(`↓ ${valueText(total(latest, 'net.rx'), 'rate')} ↑ ${valueText(total(latest, 'net.tx'), 'rate')}`),
      h('td', { class: 'spark', dataset: { spark: 'cpu' } }, sparkline(host.cpu, { until, label: `CPU over the last hour (now ${valueText(latest?.cpu, 'percent')})` })),
      h('td', { class: 'spark', dataset: { spark: 'memory' } }, sparkline(host.memory, { until, label: 'memory over the last hour' })),
    );
  }
}
