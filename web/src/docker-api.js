// The control plane's Docker endpoints for one host (ARCHITECTURE.md, "Docker"), and the small
// conversions the Docker pages share (ports, sizes, times, a command line). Every call
// rejects with an ApiError carrying the server's one line.

import { ApiError, api, csrfHeaders, errorFrom, request, sendWithProgress, withQuery } from './api.js';
import { formatSize } from './dom.js';

export class HostDocker {
  constructor(host) {
    this.host = host;
    this.base = `/api/v1/hosts/${encodeURIComponent(host)}/docker`;
  }

  /** `{available, message, version, api_version, os, arch, containers, running, images, endpoint}` */
  engine() {
    return api('GET', this.base);
  }

  containers({ all = false } = {}) {
    return api('GET', withQuery(`${this.base}/containers`, { all: all ? 1 : '' }));
  }

  containerPath(id, rest = '') {
    return `${this.base}/containers/${encodeURIComponent(id)}${rest}`;
  }

  /** The engine's inspect document. */
  inspect(id) {
    return api('GET', this.containerPath(id));
  }

  /** Creates (and with `spec.start`, starts) a container: the container. */
  create(spec) {
    return api('POST', `${this.base}/containers`, spec);
  }

  /** `verb`: start, stop, restart, kill, pause or unpause (with the engine's defaults). */
  act(id, verb) {
    return api('POST', this.containerPath(id, `/${verb}`));
  }

  rename(id, name) {
    return api('POST', this.containerPath(id, '/rename'), { name });
  }

  remove(id, { force = false, volumes = false } = {}) {
    return api('DELETE', withQuery(this.containerPath(id), { force: force ? 1 : '', volumes: volumes ? 1 : '' }));
  }

  /** `{titles, processes}` */
  top(id) {
    return api('GET', this.containerPath(id, '/top'));
  }

  /** One stats sample. */
  stats(id) {
    return api('GET', this.containerPath(id, '/stats'));
  }

  /** Server-Sent Events: `stats` samples, then `end`. */
  statsUrl(id) {
    return this.containerPath(id, '/stats/stream');
  }

  /** Server-Sent Events: `log` lines, then `end`. `since`: Unix seconds. */
  logsUrl(id, { follow, tail, since, timestamps }) {
    return withQuery(this.containerPath(id, '/logs'), {
      follow: follow ? 1 : '',
      tail,
      since,
      timestamps: timestamps ? 1 : '',
    });
  }

  /** Server-Sent Events: `docker` events of the engine. */
  eventsUrl() {
    return `${this.base}/events`;
  }

  images() {
    return api('GET', `${this.base}/images`);
  }

  /**
   * Pulls `image`, calling `onProgress({id, status, current, total})` for each progress line
   * of the answer (`application/x-ndjson`). Resolves to the image id.
   */
  async pull(image, onProgress) {
    const response = await request(`${this.base}/images/pull`, {
      method: 'POST',
      headers: { ...csrfHeaders(), 'content-type': 'application/json' },
      body: JSON.stringify({ image }),
    });
    if (!response.ok) throw await errorFrom(response);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let pending = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += value;
      const lines = pending.split('\n');
      pending = lines.pop();
      for (const line of lines.filter((l) => l.trim())) {
        const message = JSON.parse(line);
        if (message.error) throw new ApiError(response.status, message.error);
        if (message.done) return message.image_id;
        onProgress(message);
      }
    }
    throw new ApiError(0, `the pull of ${image} ended without an outcome: try again`);
  }

  /** Imports a root file system tarball as `image` (repo[:tag]): the image id. */
  async importTarball(image, file, onProgress) {
    const answer = await sendWithProgress('POST', withQuery(`${this.base}/images/import`, { image }), file, {
      headers: { 'content-type': 'application/x-tar' },
      onProgress,
    });
    return answer.image_id;
  }

  removeImage(id, { force = false } = {}) {
    return api('DELETE', withQuery(`${this.base}/images/${encodeURIComponent(id)}`, { force: force ? 1 : '' }));
  }

  /** `what`: containers, images, volumes or networks → `{deleted, space_reclaimed}`. */
  prune(what, { all = false } = {}) {
    return api('POST', `${this.base}/prune`, { what, all });
  }

  volumes() {
    return api('GET', `${this.base}/volumes`);
  }

  createVolume(volume) {
    return api('POST', `${this.base}/volumes`, volume);
  }

  removeVolume(name, { force = false } = {}) {
    return api('DELETE', withQuery(`${this.base}/volumes/${encodeURIComponent(name)}`, { force: force ? 1 : '' }));
  }

  networks() {
    return api('GET', `${this.base}/networks`);
  }

  createNetwork(network) {
    return api('POST', `${this.base}/networks`, network);
  }

  removeNetwork(id) {
    return api('DELETE', `${this.base}/networks/${encodeURIComponent(id)}`);
  }
}

