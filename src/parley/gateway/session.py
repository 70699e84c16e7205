"""One client connection's state: who it is, what it subscribed, what it was given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from parley.gateway.writer import SessionWriter
from parley.protocol.messages import ChatMessage


@dataclass(slots=True)
class Subscription:
    """A session's view of one room.

    `last_seq` is the highest seq this session was given: anything at or below
    it is a redelivery and is dropped, which makes every re-read harmless.
    While `joining`, live messages wait in `buffer` until the history reply
    has gone out (the subscribe race: no gap, no duplicate).
    """

    last_seq: int = -1
    joining: bool = True
    # A removal read from the log waits for the store's word (it may be older
    # than a re-add); meanwhile live messages wait in `buffer` too.
    held: bool = False
    buffer: list[ChatMessage] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class Session:
    id: str
    user: str
    device: str | None
    writer: SessionWriter
    close: Callable[[int, str], None]  # asks the connection to close with a code
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    # Where this session's device claim landed in the log (-1: it did not);
    # a claim for the same device at a later offset replaces the session
    # (Node._on_device_claim). None while the claim is on its way.
    claim_offset: int | None = None
    closing: bool = False

    def __hash__(self) -> int:
        return id(self)
