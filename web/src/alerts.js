// The alerts page (#/alerts?tab=active|history|rules|channels): the alerts firing now; the
// history of firings and resolves with each channel's delivery, filtered by host and rule
// (`&host=ID&rule=NAME`); the rules and the notification channels, which operators create,
// delete and (channels) test. The server refuses what the role cannot do either way, and
// every refusal shows its one line.

import { api, atLeast, session } from './api.js';
import { choose } from './dialogs.js';
import { $, ago, dateTime, h } from './dom.js';
import { actionButton, gridTable } from './docker-ui.js';
import { METRICS, alerts, alertsHash, durationText, parseDuration, parsePairs, unitOf, valueText } from './metrics-api.js';

const TABS = [
  { name: 'active', title: 'Active' },
  { name: 'history', title: 'History' },
  { name: 'rules', title: 'Rules' },
  { name: 'channels', title: 'Channels' },
];
/** History entries read at a time. */
const HISTORY_LIMIT = 200;
const SEVERITIES = ['info', 'warning', 'critical'];
const COMPARISONS = ['>', '>=', '<', '<='];
const CHANNEL_KINDS = ['webhook', 'slack', 'telegram', 'email'];

/** `{key: value}` as small tags. */
const pairTags = (pairs) => Object.entries(pairs ?? {}).map(([key, value]) => h('span', { class: 'tag mono' }, `${key}=${value}`));
const severityBadge = (severity) => h('span', { class: `severity ${severity}` }, severity);
/** A labelled form field (`name` lands in the input's `data-field`). */
function field(name, label, input, hint = null) {
  input.dataset.field = name;
  return h('label', { class: `field field-${name}` }, label, input, hint ? h('span', { class: 'hint muted' }, hint) : null);
}
const text = (attributes = {}) => h('input', { spellcheck: 'false', autocomplete: 'off', ...attributes });
const select = (values, chosen) => h('select', {}, values.map((v) => h('option', { value: v, selected: v === chosen }, v)));

/** What a rule watches, in words: "cpu > 90 for 5m", "offline for 10m". */
function conditionText(rule) {
  if (rule.kind === 'offline') return `offline for ${durationText(rule.for_seconds)}`;
  const metric = rule.instance ? `${rule.metric}{${rule.instance}}` : rule.metric;
  const held = rule.for_seconds ? ` for ${durationText(rule.for_seconds)}` : '';
  return `${metric} ${rule.comparison} ${rule.threshold}${held}`;
}

export class AlertsView {
  /** @param {{onUnauthenticated: () => void}} callbacks */
  constructor({ onUnauthenticated }) {
    this.onUnauthenticated = onUnauthenticated;
    this.tab = null;
    this.loads = 0; // a newer load makes an older one's answers stale
    this.rules = []; // the last rules read (units of events' values, the rule filter)
    this.tabs = h('nav', { class: 'subtabs', 'aria-label': 'Alerts' },
      TABS.map((tab) => h('a', { href: alertsHash({ tab: tab.name }), dataset: { tab: tab.name } }, tab.title)));
    this.notice = h('p', { class: 'notice', role: 'status', hidden: true });
    this.error = h('p', { class: 'error', role: 'alert' });
    this.body = h('div', { class: 'alerts-body' });
    $('#view-alerts').replaceChildren(
      h('div', { class: 'heading' }, h('h2', {}, 'Alerts')),
      this.tabs, this.notice, this.error, this.body);
  }

  get mayManage() {
    return atLeast(session.current?.role, 'operator');
  }

  /** Shows the tab the address names, with the history's filters. */
  navigate({ query }) {
    const tab = TABS.find((t) => t.name === query.get('tab'))?.name ?? 'active';
    this.tab = tab;
    this.filters = { host: query.get('host') ?? '', rule: query.get('rule') ?? '' };
    for (const link of this.tabs.children) link.classList.toggle('current', link.dataset.tab === tab);
    this.error.textContent = '';
    this.notice.hidden = true;
    this.load();
  }

  show() {}

  hide() {
    this.loads += 1;
  }

