/**
 * parley-client.js: Parley's browser client, one ES module with no
 * dependencies and no build step. It speaks PROTOCOL.md (version 1) and keeps
 * its guarantees through disconnects: every message of a subscribed room is
 * handed to you once, in seq order, with nothing missing after a reconnect,
 * and a message you send is delivered once even if the connection drops
 * before its ack.
 *
 *   import { ParleyClient, dmRoom } from "/static/parley-client.js";
 *
 *   const client = new ParleyClient({
 *     url: "https://chat.example.com",  // default: the page's origin
 *     token: () => fetchMyJwt(),         // a string, or a (sync or async) function
 *   });
 *   client.on("state", ({ state }) => badge.textContent = state);
 *   client.on("message", (msg, { live }) => show(msg));  // once each, seq order
 *   client.on("typing", ({ room, user }) => ...);
 *   client.on("receipt", ({ room, user, seq }) => ...);
 *   client.on("presence", ({ user, status }) => ...);
 *   client.connect();
 *   await client.subscribe("general");     // resolves after the room's history
 *   const ack = await client.send("general", "hello");  // resolves on the ack
 *   const { messages, hasMore } = await client.loadOlder("general");
 *
 * Options of `new ParleyClient(options)`:
 *   url          the server's http(s) origin; the socket is `ws(s)://…/ws`.
 *   token        a JWT string, or a function returning one (or a promise of
 *                one). A function is called before every connection attempt
 *                with `{ refused }`: `refused` is true when the server has
 *                just refused the previous token (expired, revoked), so cache
 *                the token and fetch a new one only then or near its `exp`.
 *                A refused string token, or a function's token refused twice
 *                in a row, ends in state "unauthorized".
 *   device       a stable id of this client (PROTOCOL `device`): a newer
 *                connection with the same user and device replaces this one
 *                (state "replaced"; this client then stops, so two tabs never
 *                fight). Default: none.
 *   backoff      `{ initial: 500, max: 8000 }` ms: reconnect delays double
 *                from `initial` up to `max`, each drawn at random from
 *                [d/2, d] so that thousands of clients cut off by one server
 *                restart do not come back in the same millisecond.
 *   pingInterval, pongTimeout   ms (15000, 10000): a connection that answers
 *                nothing for pongTimeout after a ping is taken as dead (a
 *                half-open TCP connection otherwise looks alive for minutes).
 *
 * Connection state (`client.state`, event "state" with `{ state, previous,
 * attempt, delay, code, server }`):
 *   "idle" → "connecting" → "open" (after `hello`) → "reconnecting" (waiting
 *   `delay` ms, or connecting again) → "open" …; terminal: "unauthorized",
 *   "replaced", "closed" (after `close()`).
 *
 * Events (`client.on(type, fn)` returns a function that removes `fn`):
 *   "hello"       the server's hello frame `{ user, session, rooms, server }`.
 *   "message"     `(msg, { live })`: msg is `{ room, id, seq, sender, body,
 *                 ts, client_id }`. For each subscribed room: the history
 *                 given at subscribe, then every later message, each exactly
 *                 once and in increasing seq order, across reconnects (the
 *                 client resumes with `since` = the last seq it handed you,
 *                 pages back when the server's replay cap cut the resume
 *                 short, and drops any seq it already gave). `live` is false
 *                 for history and resume replay, true for messages as sent.
 *   "subscribed"  `{ room, head, hasOlder, resumed }` after a room's history.
 *   "unsubscribed" `{ room, removed }`: `removed` when the server ended it
 *                 (you were removed from the room).
 *   "typing"      `{ room, user }`  (the server sends it to the others only).
 *   "receipt"     `{ room, user, seq }`: `user` has read up to `seq`.
 *   "presence"    `{ user, status: "online" | "offline" }`.
 *   "ack"         the ack of one of your sends `{ room, client_id, id, seq, ts }`.
 *   "error"       a ParleyError the server sent that answers no call of yours.
 *   "state"       see above.
 *
 * Methods:
 *   connect()                 start (idempotent); reconnects by itself after.
 *   close()                   stop for good; pending sends are rejected.
 *   reconnectNow()            skip the current backoff delay.
 *   subscribe(room)           → Promise<{ room, head, hasOlder }> after the
 *                             first history; the subscription survives
 *                             reconnects. Rejects with ParleyError
 *                             "not_member" if you may not read the room.
 *   unsubscribe(room)
 *   send(room, body, { clientId }?) → Promise<ack>. Queued while disconnected
 *                             and re-sent after every reconnect with its
 *                             original client_id until acked, so the server
 *                             keeps it once. Errors that a retry cannot fix
 *                             (not_member, too_large, bad_request) reject.
 *                             Pass your own clientId (see newClientId()) to
 *                             match the message frame that will echo it.
 *   pendingSends(room?)       → [{ room, clientId, body }] not yet acked.
 *   loadOlder(room, limit=50) → Promise<{ messages, hasMore }>: the page
 *                             before the oldest message handed out for the
 *                             room, oldest first (for infinite scroll).
 *   hasOlder(room)            whether older messages exist, as far as known.
 *   ready(room)               whether the room's first history has been handed out.
 *   typing(room)              tell the room's other members you are typing;
 *                             throttle it yourself (every 2-3 s at most).
 *   read(room, seq)           you have seen up to seq: updates your unread
 *                             count and sends a receipt to the others.
 *                             Remembered and sent on reconnect when offline.
 *   api(method, path, body?)  → Promise<JSON> for the REST API with your
 *                             token; rejects with ParleyError (status set).
 *   listRooms(), getRoom(id), createRoom({ id, name, members }),
 *   addMember(room, user), removeMember(room, user)   REST shortcuts.
 *   user, server, rooms       from the latest hello (null before).
 *
 * Functions: dmRoom(a, b), dmPeer(room, me), newClientId(),
 *   isDevServer(url) → Promise<boolean>, devToken(url, user) → Promise<string>.
 *
 * The REST calls and the socket go to `url`; the server sends no CORS headers,
 * so a page on another origin reaches Parley through a reverse proxy that
 * serves both under one origin (WebSockets are not subject to CORS).
 */

