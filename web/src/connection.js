// One terminal session's WebSocket (ARCHITECTURE.md, "Terminal WebSocket"), kept alive across
// drops: it reattaches with the session id and the output offset it already has, resends the
// input the server has not acknowledged, and acknowledges output as xterm.js writes it, which
// is the flow control that keeps a flood of output from piling up in the page.

/** Acknowledge written output at least this often (the contract says at most every 64 KiB
 *  and every 128 messages: the daemon keeps at most 256 output messages unacknowledged). */
const ACK_EVERY_BYTES = 32 * 1024;
const ACK_EVERY_MESSAGES = 64;
/** ...and this long after the last write when less than that was written. */
const ACK_DELAY_MS = 100;
/** Input sent but not yet acknowledged by the server: the rest waits its turn (a large paste
 *  goes out as the shell takes it). */
const MAX_UNACKED_INPUT = 1024 * 1024;
/** Input the page holds at most (sent or waiting); more than this is refused with a warning. */
const MAX_PENDING_INPUT = 16 * 1024 * 1024;
/** Reconnect backoff: the first retry waits about BASE, each failure doubles it up to CAP. */
const BACKOFF_BASE_MS = 250;
const BACKOFF_CAP_MS = 4000;

/** WebSocket close codes the server uses (see the contract); 4000 means "try again". */
const CLOSE_GONE = 4004;
const CLOSE_REFUSED = 4003;
const CLOSE_SIGNED_OUT = 4001;
const CLOSE_TAKEN_OVER = 4009;

/**
 * States reported through `onState(state, detail)`:
 * - 'connecting'   first connection, not attached yet
 * - 'attached'     live
 * - 'reconnecting' the socket dropped; retrying with backoff (detail: the last error, if any)
 * - 'paused'       the login expired; `resume()` after signing in again
 * - 'ended'        the shell exited or the session is gone; never reconnects
 * - 'refused'      the server refused this viewer (detail: why); never reconnects by itself
 * - 'taken'        another viewer took control; reconnecting would take it back, so only
 *                  `resume()` (the user's click) does
 */
export class TerminalConnection {
  /**
   * @param {object} options
   * @param {string} options.host            host id (or name)
   * @param {string|null} options.session    session id to attach to; null opens a new session
   * @param {string|null} [options.container] a new session is a shell in this container
   *                                          (id or name) rather than on the host
   * @param {import('@xterm/xterm').Terminal} options.term
   * @param {(state: string, detail?: string) => void} options.onState
   * @param {(attached: object) => void} options.onAttached  the server's "attached" message
   * @param {() => Promise<string>} options.checkSession     'ok' | 'unauthenticated' | 'unreachable'
   */
  constructor({ host, session, container = null, term, onState, onAttached, checkSession }) {
    this.host = host;
    this.session = session;
    this.container = container;
    this.term = term;
    this.onState = onState;
    this.onAttached = onAttached;
    this.checkSession = checkSession;

    this.socket = null;
    this.state = 'connecting';
    this.stopped = false; // ended, refused, or closed by the page: no more reconnects
    this.failures = 0; // connection attempts that failed in a row
    this.retryTimer = null;
    this.lastError = '';
    this.connectedSize = { cols: 0, rows: 0 };

    // Output: `received` is the offset of the next byte the server will send (null until the
    // first "attached" when the page has nothing yet: after a reload the server then replays
    // the recent screen); `written` is how far xterm.js has drawn; `acked` what we told the
    // server. `skip` drops bytes we already have when the server starts earlier than asked.
    this.received = null;
    this.written = 0;
    this.acked = 0;
    this.skip = 0;
    this.ackTimer = null;
    this.writesSinceAck = 0;

    // Input: bytes not yet acknowledged with input_ack, starting at `inputBase`, so they can
    // be resent from the server's input_offset after a reconnect. The first `sentBytes` of
    // them went out on the current socket; the rest waits for room in the input window.
    this.unacked = [];
    this.unackedBytes = 0;
    this.sentBytes = 0;
    this.inputBase = 0;
  }

