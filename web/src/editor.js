// The file editor: one text file of a host in CodeMirror (loaded on first use from
// codemirror.js). It remembers the version (ETag) it loaded and saves with `If-Match`, so a
// file changed on disk meanwhile is never overwritten silently: the server answers 409 and
// the user chooses to reload, overwrite, or compare the two side by side.

import { choose } from './dialogs.js';
import { h } from './dom.js';
import { baseName, etagOf } from './files-api.js';

/** Files larger than this open read-only, with only their first part loaded. */
export const EDITOR_MAX_BYTES = 2 * 1024 * 1024;
/** A NUL byte within the first this many bytes makes a file binary. */
const BINARY_SNIFF_BYTES = 1024;

export class FileEditor {
  /**
   * @param {object} options
   * @param {import('./files-api.js').HostFiles} options.files
   * @param {string} options.path
   * @param {(info: object) => void} options.onSaved   the file's info after a save
   * @param {() => void} options.onClose               the user closed the editor
   * @param {(error: Error) => boolean} options.onError  true when handled (the login expired)
   */
  constructor({ files, path, onSaved, onClose, onError }) {
    this.files = files;
    this.path = path;
    this.name = baseName(path);
    this.onSaved = onSaved;
    this.onClose = onClose;
    this.onError = onError;

    this.cm = null; // codemirror.js, once loaded
    this.editor = null; // {view, setText, setLanguage, setReadOnly}
    this.compare = null; // the compare view while it is shown
    this.language = [];
    this.etag = null; // the version the editor's text is based on
    this.savedDoc = null; // the text as last loaded or saved
    this.readOnly = false;
    this.saving = false;
    this.destroyed = false; // closed: late answers are ignored

    this.dirtyDot = h('span', { class: 'dirty-dot', title: 'Unsaved changes' }, '●');
    this.status = h('span', { class: 'editor-status muted', role: 'status' });
    this.saveButton = h('button', { type: 'button', class: 'primary save', title: 'Save (Ctrl+S)', onclick: () => this.save() }, 'Save');
    this.notice = h('p', { class: 'notice', hidden: true });
    this.body = h('div', { class: 'editor-body' });
    this.compareBar = h('div', { class: 'compare-bar', hidden: true },
      h('span', {}, h('b', {}, 'Left:'), ' on disk now · ', h('b', {}, 'Right:'), ' your text (the arrows take a change from the disk)'),
      h('span', { class: 'spacer' }),
      h('button', { type: 'button', 'data-choice': 'back', onclick: () => this.leaveCompare(true) }, 'Back to editing'),
      h('button', { type: 'button', 'data-choice': 'reload', onclick: () => this.reload() }, 'Reload from disk'),
      h('button', { type: 'button', class: 'primary', 'data-choice': 'save-merged', onclick: () => this.save() }, 'Save over disk'),
    );
    this.element = h('div', { class: 'editor', 'data-path': path, 'data-state': 'loading' },
      h('div', { class: 'editor-bar' },
        this.dirtyDot,
        h('span', { class: 'editor-name' }, this.name),
        h('span', { class: 'muted mono small editor-path' }, path),
        h('span', { class: 'spacer' }),
        this.status,
        this.saveButton,
        h('a', { class: 'button', href: files.downloadUrl({ type: 'file', path }), download: this.name }, 'Download'),
        h('button', { type: 'button', class: 'icon close', title: 'Close the editor', onclick: () => this.requestClose() }, '×'),
      ),
      this.notice,
      this.compareBar,
      this.body,
    );
    this.setDirty(false);
  }

  // === loading ===

