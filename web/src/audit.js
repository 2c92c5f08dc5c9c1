// The audit page (#/audit, operators and admins): the entries of the audit log, newest first,
// filtered by host, user, action and age, a page at a time ("Load older" pages with
// `before_id`); a link to the same entries as JSON lines; for admins, a check of the whole
// hash chain.

import { api, session, withQuery } from './api.js';
import { $, dateTime, h } from './dom.js';

/** Entries fetched at a time. */
const PAGE = 100;

export class AuditView {
  /** @param {{onUnauthenticated: () => void}} callbacks */
  constructor({ onUnauthenticated }) {
    this.onUnauthenticated = onUnauthenticated;
    /** Host id → name, for the hosts the caller can see. */
    this.hostNames = new Map();
    /** The filters of the entries shown (with `since` fixed when they were applied). */
    this.filters = {};
    /** The oldest entry shown, where "Load older" goes on from. */
    this.oldestId = null;
    /** Counts loads, so an answer to a load that another one replaced is dropped. */
    this.loads = 0;
    $('#audit-filters').addEventListener('submit', (event) => {
      event.preventDefault();
      this.apply();
    });
    $('#audit-since').addEventListener('change', () => this.apply());
    $('#audit-host').addEventListener('change', () => this.apply());
    $('#audit-older').addEventListener('click', () => this.load({ older: true }));
    $('#audit-verify').addEventListener('click', () => this.verify());
  }

  async show() {
    $('#audit-verify').hidden = !session.current.admin;
    $('#audit-verify-result').hidden = true;
    await this.loadHosts();
    this.apply();
  }

  hide() {}

  fail(e) {
    if (e.status === 401) return this.onUnauthenticated();
    $('#audit-error').textContent = e.message;
  }

  /** The host filter's choices (a failure leaves the ids as they are). */
  async loadHosts() {
    let hosts;
    try {
      hosts = await api('GET', '/api/v1/hosts');
    } catch (e) {
      return this.fail(e);
    }
    this.hostNames = new Map(hosts.map((host) => [host.id, host.name]));
    const select = $('#audit-host');
    const chosen = select.value;
    select.replaceChildren(h('option', { value: '' }, 'any host'),
      ...hosts.sort((a, b) => a.name.localeCompare(b.name))
        .map((host) => h('option', { value: host.id, selected: host.id === chosen }, host.name)));
  }

  /** Reads the filter fields and lists the newest entries that match. */
  apply() {
    const since = $('#audit-since').value;
    this.filters = {
      host: $('#audit-host').value,
      user: $('#audit-user').value.trim(),
      action: $('#audit-action').value.trim(),
      since: since ? Math.floor(Date.now() / 1000) - Number(since) : '',
    };
    $('#audit-export').href = withQuery('/api/v1/audit/export', this.filters);
    this.load({ older: false });
  }

  async load({ older }) {
    const load = ++this.loads;
    $('#audit-error').textContent = '';
    const table = $('#audit-body');
    table.closest('table').dataset.state = 'loading';
    let entries;
    try {
      entries = await api('GET', withQuery('/api/v1/audit', {
        ...this.filters,
        before_id: older ? this.oldestId : '',
        limit: PAGE,
      }));
    } catch (e) {
      if (load !== this.loads) return;
      table.closest('table').dataset.state = 'error';
      return this.fail(e);
    }
    if (load !== this.loads) return;
    const rows = entries.map((entry) => this.row(entry));
    if (older) table.append(...rows);
    else table.replaceChildren(...rows);
    if (entries.length > 0) this.oldestId = entries.at(-1).id;
    if (!older && entries.length === 0) {
      table.append(h('tr', { class: 'none' }, h('td', { colspan: 8, class: 'muted' }, 'No entries match.')));
    }
    $('#audit-older').hidden = entries.length < PAGE;
    const shown = table.querySelectorAll('tr[data-id]').length;
    $('#audit-count').textContent = `${shown} ${shown === 1 ? 'entry' : 'entries'}`;
    table.closest('table').dataset.state = 'ready';
  }

  row(entry) {
    const host = entry.host_id ? this.hostNames.get(entry.host_id) ?? entry.host_id.slice(0, 8) : '';
    return h('tr', { dataset: { id: String(entry.id), action: entry.action, outcome: entry.outcome } },
      h('td', { class: 'time', title: `entry ${entry.id}, hash ${entry.hash}` }, dateTime(entry.at)),
      h('td', { class: 'name' }, entry.actor),
      h('td', { class: 'mono small' }, entry.credential),
      h('td', { class: 'mono' }, entry.action),
      h('td', { title: entry.host_id }, host),
      h('td', { class: 'target' }, entry.target),
      h('td', {}, h('span', { class: `outcome ${entry.outcome}` }, entry.outcome)),
      h('td', { class: 'detail' }, entry.detail),
    );
  }

  async verify() {
    const result = $('#audit-verify-result');
    const button = $('#audit-verify');
    button.disabled = true;
    result.hidden = true;
    let answer;
    try {
      answer = await api('GET', '/api/v1/audit/verify');
    } catch (e) {
      return this.fail(e);
    } finally {
      button.disabled = false;
    }
    result.hidden = false;
    result.dataset.ok = String(answer.ok);
    result.textContent = answer.ok
      ? `The chain holds: ${answer.entries} entries verified.`
      : `The chain is broken at entry ${answer.broken_at}: ${answer.reason}`;
    // The check is itself an audit entry: show it.
    this.apply();
  }
}
