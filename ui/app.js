// The operator console (issue 19, being built): sign-in with a token kept in
// this tab's sessionStorage only, and the repositories the token may pull.
// Every call goes to the JSON API with `Authorization: Bearer`; no cookies.

const KEY = 'amber.token';
const $ = (id) => document.getElementById(id);

async function api(path) {
  const token = sessionStorage.getItem(KEY);
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? `${body.error.code}: ${body.error.message}` : response.statusText);
  return body;
}

function cell(row, text) {
  const td = document.createElement('td');
  td.textContent = text;
  row.append(td);
}

async function showRepositories() {
  const rows = $('repository-rows');
  rows.replaceChildren();
  let after = null;
  do {
    const page = await api(`/v1/repos?limit=1000${after ? `&after=${encodeURIComponent(after)}` : ''}`);
    for (const repo of page.repositories) {
      const row = document.createElement('tr');
      cell(row, repo.name);
      cell(row, String(repo.tags));
      cell(row, repo.bytes.toLocaleString());
      cell(row, repo.last_push_at ?? '');
      rows.append(row);
    }
    after = page.next;
  } while (after);
  $('repositories').hidden = false;
}

async function start() {
  const signedIn = sessionStorage.getItem(KEY) !== null;
  $('sign-in').hidden = signedIn;
  $('sign-out').hidden = !signedIn;
  $('repositories').hidden = true;
  $('who').textContent = '';
  if (!signedIn) return;
  try {
    const me = await api('/v1/whoami');
    $('who').textContent = `Signed in as ${me.name} (${me.id})`;
    await showRepositories();
  } catch (error) {
    sessionStorage.removeItem(KEY);
    await start();
    $('sign-in-error').textContent = String(error.message);
  }
}

$('sign-in').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('sign-in-error').textContent = '';
  sessionStorage.setItem(KEY, $('token').value.trim());
  $('token').value = '';
  await start();
});

$('sign-out').addEventListener('click', async () => {
  sessionStorage.removeItem(KEY);
  await start();
});

$('filter').addEventListener('input', () => {
  const needle = $('filter').value.toLowerCase();
  for (const row of $('repository-rows').children) {
    row.hidden = !row.firstChild.textContent.toLowerCase().includes(needle);
  }
});

start();
