// The operator console: sign-in with a token kept in this tab only, the
// pinned keys, and a page per route of the hash (`#/repos/acme/web`). Pages
// render from the JSON API and verify what they show in the browser.
import { ApiError, get, session } from './lib/api.js';
import { error, h } from './lib/dom.js';
import { review } from './lib/keys.js';

const $ = (id) => document.getElementById(id);

// Route patterns, tried in order: the page module and whether it is admin.
const ROUTES = [
  [/^\/repos\/([^/]+)\/([^/]+)\/(tags|manifests)\/([^/]+)$/, 'manifest', false],
  [/^\/repos\/([^/]+)\/([^/]+)$/, 'tags', false],
  [/^\/repos$/, 'repos', false],
  [/^\/keys$/, 'keys', false],
  [/^\/audit$/, 'audit', true],
  [/^\/tokens$/, 'tokens', true],
  [/^\/publishers$/, 'publishers', true],
  [/^\/retention$/, 'retention', true],
  [/^\/storage$/, 'storage', true],
];

let me = null;

const isAdmin = (who) => who.grants.some((g) => g.actions.includes('admin'));

async function keyBanner() {
  const banner = $('banner');
  banner.replaceChildren();
  try {
    const state = await review();
    if (state.first) {
      banner.append(h('div', { class: 'banner info', role: 'status' }, `Pinned this server's ${state.pinned.keys.length} keys on first use: `, h('a', { href: '#/keys' }, 'compare their ids'), ' with `amberd keys export`.'));
    } else if (state.added.length || state.gone.length) {
      banner.append(h('div', { class: 'banner warn', role: 'alert' }, 'The server’s signing keys changed since they were pinned. ', h('a', { href: '#/keys' }, 'Review them'), ': until then nothing they sign verifies here.'));
    }
  } catch (err) {
    banner.append(h('div', { class: 'banner warn', role: 'alert' }, `The server's keys could not be checked: ${err.message}`));
  }
}

async function show() {
  const view = $('view');
  const form = $('sign-in');
  for (const child of [...view.children]) if (child !== form && child.tagName !== 'NOSCRIPT') child.remove();
  if (!me) return;
  const path = (location.hash.replace(/^#/, '') || '/repos').split('?')[0];
  const match = ROUTES.map(([pattern, page, admin]) => [pattern.exec(path), page, admin]).find(([m]) => m);
  const page = h('section', { class: 'page' });
  view.append(page);
  for (const link of $('nav').querySelectorAll('a')) link.toggleAttribute('aria-current', link.getAttribute('href') === `#${path}`);
  if (!match) {
    page.append(h('h2', {}, 'Not found'), h('p', {}, 'No such page. '), h('a', { href: '#/repos' }, 'Repositories'));
    return;
  }
  const [found, name, admin] = match;
  if (admin && !isAdmin(me)) {
    page.append(h('h2', {}, 'Admin only'), h('p', {}, 'This page needs an admin token; this one may only see what it may pull.'));
    return;
  }
  page.setAttribute('aria-busy', 'true');
  try {
    const module = await import(`./pages/${name}.js`);
    await module.render(page, { me, params: found.slice(1).map(decodeURIComponent), refresh: () => start() });
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      signOut('The token is no longer valid (expired, revoked or rotated past its grace).');
      return;
    }
    page.append(error(err));
  } finally {
    page.removeAttribute('aria-busy');
  }
  view.focus({ preventScroll: true });
}

function signOut(message = '') {
  session.signOut();
  me = null;
  start().then(() => {
    $('sign-in-error').textContent = message;
  });
}

async function start() {
  const signedIn = session.token() !== null;
  $('sign-in').hidden = signedIn;
  $('sign-out').hidden = !signedIn;
  $('nav').hidden = !signedIn;
  $('who').textContent = '';
  me = null;
  if (!signedIn) {
    await show();
    $('token').focus();
    return;
  }
  try {
    me = await get('/v1/whoami');
  } catch (err) {
    session.signOut();
    await start();
    $('sign-in-error').textContent = err.message;
    return;
  }
  $('who').textContent = `Signed in as ${me.name}`;
  $('who').title = me.id;
  for (const link of $('nav').querySelectorAll('[data-admin]')) link.hidden = !isAdmin(me);
  await keyBanner();
  await show();
}

$('sign-in').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('sign-in-error').textContent = '';
  session.signIn($('token').value.trim());
  $('token').value = '';
  await start();
});

$('sign-out').addEventListener('click', () => signOut());
window.addEventListener('hashchange', () => show());

start();
