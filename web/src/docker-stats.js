// A container's stats (`GET …/containers/ID/stats/stream`, Server-Sent Events: a `stats`
// sample about every second, `end` when the container is gone): the last sample in numbers,
// and CPU % and memory over the last minutes as a uPlot chart (loaded on first use).

import { formatSize, h } from './dom.js';
import { cpuText, memoryText } from './docker-api.js';
import { LiveEvents } from './live-events.js';

/** How much history the chart shows. */
const WINDOW_SECONDS = 5 * 60;
/** The narrowest span the chart shows. */
const MIN_SPAN_SECONDS = 60;
const CHART_HEIGHT = 260;
/** The theme's colours (style.css), which a canvas cannot read from CSS. */
const COLORS = { cpu: '#61a0ff', memory: '#7bc96f', axis: '#8791a3', grid: '#2a3240' };

export class StatsView {
  constructor(context, id) {
    this.samples = { time: [], cpu: [], memory: [] };
    this.chart = null;
    this.disposed = false;
    this.badge = h('span', { class: 'live' });
    this.reason = h('span', { class: 'muted' });
    this.numbers = h('div', { class: 'stats-numbers' });
    this.chartBox = h('div', { class: 'stats-chart' });
    this.element = h('div', { class: 'stats' },
      h('div', { class: 'toolbar' }, h('span', { class: 'muted' }, `The last ${WINDOW_SECONDS / 60} minutes`),
        h('span', { class: 'spacer' }), this.reason, this.badge),
      this.numbers,
      this.chartBox);
    this.renderNumbers(null);

    this.events = new LiveEvents({
      url: context.docker.statsUrl(id),
      events: {
        stats: (sample) => this.add(sample),
        end: ({ reason }) => {
          this.events.close();
          this.reason.textContent = `stopped: ${reason}`;
        },
      },
      badge: this.badge,
      onRefused: (e) => (this.reason.textContent = e.message),
      onUnauthenticated: context.onUnauthenticated,
    });
    this.events.open();
    this.resize = new ResizeObserver(() => this.chart?.setSize(this.size()));
    this.resize.observe(this.chartBox);
    import('uplot').then(
      ({ default: UPlot }) => this.makeChart(UPlot),
      () => (this.chartBox.textContent = 'the chart could not be loaded: reload the page'));
  }

  add(sample) {
    this.reason.textContent = '';
    const { time, cpu, memory } = this.samples;
    time.push(sample.read_at_ms / 1000);
    cpu.push(sample.cpu_percent);
    memory.push(sample.memory_bytes);
    const since = time.at(-1) - WINDOW_SECONDS;
    const old = time.findIndex((t) => t >= since);
    if (old > 0) for (const series of [time, cpu, memory]) series.splice(0, old);
    this.renderNumbers(sample);
    this.chart?.setData([time, cpu, memory]);
  }

  renderNumbers(sample) {
    const figure = (name, value, detail = '') =>
      h('div', { class: 'figure', dataset: { figure: name } },
        h('span', { class: 'figure-name muted' }, name),
        h('span', { class: 'figure-value' }, value),
        h('span', { class: 'figure-detail muted small' }, detail));
    if (!sample) {
      this.numbers.replaceChildren(figure('CPU', '—'), figure('Memory', '—'));
      return;
    }
    const share = sample.memory_limit_bytes ? ` (${((100 * sample.memory_bytes) / sample.memory_limit_bytes).toFixed(1)} %)` : '';
    this.numbers.replaceChildren(
      figure('CPU', cpuText(sample), '100 % is one CPU'),
      figure('Memory', formatSize(sample.memory_bytes), `${memoryText(sample)}${share}`),
      figure('Network', `↓ ${formatSize(sample.net_rx_bytes)}`, `↑ ${formatSize(sample.net_tx_bytes)}`),
      figure('Block I/O', `${formatSize(sample.block_read_bytes)} read`, `${formatSize(sample.block_write_bytes)} written`),
      figure('Processes', String(sample.pids)),
    );
  }

  size() {
    return { width: Math.max(200, this.chartBox.clientWidth), height: CHART_HEIGHT };
  }

  makeChart(UPlot) {
    if (this.disposed) return;
    const axis = { stroke: COLORS.axis, grid: { stroke: COLORS.grid, width: 1 }, ticks: { stroke: COLORS.grid, width: 1 } };
    const upTo = (floor) => (_, _min, max) => [0, Math.max(floor, (max ?? 0) * 1.2)];
    this.chart = new UPlot({
      ...this.size(),
      scales: {
        // At least the last minute, so the first samples do not fill the width.
        x: { time: true, range: (_, min, max) => [Math.min(min ?? max, max - MIN_SPAN_SECONDS), max] },
        cpu: { range: upTo(5) },
        memory: { range: upTo(1024 * 1024) },
      },
      series: [
        {},
        { label: 'CPU', scale: 'cpu', stroke: COLORS.cpu, width: 2, value: (_, v) => (v == null ? '—' : `${v.toFixed(1)} %`) },
        { label: 'Memory', scale: 'memory', stroke: COLORS.memory, width: 2, value: (_, v) => (v == null ? '—' : formatSize(v)) },
      ],
      axes: [
        axis,
        { ...axis, scale: 'cpu', values: (_, ticks) => ticks.map((v) => `${v} %`) },
        { ...axis, scale: 'memory', side: 1, size: 72, grid: { show: false }, values: (_, ticks) => ticks.map((v) => formatSize(v)) },
      ],
    }, [this.samples.time, this.samples.cpu, this.samples.memory], this.chartBox);
  }

  dispose() {
    this.disposed = true;
    this.events.close();
    this.resize.disconnect();
    this.chart?.destroy();
  }
}
