// The control plane's file endpoints for one host (ARCHITECTURE.md, "Files"). Paths are
// absolute paths on the host; `info` objects are {path, name, type, size, mode, owner, group,
// modified_ms, target, version}. Every function rejects with an ApiError carrying the
// server's one line.

import { api, csrfHeaders, errorFrom, request, sendWithProgress } from './api.js';

/** Entries asked for per page of a directory. */
export const PAGE_SIZE = 200;

/** `path` without repeated slashes, `.` components or a trailing slash ("/" stays "/"). */
export function normalizePath(path) {
  const parts = path.split('/').filter((part) => part && part !== '.');
  return path.startsWith('/') ? `/${parts.join('/')}` : parts.join('/') || '.';
}

/** `dir` + `name` as one absolute path. */
export function joinPath(dir, name) {
  return dir.endsWith('/') ? `${dir}${name}` : `${dir}/${name}`;
}

/** The folder holding `path` ("/" for "/x"). */
export function parentOf(path) {
  const cut = path.replace(/\/+$/, '').lastIndexOf('/');
  return cut <= 0 ? '/' : path.slice(0, cut);
}

/** The last component of `path`. */
export function baseName(path) {
  return path.replace(/\/+$/, '').split('/').pop() || '/';
}

/** `"VERSION"`, the ETag form of an info's version. */
export function etagOf(info) {
  return `"${info.version}"`;
}

export class HostFiles {
  constructor(host) {
    this.host = host;
    this.base = `/api/v1/hosts/${encodeURIComponent(host)}/files`;
  }

  url(endpoint, params) {
    return `${this.base}${endpoint}?${new URLSearchParams(params)}`;
  }

  /** One page of a directory: {directory, entries, next_after}. */
  list(path, after = '', limit = PAGE_SIZE) {
    return api('GET', this.url('', { path, after, limit }));
  }

  stat(path) {
    return api('GET', this.url('/stat', { path }));
  }

  /** `{op: 'mkdir'|'rename'|'copy'|'delete'|'chmod'|'chown', ...}` → info. */
  op(operation) {
    return api('POST', `${this.base}/op`, operation);
  }

  /** The address that downloads a file (or, for a folder, its tar). */
  downloadUrl(info) {
    // (`download=true`: the server reads a boolean and refuses "1".)
    return info.type === 'directory'
      ? this.url('/archive', { path: info.path })
      : this.url('/content', { path: info.path, download: true });
  }

  /**
   * A file's content: {bytes: Uint8Array, etag, partial}. With `maxBytes`, only the first
   * `maxBytes` are asked for (a Range request; `partial` says the server sent less).
   */
  async read(path, maxBytes = 0) {
    const headers = maxBytes ? { range: `bytes=0-${maxBytes - 1}` } : {};
    const response = await request(this.url('/content', { path }), { headers });
    if (!response.ok) throw await errorFrom(response);
    const bytes = new Uint8Array(await response.arrayBuffer());
    return { bytes, etag: response.headers.get('etag'), partial: response.status === 206 };
  }

  /**
   * Writes a file: resolves to the server's info. `ifMatch` (an ETag) refuses a file that
   * changed (409, `error.body.current` is its info); `createOnly` refuses one that exists.
   */
  async write(path, body, { ifMatch = null, createOnly = false } = {}) {
    const headers = { ...csrfHeaders(), 'content-type': 'application/octet-stream' };
    if (ifMatch) headers['if-match'] = ifMatch;
    if (createOnly) headers['if-none-match'] = '*';
    const response = await request(this.url('/content', { path }), { method: 'PUT', headers, body });
    if (!response.ok) throw await errorFrom(response);
    return response.json();
  }

  /**
   * Uploads a File with progress (fetch cannot report upload progress, XMLHttpRequest can):
   * `onProgress(sentBytes)`. Resolves to info; `abort()` on the returned promise cancels.
   */
  upload(path, file, { createOnly = true, onProgress = () => {} } = {}) {
    const headers = { 'content-type': 'application/octet-stream' };
    if (createOnly) headers['if-none-match'] = '*';
    return sendWithProgress('PUT', this.url('/content', { path }), file, { headers, onProgress });
  }

  /** The address of a folder's live changes (Server-Sent Events, event `change`). */
  watchUrl(path) {
    return this.url('/watch', { path });
  }
}
