"""The checker itself: each violation it exists to catch is caught (no server needed).

A fault test that passes says "zero lost, duplicated, out of order, false
acks"; these tests show the checker would have said otherwise. They feed the
simulated users' recording methods the frames a server would send.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.faults.checker import Report, Row, check
from tests.faults.traffic import Topology, Traffic
from tests.faults.user import Outgoing, SimClient, body_of, client_id_of


@dataclass
class _Nowhere:
    ws_url: str = "ws://127.0.0.1:9/ws"


ROOM = "cr00"
OTHER = "cr01"


def _traffic() -> Traffic:
    """Three users (a, b, c) all in one room, c also in another; nothing connected."""
    topology = Topology((ROOM, OTHER), {"a": (ROOM,), "b": (ROOM,), "c": (ROOM, OTHER)})
    return Traffic([_Nowhere()], topology, rate=1.0)


def _client(traffic: Traffic, user: str) -> SimClient:
    return next(c for c in traffic.clients if c.user == user)


def _send(traffic: Traffic, sender: str, seq: int, *, ack: bool = True) -> Row:
    """`sender` sends a message to ROOM, acked as `seq`; the row the store would hold."""
    n = len(traffic.stats.created)
    traffic.stats.created.append(0.0)
    c = _client(traffic, sender)
    c.enqueue(Outgoing(ROOM, n))
    if ack:
        frame = {"room": ROOM, "client_id": client_id_of(n), "id": f"0-{seq}", "seq": seq}
        c.on_ack(frame, 0.01)
    return Row(ROOM, seq, f"0-{seq}", sender, client_id_of(n), body_of(sender, n, ROOM))


def _give(traffic: Traffic, user: str, row: Row, *, seq: int | None = None, body: str = "") -> None:
    """`user` gets the message of `row` (as another seq, or with another body, if given)."""
    seq = row.seq if seq is None else seq
    frame = {
        "room": ROOM,
        "id": f"0-{seq}",
        "seq": seq,
        "sender": row.sender,
        "client_id": row.client_id,
        "body": body or row.body,
    }
    _client(traffic, user).on_message(ROOM, frame, 0.02)


def _two_sent_and_given(traffic: Traffic) -> list[Row]:
    rows = [_send(traffic, "a", 3), _send(traffic, "b", 7)]
    for user in ("a", "b", "c"):
        for row in rows:
            _give(traffic, user, row)
    return rows


def _only(report: Report, name: str, value: int) -> None:
    assert getattr(report, name) == value, report.figures()
    assert name in {p.split("=")[0] for p in report.problems()}, report.problems()


def test_a_clean_run_has_no_problems() -> None:
    traffic = _traffic()
    rows = _two_sent_and_given(traffic)
    report = check(traffic, rows)
    assert report.problems() == []
    assert (report.acked, report.delivered, report.expected_deliveries) == (2, 6, 6)
    assert traffic.done()


def test_a_member_that_never_got_an_acked_message_is_lost() -> None:
    traffic = _traffic()
    rows = [_send(traffic, "a", 3), _send(traffic, "b", 7)]
    for user in ("a", "b", "c"):
        _give(traffic, user, rows[0])
    for user in ("a", "b"):
        _give(traffic, user, rows[1])
    assert not traffic.done()
    report = check(traffic, rows)
    _only(report, "lost", 1)
    assert report.lost_messages == 1
    assert "c never got b/" in report.examples["lost"][0]


@pytest.mark.parametrize("other_seq", [False, True])
def test_a_message_given_twice_is_duplicated(other_seq: bool) -> None:
    """Twice under one seq, or a retried send that reached the log twice and was not dropped."""
    traffic = _traffic()
    rows = _two_sent_and_given(traffic)
    _give(traffic, "b", rows[0], seq=9 if other_seq else None)
    report = check(traffic, rows)
    assert report.duplicated == 1, report.figures()
    assert report.lost == 0 and report.out_of_order == 0


def test_a_lower_seq_after_a_higher_one_is_out_of_order() -> None:
    traffic = _traffic()
    rows = [_send(traffic, "a", 3), _send(traffic, "b", 7)]
    for user in ("a", "b", "c"):
        for row in rows if user != "a" else rows[::-1]:
            _give(traffic, user, row)
    _only(check(traffic, rows), "out_of_order", 1)


def test_an_acked_message_with_no_row_is_a_false_ack() -> None:
    traffic = _traffic()
    rows = _two_sent_and_given(traffic)
    _only(check(traffic, rows[:1]), "missing_in_db", 1)


def test_a_row_or_delivery_that_disagrees_with_the_ack_is_caught() -> None:
    traffic = _traffic()
    rows = _two_sent_and_given(traffic)
    moved = Row(ROOM, 4, "0-4", rows[0].sender, rows[0].client_id, rows[0].body)
    _only(check(traffic, [moved, rows[1]]), "db_mismatch", 1)

    traffic = _traffic()
    rows = [_send(traffic, "a", 3)]
    for user in ("a", "b", "c"):
        _give(traffic, user, rows[0], seq=5)  # everyone got it, but not as acked
    _only(check(traffic, rows), "delivery_mismatch", 3)

    traffic = _traffic()
    rows = [_send(traffic, "a", 3)]
    for user in ("a", "b", "c"):
        _give(traffic, user, rows[0], body="another body" if user == "b" else "")
    _only(check(traffic, rows), "delivery_mismatch", 1)


def test_two_different_acks_for_one_message_are_caught() -> None:
    traffic = _traffic()
    rows = _two_sent_and_given(traffic)
    _client(traffic, "a").on_ack(
        {"type": "ack", "room": ROOM, "client_id": rows[0].client_id, "id": "0-8", "seq": 8}, 1.0
    )
    _only(check(traffic, rows), "ack_conflicts", 1)


def test_a_message_never_acked_is_reported() -> None:
    traffic = _traffic()
    rows = _two_sent_and_given(traffic)
    _send(traffic, "c", 0, ack=False)
    assert not traffic.done()
    _only(check(traffic, rows), "unacked", 1)


def test_a_message_of_another_room_or_sender_is_unexpected() -> None:
    traffic = _traffic()
    rows = _two_sent_and_given(traffic)
    frame = {"room": OTHER, "id": "1-0", "seq": 0, "sender": "x", "client_id": "zz", "body": "?"}
    _client(traffic, "a").on_message(OTHER, frame, 0.1)  # a is not in OTHER
    _client(traffic, "c").on_message(OTHER, frame, 0.1)  # nobody sent "zz"
    _only(check(traffic, rows), "unexpected", 2)
