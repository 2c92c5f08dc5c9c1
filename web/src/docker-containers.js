// The containers tab of the Docker page: the table (state with health, status, ports, CPU and
// memory sampled every few seconds, created), "show stopped", the actions each role may take
// on a container (shared with the container's own page) and the "Run container" form.

import { choose } from './dialogs.js';
import { formatSize, h } from './dom.js';
import { cpuText, lines, memoryText, parseBytes, parseLabels, parsePort, portText, shortId, splitCommand } from './docker-api.js';
import { actionButton, agoCell, gridTable, stateBadge } from './docker-ui.js';

/** How often the running containers' CPU and memory are sampled while the tab is shown. */
const STATS_EVERY_MS = 5_000;
/** Samples asked for at once (each takes the engine about a second). */
const STATS_AT_ONCE = 3;
/** Restart policies the form offers. */
const RESTART_POLICIES = ['no', 'always', 'unless-stopped', 'on-failure'];

/** Whether the list shows stopped containers too (kept while the page is open). */
let showStopped = false;

// === actions on one container ===

/**
 * The buttons for what the role may do to `container` in its state: start, stop, restart,
 * pause or unpause, kill (developer); remove (operator). Removing asks first.
 * `onRemoved` runs after a removal.
 */
export function containerActions(context, container, { onRemoved = () => {} } = {}) {
  const { docker, may } = context;
  const name = container.name || shortId(container.id);
  const act = (verb, past) => () => context.run(() => docker.act(container.id, verb), () => `${name} ${past}`);
  const running = container.state === 'running' || container.state === 'restarting';
  const paused = container.state === 'paused';
  const buttons = [];
  if (may.use) {
    if (!running && !paused) buttons.push(actionButton('Start', act('start', 'started'), { kind: 'primary' }));
    if (running) buttons.push(actionButton('Stop', act('stop', 'stopped')));
    if (running || paused) buttons.push(actionButton('Restart', act('restart', 'restarted')));
    if (running) buttons.push(actionButton('Pause', act('pause', 'paused')));
    if (paused) buttons.push(actionButton('Unpause', act('unpause', 'unpaused')));
    if (running || paused) {
      buttons.push(actionButton('Kill', async () => {
        const choice = await choose({
          name: 'kill-container',
          title: `Kill ${name}?`,
          message: 'SIGKILL ends it at once, with no chance to clean up.',
          choices: [{ id: 'kill', label: 'Kill', kind: 'danger' }],
        });
        if (choice) await act('kill', 'killed')();
      }, { kind: 'danger' }));
    }
  }
  if (may.manage) {
    buttons.push(actionButton('Remove', async () => {
      const choice = await choose({
        name: 'remove-container',
        title: `Remove ${name}?`,
        message: running || paused
          ? 'It is running: it is killed first. Its anonymous volumes go too when you say so.'
          : 'Its anonymous volumes go too when you say so.',
        choices: [
          { id: 'volumes', label: 'Remove with volumes' },
          { id: 'remove', label: 'Remove', kind: 'danger' },
        ],
        focus: 'remove',
      });
      if (!choice) return;
      const removed = await context.run(
        () => docker.remove(container.id, { force: running || paused, volumes: choice === 'volumes' }),
        () => `${name} removed`);
      if (removed) onRemoved();
    }, { kind: 'danger' }));
  }
  return buttons;
}

// === impl ContainersPanel ===

export class ContainersPanel {
  constructor(context) {
    this.context = context;
    this.rows = new Map(); // container id → {row, cpu, memory}
    this.loads = 0;
    this.statsTimer = null; // the next round of samples (null before the first list)
    this.disposed = false;

    const stopped = h('input', {
      type: 'checkbox',
      id: 'docker-show-stopped',
      checked: showStopped,
      onchange: (event) => {
        showStopped = event.target.checked;
        this.load();
      },
    });
    this.form = new RunForm(context, () => this.load());
    this.table = h('div', { class: 'table-wrap' });
    this.element = h('div', { class: 'docker-panel', dataset: { panel: 'containers' } },
      h('div', { class: 'toolbar' },
        h('label', { class: 'check' }, stopped, 'Show stopped'),
        h('span', { class: 'spacer' }),
        context.may.manage
          ? actionButton('Prune stopped', () => this.prune(), { name: 'prune', title: 'Remove every stopped container' })
          : null,
        context.may.manage
          ? h('button', { type: 'button', class: 'primary', 'data-action': 'run', onclick: () => this.form.toggle() }, 'Run container…')
          : null,
      ),
      this.form.element,
      this.table,
    );
  }

  wants(event) {
    return event.kind === 'container';
  }

