// The file manager (#/files/HOST?path=DIR, and #/files/HOST?edit=FILE for the editor): a
// tree of folders loaded as they are expanded, breadcrumbs, a sortable listing paged with
// `after`/`limit` as it is scrolled, drag-and-drop uploads with progress, a context menu
// (open, download, rename, permissions, delete, new file or folder) and live updates from
// the folder's watch (`files/watch`, Server-Sent Events).

import { api, findHost } from './api.js';
import { ask, chmodDialog, choose, closeMenu, contextMenu } from './dialogs.js';
import { $, formatSize, h } from './dom.js';
import { FileEditor } from './editor.js';
import { HostFiles, baseName, joinPath, normalizePath, parentOf } from './files-api.js';
import { TreeNode } from './files-tree.js';
import { filesHash, icon, modeString } from './files-ui.js';
import { hostChoices } from './hosts.js';
import { LiveEvents } from './live-events.js';
import { Uploads, droppedFiles } from './uploads.js';

/** Changes to one path within this long are handled once. */
const CHANGE_DEBOUNCE_MS = 100;

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/** The listing's columns: header, sort key, cell. */
const COLUMNS = [
  { key: 'name', label: 'Name' },
  { key: 'size', label: 'Size', value: (i) => (i.type === 'directory' ? -1 : i.size) },
  { key: 'modified', label: 'Modified', value: (i) => i.modified_ms },
  { key: 'mode', label: 'Mode', value: (i) => i.mode },
  { key: 'owner', label: 'Owner', value: (i) => `${i.owner}:${i.group}` },
];

// === impl FilesView ===

export class FilesView {
  /** @param {{onUnauthenticated: () => void}} callbacks */
  constructor({ onUnauthenticated }) {
    this.onUnauthenticated = onUnauthenticated;
    this.host = null; // the host id shown
    this.hostName = '';
    this.files = null; // HostFiles of the host
    this.dir = null; // the folder listed (absolute)
    this.entries = new Map(); // name → info, the pages loaded so far
    this.nextAfter = ''; // where the next page starts ('' when all is loaded)
    this.loading = false;
    this.loadToken = 0; // a newer load makes older answers stale
    this.renderFrame = null; // a redraw asked for the next frame
    this.sort = { key: 'name', descending: false };
    this.selected = null; // the selected entry's name
    this.rootPath = null; // the folder the tree starts at (the host's first root)
    this.treeNodes = new Map(); // path → TreeNode
    this.editor = null; // FileEditor while a file is open
    this.watch = null; // LiveEvents of the folder listed
    this.pendingChanges = new Map(); // path → timer
    this.uploads = new Uploads({
      panel: $('#files-uploads'),
      files: () => this.files,
      confirmOverwrite: (name) => this.confirmOverwrite(name),
      onUploaded: (info) => {
        this.upsert(info);
        if (parentOf(info.path) !== this.dir) this.refreshTreeNode(this.dir);
      },
      onUnauthenticated,
    });

    this.body = $('#files-body');
    this.listing = $('#files-listing');
    this.main = $('#files-main');
    this.buildHeader();
    this.wireEvents();
  }

  // === routing ===

  /** Shows what the address names: `host`, and a folder (`path`) or a file (`edit`). */
  async navigate({ host, path, edit }) {
    path = path && normalizePath(path);
    edit = edit && normalizePath(edit);
    this.clearError();
    if (host !== this.host) this.switchHost(host);
    if (!host) return this.showHostPicker();
    $('#files-picker').hidden = true;
    $('#files-layout').hidden = false;
    $('#nav-files').setAttribute('href', filesHash(host));

    if (edit) {
      if (this.editor?.path !== edit) this.openEditor(edit);
    } else {
      this.closeEditor();
    }
    const dir = edit ? parentOf(edit) : path || this.rootPath || '.';
    if (dir !== this.dir) await this.loadDir(dir);
    this.renderCrumbs(edit || this.dir);
  }

  show() {
    this.editor?.focus();
  }

  hide() {
    closeMenu();
    this.stopWatch();
    this.dir = null; // listed afresh (and watched again) when shown again
  }

