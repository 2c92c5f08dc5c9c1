// Modal dialogs (the browser's <dialog>) and the right-click menu. Each dialog resolves a
// promise with what the user chose; Escape or "Cancel" resolves null.

import { h } from './dom.js';

/**
 * A dialog with a message and buttons. `choices`: [{id, label, kind: 'primary'|'danger'}].
 * Resolves the chosen id, or null. `name` lands in `data-dialog` (for tests and styles);
 * `focus` is the id of the button Enter presses (the last one unless said).
 */
export function choose({ name, title, message, choices, cancel = 'Cancel', focus = choices.at(-1)?.id }) {
  return modal(name, (close) => [
    h('h3', {}, title),
    message ? h('p', { class: 'message' }, message) : null,
    h('div', { class: 'buttons' },
      cancel ? h('button', { type: 'button', 'data-choice': 'cancel', onclick: () => close(null) }, cancel) : null,
      choices.map((c) =>
        h('button', { type: 'button', class: c.kind, 'data-choice': c.id, onclick: () => close(c.id) }, c.label)),
    ),
  ], focus);
}

/** Asks for one line of text (a name). Resolves it, or null. */
export function ask({ name, title, label, value = '', ok = 'OK', selectUntil = null }) {
  let input;
  return modal(name, (close) => {
    input = h('input', { value, spellcheck: 'false', autocomplete: 'off' });
    requestAnimationFrame(() => {
      input.focus();
      // A file name is selected without its extension, as file managers do.
      input.setSelectionRange(0, selectUntil ?? value.length);
    });
    return h('form', {
      method: 'dialog',
      onsubmit: (event) => {
        event.preventDefault();
        if (input.value.trim()) close(input.value.trim());
      },
    },
      h('h3', {}, title),
      h('label', {}, label, input),
      h('div', { class: 'buttons' },
        h('button', { type: 'button', 'data-choice': 'cancel', onclick: () => close(null) }, 'Cancel'),
        h('button', { type: 'submit', class: 'primary', 'data-choice': 'ok' }, ok),
      ),
    );
  });
}

/**
 * A small form: `fields` are {id, label, type: 'text'|'number'|'password'|'select', value,
 * options: [{value, label}] (for selects), placeholder}. Resolves {id: value, …} (strings),
 * or null.
 */
export function formDialog({ name, title, message, fields, ok = 'OK' }) {
  const inputs = {};
  return modal(name, (close) => {
    const rows = fields.map((field) => {
      const input = field.type === 'select'
        ? h('select', { 'data-field': field.id },
          field.options.map((o) => h('option', { value: o.value, selected: o.value === field.value }, o.label)))
        : h('input', {
          'data-field': field.id,
          type: field.type ?? 'text',
          value: field.value ?? '',
          placeholder: field.placeholder,
          min: field.type === 'number' ? '0' : null,
          spellcheck: 'false',
          autocomplete: 'off',
        });
      inputs[field.id] = input;
      return h('label', {}, field.label, input);
    });
    requestAnimationFrame(() => rows[0]?.querySelector('input, select')?.focus());
    return h('form', {
      method: 'dialog',
      onsubmit: (event) => {
        event.preventDefault();
        close(Object.fromEntries(Object.entries(inputs).map(([id, input]) => [id, input.value.trim()])));
      },
    },
      h('h3', {}, title),
      message ? h('p', { class: 'message' }, message) : null,
      rows,
      h('div', { class: 'buttons' },
        h('button', { type: 'button', 'data-choice': 'cancel', onclick: () => close(null) }, 'Cancel'),
        h('button', { type: 'submit', class: 'primary', 'data-choice': 'ok' }, ok),
      ),
    );
  });
}

/** The permission bits of `info` as checkboxes and an octal field. Resolves the new mode, or null. */
export function chmodDialog(info) {
  let mode = info.mode & 0o7777;
  const octal = h('input', { class: 'mono', value: mode.toString(8).padStart(3, '0'), size: 5, 'aria-label': 'octal mode' });
  const boxes = [];
  const sync = () => {
    octal.value = mode.toString(8).padStart(3, '0');
    for (const box of boxes) box.checked = (mode & Number(box.value)) !== 0;
  };
  const grid = h('table', { class: 'chmod' },
    h('tr', {}, h('th'), ['read', 'write', 'execute'].map((what) => h('th', {}, what))),
    ['owner', 'group', 'others'].map((who, row) =>
      h('tr', {}, h('th', {}, who), [4, 2, 1].map((bit) => {
        const box = h('input', {
          type: 'checkbox',
          value: String(bit << (3 * (2 - row))),
          onchange: (event) => {
            mode ^= Number(event.target.value);
            sync();
          },
        });
        boxes.push(box);
        return h('td', {}, box);
      }))),
  );
  octal.addEventListener('input', () => {
    if (/^[0-7]{3,4}$/.test(octal.value)) {
      mode = Number.parseInt(octal.value, 8);
      for (const box of boxes) box.checked = (mode & Number(box.value)) !== 0;
    }
  });
  sync();
  return modal('chmod', (close) => h('form', {
    method: 'dialog',
    onsubmit: (event) => {
      event.preventDefault();
      if (/^[0-7]{3,4}$/.test(octal.value)) close(Number.parseInt(octal.value, 8));
    },
  },
    h('h3', {}, `Permissions of ${info.name}`),
    grid,
    h('label', { class: 'inline' }, 'Mode ', octal),
    h('div', { class: 'buttons' },
      h('button', { type: 'button', 'data-choice': 'cancel', onclick: () => close(null) }, 'Cancel'),
      h('button', { type: 'submit', class: 'primary', 'data-choice': 'ok' }, 'Change'),
    ),
  ));
}

/** Shows a <dialog> built by `build(close)`; resolves what `close` is given. */
function modal(name, build, focusChoice = null) {
  return new Promise((resolve) => {
    const dialog = h('dialog', { class: 'modal', 'data-dialog': name });
    let result = null;
    const close = (value) => {
      result = value;
      dialog.close();
    };
    dialog.append(...[build(close)].flat().filter(Boolean));
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(result);
    });
    document.body.append(dialog);
    dialog.showModal();
    if (focusChoice) dialog.querySelector(`[data-choice="${focusChoice}"]`)?.focus();
  });
}

// === the context menu ===

let openMenu = null;

/** A menu at (x, y): items are {label, action, danger, disabled} or '-' (a separator). */
export function contextMenu(x, y, items) {
  closeMenu();
  const menu = h('div', { class: 'menu', role: 'menu' },
    items.map((item) => item === '-'
      ? h('hr')
      : h('button', {
        type: 'button',
        role: 'menuitem',
        class: item.danger ? 'danger' : null,
        disabled: item.disabled,
        'data-action': item.id,
        onclick: () => {
          closeMenu();
          item.action();
        },
      }, item.label)),
  );
  document.body.append(menu);
  // Keep it on screen.
  const { width, height } = menu.getBoundingClientRect();
  menu.style.left = `${Math.min(x, innerWidth - width - 4)}px`;
  menu.style.top = `${Math.min(y, innerHeight - height - 4)}px`;
  openMenu = menu;
  menu.querySelector('button:not(:disabled)')?.focus();
}

export function closeMenu() {
  openMenu?.remove();
  openMenu = null;
}

// A click elsewhere, Escape, scrolling or leaving the window closes it.
document.addEventListener('mousedown', (event) => {
  if (openMenu && !openMenu.contains(event.target)) closeMenu();
});
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape') closeMenu();
});
window.addEventListener('blur', closeMenu);
window.addEventListener('resize', closeMenu);
