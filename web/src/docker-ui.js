// Pieces the Docker pages share: their addresses, buttons that run one request at a time,
// tables, a container's state, times.

import { ago, dateTime, h } from './dom.js';
import { unixSeconds } from './docker-api.js';

/** The Docker page of `host`: a tab (`containers`, `images`, `volumes`, `networks`) or a container. */
export function dockerHash(host, { tab = null, container = null } = {}) {
  const base = `#/docker/${encodeURIComponent(host)}`;
  if (container) return `${base}?container=${encodeURIComponent(container)}`;
  return tab && tab !== 'containers' ? `${base}?tab=${tab}` : base;
}

/**
 * A button that runs `action` (async) and stays disabled until it ends, so a double click
 * sends one request. `name` lands in `data-action` (for tests and styles).
 */
export function actionButton(label, action, { name, kind = null, title = null } = {}) {
  const button = h('button', {
    type: 'button',
    class: kind,
    title,
    'data-action': name ?? label.toLowerCase(),
    onclick: async () => {
      button.disabled = true;
      try {
        await action();
      } finally {
        button.disabled = false;
      }
    },
  }, label);
  return button;
}

/**
 * A table with `headers` and `rows` (tr elements); `empty` is said when there are none. A
 * header ending in "#" heads a column of numbers (aligned right): "CPU#".
 */
export function gridTable(className, headers, rows, empty) {
  const body = h('tbody', {}, rows);
  if (rows.length === 0) body.append(h('tr', { class: 'none' }, h('td', { colspan: headers.length, class: 'muted' }, empty)));
  return h('table', { class: `grid ${className}` },
    h('thead', {}, h('tr', {}, headers.map((header) => header.endsWith('#')
      ? h('th', { class: 'number' }, header.slice(0, -1))
      : h('th', {}, header)))),
    body);
}

/** "running", "running (healthy)", "exited"… with the state as a class for its colour. */
export function stateBadge(container) {
  const health = container.health ? ` (${container.health})` : '';
  return h('span', { class: `state ${container.state} ${container.health || ''}`.trim() }, `${container.state}${health}`);
}

/** A table cell saying how long ago (Unix seconds or RFC 3339), the exact time as its tooltip. */
export function agoCell(value) {
  const seconds = unixSeconds(value);
  return h('td', { class: 'muted when', title: dateTime(seconds) }, seconds ? ago(seconds) : '—');
}

/** `{KEY: VALUE}` as small tags. */
export function labelTags(labels) {
  return Object.entries(labels ?? {}).map(([key, value]) => h('span', { class: 'tag mono', title: `${key}=${value}` }, `${key}=${value}`));
}