  switchHost(host) {
    this.closeEditor();
    this.stopWatch();
    this.host = host;
    this.files = host ? new HostFiles(host) : null;
    this.dir = null;
    this.rootPath = null;
    this.entries = new Map();
    this.treeNodes = new Map();
    $('#files-tree').replaceChildren();
    this.body.replaceChildren();
    this.hostName = host ?? '';
    $('#files-host').textContent = this.hostName;
    if (host) this.loadHostName(host);
  }

  async loadHostName(host) {
    try {
      const found = await findHost(host);
      if (found && this.host === host) {
        this.hostName = found.name;
        $('#files-host').textContent = found.name;
        $('#files-host').dataset.status = found.status;
      }
    } catch {
      // The id stays shown.
    }
  }

  /** `#/files` alone: choose a host. */
  async showHostPicker() {
    $('#files-layout').hidden = true;
    const picker = $('#files-picker');
    picker.hidden = false;
    let hosts = [];
    try {
      hosts = await api('GET', '/api/v1/hosts');
    } catch (e) {
      return this.showError(e);
    }
    picker.replaceChildren(...hostChoices('Files', hosts, (host) => filesHash(host.id)));
  }

  // === the folder listed ===

  async loadDir(path) {
    const token = ++this.loadToken;
    this.loading = true;
    this.stopWatch();
    this.entries = new Map();
    this.nextAfter = '';
    this.selected = null;
    this.listing.dataset.state = 'loading';
    this.renderList();
    let page;
    try {
      page = await this.files.list(path);
    } catch (e) {
      if (token !== this.loadToken) return;
      this.loading = false;
      this.listing.dataset.state = 'failed';
      // A symlink to a file, or a path typed by hand: open it in the editor instead.
      if (e.status === 400 && /not a directory/i.test(e.message)) {
        location.replace(filesHash(this.host, { edit: path }));
        return;
      }
      this.dir = path;
      this.renderCrumbs(path);
      this.renderList();
      if (!this.rootPath) await this.findRoot();
      return this.showError(e);
    }
    if (token !== this.loadToken) return;
    this.dir = normalizePath(page.directory?.path || path);
    if (!this.rootPath) await this.findRoot();
    if (token !== this.loadToken) return;
    this.addPage(page);
    this.loading = false;
    this.listing.dataset.state = 'ready';
    this.listing.dataset.dir = this.dir;
    this.renderCrumbs(this.editor?.path || this.dir);
    this.revealInTree(this.dir);
    this.startWatch();
    this.fillViewport();
  }

  /** The tree starts at the host's first root: the folder a relative path "." names. */
  async findRoot() {
    try {
      const top = await this.files.list('.', '', 1);
      this.rootPath = normalizePath(top.directory?.path || this.dir);
    } catch {
      this.rootPath = this.dir;
    }
    this.buildTree();
  }

  addPage(page) {
    for (const entry of page.entries) this.entries.set(entry.name, { ...entry, path: joinPath(this.dir, entry.name) });
    this.nextAfter = page.next_after;
    this.renderList();
  }

  /** The next page, when the listing is scrolled near its end. */
  async loadMore() {
    if (this.loading || !this.nextAfter) return;
    const token = this.loadToken;
    this.loading = true;
    try {
      const page = await this.files.list(this.dir, this.nextAfter);
      if (token === this.loadToken) this.addPage(page);
    } catch (e) {
      this.showError(e);
    } finally {
      if (token === this.loadToken) this.loading = false;
    }
    if (token === this.loadToken) this.fillViewport();
  }

  /** Loads pages until the listing overflows its box (or all is loaded). */
  fillViewport() {
    const box = this.listing;
    if (this.nextAfter && !this.editor && box.scrollHeight - box.scrollTop - box.clientHeight < 300) this.loadMore();
  }

  async refresh() {
    const dir = this.dir;
    this.dir = null;
    await this.loadDir(dir ?? '.');
  }

  sorted() {
    const { key, descending } = this.sort;
    const column = COLUMNS.find((c) => c.key === key);
    const byName = (a, b) => a.name.localeCompare(b.name, undefined, { numeric: true });
    const compare = (a, b) => {
      if (!column.value) return byName(a, b);
      const x = column.value(a);
      const y = column.value(b);
      return (x < y ? -1 : x > y ? 1 : 0) || byName(a, b);
    };
    const folders = (i) => (i.type === 'directory' ? 0 : 1);
    return [...this.entries.values()].sort((a, b) =>
      folders(a) - folders(b) || (descending ? -compare(a, b) : compare(a, b)));
  }