export const VERSION = 1;

const DEFAULT_HISTORY = 50;
const PAGE_LIMIT = 100;
const CONNECT_TIMEOUT_MS = 10000;
const STABLE_AFTER_MS = 10000;
const RETRY_SEND_MS = 1000;
const MAX_BODY = 4096;
const PERMANENT_SEND_ERRORS = new Set(["not_member", "too_large", "bad_request", "unknown_type"]);

/** An error from the server (`code` from PROTOCOL.md) or from this client. */
export class ParleyError extends Error {
  constructor(code, message, status = null) {
    super(message || code);
    this.name = "ParleyError";
    this.code = code;
    this.status = status;
  }
}

/** The direct-message room of two users (byte order; user ids are ASCII). */
export function dmRoom(a, b) {
  return a < b ? `dm:${a}:${b}` : `dm:${b}:${a}`;
}

/** The other member of a DM room, or null if `room` is not a DM of `me`. */
export function dmPeer(room, me) {
  const parts = room.split(":");
  if (parts.length !== 3 || parts[0] !== "dm") return null;
  if (parts[1] === me) return parts[2];
  if (parts[2] === me) return parts[1];
  return null;
}

/** 32 random hex chars. crypto.getRandomValues, unlike randomUUID, works on plain http. */
export function newClientId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function httpBase(url) {
  return (url || globalThis.location?.origin || "").replace(/\/+$/, "");
}

function wsUrl(base) {
  return base.replace(/^http(s?):/, "ws$1:") + "/ws";
}

/**
 * Whether `url` is a development server. PROTOCOL.md serves POST
 * /api/dev/token only there: a dev server answers an empty user with 400,
 * any other with 404 (no such route). No token is issued by the probe.
 */
export async function isDevServer(url) {
  try {
    const r = await fetch(httpBase(url) + "/api/dev/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: "{}",
    });
    return r.status === 400 || r.ok;
  } catch {
    return false;
  }
}

