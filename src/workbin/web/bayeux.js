// bayeux.js: a small Bayeux 1.0 client for browsers, written for the bayeux crate's
// demo page and to be read: it shows what a CometD client does on the wire.
//
// Bayeux in one paragraph. A client first sends /meta/handshake and gets a clientId,
// the connection types the server offers and its advice (how long it holds a connect,
// how long to wait between connects). It then keeps one /meta/connect outstanding at
// all times: the server holds it until it has messages for the client (or `timeout`
// passes) and answers it with them; the client sends the next one at once (or after
// `interval`). /meta/subscribe and /meta/unsubscribe manage subscriptions; a message on
// any other channel is a publish. Every reply says `successful`, and may carry
// `advice.reconnect`: "retry" (connect again), "handshake" (the session is gone:
// handshake again, and subscribe again, since subscriptions belonged to the old
// session) or "none" (stop).
//
// Transports. Over WebSocket every message goes in a text frame (a JSON array), and
// the server pushes messages as they come; /meta/connect still runs, as a heartbeat.
// Over long-polling each batch is an HTTP POST, and the held /meta/connect is the only
// way down; publishes and subscribes go in requests of their own beside it, so a page
// uses two connections to the server while it long-polls.
//
// This client handshakes over HTTP, then connects over WebSocket if the server offers
// it (falling back to long-polling when the socket cannot open): a browser's WebSocket
// cannot send an Authorization header, a POST can, and the session carries its user
// from the handshake on. Cookies go with every request (credentials: "include"): the
// server's BAYEUX_BROWSER cookie tells it which sessions share a browser.
//
// Extensions used:
// - the acknowledged-messages extension (CometD's "ack"): the handshake asks with
//   ext: {ack: true}; each connect reply then carries ext.ack, a batch number, and the
//   next connect sends it back, so the server knows what arrived and sends again what
//   did not (after a network failure, say);
// - CometD's multiple-clients advice: when another tab of this browser holds the long
//   poll, the server answers this tab's connects at once with
//   advice: {"multiple-clients": true, interval: N}; the client polls every N ms
//   instead of holding a connection (browsers open only six per host).

/** The states a client goes through, as the page shows them. */
export const State = Object.freeze({
  /** Not started, or stopped with disconnect(). */
  DISCONNECTED: "disconnected",
  /** Handshaking for the first time. */
  CONNECTING: "connecting",
  /** A session, and connects answered. */
  CONNECTED: "connected",
  /** The server could not be reached (or lost the session): trying again. */
  RECONNECTING: "reconnecting",
  /** Given up: the browser is offline, or the server said reconnect "none". */
  OFFLINE: "offline",
});

const META_HANDSHAKE = "/meta/handshake";
const META_CONNECT = "/meta/connect";
const META_SUBSCRIBE = "/meta/subscribe";
const META_UNSUBSCRIBE = "/meta/unsubscribe";
const META_DISCONNECT = "/meta/disconnect";

/** Backoff between attempts after a failure: 0.5 s, doubling, at most 5 s. */
const BACKOFF_START = 500;
const BACKOFF_MAX = 5000;

/**
 * A Bayeux client. Events (it is an EventTarget):
 * - "handshake": detail {clientId, ack} after each successful handshake (ack: the
 *   server acknowledges deliveries);
 * - "state": detail {state, reason} when the connection state changes;
 * - "transport": detail {transport} when it connects over another transport;
 * - "advice": detail {advice} for each connect reply's advice ("multiple-clients"...);
 * - "message": detail {message} for every message received (subscribers also get
 *   theirs through subscribe()'s callback).
 */
export class BayeuxClient extends EventTarget {
  /**
   * @param {string} url the Bayeux endpoint, e.g. "http://127.0.0.1:8080/cometd"
   * @param {object} [options]
   * @param {{user: string, password: string}} [options.credentials] sent as HTTP
   *   Basic on the handshake (the server's security policy reads it)
   * @param {string[]} [options.transports] in order of preference; default
   *   ["websocket", "long-polling"]
   * @param {boolean} [options.ack] ask for acknowledged delivery (default true)
   */
  constructor(url, options = {}) {
    super();
    this.url = new URL(url, location.href).href;
    this.credentials = options.credentials ?? null;
    this.transports = options.transports ?? ["websocket", "long-polling"];
    this.wantAck = options.ack ?? true;
    this.state = State.DISCONNECTED;
    this.transport = null;
    this.clientId = null;
    /** The server's advice, as last given: {reconnect, interval, timeout}. */
    this.advice = { reconnect: "retry", interval: 0, timeout: 30000 };
    /** channel -> Set of callbacks; subscribed again after each new handshake. */
    this.subscriptions = new Map();
    /** Replies awaited, by message id. */
    this.pending = new Map();
    this.nextId = 1;
    this.ackEnabled = false;
    this.lastAckBatch = null;
    this.socket = null;
    this.webSocketFailed = false;
    this.backoff = 0;
    this.timer = null;
    /** Bumped to abandon whatever an earlier session left in flight. */
    this.epoch = 0;
    this.onlineListener = () => this.#wake();
    this.offlineListener = () => this.#setState(State.OFFLINE, "the browser is offline");
  }