  renderList() {
    const rows = this.sorted().map((info) => this.row(info));
    if (rows.length === 0) {
      const text = {
        loading: 'Loading…',
        failed: 'This folder cannot be listed.',
      }[this.listing.dataset.state] ?? 'This folder is empty. Drop files here to upload them.';
      rows.push(h('tr', { class: 'placeholder' }, h('td', { colspan: 6, class: 'muted' }, text)));
    }
    this.body.replaceChildren(...rows);
    const count = this.entries.size;
    $('#files-more').textContent = this.nextAfter
      ? `${count} entries loaded; scroll for more`
      : count ? `${count} ${count === 1 ? 'entry' : 'entries'}` : '';
    for (const th of document.querySelectorAll('#files-head th[data-sort]')) {
      const sorted = th.dataset.sort === this.sort.key;
      th.setAttribute('aria-sort', sorted ? (this.sort.descending ? 'descending' : 'ascending') : 'none');
    }
  }

  row(info) {
    const openable = info.type === 'directory' || info.type === 'file' || info.type === 'symlink';
    const href = info.type === 'directory' || info.type === 'symlink'
      ? filesHash(this.host, { path: info.path })
      : filesHash(this.host, { edit: info.path });
    return h('tr', {
      class: info.name === this.selected ? 'selected' : null,
      dataset: { name: info.name, type: info.type },
    },
      h('td', { class: 'name' },
        icon(info.type),
        openable ? h('a', { href, draggable: 'false' }, info.name) : h('span', {}, info.name),
        info.type === 'symlink' && info.target ? h('span', { class: 'muted small' }, ` → ${info.target}`) : null),
      h('td', { class: 'size', title: `${info.size} bytes` }, info.type === 'directory' ? '' : formatSize(info.size)),
      h('td', { class: 'modified' }, info.modified_ms ? dateFormat.format(new Date(info.modified_ms)) : ''),
      h('td', { class: 'mono small mode', title: (info.mode & 0o7777).toString(8).padStart(4, '0') }, modeString(info)),
      h('td', { class: 'owner' }, `${info.owner}:${info.group}`),
      h('td', { class: 'actions' }, h('button', { type: 'button', class: 'icon more', title: 'Actions', 'aria-label': `Actions for ${info.name}` }, '⋯')),
    );
  }

  /** An entry of the folder listed, changed or added. */
  upsert(info) {
    if (!info || parentOf(info.path) !== this.dir) return;
    this.entries.set(info.name, info);
    this.renderSoon();
  }

  /** An entry that is gone. */
  forget(name) {
    if (this.entries.delete(name)) this.renderSoon();
  }

  /** Redraws once per frame however many changes arrive (a busy folder). */
  renderSoon() {
    this.renderFrame ??= requestAnimationFrame(() => {
      this.renderFrame = null;
      this.renderList();
    });
  }

  select(name) {
    this.selected = name;
    for (const row of this.body.children) row.classList.toggle('selected', row.dataset.name === name);
  }

  // === breadcrumbs ===

  renderCrumbs(path) {
    const crumbs = $('#files-crumbs');
    const parts = path.split('/').filter(Boolean);
    const items = [h('a', { href: filesHash(this.host, { path: '/' }), title: '/' }, '/')];
    let sofar = '';
    parts.forEach((part, index) => {
      sofar += `/${part}`;
      const last = index === parts.length - 1;
      if (index > 0) items.push(h('span', { class: 'sep' }, '/'));
      items.push(last
        ? h('span', { class: 'current', 'aria-current': 'page' }, part)
        : h('a', { href: filesHash(this.host, { path: sofar }) }, part));
    });
    crumbs.replaceChildren(...items);
    crumbs.dataset.path = path;
  }

  // === the tree ===

  buildTree() {
    const root = new TreeNode(this, this.rootPath, this.rootPath, 0);
    $('#files-tree').replaceChildren(root.element);
    root.expand();
  }