  /** Loads the file; shows why when it cannot be edited. */
  async load() {
    this.setStatus('loading…');
    let content;
    let cm;
    try {
      [content, cm] = await Promise.all([this.fetch(), import('./codemirror.js')]);
      if (this.destroyed) return;
    } catch (e) {
      if (this.onError(e)) return;
      this.element.dataset.state = 'failed';
      this.setStatus('');
      this.showNotice(`Cannot open ${this.name}: ${e.message}`, 'error');
      this.saveButton.disabled = true;
      return;
    }
    this.cm = cm;
    const { bytes, etag, partial } = content;
    if (bytes.subarray(0, BINARY_SNIFF_BYTES).includes(0)) {
      this.element.dataset.state = 'binary';
      this.setStatus('');
      this.saveButton.disabled = true;
      this.showNotice(`${this.name} is a binary file: download it instead.`);
      return;
    }
    let text;
    let notice = '';
    this.readOnly = false;
    if (partial || bytes.length > EDITOR_MAX_BYTES) {
      this.readOnly = true;
      text = new TextDecoder().decode(bytes.subarray(0, EDITOR_MAX_BYTES));
      notice = `This file is larger than ${EDITOR_MAX_BYTES / 1024 / 1024} MiB: only its beginning is shown, read-only. Download it to see all of it.`;
    } else {
      try {
        text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
      } catch {
        this.readOnly = true;
        text = new TextDecoder().decode(bytes);
        notice = 'This file is not UTF-8 text: it is shown read-only, so saving cannot damage it.';
      }
    }
    this.etag = etag;
    this.editor = cm.createEditor({
      parent: this.body,
      text,
      readOnly: this.readOnly,
      // (CodeMirror joins lines with "\n" unless told: a Windows file keeps its CRLFs.)
      lineSeparator: text.includes('\r\n') ? '\r\n' : null,
      onChange: () => this.updateDirty(),
      onSave: () => this.save(),
    });
    this.savedDoc = this.editor.view.state.doc;
    if (notice) this.showNotice(notice);
    this.saveButton.disabled = this.readOnly;
    this.element.dataset.state = 'ready';
    this.setStatus(this.readOnly ? 'read-only' : '');
    this.editor.view.focus();
    this.language = await cm.languageFor(this.name, text.split('\n', 1)[0]);
    if (!this.destroyed) this.editor.setLanguage(this.language);
  }

  /** The file's bytes: all of it, or its first part when it is large. */
  async fetch() {
    const info = await this.files.stat(this.path);
    if (info.type === 'directory') throw new Error('it is a folder');
    return this.files.read(this.path, info.size > EDITOR_MAX_BYTES ? EDITOR_MAX_BYTES : 0);
  }

  // === saving ===

  async save() {
    if (!this.editor || this.readOnly || this.saving) return;
    const fromCompare = this.compare !== null;
    const doc = fromCompare ? this.compare.text() : this.editor.view.state.sliceDoc();
    this.saving = true;
    this.element.dataset.state = 'saving';
    this.setStatus('saving…');
    try {
      const info = await this.files.write(this.path, doc, { ifMatch: this.etag });
      this.saved(info, doc, fromCompare);
    } catch (e) {
      this.saving = false;
      this.element.dataset.state = 'ready';
      if (e.status === 409) return this.conflict(doc);
      if (this.onError(e)) return;
      this.setStatus(`not saved: ${e.message}`, 'error');
    }
  }

  /** The server wrote `doc`: it is the new clean state. */
  saved(info, doc, fromCompare) {
    this.saving = false;
    this.etag = etagOf(info);
    if (fromCompare) this.leaveCompare(false, doc);
    // (What was typed while saving stays dirty: the clean state is what was sent.)
    this.savedDoc = this.editor.view.state.toText(doc);
    this.element.dataset.state = 'ready';
    this.updateDirty();
    this.setStatus(`saved ${new Date().toLocaleTimeString()}`);
    this.onSaved(info);
  }

  /** The file changed on disk since it was loaded: ask what to do. */
  async conflict(doc) {
    this.setStatus('changed on disk', 'error');
    const choice = await choose({
      name: 'conflict',
      title: `${this.name} changed on disk`,
      message: 'Someone changed this file since you opened it. Reload it (your edits are lost), overwrite it with your text, or compare the two.',
      choices: [
        { id: 'reload', label: 'Reload', kind: 'danger' },
        { id: 'compare', label: 'Compare' },
        { id: 'overwrite', label: 'Overwrite', kind: 'primary' },
      ],
      focus: 'compare', // (Enter must not destroy either side)
    });
    if (choice === 'reload') return this.reload();
    if (choice === 'compare') return this.showCompare();
    if (choice === 'overwrite') {
      this.saving = true;
      this.setStatus('saving…');
      try {
        // No If-Match: whatever is on disk is replaced.
        this.saved(await this.files.write(this.path, doc), doc, this.compare !== null);
      } catch (e) {
        this.saving = false;
        if (this.onError(e)) return;
        this.setStatus(`not saved: ${e.message}`, 'error');
      }
    }
  }

