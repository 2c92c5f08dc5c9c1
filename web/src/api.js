// The control plane's HTTP API (ARCHITECTURE.md, "The browser"): JSON in and out, errors as
// {"error": "one line"}, the session cookie sent by the browser, and the CSRF token added to
// every state-changing request.

/** An API failure: the HTTP status (0 when the server could not be reached) and its line. */
export class ApiError extends Error {
  constructor(status, message, retryAfter = null) {
    super(message);
    this.status = status;
    /** Seconds from a 429's Retry-After header, when it has one. */
    this.retryAfter = retryAfter;
  }
}

/**
 * The signed-in user: {user, role, csrf, admin, totp, workspaces: [{id, name, role}]}, or
 * null. `role` is the highest one anywhere.
 */
export const session = { current: null };

/** How long a GET that could not reach the server waits before its one more try. */
const GET_RETRY_MS = 500;

/**
 * One request. `body` is sent as JSON. Resolves to the parsed JSON answer (null for 204);
 * rejects with an ApiError.
 */
export async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && session.current) headers['x-csrf-token'] = session.current.csrf;
  const send = () => request(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  // A GET that could not reach the server is sent once more a moment later (it changes
  // nothing): a network blip, or the browser dropping its connections when the machine's
  // addresses change, then goes unnoticed.
  const response = await send().catch((e) => {
    if (method !== 'GET') throw e;
    return new Promise((resolve) => setTimeout(resolve, GET_RETRY_MS)).then(send);
  });
  if (response.status === 204) return null;
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (a proxy's error page, say): fall through with the status line.
  }
  if (!response.ok) throw errorOf(response, json);
  return json;
}

/** `fetch` with the session cookie; rejects with an ApiError when the server cannot be reached. */
export async function request(url, options = {}) {
  try {
    return await fetch(url, { credentials: 'same-origin', ...options });
  } catch {
    throw new ApiError(0, 'cannot reach the control plane');
  }
}

/** The ApiError of a failed response whose body (`json`, maybe null) was already read. */
export function errorOf(response, json) {
  const message = (json && json.error) || `${response.status} ${response.statusText}`;
  const retryAfter = Number.parseInt(response.headers.get('retry-after') ?? '', 10);
  const error = new ApiError(response.status, message, Number.isFinite(retryAfter) ? retryAfter : null);
  error.body = json;
  return error;
}

/** The ApiError of a failed response, reading its body. */
export async function errorFrom(response) {
  let json = null;
  try {
    json = JSON.parse(await response.text());
  } catch {
    // Not JSON: the status line says it.
  }
  return errorOf(response, json);
}

/** The CSRF header every state-changing request carries. */
export function csrfHeaders() {
  return session.current ? { 'x-csrf-token': session.current.csrf } : {};
}

/**
 * Whether the session cookie still works: 'ok', 'unauthenticated' (401) or 'unreachable'.
 * Refreshes `session.current` as a side effect.
 */
export async function checkSession() {
  try {
    session.current = await api('GET', '/api/v1/session');
    return 'ok';
  } catch (e) {
    if (e.status === 401) {
      session.current = null;
      return 'unauthenticated';
    }
    return 'unreachable';
  }
}

/** `path?name=value&…` with the parameters that have a value (not '', null or undefined). */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== '' && value !== null && value !== undefined) query.set(name, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** Whether the signed-in user may read the audit log (an operator somewhere, or an admin). */
export function canReadAudit() {
  const role = session.current?.role;
  return role === 'operator' || role === 'admin';
}

/** The roles from least to most (ARCHITECTURE.md, "Access"). */
const ROLE_RANK = { viewer: 1, developer: 2, operator: 3, admin: 4 };

/** Whether `role` (a name, or null for none) is `wanted` or higher. */
export function atLeast(role, wanted) {
  return (ROLE_RANK[role] ?? 0) >= ROLE_RANK[wanted];
}

/**
 * The signed-in user's role on `host` (an entry of `GET /api/v1/hosts`): admin for a global
 * admin, else the role in the host's workspace, or null. It only tidies the page: the server
 * decides either way.
 */
export function roleOn(host) {
  if (session.current?.admin) return 'admin';
  return session.current?.workspaces?.find((w) => w.name === host.workspace)?.role ?? null;
}

/** The host named by id or name, from `GET /api/v1/hosts`; null when the caller sees none. */
export async function findHost(host) {
  const hosts = await api('GET', '/api/v1/hosts');
  return hosts.find((x) => x.id === host || x.name === host) ?? null;
}

/**
 * Sends `body` (a File, Blob or bytes) with upload progress (fetch cannot report it,
 * XMLHttpRequest can): `onProgress(sentBytes)`. Adds the CSRF token. Resolves to the parsed
 * JSON answer; rejects with an ApiError; `abort()` on the returned promise cancels.
 */
export function sendWithProgress(method, url, body, { headers = {}, onProgress = () => {} } = {}) {
  const xhr = new XMLHttpRequest();
  const done = new Promise((resolve, reject) => {
    xhr.open(method, url);
    for (const [name, value] of Object.entries({ ...csrfHeaders(), ...headers })) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (event) => onProgress(event.loaded);
    xhr.onload = () => {
      let json = null;
      try {
        json = JSON.parse(xhr.responseText);
      } catch {
        // Not JSON: the status says it.
      }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(json);
      const error = new ApiError(xhr.status, (json && json.error) || `${xhr.status} ${xhr.statusText}`);
      error.body = json;
      reject(error);
    };
    xhr.onerror = () => reject(new ApiError(0, 'cannot reach the control plane'));
    xhr.onabort = () => reject(new ApiError(0, 'cancelled'));
    xhr.send(body);
  });
  done.abort = () => xhr.abort();
  return done;
}
