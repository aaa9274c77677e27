// Small helpers for building the page: elements from data (text only,
// never HTML strings, so nothing the server sends can inject markup),
// tables, confirmations in a modal <dialog>, copy buttons.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else if (name === 'class') element.className = value;
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  element.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return element;
}

/** A table with a caption (for screen readers) from column names and rows of cells. */
export function table(caption, columns, rows, empty = 'None.') {
  if (rows.length === 0) return h('p', { class: 'empty' }, empty);
  return h(
    'div',
    { class: 'scroll' },
    h(
      'table',
      {},
      h('caption', { class: 'visually-hidden' }, caption),
      h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((c) => h('td', {}, c))))),
    ),
  );
}

export function bytes(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function time(text) {
  if (!text) return '—';
  const at = new Date(text);
  return h('time', { datetime: text, title: text }, at.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }));
}

export const short = (digest) => (digest ? `${digest.slice(0, 19)}…` : '');

/** A button that copies `text`, saying so for screen readers. */
export function copyButton(text, label = 'Copy') {
  const button = h('button', { type: 'button', class: 'copy', 'aria-label': `${label}: ${text}` }, label);
  button.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = 'Copied';
    } catch {
      button.textContent = 'Select and copy';
    }
    setTimeout(() => {
      button.textContent = label;
    }, 1500);
  });
  return button;
}

/** Text to copy, in a code box with its button. */
export const copyable = (text, label) => h('div', { class: 'copyable' }, h('code', {}, text), copyButton(text, label));

/** A verdict: `ok` (green), `bad` (red) or `wait`, with its words. */
export const verdict = (kind, title, detail) =>
  h('div', { class: `verdict ${kind}`, role: kind === 'bad' ? 'alert' : 'status' }, h('strong', {}, title), detail ? h('span', {}, ` ${detail}`) : null);

/**
 * Asks before doing something that changes the store: a modal dialog (Esc
 * cancels, focus is kept inside) that answers whether it was confirmed and
 * the values of any fields it carried.
 */
export function confirmDialog(title, body, action, fields = []) {
  return new Promise((resolve) => {
    const form = h(
      'form',
      { method: 'dialog' },
      h('h2', {}, title),
      h('p', {}, body),
      fields,
      h('div', { class: 'actions' }, h('button', { value: 'cancel', formnovalidate: true }, 'Cancel'), h('button', { value: 'ok', class: 'danger' }, action)),
    );
    const dialog = h('dialog', { 'aria-label': title }, form);
    dialog.addEventListener('close', () => {
      const ok = dialog.returnValue === 'ok';
      const values = Object.fromEntries(new FormData(form));
      dialog.remove();
      resolve(ok ? values : null);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

export const field = (label, input) => {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input);
};

export const error = (err) => h('p', { role: 'alert', class: 'error' }, String(err.message ?? err));
