"""`parley chat` driven headless with Textual's pilot against a real dev node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, RichLog, Static

from parley.cli.chat import ChatApp, run_chat, token_source
from parley.client import Client, ConnectionState, StateChanged, dev_token
from tests.client.support import FAST, connected
from tests.conftest import own_cluster
from tests.harness import Cluster


@pytest.fixture
async def dev_node(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with own_cluster("embedded", tmp_path, name="dev", PARLEY_DEV="1") as cluster:
        yield cluster


async def until(pilot: Pilot[int], predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the screen did not get there in time")
        await pilot.pause(0.05)


async def submit(pilot: Pilot[int], line: str) -> None:
    pilot.app.query_one("#input", Input).value = line
    await pilot.press("enter")


def screen_text(app: ChatApp) -> str:
    return "\n".join(strip.text for strip in app.query_one("#messages", RichLog).lines)


async def test_chat_joins_sends_and_shows_what_others_do(dev_node: Cluster) -> None:
    url = dev_node.nodes[0].url
    bob_token = await dev_token(url, "bob")  # bob is seated in "general" too
    async with connected(url, "bob", token=bob_token) as (bob, _):
        for i in range(60):
            await bob.send("general", f"g{i}")
        app = ChatApp(Client(url, lambda: dev_token(url, "alice"), backoff=FAST))
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: app.active == "general")
            await until(pilot, lambda: len(app.rooms["general"].messages) == 50)
            lines = screen_text(app).splitlines()
            assert lines[-1].endswith("bob: g59")
            assert not any(line.endswith("bob: g9") for line in lines)
            await until(pilot, lambda: "bob" in app.online)

            # Older messages, on demand.
            await submit(pilot, "/history")
            await until(pilot, lambda: len(app.rooms["general"].messages) == 60)
            assert [m.body for m in app.rooms["general"].messages] == [f"g{i}" for i in range(60)]
            assert "bob: g0" in screen_text(app)

            # A new room, created by joining it; a message typed key by key.
            await submit(pilot, "/join plans")
            await until(pilot, lambda: app.active == "plans")
            await pilot.press(*"hi <b>there</b>", "enter")
            await until(pilot, lambda: "alice: hi <b>there</b>" in screen_text(app))

            # Another user: invited, typing, then writing.
            await submit(pilot, "/invite bob")
            await until(pilot, lambda: "bob was added" in app.status)
            await bob.subscribe("plans")
            assert bob.typing("plans")
            typing = app.query_one("#typing", Static)
            await until(pilot, lambda: "bob is typing" in str(typing.render()))
            await bob.send("plans", "hello alice")
            await until(pilot, lambda: "bob: hello alice" in screen_text(app))
            assert "bob is typing" not in str(typing.render())

            # Unread counts for the room not on screen, cleared by opening it.
            await bob.send("general", "are you there?")
            await until(pilot, lambda: app.rooms["general"].unread == 1)
            assert "  #General  (1)" in app.room_list()
            await submit(pilot, "/dm bob")
            await until(pilot, lambda: app.active == "dm:alice:bob")
            await pilot.press(*"psst", "enter")
            await until(pilot, lambda: "alice: psst" in screen_text(app))
            app.open_room("general")
            assert "▸ #General" in app.room_list()
            assert app.rooms["general"].unread == 0
            assert "bob: are you there?" in screen_text(app)

            await submit(pilot, "/quit")
            await until(pilot, lambda: not app.is_running)
        assert app.return_code == 0
        assert app.client.state.value == "closed"
        dm = await bob.history("dm:alice:bob")
        assert [(m.sender, m.body) for m in dm.messages] == [("alice", "psst")]


async def test_chat_keeps_the_conversation_across_a_restart(dev_node: Cluster) -> None:
    server = dev_node.nodes[0]
    url = server.url
    bob_token = await dev_token(url, "bob")
    client = Client(url, lambda: dev_token(url, "alice"), backoff=FAST)
    states: list[ConnectionState] = []
    client.on(StateChanged, lambda e: states.append(e.state))
    app = ChatApp(client, room="general")
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.active == "general")
        await submit(pilot, "before")
        await until(pilot, lambda: "alice: before" in screen_text(app))
        await server.restart()
        await until(pilot, lambda: ConnectionState.RECONNECTING in states, timeout=30)
        await until(pilot, lambda: app.sub_title == "alice · connected", timeout=30)
        async with connected(url, "bob", token=bob_token) as (bob, _):
            await bob.send("general", "after")
        await submit(pilot, "again")
        await until(pilot, lambda: "alice: again" in screen_text(app), timeout=30)
        bodies = [m.body for m in app.rooms["general"].messages]
        assert bodies == ["before", "after", "again"]
        await submit(pilot, "/quit")


def test_chat_needs_a_token_or_a_dev_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARLEY_TOKEN", raising=False)
    monkeypatch.delenv("PARLEY_DEV_USER", raising=False)
    assert run_chat(["--url", "http://127.0.0.1:9"]) == 2
    assert token_source("http://x", "jwt", None) == "jwt"
    assert callable(token_source("http://x", None, "alice"))


async def test_chat_exits_when_the_token_is_refused(dev_node: Cluster) -> None:
    app = ChatApp(Client(dev_node.nodes[0].url, "not-a-token"))
    async with app.run_test() as pilot:
        await until(pilot, lambda: not app.is_running)
    assert app.return_code == 1
    await asyncio.sleep(0)
