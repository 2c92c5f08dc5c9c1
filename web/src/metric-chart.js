// One chart of the host metrics page: the series of some metrics over time (one per instance:
// a mount, an interface, a core), drawn by uPlot (loaded on first use, the chunk the Docker
// stats chart loads too), with the unit on the axis and in the legend. Its data is a query's
// answer, and then live samples appended; `data-points` on the chart says how many points in
// time it drew.

import { h } from './dom.js';
import { seriesKey, valueText } from './metrics-api.js';

const CHART_HEIGHT = 220;
/** The narrowest span the chart shows. */
const MIN_SPAN_SECONDS = 60;
/** A stretch without samples longer than this (and than 3 steps) is drawn as a gap. */
const MIN_GAP_SECONDS = 60;
/** The theme's colours (style.css), which a canvas cannot read from CSS, and the series'. */
const COLORS = { axis: '#8791a3', grid: '#2a3240' };
const PALETTE = ['#61a0ff', '#7bc96f', '#e5b454', '#f0616d', '#b48cf0', '#4fc6c6', '#f29a56', '#d879b8'];

/** An axis tick: its round number as it is (`20 %`, `0.5`), sizes as sizes. */
const tickText = (value, unit) => (unit === 'percent' ? `${value} %` : unit === 'load' ? String(value) : valueText(value, unit));

/** The metric of a series key (`disk.percent{/}` → `disk.percent`). */
const metricOf = (key) => key.split('{')[0];

export class MetricChart {
  /**
   * @param {object} options
   * @param {string} options.id          lands in `data-chart`
   * @param {string} options.title
   * @param {string} options.unit        how values read (`valueText`)
   * @param {string[]} options.metrics   the metrics it holds
   * @param {(metric: string, instance: string) => string} options.label  a series' name
   * @param {string[]} [options.shown]   the metrics it draws (default: all it holds)
   * @param {HTMLElement[]} [options.tools]  controls beside its title
   */
  constructor({ id, title, unit, metrics, label, shown = metrics, tools = [] }) {
    Object.assign(this, { id, unit, metrics, label, shown });
    this.clear();
    this.plot = null;
    this.UPlot = null;
    this.loading = null;
    this.disposed = false;
    this.box = h('div', { class: 'metric-chart-plot', dataset: { points: '0' } });
    this.empty = h('p', { class: 'muted chart-empty' });
    this.element = h('section', { class: 'metric-chart', dataset: { chart: id } },
      h('div', { class: 'metric-chart-head' }, h('h3', {}, title), h('span', { class: 'spacer' }), ...tools),
      this.empty,
      this.box);
    this.resize = new ResizeObserver(() => this.plot?.setSize(this.size()));
    this.resize.observe(this.element);
  }

  clear() {
    this.keys = []; // series keys, in the order drawn
    this.names = new Map(); // key → legend label
    this.times = [];
    this.columns = new Map(); // key → values, one per time (null: none)
    this.gap = MIN_GAP_SECONDS;
  }

  /** Replaces the data with a query's `series` (those of this chart's metrics) at `step` seconds. */
  set(series, step) {
    this.clear();
    this.gap = Math.max(MIN_GAP_SECONDS, 3 * step);
    const order = (s) => this.metrics.indexOf(s.metric);
    const mine = series.filter((s) => this.metrics.includes(s.metric) && s.points.length > 0)
      .sort((a, b) => order(a) - order(b) || a.instance.localeCompare(b.instance, undefined, { numeric: true }));
    const byKey = new Map();
    for (const s of mine) {
      const key = seriesKey(s.metric, s.instance);
      this.addKey(key, s.metric, s.instance);
      byKey.set(key, new Map(s.points.map(([at, avg]) => [at, avg])));
    }
    const times = [...new Set(mine.flatMap((s) => s.points.map(([at]) => at)))].sort((a, b) => a - b);
    for (const at of times) this.push(at, (key) => byKey.get(key).get(at));
    this.draw(true);
  }