  async load() {
    const load = ++this.loads;
    let containers;
    try {
      containers = await this.context.docker.containers({ all: showStopped });
    } catch (e) {
      if (load === this.loads) this.context.fail(e);
      return;
    }
    if (load !== this.loads || this.disposed) return;
    this.render(containers);
  }

  render(containers) {
    const previous = this.rows;
    this.rows = new Map();
    containers.sort((a, b) => a.name.localeCompare(b.name));
    const rows = containers.map((container) => {
      const cpu = h('td', { class: 'cpu number' }, previous.get(container.id)?.cpu.textContent ?? '');
      const memory = h('td', { class: 'memory number' }, previous.get(container.id)?.memory.textContent ?? '');
      if (container.state !== 'running') {
        cpu.textContent = '';
        memory.textContent = '';
      }
      const row = h('tr', { dataset: { id: container.id, name: container.name, state: container.state, health: container.health || '' } },
        h('td', { class: 'name' },
          h('a', { href: this.context.hash({ container: container.id }) }, container.name),
          h('div', { class: 'muted mono small' }, shortId(container.id))),
        h('td', { class: 'mono small image', title: container.image_id }, container.image),
        h('td', {}, stateBadge(container)),
        h('td', { class: 'muted' }, container.status),
        h('td', { class: 'mono small ports' }, (container.ports ?? []).map((port) => h('div', {}, portText(port)))),
        cpu,
        memory,
        agoCell(container.created),
        h('td', { class: 'actions' }, containerActions(this.context, container)),
      );
      this.rows.set(container.id, { row, cpu, memory, state: container.state });
      return row;
    });
    this.table.replaceChildren(gridTable('containers',
      ['Name', 'Image', 'State', 'Status', 'Ports', 'CPU#', 'Memory#', 'Created', ''],
      rows,
      showStopped ? 'No containers on this host.' : 'No running containers. "Show stopped" lists the others.'));
    if (this.statsTimer === null) this.sampleSoon(0);
  }

  // === CPU and memory ===

  sampleSoon(delay = STATS_EVERY_MS) {
    clearTimeout(this.statsTimer);
    this.statsTimer = setTimeout(() => this.sample(), delay);
  }

  /** One stats sample of each running container, a few at a time; then again later. */
  async sample() {
    const running = [...this.rows].filter(([, entry]) => entry.state === 'running').map(([id]) => id);
    const next = async () => {
      while (running.length > 0 && !this.disposed) {
        const id = running.shift();
        try {
          const sample = await this.context.docker.stats(id);
          const entry = this.rows.get(id);
          if (!entry) continue;
          entry.cpu.textContent = cpuText(sample);
          entry.memory.textContent = formatSize(sample.memory_bytes);
          entry.memory.title = memoryText(sample);
        } catch {
          // Stopped or removed meanwhile: the next event reads the list again.
        }
      }
    };
    await Promise.all(Array.from({ length: STATS_AT_ONCE }, next));
    if (!this.disposed) this.sampleSoon();
  }

  async prune() {
    const choice = await choose({
      name: 'prune-containers',
      title: 'Remove every stopped container?',
      message: 'Containers that are not running are removed, with their anonymous volumes kept.',
      choices: [{ id: 'prune', label: 'Prune', kind: 'danger' }],
    });
    if (!choice) return;
    await this.context.run(() => this.context.docker.prune('containers'), prunedText);
  }

  dispose() {
    this.disposed = true;
    clearTimeout(this.statsTimer);
  }
}

/** What a prune did, in words. */
export function prunedText(report) {
  const count = report.deleted?.length ?? 0;
  return `pruned ${count} ${count === 1 ? 'object' : 'objects'}, ${formatSize(report.space_reclaimed ?? 0)} reclaimed`;
}

// === impl RunForm ===