/** A development token for `user` (dev servers only). */
export async function devToken(url, user) {
  const r = await fetch(httpBase(url) + "/api/dev/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = body.error || {};
    throw new ParleyError(e.code || "bad_request", e.message || `HTTP ${r.status}`, r.status);
  }
  return body.token;
}

function jittered(attempt, { initial, max }) {
  const d = Math.min(max, initial * 2 ** attempt);
  return Math.round(d / 2 + Math.random() * (d / 2));
}

/** Per-room bookkeeping: what was handed out, and where a resume starts. */
class RoomState {
  constructor(name) {
    this.name = name;
    this.primed = false; // got its first history: resumes use `since`
    this.lastSeq = -1; // newest seq handed out
    this.oldestSeq = null; // oldest seq handed out (for loadOlder)
    this.hasOlder = false;
    this.head = -1;
    this.joined = false; // subscribed on the current connection
    this.filling = false; // paging back after a capped resume: buffer live frames
    this.buffer = [];
    this.waiters = [];
    this.older = null; // the loadOlder call in flight
    this.unsentRead = null;
  }
}

export class ParleyClient {
  constructor(options = {}) {
    this.url = httpBase(options.url);
    this._token = options.token;
    this.device = options.device || null;
    this.backoff = { initial: 500, max: 8000, ...(options.backoff || {}) };
    this.pingInterval = options.pingInterval ?? 15000;
    this.pongTimeout = options.pongTimeout ?? 10000;
    this.state = "idle";
    this.user = null;
    this.server = null;
    this.rooms = null;
    this._handlers = new Map();
    this._rooms = new Map();
    this._pending = new Map(); // client_id → send, in the order sent
    this._requests = new Map(); // ref → {resolve, reject} on the current connection
    this._refs = 0;
    this._ws = null;
    this._conn = 0; // connection generation: callbacks of an old socket are ignored
    this._attempt = 0;
    this._timer = null;
    this._pingTimer = null;
    this._deadline = null;
    this._openedAt = 0;
    this._currentToken = null;
    this._refused = false; // the last token was refused: ask the provider for a new one
    this._onOnline = () => {
      if (this.state === "reconnecting") this.reconnectNow();
    };
  }

  // Events -----------------------------------------------------------------

