// A host's metrics page (#/metrics/HOST?range=1h|24h|7d|30d): its latest values, charts of
// CPU (total, or per core), load, memory and swap, disk usage per mount, disk I/O and
// network per interface over the range (`GET …/hosts/HOST/metrics`), with the live samples
// appended on the 1 h range; and its top processes now (`GET …/hosts/HOST/processes`).

import { findHost } from './api.js';
import { ago, dateTime, formatSize, h } from './dom.js';
import { MetricChart } from './metric-chart.js';
import {
  MetricsSocket,
  RANGES,
  alertsHash,
  fullestDisk,
  hostMetrics,
  metricsHash,
  processes,
  seriesValues,
  total,
  valueText,
} from './metrics-api.js';

/** The range on which live samples are appended, and its length. */
const LIVE_RANGE = '1h';
const LIVE_WINDOW_SECONDS = 3600;
/** Processes listed. */
const PROCESS_LIMIT = 25;

/** Legend names of the series without an instance. */
const NAMES = {
  cpu: 'CPU',
  load1: 'load 1 min',
  load5: 'load 5 min',
  load15: 'load 15 min',
  'memory.percent': 'memory',
  'swap.percent': 'swap',
  'disk.read': 'read',
  'disk.write': 'written',
};

/** A series' legend name: its metric's, or its instance (with "rx"/"tx" for interfaces). */
function seriesName(metric, instance) {
  if (metric === 'cpu.core') return `core ${instance}`;
  if (metric === 'net.rx' || metric === 'net.tx') return `${instance} ${metric.slice(4)}`;
  return instance || NAMES[metric] || metric;
}

/** The charts, in order: what each holds and its unit. */
const CHARTS = [
  { id: 'cpu', title: 'CPU', unit: 'percent', metrics: ['cpu', 'cpu.core'], shown: ['cpu'] },
  { id: 'load', title: 'Load', unit: 'load', metrics: ['load1', 'load5', 'load15'] },
  { id: 'memory', title: 'Memory and swap', unit: 'percent', metrics: ['memory.percent', 'swap.percent'] },
  { id: 'disk', title: 'Disk usage', unit: 'percent', metrics: ['disk.percent'] },
  { id: 'disk-io', title: 'Disk I/O', unit: 'rate', metrics: ['disk.read', 'disk.write'] },
  { id: 'network', title: 'Network', unit: 'rate', metrics: ['net.rx', 'net.tx'] },
];

export class HostMetricsPanel {
  /**
   * @param {object} options
   * @param {string} options.host   the host's id or name, as in the address
   * @param {() => void} options.onUnauthenticated
   */
  constructor({ host, onUnauthenticated }) {
    this.host = host;
    this.onUnauthenticated = onUnauthenticated;
    this.found = null; // the host, from GET /api/v1/hosts
    this.range = LIVE_RANGE;
    this.sort = 'cpu';
    this.loads = 0;
    this.pending = null; // live samples that came while the charts were being read
    this.latest = null; // the newest sample's values
    this.disposed = false;

    this.badge = h('span', { class: 'live' });
    this.title = h('h2', {}, host);
    this.status = h('span', { class: 'status' });
    this.error = h('p', { class: 'error', role: 'alert' });
    this.ranges = h('nav', { class: 'subtabs ranges', 'aria-label': 'Range' });
    this.historyLink = h('a', { class: 'button', href: alertsHash({ tab: 'history', host }), 'data-action': 'alert-history' }, 'Alert history');
    this.figures = h('div', { class: 'stats-numbers' });
    const perCore = h('input', {
      type: 'checkbox',
      'data-field': 'per-core',
      onchange: () => this.charts[0].showMetrics(perCore.checked ? ['cpu', 'cpu.core'] : ['cpu']),
    });
    this.charts = CHARTS.map((chart, i) => new MetricChart({
      ...chart,
      label: seriesName,
      tools: i === 0 ? [h('label', { class: 'check' }, perCore, 'per core')] : [],
    }));

    this.processError = h('p', { class: 'error', role: 'alert' });
    this.processTotal = h('span', { class: 'muted' });
    this.processBody = h('tbody');
    this.sortButtons = ['cpu', 'memory'].map((sort) => h('button', {
      type: 'button',
      dataset: { sort },
      onclick: () => {
        this.sort = sort;
        this.loadProcesses();
      },
    }, sort === 'cpu' ? 'by CPU' : 'by memory'));

    this.element = h('div', { class: 'host-metrics', dataset: { host } },
      h('div', { class: 'heading' },
        h('a', { class: 'back', href: metricsHash(), title: 'Every host' }, '←'),
        this.title, this.status, h('span', { class: 'spacer' }), this.historyLink, this.badge),
      this.ranges,
      this.error,
      this.figures,
      h('div', { class: 'metric-charts' }, this.charts.map((chart) => chart.element)),
      h('section', { class: 'panel processes' },
        h('div', { class: 'toolbar' }, h('h3', {}, 'Top processes'), this.processTotal, h('span', { class: 'spacer' }),
          h('span', { class: 'segmented' }, this.sortButtons),
          h('button', { type: 'button', 'data-action': 'refresh-processes', onclick: () => this.loadProcesses() }, 'Refresh')),
        this.processError,
        h('div', { class: 'table-wrap' }, h('table', { class: 'grid processes' },
          h('thead', {}, h('tr', {},
            h('th', { class: 'number' }, 'PID'), h('th', {}, 'Name'), h('th', {}, 'User'),
            h('th', { class: 'number' }, 'CPU'), h('th', { class: 'number' }, 'Memory'),
            h('th', {}, 'State'), h('th', {}, 'Started'), h('th', {}, 'Command'))),
          this.processBody))));

    this.socket = new MetricsSocket({
      host,
      badge: this.badge,
      onSample: (sample) => this.onSample(sample),
      onReopen: () => this.range === LIVE_RANGE && this.loadCharts(),
      onUnauthenticated,
    });
    this.renderFigures();
  }

