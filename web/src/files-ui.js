// Small pieces the file manager's modules share: its addresses, icons, sizes and modes.

import { h } from './dom.js';

/** The address of a folder (`path`) or of the editor on a file (`edit`). */
export function filesHash(host, { path = null, edit = null } = {}) {
  const encode = (p) => encodeURIComponent(p).replace(/%2F/g, '/');
  const query = edit ? `?edit=${encode(edit)}` : path ? `?path=${encode(path)}` : '';
  return `#/files/${encodeURIComponent(host)}${query}`;
}

const ICONS = {
  directory: '<svg viewBox="0 0 16 16"><path d="M1.5 3.5h4.2l1.5 1.5h7.3v7.5h-13z"/></svg>',
  file: '<svg viewBox="0 0 16 16"><path d="M3.5 1.5h6l3 3v10h-9z"/></svg>',
  symlink: '<svg viewBox="0 0 16 16"><path d="M3.5 1.5h6l3 3v10h-9z"/><path class="arrow" d="M6 11.5l3.5-3.5M7 8h2.5v2.5"/></svg>',
  other: '<svg viewBox="0 0 16 16"><circle cx="8" cy="8" r="5"/></svg>',
};

/** A file type's little picture. */
export function icon(type) {
  const span = h('span', { class: `file-icon ${type}` });
  span.innerHTML = ICONS[type] ?? ICONS.other; // (constant markup)
  return span;
}

/** "drwxr-xr-x" */
export function modeString(info) {
  let text = { directory: 'd', symlink: 'l', file: '-' }[info.type] ?? '?';
  for (let bit = 8; bit >= 0; bit -= 1) text += (info.mode >> bit) & 1 ? 'rwx'[(8 - bit) % 3] : '-';
  return text;
}