  on(type, fn) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this._handlers.get(type)?.delete(fn);
  }

  _emit(type, ...args) {
    for (const fn of this._handlers.get(type) || []) {
      try {
        fn(...args);
      } catch (err) {
        // One broken handler must not stop delivery to the others, nor the client.
        console.error(`parley: a "${type}" handler failed`, err);
      }
    }
  }

  _setState(state, info = {}) {
    const previous = this.state;
    this.state = state;
    this._emit("state", { state, previous, ...info });
  }

  // Lifecycle --------------------------------------------------------------

  connect() {
    if (this.state === "closed") throw new ParleyError("closed", "this client was closed");
    if (this._ws || this._timer) return;
    globalThis.addEventListener?.("online", this._onOnline);
    this._open();
  }

  close() {
    this._clearTimer();
    globalThis.removeEventListener?.("online", this._onOnline);
    const ws = this._ws;
    this._detach();
    if (ws) ws.close(1000, "bye");
    for (const p of this._pending.values()) p.reject(new ParleyError("closed", "client closed"));
    this._pending.clear();
    for (const rs of this._rooms.values()) {
      for (const w of rs.waiters) w.reject(new ParleyError("closed", "client closed"));
      rs.waiters = [];
    }
    this._setState("closed");
  }

  reconnectNow() {
    if (this.state !== "reconnecting" || this._ws) return;
    this._clearTimer();
    this._open();
  }

  _clearTimer() {
    if (this._timer) clearTimeout(this._timer);
    this._timer = null;
  }

  async _tokenForAttempt() {
    const t = this._token;
    const token = typeof t === "function" ? await t({ refused: this._refused }) : t;
    if (typeof token !== "string" || !token) throw new ParleyError("unauthorized", "no token");
    return token;
  }

  async _open() {
    const conn = ++this._conn;
    if (this.state !== "reconnecting") this._setState("connecting");
    let token;
    try {
      token = await this._tokenForAttempt();
    } catch (err) {
      if (conn !== this._conn || this.state === "closed") return;
      if (err instanceof ParleyError && err.code === "unauthorized") {
        this._setState("unauthorized", { reason: err.message });
        return;
      }
      this._scheduleReconnect({ reason: String(err) });
      return;
    }
    if (conn !== this._conn || this.state === "closed") return;
    this._currentToken = token;
    const params = new URLSearchParams({ token });
    if (this.device) params.set("device", this.device);
    let ws;
    try {
      ws = new WebSocket(`${wsUrl(this.url)}?${params}`);
    } catch (err) {
      this._scheduleReconnect({ reason: String(err) });
      return;
    }
    this._ws = ws;
    let helloSeen = false;
    ws.onmessage = (ev) => {
      if (conn !== this._conn) return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (frame.type === "hello") helloSeen = true;
      this._deadline = null; // any frame proves the connection alive
      this._onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (conn !== this._conn) return;
      this._dropped(ev.code, ev.reason, helloSeen);
    };
    ws.onerror = () => {}; // onclose follows and carries what there is to know
    this._deadline = Date.now() + CONNECT_TIMEOUT_MS;
    this._pingTimer = setInterval(() => this._tick(conn), 1000);
  }

  _tick(conn) {
    if (conn !== this._conn || !this._ws) return;
    const now = Date.now();
    if (this._deadline !== null && now > this._deadline) {
      const ws = this._ws;
      this._dropped(4000, "no answer from the server", this.state === "open");
      ws.close();
      return;
    }
    if (this.state === "open" && this._deadline === null && now - this._lastPing >= this.pingInterval) {
      this._lastPing = now;
      this._deadline = now + this.pongTimeout;
      this._raw({ type: "ping" });
    }
  }

  _detach() {
    if (this._pingTimer) clearInterval(this._pingTimer);
    this._pingTimer = null;
    if (this._ws) {
      this._ws.onmessage = this._ws.onclose = this._ws.onerror = null;
    }
    this._ws = null;
    this._conn++;
    for (const r of this._requests.values()) r.reject(new ParleyError("disconnected", "connection lost"));
    this._requests.clear();
    for (const rs of this._rooms.values()) {
      rs.joined = false;
      rs.filling = false;
      rs.buffer = [];
      rs.older = null;
    }
    for (const p of this._pending.values()) {
      p.inFlight = false;
      if (p.retry) clearTimeout(p.retry);
      p.retry = null;
    }
  }

  async _dropped(code, reason, wasOpen) {
    const stable = wasOpen && Date.now() - this._openedAt > STABLE_AFTER_MS;
    this._detach();
    if (this.state === "closed") return;
    if (stable) this._attempt = 0;
    if (code === 4409) {
      this._setState("replaced", { code, reason });
      return;
    }
    // A refused handshake is HTTP 401, which a browser reports as a bare
    // 1006: ask the REST API whether the token is the reason.
    let refused = code === 4401;
    if (!refused && !wasOpen) refused = await this._tokenRefused();
    if (this.state === "closed" || this._ws || this._timer) return;
    if (refused) {
      if (typeof this._token !== "function" || this._refused) {
        this._setState("unauthorized", { code, reason: "the server refused the token" });
        return;
      }
      this._refused = true;
      this._setState("reconnecting", { code, reason: "token refused; getting a new one", attempt: 0, delay: 0 });
      this._open();
      return;
    }
    this._scheduleReconnect({ code, reason });
  }

  async _tokenRefused() {
    try {
      const r = await fetch(this.url + "/api/rooms", {
        headers: { Authorization: `Bearer ${this._currentToken}` },
      });
      return r.status === 401;
    } catch {
      return false; // the server is down: the token is not the question
    }
  }

  _scheduleReconnect(info) {
    const delay = jittered(this._attempt, this.backoff);
    this._attempt++;
    this._setState("reconnecting", { ...info, attempt: this._attempt, delay });
    this._timer = setTimeout(() => {
      this._timer = null;
      this._open();
    }, delay);
  }

  // Frames -----------------------------------------------------------------

  _raw(frame) {
    if (!this._ws || this._ws.readyState !== 1) return false;
    this._ws.send(JSON.stringify(frame));
    return true;
  }

  _request(frame) {
    const ref = `q${++this._refs}`;
    return new Promise((resolve, reject) => {
      if (!this._raw({ ...frame, ref })) {
        reject(new ParleyError("disconnected", "not connected"));
        return;
      }
      this._requests.set(ref, { resolve, reject, frame });
    });
  }

  _onFrame(f) {
    switch (f.type) {
      case "hello":
        return this._onHello(f);
      case "message":
        return this._onMessage(f);
      case "subscribed":
      case "history": {
        const req = f.ref && this._requests.get(f.ref);
        if (req) req.resolve(f); // subscribe collects both frames, see _join
        return;
      }
      case "ack":
        return this._onAck(f);
      case "error":
        return this._onError(f);
      case "unsubscribed":
        if (!f.ref && this._rooms.has(f.room)) {
          this._rooms.delete(f.room);
          this._emit("unsubscribed", { room: f.room, removed: true });
        }
        return;
      case "typing":
        return this._emit("typing", { room: f.room, user: f.user });
      case "receipt":
        return this._emit("receipt", { room: f.room, user: f.user, seq: f.seq });
      case "presence":
        return this._emit("presence", { user: f.user, status: f.status });
      default:
        return; // pong, and frames of later protocol versions
    }
  }

  _onHello(f) {
    this.user = f.user;
    this.server = f.server;
    this.rooms = f.rooms || [];
    this._openedAt = Date.now();
    this._lastPing = Date.now();
    this._refused = false;
    this._setState("open", { server: f.server, attempt: this._attempt });
    this._emit("hello", f);
    for (const rs of this._rooms.values()) this._join(rs);
    // Re-send what the last connection left unacked, in the order first sent:
    // same client_id, so the server keeps each message once.
    for (const p of this._pending.values()) this._transmit(p);
    for (const rs of this._rooms.values()) {
      if (rs.unsentRead !== null) this.read(rs.name, rs.unsentRead);
    }
  }

  /** Subscribe on the current connection: resume after lastSeq once primed. */
  async _join(rs) {
    const conn = this._conn;
    const since = rs.primed ? rs.lastSeq : null;
    const ref = `q${++this._refs}`;
    const frame = { type: "subscribe", room: rs.name, ref };
    if (since !== null) frame.since = since;
    rs.filling = true; // live frames wait until the history is handed out
    let subscribed, history;
    try {
      const both = new Promise((resolve, reject) => {
        const got = [];
        this._requests.set(ref, {
          frame,
          reject,
          resolve: (x) => {
            got.push(x);
            if (x.type === "history") {
              this._requests.delete(ref);
              resolve(got);
            }
          },
        });
      });
      if (!this._raw(frame)) throw new ParleyError("disconnected", "not connected");
      const frames = await both;
      subscribed = frames.find((x) => x.type === "subscribed");
      history = frames.find((x) => x.type === "history");
      let messages = history.messages;
      if (since !== null && history.has_more && messages.length) {
        // The replay cap cut the resume short: walk back to `since`.
        let before = messages[0].seq;
        for (;;) {
          const page = await this._request({ type: "history", room: rs.name, before, limit: PAGE_LIMIT });
          const fresh = page.messages.filter((m) => m.seq > since);
          messages = fresh.concat(messages);
          if (!page.has_more || !page.messages.length || page.messages[0].seq <= since) break;
          before = page.messages[0].seq;
        }
      }
      if (conn !== this._conn || this._rooms.get(rs.name) !== rs) return;
      if (!rs.primed) {
        rs.hasOlder = history.has_more;
        rs.oldestSeq = messages.length ? messages[0].seq : null;
      }
      rs.head = subscribed ? subscribed.head : rs.head;
      for (const m of messages) this._deliver(rs, { type: "message", room: rs.name, ...m }, false);
      const buffered = rs.buffer;
      rs.buffer = [];
      rs.filling = false;
      rs.joined = true;
      const resumed = rs.primed;
      rs.primed = true;
      for (const m of buffered) this._deliver(rs, m, true);
      const info = { room: rs.name, head: rs.head, hasOlder: rs.hasOlder, resumed };
      this._emit("subscribed", info);
      for (const w of rs.waiters) w.resolve(info);
      rs.waiters = [];
    } catch (err) {
      this._requests.delete(ref);
      if (conn !== this._conn || this._rooms.get(rs.name) !== rs) return;
      rs.filling = false;
      if (err instanceof ParleyError && err.code === "internal") {
        setTimeout(() => conn === this._conn && this._rooms.get(rs.name) === rs && this._join(rs), RETRY_SEND_MS);
        return;
      }
      if (err instanceof ParleyError && err.code === "disconnected") return; // resumes on reconnect
      this._rooms.delete(rs.name);
      for (const w of rs.waiters) w.reject(err);
      rs.waiters = [];
      this._emit("error", err);
    }
  }

  _onMessage(f) {
    const rs = this._rooms.get(f.room);
    if (!rs) return;
    if (rs.filling || !rs.joined) {
      rs.buffer.push(f);
      return;
    }
    this._deliver(rs, f, true);
  }

  _deliver(rs, f, live) {
    if (f.seq <= rs.lastSeq) return; // already handed out: a resume overlap or a re-read
    rs.lastSeq = f.seq;
    if (f.seq > rs.head) rs.head = f.seq;
    if (rs.oldestSeq === null) rs.oldestSeq = f.seq;
    const { type: _type, ref: _ref, ...msg } = f;
    if (msg.sender === this.user && this._pending.has(msg.client_id)) {
      // The echo proves the message durable as well as its ack would.
      this._settle(msg.client_id, { room: msg.room, client_id: msg.client_id, id: msg.id, seq: msg.seq, ts: msg.ts });
    }
    this._emit("message", msg, { live });
  }

  _onAck(f) {
    const { type: _type, ref: _ref, ...ack } = f;
    this._settle(f.client_id, ack);
  }

  _settle(clientId, ack) {
    const p = this._pending.get(clientId);
    if (!p) return;
    this._pending.delete(clientId);
    if (p.retry) clearTimeout(p.retry);
    this._emit("ack", ack);
    p.resolve(ack);
  }

  _onError(f) {
    const err = new ParleyError(f.code, f.message);
    const ref = f.ref;
    if (ref && ref.startsWith("s:")) {
      const p = this._pending.get(ref.slice(2));
      if (!p) return;
      if (PERMANENT_SEND_ERRORS.has(f.code)) {
        this._pending.delete(p.clientId);
        p.reject(err);
      } else {
        // internal or rate_limited: the same client_id again, a little later.
        p.inFlight = false;
        const conn = this._conn;
        p.retry = setTimeout(() => {
          p.retry = null;
          if (conn === this._conn) this._transmit(p);
        }, RETRY_SEND_MS + Math.random() * RETRY_SEND_MS);
      }
      return;
    }
    const req = ref && this._requests.get(ref);
    if (req) {
      this._requests.delete(ref);
      req.reject(err);
      return;
    }
    this._emit("error", err);
  }

  // Public calls -----------------------------------------------------------

  subscribe(room) {
    let rs = this._rooms.get(room);
    if (rs && rs.primed) {
      return Promise.resolve({ room, head: rs.head, hasOlder: rs.hasOlder });
    }
    const waiting = new Promise((resolve, reject) => {
      if (!rs) {
        rs = new RoomState(room);
        this._rooms.set(room, rs);
        if (this.state === "open") this._join(rs);
      }
      rs.waiters.push({ resolve, reject });
    });
    return waiting;
  }

  unsubscribe(room) {
    const rs = this._rooms.get(room);
    if (!rs) return;
    this._rooms.delete(room);
    for (const w of rs.waiters) w.reject(new ParleyError("unsubscribed", "unsubscribed"));
    this._raw({ type: "unsubscribe", room });
  }

  subscribed(room) {
    return this._rooms.has(room);
  }

  send(room, body, { clientId } = {}) {
    const text = String(body).trim();
    if (!text) return Promise.reject(new ParleyError("bad_request", "the message is empty"));
    if (text.length > MAX_BODY) {
      return Promise.reject(new ParleyError("too_large", `over ${MAX_BODY} characters`));
    }
    const id = clientId || newClientId();
    if (this._pending.has(id)) return this._pending.get(id).promise;
    let p;
    const promise = new Promise((resolve, reject) => {
      p = { room, body: text, clientId: id, resolve, reject, inFlight: false, retry: null };
    });
    p.promise = promise;
    this._pending.set(id, p);
    this._transmit(p);
    return promise;
  }

  _transmit(p) {
    if (p.inFlight || this.state !== "open") return;
    if (this._raw({ type: "send", room: p.room, client_id: p.clientId, body: p.body, ref: `s:${p.clientId}` })) {
      p.inFlight = true;
    }
  }

  pendingSends(room = null) {
    return [...this._pending.values()]
      .filter((p) => room === null || p.room === room)
      .map(({ room: r, clientId, body }) => ({ room: r, clientId, body }));
  }

  hasOlder(room) {
    return Boolean(this._rooms.get(room)?.hasOlder);
  }

  ready(room) {
    return Boolean(this._rooms.get(room)?.primed);
  }

  loadOlder(room, limit = DEFAULT_HISTORY) {
    const rs = this._rooms.get(room);
    if (!rs || !rs.primed) return Promise.reject(new ParleyError("not_subscribed", "subscribe first"));
    if (!rs.hasOlder || rs.oldestSeq === null) return Promise.resolve({ messages: [], hasMore: false });
    if (rs.older) return rs.older;
    const before = rs.oldestSeq;
    rs.older = this._request({ type: "history", room, before, limit })
      .then((page) => {
        const messages = page.messages.filter((m) => m.seq < before).map((m) => ({ ...m, room }));
        if (messages.length) rs.oldestSeq = messages[0].seq;
        rs.hasOlder = page.has_more && messages.length > 0;
        return { messages, hasMore: rs.hasOlder };
      })
      .finally(() => {
        rs.older = null;
      });
    return rs.older;
  }

  typing(room) {
    this._raw({ type: "typing", room });
  }

  read(room, seq) {
    const rs = this._rooms.get(room);
    if (this._raw({ type: "read", room, seq })) {
      if (rs) rs.unsentRead = null;
    } else if (rs) {
      rs.unsentRead = Math.max(seq, rs.unsentRead ?? -1);
    }
  }

  // REST ---------------------------------------------------------------------

  async api(method, path, body = undefined) {
    for (let attempt = 0; ; attempt++) {
      const token = this._currentToken || (await this._tokenForAttempt());
      this._currentToken = token;
      const init = { method, headers: { Authorization: `Bearer ${token}` } };
      if (body !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      const r = await fetch(this.url + path, init);
      if (r.status === 401 && attempt === 0 && typeof this._token === "function") {
        this._refused = true;
        this._currentToken = await this._tokenForAttempt();
        continue;
      }
      const text = await r.text();
      const json = text ? JSON.parse(text) : null;
      if (!r.ok) {
        const e = (json && json.error) || {};
        throw new ParleyError(e.code || "http", e.message || `HTTP ${r.status}`, r.status);
      }
      return json;
    }
  }

  listRooms() {
    return this.api("GET", "/api/rooms");
  }

  getRoom(room) {
    return this.api("GET", `/api/rooms/${encodeURIComponent(room)}`);
  }

  createRoom({ id, name, members = [] }) {
    return this.api("POST", "/api/rooms", { id, name: name || id, members });
  }

  addMember(room, user) {
    return this.api("POST", `/api/rooms/${encodeURIComponent(room)}/members`, { user });
  }

  removeMember(room, user) {
    return this.api("DELETE", `/api/rooms/${encodeURIComponent(room)}/members/${encodeURIComponent(user)}`);
  }
}