  /** Expands the tree down to `path` (when it lies under the tree's top) and marks it. */
  async revealInTree(path) {
    for (const node of this.treeNodes.values()) node.setCurrent(node.path === path);
    if (!this.rootPath || !(path === this.rootPath || path.startsWith(`${this.rootPath.replace(/\/$/, '')}/`))) return;
    const rest = path.slice(this.rootPath.length).split('/').filter(Boolean);
    let current = this.rootPath;
    for (const part of rest) {
      await this.treeNodes.get(current)?.expand();
      current = joinPath(current, part);
    }
    const node = this.treeNodes.get(path);
    node?.setCurrent(true);
    node?.link.scrollIntoView({ block: 'nearest' });
  }

  /** Reloads a folder's node, when the tree shows its children. */
  refreshTreeNode(path) {
    const node = this.treeNodes.get(path);
    if (node?.loaded) node.reload();
  }

  // === live updates ===

  startWatch() {
    this.stopWatch();
    this.watch = new LiveEvents({
      url: this.files.watchUrl(this.dir),
      events: { change: (change) => this.onChange(change) },
      badge: $('#files-live'),
      // After a dropped stream, changes may have been missed: list again.
      onReopen: () => this.refresh(),
      onUnauthenticated: this.onUnauthenticated,
    });
    this.watch.open();
  }

  stopWatch() {
    this.watch?.close();
    this.watch = null;
    for (const timer of this.pendingChanges.values()) clearTimeout(timer);
    this.pendingChanges.clear();
  }

  /** `{kind, path}` from the watch: the entry is read again (or dropped) shortly after. */
  onChange({ kind, path }) {
    path = normalizePath(path);
    if (path === this.dir && kind === 'removed') return this.showError(new Error('this folder was removed'));
    if (parentOf(path) !== this.dir) return;
    clearTimeout(this.pendingChanges.get(path));
    this.pendingChanges.set(path, setTimeout(async () => {
      this.pendingChanges.delete(path);
      const dir = this.dir;
      const name = baseName(path);
      const wasFolder = this.entries.get(name)?.type === 'directory';
      let info = null;
      try {
        info = await this.files.stat(path);
      } catch {
        // Gone (removed, or renamed away).
      }
      if (dir !== this.dir) return;
      if (info) this.upsert({ ...info, path, name });
      else this.forget(name);
      if (wasFolder || info?.type === 'directory') this.refreshTreeNode(dir);
    }, CHANGE_DEBOUNCE_MS));
  }

  // === the editor ===

  openEditor(path) {
    this.closeEditor();
    this.editor = new FileEditor({
      files: this.files,
      path,
      onSaved: (info) => this.upsert({ ...info, path, name: baseName(path) }),
      onClose: () => {
        this.closeEditor();
        location.hash = filesHash(this.host, { path: parentOf(path) });
      },
      onError: (e) => {
        if (e.status !== 401) return false;
        this.onUnauthenticated();
        return true;
      },
    });
    this.listing.hidden = true;
    this.main.append(this.editor.element);
    this.editor.load();
  }

  closeEditor() {
    if (!this.editor) return;
    this.editor.destroy();
    this.editor = null;
    this.listing.hidden = false;
  }

  /** True while the editor holds unsaved edits. */
  get dirty() {
    return this.editor?.dirty ?? false;
  }

  /** Asks before leaving unsaved edits; true when they may be dropped. */
  confirmLeave() {
    return this.editor ? this.editor.confirmClose() : Promise.resolve(true);
  }

  // === actions ===

  open(info) {
    location.hash = info.type === 'directory' || info.type === 'symlink'
      ? filesHash(this.host, { path: info.path })
      : filesHash(this.host, { edit: info.path });
  }

  download(info) {
    const link = h('a', { href: this.files.downloadUrl(info), download: info.type === 'directory' ? `${info.name}.tar` : info.name });
    document.body.append(link);
    link.click();
    link.remove();
  }

