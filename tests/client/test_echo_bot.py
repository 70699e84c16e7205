"""The example bot, run against a dev node, answers once per message."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest

from parley.client import Client, dev_token
from tests.client.support import connected
from tests.conftest import ROOT, own_cluster
from tests.harness import Cluster


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def dev_node(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with own_cluster("embedded", tmp_path, name="dev", PARLEY_DEV="1") as cluster:
        yield cluster


async def test_echo_bot_answers_each_message_once(dev_node: Cluster) -> None:
    bot_module = load_example("echo_bot")
    url = dev_node.nodes[0].url
    await dev_token(url, "echo")  # seats the bot in "general" before it connects
    bot_client = Client(url, lambda: dev_token(url, "echo"))
    bot = asyncio.create_task(bot_module.run_bot(bot_client))
    try:
        async with connected(url, "alice", token=await dev_token(url, "alice")) as (alice, events):
            await alice.subscribe("general")
            await alice.send("general", "hello bot")
            await events.wait_for(
                lambda: any(m.sender == "echo" for m in events.messages("general"))
            )
            marker = await alice.send("general", "marker")
            await events.wait_for(
                lambda: any(m.body == "echo: marker" for m in events.messages("general"))
            )
            bodies = [(m.sender, m.body) for m in events.messages("general")]
            assert bodies == [
                ("alice", "hello bot"),
                ("echo", "echo: hello bot"),
                ("alice", "marker"),
                ("echo", "echo: marker"),
            ]
            assert marker.seq < events.messages("general")[-1].seq
    finally:
        bot.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bot