// === what the pages show and read ===

/** "0.0.0.0:8080→80/tcp", or "80/tcp" for a port exposed but not published. */
export function portText(port) {
  const inside = `${port.container_port}/${port.protocol || 'tcp'}`;
  if (!port.host_port) return inside;
  return `${port.host_ip ? `${port.host_ip}:` : ''}${port.host_port}→${inside}`;
}

/**
 * `[host_ip:]host_port:container_port[/protocol]` or `container_port[/protocol]` as the API's
 * port; throws an Error naming the text when it is not one.
 */
export function parsePort(text) {
  const match = /^(?:(?:(\[[0-9a-f:]+\]|[\d.]+):)?(\d+):)?(\d+)(?:\/(tcp|udp|sctp))?$/i.exec(text.trim());
  const number = (value) => (value === undefined ? 0 : Number(value));
  if (!match || number(match[2]) > 65535 || number(match[3]) > 65535 || number(match[3]) === 0) {
    throw new Error(`port ${JSON.stringify(text.trim())} is not HOST:CONTAINER[/tcp|udp] (like 8080:80)`);
  }
  const port = { host_port: number(match[2]), container_port: number(match[3]), protocol: (match[4] || 'tcp').toLowerCase() };
  if (match[1]) port.host_ip = match[1].replace(/^\[|\]$/g, '');
  return port;
}

/** "64m", "1.5g", "512k" or bytes → bytes; throws an Error naming the text otherwise. */
export function parseBytes(text) {
  const match = /^(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?$/i.exec(text.trim());
  if (!match) throw new Error(`memory ${JSON.stringify(text.trim())} is not a size (like 64m or 1g)`);
  const power = ' kmgt'.indexOf(match[2].toLowerCase() || ' ');
  return Math.round(Number(match[1]) * 1024 ** power);
}

/**
 * A command line as words, as a shell would split it: spaces separate words, quotes ('' or
 * "") keep spaces, a backslash keeps the next character. Throws on an unclosed quote.
 */
export function splitCommand(text) {
  const words = [];
  let word = null;
  let quote = null;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (quote) {
      if (c === quote) quote = null;
      else if (c === '\\' && quote === '"' && i + 1 < text.length) word += text[++i];
      else word += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      word ??= '';
    } else if (c === '\\' && i + 1 < text.length) {
      word = (word ?? '') + text[++i];
    } else if (/\s/.test(c)) {
      if (word !== null) words.push(word);
      word = null;
    } else {
      word = (word ?? '') + c;
    }
  }
  if (quote) throw new Error(`the command has an unclosed ${quote}`);
  if (word !== null) words.push(word);
  return words;
}

/** Non-empty lines of a text field, trimmed. */
export function lines(text) {
  return text.split('\n').map((l) => l.trim()).filter(Boolean);
}

/** `KEY=VALUE` lines as an object; throws an Error naming a line without `=`. */
export function parseLabels(text) {
  const labels = {};
  for (const line of lines(text)) {
    const cut = line.indexOf('=');
    if (cut <= 0) throw new Error(`label ${JSON.stringify(line)} is not KEY=VALUE`);
    labels[line.slice(0, cut)] = line.slice(cut + 1);
  }
  return labels;
}

/** Unix seconds (a number) or an RFC 3339 text (as the engine says it) as Unix seconds. */
export function unixSeconds(value) {
  if (typeof value === 'number') return value;
  const ms = Date.parse(value ?? '');
  return Number.isFinite(ms) ? Math.floor(ms / 1000) : 0;
}

/** "12 %" style CPU, "3.4 MiB / 64 MiB" style memory. */
export function cpuText(sample) {
  return `${sample.cpu_percent.toFixed(sample.cpu_percent < 10 ? 1 : 0)} %`;
}

export function memoryText(sample) {
  return `${formatSize(sample.memory_bytes)} / ${formatSize(sample.memory_limit_bytes)}`;
}

/** "sha256:0123456789ab…" → "0123456789ab" */
export function shortId(id) {
  return (id ?? '').replace(/^sha256:/, '').slice(0, 12);
}
