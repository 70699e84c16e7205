"""The client's pure parts, with literal values: cursor, backoff, endpoints, frame parsing."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from parley.client import Backoff, Endpoints, Message, ProtocolViolation
from parley.client.errors import Internal, NotMember, ServerError, server_error
from parley.client.events import Subscription, parse_ack, parse_history, parse_presence
from parley.client.rooms import RoomCursor

TS = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def msg(seq: int, room: str = "r") -> Message:
    return Message(room, f"0-{seq}", seq, "alice", f"m{seq}", TS, f"c{seq}")


def cursor(since: int | None = None) -> RoomCursor:
    loop = asyncio.new_event_loop()
    try:
        ready: asyncio.Future[Subscription] = loop.create_future()
    finally:
        loop.close()
    return RoomCursor("r", since, ready)


def seqs(messages: list[Message]) -> list[int]:
    return [m.seq for m in messages]


def test_cursor_holds_live_messages_until_the_join_is_complete() -> None:
    c = cursor()
    assert c.start_join() is None
    assert c.offer(msg(9)) == []  # live, arriving while the history is on its way
    assert seqs(c.finish_join([msg(3), msg(7), msg(9)])) == [3, 7, 9]  # 9 once
    assert c.last_seq == 9
    assert seqs(c.offer(msg(12))) == [12]
    assert c.offer(msg(12)) == [] and c.offer(msg(5)) == []


def test_cursor_resumes_after_what_it_delivered() -> None:
    c = cursor(since=4)
    assert c.start_join() == 4
    assert seqs(c.finish_join([msg(2), msg(4), msg(6)])) == [6]
    c.start_join()
    c.offer(msg(8))
    c.abort_join()  # the connection dropped: what was held comes again after `since`
    assert c.start_join() == 6
    assert seqs(c.finish_join([msg(8), msg(10)])) == [8, 10]


def test_empty_room_resumes_from_the_beginning() -> None:
    c = cursor()
    c.start_join()
    assert c.finish_join([]) == []
    assert c.start_join() == -1


def test_backoff_is_jittered_and_capped() -> None:
    b = Backoff(initial=1.0, maximum=8.0)
    assert b.delay(0, rand=lambda: 0.0) == 0.5
    assert b.delay(0, rand=lambda: 1.0) == 1.0
    assert b.delay(2, rand=lambda: 1.0) == 4.0
    assert b.delay(50, rand=lambda: 0.0) == 4.0 and b.delay(50, rand=lambda: 1.0) == 8.0
    with pytest.raises(ValueError):
        Backoff(initial=0)


@pytest.mark.parametrize(
    ("url", "http", "ws"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000", "ws://127.0.0.1:8000/ws"),
        ("https://chat.example/", "https://chat.example", "wss://chat.example/ws"),
        ("ws://h:1/ws", "http://h:1", "ws://h:1/ws"),
        ("https://x/parley/ws", "https://x/parley", "wss://x/parley/ws"),
    ],
)
def test_endpoints_from_either_address(url: str, http: str, ws: str) -> None:
    assert Endpoints.from_url(url) == Endpoints(http, ws)


def test_endpoints_refuse_other_schemes() -> None:
    with pytest.raises(ValueError):
        Endpoints.from_url("ftp://host")


def test_frames_parse_to_typed_values() -> None:
    page = parse_history(
        {
            "type": "history",
            "room": "r",
            "has_more": False,
            "messages": [
                {
                    "id": "1-5",
                    "seq": 5,
                    "sender": "bob",
                    "body": "<b>hi</b>",
                    "ts": "2026-01-02T03:04:05.000Z",
                    "client_id": "x",
                    "room": "r",
                }
            ],
        }
    )
    assert page.messages[0].ts == TS and page.messages[0].body == "<b>hi</b>"
    ack = parse_ack(
        {"room": "r", "client_id": "x", "id": "1-5", "seq": 5, "ts": "2026-01-02T03:04:05Z"}
    )
    assert ack.seq == 5 and ack.ts == TS
    assert parse_presence({"user": "bob", "status": "online"}).online
    with pytest.raises(ProtocolViolation):
        parse_presence({"user": "bob", "status": "away"})
    with pytest.raises(ProtocolViolation):
        parse_ack(
            {"room": "r", "client_id": "x", "id": "1", "seq": True, "ts": "2026-01-02T03:04:05Z"}
        )
    with pytest.raises(ProtocolViolation):
        parse_ack({"room": "r", "client_id": "x", "id": "1", "seq": 1, "ts": "yesterday"})


def test_error_codes_map_to_exceptions_that_say_whether_to_retry() -> None:
    assert isinstance(server_error("not_member", "no"), NotMember)
    assert isinstance(server_error("internal", "down"), Internal)
    assert server_error("internal", "down").retriable
    assert not server_error("not_member", "no").retriable
    unknown = server_error("brand_new", "?")
    assert type(unknown) is ServerError and unknown.code == "brand_new"
