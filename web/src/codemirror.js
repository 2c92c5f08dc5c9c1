// CodeMirror 6 for the editor: the editor itself, the compare view (@codemirror/merge) and
// the language of a file by its name. This module is loaded on the first file opened, and
// each language pack on the first file that needs it (dynamic imports: esbuild splits them
// into chunks of their own), so the page loads none of it until then.

import { basicSetup } from 'codemirror';
import { EditorView, keymap } from '@codemirror/view';
import { Compartment, EditorState } from '@codemirror/state';
import { StreamLanguage, syntaxHighlighting } from '@codemirror/language';
import { indentWithTab } from '@codemirror/commands';
import { oneDarkHighlightStyle } from '@codemirror/theme-one-dark';
import { MergeView } from '@codemirror/merge';

/** The page's dark colours (style.css) for the editor. */
const theme = EditorView.theme({
  '&': { height: '100%', backgroundColor: '#0b0e14', color: '#d5dae3', fontSize: '13.5px' },
  '.cm-scroller': { fontFamily: '"DejaVu Sans Mono", Menlo, Consolas, monospace', lineHeight: '1.5' },
  '.cm-content': { caretColor: '#f0f3f8' },
  '.cm-cursor, .cm-dropCursor': { borderLeftColor: '#f0f3f8' },
  '&.cm-focused .cm-selectionBackground, .cm-selectionBackground, .cm-content ::selection': { backgroundColor: '#3a4a66' },
  '.cm-gutters': { backgroundColor: '#11151d', color: '#5c6679', borderRight: '1px solid #2a3240' },
  '.cm-activeLine': { backgroundColor: 'rgba(97, 160, 255, 0.06)' },
  '.cm-activeLineGutter': { backgroundColor: 'rgba(97, 160, 255, 0.1)', color: '#8791a3' },
  '.cm-panels': { backgroundColor: '#161b24', color: '#d8dde6' },
  '.cm-panels.cm-panels-bottom': { borderTop: '1px solid #2a3240' },
  '.cm-searchMatch': { backgroundColor: 'rgba(229, 180, 84, 0.25)' },
  '.cm-tooltip': { backgroundColor: '#1d2430', border: '1px solid #2a3240' },
  '.cm-foldPlaceholder': { backgroundColor: '#1d2430', border: 'none', color: '#8791a3' },
  // The compare view: what the disk has and what the editor has.
  '.cm-deletedChunk, &.cm-merge-a .cm-changedLine': { backgroundColor: 'rgba(240, 97, 109, 0.1)' },
  '&.cm-merge-b .cm-changedLine, .cm-insertedLine': { backgroundColor: 'rgba(76, 192, 122, 0.1)' },
  '&.cm-merge-a .cm-changedText': { background: 'rgba(240, 97, 109, 0.35)' },
  '&.cm-merge-b .cm-changedText': { background: 'rgba(76, 192, 122, 0.35)' },
}, { dark: true });

const common = [basicSetup, theme, syntaxHighlighting(oneDarkHighlightStyle), EditorView.lineWrapping];

/** A legacy (CodeMirror 5) mode as a language: `legacy(import('...mode/shell.js'), 'shell')`. */
async function legacy(module, name) {
  return StreamLanguage.define((await module)[name]);
}

/** Languages by file extension (lower case), each loaded when first needed. */
const BY_EXTENSION = {
  js: () => import('@codemirror/lang-javascript').then((m) => m.javascript()),
  mjs: () => import('@codemirror/lang-javascript').then((m) => m.javascript()),
  cjs: () => import('@codemirror/lang-javascript').then((m) => m.javascript()),
  jsx: () => import('@codemirror/lang-javascript').then((m) => m.javascript({ jsx: true })),
  ts: () => import('@codemirror/lang-javascript').then((m) => m.javascript({ typescript: true })),
  tsx: () => import('@codemirror/lang-javascript').then((m) => m.javascript({ jsx: true, typescript: true })),
  json: () => import('@codemirror/lang-json').then((m) => m.json()),
  py: () => import('@codemirror/lang-python').then((m) => m.python()),
  rs: () => import('@codemirror/lang-rust').then((m) => m.rust()),
  html: () => import('@codemirror/lang-html').then((m) => m.html()),
  htm: () => import('@codemirror/lang-html').then((m) => m.html()),
  css: () => import('@codemirror/lang-css').then((m) => m.css()),
  md: () => import('@codemirror/lang-markdown').then((m) => m.markdown()),
  yaml: () => import('@codemirror/lang-yaml').then((m) => m.yaml()),
  yml: () => import('@codemirror/lang-yaml').then((m) => m.yaml()),
  sh: () => legacy(import('@codemirror/legacy-modes/mode/shell'), 'shell'),
  bash: () => legacy(import('@codemirror/legacy-modes/mode/shell'), 'shell'),
  toml: () => legacy(import('@codemirror/legacy-modes/mode/toml'), 'toml'),
  ini: () => legacy(import('@codemirror/legacy-modes/mode/properties'), 'properties'),
  conf: () => legacy(import('@codemirror/legacy-modes/mode/properties'), 'properties'),
  cfg: () => legacy(import('@codemirror/legacy-modes/mode/properties'), 'properties'),
  env: () => legacy(import('@codemirror/legacy-modes/mode/properties'), 'properties'),
  service: () => legacy(import('@codemirror/legacy-modes/mode/properties'), 'properties'),
  go: () => legacy(import('@codemirror/legacy-modes/mode/go'), 'go'),
  c: () => legacy(import('@codemirror/legacy-modes/mode/clike'), 'c'),
  h: () => legacy(import('@codemirror/legacy-modes/mode/clike'), 'c'),
  cpp: () => legacy(import('@codemirror/legacy-modes/mode/clike'), 'cpp'),
  sql: () => legacy(import('@codemirror/legacy-modes/mode/sql'), 'standardSQL'),
  diff: () => legacy(import('@codemirror/legacy-modes/mode/diff'), 'diff'),
  patch: () => legacy(import('@codemirror/legacy-modes/mode/diff'), 'diff'),
  xml: () => legacy(import('@codemirror/legacy-modes/mode/xml'), 'xml'),
  lua: () => legacy(import('@codemirror/legacy-modes/mode/lua'), 'lua'),
};