  async rename(info) {
    const dot = info.type === 'directory' ? -1 : info.name.lastIndexOf('.');
    const name = await ask({
      name: 'rename',
      title: `Rename ${info.name}`,
      label: 'New name',
      value: info.name,
      ok: 'Rename',
      selectUntil: dot > 0 ? dot : null,
    });
    if (!name || name === info.name) return;
    if (name.includes('/')) return this.showError(new Error('a name cannot contain "/"'));
    const to = joinPath(parentOf(info.path), name);
    let result = await this.attempt(() => this.files.op({ op: 'rename', from: info.path, to, overwrite: false }), true);
    if (result instanceof Error) {
      if (!(await this.confirmOverwrite(name))) return;
      result = await this.attempt(() => this.files.op({ op: 'rename', from: info.path, to, overwrite: true }));
    }
    if (!result) return;
    this.forget(info.name);
    this.upsert({ ...result, path: to, name });
    this.select(name);
    if (info.type === 'directory') this.refreshTreeNode(this.dir);
  }

  async deleteEntry(info) {
    const folder = info.type === 'directory';
    const choice = await choose({
      name: 'delete',
      title: `Delete ${info.name}?`,
      message: folder
        ? `The folder ${info.path} and everything in it will be deleted. This cannot be undone.`
        : `${info.path} will be deleted. This cannot be undone.`,
      choices: [{ id: 'delete', label: folder ? 'Delete folder' : 'Delete', kind: 'danger' }],
    });
    if (choice !== 'delete') return;
    const result = await this.attempt(() => this.files.op({ op: 'delete', path: info.path, recursive: folder }));
    if (!result) return;
    this.forget(info.name);
    if (folder) this.refreshTreeNode(this.dir);
  }

  async chmod(info) {
    const mode = await chmodDialog(info);
    if (mode === null) return;
    const result = await this.attempt(() => this.files.op({ op: 'chmod', path: info.path, mode }));
    if (result) this.upsert({ ...result, path: info.path, name: info.name });
  }

  async newFolder() {
    const name = await ask({ name: 'new-folder', title: 'New folder', label: `Name (in ${this.dir})`, ok: 'Create' });
    if (!name) return;
    const path = joinPath(this.dir, name);
    const result = await this.attempt(() => this.files.op({ op: 'mkdir', path, parents: false }));
    if (!result) return;
    this.upsert({ ...result, path, name });
    this.select(name);
    this.refreshTreeNode(this.dir);
  }

  async newFile() {
    const name = await ask({ name: 'new-file', title: 'New file', label: `Name (in ${this.dir})`, ok: 'Create' });
    if (!name) return;
    const path = joinPath(this.dir, name);
    const result = await this.attempt(() => this.files.write(path, new Uint8Array(0), { createOnly: true }));
    if (!result) return;
    this.upsert({ ...result, path, name });
    location.hash = filesHash(this.host, { edit: path });
  }

  /** Runs a request; a failure is shown (and resolves null), or returned with `keepConflict` on 409. */
  async attempt(request, keepConflict = false) {
    try {
      return await request();
    } catch (e) {
      if (keepConflict && e.status === 409) return e;
      this.showError(e);
      return null;
    }
  }

  confirmOverwrite(name) {
    return choose({
      name: 'overwrite',
      title: `${name} already exists`,
      message: 'Replace it?',
      choices: [{ id: 'overwrite', label: 'Replace', kind: 'danger' }],
      cancel: 'Skip',
    }).then((choice) => choice === 'overwrite');
  }

  /** The context menu of an entry (or of the folder, for `info` null). */
  menu(x, y, info) {
    const folderItems = [
      { id: 'new-file', label: 'New file…', action: () => this.newFile() },
      { id: 'new-folder', label: 'New folder…', action: () => this.newFolder() },
      { id: 'upload', label: 'Upload files…', action: () => $('#files-upload-input').click() },
      { id: 'refresh', label: 'Refresh', action: () => this.refresh() },
    ];
    if (!info) return contextMenu(x, y, folderItems);
    contextMenu(x, y, [
      { id: 'open', label: info.type === 'directory' ? 'Open' : 'Edit', action: () => this.open(info), disabled: info.type === 'other' },
      { id: 'download', label: info.type === 'directory' ? 'Download as tar' : 'Download', action: () => this.download(info) },
      { id: 'rename', label: 'Rename…', action: () => this.rename(info) },
      { id: 'chmod', label: 'Permissions…', action: () => this.chmod(info) },
      { id: 'delete', label: 'Delete…', danger: true, action: () => this.deleteEntry(info) },
      '-',
      ...folderItems,
    ]);
  }

