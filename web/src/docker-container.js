// One container on the Docker page (#/docker/HOST?container=ID): its state and actions, a
// "Shell" button (a terminal tab inside it), and views of it: logs that follow, a stats
// chart, its processes and the engine's inspect document. Logs and inspect need the
// developer role (environment variables are secrets); stats and processes only the viewer's.

import { ask } from './dialogs.js';
import { ago, h } from './dom.js';
import { portText, shortId } from './docker-api.js';
import { containerActions } from './docker-containers.js';
import { LogViewer } from './docker-logs.js';
import { StatsView } from './docker-stats.js';
import { actionButton, gridTable, stateBadge } from './docker-ui.js';

export class ContainerDetail {
  constructor(context, reference) {
    this.context = context;
    this.reference = reference; // the id or name in the address
    this.container = null; // its summary, once found
    this.view = null; // the view shown (logs, stats, processes, inspect)
    this.viewName = context.may.use ? 'logs' : 'stats';
    this.loads = 0;

    this.title = h('h3', { class: 'container-name' }, reference);
    this.facts = h('div', { class: 'facts muted' });
    this.actions = h('div', { class: 'actions' });
    this.tabs = h('nav', { class: 'subtabs' }, this.views().map(({ name, title }) =>
      h('button', { type: 'button', dataset: { view: name }, onclick: () => this.showView(name) }, title)));
    this.body = h('div', { class: 'detail-body' });
    this.gone = h('p', { class: 'banner warn', hidden: true });
    this.element = h('div', { class: 'docker-panel container-detail', dataset: { panel: 'container' } },
      h('div', { class: 'detail-head' },
        h('a', { class: 'back', href: context.hash({ tab: 'containers' }) }, '← Containers'),
        this.title,
        h('span', { class: 'state-slot' }),
        h('span', { class: 'spacer' }),
        this.actions),
      this.facts,
      this.gone,
      this.tabs,
      this.body);
  }

  /** The views the role may open. */
  views() {
    const use = this.context.may.use;
    return [
      { name: 'logs', title: 'Logs', allowed: use },
      { name: 'stats', title: 'Stats', allowed: true },
      { name: 'processes', title: 'Processes', allowed: true },
      { name: 'inspect', title: 'Inspect', allowed: use },
    ].filter((view) => view.allowed);
  }

  wants(event) {
    return event.kind === 'container' && this.container !== null &&
      (event.id === this.container.id || event.name === this.container.name);
  }

  /** Reads the container's summary again (its state, after an action or an event). */
  async load() {
    const load = ++this.loads;
    let containers;
    try {
      containers = await this.context.docker.containers({ all: true });
    } catch (e) {
      if (load === this.loads) this.context.fail(e);
      return;
    }
    if (load !== this.loads) return;
    const wanted = this.container?.id ?? this.reference;
    const found = containers.find((c) => c.id === wanted || c.name === wanted) ??
      (this.container ? null : containers.find((c) => c.id.startsWith(wanted)));
    if (!found) return this.removed();
    const first = this.container === null;
    this.container = found;
    this.render();
    if (first) this.showView(this.viewName);
  }

  render() {
    const c = this.container;
    const { context } = this;
    this.title.textContent = c.name;
    this.element.dataset.id = c.id;
    this.element.dataset.state = c.state;
    this.element.querySelector('.state-slot').replaceChildren(stateBadge(c));
    const shell = context.may.use && c.state === 'running'
      ? actionButton('Shell', () => context.openShell(c.name), {
        name: 'shell',
        title: 'A shell (sh) inside the container, in a terminal tab',
      })
      : null;
    const rename = context.may.manage
      ? actionButton('Rename', () => this.rename())
      : null;
    this.actions.replaceChildren(
      ...[shell, ...containerActions(context, c, { onRemoved: () => (location.hash = context.hash()) }), rename].filter(Boolean));
    this.facts.replaceChildren(
      h('span', { class: 'mono', title: c.image_id }, c.image),
      h('span', { class: 'mono', title: c.id }, shortId(c.id)),
      h('span', {}, c.status),
      c.command ? h('span', { class: 'mono' }, c.command) : null,
      ...(c.ports ?? []).map((port) => h('span', { class: 'mono' }, portText(port))),
      h('span', {}, `created ${ago(c.created)}`),
    );
  }

  /** The container went away (removed here, elsewhere, or never was). */
  removed() {
    this.gone.textContent = this.container
      ? `${this.container.name} was removed.`
      : `No container ${this.reference} on this host.`;
    this.gone.hidden = false;
    this.actions.replaceChildren();
    this.tabs.hidden = true;
    this.view?.dispose();
    this.view = null;
    this.body.replaceChildren();
  }

  showView(name) {
    if (!this.container) return;
    this.viewName = name;
    for (const button of this.tabs.children) button.classList.toggle('current', button.dataset.view === name);
    this.view?.dispose();
    const View = { logs: LogViewer, stats: StatsView, processes: ProcessesView, inspect: InspectView }[name];
    this.view = new View(this.context, this.container.id);
    this.body.replaceChildren(this.view.element);
  }

  async rename() {
    const name = await ask({
      name: 'rename-container',
      title: `Rename ${this.container.name}`,
      label: 'New name',
      value: this.container.name,
      ok: 'Rename',
    });
    if (!name || name === this.container.name) return;
    await this.context.run(() => this.context.docker.rename(this.container.id, name), (c) => `renamed to ${c.name}`);
  }

  dispose() {
    this.view?.dispose();
    this.view = null;
  }
}

// === processes and inspect ===

/** `docker top`: the container's processes, read again on demand. */
class ProcessesView {
  constructor(context, id) {
    this.context = context;
    this.id = id;
    this.table = h('div', { class: 'table-wrap' });
    this.element = h('div', { class: 'processes' },
      h('div', { class: 'toolbar' }, h('span', { class: 'spacer' }), actionButton('Refresh', () => this.load())),
      this.table);
    this.load();
  }

  async load() {
    let top;
    try {
      top = await this.context.docker.top(this.id);
    } catch (e) {
      return this.context.fail(e);
    }
    this.table.replaceChildren(gridTable('top mono small', top.titles,
      top.processes.map((row) => h('tr', {}, row.map((field) => h('td', {}, field)))),
      'No processes (the container is not running).'));
  }

  dispose() {}
}

/** The engine's inspect document, indented. */
class InspectView {
  constructor(context, id) {
    this.text = h('pre', { class: 'inspect mono' }, 'loading…');
    this.element = h('div', { class: 'inspect-view' }, this.text);
    context.docker.inspect(id).then(
      (document) => (this.text.textContent = JSON.stringify(document, null, 2)),
      (e) => {
        this.text.textContent = '';
        context.fail(e);
      });
  }

  dispose() {}
}
