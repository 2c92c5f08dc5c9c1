// Uploads: files dropped on (or picked for) a folder, sent one after another with a progress
// bar each. A file is created with `If-None-Match: *`, so an existing one is never replaced
// without asking. A dropped folder is walked and its subfolders made first.

import { formatSize, h } from './dom.js';
import { baseName, joinPath, parentOf } from './files-api.js';

/** Finished rows leave the panel this long after the last upload. */
const DONE_LINGER_MS = 4000;

export class Uploads {
  /**
   * @param {object} options
   * @param {HTMLElement} options.panel                     where the progress rows go
   * @param {() => import('./files-api.js').HostFiles} options.files  the host's files, now
   * @param {(name: string) => Promise<boolean>} options.confirmOverwrite
   * @param {(info: object) => void} options.onUploaded     a file was written
   * @param {() => void} options.onUnauthenticated
   */
  constructor({ panel, files, confirmOverwrite, onUploaded, onUnauthenticated }) {
    this.panel = panel;
    this.files = files;
    this.confirmOverwrite = confirmOverwrite;
    this.onUploaded = onUploaded;
    this.onUnauthenticated = onUnauthenticated;
    this.queue = Promise.resolve(); // uploads run one after another
  }

  /** Uploads `items` ([{file, relativePath}]) into the folder `dir`. */
  add(dir, items) {
    const files = this.files();
    this.panel.hidden = false;
    for (const { file, relativePath } of items) {
      const bar = h('progress', { max: String(file.size || 1), value: '0' });
      const status = h('span', { class: 'status-text muted' }, 'waiting');
      const element = h('div', { class: 'upload', dataset: { name: relativePath, state: 'waiting' } },
        h('span', { class: 'upload-name', title: joinPath(dir, relativePath) }, relativePath), bar, status);
      this.panel.append(element);
      const job = { files, dir, file, relativePath, bar, status, element };
      this.queue = this.queue.then(() => this.send(job));
    }
    const last = this.queue;
    last.then(() => setTimeout(() => {
      if (this.queue !== last) return; // more came meanwhile
      for (const row of this.panel.querySelectorAll('.upload[data-state="done"]')) row.remove();
      this.panel.hidden = this.panel.children.length === 0;
    }, DONE_LINGER_MS));
  }

  async send({ files, dir, file, relativePath, bar, status, element }) {
    const path = joinPath(dir, relativePath);
    const set = (state, text) => {
      element.dataset.state = state;
      status.textContent = text;
      status.className = `status-text ${state === 'failed' ? 'error' : 'muted'}`;
    };
    const put = (createOnly) => {
      set('sending', '0%');
      return files.upload(path, file, {
        createOnly,
        onProgress: (sent) => {
          bar.value = sent;
          status.textContent = `${Math.floor((100 * sent) / (file.size || 1))}%`;
        },
      });
    };
    try {
      const folder = parentOf(path);
      if (folder !== dir) await files.op({ op: 'mkdir', path: folder, parents: true });
      // Ask before sending when the file exists (a large body is not sent only to learn that);
      // the create-only PUT still refuses one that appeared meanwhile.
      const ask = async () => {
        bar.value = 0;
        set('asking', 'exists');
        return this.confirmOverwrite(relativePath);
      };
      let info;
      if (await exists(files, path)) {
        if (!(await ask())) return set('skipped', 'skipped');
        info = await put(false);
      } else {
        try {
          info = await put(true);
        } catch (e) {
          if (e.status !== 409) throw e;
          if (!(await ask())) return set('skipped', 'skipped');
          info = await put(false);
        }
      }
      bar.value = file.size;
      set('done', `done, ${formatSize(file.size)}`);
      this.onUploaded({ ...info, path, name: baseName(path) });
    } catch (e) {
      if (e.status === 401) this.onUnauthenticated();
      set('failed', e.message);
    }
  }
}

async function exists(files, path) {
  try {
    await files.stat(path);
    return true;
  } catch (e) {
    if (e.status === 404) return false;
    throw e;
  }
}

/**
 * The files of a drop as [{file, relativePath}], folders walked (the browser's entries API).
 * A DataTransfer is only readable during its event, so the entries are taken at once.
 */
export function droppedFiles(dataTransfer) {
  const taken = [...dataTransfer.items]
    .filter((item) => item.kind === 'file')
    .map((item) => ({ entry: item.webkitGetAsEntry?.() ?? null, file: item.getAsFile() }));
  if (taken.length === 0) {
    return Promise.resolve([...dataTransfer.files].map((file) => ({ file, relativePath: file.name })));
  }
  return Promise.all(taken.map(({ entry, file }) =>
    entry?.isDirectory ? walk(entry, entry.name) : [{ file, relativePath: file.name }])).then((lists) => lists.flat());
}

/** Every file under a dropped folder, with its path from the folder's parent. */
async function walk(directory, prefix) {
  const reader = directory.createReader();
  const entries = [];
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) break;
    entries.push(...batch);
  }
  const lists = await Promise.all(entries.map(async (entry) => {
    const relativePath = `${prefix}/${entry.name}`;
    if (entry.isDirectory) return walk(entry, relativePath);
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    return [{ file, relativePath }];
  }));
  return lists.flat();
}
