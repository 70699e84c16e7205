// The Parley web page: sign-in, rooms, direct messages and the conversation,
// on top of parley-client.js (which owns the protocol, reconnects and resumes).
//
// Every text that comes from the server or another user (bodies, names, room
// ids, errors) reaches the DOM through textContent or a dataset value, never
// through innerHTML or an HTML string: a message is shown as the text it is.

import { ParleyClient, ParleyError, devToken, dmPeer, dmRoom, isDevServer, newClientId } from "./parley-client.js";

// Rooms a user is added to, and DMs someone else started, are not pushed by
// the protocol: the page asks GET /api/rooms this often (and on reconnect).
const ROOMS_POLL_MS = 5000;
const TYPING_SEND_MS = 2500; // at most one `typing` frame per room this often
const TYPING_SHOW_MS = 5000; // how long "bob is typing…" stays without news
// Typing and messages travel on different topics, so a `typing` sent together
// with its message (a paste and Enter) can arrive after it and announce a
// message already shown: the first `typing` waits this long, and is dropped if
// the message goes first.
const TYPING_DELAY_MS = 300;
const NEAR_EDGE_PX = 80;
const AUTH_KEY = "parley.auth";
const DEVICE_KEY = "parley.device";

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** One room as the page shows it. */
class RoomView {
  constructor(id) {
    this.id = id;
    this.name = id;
    this.kind = id.startsWith("dm:") ? "dm" : "group";
    this.members = [];
    this.messages = []; // ascending seq
    this.seqs = new Set();
    this.local = new Map(); // client_id → {body, error}: my messages not yet seen back
    // Unread = what the server counted at baseHead, plus others' messages after it.
    this.baseUnread = 0;
    this.baseHead = -1;
    this.lastRead = -1;
    this.extra = new Set();
    this.readSent = -1;
    this.receipts = new Map(); // user → seq
    this.typing = new Map(); // user → expiry (ms)
    this.loadingOlder = false;
  }

  get unread() {
    return this.baseUnread + this.extra.size;
  }

  get newest() {
    return this.messages.length ? this.messages[this.messages.length - 1].seq : -1;
  }

  title(me) {
    if (this.kind === "dm") return `@${dmPeer(this.id, me) ?? this.id}`;
    return this.name;
  }
}

const app = {
  client: null,
  me: null,
  mode: null,
  rooms: new Map(),
  presence: new Map(),
  current: null,
  synced: false,
  poll: null,
  typingSent: new Map(),
  typingTimer: null,
  renderQueued: false,
};
globalThis.parleyApp = app; // for the console; the page needs nothing from it

// Sign-in ------------------------------------------------------------------------

function deviceId() {
  // One device per tab: two tabs of one user are two devices, so neither
  // replaces the other (PROTOCOL 4409).
  let id = sessionStorage.getItem(DEVICE_KEY);
  if (!id) {
    id = "web-" + newClientId().slice(0, 16);
    sessionStorage.setItem(DEVICE_KEY, id);
  }
  return id;
}

function jwtClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part));
  } catch {
    return {};
  }
}

function devProvider(user, first) {
  let token = first;
  return async ({ refused }) => {
    const exp = jwtClaims(token || "").exp || 0;
    if (!token || refused || exp * 1000 < Date.now() + 60000) token = await devToken(location.origin, user);
    sessionStorage.setItem(AUTH_KEY, JSON.stringify({ mode: "dev", user, token }));
    return token;
  };
}

async function showSignIn(error = "") {
  $("chat").hidden = true;
  $("me").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = error;
  const dev = await isDevServer(location.origin);
  $("dev-login").hidden = !dev;
  $("token-title").textContent = dev ? "…or paste a token" : "Sign in with a token";
  (dev ? $("dev-user") : $("token")).focus();
}

$("dev-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const user = $("dev-user").value.trim();
  try {
    const token = await devToken(location.origin, user);
    start({ mode: "dev", user, token });
  } catch (err) {
    $("signin-error").textContent = `Sign-in failed: ${err.message}`;
  }
});

