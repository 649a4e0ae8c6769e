/** The fetch wrapper of the console: the session cookie on every call, the CSRF header on every change,
 * JSON in and out, RFC 9457 problem details as ApiError (its message is the problem's detail), and a
 * 401 anywhere sends the operator back to the sign-in form. */

export const SESSION_PATH = '/api/session';
/** What a call refused because the session ended says (not the API's words about Authorization headers). */
export const SESSION_ENDED = 'Your session has ended; sign in again.';

let csrfToken = '';
let onUnauthorized = () => {};

/** An API call that failed: `status` (0 when the server was not reached) and the `problem` body. */
export class ApiError extends Error {
  constructor(problem, status) {
    super(problem.detail || problem.title || `request failed (HTTP ${status})`);
    this.name = 'ApiError';
    this.status = status;
    this.problem = problem;
  }
}

/** Keep the CSRF token of the current session (in memory only; '' when signed out). */
export function setCsrfToken(token) {
  csrfToken = token || '';
}

/** What to do when the server answers 401 (the session ended). */
export function setUnauthorizedHandler(handler) {
  onUnauthorized = handler;
}

/** Whether an error is a cancelled request (the page that asked for it has gone). */
export function isAbort(error) {
  return error?.name === 'AbortError';
}

/** path with its query: values '' / null / undefined are left out; arrays repeat the parameter. */
export function withQuery(path, query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query || {})) {
    for (const one of [].concat(value)) {
      if (one !== '' && one !== null && one !== undefined) params.append(key, String(one));
    }
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

/** How long a read waits for the server's answer before it fails (a change waits as long as it takes: it
 * may be long, a rollout re-embedding everyone, and it may be done even when its answer is late). */
export const READ_TIMEOUT_MS = 15000;
let lastAnswer = Date.now();

/** When the server last answered a call (any status): how stale what is on screen may be. */
export function lastAnswered() {
  return lastAnswer;
}

/** Call the API. options: query (object), json (a body to send as JSON), form (FormData), signal,
 * timeoutMs (default: READ_TIMEOUT_MS for GET and HEAD, none for changes; 0: none). */
export async function request(method, path, { query, json, form, signal, timeoutMs } = {}) {
  const headers = { Accept: 'application/json, application/problem+json' };
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrfToken;
  let body;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser sets multipart/form-data with its boundary
  }
  const limit = timeoutMs ?? (method === 'GET' || method === 'HEAD' ? READ_TIMEOUT_MS : 0);
  // The page's signal (it has gone) and the time limit, as one signal: setTimeout, not
  // AbortSignal.timeout, so that the limit counts time as the page's clock does.
  const both = new AbortController();
  const follow = () => both.abort(signal.reason);
  if (signal?.aborted) follow();
  else signal?.addEventListener('abort', follow, { once: true });
  let timedOut = false;
  const timer = limit ? setTimeout(() => { timedOut = true; both.abort(); }, limit) : 0;
  let response;
  let data = null;
  try {
    response = await fetch(withQuery(path, query), {
      method, headers, body, signal: both.signal, credentials: 'same-origin', cache: 'no-store',
    });
    lastAnswer = Date.now();
    const type = response.headers.get('Content-Type') || '';
    if (response.status !== 204 && type.includes('json')) data = await response.json().catch((error) => {
      if (isAbort(error)) throw error;
      return null;
    });
  } catch (error) {
    if (timedOut) {
      throw new ApiError({ detail: `The server did not answer within ${limit / 1000} s; `
        + 'what is shown may be out of date. Check the connection and the server, and try again.' }, 0);
    }
    if (isAbort(error)) throw error;
    throw new ApiError({ detail: 'The server cannot be reached; check the connection and try again.' }, 0);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', follow);
  }
  if (response.status === 204) return null;
  if (!response.ok) {
    const problem = data && typeof data === 'object'
      ? data : { detail: `HTTP ${response.status} ${response.statusText}`.trim() };
    const ended = response.status === 401 && path !== SESSION_PATH;
    const error = new ApiError(ended ? { ...problem, detail: SESSION_ENDED } : problem, response.status);
    if (ended) onUnauthorized(error);
    throw error;
  }
  return data;
}

export const get = (path, query, options = {}) => request('GET', path, { ...options, query });
export const post = (path, json, options = {}) => request('POST', path, { ...options, json });
export const patch = (path, json, options = {}) => request('PATCH', path, { ...options, json });
export const del = (path, options = {}) => request('DELETE', path, options);

/** A path segment as it goes into a URL. */
export const seg = (value) => encodeURIComponent(String(value));