  /** Appends a live sample (`values`: series key → value) at `at`, keeping the last `window` seconds. */
  append(at, values, window) {
    if (this.times.length > 0 && at <= this.times.at(-1)) return;
    const mine = [...values].filter(([key]) => this.metrics.includes(metricOf(key)));
    if (mine.length === 0) return;
    let added = false;
    for (const [key] of mine) {
      if (this.columns.has(key)) continue;
      const [metric, instance = ''] = key.replace(/}$/, '').split('{');
      this.addKey(key, metric, instance);
      added = true;
    }
    this.push(at, (key) => values.get(key));
    while (this.times.length > 0 && this.times[0] < at - window) {
      this.times.shift();
      for (const column of this.columns.values()) column.shift();
    }
    this.draw(added);
  }

  /** Draws only the series of `metrics` (the CPU chart's cores on or off). */
  showMetrics(metrics) {
    this.shown = metrics;
    this.draw(true);
  }

  addKey(key, metric, instance) {
    this.keys.push(key);
    this.names.set(key, this.label(metric, instance));
    this.columns.set(key, this.times.map(() => null));
  }

  /** One more time; a stretch longer than the gap before it gets a row of nulls (a gap). */
  push(at, valueOf) {
    const last = this.times.at(-1);
    if (last !== undefined && at - last > this.gap) {
      this.times.push(last + 1);
      for (const column of this.columns.values()) column.push(null);
    }
    this.times.push(at);
    for (const [key, column] of this.columns) column.push(valueOf(key) ?? null);
  }

  size() {
    return { width: Math.max(240, this.element.clientWidth - 16), height: CHART_HEIGHT };
  }

  /** Draws the data, making the chart again when its series changed (`rebuild`). */
  draw(rebuild) {
    if (this.disposed) return;
    const empty = this.times.length === 0;
    this.empty.textContent = empty ? 'No data yet: the host has sent no samples in this range.' : '';
    this.empty.hidden = !empty;
    this.box.hidden = empty;
    if (!this.UPlot) {
      this.loading ??= import('uplot').then(
        ({ default: UPlot }) => {
          this.UPlot = UPlot;
          this.draw(true);
        },
        () => (this.empty.textContent = 'the chart could not be loaded: reload the page'));
      return;
    }
    const keys = this.keys.filter((key) => this.shown.includes(metricOf(key)));
    const data = [this.times, ...keys.map((key) => this.columns.get(key))];
    if (rebuild || !this.plot) {
      this.plot?.destroy();
      this.plot = new this.UPlot(this.options(keys), data, this.box);
    } else {
      this.plot.setData(data);
    }
    this.box.dataset.points = String(this.times.length);
    this.box.dataset.series = String(keys.length);
  }

  options(keys) {
    const unit = this.unit;
    const axis = { stroke: COLORS.axis, grid: { stroke: COLORS.grid, width: 1 }, ticks: { stroke: COLORS.grid, width: 1 } };
    const upTo = unit === 'percent' ? () => [0, 100] : (_, _min, max) => [0, Math.max(unit === 'load' ? 1 : 1024, (max ?? 0) * 1.15)];
    return {
      ...this.size(),
      scales: {
        x: { time: true, range: (_, min, max) => [Math.min(min ?? max, max - MIN_SPAN_SECONDS), max] },
        y: { range: upTo },
      },
      series: [
        {},
        ...keys.map((key, i) => ({
          label: this.names.get(key),
          stroke: PALETTE[i % PALETTE.length],
          width: this.shown.length > 1 && key.startsWith('cpu.core') ? 1 : 2,
          value: (_, v) => valueText(v, unit),
        })),
      ],
      axes: [axis, { ...axis, size: 84, values: (_, ticks) => ticks.map((v) => tickText(v, unit)) }],
    };
  }

  dispose() {
    this.disposed = true;
    this.resize.disconnect();
    this.plot?.destroy();
  }
}
