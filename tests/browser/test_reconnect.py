"""A node restarts under a user who is typing: the conversation goes on, whole and once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.conftest import OpenPage
from tests.harness import Cluster


async def room_history(cluster: Cluster, user: str, room: str) -> list[dict[str, Any]]:
    """The room as the server holds it, oldest first, walking back page by page."""
    api = cluster.api(user, node=1)
    out: list[dict[str, Any]] = []
    before = ""
    while True:
        status, page = await api.call("GET", f"/api/rooms/{room}/messages?limit=100{before}")
        assert status == 200, page
        out = page["messages"] + out
        if not page["has_more"]:
            return out
        before = f"&before={page['messages'][0]['seq']}"


@pytest.mark.timeout(240)
async def test_restart_while_typing_continues_with_no_gap_and_no_duplicate(
    web_cluster: Cluster, open_page: OpenPage
) -> None:
    n0, n1 = web_cluster.nodes
    alice = await open_page(n0, "alice")
    bob = await open_page(n1, "bob")
    await alice.sign_in_dev()
    await bob.sign_in_dev()
    await alice.open_room("general")
    await bob.open_room("general")
    for i in range(3):
        await alice.send(f"alice before {i}")
        await bob.send(f"bob before {i}")
    for page in (alice, bob):
        await expect(page.messages).to_have_count(6)

    # Alice's node stops while she is in the middle of a sentence.
    typing = asyncio.create_task(alice.type_slowly("typed while the server restarts"))
    await n0.stop()
    await expect(alice.conn).not_to_have_attribute("data-state", "open")
    await typing
    await alice.page.locator("#text").press("Enter")
    await alice.send("and one more, still offline")
    await expect(alice.local).to_have_count(2)  # shown as "sending…", kept until acked

    # Bob goes on talking on the other node: more than the replay cap (10), so
    # alice's resume gets the newest 10 with has_more and must page back.
    during = [f"bob during the restart {i}" for i in range(25)]
    for body in during:
        await bob.send(body)
    await expect(bob.local).to_have_count(0)
    await expect(bob.bodies.last).to_have_text(during[-1])

    await n0.start()
    await alice.expect_connected(timeout=60_000)
    await expect(alice.local).to_have_count(0)

    truth = await room_history(web_cluster, "bob", "general")
    bodies = [m["body"] for m in truth]
    assert bodies.count("typed while the server restarts") == 1
    assert bodies.count("and one more, still offline") == 1
    assert set(during) <= set(bodies)
    assert len(bodies) == 6 + 2 + len(during)
    for page in (alice, bob):
        # Exactly the server's history, in its order: nothing missing, nothing twice.
        await expect(page.bodies).to_have_text(bodies)
        assert await page.seqs() == [m["seq"] for m in truth]
        assert await page.ids() == [m["id"] for m in truth]

    # And the conversation simply continues.
    await bob.send("welcome back")
    await alice.send("thanks, nothing lost")
    for page in (alice, bob):
        await expect(page.bodies.last).to_have_text("thanks, nothing lost")
        await expect(page.messages).to_have_count(len(bodies) + 2)
    await alice.shot("after-restart")
    alice.assert_clean()
    bob.assert_clean()