  fail(e) {
    if (e.status === 401) return this.onUnauthenticated();
    this.notice.hidden = true;
    this.error.textContent = e.message;
  }

  notify(text) {
    this.error.textContent = '';
    this.notice.textContent = text;
    this.notice.hidden = false;
  }

  /** Reads what the tab shows and draws it. */
  async load() {
    const load = ++this.loads;
    const tab = this.tab;
    let parts;
    try {
      parts = await this.read(tab);
    } catch (e) {
      if (load === this.loads) this.fail(e);
      return;
    }
    if (load !== this.loads) return;
    this.body.replaceChildren(...this.render(tab, parts));
    this.body.dataset.tab = tab;
  }

  read(tab) {
    const rules = () => alerts.rules().then((rules) => (this.rules = rules));
    switch (tab) {
      case 'active':
        return Promise.all([alerts.events({ active: true }), rules()]);
      case 'history':
        return Promise.all([alerts.events({ ...this.filters, limit: HISTORY_LIMIT }), rules(), api('GET', '/api/v1/hosts')]);
      case 'rules':
        return Promise.all([rules(), alerts.channels()]);
      default:
        return Promise.all([alerts.channels()]);
    }
  }

  render(tab, parts) {
    switch (tab) {
      case 'active':
        return this.renderActive(...parts);
      case 'history':
        return this.renderHistory(...parts);
      case 'rules':
        return this.renderRules(...parts);
      default:
        return this.renderChannels(...parts);
    }
  }

  /** Runs a change; on success says `done` and reads the tab again. */
  async change(call, done) {
    try {
      await call();
    } catch (e) {
      this.fail(e);
      return false;
    }
    this.notify(done);
    await this.load();
    return true;
  }

  /**
   * Sends what a form asks with its submit button disabled (a double click sends one
   * request). A refusal is said on the form's `error` line, a lost session goes to the login
   * page; on success `done` is said and the tab drawn again.
   */
  async submit(form, error, call, done) {
    const button = form.querySelector('[type="submit"]');
    button.disabled = true;
    try {
      await call();
    } catch (e) {
      if (e.status === 401) return this.onUnauthenticated();
      error.textContent = e.message;
      return;
    } finally {
      button.disabled = false;
    }
    this.notify(done);
    this.load();
  }

  /** An event's value in its rule's unit. */
  valueOf(event) {
    const rule = this.rules.find((r) => r.name === event.rule);
    if (rule?.kind === 'offline') return valueText(event.value, 'seconds');
    return valueText(event.value, rule ? unitOf(rule.metric) : 'count');
  }

  // === active and history ===

  renderActive(events) {
    return [gridTable('alerts active', ['Severity', 'Rule', 'Host', 'Since', 'Value#', 'Summary'],
      events.map((event) => h('tr', { dataset: { id: String(event.id), rule: event.rule, host: event.host_id } },
        h('td', {}, severityBadge(event.severity)),
        h('td', { class: 'name' }, event.rule),
        h('td', {}, event.host_name),
        h('td', { class: 'when', title: dateTime(event.at) }, ago(event.at)),
        h('td', { class: 'number' }, this.valueOf(event)),
        h('td', { class: 'summary' }, event.summary))),
      'Nothing is firing.')];
  }

