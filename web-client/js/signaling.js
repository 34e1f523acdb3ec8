// Teleconsult signaling client: protocol v1 over the /ws WebSocket.
// See docs/protocol.md. Requests carry an "id" and resolve with the reply
// that echoes it; an "error" reply rejects with an Error whose .code is the
// stable error code. Every other server message is dispatched as an event.

export const PROTOCOL_VERSION = 1;

export class SignalingError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export class SignalingClient extends EventTarget {
  #ws = null;
  #pending = new Map();
  #nextId = 1;
  /**
   * The TURN servers (with short-lived credentials) from the latest
   * `joined`, `admitted` or `resumed`; empty when the server has none.
   */
  iceServers = [];

  /** Opens the socket and says hello. Resolves with the welcome message. */
  static async connect(url = defaultUrl()) {
    const client = new SignalingClient();
    await client.#open(url);
    const welcome = await client.request({ type: 'hello', protocol: PROTOCOL_VERSION });
    client.welcome = welcome;
    return client;
  }

  #open(url) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      this.#ws = ws;
      ws.addEventListener('open', () => resolve(), { once: true });
      ws.addEventListener('error', () => reject(new SignalingError('connect_failed', 'cannot reach the server')), { once: true });
      ws.addEventListener('message', (event) => this.#onMessage(event.data));
      ws.addEventListener('close', (event) => {
        for (const { reject: fail } of this.#pending.values()) {
          fail(new SignalingError('closed', 'connection closed'));
        }
        this.#pending.clear();
        this.dispatchEvent(new CustomEvent('close', { detail: { code: event.code, reason: event.reason } }));
      });
    });
  }

  #onMessage(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (Array.isArray(message.ice_servers)) this.iceServers = message.ice_servers;
    const waiter = message.id != null ? this.#pending.get(message.id) : undefined;
    if (waiter) {
      this.#pending.delete(message.id);
      if (message.type === 'error') {
        waiter.reject(new SignalingError(message.code, message.message));
      } else {
        waiter.resolve(message);
      }
      return;
    }
    this.dispatchEvent(new CustomEvent(message.type, { detail: message }));
    this.dispatchEvent(new CustomEvent('message', { detail: message }));
  }

  /** Sends a message without waiting for a reply. */
  send(message) {
    if (this.#ws?.readyState === WebSocket.OPEN) {
      this.#ws.send(JSON.stringify(message));
    }
  }

  /** Sends a request and resolves with its reply. */
  request(message, timeoutMs = 10000) {
    const id = `c${this.#nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new SignalingError('timeout', 'no reply from the server'));
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (m) => { clearTimeout(timer); resolve(m); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      this.send({ ...message, id });
    });
  }

  get isOpen() {
    return this.#ws?.readyState === WebSocket.OPEN;
  }

  close() {
    this.#ws?.close();
  }
}

/** ws(s)://<this host>/ws */
export function defaultUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}