/** Whole file names that say their language. */
const BY_NAME = {
  dockerfile: () => legacy(import('@codemirror/legacy-modes/mode/dockerfile'), 'dockerFile'),
  'nginx.conf': () => legacy(import('@codemirror/legacy-modes/mode/nginx'), 'nginx'),
  '.bashrc': BY_EXTENSION.sh,
  '.profile': BY_EXTENSION.sh,
  '.bash_profile': BY_EXTENSION.sh,
  '.zshrc': BY_EXTENSION.sh,
  'cargo.lock': BY_EXTENSION.toml,
};

/** The language extension for a file (by name, else by its `#!` line), or [] for plain text. */
export async function languageFor(name, firstLine = '') {
  const lower = name.toLowerCase();
  const byExtension = BY_EXTENSION[lower.includes('.') ? lower.split('.').pop() : ''];
  let load = BY_NAME[lower] ?? byExtension;
  if (!load && firstLine.startsWith('#!')) {
    if (/\b(ba|da|z|k)?sh\b/.test(firstLine)) load = BY_EXTENSION.sh;
    else if (/python/.test(firstLine)) load = BY_EXTENSION.py;
    else if (/node/.test(firstLine)) load = BY_EXTENSION.js;
  }
  if (!load) return [];
  try {
    return await load();
  } catch {
    return []; // a chunk that failed to load: plain text is still an editor
  }
}

/** Lines joined with `separator` ("\r\n" for a Windows file), or CodeMirror's "\n". */
function lineEndings(separator) {
  return separator && separator !== '\n' ? EditorState.lineSeparator.of(separator) : [];
}

/**
 * An editor in `parent`. `onChange()` after every edit; `onSave()` on Ctrl+S / Cmd+S.
 * Returns {view, setText(text), setLanguage(ext), setReadOnly(bool)}.
 */
export function createEditor({ parent, text, readOnly, lineSeparator, onChange, onSave }) {
  const language = new Compartment();
  const editable = new Compartment();
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: text,
      extensions: [
        keymap.of([
          { key: 'Mod-s', preventDefault: true, run: () => (onSave(), true) },
          indentWithTab,
        ]),
        common,
        lineEndings(lineSeparator),
        language.of([]),
        editable.of(readOnlyExtensions(readOnly)),
        EditorView.updateListener.of((update) => update.docChanged && onChange()),
      ],
    }),
  });
  return {
    view,
    setText(newText) {
      view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: newText } });
    },
    setLanguage(extension) {
      view.dispatch({ effects: language.reconfigure(extension) });
    },
    setReadOnly(value) {
      view.dispatch({ effects: editable.reconfigure(readOnlyExtensions(value)) });
    },
  };
}

function readOnlyExtensions(readOnly) {
  return [EditorState.readOnly.of(readOnly), EditorView.editable.of(!readOnly)];
}

/**
 * The compare view in `parent`: what is on disk (left, read-only) and the editor's text
 * (right, editable; the arrows take a change from the disk). Returns {text(), destroy()}.
 */
export function createCompare({ parent, disk, mine, language, lineSeparator, onSave }) {
  const saveKey = keymap.of([{ key: 'Mod-s', preventDefault: true, run: () => (onSave(), true) }]);
  const merge = new MergeView({
    parent,
    a: { doc: disk, extensions: [common, language, EditorState.readOnly.of(true), EditorView.editable.of(false)] },
    b: { doc: mine, extensions: [saveKey, common, language, lineEndings(lineSeparator)] },
    revertControls: 'a-to-b',
    highlightChanges: true,
    gutter: true,
  });
  return {
    text: () => merge.b.state.sliceDoc(),
    destroy: () => merge.destroy(),
  };
}