  /** Reads the host, its charts over `range` and its processes, and follows its samples. */
  async open(range) {
    this.socket.open();
    this.setRange(range);
    this.loadProcesses();
    let found;
    try {
      found = await findHost(this.host);
      if (!found) throw new Error(`unknown host ${this.host}: it was deleted, or you cannot see it`);
    } catch (e) {
      return this.fail(e);
    }
    if (this.disposed) return;
    this.found = found;
    this.title.textContent = found.name;
    this.status.className = `status ${found.status}`;
    this.status.textContent = found.status;
    this.historyLink.href = alertsHash({ tab: 'history', host: found.id });
  }

  setRange(range) {
    this.range = RANGES.includes(range) ? range : LIVE_RANGE;
    this.ranges.replaceChildren(...RANGES.map((r) =>
      h('a', { href: metricsHash(this.host, r), class: r === this.range ? 'current' : null, dataset: { range: r } }, r)));
    this.loadCharts();
  }

  fail(e) {
    if (e.status === 401) return this.onUnauthenticated();
    this.error.textContent = e.message;
  }

  async loadCharts() {
    const load = ++this.loads;
    const range = this.range;
    this.pending = [];
    let answer;
    try {
      answer = await hostMetrics(this.host, { metrics: CHARTS.flatMap((chart) => chart.metrics), range });
    } catch (e) {
      if (load === this.loads) this.fail(e);
      return;
    }
    if (load !== this.loads || this.disposed) return;
    this.error.textContent = '';
    for (const chart of this.charts) chart.set(answer.series, answer.step);
    const pending = this.pending;
    this.pending = null;
    if (range === LIVE_RANGE) for (const sample of pending) this.appendLive(sample);
  }

  onSample(sample) {
    if (this.latest && sample.at <= this.latest.at) return;
    this.latest = { ...sample.values, at: sample.at };
    this.renderFigures();
    if (this.range !== LIVE_RANGE) return;
    if (this.pending) this.pending.push(sample);
    else this.appendLive(sample);
  }

  appendLive({ at, values }) {
    const series = seriesValues(values);
    for (const chart of this.charts) chart.append(at, series, LIVE_WINDOW_SECONDS);
  }

  renderFigures() {
    const latest = this.latest;
    const figure = (name, value, detail = '') =>
      h('div', { class: 'figure', dataset: { figure: name } },
        h('span', { class: 'figure-name muted' }, name),
        h('span', { class: 'figure-value' }, value),
        h('span', { class: 'figure-detail muted small' }, detail));
    const disk = fullestDisk(latest);
    const memory = latest?.['memory.total'] ? `${formatSize(latest['memory.used'])} of ${formatSize(latest['memory.total'])}` : '';
    this.figures.replaceChildren(
      figure('CPU', valueText(latest?.cpu, 'percent')),
      figure('Memory', valueText(latest?.['memory.percent'], 'percent'), memory),
      figure('Swap', valueText(latest?.['swap.percent'], 'percent')),
      figure('Load', valueText(latest?.load1, 'load'), latest ? `${valueText(latest.load5, 'load')} · ${valueText(latest.load15, 'load')}` : ''),
      figure('Disk', disk ? valueText(disk.percent, 'percent') : '—', disk ? `fullest: ${disk.mount}` : ''),
      figure('Network', `↓ ${valueText(total(latest, 'net.rx'), 'rate')}`, `↑ ${valueText(total(latest, 'net.tx'), 'rate')}`),
      figure('Uptime', valueText(latest?.uptime, 'seconds'), latest ? `sample ${ago(latest.at)}` : ''),
      figure('Processes', valueText(latest?.processes, 'count')),
    );
  }

  async loadProcesses() {
    for (const button of this.sortButtons) button.classList.toggle('current', button.dataset.sort === this.sort);
    const sort = this.sort;
    this.processError.textContent = '';
    let answer;
    try {
      answer = await processes(this.host, { sort, limit: PROCESS_LIMIT });
    } catch (e) {
      if (e.status === 401) return this.onUnauthenticated();
      this.processError.textContent = e.message;
      return;
    }
    if (this.disposed || sort !== this.sort) return;
    if (!this.latest && answer.summary) {
      this.latest = answer.summary;
      this.renderFigures();
    }
    this.processTotal.textContent = `${answer.processes.length} of ${answer.total}, read ${new Date().toLocaleTimeString()}`;
    this.processBody.replaceChildren(...answer.processes.map((p) =>
      h('tr', { dataset: { pid: String(p.pid) } },
        h('td', { class: 'number mono' }, String(p.pid)),
        h('td', { class: 'name' }, p.name),
        h('td', {}, p.user || '—'),
        h('td', { class: 'number' }, valueText(p.cpu_percent, 'percent')),
        h('td', { class: 'number' }, formatSize(p.memory)),
        h('td', {}, p.state),
        h('td', { class: 'when muted', title: dateTime(p.started_at) }, ago(p.started_at)),
        h('td', { class: 'command mono small', title: p.command }, p.command))));
    if (answer.processes.length === 0) {
      this.processBody.append(h('tr', { class: 'none' }, h('td', { colspan: 8, class: 'muted' }, 'No processes.')));
    }
  }

  dispose() {
    this.disposed = true;
    this.loads += 1;
    this.socket.close();
    for (const chart of this.charts) chart.dispose();
  }
}
