// The control plane's metrics and alerts endpoints (ARCHITECTURE.md, "Metrics and alerts"),
// the live samples' WebSocket, and what the metrics and alerts pages share: the metric
// names, the ranges, their addresses and how values read. Every call rejects with an ApiError
// carrying the server's one line.

import { api, checkSession, withQuery } from './api.js';
import { formatSize } from './dom.js';
import { setLive } from './live-events.js';

/** The ranges the host page offers, shortest first (the API takes any duration). */
export const RANGES = ['1h', '24h', '7d', '30d'];

/**
 * Every metric the control plane stores (the contract's table): its unit (`percent`, `load`,
 * `bytes`, `rate`, `seconds`, `count`) and what names its instances, if it has them.
 */
export const METRICS = [
  { name: 'cpu', unit: 'percent' },
  { name: 'cpu.core', unit: 'percent', instance: 'core' },
  { name: 'load1', unit: 'load' },
  { name: 'load5', unit: 'load' },
  { name: 'load15', unit: 'load' },
  { name: 'memory.percent', unit: 'percent' },
  { name: 'memory.used', unit: 'bytes' },
  { name: 'memory.total', unit: 'bytes' },
  { name: 'swap.percent', unit: 'percent' },
  { name: 'swap.used', unit: 'bytes' },
  { name: 'swap.total', unit: 'bytes' },
  { name: 'disk.percent', unit: 'percent', instance: 'mount' },
  { name: 'disk.used', unit: 'bytes', instance: 'mount' },
  { name: 'disk.total', unit: 'bytes', instance: 'mount' },
  { name: 'disk.read', unit: 'rate' },
  { name: 'disk.write', unit: 'rate' },
  { name: 'net.rx', unit: 'rate', instance: 'interface' },
  { name: 'net.tx', unit: 'rate', instance: 'interface' },
  { name: 'uptime', unit: 'seconds' },
  { name: 'processes', unit: 'count' },
];

/** The unit of a metric name ('count' for a name the table does not have). */
export function unitOf(metric) {
  return METRICS.find((m) => m.name === metric)?.unit ?? 'count';
}

// === addresses ===

/** The fleet overview (`host` null), or a host's page over `range`. */
export function metricsHash(host = null, range = '1h') {
  if (!host) return '#/metrics';
  const base = `#/metrics/${encodeURIComponent(host)}`;
  return range === '1h' ? base : `${base}?range=${encodeURIComponent(range)}`;
}

/** The alerts page: `tab` (active, history, rules, channels) and the history's filters. */
export function alertsHash({ tab = 'active', host = '', rule = '' } = {}) {
  return withQuery('#/alerts', { tab: tab === 'active' ? '' : tab, host, rule });
}

// === HTTP ===

const hostPath = (host, rest) => `/api/v1/hosts/${encodeURIComponent(host)}${rest}`;

/**
 * Every host the caller sees with its latest sample and the last hour of CPU and memory:
 * `[{host, name, status, labels, latest, cpu: [[at, avg]…], memory: [[at, avg]…]}]`.
 */
export function overview(range = '1h') {
  return api('GET', withQuery('/api/v1/metrics/overview', { range }));
}

/** `{host, host_name, since, until, step, resolution, series: [{metric, instance, points}]}` */
export function hostMetrics(host, { metrics, range }) {
  return api('GET', withQuery(hostPath(host, '/metrics'), { metric: metrics.join(','), range }));
}

/** The host's top processes now, by `sort` (`cpu` or `memory`): `{summary, total, processes}`. */
export function processes(host, { sort, limit }) {
  return api('GET', withQuery(hostPath(host, '/processes'), { sort, limit }));
}

export const alerts = {
  rules: () => api('GET', '/api/v1/alerts/rules'),
  createRule: (rule) => api('POST', '/api/v1/alerts/rules', rule),
  deleteRule: (id) => api('DELETE', `/api/v1/alerts/rules/${encodeURIComponent(id)}`),
  channels: () => api('GET', '/api/v1/alerts/channels'),
  createChannel: (channel) => api('POST', '/api/v1/alerts/channels', channel),
  deleteChannel: (name) => api('DELETE', `/api/v1/alerts/channels/${encodeURIComponent(name)}`),
  /** Sends a test notification: `{ok, error}`. */
  testChannel: (name) => api('POST', `/api/v1/alerts/channels/${encodeURIComponent(name)}/test`),
  /** Alert events newest first; `active`: only the alerts firing now. */
  events: ({ host = '', rule = '', active = false, limit = '' } = {}) =>
    api('GET', withQuery('/api/v1/alerts/events', { host, rule, active: active ? 1 : '', limit })),
};

// === the live samples ===

/** Reconnect backoff: the first retry waits about BASE, each failure doubles it up to CAP. */
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 15_000;

/**
 * The live samples' WebSocket (`/api/v1/metrics/live`, of one host or of every host the
 * caller sees), opened again with backoff and jitter when it drops, its state on a "live"
 * badge.
 */
export class MetricsSocket {
  /**
   * @param {object} options
   * @param {string|null} options.host        one host's samples, or every host's (null)
   * @param {HTMLElement} options.badge
   * @param {(sample: {host: string, at: number, values: object}) => void} options.onSample
   * @param {() => void} [options.onReopen]   the socket is back after a drop: samples sent
   *        meanwhile are lost, so what it keeps up to date should be read again
   * @param {() => void} options.onUnauthenticated
   */
  constructor({ host = null, badge, onSample, onReopen = () => {}, onUnauthenticated }) {
    Object.assign(this, { host, badge, onSample, onReopen, onUnauthenticated });
    this.socket = null;
    this.retryTimer = null;
    this.failures = 0;
    this.opened = false; // whether a socket of this one ever opened
    this.stopped = true;
  }

