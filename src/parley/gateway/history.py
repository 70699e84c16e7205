"""History pages and resumes: a room's window in memory, joined to the store.

The window is complete from its `coverage` seq upward; the store holds
everything below (RoomLogs trims a window only below what the store has).
Both are keyed by seq, so the seam is exact: no gap, no duplicate.
"""

from __future__ import annotations

from parley.gateway.roomlog import RoomLog
from parley.protocol.messages import ChatMessage
from parley.storage.base import Store

# A room whose whole history is at most this many messages stays in memory
# once read (within PARLEY_ROOM_WINDOW).
SMALL_ROOM = 20


async def page(
    store: Store, state: RoomLog, room: str, before: int | None, limit: int, keep: int = 0
) -> tuple[list[ChatMessage], bool]:
    """The `limit` newest messages with seq < before, oldest first, and has_more.

    When the rows read from the store are all the room has below its window,
    and window and rows together are at most `keep` messages, they join the
    window: the room's next page (every subscribe asks for the newest) is
    answered from memory. An empty room is then asked about once; a room
    with a long history costs a query a page, as before, rather than memory
    for every room ever opened.
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
        not has_more
        and bound == coverage  # the rows end where the window begins,
        and state.coverage == coverage  # which no trim or backfill moved meanwhile
        and len(state.window) + len(rows) <= keep
    ):
        state.window.extendleft(reversed(rows))
        state.coverage = 0
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