  renderHistory(events, rules, hosts) {
    const hostSelect = h('select', { 'data-field': 'host' }, h('option', { value: '' }, 'any host'),
      [...hosts].sort((a, b) => a.name.localeCompare(b.name))
        .map((host) => h('option', { value: host.id, selected: host.id === this.filters.host }, host.name)));
    const ruleSelect = h('select', { 'data-field': 'rule' }, h('option', { value: '' }, 'any rule'),
      rules.map((rule) => h('option', { value: rule.name, selected: rule.name === this.filters.rule }, rule.name)));
    const apply = () => (location.hash = alertsHash({ tab: 'history', host: hostSelect.value, rule: ruleSelect.value }));
    hostSelect.addEventListener('change', apply);
    ruleSelect.addEventListener('change', apply);
    const deliveries = (event) => event.deliveries.map((d) =>
      h('span', { class: `tag delivery ${d.status}`, title: d.last_error || `${d.attempts} attempt(s)`, dataset: { channel: d.channel } },
        `${d.channel}: ${d.status}`));
    return [
      h('div', { class: 'filters' }, h('label', {}, 'Host', hostSelect), h('label', {}, 'Rule', ruleSelect)),
      gridTable('alerts history', ['Time', 'State', 'Severity', 'Rule', 'Host', 'Value#', 'Summary', 'Notified', 'Deliveries'],
        events.map((event) => h('tr', { dataset: { id: String(event.id), rule: event.rule, state: event.state } },
          h('td', { class: 'when' }, dateTime(event.at)),
          h('td', {}, h('span', { class: `alert-state ${event.state}` }, event.state)),
          h('td', {}, severityBadge(event.severity)),
          h('td', { class: 'name' }, event.rule),
          h('td', {}, event.host_name),
          h('td', { class: 'number' }, this.valueOf(event)),
          h('td', { class: 'summary' }, event.summary),
          h('td', { title: event.notified ? '' : 'within the cooldown after a resolve, or no channel' }, event.notified ? 'yes' : 'no'),
          h('td', {}, deliveries(event)))),
        'No alert has fired here yet.'),
    ];
  }

  // === rules ===

  renderRules(rules, channels) {
    const table = gridTable('alert-rules', ['Name', 'Condition', 'Severity', 'Hosts', 'Channels', 'Cooldown', 'Workspace', ''],
      rules.map((rule) => h('tr', { dataset: { name: rule.name, id: rule.id } },
        h('td', { class: 'name' }, rule.name),
        h('td', { class: 'mono' }, conditionText(rule)),
        h('td', {}, severityBadge(rule.severity)),
        h('td', {}, Object.keys(rule.selector ?? {}).length ? pairTags(rule.selector) : h('span', { class: 'muted' }, 'every host')),
        h('td', {}, rule.channels.length ? rule.channels.join(', ') : h('span', { class: 'muted' }, 'none')),
        h('td', {}, durationText(rule.cooldown_seconds)),
        h('td', {}, rule.workspace),
        h('td', { class: 'actions' },
          h('a', { href: alertsHash({ tab: 'history', rule: rule.name }) }, 'History'),
          this.mayManage ? this.deleteButton('rule', rule.name, () => alerts.deleteRule(rule.id)) : null))),
      'No rules yet.');
    return [this.mayManage ? this.ruleForm(channels) : null, table].filter(Boolean);
  }

  /** A delete button that asks first. */
  deleteButton(what, name, call) {
    return actionButton('Delete', async () => {
      const choice = await choose({
        name: `delete-${what}`,
        title: `Delete the ${what} ${name}?`,
        message: what === 'rule' ? 'Its alert history stays.' : 'Rules that notify it stop doing so.',
        choices: [{ id: 'delete', label: 'Delete', kind: 'danger' }],
      });
      if (choice) await this.change(call, `${what} ${name} deleted`);
    }, { kind: 'danger', name: 'delete' });
  }

  /** The workspaces the user may make rules and channels in; a select when there is a choice. */
  workspaceField() {
    const workspaces = (session.current?.workspaces ?? [])
      .filter((w) => session.current.admin || atLeast(w.role, 'operator'))
      .map((w) => w.name);
    return workspaces.length > 1 ? select(workspaces, workspaces[0]) : null;
  }

