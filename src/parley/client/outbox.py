"""Sends that have no ack yet, in the order they were made.

A send stays here from `Client.send` until its ack (or a final error). After
every reconnect the client transmits all of them again, in order, with their
original `client_id`: the server answers a send it already accepted with the
original ack, so a retry never makes a second message.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from parley.client.events import Ack

NOT_SENT = -1  # `PendingSend.link` of a send that must be transmitted on the next link


@dataclass(eq=False, slots=True)
class PendingSend:
    room: str
    client_id: str
    body: str
    future: asyncio.Future[Ack]
    attempts: int = 0  # errors answered so far (rate_limited, internal)
    link: int = NOT_SENT  # generation of the connection it was last transmitted on
    retry: asyncio.TimerHandle | None = field(default=None, repr=False)

    def cancel_retry(self) -> None:
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None


class Outbox:
    __slots__ = ("_items",)

    def __init__(self) -> None:
        # Keyed like the server's idempotency key (room, client_id); dicts keep order.
        self._items: dict[tuple[str, str], PendingSend] = {}

    def __len__(self) -> int:
        return len(self._items)

    def get(self, room: str, client_id: str) -> PendingSend | None:
        return self._items.get((room, client_id))

    def add(self, pending: PendingSend) -> None:
        self._items[(pending.room, pending.client_id)] = pending

    def contains(self, pending: PendingSend) -> bool:
        return self._items.get((pending.room, pending.client_id)) is pending

    def to_transmit(self, link: int) -> list[PendingSend]:
        """Sends not yet transmitted on connection `link`, oldest first."""
        return [p for p in self._items.values() if p.link != link]

    def resolve(self, pending: PendingSend, ack: Ack) -> None:
        if self._items.pop((pending.room, pending.client_id), None) is not None:
            pending.cancel_retry()
            if not pending.future.done():
                pending.future.set_result(ack)

    def fail(self, pending: PendingSend, exc: BaseException) -> None:
        if self._items.pop((pending.room, pending.client_id), None) is not None:
            pending.cancel_retry()
            if not pending.future.done():
                pending.future.set_exception(exc)

    def fail_all(self, exc: BaseException) -> None:
        for pending in list(self._items.values()):
            self.fail(pending, exc)