  /** Opens the socket (again). */
  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.stopped) return;
    this.lastError = '';
    const params = new URLSearchParams();
    if (this.session) params.set('session', this.session);
    if (this.session && this.received !== null) params.set('offset', String(this.received));
    if (!this.session && this.container) params.set('container', this.container);
    params.set('cols', String(this.term.cols));
    params.set('rows', String(this.term.rows));
    this.connectedSize = { cols: this.term.cols, rows: this.term.rows };
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${scheme}//${location.host}/api/v1/hosts/${encodeURIComponent(this.host)}/terminal?${params}`;

    const socket = new WebSocket(url);
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    let attached = false;
    socket.onmessage = (event) => {
      if (socket !== this.socket) return;
      if (typeof event.data === 'string') {
        if (this.handleMessage(JSON.parse(event.data))) attached = true;
      } else {
        this.handleOutput(new Uint8Array(event.data));
      }
    };
    socket.onclose = (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      this.handleClose(event, attached);
    };
  }

  /** Detaches for good (the tab was closed, or the user logged out). The shell keeps running. */
  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.ackTimer);
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000, 'closed by the page');
  }

  /** Tries again now (after a login, or when the user asks). */
  resume() {
    if (this.state === 'ended') return;
    this.stopped = false;
    this.failures = 0;
    if (!this.socket) this.connect();
  }

  /** Typed or pasted bytes. Kept until acknowledged; sent as the input window allows. */
  sendInput(bytes) {
    if (this.state === 'ended' || bytes.length === 0) return;
    if (this.unackedBytes + bytes.length > MAX_PENDING_INPUT) {
      this.term.write('\r\n\x1b[2m[paste refused: 16 MiB of input is already waiting]\x1b[0m\r\n');
      return;
    }
    this.unacked.push(bytes);
    this.unackedBytes += bytes.length;
    this.flushInput();
  }

  /** Sends waiting input while less than MAX_UNACKED_INPUT is unacknowledged. */
  flushInput() {
    if (this.state !== 'attached' || !this.socket) return;
    let skip = this.sentBytes;
    for (const chunk of this.unacked) {
      if (this.sentBytes >= MAX_UNACKED_INPUT) return;
      if (skip >= chunk.length) {
        skip -= chunk.length;
        continue;
      }
      const piece = chunk.subarray(skip, skip + (MAX_UNACKED_INPUT - this.sentBytes));
      skip = 0;
      this.socket.send(piece);
      this.sentBytes += piece.length;
    }
  }

  /** The terminal's new size. */
  resize(cols, rows) {
    this.sendJson({ type: 'resize', cols, rows });
  }

  // === the server's messages ===

  /** Handles one JSON message; returns true for "attached". */
  handleMessage(message) {
    switch (message.type) {
      case 'attached':
        this.attached(message);
        return true;
      case 'input_ack':
        this.dropInputBefore(message.offset);
        return false;
      case 'exit': {
        const how = message.signal ? `signal ${message.signal}` : `exit ${message.code}`;
        this.term.write(`\r\n\x1b[2m[session ended (${how})]\x1b[0m\r\n\x1b[?25l`); // (and hide the cursor)
        this.end();
        return false;
      }
      case 'skip':
        // The server no longer holds the output up to `to` (a watcher that fell behind).
        this.skipTo(message.to);
        return false;
      case 'error':
        this.lastError = message.message;
        return false;
      default:
        return false;
    }
  }

  attached(message) {
    this.session = message.session;
    this.failures = 0;
    this.lastError = '';
    const start = message.output_offset;
    if (this.received === null) {
      // Nothing on screen yet: start wherever the server starts.
      this.received = this.written = this.acked = start;
    } else if (start > this.received) {
      this.skipTo(start); // the server no longer holds everything we missed
    } else {
      this.skip = this.received - start;
    }
    // Resend what the server has not seen, from where it says its input stands.
    this.dropInputBefore(message.input_offset);
    if (this.inputBase !== message.input_offset) {
      // After a reload the page holds no input and starts where the server is. (Otherwise the
      // server lost input we no longer hold: it cannot be resent, so start over from there.)
      this.unacked = [];
      this.unackedBytes = 0;
      this.inputBase = message.input_offset;
    }
    this.sentBytes = 0;
    this.setState('attached');
    this.flushInput();
    // The size may have changed while connecting.
    if (this.term.cols !== this.connectedSize.cols || this.term.rows !== this.connectedSize.rows) {
      this.resize(this.term.cols, this.term.rows);
    }
    this.onAttached(message);
  }

  handleOutput(bytes) {
    if (this.received === null) return; // (the server always says "attached" first)
    if (this.skip > 0) {
      const dropped = Math.min(this.skip, bytes.length);
      this.skip -= dropped;
      bytes = bytes.subarray(dropped);
      if (bytes.length === 0) return;
    }
    this.received += bytes.length;
    const end = this.received;
    this.term.write(bytes, () => {
      this.written = Math.max(this.written, end);
      this.writesSinceAck += 1;
      this.scheduleAck();
    });
  }

  skipTo(offset) {
    if (offset <= this.received) return;
    this.term.write(`\r\n\x1b[2m[${offset - this.received} bytes of output skipped]\x1b[0m\r\n`);
    this.received = offset;
  }

  /** Acknowledges written output: at once past ACK_EVERY_BYTES, otherwise a little later. */
  scheduleAck() {
    if (this.written - this.acked >= ACK_EVERY_BYTES || this.writesSinceAck >= ACK_EVERY_MESSAGES) {
      this.sendAck();
    } else if (this.ackTimer === null) {
      this.ackTimer = setTimeout(() => this.sendAck(), ACK_DELAY_MS);
    }
  }

  sendAck() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.written > this.acked && this.sendJson({ type: 'ack', offset: this.written })) {
      this.acked = this.written;
      this.writesSinceAck = 0;
    }
  }

  dropInputBefore(offset) {
    while (this.unacked.length > 0 && this.inputBase < offset) {
      const chunk = this.unacked[0];
      const drop = Math.min(chunk.length, offset - this.inputBase);
      if (drop === chunk.length) this.unacked.shift();
      else this.unacked[0] = chunk.subarray(drop);
      this.inputBase += drop;
      this.unackedBytes -= drop;
      this.sentBytes = Math.max(0, this.sentBytes - drop);
    }
    this.flushInput();
  }

  // === closing and reconnecting ===

  async handleClose(event, wasAttached) {
    if (this.stopped) return;
    if (event.code === CLOSE_GONE) {
      const why = this.lastError || 'the session is gone';
      this.term.write(`\r\n\x1b[2m[${why}]\x1b[0m\r\n`);
      this.end();
      return;
    }
    if (event.code === CLOSE_REFUSED) {
      this.stopped = true;
      this.setState('refused', this.lastError || 'refused by the server');
      return;
    }
    // (Until the server says 4009, its reason names the takeover.)
    if (event.code === CLOSE_TAKEN_OVER || /took control/.test(this.lastError)) {
      this.stopped = true;
      this.setState('taken', this.lastError || 'another viewer took control of this session');
      return;
    }
    if (event.code === CLOSE_SIGNED_OUT) {
      this.stopped = true;
      this.setState('paused');
      return;
    }
    if (!wasAttached) {
      // The upgrade itself may have been refused because the login expired: the browser does
      // not show us the HTTP status, so ask.
      if ((await this.checkSession()) === 'unauthenticated') {
        this.stopped = true;
        this.setState('paused');
        return;
      }
      if (this.stopped) return;
      this.failures += 1;
    }
    // A drop after a working connection retries almost at once; failures back off, with
    // jitter so many tabs do not retry in step.
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.failures);
    const delay = ceiling / 2 + (Math.random() * ceiling) / 2;
    this.setState('reconnecting', this.lastError);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  end() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.setState('ended');
  }

  setState(state, detail = '') {
    this.state = state;
    this.onState(state, detail);
  }

  sendJson(message) {
    if (this.state !== 'attached' || !this.socket) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }
}