$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = $("token").value.trim();
  const user = jwtClaims(token).sub;
  if (typeof user !== "string") {
    $("signin-error").textContent = "That is not a JWT with a subject (sub).";
    return;
  }
  start({ mode: "token", user, token });
});

$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(AUTH_KEY);
  stop();
  showSignIn();
});

function stop() {
  if (app.client) app.client.close();
  clearInterval(app.poll);
  app.client = null;
  app.rooms.clear();
  app.presence.clear();
  app.current = null;
  app.synced = false;
  $("rooms").replaceChildren();
  delete $("rooms").dataset.synced;
  $("dms").replaceChildren();
  $("message-list").replaceChildren();
  showRoom(null);
}

function start(auth) {
  stop();
  sessionStorage.setItem(AUTH_KEY, JSON.stringify(auth));
  app.mode = auth.mode;
  app.me = auth.user;
  const token = auth.mode === "dev" ? devProvider(auth.user, auth.token) : auth.token;
  const client = new ParleyClient({ url: location.origin, token, device: deviceId() });
  app.client = client;
  client.on("state", onState);
  client.on("hello", onHello);
  client.on("message", onMessage);
  client.on("subscribed", ({ room }) => {
    if (room === app.current) {
      renderOlder();
      maybeLoadOlder();
    }
  });
  client.on("unsubscribed", ({ room }) => dropRoom(room));
  client.on("typing", onTyping);
  client.on("receipt", onReceipt);
  client.on("presence", ({ user, status }) => {
    app.presence.set(user, status);
    scheduleRender();
    if (app.current) renderMembers(app.rooms.get(app.current));
  });
  client.on("error", (err) => {
    $("side-error").textContent = `${err.code}: ${err.message}`;
  });
  $("signin").hidden = true;
  $("chat").hidden = false;
  $("me").hidden = false;
  $("me-name").textContent = auth.user;
  client.connect();
  app.poll = setInterval(refreshRooms, ROOMS_POLL_MS);
}

// Connection state -----------------------------------------------------------------

function onState({ state, server, attempt }) {
  const conn = $("conn");
  conn.dataset.state = state;
  const text = {
    idle: "not connected",
    connecting: "connecting…",
    open: `connected${server ? ` (node ${server})` : ""}`,
    reconnecting: `reconnecting${attempt ? ` (attempt ${attempt})` : ""}…`,
    unauthorized: "signed out: the server refused the token",
    replaced: "opened in another tab or window",
    closed: "not connected",
  }[state];
  $("conn-text").textContent = text ?? state;
  $("reconnect").hidden = state !== "reconnecting";
  if (state === "unauthorized") {
    sessionStorage.removeItem(AUTH_KEY);
    stop();
    showSignIn("The server refused the token: sign in again.");
  }
}

$("reconnect").addEventListener("click", () => app.client?.reconnectNow());

function onHello(hello) {
  app.me = hello.user;
  $("me-name").textContent = hello.user;
  for (const id of hello.rooms) ensureRoom(id);
  refreshRooms();
}

// Rooms -------------------------------------------------------------------------

function ensureRoom(id, info = null) {
  let room = app.rooms.get(id);
  if (!room) {
    room = new RoomView(id);
    app.rooms.set(id, room);
    app.client.subscribe(id).catch((err) => {
      if (err instanceof ParleyError && err.code === "not_member") dropRoom(id);
    });
  }
  if (info) {
    room.name = info.name || room.name;
    room.kind = info.kind || room.kind;
    room.members = info.members || room.members;
  }
  scheduleRender();
  return room;
}

function dropRoom(id) {
  app.rooms.delete(id);
  if (app.current === id) showRoom(null);
  scheduleRender();
}

async function refreshRooms() {
  const client = app.client;
  if (!client || client.state !== "open") return;
  let list;
  try {
    list = await client.listRooms();
  } catch {
    return; // the next poll, or the next hello, tries again
  }
  if (client !== app.client) return;
  for (const s of list) {
    const room = ensureRoom(s.id, s);
    if (s.last_read >= room.lastRead) {
      room.lastRead = s.last_read;
      room.baseUnread = s.unread;
      room.baseHead = Math.max(s.head, room.baseHead);
      for (const seq of room.extra) if (seq <= s.head) room.extra.delete(seq);
    } else if (room.readSent > s.last_read) {
      // The server lacks a `read` we sent: in flight, or lost (a DM read before
      // the server stored the DM's first message). Keep our count, say it again.
      client.read(room.id, room.readSent);
    }
  }
  // Until this first answer, counts would include history already read.
  app.synced = true;
  $("rooms").dataset.synced = "true";
  if (app.current) {
    renderMembers(app.rooms.get(app.current));
    markRead();
  }
  scheduleRender();
}

