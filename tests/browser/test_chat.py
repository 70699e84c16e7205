"""Two people in two browsers on two nodes: a room, a direct message, markup as text."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from playwright.async_api import expect

from tests.browser.conftest import OpenPage
from tests.conftest import ROOT
from tests.harness import Cluster

README_SHOT = ROOT / "docs" / "screenshots" / "chat.png"


async def test_two_users_on_two_nodes_chat_in_a_room_and_a_dm(
    web_cluster: Cluster, open_page: OpenPage, shots: Path
) -> None:
    n0, n1 = web_cluster.nodes
    alice = await open_page(n0, "alice")
    bob = await open_page(n1, "bob")
    await alice.sign_in_dev()
    await bob.sign_in_dev()
    await expect(alice.conn).to_contain_text("node n0")
    await expect(bob.conn).to_contain_text("node n1")

    # The room every dev sign-in joins.
    await alice.open_room("general")
    await bob.open_room("general")
    await alice.send("Hi Bob! Alice here, on node n0.")
    await expect(bob.bodies).to_have_text(["Hi Bob! Alice here, on node n0."])
    await bob.send("Hello Alice, Bob on n1. Kafka carried that across.")
    conversation = [
        "Hi Bob! Alice here, on node n0.",
        "Hello Alice, Bob on n1. Kafka carried that across.",
    ]
    for page in (alice, bob):
        await expect(page.bodies).to_have_text(conversation)
        await expect(page.messages.locator(".sender")).to_have_text(["alice", "bob"])
    assert await alice.ids() == await bob.ids(), "the same messages, with the same ids"
    first, second = await alice.seqs()

    # Read receipts: each sees that the other has read their message.
    await expect(alice.page.locator(f'li.msg[data-seq="{first}"] .receipts')).to_have_text(
        "Seen by bob"
    )
    await expect(bob.page.locator(f'li.msg[data-seq="{second}"] .receipts')).to_have_text(
        "Seen by alice"
    )
    await expect(alice.page.locator(".receipts:not(:empty)")).to_have_count(1)

    # Presence: alice's member list learns that bob joined, and that he is online.
    bob_dot = alice.page.locator('#members li[data-user="bob"] .presence')
    await expect(bob_dot).to_have_attribute("data-status", "online")

    # Typing: shown while bob types, gone when his message arrives.
    await bob.type_slowly("Typing this slowly")
    await expect(alice.page.locator("#typing")).to_have_text("bob is typing…")
    await bob.page.locator("#text").press("Enter")
    await expect(alice.bodies.last).to_have_text("Typing this slowly")
    await expect(alice.page.locator("#typing")).to_have_text("")

    # A direct message: alice starts it, bob finds it in his list with its unread count.
    dm = "dm:alice:bob"
    await alice.open_dm("bob")
    await alice.send("psst, a direct message")
    await expect(bob.unread(dm)).to_have_text("1")
    await expect(bob.room_item(dm).locator(".name")).to_have_text("@alice")
    await expect(bob.room_item(dm).locator(".presence")).to_have_attribute("data-status", "online")
    await bob.open_room(dm)
    await expect(bob.unread(dm)).to_be_hidden()
    await bob.send("Got it, only we can read this.")
    private = ["psst, a direct message", "Got it, only we can read this."]
    await expect(alice.bodies).to_have_text(private)
    await expect(bob.bodies).to_have_text(private)

    # The DM did not leak into the room.
    await alice.open_room("general")
    await expect(alice.bodies).to_have_text([*conversation, "Typing this slowly"])

    # A room alice is not looking at gets a count of its own.
    await web_cluster.api("alice").create_room("ops", ["bob"])
    await bob.open_room("ops")
    await bob.send("Deploy at five?")
    await expect(alice.unread("ops")).to_have_text("1")
    await expect(alice.unread("general")).to_be_hidden()

    # The picture for the README: bob typing in the room alice is reading.
    await bob.open_room("general")
    await bob.send("Works across nodes, reconnects by itself too.")
    await expect(alice.bodies.last).to_have_text("Works across nodes, reconnects by itself too.")
    await bob.type_slowly("See you")
    await expect(alice.page.locator("#typing")).to_have_text("bob is typing…")
    shot = await alice.shot("chat")
    await bob.shot("chat-bob")
    assert shot.stat().st_size > 10_000
    if os.environ.get("PARLEY_UPDATE_SCREENSHOTS") == "1":
        README_SHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, README_SHOT)

    alice.assert_clean()
    bob.assert_clean()


MARKUP = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(2)</script>",
    '<a href="javascript:alert(3)">click</a> & <b>bold?</b>',
]


async def test_markup_in_bodies_and_names_shows_as_text_and_runs_nothing(
    web_cluster: Cluster, open_page: OpenPage
) -> None:
    n0, n1 = web_cluster.nodes
    alice = await open_page(n0, "alice")
    bob = await open_page(n1, "bob")
    await alice.sign_in_dev()
    await bob.sign_in_dev()
    await bob.open_room("general")
    await alice.open_room("general")
    for body in MARKUP:
        await alice.send(body)
    for page in (alice, bob):
        await expect(page.bodies).to_have_text(MARKUP)

    # A room whose name is markup, created through the page.
    evil_name = "<img src=y onerror=alert(4)>"
    await alice.create_room("markup", ["bob"], name=evil_name)
    await expect(alice.room_item("markup").locator(".name")).to_have_text(evil_name)
    await expect(alice.page.locator("#room-title")).to_have_text(evil_name)
    await expect(bob.room_item("markup").locator(".name")).to_have_text(evil_name)

    for page in (alice, bob):
        created = await page.page.evaluate(
            "document.querySelectorAll('img, script:not([src]), a, b, iframe').length"
        )
        assert created == 0, f"{page.user}'s page turned text into elements"
        # The page's only script is its module; nothing else ran.
        scripts = await page.page.evaluate("[...document.scripts].map(s => s.getAttribute('src'))")
        assert scripts == ["/static/app.js"]
        page.assert_clean()  # no alert() dialog, no exception