  /** Replaces the editor's text with the file on disk (edits are lost). */
  async reload() {
    try {
      const { bytes, etag } = await this.fetch();
      if (this.compare) this.leaveCompare(false);
      this.editor.setText(new TextDecoder().decode(bytes));
      this.etag = etag;
      this.savedDoc = this.editor.view.state.doc;
      this.updateDirty();
      this.setStatus('reloaded from disk');
    } catch (e) {
      if (this.onError(e)) return;
      this.setStatus(`cannot reload: ${e.message}`, 'error');
    }
  }

  // === comparing ===

  /** Shows the disk's text beside the editor's; saving from there writes the right side. */
  async showCompare() {
    let disk;
    try {
      disk = await this.fetch();
    } catch (e) {
      if (this.onError(e)) return;
      return this.setStatus(`cannot read the file: ${e.message}`, 'error');
    }
    this.editor.view.dom.hidden = true;
    const holder = h('div', { class: 'compare' });
    this.body.append(holder);
    this.compare = this.cm.createCompare({
      parent: holder,
      disk: new TextDecoder().decode(disk.bytes),
      mine: this.editor.view.state.sliceDoc(),
      language: this.language,
      lineSeparator: this.editor.view.state.lineBreak,
      onSave: () => this.save(),
    });
    this.compare.holder = holder;
    // Saving from here replaces exactly the version compared with (a newer change conflicts again).
    this.etag = disk.etag;
    this.compareBar.hidden = false;
    this.element.dataset.state = 'compare';
    this.setStatus('comparing with the disk');
  }

  /** Back to the editor; with `keep`, the right side's text replaces the editor's. */
  leaveCompare(keep, text = null) {
    if (!this.compare) return;
    const merged = text ?? this.compare.text();
    this.compare.destroy();
    this.compare.holder.remove();
    this.compare = null;
    this.compareBar.hidden = true;
    this.editor.view.dom.hidden = false;
    if (keep || text !== null) {
      if (merged !== this.editor.view.state.sliceDoc()) this.editor.setText(merged);
    }
    this.element.dataset.state = 'ready';
    this.setStatus('');
    this.updateDirty();
    this.editor.view.focus();
  }

  // === dirty state and closing ===

  get dirty() {
    if (!this.editor || this.readOnly) return false;
    if (this.compare) return true;
    return !this.editor.view.state.doc.eq(this.savedDoc);
  }

  updateDirty() {
    this.setDirty(this.dirty);
  }

  setDirty(dirty) {
    this.element.dataset.dirty = String(dirty);
    this.dirtyDot.style.visibility = dirty ? 'visible' : 'hidden';
  }

  /** Asks before discarding unsaved edits; true when the editor may close. */
  async confirmClose() {
    if (!this.dirty) return true;
    const choice = await choose({
      name: 'discard',
      title: `Discard changes to ${this.name}?`,
      message: 'Your edits have not been saved.',
      choices: [{ id: 'discard', label: 'Discard changes', kind: 'danger' }],
    });
    if (choice !== 'discard') this.focus();
    return choice === 'discard';
  }

  async requestClose() {
    if (await this.confirmClose()) this.onClose();
  }

  destroy() {
    this.destroyed = true;
    this.compare?.destroy();
    this.editor?.view.destroy();
    this.element.remove();
  }

  focus() {
    this.editor?.view.focus();
  }

  setStatus(text, kind = '') {
    this.status.textContent = text;
    this.status.className = `editor-status ${kind || 'muted'}`;
  }

  showNotice(text, kind = '') {
    this.notice.textContent = text;
    this.notice.className = `notice ${kind}`;
    this.notice.hidden = false;
  }
}