function scheduleRender() {
  if (app.renderQueued) return;
  app.renderQueued = true;
  queueMicrotask(() => {
    app.renderQueued = false;
    renderSidebar();
  });
}

function renderSidebar() {
  const groups = [];
  const dms = [];
  for (const room of app.rooms.values()) (room.kind === "dm" ? dms : groups).push(room);
  const byTitle = (a, b) => a.title(app.me).localeCompare(b.title(app.me));
  $("rooms").replaceChildren(...groups.sort(byTitle).map(roomItem));
  $("dms").replaceChildren(...dms.sort(byTitle).map(roomItem));
}

function roomItem(room) {
  const li = el("li", "room");
  li.dataset.room = room.id;
  if (room.id === app.current) li.setAttribute("aria-current", "true");
  const button = el("button", "open");
  button.type = "button";
  if (room.kind === "dm") {
    const peer = dmPeer(room.id, app.me);
    const dot = el("span", "presence");
    dot.dataset.status = app.presence.get(peer) || "offline";
    dot.title = dot.dataset.status;
    button.append(dot);
  }
  button.append(el("span", "name", room.title(app.me)));
  const unread = el("span", "unread", String(room.unread));
  unread.hidden = room.unread === 0 || !app.synced;
  button.append(unread);
  button.addEventListener("click", () => showRoom(room.id));
  li.append(button);
  return li;
}

$("room-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const id = $("room-id").value.trim();
  const members = $("room-members").value.split(/[\s,]+/).filter(Boolean);
  try {
    const room = await app.client.createRoom({ id, name: $("room-name").value.trim() || id, members });
    ensureRoom(room.id, room);
    $("room-form").reset();
    $("side-error").textContent = "";
    showRoom(room.id);
  } catch (err) {
    $("side-error").textContent = err.code === "conflict" ? `The room ${id} exists already.` : err.message;
  }
});

$("dm-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const user = $("dm-user").value.trim();
  if (user === app.me) {
    $("side-error").textContent = "That is you.";
    return;
  }
  const id = dmRoom(app.me, user);
  ensureRoom(id, { kind: "dm", members: [app.me, user].sort() });
  $("dm-form").reset();
  $("side-error").textContent = "";
  showRoom(id);
});

$("member-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const room = app.rooms.get(app.current);
  const user = $("member-user").value.trim();
  try {
    const info = await app.client.addMember(room.id, user);
    room.members = info.members;
    $("member-form").reset();
    $("room-error").textContent = "";
    renderMembers(room);
  } catch (err) {
    $("room-error").textContent = err.message;
  }
});

// The conversation -------------------------------------------------------------------

function showRoom(id) {
  app.current = id;
  const room = id && app.rooms.get(id);
  $("empty").hidden = Boolean(room);
  $("room-view").hidden = !room;
  $("room-error").textContent = "";
  scheduleRender();
  if (!room) return;
  $("room-title").textContent = room.title(app.me);
  $("member-form").hidden = room.kind === "dm";
  renderMembers(room);
  const list = $("message-list");
  list.replaceChildren(...room.messages.map(messageItem));
  for (const [clientId, local] of room.local) list.append(localItem(clientId, local));
  renderReceipts(room);
  renderTyping(room);
  renderOlder();
  scrollToBottom();
  markRead();
  maybeLoadOlder();
  $("text").focus();
}

function renderMembers(room) {
  if (!room) return;
  const items = room.members
    .filter((m) => m !== app.me)
    .map((m) => {
      const li = el("li", "member");
      li.dataset.user = m;
      const dot = el("span", "presence");
      dot.dataset.status = app.presence.get(m) || "offline";
      dot.title = dot.dataset.status;
      li.append(dot, el("span", "name", m));
      return li;
    });
  $("members").replaceChildren(...items);
}