  ruleForm(channels) {
    const i = {
      name: text({ required: true, placeholder: 'high-cpu' }),
      kind: select(['metric', 'offline'], 'metric'),
      metric: h('select', {}, METRICS.map((m) => h('option', { value: m.name }, m.instance ? `${m.name} (per ${m.instance})` : m.name))),
      instance: text({ placeholder: 'any' }),
      comparison: select(COMPARISONS, '>'),
      threshold: h('input', { type: 'number', step: 'any', placeholder: '90' }),
      for: text({ value: '5m' }),
      severity: select(SEVERITIES, 'warning'),
      selector: text({ placeholder: 'env=prod role=web' }),
      channels: h('select', { multiple: true, size: Math.min(4, Math.max(2, channels.length)) },
        channels.map((c) => h('option', { value: c.name }, `${c.name} (${c.kind})`))),
      cooldown: text({ value: '5m' }),
      workspace: this.workspaceField(),
    };
    const error = h('p', { class: 'error', role: 'alert' });
    const metricOnly = [
      field('metric', 'Metric', i.metric),
      field('instance', 'Instance', i.instance, 'a mount, an interface, a core; empty: any'),
      field('comparison', 'Comparison', i.comparison),
      field('threshold', 'Threshold', i.threshold, 'in the metric\'s unit (%, bytes, bytes/s)'),
    ];
    const sync = () => {
      for (const element of metricOnly) element.hidden = i.kind.value !== 'metric';
    };
    i.kind.addEventListener('change', sync);
    sync();
    const form = h('form', {
      class: 'panel-box alert-form rule-form',
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = '';
        let rule;
        try {
          rule = this.ruleOf(i);
        } catch (e) {
          error.textContent = e.message;
          return;
        }
        await this.submit(form, error, () => alerts.createRule(rule), `rule ${rule.name} created`);
      },
    },
      h('h3', {}, 'New rule'),
      h('div', { class: 'run-grid' },
        field('name', 'Name', i.name),
        field('kind', 'Kind', i.kind),
        ...metricOnly,
        field('for', 'For', i.for, 'how long it must hold (offline: how long the host is gone), like 5m'),
        field('severity', 'Severity', i.severity),
        field('selector', 'Hosts with labels', i.selector, 'KEY=VALUE, separated by spaces; empty: every host'),
        field('channels', 'Channels', i.channels, channels.length ? 'Ctrl-click to pick several' : 'no channels yet: add one under Channels'),
        field('cooldown', 'Cooldown', i.cooldown, 'a new firing this soon after a resolve is not notified'),
        i.workspace ? field('workspace', 'Workspace', i.workspace) : null),
      error,
      h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary', 'data-action': 'create-rule' }, 'Create rule')));
    return form;
  }

  /** The rule form as the API's rule; throws an Error naming a field it cannot read. */
  ruleOf(i) {
    const rule = {
      name: i.name.value.trim(),
      kind: i.kind.value,
      for_seconds: parseDuration(i.for.value, 'for'),
      severity: i.severity.value,
      selector: parsePairs(i.selector.value, 'label'),
      channels: [...i.channels.selectedOptions].map((o) => o.value),
      cooldown_seconds: parseDuration(i.cooldown.value, 'cooldown'),
    };
    if (!rule.name) throw new Error('name the rule');
    if (i.workspace) rule.workspace = i.workspace.value;
    if (rule.kind === 'metric') {
      if (i.threshold.value === '') throw new Error('say the threshold the metric is compared with');
      Object.assign(rule, {
        metric: i.metric.value,
        instance: i.instance.value.trim(),
        comparison: i.comparison.value,
        threshold: Number(i.threshold.value),
      });
    }
    return rule;
  }

  // === channels ===

  renderChannels(channels) {
    const target = (c) => {
      if (c.kind === 'email') return c.to.join(', ') + (c.from ? ` (from ${c.from})` : '');
      if (c.kind === 'telegram') return `chat ${c.chat_id}${c.url ? ` via ${c.url}` : ''}`;
      return c.url;
    };
    const table = gridTable('alert-channels', ['Name', 'Kind', 'Sends to', 'Secret', 'Workspace', 'Created', ''],
      channels.map((c) => {
        const result = h('span', { class: 'test-result' });
        return h('tr', { dataset: { name: c.name, kind: c.kind } },
          h('td', { class: 'name' }, c.name),
          h('td', {}, c.kind),
          h('td', { class: 'mono small target' }, target(c)),
          h('td', {}, c.has_secret ? 'set' : '—'),
          h('td', {}, c.workspace),
          h('td', { class: 'when muted', title: dateTime(c.created_at) }, ago(c.created_at)),
          h('td', { class: 'actions' }, result,
            this.mayManage ? actionButton('Send test', () => this.test(c.name, result), { name: 'test' }) : null,
            this.mayManage ? this.deleteButton('channel', c.name, () => alerts.deleteChannel(c.name)) : null));
      }),
      'No channels yet.');
    return [this.mayManage ? this.channelForm() : null, table].filter(Boolean);
  }