  /** Starts: handshakes, then keeps connecting until disconnect(). */
  start() {
    addEventListener("online", this.onlineListener);
    addEventListener("offline", this.offlineListener);
    this.#setState(State.CONNECTING);
    this.#handshake();
  }

  /**
   * Subscribes `callback` to `channel` (wildcards: /a/* one segment, /a/** any).
   * Resolves with the server's reply once the session has the subscription.
   */
  subscribe(channel, callback) {
    let callbacks = this.subscriptions.get(channel);
    const first = !callbacks;
    if (first) {
      callbacks = new Set();
      this.subscriptions.set(channel, callbacks);
    }
    callbacks.add(callback);
    if (first && this.clientId) {
      return this.#request({ channel: META_SUBSCRIBE, subscription: channel });
    }
    return Promise.resolve({ successful: true, subscription: channel });
  }

  /** Publishes `data` on `channel`; resolves with the server's reply. */
  publish(channel, data) {
    return this.#request({ channel, data });
  }

  /** Ends the session (/meta/disconnect) and stops. */
  async disconnect() {
    removeEventListener("online", this.onlineListener);
    removeEventListener("offline", this.offlineListener);
    clearTimeout(this.timer);
    const clientId = this.clientId;
    this.epoch += 1;
    this.clientId = null;
    if (clientId) {
      const message = { channel: META_DISCONNECT, clientId, id: String(this.nextId++) };
      try {
        if (this.socket?.readyState === WebSocket.OPEN) {
          this.socket.send(JSON.stringify([message]));
        } else {
          await this.#post([message]);
        }
      } catch {
        // Going away anyway: the server expires the session.
      }
    }
    this.socket?.close(1000);
    this.socket = null;
    this.#setState(State.DISCONNECTED);
  }

  // --- the handshake ------------------------------------------------------------