  open() {
    this.close();
    this.stopped = false;
    this.opened = false;
    this.failures = 0;
    this.connect();
  }

  connect() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const socket = new WebSocket(`${scheme}//${location.host}${withQuery('/api/v1/metrics/live', { host: this.host })}`);
    this.socket = socket;
    let attached = false;
    if (!this.opened) setLive(this.badge, 'connecting');
    socket.onopen = () => {
      if (socket !== this.socket) return;
      attached = true;
      this.failures = 0;
      setLive(this.badge, 'live');
      if (this.opened) this.onReopen();
      this.opened = true;
    };
    socket.onmessage = (event) => {
      if (socket !== this.socket || typeof event.data !== 'string') return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return; // (not the contract's JSON: nothing to show)
      }
      if (message.type === 'sample') this.onSample(message);
    };
    socket.onclose = (event) => this.dropped(socket, attached, event.reason);
  }

  async dropped(socket, attached, reason) {
    if (socket !== this.socket || this.stopped) return;
    this.socket = null;
    if (!attached) {
      // The upgrade may have been refused because the login ended: the browser does not
      // show the HTTP status, so ask.
      if ((await checkSession()) === 'unauthenticated') {
        this.close();
        return this.onUnauthenticated();
      }
      if (this.stopped) return;
      this.failures += 1;
    }
    // A drop after a working connection retries almost at once; failures back off, with
    // jitter so many pages do not retry in step.
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.failures);
    setLive(this.badge, 'reconnecting', reason || 'the live connection dropped');
    this.retryTimer = setTimeout(() => this.connect(), ceiling / 2 + (Math.random() * ceiling) / 2);
  }

  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    const socket = this.socket;
    this.socket = null;
    socket?.close();
    setLive(this.badge, '');
  }
}

// === values ===

/**
 * A `{latest}` sample as a Map from series key to value: `cpu`, `load1`… for metrics
 * without instances, `disk.percent{/}`, `net.rx{eth0}`… for those with.
 */
export function seriesValues(latest) {
  const values = new Map();
  for (const [metric, value] of Object.entries(latest ?? {})) {
    if (metric === 'at') continue;
    if (typeof value === 'number') values.set(metric, value);
    else if (value && typeof value === 'object') {
      for (const [instance, v] of Object.entries(value)) values.set(seriesKey(metric, instance), v);
    }
  }
  return values;
}

/** `metric` or `metric{instance}`. */
export function seriesKey(metric, instance) {
  return instance ? `${metric}{${instance}}` : metric;
}

/** The fullest file system of a sample: `{mount, percent}`, or null. */
export function fullestDisk(latest) {
  const disks = Object.entries(latest?.['disk.percent'] ?? {});
  if (disks.length === 0) return null;
  const [mount, percent] = disks.reduce((a, b) => (b[1] > a[1] ? b : a));
  return { mount, percent };
}

/** The sum over the instances of `metric` (`net.rx`: every interface), or null. */
export function total(latest, metric) {
  const values = Object.values(latest?.[metric] ?? {});
  return values.length === 0 ? null : values.reduce((a, b) => a + b, 0);
}

/** A value in its unit, for tables, tooltips and axes; '—' for none. */
export function valueText(value, unit) {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  switch (unit) {
    case 'percent':
      return `${value.toFixed(1)} %`;
    case 'load':
      return value.toFixed(2);
    case 'bytes':
      return formatSize(Math.round(value));
    case 'rate':
      return `${formatSize(Math.round(value))}/s`;
    case 'seconds':
      return durationText(Math.round(value));
    default:
      return String(Math.round(value * 100) / 100);
  }
}

/** "45s", "5m", "2h", "3d", "1h30m" for seconds. */
export function durationText(seconds) {
  if (!seconds) return '0s';
  const parts = [];
  let rest = seconds;
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60], ['s', 1]]) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  return parts.slice(0, 2).join('');
}

/** "90s", "5m", "1h30m", "2d" or plain seconds as seconds; throws an Error naming the text. */
export function parseDuration(text, what) {
  const compact = text.replace(/\s/g, '').toLowerCase();
  if (/^\d+$/.test(compact)) return Number(compact);
  if (!/^(\d+[smhd])+$/.test(compact)) {
    throw new Error(`${what} ${JSON.stringify(text.trim())} is not a duration (like 90s, 5m or 1h)`);
  }
  const size = { s: 1, m: 60, h: 3600, d: 86400 };
  return [...compact.matchAll(/(\d+)([smhd])/g)].reduce((sum, [, n, unit]) => sum + Number(n) * size[unit], 0);
}

/**
 * `key=value` pairs separated by spaces or commas as an object; throws an Error naming a pair
 * without `=` (`what` says whose pairs: "filter", "selector").
 */
export function parsePairs(text, what) {
  const pairs = {};
  for (const pair of text.split(/[\s,]+/).filter(Boolean)) {
    const cut = pair.indexOf('=');
    if (cut <= 0) throw new Error(`${what} ${JSON.stringify(pair)} is not KEY=VALUE`);
    pairs[pair.slice(0, cut)] = pair.slice(cut + 1);
  }
  return pairs;
}
