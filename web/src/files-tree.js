// The folder tree beside the listing: each node lists its folder (subfolders only) the
// first time it is expanded, and again when the listing sees a folder appear or go.

import { h } from './dom.js';
import { PAGE_SIZE, joinPath } from './files-api.js';
import { filesHash, icon } from './files-ui.js';

/** A folder's node reads at most this many entries looking for subfolders. */
const TREE_MAX_ENTRIES = 5_000;

/** One folder in the tree: its row and, once expanded, its subfolders. */
export class TreeNode {
  /** `view` is the FilesView: its host, its files, its map of nodes and the folder listed. */
  constructor(view, path, name, depth) {
    this.view = view;
    this.path = path;
    this.loaded = false;
    this.expanded = false;
    this.loading = null;
    this.twisty = h('button', { type: 'button', class: 'twisty', 'aria-label': 'Expand', onclick: () => this.toggle() }, '▸');
    this.link = h('a', { href: filesHash(view.host, { path }), title: path }, icon('directory'), h('span', {}, name));
    this.children = h('div', { class: 'children', hidden: true });
    this.element = h('div', { class: 'node', dataset: { path } },
      h('div', { class: 'node-row', style: `padding-left: ${0.4 + depth * 0.9}rem` }, this.twisty, this.link),
      this.children);
    this.depth = depth;
    view.treeNodes.set(path, this);
  }

  toggle() {
    return this.expanded ? this.collapse() : this.expand();
  }

  async expand() {
    this.expanded = true;
    this.twisty.textContent = '▾';
    this.children.hidden = false;
    if (!this.loaded) await this.reload();
  }

  collapse() {
    this.expanded = false;
    this.twisty.textContent = '▸';
    this.children.hidden = true;
  }

  /** Lists the folder's subfolders (paging through it) and rebuilds the children. */
  reload() {
    this.loading ??= (async () => {
      const folders = [];
      let after = '';
      let seen = 0;
      try {
        do {
          const page = await this.view.files.list(this.path, after, PAGE_SIZE);
          folders.push(...page.entries.filter((e) => e.type === 'directory').map((e) => e.name));
          seen += page.entries.length;
          after = page.next_after;
        } while (after && seen < TREE_MAX_ENTRIES);
      } catch (e) {
        this.children.replaceChildren(h('div', { class: 'muted small tree-error', style: `padding-left: ${1.6 + this.depth * 0.9}rem` }, e.message));
        this.loading = null;
        return;
      }
      folders.sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
      const old = new Map([...this.children.children].map((child) => [child.dataset.path, child]));
      this.children.replaceChildren(...folders.map((name) => {
        const path = joinPath(this.path, name);
        return old.get(path) ?? new TreeNode(this.view, path, name, this.depth + 1).element;
      }));
      if (folders.length === 0) this.twisty.classList.add('leaf');
      else this.twisty.classList.remove('leaf');
      this.loaded = true;
      this.loading = null;
      this.setCurrent(this.view.dir === this.path);
      for (const node of this.view.treeNodes.values()) node.setCurrent(node.path === this.view.dir);
    })();
    return this.loading;
  }

  setCurrent(current) {
    this.link.classList.toggle('current', current);
  }
}
