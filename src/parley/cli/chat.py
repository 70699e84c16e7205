"""`parley chat`: a terminal chat on `parley.client`, with Textual.

    parley chat --url http://127.0.0.1:8000 --dev-user alice     # a dev node
    parley chat --url https://chat.example --token "$JWT"         # any node (or PARLEY_TOKEN)

Rooms with unread counts on the left, with who is online; the room's
messages with sender and time; a line to type. Commands: `/join ROOM`
(creates it when nobody has), `/dm USER`, `/invite USER`, `/history` (older
messages), `/quit`. Everything the library guarantees holds here: a dropped
connection comes back by itself (the header shows the state) and the
conversation goes on with no gap and no duplicate.

Message bodies are shown as text, never interpreted as markup.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Header, Input, Label, ListItem, ListView, RichLog, Static

from parley.client import (
    Client,
    ClientError,
    Conflict,
    Connected,
    ConnectionState,
    Event,
    NotMember,
    Presence,
    StateChanged,
    TokenProvider,
    Typing,
    Unsubscribed,
    dev_token,
)
from parley.client import Message as ChatMessage
from parley.protocol.names import dm_members, dm_room, is_group_room_id, is_user_id

DEFAULT_URL = "http://127.0.0.1:8000"
TYPING_SHOWN_S = 4.0  # how long "bob is typing" stays without a new typing frame
TYPING_SENT_EVERY_S = 3.0  # at most one typing frame per this many seconds
ROOM_POLL_S = 10.0  # rooms one was added to are found through the REST API
HISTORY_PAGE = 50
HELP = "/join ROOM · /dm USER · /invite USER · /history · /quit"


@dataclass(slots=True)
class RoomView:
    """What the screen knows of one room."""

    id: str
    name: str
    messages: list[ChatMessage] = field(default_factory=list)
    unread: int = 0
    counted_to: int = -1  # unread counts messages after this seq
    has_more: bool = False  # older messages exist before messages[0]
    typing: dict[str, float] = field(default_factory=dict)  # user -> shown until

    def label(self, me: str) -> str:
        pair = dm_members(self.id)
        title = "@" + (pair[1] if pair and pair[0] == me else pair[0]) if pair else "#" + self.name
        return f"{title}  ({self.unread})" if self.unread else title


def render_message(message: ChatMessage, me: str) -> Text:
    local = message.ts.astimezone()
    today = dt.datetime.now().astimezone().date()
    stamp = local.strftime("%H:%M" if local.date() == today else "%Y-%m-%d %H:%M")
    style = "bold green" if message.sender == me else "bold cyan"
    # Text.assemble takes the body as plain text: "[b]" or "<img>" show as typed.
    return Text.assemble((stamp, "dim"), " ", (message.sender, style), ": ", message.body)


class ChatApp(App[int]):
    """The terminal client. It owns `client`: it connects on start and closes on exit."""

    TITLE = "Parley"
    CSS = """
    #sidebar { width: 30; border-right: solid $primary; }
    #rooms { height: 1fr; }
    #online { height: auto; max-height: 40%; color: $success; }
    .heading { text-style: bold; padding: 0 1; }
    #typing { height: 1; color: $text-muted; padding: 0 1; }
    #status { height: 1; color: $warning; padding: 0 1; }
    """
    BINDINGS = [Binding("ctrl+q", "quit", "Quit")]

    def __init__(self, client: Client, room: str | None = None) -> None:
        super().__init__()
        self.client = client
        self.me = ""
        self.rooms: dict[str, RoomView] = {}
        self.order: list[str] = []  # rooms in the list, top to bottom
        self.active: str | None = None
        self.online: set[str] = set()
        self.status = ""
        self._wanted = room
        self._typing_sent = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._labels: dict[str, Label] = {}  # the rooms list's entries, in `order`
        self._mounted = False
        self._loaded = False  # rooms and unread counts known: later rooms are added as found

    # Layout -----------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal():
            with Vertical(id="sidebar"):
                yield Label("Rooms", classes="heading")
                yield ListView(id="rooms")
                yield Label("Online", classes="heading")
                yield Static(id="online")
            with Vertical():
                yield RichLog(id="messages", wrap=True, markup=False, min_width=20)
                yield Static(id="typing")
                yield Static(id="status")
                yield Input(placeholder=f"Message, or {HELP}", id="input")

    async def on_mount(self) -> None:
        self.sub_title = "connecting"
        self._mounted = True
        self.query_one("#input", Input).focus()
        self.set_interval(1.0, self._show_typing)
        self.run_worker(self._pump(), name="events", exit_on_error=False)
        self.run_worker(self._start(), name="start", exit_on_error=False)

    async def on_unmount(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.client.close()

    # Start and events ----------------------------------------------------------------

    async def _start(self) -> None:
        try:
            await self.client.connect()
        except ClientError as exc:  # Unauthorized, or a device id the server refused
            self.exit(1, return_code=1, message=f"parley chat: {exc}")
            return
        self.me = self.client.user or ""
        await self._load_rooms()
        first = self._wanted or (self.order[0] if self.order else None)
        if first is not None and first in self.rooms:
            self._switch(first)
        elif first is not None:
            await self._join(first)
        self._spawn(self._poll_rooms())

    async def _load_rooms(self) -> None:
        """Names and unread counts from the REST API, then a subscription to each room."""
        with contextlib.suppress(ClientError):
            for summary in await self.client.rest.rooms():
                view = self._room(summary.id, summary.name)
                if view.counted_to < summary.head:
                    view.unread, view.counted_to = summary.unread, summary.head
        for room in [*self.client.rooms, *self.rooms]:
            await self._subscribe(room)
        self._loaded = True
        self._refresh_rooms()

    async def _poll_rooms(self) -> None:
        while True:
            await asyncio.sleep(ROOM_POLL_S)
            known = set(self.rooms)
            with contextlib.suppress(ClientError):
                for summary in await self.client.rest.rooms():
                    if summary.id not in known:
                        self._room(summary.id, summary.name)
                        await self._subscribe(summary.id)
            self._refresh_rooms()

    async def _subscribe(self, room: str) -> bool:
        view = self._room(room)
        try:
            sub = await self.client.subscribe(room)
        except NotMember:
            self._forget(room)
            return False
        if not view.messages:
            view.has_more = sub.has_more
        return True

    async def _pump(self) -> None:
        async for event in self.client:
            self.handle_event(event)

    def handle_event(self, event: Event) -> None:
        if isinstance(event, ChatMessage):
            self._add_message(event)
        elif isinstance(event, Typing):
            view = self.rooms.get(event.room)
            if view is not None:
                view.typing[event.user] = time.monotonic() + TYPING_SHOWN_S
                self._show_typing()
        elif isinstance(event, Presence):
            (self.online.add if event.online else self.online.discard)(event.user)
            self._show_online()
        elif isinstance(event, Connected):
            self.online.clear()  # the server sends who is online after every hello
            self._show_online()
            for room in event.rooms if self._loaded else ():
                if room not in self.client.subscriptions:
                    self._spawn(self._subscribe(room))
        elif isinstance(event, StateChanged):
            self.sub_title = f"{self.client.user or '…'} · {event.state.value}"
            if event.state is ConnectionState.CLOSED:
                self._set_status("disconnected")
        elif isinstance(event, Unsubscribed):
            self._forget(event.room)
            self._set_status(f"you were removed from {event.room}")

    def _add_message(self, message: ChatMessage) -> None:
        view = self._room(message.room)
        view.messages.append(message)
        view.typing.pop(message.sender, None)
        if message.room == self.active:
            self.query_one("#messages", RichLog).write(render_message(message, self.me))
            self._show_typing()
            self.client.read(message.room, message.seq)
            view.counted_to = max(view.counted_to, message.seq)
        elif message.seq > view.counted_to:
            view.counted_to = message.seq
            if message.sender != self.me:
                view.unread += 1
                self._refresh_rooms()

    # Rooms ----------------------------------------------------------------------------

    def _room(self, room: str, name: str | None = None) -> RoomView:
        view = self.rooms.get(room)
        if view is None:
            view = self.rooms[room] = RoomView(room, name or room)
            self.order.append(room)
            self._refresh_rooms()
        elif name:
            view.name = name
        return view

    def _forget(self, room: str) -> None:
        if self.rooms.pop(room, None) is not None:
            self.order.remove(room)
        label = self._labels.pop(room, None)
        if label is not None and isinstance(label.parent, ListItem):
            label.parent.remove()
        if self.active == room:
            self.active = None
            self.query_one("#messages", RichLog).clear()
        self._refresh_rooms()

    def _refresh_rooms(self) -> None:
        if not self._mounted:
            return
        rooms = self.query_one("#rooms", ListView)
        for room in self.order:
            text = ("▸ " if room == self.active else "  ") + self.rooms[room].label(self.me)
            label = self._labels.get(room)
            if label is None:
                label = self._labels[room] = Label(text)
                rooms.append(ListItem(label))
            else:
                label.update(text)

    def room_list(self) -> list[str]:
        """The rooms list as shown, top to bottom."""
        return [str(self._labels[room].render()) for room in self.order if room in self._labels]

    def open_room(self, room: str) -> None:
        """Show a room (what selecting it in the list does)."""
        self._switch(room)

    def _switch(self, room: str) -> None:
        view = self.rooms[room]
        self.active = room
        view.unread = 0
        if view.messages:
            self.client.read(room, view.messages[-1].seq)
            view.counted_to = max(view.counted_to, view.messages[-1].seq)
        self._render_room()
        self._refresh_rooms()
        self.query_one("#input", Input).placeholder = f"Message {view.label(self.me)} · {HELP}"

    def _render_room(self) -> None:
        log = self.query_one("#messages", RichLog)
        log.clear()
        if self.active is None:
            return
        view = self.rooms[self.active]
        if view.has_more:
            log.write(Text("… older messages: /history", style="dim"))
        for message in view.messages:
            log.write(render_message(message, self.me))
        self._show_typing()

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        index = event.list_view.index
        if index is not None and 0 <= index < len(self.order):
            self._switch(self.order[index])

    # Typing and presence -----------------------------------------------------------

    def _show_typing(self) -> None:
        view = self.rooms.get(self.active) if self.active else None
        now = time.monotonic()
        users = sorted(u for u, until in view.typing.items() if until > now) if view else []
        text = ""
        if users:
            text = f"{', '.join(users)} {'is' if len(users) == 1 else 'are'} typing…"
        self.query_one("#typing", Static).update(text)

    def _show_online(self) -> None:
        self.query_one("#online", Static).update(
            Text("\n".join(f"● {u}" for u in sorted(self.online)) or "nobody else")
        )

    def _set_status(self, text: str) -> None:
        self.status = text
        self.query_one("#status", Static).update(Text(text))

    # Input ------------------------------------------------------------------------------

    def on_input_changed(self, event: Input.Changed) -> None:
        if self.active and event.value and not event.value.startswith("/"):
            now = time.monotonic()
            if now - self._typing_sent >= TYPING_SENT_EVERY_S and self.client.typing(self.active):
                self._typing_sent = now

    async def on_input_submitted(self, event: Input.Submitted) -> None:
        line = event.value.strip()
        event.input.value = ""
        if not line:
            return
        if line.startswith("/"):
            await self._command(line)
        elif self.active is None:
            self._set_status("no room: /join ROOM or /dm USER first")
        else:
            self._typing_sent = 0.0
            self._spawn(self._send(self.active, line))

    async def _send(self, room: str, body: str) -> None:
        try:
            await self.client.send(room, body)
        except ClientError as exc:
            self._set_status(f"not sent to {room}: {exc}")

    async def _command(self, line: str) -> None:
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        if name == "/quit":
            self.exit(0)
        elif name == "/join" and is_group_room_id(arg):
            await self._join(arg)
        elif name == "/dm" and is_user_id(arg) and arg != self.me:
            await self._join(dm_room(self.me, arg))
        elif name == "/invite" and is_user_id(arg) and self.active:
            await self._invite(self.active, arg)
        elif name == "/history" and self.active:
            await self._older(self.active)
        else:
            self._set_status(HELP)

    async def _join(self, room: str) -> None:
        if room not in self.rooms or room not in self.client.subscriptions:
            self._room(room)
            if not await self._subscribe(room) and dm_members(room) is None:
                # Not a member, or no such room: create it (409 means it exists, not ours).
                try:
                    await self.client.rest.create_room(room)
                except Conflict:
                    self._set_status(f"{room}: not a member (ask a member to /invite you)")
                    return
                except ClientError as exc:
                    self._set_status(f"{room}: {exc}")
                    return
                self._room(room)
                if not await self._subscribe(room):
                    return
        self._switch(room)
        self._set_status("")

    async def _invite(self, room: str, user: str) -> None:
        try:
            await self.client.rest.add_member(room, user)
            self._set_status(f"{user} was added to {room}")
        except ClientError as exc:
            self._set_status(f"cannot add {user}: {exc}")

    async def _older(self, room: str) -> None:
        view = self.rooms[room]
        before = view.messages[0].seq if view.messages else None
        try:
            page = await self.client.history(room, before=before, limit=HISTORY_PAGE)
        except ClientError as exc:
            self._set_status(f"history: {exc}")
            return
        view.messages[:0] = page.messages
        view.has_more = page.has_more
        self._set_status("" if page.has_more else f"the beginning of {room}")
        if room == self.active:
            self._render_room()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# The command line --------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `parley chat` (each with a PARLEY_* variable), for main.py's subparser."""
    parser.add_argument("--url", help=f"the node (PARLEY_URL, default {DEFAULT_URL})")
    parser.add_argument("--token", help="a JWT (PARLEY_TOKEN)")
    parser.add_argument("--dev-user", help="sign in as this user on a dev node (PARLEY_DEV_USER)")
    parser.add_argument("--room", help="the room to open first (PARLEY_ROOM)")
    parser.add_argument("--device", help="this terminal's device id (PARLEY_DEVICE)")


