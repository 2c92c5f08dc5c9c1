// The images, volumes and networks tabs of the Docker page: each a table read again when the
// engine reports a change of its kind, with what an operator may do (pull with progress,
// import a tarball, create, remove, prune).

import { choose, formDialog } from './dialogs.js';
import { formatSize, h } from './dom.js';
import { shortId } from './docker-api.js';
import { prunedText } from './docker-containers.js';
import { actionButton, agoCell, gridTable, labelTags } from './docker-ui.js';

/** Networks every engine has, which cannot be removed. */
const PREDEFINED_NETWORKS = new Set(['bridge', 'host', 'none']);

/**
 * What the three tabs share: a toolbar, a table read with `fetch()` and drawn with `row()`,
 * read again on the engine's events of `kind`, and a prune button for operators.
 */
class ListPanel {
  constructor(context, { kind, headers, empty, tools = [] }) {
    this.context = context;
    this.kind = kind;
    this.headers = headers;
    this.empty = empty;
    this.loads = 0;
    this.table = h('div', { class: 'table-wrap' });
    this.element = h('div', { class: 'docker-panel', dataset: { panel: `${kind}s` } },
      h('div', { class: 'toolbar' }, ...tools, h('span', { class: 'spacer' }),
        context.may.manage ? actionButton('Prune…', () => this.prune(), { name: 'prune', title: `Remove unused ${kind}s` }) : null),
      this.table);
  }

  wants(event) {
    return event.kind === this.kind;
  }

  async load() {
    const load = ++this.loads;
    let items;
    try {
      items = await this.fetch();
    } catch (e) {
      if (load === this.loads) this.context.fail(e);
      return;
    }
    if (load !== this.loads) return;
    this.table.replaceChildren(gridTable(`${this.kind}s`, this.headers, items.map((item) => this.row(item)), this.empty));
  }

  /** Asks, then prunes; `choices` beyond the plain "Prune" (images: every unused one). */
  async prune({ message, choices = [{ id: 'prune', label: 'Prune', kind: 'danger' }] } = {}) {
    const choice = await choose({
      name: `prune-${this.kind}s`,
      title: `Remove unused ${this.kind}s?`,
      message: message ?? `Every ${this.kind} no container uses is removed.`,
      choices,
    });
    if (!choice) return;
    await this.context.run(() => this.context.docker.prune(`${this.kind}s`, { all: choice === 'all' }), prunedText);
  }

  /**
   * A remove button for operators that asks first (saying `message`); `call(choice)` removes.
   */
  removeButton(what, message, call, choices = [{ id: 'remove', label: 'Remove', kind: 'danger' }]) {
    if (!this.context.may.manage) return null;
    return actionButton('Remove', async () => {
      const choice = await choose({ name: `remove-${this.kind}`, title: `Remove ${what}?`, message, choices });
      if (choice) await this.context.run(() => call(choice), () => `${what} removed`);
    }, { kind: 'danger' });
  }

  dispose() {}
}

// === images ===

export class ImagesPanel extends ListPanel {
  constructor(context) {
    const pullInput = h('input', { placeholder: 'busybox:latest', spellcheck: 'false', autocomplete: 'off', 'data-field': 'pull' });
    const importFile = h('input', { type: 'file', accept: '.tar,.tar.gz,.tgz,.tar.xz', 'data-field': 'import-file' });
    const importName = h('input', { placeholder: 'repo:tag', spellcheck: 'false', autocomplete: 'off', 'data-field': 'import-name' });
    const manage = context.may.manage;
    super(context, {
      kind: 'image',
      headers: ['Tags', 'ID', 'Size#', 'Created', 'Containers#', ''],
      empty: 'No images on this host.',
      tools: manage
        ? [
          h('form', { class: 'inline-form', onsubmit: (event) => (event.preventDefault(), this.pull()) },
            pullInput, h('button', { type: 'submit', 'data-action': 'pull' }, 'Pull')),
          h('form', { class: 'inline-form', onsubmit: (event) => (event.preventDefault(), this.importTarball()) },
            importFile, importName, h('button', { type: 'submit', 'data-action': 'import' }, 'Import')),
        ]
        : [],
    });
    Object.assign(this, { pullInput, importFile, importName });
    this.progress = h('div', { class: 'progress-box', hidden: true });
    this.table.before(this.progress);
  }

  fetch() {
    return this.context.docker.images();
  }

  row(image) {
    const tags = image.tags.length ? image.tags : ['<none>'];
    return h('tr', { dataset: { id: image.id, tags: image.tags.join(' ') } },
      h('td', { class: 'name' }, tags.map((tag) => h('div', { class: 'mono' }, tag))),
      h('td', { class: 'mono small', title: image.id }, shortId(image.id)),
      h('td', { class: 'number' }, formatSize(image.size)),
      agoCell(image.created),
      h('td', { class: 'number' }, image.containers >= 0 ? String(image.containers) : '—'),
      h('td', { class: 'actions' }, this.removeButton(tags[0] === '<none>' ? shortId(image.id) : tags.join(', '),
        'An image a container uses needs "Force remove" (the container keeps running).',
        (choice) => this.context.docker.removeImage(image.id, { force: choice === 'force' }),
        [{ id: 'force', label: 'Force remove' }, { id: 'remove', label: 'Remove', kind: 'danger' }])),
    );
  }

  prune() {
    return super.prune({
      message: 'Dangling images are the untagged ones; unused ones are all that no container uses.',
      choices: [{ id: 'all', label: 'Prune all unused', kind: 'danger' }, { id: 'prune', label: 'Prune dangling', kind: 'danger' }],
    });
  }