/** "Run container": what `docker run -d` takes, sent as `POST …/containers`. */
class RunForm {
  constructor(context, onCreated) {
    this.context = context;
    this.onCreated = onCreated;
    const field = (id, label, input, hint = null) => {
      input.id = `run-${id}`;
      input.name = id;
      return h('label', { class: `field field-${id}` }, label, input, hint ? h('span', { class: 'hint muted' }, hint) : null);
    };
    const text = (attributes = {}) => h('input', { spellcheck: 'false', autocomplete: 'off', ...attributes });
    const area = (placeholder) => h('textarea', { rows: 3, spellcheck: 'false', placeholder });
    this.images = h('datalist', { id: 'run-image-choices' });
    this.error = h('p', { class: 'error', role: 'alert' });
    this.inputs = {
      image: text({ required: true, list: 'run-image-choices', placeholder: 'nginx:alpine' }),
      name: text({ placeholder: 'chosen by the engine' }),
      command: text({ placeholder: "the image's own" }),
      env: area('KEY=value, one a line'),
      ports: text({ placeholder: '8080:80 127.0.0.1:5432:5432/tcp' }),
      volumes: area('data:/var/lib/data or /srv/app:/app:ro, one a line'),
      restart: h('select', {}, RESTART_POLICIES.map((policy) => h('option', { value: policy }, policy))),
      network: h('select', {}, h('option', { value: '' }, 'default')),
      memory: text({ placeholder: 'no limit (like 256m, 1g)' }),
      cpus: h('input', { type: 'number', min: '0', step: '0.1', placeholder: 'no limit' }),
      labels: area('key=value, one a line'),
      start: h('input', { type: 'checkbox', checked: true }),
    };
    const i = this.inputs;
    this.element = h('form', {
      class: 'run-form panel-box',
      hidden: true,
      onsubmit: (event) => {
        event.preventDefault();
        this.submit();
      },
    },
      h('h3', {}, 'Run a container'),
      h('div', { class: 'run-grid' },
        field('image', 'Image', i.image),
        field('name', 'Name', i.name),
        field('command', 'Command', i.command, 'split like a shell does; quotes keep spaces'),
        field('ports', 'Ports', i.ports, 'HOST:CONTAINER[/udp], separated by spaces'),
        field('env', 'Environment', i.env),
        field('volumes', 'Volumes', i.volumes),
        field('labels', 'Labels', i.labels),
        h('div', { class: 'run-limits' },
          field('restart', 'Restart', i.restart),
          field('network', 'Network', i.network),
          field('memory', 'Memory', i.memory),
          field('cpus', 'CPUs', i.cpus)),
      ),
      this.images,
      this.error,
      h('div', { class: 'buttons' },
        h('label', { class: 'check' }, i.start, 'Start it now'),
        h('span', { class: 'spacer' }),
        h('button', { type: 'button', onclick: () => this.toggle(false) }, 'Cancel'),
        h('button', { type: 'submit', class: 'primary', 'data-action': 'create' }, 'Run'),
      ),
    );
  }

  async toggle(open = this.element.hidden) {
    this.element.hidden = !open;
    if (!open) return;
    this.error.textContent = '';
    this.inputs.image.focus();
    const { docker } = this.context;
    const [images, networks] = await Promise.allSettled([docker.images(), docker.networks()]);
    // (Without them the image is typed, and the engine's default network used.)
    if (images.status === 'fulfilled') {
      this.images.replaceChildren(...images.value.flatMap((image) => image.tags).map((tag) => h('option', { value: tag })));
    }
    if (networks.status === 'fulfilled') {
      this.inputs.network.replaceChildren(h('option', { value: '' }, 'default'),
        ...networks.value.map((network) => h('option', { value: network.name }, network.name)));
    }
  }

  /** The form as the API's container spec; throws an Error naming a field it cannot read. */
  spec() {
    const i = this.inputs;
    const spec = { image: i.image.value.trim(), start: i.start.checked };
    if (!spec.image) throw new Error('say which image to run');
    if (i.name.value.trim()) spec.name = i.name.value.trim();
    const command = splitCommand(i.command.value);
    if (command.length > 0) spec.command = command;
    const env = lines(i.env.value);
    if (env.length > 0) spec.env = env;
    const ports = i.ports.value.split(/[\s,]+/).filter(Boolean).map(parsePort);
    if (ports.length > 0) spec.ports = ports;
    const volumes = lines(i.volumes.value);
    if (volumes.length > 0) spec.volumes = volumes;
    if (i.restart.value !== 'no') spec.restart = i.restart.value;
    if (i.network.value) spec.network = i.network.value;
    if (i.memory.value.trim()) spec.memory_bytes = parseBytes(i.memory.value);
    if (i.cpus.value) spec.cpus = Number(i.cpus.value);
    const labels = parseLabels(i.labels.value);
    if (Object.keys(labels).length > 0) spec.labels = labels;
    return spec;
  }

  async submit() {
    this.error.textContent = '';
    let spec;
    try {
      spec = this.spec();
    } catch (e) {
      this.error.textContent = e.message;
      return;
    }
    const button = this.element.querySelector('[data-action="create"]');
    button.disabled = true;
    try {
      const container = await this.context.docker.create(spec);
      this.context.notify(`${container.name} ${spec.start ? 'created and started' : 'created'}`);
      this.element.reset();
      this.toggle(false);
      this.onCreated();
    } catch (e) {
      if (e.status === 401) return this.context.fail(e);
      this.error.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  }
}