  // === wiring ===

  buildHeader() {
    $('#files-head').replaceChildren(h('tr', {},
      COLUMNS.map((column) => h('th', {
        'data-sort': column.key,
        class: column.key,
        onclick: () => {
          const descending = this.sort.key === column.key ? !this.sort.descending : false;
          this.sort = { key: column.key, descending };
          this.renderList();
        },
      }, column.label)),
      h('th'),
    ));
  }

  wireEvents() {
    const entryOf = (event) => {
      const row = event.target.closest('tr[data-name]');
      return row ? this.entries.get(row.dataset.name) ?? null : null;
    };
    this.body.addEventListener('click', (event) => {
      const info = entryOf(event);
      if (!info) return;
      this.select(info.name);
      if (event.target.closest('button.more')) {
        const box = event.target.getBoundingClientRect();
        this.menu(box.left, box.bottom, info);
      }
    });
    this.body.addEventListener('dblclick', (event) => {
      const info = entryOf(event);
      if (info && !event.target.closest('a, button')) this.open(info);
    });
    this.listing.addEventListener('contextmenu', (event) => {
      event.preventDefault();
      const info = entryOf(event);
      if (info) this.select(info.name);
      this.menu(event.clientX, event.clientY, info);
    });
    this.listing.addEventListener('scroll', () => this.fillViewport());
    this.listing.addEventListener('keydown', (event) => {
      const info = this.selected && this.entries.get(this.selected);
      if (!info || event.target.closest('input')) return;
      if (event.key === 'Delete') this.deleteEntry(info);
      else if (event.key === 'F2') this.rename(info);
      else if (event.key === 'Enter') this.open(info);
      else return;
      event.preventDefault();
    });

    // Ctrl+S / Cmd+S saves wherever the focus is (CodeMirror handles it itself when focused).
    document.addEventListener('keydown', (event) => {
      if (!this.editor || $('#view-files').hidden || event.defaultPrevented) return;
      if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === 's') {
        event.preventDefault();
        this.editor.save();
      }
    });

    $('#files-new-file').addEventListener('click', () => this.newFile());
    $('#files-new-folder').addEventListener('click', () => this.newFolder());
    $('#files-refresh').addEventListener('click', () => this.refresh());
    $('#files-upload').addEventListener('click', () => $('#files-upload-input').click());
    $('#files-upload-input').addEventListener('change', (event) => {
      const files = [...event.target.files];
      event.target.value = '';
      if (files.length) this.uploads.add(this.dir, files.map((file) => ({ file, relativePath: file.name })));
    });

    // Drag and drop: onto the listing (the folder shown) or onto a folder's row.
    const hint = $('#files-drop');
    const carriesFiles = (event) => [...(event.dataTransfer?.types ?? [])].includes('Files');
    let depth = 0; // dragenter/dragleave pairs, as the pointer crosses child elements
    this.listing.addEventListener('dragenter', (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      depth += 1;
      hint.hidden = false;
    });
    this.listing.addEventListener('dragleave', () => {
      depth = Math.max(0, depth - 1);
      if (depth === 0) hint.hidden = true;
    });
    this.listing.addEventListener('dragover', (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = 'copy';
      const target = entryOf(event);
      const into = target?.type === 'directory' ? target.path : this.dir;
      hint.textContent = `Drop to upload into ${into}`;
      for (const row of this.body.children) row.classList.toggle('drop-target', row.dataset.name === target?.name && target.type === 'directory');
    });
    this.listing.addEventListener('drop', (event) => {
      event.preventDefault();
      depth = 0;
      hint.hidden = true;
      for (const row of this.body.querySelectorAll('.drop-target')) row.classList.remove('drop-target');
      const target = entryOf(event);
      const into = target?.type === 'directory' ? target.path : this.dir;
      droppedFiles(event.dataTransfer).then((items) => {
        if (items.length) this.uploads.add(into, items);
      }, (e) => this.showError(e));
    });
  }

  showError(e) {
    if (e.status === 401) return this.onUnauthenticated();
    const banner = $('#files-error');
    banner.textContent = e.message;
    banner.hidden = false;
  }

  clearError() {
    $('#files-error').hidden = true;
    $('#files-error').textContent = '';
  }
}