function formatTime(ts) {
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function messageItem(m) {
  const li = el("li", m.sender === app.me ? "msg mine" : "msg");
  li.dataset.seq = String(m.seq);
  li.dataset.id = m.id;
  li.dataset.sender = m.sender;
  const head = el("div", "meta");
  const time = el("time", "", formatTime(m.ts));
  time.dateTime = m.ts;
  head.append(el("span", "sender", m.sender), time);
  li.append(head, el("div", "body", m.body), el("div", "receipts"));
  return li;
}

function localItem(clientId, local) {
  const li = el("li", local.error ? "msg mine local failed" : "msg mine local");
  li.dataset.clientId = clientId;
  const head = el("div", "meta");
  head.append(el("span", "sender", app.me), el("span", "pending", local.error ? `not sent: ${local.error}` : "sending…"));
  li.append(head, el("div", "body", local.body));
  return li;
}

function atBottom() {
  const box = $("messages");
  return box.scrollHeight - box.scrollTop - box.clientHeight < NEAR_EDGE_PX;
}

function scrollToBottom() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
}

function onMessage(msg) {
  const room = app.rooms.get(msg.room) || ensureRoom(msg.room);
  if (room.seqs.has(msg.seq)) return; // the client hands each seq out once; this is a second lock
  room.seqs.add(msg.seq);
  // The client gives the forward stream in seq order; loadOlder's pages go in front.
  room.messages.push(msg);
  if (msg.sender !== app.me && msg.seq > Math.max(room.baseHead, room.lastRead)) room.extra.add(msg.seq);
  room.typing.delete(msg.sender);
  const mineLocal = msg.sender === app.me && room.local.delete(msg.client_id);
  scheduleRender();
  if (msg.room !== app.current) return;
  const stick = atBottom() || mineLocal;
  const list = $("message-list");
  if (mineLocal) list.querySelector(`li.local[data-client-id="${CSS.escape(msg.client_id)}"]`)?.remove();
  const firstLocal = list.querySelector("li.local");
  list.insertBefore(messageItem(msg), firstLocal);
  renderReceipts(room);
  renderTyping(room);
  if (stick) scrollToBottom();
  markRead();
}

/** Tell the server what the user has seen: the room is open, the page visible, the end in view. */
function markRead() {
  const room = app.current && app.rooms.get(app.current);
  if (!room || document.visibilityState !== "visible" || !atBottom()) return;
  const newest = room.newest;
  if (newest < 0) return;
  if (newest > room.readSent) {
    room.readSent = newest;
    app.client.read(room.id, newest);
  }
  room.lastRead = Math.max(room.lastRead, newest);
  room.baseHead = Math.max(room.baseHead, newest);
  if (room.unread) {
    room.baseUnread = 0;
    room.extra.clear();
    scheduleRender();
  }
}

document.addEventListener("visibilitychange", markRead);

$("messages").addEventListener("scroll", () => {
  maybeLoadOlder();
  markRead();
});

function renderOlder() {
  const room = app.current && app.rooms.get(app.current);
  if (!room) return;
  const older = $("older");
  const more = app.client.hasOlder(room.id);
  const loading = room.loadingOlder || !app.client.ready(room.id);
  older.dataset.state = loading ? "loading" : more ? "more" : "start";
  older.textContent = loading
    ? "Loading messages…"
    : more
      ? "Scroll up for older messages"
      : "This is the beginning of the conversation.";
}

function maybeLoadOlder() {
  if ($("messages").scrollTop < NEAR_EDGE_PX) loadOlder();
}

