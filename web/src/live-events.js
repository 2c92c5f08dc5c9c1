// Server-Sent Events streams kept open (the hosts list, a folder's changes, Docker events and
// stats), and the "live" badge that shows how one is doing (the metrics WebSocket shows its
// state on one too).

import { errorFrom, request } from './api.js';

/** Wait before opening a stream again after the server refused it. */
const RETRY_MS = 3_000;

/** What the badge says in each state ('' hides it). */
const BADGE_TEXT = { connecting: 'connecting…', live: 'live', reconnecting: 'reconnecting…' };

/** Shows `state` ('connecting', 'live', 'reconnecting' or '') on a badge; `why` as its tooltip. */
export function setLive(badge, state, why = '') {
  badge.dataset.state = state;
  badge.textContent = BADGE_TEXT[state] ?? '';
  badge.title = why;
  badge.hidden = !state;
}

/**
 * Why a stream the browser gave up on was refused: the server's ApiError (401 when the login
 * ended), or null when it answers now. (EventSource does not show the HTTP status, so the
 * address is asked again with fetch, and dropped at once if it answers.)
 */
export async function streamError(url) {
  const controller = new AbortController();
  try {
    const response = await request(url, { signal: controller.signal });
    if (response.ok) return null;
    return await errorFrom(response);
  } catch (e) {
    return e;
  } finally {
    controller.abort();
  }
}

export class LiveEvents {
  /**
   * @param {object} options
   * @param {string} options.url
   * @param {Record<string, (data: any) => void>} options.events  a handler per event name,
   *        given the event's JSON data
   * @param {HTMLElement} [options.badge]        shows the stream's state
   * @param {() => void} [options.onReopen]      the stream is back after a drop: what was
   *        sent meanwhile is lost, so whatever it keeps up to date should be read again
   * @param {(error: Error) => void} [options.onRefused]  the server refused the stream (not
   *        for a login that ended); it is tried again a little later
   * @param {() => void} options.onUnauthenticated
   */
  constructor({ url, events, badge = null, onReopen = () => {}, onRefused = () => {}, onUnauthenticated }) {
    Object.assign(this, { url, events, badge, onReopen, onRefused, onUnauthenticated });
    this.source = null;
    this.retryTimer = null;
  }

  open() {
    this.close();
    const source = new EventSource(this.url);
    this.source = source;
    let dropped = false;
    this.show('connecting');
    source.onopen = () => {
      this.show('live');
      if (dropped) {
        dropped = false;
        this.onReopen();
      }
    };
    for (const [name, handler] of Object.entries(this.events)) {
      source.addEventListener(name, (event) => {
        if (source === this.source) handler(JSON.parse(event.data));
      });
    }
    source.onerror = async () => {
      if (source !== this.source) return;
      dropped = true;
      this.show('reconnecting');
      // While CONNECTING the browser retries by itself (a dropped stream). CLOSED means the
      // server answered with an error, such as 401 when the login expired.
      if (source.readyState !== EventSource.CLOSED) return;
      const error = await streamError(this.url);
      if (source !== this.source) return;
      if (error?.status === 401) {
        this.close();
        return this.onUnauthenticated();
      }
      if (error) {
        this.show('reconnecting', error.message);
        this.onRefused(error);
      }
      if (source === this.source) this.retryTimer = setTimeout(() => this.open(), RETRY_MS);
    };
  }

  close() {
    clearTimeout(this.retryTimer);
    this.source?.close();
    this.source = null;
    this.show('');
  }

  show(state, why = '') {
    if (this.badge) setLive(this.badge, state, why);
  }
}
