"""History pages and resumes: a room's window in memory, joined to the store.

The window is complete from its `coverage` seq upward; the store holds
everything below (RoomLogs trims a window only below what the store has).
Both are keyed by seq, so the seam is exact: no gap, no duplicate.
"""

from __future__ import annotations

from parley.gateway.roomlog import RoomLog
from parley.protocol.messages import ChatMessage
from parley.storage.base import Store


async def page(
    store: Store, state: RoomLog, room: str, before: int | None, limit: int, keep: int = 0
) -> tuple[list[ChatMessage], bool]:
    """The `limit` newest messages with seq < before, oldest first, and has_more.

    Rows read from the store just below the window join it while the window
    stays within `keep` messages: the next page of the room (every subscribe
    asks for the newest) is then answered from memory, with no query.
    """
    window = state.before(before)
    coverage = state.coverage  # taken with the window, before any await
    if len(window) > limit:
        return window[-limit:], True
    need = limit - len(window)
    bound = coverage if before is None else min(before, coverage)
    if bound <= 0:  # the window is complete from the first seq
        return window, False
    fetched = await store.history(room, bound, need + 1)
    has_more = len(fetched) > need
    rows = fetched[max(0, len(fetched) - need) :] if need else []
    if (
        bound == coverage  # the rows end where the window begins,
        and state.coverage == coverage  # which no trim or backfill moved meanwhile
        and len(state.window) + len(fetched) <= keep
    ):
        # The store has every message of the room in [fetched[0].seq,
        # coverage), and none below at all when it had no more. With the one
        # row past the page kept too, the next page knows has_more by itself.
        state.window.extendleft(reversed(fetched))
        state.coverage = fetched[0].seq if has_more else 0
    return rows + window, has_more


async def resume(
    store: Store, state: RoomLog, room: str, since: int, cap: int
) -> tuple[list[ChatMessage], bool]:
    """Every message with seq > since, or the newest `cap` of them and has_more."""
    window = state.after(since)
    coverage = state.coverage
    stored: list[ChatMessage] = []
    if since + 1 < coverage and len(window) <= cap:
        stored = await store.range(room, since, coverage, cap + 1 - len(window))
    found = stored + window
    if len(found) > cap:
        return found[-cap:], True
    return found, False
