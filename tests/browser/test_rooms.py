"""Rooms in the page: unread counts, creating a room, adding members, history."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from playwright.async_api import expect

from tests.browser.conftest import OpenPage, dev_nodes
from tests.harness import Cluster, WorkerProcess


async def test_unread_counts_follow_what_each_user_has_seen(
    web_cluster: Cluster, open_page: OpenPage
) -> None:
    n0, n1 = web_cluster.nodes
    alice = await open_page(n0, "alice")
    await alice.sign_in_dev()
    await alice.create_room("news", ["bob"], name="News")
    for i in range(3):
        await alice.send(f"news {i}")
    await expect(alice.local).to_have_count(0)

    # Bob signs in later: the server's count.
    bob = await open_page(n1, "bob")
    await bob.sign_in_dev()
    await expect(bob.unread("news")).to_have_text("3")
    await expect(bob.room_item("news").locator(".name")).to_have_text("News")
    await expect(bob.unread("general")).to_be_hidden()

    # While he reads another room, the count grows with each message of others...
    await bob.open_room("general")
    await alice.send("news 3")
    await alice.send("news 4")
    await expect(bob.unread("news")).to_have_text("5")
    # ...and his own messages never count, for him; for alice they do.
    await bob.send("hello general")
    await expect(alice.unread("general")).to_have_text("1")
    await expect(bob.unread("general")).to_be_hidden()

    # Opening the room reads it: the count goes, and alice sees the receipt.
    await bob.open_room("news")
    await expect(bob.unread("news")).to_be_hidden()
    await expect(bob.bodies).to_have_text([f"news {i}" for i in range(5)])
    last = (await bob.seqs())[-1]
    await expect(alice.page.locator(f'li.msg[data-seq="{last}"] .receipts')).to_have_text(
        "Seen by bob"
    )

    # The server keeps it: REST, and the page after a reload, say 0.
    status, rooms = await web_cluster.api("bob", node=1).call("GET", "/api/rooms")
    assert status == 200
    assert {r["id"]: r["unread"] for r in rooms}["news"] == 0
    await bob.page.reload()
    await bob.expect_connected()
    await expect(bob.page.locator("#rooms")).to_have_attribute("data-synced", "true")
    await expect(bob.room_item("news")).to_be_visible()
    await expect(bob.unread("news")).to_be_hidden()

    # A message after that counts again; reading it through the page clears it.
    await alice.send("news 5")
    await expect(bob.unread("news")).to_have_text("1")
    await bob.open_room("news")
    await expect(bob.unread("news")).to_be_hidden()
    await expect(bob.bodies.last).to_have_text("news 5")

    # Members are added from the page; the new member's count is the whole room.
    await alice.add_member("carol")
    status, rooms = await web_cluster.api("carol", node=0).call("GET", "/api/rooms")
    assert status == 200
    news = {r["id"]: r for r in rooms}["news"]
    assert sorted(news["members"]) == ["alice", "bob", "carol"]
    assert news["unread"] == 6
    alice.assert_clean()
    bob.assert_clean()


async def test_scrolling_up_pages_back_through_the_whole_history(
    web_cluster: Cluster, open_page: OpenPage
) -> None:
    n1 = web_cluster.nodes[1]
    await web_cluster.api("carol").create_room("long", ["bob"])
    carol = await web_cluster.connect("carol", node=0)
    refs = []
    for i in range(130):  # pipelined: acks are awaited once all are sent
        ref = uuid.uuid4().hex
        refs.append(ref)
        await carol.send(type="send", room="long", client_id=ref, body=f"m{i:03}", ref=ref)
    acks = [await carol.expect("ack", ref=ref) for ref in refs]

    bob = await open_page(n1, "bob", height=560)
    await bob.sign_in_dev()
    await bob.open_room("long")
    older = bob.page.locator("#older")
    await expect(bob.messages).to_have_count(50)
    await expect(older).to_have_attribute("data-state", "more")
    box = bob.page.locator("#messages")
    for _ in range(5):
        if await older.get_attribute("data-state") == "start":
            break
        shown = await bob.messages.count()
        top = await bob.messages.first.get_attribute("data-seq")
        await box.evaluate("e => { e.scrollTop = 0; }")
        await expect(bob.messages).not_to_have_count(shown)
        # The page keeps the message the reader was at in view instead of jumping.
        assert await box.evaluate("e => e.scrollTop") > 0
        await expect(bob.page.locator(f'li.msg[data-seq="{top}"]')).to_be_in_viewport()
    await expect(older).to_have_attribute("data-state", "start")
    await expect(older).to_have_text("This is the beginning of the conversation.")
    await expect(bob.bodies).to_have_text([f"m{i:03}" for i in range(130)])
    assert await bob.seqs() == [a["seq"] for a in acks]
    bob.assert_clean()


async def test_a_direct_message_read_before_the_store_has_it_stays_read(
    tmp_path: Path, services: dict[str, str], pg_url: str, open_page: OpenPage
) -> None:
    """Bob has the DM open when its first message comes, so he reads it at once.

    No persistence worker runs at first, so that `read` certainly reaches the
    server before the store has the DM's first message; the read itself makes
    the DM's rows, so it is kept, and the count stays 0 once the message is
    stored.
    """
    async with dev_nodes(tmp_path, services["kafka"], pg_url, PARLEY_WORKERS="") as cluster:
        n0, n1 = cluster.nodes
        alice = await open_page(n0, "alice")
        bob = await open_page(n1, "bob")
        await alice.sign_in_dev()
        await bob.sign_in_dev()
        await bob.open_dm("alice")
        await alice.open_dm("bob")
        await alice.send("a quick one")
        await expect(bob.bodies).to_have_text(["a quick one"])
        seq = (await bob.seqs())[0]
        await expect(alice.page.locator(f'li.msg[data-seq="{seq}"] .receipts')).to_have_text(
            "Seen by bob"
        )
        api = cluster.api("bob", node=1)
        status, rooms = await api.call("GET", "/api/rooms")
        assert status == 200
        # No worker has stored the message, yet bob's read made the DM's rows:
        # the read is kept, not dropped for want of a member row.
        dm = {r["id"]: r for r in rooms}.get("dm:alice:bob")
        assert dm is not None and dm["last_read"] == seq, rooms

        persist = WorkerProcess("persist", dict(n0.env), tmp_path / "persist.log")
        await persist.start()
        try:
            deadline = asyncio.get_running_loop().time() + 30
            while True:  # the store has no event to await: ask until it agrees, or time out
                status, rooms = await api.call("GET", "/api/rooms")
                assert status == 200, rooms
                unread = {r["id"]: r["unread"] for r in rooms}.get("dm:alice:bob")
                if unread == 0:
                    break
                assert asyncio.get_running_loop().time() < deadline, f"DM unread stays {unread}"
                await asyncio.sleep(0.2)
            await bob.page.reload()
            await bob.expect_connected()
            await expect(bob.page.locator("#rooms")).to_have_attribute("data-synced", "true")
            await expect(bob.room_item("dm:alice:bob")).to_be_visible()
            await expect(bob.unread("dm:alice:bob")).to_be_hidden()
        finally:
            await persist.stop()
        bob.assert_clean()