def token_source(url: str, token: str | None, dev_user: str | None) -> str | TokenProvider:
    """A fixed token, or (with a dev user) a provider fetching dev tokens as they expire."""
    if token:
        return token
    if dev_user:
        return lambda: dev_token(url, dev_user)
    raise ValueError("give --token (or PARLEY_TOKEN), or --dev-user for a dev node")


def run(args: argparse.Namespace) -> int:
    """Run the terminal client until /quit; the exit code."""
    env = os.environ
    url = args.url or env.get("PARLEY_URL") or DEFAULT_URL
    try:
        source = token_source(
            url, args.token or env.get("PARLEY_TOKEN"), args.dev_user or env.get("PARLEY_DEV_USER")
        )
        client = Client(url, source, device=args.device or env.get("PARLEY_DEVICE"))
    except ValueError as exc:
        print(f"parley chat: {exc}")
        return 2
    app = ChatApp(client, args.room or env.get("PARLEY_ROOM"))
    result = app.run()
    return result if isinstance(result, int) else app.return_code or 0


def run_chat(argv: Sequence[str] | None = None) -> int:
    """`parley chat` on its own: parse `argv` and run."""
    parser = argparse.ArgumentParser(prog="parley chat", description="Parley terminal chat")
    add_arguments(parser)
    return run(parser.parse_args(argv))
