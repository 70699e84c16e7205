"""The core path on every backend: connect, subscribe, send, ack, receive."""

from __future__ import annotations

from tests.harness import Cluster


async def test_hello_lists_rooms_and_node(cluster: Cluster) -> None:
    await cluster.api("alice").create_room("general", ["bob"])
    alice = await cluster.connect("alice")
    hello = alice.frames[0]
    assert hello["type"] == "hello"
    assert hello["rooms"] == ["general"]
    assert hello["server"] == "n0"
    assert hello["session"]


async def test_send_is_acked_and_delivered_to_every_member(cluster: Cluster) -> None:
    await cluster.api("alice").create_room("general", ["bob"])
    alice = await cluster.connect("alice")
    bob = await cluster.connect("bob")
    sub, hist = await bob.subscribe("general")
    assert sub["head"] == -1
    assert hist["messages"] == [] and hist["has_more"] is False
    await alice.subscribe("general")
    ack = await alice.send_message("general", "  hello bob  ", client_id="c1")
    assert ack["room"] == "general" and ack["client_id"] == "c1"
    assert isinstance(ack["seq"], int) and ack["seq"] >= 0
    got = await bob.expect("message", room="general")
    assert got["body"] == "hello bob"
    assert got["sender"] == "alice"
    assert got["id"] == ack["id"] and got["seq"] == ack["seq"] and got["ts"] == ack["ts"]
    mine = await alice.expect("message", room="general")
    assert mine["id"] == ack["id"]


async def test_metrics_count_the_path_of_a_message(cluster: Cluster) -> None:
    await cluster.api("alice").create_room("counted", ["bob"])
    alice = await cluster.connect("alice")
    await alice.subscribe("counted")
    await alice.send_message("counted", "one")
    await alice.expect("message", room="counted")
    _, text = await cluster.api("alice").call("GET", "/metrics")
    values = dict(
        line.split(" ", 1) for line in str(text).splitlines() if line and not line.startswith("#")
    )
    assert float(values["parley_messages_sent_total"]) == 1
    assert float(values["parley_messages_read_total"]) == 1
    assert float(values["parley_frames_delivered_total"]) == 1
    assert float(values["parley_sessions"]) == 1
    assert 0 <= float(values["parley_event_loop_lag_seconds"]) < 1
