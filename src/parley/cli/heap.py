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
exception's traceback, a cancelled task), run as before; cyclic garbage that
reaches the oldest generation waits longer to be freed, a little memory.
"""

from __future__ import annotations

import gc

FULL_AFTER = 100  # middle-generation collections per full one (CPython's default: 10)


def settle() -> None:
    """Call once, when start-up is over: what exists now lives as long as the process."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_AFTER)