  /** Pulls the image typed, a progress bar per layer. */
  async pull() {
    const image = this.pullInput.value.trim();
    if (!image) return;
    const layers = new Map(); // layer id → {status, bar}
    const title = h('div', { class: 'progress-title' }, `Pulling ${image}…`);
    const list = h('div', { class: 'layers' });
    this.progress.replaceChildren(title, list);
    this.progress.hidden = false;
    this.progress.dataset.state = 'running';
    const ok = await this.context.run(
      () => this.context.docker.pull(image, ({ id, status, current, total }) => {
        if (!id) {
          title.textContent = status;
          return;
        }
        let layer = layers.get(id);
        if (!layer) {
          layer = { status: h('span', { class: 'muted' }), bar: h('progress', { max: '1', value: '0' }) };
          layers.set(id, layer);
          list.append(h('div', { class: 'layer' }, h('span', { class: 'mono' }, id), layer.status, layer.bar));
        }
        layer.status.textContent = status;
        layer.bar.hidden = !total;
        if (total) {
          layer.bar.max = total;
          layer.bar.value = current;
        }
      }),
      (imageId) => `pulled ${image} (${shortId(imageId)})`);
    this.progress.dataset.state = ok ? 'done' : 'failed';
    title.textContent = ok ? `Pulled ${image}` : `The pull of ${image} failed`;
    if (ok) this.pullInput.value = '';
  }

  /** Sends the tarball chosen as an image named as typed, with a progress bar. */
  async importTarball() {
    const file = this.importFile.files[0];
    const image = this.importName.value.trim();
    if (!file || !image) {
      this.context.fail(new Error('choose a tarball and name the image (repo:tag)'));
      return;
    }
    const bar = h('progress', { max: String(file.size || 1), value: '0' });
    this.progress.replaceChildren(h('div', { class: 'progress-title' }, `Importing ${file.name} as ${image}…`), bar);
    this.progress.hidden = false;
    this.progress.dataset.state = 'running';
    const ok = await this.context.run(
      () => this.context.docker.importTarball(image, file, (sent) => (bar.value = sent)),
      (imageId) => `imported ${image} (${shortId(imageId)})`);
    this.progress.dataset.state = ok ? 'done' : 'failed';
    this.progress.hidden = ok;
    if (ok) {
      this.importFile.value = '';
      this.importName.value = '';
    }
  }
}

// === volumes ===

export class VolumesPanel extends ListPanel {
  constructor(context) {
    super(context, {
      kind: 'volume',
      headers: ['Name', 'Driver', 'Mount point', 'Created', 'Labels', ''],
      empty: 'No volumes on this host.',
      tools: context.may.manage ? [actionButton('Create volume…', () => this.create(), { name: 'create', kind: 'primary' })] : [],
    });
  }

  fetch() {
    return this.context.docker.volumes();
  }

  row(volume) {
    return h('tr', { dataset: { name: volume.name } },
      h('td', { class: 'name mono' }, volume.name),
      h('td', {}, volume.driver),
      h('td', { class: 'mono small' }, volume.mountpoint),
      agoCell(volume.created_at),
      h('td', {}, labelTags(volume.labels)),
      h('td', { class: 'actions' }, this.removeButton(`volume ${volume.name}`,
        'Its data is deleted for good.',
        () => this.context.docker.removeVolume(volume.name))),
    );
  }

  async create() {
    const values = await formDialog({
      name: 'create-volume',
      title: 'Create a volume',
      fields: [
        { id: 'name', label: 'Name' },
        { id: 'driver', label: 'Driver', value: 'local' },
      ],
      ok: 'Create',
    });
    if (!values?.name) return;
    await this.context.run(() => this.context.docker.createVolume({ name: values.name, driver: values.driver || undefined }),
      (volume) => `volume ${volume.name} created`);
  }
}

// === networks ===

export class NetworksPanel extends ListPanel {
  constructor(context) {
    super(context, {
      kind: 'network',
      headers: ['Name', 'ID', 'Driver', 'Scope', 'Internal', 'Containers#', 'Created', 'Labels', ''],
      empty: 'No networks on this host.',
      tools: context.may.manage ? [actionButton('Create network…', () => this.create(), { name: 'create', kind: 'primary' })] : [],
    });
  }

  fetch() {
    return this.context.docker.networks();
  }

  row(network) {
    return h('tr', { dataset: { id: network.id, name: network.name } },
      h('td', { class: 'name mono' }, network.name),
      h('td', { class: 'mono small', title: network.id }, shortId(network.id)),
      h('td', {}, network.driver),
      h('td', {}, network.scope),
      h('td', {}, network.internal ? 'yes' : 'no'),
      h('td', { class: 'number' }, String(network.containers)),
      agoCell(network.created),
      h('td', {}, labelTags(network.labels)),
      h('td', { class: 'actions' }, PREDEFINED_NETWORKS.has(network.name)
        ? null
        : this.removeButton(`network ${network.name}`, 'Containers still connected to it keep it from going.',
          () => this.context.docker.removeNetwork(network.id))),
    );
  }

  async create() {
    const values = await formDialog({
      name: 'create-network',
      title: 'Create a network',
      fields: [
        { id: 'name', label: 'Name' },
        { id: 'driver', label: 'Driver', value: 'bridge' },
        {
          id: 'internal',
          label: 'Reach outside the host',
          type: 'select',
          value: 'no',
          options: [{ value: 'no', label: 'yes (not internal)' }, { value: 'yes', label: 'no (internal)' }],
        },
      ],
      ok: 'Create',
    });
    if (!values?.name) return;
    await this.context.run(() => this.context.docker.createNetwork({
      name: values.name,
      driver: values.driver || undefined,
      internal: values.internal === 'yes',
    }), (network) => `network ${network.name} created`);
  }
}