  /** Sends a test notification and says how it went in `result`. */
  async test(name, result) {
    result.textContent = 'sending…';
    result.dataset.ok = '';
    let answer;
    try {
      answer = await alerts.testChannel(name);
    } catch (e) {
      if (e.status === 401) return this.onUnauthenticated();
      answer = { ok: false, error: e.message };
    }
    result.dataset.ok = String(answer.ok);
    result.textContent = answer.ok ? 'sent' : `failed: ${answer.error}`;
    result.title = result.textContent;
  }

  channelForm() {
    const i = {
      name: text({ required: true, placeholder: 'ops-webhook' }),
      kind: select(CHANNEL_KINDS, 'webhook'),
      url: text({ placeholder: 'https://hooks.example.com/zpanel' }),
      secret: h('input', { type: 'password', autocomplete: 'new-password' }),
      chat_id: text({ placeholder: '-1001234567890' }),
      to: text({ placeholder: 'ops@example.com oncall@example.com' }),
      smtp_url: h('input', { type: 'password', autocomplete: 'off', placeholder: "the control plane's --smtp-url" }),
      from: text({ placeholder: "the control plane's --smtp-from" }),
      workspace: this.workspaceField(),
    };
    const error = h('p', { class: 'error', role: 'alert' });
    // Each field with the kinds it belongs to, and its label and hint per kind.
    const fields = [
      { kinds: ['webhook', 'slack', 'telegram'], element: field('url', 'URL', i.url), label: { telegram: 'API base URL' } },
      { kinds: ['webhook', 'telegram'], element: field('secret', 'Secret', i.secret), label: { telegram: 'Bot token' } },
      { kinds: ['telegram'], element: field('chat_id', 'Chat ID', i.chat_id) },
      { kinds: ['email'], element: field('to', 'Recipients', i.to, 'separated by spaces or commas') },
      { kinds: ['email'], element: field('smtp_url', 'SMTP URL', i.smtp_url, 'smtp:// or smtps://, with user and password; empty: the server\'s') },
      { kinds: ['email'], element: field('from', 'From', i.from) },
    ];
    const placeholders = {
      webhook: 'https://hooks.example.com/zpanel',
      slack: 'https://hooks.slack.com/services/…',
      telegram: 'https://api.telegram.org',
    };
    const sync = () => {
      const kind = i.kind.value;
      for (const f of fields) {
        f.element.hidden = !f.kinds.includes(kind);
        f.element.firstChild.textContent = f.label?.[kind] ?? f.element.dataset.label;
      }
      i.url.placeholder = placeholders[kind] ?? '';
    };
    for (const f of fields) f.element.dataset.label = f.element.firstChild.textContent;
    i.kind.addEventListener('change', sync);
    sync();
    const form = h('form', {
      class: 'panel-box alert-form channel-form',
      onsubmit: async (event) => {
        event.preventDefault();
        error.textContent = '';
        const channel = { name: i.name.value.trim(), kind: i.kind.value };
        if (!channel.name) {
          error.textContent = 'name the channel';
          return;
        }
        for (const f of fields) {
          if (f.element.hidden) continue;
          const input = f.element.querySelector('[data-field]');
          const value = input.value.trim();
          if (!value) continue;
          channel[input.dataset.field] = input.dataset.field === 'to' ? value.split(/[\s,]+/).filter(Boolean) : value;
        }
        if (i.workspace) channel.workspace = i.workspace.value;
        await this.submit(form, error, () => alerts.createChannel(channel), `channel ${channel.name} created`);
      },
    },
      h('h3', {}, 'New channel'),
      h('div', { class: 'run-grid' },
        field('name', 'Name', i.name),
        field('kind', 'Kind', i.kind),
        fields.map((f) => f.element),
        i.workspace ? field('workspace', 'Workspace', i.workspace) : null),
      error,
      h('div', { class: 'buttons' }, h('button', { type: 'submit', class: 'primary', 'data-action': 'create-channel' }, 'Create channel')));
    return form;
  }
}