  async #handshake() {
    const epoch = ++this.epoch;
    this.clientId = null;
    this.ackEnabled = false;
    this.lastAckBatch = null;
    this.socket?.close(1000);
    this.socket = null;
    const message = {
      channel: META_HANDSHAKE,
      version: "1.0",
      minimumVersion: "1.0",
      supportedConnectionTypes: this.transports,
      id: String(this.nextId++),
    };
    if (this.wantAck) message.ext = { ack: true };
    let reply;
    try {
      const replies = await this.#post([message]);
      reply = replies.find((m) => m.channel === META_HANDSHAKE);
    } catch (e) {
      if (epoch === this.epoch) this.#retryLater(() => this.#handshake(), e.message);
      return;
    }
    if (epoch !== this.epoch) return;
    if (!reply?.successful) {
      const advice = reply?.advice ?? {};
      const reason = reply?.error ?? "handshake refused";
      if (advice.reconnect === "none") {
        // Bad credentials, say: trying again would not help.
        this.#setState(State.OFFLINE, reason);
      } else {
        this.#retryLater(() => this.#handshake(), reason, advice.interval);
      }
      return;
    }
    this.clientId = reply.clientId;
    this.ackEnabled = reply.ext?.ack === true;
    this.#takeAdvice(reply.advice);
    this.dispatchEvent(
      new CustomEvent("handshake", { detail: { clientId: this.clientId, ack: this.ackEnabled } }),
    );
    const offered = reply.supportedConnectionTypes ?? ["long-polling"];
    const useSocket =
      !this.webSocketFailed &&
      this.transports.includes("websocket") &&
      offered.includes("websocket");
    this.#setTransport(useSocket ? "websocket" : "long-polling");
    // The new session has no subscriptions: make them again, all in one batch.
    const channels = [...this.subscriptions.keys()];
    if (useSocket) {
      this.#openSocket(epoch, channels);
    } else {
      if (channels.length > 0) {
        this.#request({ channel: META_SUBSCRIBE, subscription: channels }).catch(() => {});
      }
      this.#longPoll(epoch, true);
    }
  }

  // --- long-polling -------------------------------------------------------------

  /** One long poll after another, for as long as this session lasts. */
  async #longPoll(epoch, first) {
    if (epoch !== this.epoch) return;
    const message = this.#connectMessage("long-polling", first);
    let replies;
    try {
      replies = await this.#post([message], this.advice.timeout + 10000);
    } catch (e) {
      if (epoch !== this.epoch) return;
      this.#retryLater(() => this.#longPoll(epoch, false), e.message);
      return;
    }
    if (epoch !== this.epoch) return;
    const reply = this.#receive(replies);
    this.#afterConnect(reply, () => this.#longPoll(epoch, false));
  }

  // --- WebSocket ----------------------------------------------------------------

  /** Opens the socket for this session, subscribes `channels`, starts connecting. */
  #openSocket(epoch, channels) {
    const wsUrl = this.url.replace(/^http/, "ws");
    // Whether the server answered over this socket: a socket that closes before that
    // on the first try (a proxy that takes the upgrade and drops it, say) is no better
    // than one that never opened.
    let answered = false;
    let socket;
    try {
      socket = new WebSocket(wsUrl);
    } catch {
      this.#socketFailed(epoch, channels);
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      if (epoch !== this.epoch) return socket.close(1000);
      const batch = [];
      if (channels.length > 0) {
        const id = String(this.nextId++);
        batch.push({ channel: META_SUBSCRIBE, clientId: this.clientId, subscription: channels, id });
      }
      batch.push(this.#connectMessage("websocket", true));
      socket.send(JSON.stringify(batch));
    };
    socket.onmessage = (event) => {
      if (epoch !== this.epoch) return;
      answered = true;
      this.backoff = 0;
      let messages;
      try {
        messages = JSON.parse(event.data);
      } catch {
        return;
      }
      const reply = this.#receive(Array.isArray(messages) ? messages : [messages]);
      if (reply) {
        this.#afterConnect(reply, () => {
          if (this.socket === socket && socket.readyState === WebSocket.OPEN) {
            socket.send(JSON.stringify([this.#connectMessage("websocket", false)]));
          }
        });
      }
    };
    socket.onclose = () => {
      if (this.socket !== socket || epoch !== this.epoch) return;
      this.socket = null;
      this.#failPending("the WebSocket closed");
      if (!answered && this.state === State.CONNECTING) {
        // It never worked on the first try: a proxy or a policy in the way.
        this.#socketFailed(epoch, channels);
        return;
      }
      // The server went away (a restart, a network cut): the session may have too.
      // Open a new socket and connect with the same clientId; a 402 answer says to
      // handshake again.
      this.#retryLater(() => this.#openSocket(epoch, channels), "the WebSocket closed");
    };
  }

  /** WebSocket cannot be used here: long-polling for this session, and later ones. */
  #socketFailed(epoch, channels) {
    this.webSocketFailed = true;
    this.#setTransport("long-polling");
    if (channels.length > 0) {
      this.#request({ channel: META_SUBSCRIBE, subscription: channels }).catch(() => {});
    }
    this.#longPoll(epoch, true);
  }

  // --- what connects and replies have in common ---------------------------------

  #connectMessage(connectionType, first) {
    const message = {
      channel: META_CONNECT,
      clientId: this.clientId,
      connectionType,
      id: String(this.nextId++),
    };
    // The first connect asks not to be held, to learn the advice at once (CometD's
    // JavaScript client does the same).
    if (first) message.advice = { timeout: 0 };
    if (this.ackEnabled) message.ext = { ack: this.lastAckBatch ?? -1 };
    return message;
  }

  /**
   * Dispatches a batch received: replies to their requests, other messages to their
   * subscribers. Returns the /meta/connect reply, if the batch has one.
   */
  #receive(messages) {
    let connectReply = null;
    for (const message of messages) {
      if (message.channel === META_CONNECT) {
        connectReply = message;
        continue;
      }
      if (message.channel?.startsWith("/meta/") || message.successful !== undefined) {
        const waiter = this.pending.get(message.id);
        if (waiter) {
          this.pending.delete(message.id);
          waiter.resolve(message);
        }
        continue;
      }
      this.dispatchEvent(new CustomEvent("message", { detail: { message } }));
      for (const [pattern, callbacks] of this.subscriptions) {
        if (matches(pattern, message.channel)) {
          for (const callback of callbacks) callback(message);
        }
      }
    }
    return connectReply;
  }

  /** Follows a connect reply: connect again (`next`), handshake again, or stop. */
  #afterConnect(reply, next) {
    if (reply.ext && typeof reply.ext.ack === "number") this.lastAckBatch = reply.ext.ack;
    this.#takeAdvice(reply.advice);
    if (reply.advice) this.dispatchEvent(new CustomEvent("advice", { detail: { advice: reply.advice } }));
    if (reply.successful) {
      this.backoff = 0;
      this.#setState(State.CONNECTED);
      this.timer = setTimeout(next, this.advice.interval ?? 0);
      return;
    }
    const reconnect = reply.advice?.reconnect ?? this.advice.reconnect;
    if (reconnect === "handshake") {
      // The server does not know this session (expired, or the server restarted).
      this.#setState(State.RECONNECTING, reply.error ?? "session lost");
      this.timer = setTimeout(() => this.#handshake(), reply.advice?.interval ?? 0);
    } else if (reconnect === "none") {
      this.#setState(State.OFFLINE, reply.error ?? "the server said to stop");
    } else {
      this.#retryLater(next, reply.error ?? "connect failed");
    }
  }

  #takeAdvice(advice) {
    if (!advice) return;
    for (const key of ["reconnect", "interval", "timeout"]) {
      if (advice[key] !== undefined) this.advice[key] = advice[key];
    }
  }

  /** Tries `action` again after the backoff (or `interval`), saying why. */
  #retryLater(action, reason, interval) {
    if (this.state !== State.OFFLINE || navigator.onLine) {
      this.#setState(State.RECONNECTING, reason);
    }
    this.backoff = Math.min(Math.max(this.backoff * 2, BACKOFF_START), BACKOFF_MAX);
    clearTimeout(this.timer);
    this.retry = action;
    this.timer = setTimeout(() => {
      this.retry = null;
      action();
    }, interval ?? this.backoff);
  }

  /** The browser is back online: retry now rather than at the end of the backoff. */
  #wake() {
    if (this.retry) {
      clearTimeout(this.timer);
      const action = this.retry;
      this.retry = null;
      this.backoff = 0;
      action();
    }
  }

  /** Sends one message with a clientId and an id; resolves with its reply. */
  #request(fields) {
    if (!this.clientId) return Promise.reject(new Error("no session"));
    const message = { ...fields, clientId: this.clientId, id: String(this.nextId++) };
    const reply = new Promise((resolve, reject) => {
      this.pending.set(message.id, { resolve, reject });
    });
    if (this.transport === "websocket" && this.socket?.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify([message]));
    } else {
      // Long-polling: a request of its own, beside the held connect.
      this.#post([message])
        .then((replies) => this.#receive(replies))
        .catch((e) => {
          const waiter = this.pending.get(message.id);
          this.pending.delete(message.id);
          waiter?.reject(e);
        });
    }
    return reply;
  }

  #failPending(reason) {
    for (const waiter of this.pending.values()) waiter.reject(new Error(reason));
    this.pending.clear();
  }

  /** POSTs a batch; resolves with the messages of the answer. */
  async #post(messages, timeoutMs = 10000) {
    const headers = { "Content-Type": "application/json;charset=UTF-8" };
    if (this.credentials) headers.Authorization = basic(this.credentials);
    const response = await fetch(this.url, {
      method: "POST",
      headers,
      body: JSON.stringify(messages),
      credentials: "include",
      cache: "no-store",
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (!response.ok) {
      throw new Error(`HTTP ${response.status}: ${(await response.text()).trim()}`);
    }
    return response.json();
  }

  #setState(state, reason = "") {
    if (state === this.state && reason === this.reason) return;
    this.state = state;
    this.reason = reason;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, reason } }));
  }

  #setTransport(transport) {
    if (transport === this.transport) return;
    this.transport = transport;
    this.dispatchEvent(new CustomEvent("transport", { detail: { transport } }));
  }
}

/** Whether `channel` matches the subscription `pattern` (`/a/*`, `/a/**` or exact). */
export function matches(pattern, channel) {
  if (pattern === channel) return true;
  if (pattern.endsWith("/**")) return channel.startsWith(pattern.slice(0, -2));
  if (pattern.endsWith("/*")) {
    const prefix = pattern.slice(0, -1);
    return channel.startsWith(prefix) && !channel.slice(prefix.length).includes("/");
  }
  return false;
}

/** An HTTP Basic Authorization value (UTF-8 names and passwords). */
export function basic({ user, password }) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  return "Basic " + btoa(String.fromCharCode(...bytes));
}
