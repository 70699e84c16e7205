"""The collector's settings for a long-running gateway.

CPython's full (oldest-generation) collection walks every tracked object and
stops the event loop while it does. A gateway holds ~130,000 objects from its
imports and start-up, which never become garbage, and tens of thousands of
messages in its rooms' windows, which live until the window moves on and are
freed by reference counting, not by the collector. Under fan-out load (tens of
thousands of deliveries a second) a full collection came every one or two
seconds, took 80-280 ms and freed nothing: it was the fan-out's p99 from
20,000 deliveries/s up (docs/benchmarks.md, bench/analysis.md).

So, once started: the start-up heap is frozen out of the collector's reach,
and a full collection waits for 100 collections of the middle generation
instead of 10. Young collections, which find the short-lived cycles (an
exception's traceback, a cancelled task), still run; cyclic garbage that
reaches the oldest generation waits longer to be freed, a little memory.

A young collection comes after 5,000 new objects instead of 700: in a connect
storm each handshake's objects (aiohttp's request, its parser's state, the
upgrade's futures) live for a few loop turns, and with the default most of
them were still alive when a collection walked them, and so walked again in
the middle generation. With more room they are freed by reference counting
first: 4.5 % less gateway CPU per connection (bench/analysis.md).
"""

from __future__ import annotations

import gc

FULL_AFTER = 100  # middle-generation collections per full one (CPython's default: 10)
YOUNG_AFTER = 5_000  # new objects per young collection (CPython's default: 700)


def settle() -> None:
    """Call once, when start-up is over: what exists now lives as long as the process."""
    gc.collect()
    gc.freeze()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNG_AFTER, middle, FULL_AFTER)
