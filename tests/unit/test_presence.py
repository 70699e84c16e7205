"""Cluster-wide presence from status events, heartbeats and expiry."""

from __future__ import annotations

from parley.presence import Presence


def test_first_online_and_last_offline_are_the_only_changes() -> None:
    p = Presence(timeout_s=15)
    assert p.on_status("n1", "alice", "online", 0) == [("alice", "online")]
    assert p.on_status("n1", "alice", "online", 1) == []  # repeated
    assert p.on_status("n2", "alice", "online", 1) == []  # a second node
    assert p.is_online("alice")
    assert p.on_status("n1", "alice", "offline", 2) == []  # still on n2
    assert p.is_online("alice")
    assert p.on_status("n2", "alice", "offline", 3) == [("alice", "offline")]
    assert not p.is_online("alice")
    assert p.on_status("n2", "alice", "offline", 4) == []  # repeated
    assert p.on_status("n3", "ghost", "offline", 4) == []  # never online
    assert p.online_users() == []


def test_a_heartbeat_replaces_the_nodes_list() -> None:
    p = Presence(timeout_s=15)
    assert sorted(p.on_heartbeat("n1", ["alice", "bob"], 0)) == [
        ("alice", "online"),
        ("bob", "online"),
    ]
    assert p.on_heartbeat("n1", ["alice", "bob"], 5) == []
    assert sorted(p.on_heartbeat("n1", ["bob", "carol"], 10)) == [
        ("alice", "offline"),
        ("carol", "online"),
    ]
    p.on_status("n2", "bob", "online", 10)
    assert p.on_heartbeat("n1", [], 12) == [("carol", "offline")]  # bob is on n2
    assert sorted(p.online_users()) == ["bob"]


def test_a_silent_node_expires_with_its_users() -> None:
    p = Presence(timeout_s=15)
    p.on_heartbeat("dead", ["alice", "bob"], 0)
    p.on_heartbeat("alive", ["bob"], 0)
    assert p.expire(15) == []  # not past the timeout yet
    p.on_heartbeat("alive", ["bob"], 14)
    assert p.expire(15.5) == [("alice", "offline")]  # bob is still on a live node
    assert p.is_online("bob") and not p.is_online("alice")
    assert p.expire(100) == [("bob", "offline")]
    assert p.online_users() == []
    # A node heard from again after expiry counts afresh.
    assert p.on_heartbeat("dead", ["alice"], 101) == [("alice", "online")]


def test_a_status_event_keeps_a_node_alive() -> None:
    p = Presence(timeout_s=10)
    p.on_status("n1", "alice", "online", 0)
    p.on_status("n1", "bob", "online", 8)
    assert p.expire(15) == []
    assert sorted(p.expire(18.5)) == [("alice", "offline"), ("bob", "offline")]
