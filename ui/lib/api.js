// The JSON API, called with the token of this tab's sign-in. No cookies are
// ever set or sent, so no other site can make the browser act for the user.
const TOKEN = 'amber.token';

export const session = {
  token: () => sessionStorage.getItem(TOKEN),
  signIn: (token) => sessionStorage.setItem(TOKEN, token),
  signOut: () => sessionStorage.removeItem(TOKEN),
};

/** An answer that was not 2xx: the API's error code and message. */
export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(`${message} (${code})`);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

/** A request; answers the raw `Response` (2xx only). */
export async function request(method, path, { body, accept } = {}) {
  const headers = { Authorization: `Bearer ${session.token()}` };
  if (accept) headers.Accept = accept;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'omit',
    cache: 'no-store',
  });
  if (!response.ok) {
    let parsed = null;
    try {
      parsed = await response.json();
    } catch {
      // Not JSON: the status says it.
    }
    const error = parsed?.error ?? { code: String(response.status), message: response.statusText };
    throw new ApiError(response.status, error.code, error.message, parsed);
  }
  return response;
}

export const api = async (method, path, body) => (await request(method, path, { body })).json();
export const get = (path) => api('GET', path);

/** Every item of a paginated list (`next` cursor), up to `most`. */
export async function all(path, field, most = 100_000) {
  const items = [];
  let after = null;
  do {
    const sep = path.includes('?') ? '&' : '?';
    const page = await get(`${path}${sep}limit=1000${after === null ? '' : `&after=${encodeURIComponent(after)}`}`);
    items.push(...page[field]);
    after = page.next ?? null;
  } while (after !== null && items.length < most);
  return items;
}

export const enc = encodeURIComponent;
export const repoPath = (repo) => repo.split('/').map(enc).join('/');