async function loadOlder() {
  const room = app.current && app.rooms.get(app.current);
  if (!room || room.loadingOlder || !app.client.hasOlder(room.id)) return;
  room.loadingOlder = true;
  renderOlder();
  let ok = false;
  try {
    const { messages } = await app.client.loadOlder(room.id);
    const fresh = messages.filter((m) => !room.seqs.has(m.seq));
    for (const m of fresh) room.seqs.add(m.seq);
    room.messages = fresh.concat(room.messages);
    if (app.current === room.id && fresh.length) {
      const box = $("messages");
      const fromBottom = box.scrollHeight - box.scrollTop;
      $("message-list").prepend(...fresh.map(messageItem));
      box.scrollTop = box.scrollHeight - fromBottom; // keep what the user was reading in place
      renderReceipts(room);
    }
    ok = true;
  } catch {
    // Disconnected: the next scroll, or the resumed subscription, tries again.
  } finally {
    room.loadingOlder = false;
    renderOlder();
  }
  if (ok && app.current === room.id) maybeLoadOlder();
}

// Typing, receipts -----------------------------------------------------------------

$("text").addEventListener("input", () => {
  const room = app.current;
  if (!room || app.typingTimer || !$("text").value.trim()) return;
  if (Date.now() - (app.typingSent.get(room) || 0) < TYPING_SEND_MS) return;
  app.typingTimer = setTimeout(() => {
    app.typingTimer = null;
    if (app.current !== room || !$("text").value.trim()) return;
    app.typingSent.set(room, Date.now());
    app.client.typing(room);
  }, TYPING_DELAY_MS);
});

$("composer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const room = app.current && app.rooms.get(app.current);
  const body = $("text").value.trim();
  if (!room || !body) return;
  $("text").value = "";
  clearTimeout(app.typingTimer);
  app.typingTimer = null;
  app.typingSent.delete(room.id);
  const clientId = newClientId();
  const local = { body, error: null };
  room.local.set(clientId, local);
  $("message-list").append(localItem(clientId, local));
  scrollToBottom();
  app.client.send(room.id, body, { clientId }).catch((err) => {
    // Only errors a retry cannot fix get here; the rest are retried by the client.
    if (!room.local.has(clientId)) return;
    local.error = err.message;
    const li = $("message-list").querySelector(`li.local[data-client-id="${CSS.escape(clientId)}"]`);
    li?.replaceWith(localItem(clientId, local));
  });
});

function onTyping({ room: id, user }) {
  const room = app.rooms.get(id);
  if (!room || user === app.me) return;
  room.typing.set(user, Date.now() + TYPING_SHOW_MS);
  setTimeout(() => app.current === id && renderTyping(room), TYPING_SHOW_MS + 50);
  if (app.current === id) renderTyping(room);
}

function renderTyping(room) {
  const now = Date.now();
  for (const [user, until] of room.typing) if (until <= now) room.typing.delete(user);
  const users = [...room.typing.keys()].sort();
  const typing = $("typing");
  typing.dataset.users = users.join(",");
  typing.textContent =
    users.length === 0 ? "" : users.length === 1 ? `${users[0]} is typing…` : `${users.join(", ")} are typing…`;
}

function onReceipt({ room: id, user, seq }) {
  const room = app.rooms.get(id);
  if (!room || user === app.me) return;
  room.receipts.set(user, Math.max(seq, room.receipts.get(user) ?? -1));
  if (app.current === id) renderReceipts(room);
}

/**
 * "Seen by bob" under the newest message bob has seen, not counting his own:
 * that he read his own words tells nobody anything.
 */
function renderReceipts(room) {
  const list = $("message-list");
  for (const node of list.querySelectorAll(".receipts")) {
    node.textContent = "";
    delete node.dataset.users;
  }
  const at = new Map();
  for (const [user, seq] of room.receipts) {
    let target = null;
    for (const m of room.messages) {
      if (m.seq > seq) break;
      if (m.sender !== user) target = m.seq;
    }
    if (target === null) continue;
    if (!at.has(target)) at.set(target, []);
    at.get(target).push(user);
  }
  for (const [seq, users] of at) {
    const node = list.querySelector(`li.msg[data-seq="${seq}"] .receipts`);
    if (!node) continue;
    users.sort();
    node.dataset.users = users.join(",");
    node.textContent = `Seen by ${users.join(", ")}`;
  }
}

// Start -------------------------------------------------------------------------

const saved = JSON.parse(sessionStorage.getItem(AUTH_KEY) || "null");
if (saved && saved.user) start(saved);
else showSignIn();
