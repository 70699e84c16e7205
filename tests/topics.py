"""Test topics are scratch: each test deletes the ones it made.

Every node a test starts gets a fresh topic prefix, and a run starts about six
hundred of them. Left on the shared broker (`make services`), their partitions
pile up run after run until the broker needs minutes to load its logs at start
(a CI run failed that way). So a test drops its topics when it ends, and a run
sweeps those that a killed run left behind before it starts.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Callable, Iterable

from confluent_kafka.admin import AdminClient

# Names only tests make, never a topic of a developer's own: `t` (a node's topic
# prefix, conftest.new_prefix) or `contract-` (the log contract), then the time
# they were made (8 hex digits of Unix seconds) and random hex digits. The
# time lets a run sweep what killed runs left without touching the topics of
# another run going on beside it on the same broker.
TEST_TOPIC = re.compile(r"^(?:t([0-9a-f]{8})[0-9a-f]{6}\.|contract-([0-9a-f]{8})[0-9a-f]{24})")
SWEEP_AFTER_S = 3 * 3600  # no test run lasts this long


def scratch_name(kind: str, random_digits: int) -> str:
    """`kind` + the time now + random hex: the shape TEST_TOPIC knows."""
    return f"{kind}{int(time.time()):08x}{uuid.uuid4().hex[:random_digits]}"


def drop_topics(bootstrap: str, prefixes: Iterable[str]) -> int:
    """Delete the broker's topics whose names start with one of `prefixes`."""
    wanted = tuple(prefixes)
    if not wanted:
        return 0
    return _delete(bootstrap, lambda name: name.startswith(wanted))


def sweep_test_topics(bootstrap: str) -> int:
    """Delete what killed runs left: test-named topics made over SWEEP_AFTER_S ago."""
    oldest = time.time() - SWEEP_AFTER_S

    def left_behind(name: str) -> bool:
        m = TEST_TOPIC.match(name)
        return m is not None and int(m.group(1) or m.group(2), 16) < oldest

    return _delete(bootstrap, left_behind)


def _delete(bootstrap: str, doomed: Callable[[str], bool]) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if doomed(t)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):  # gone already: nothing to clean
                future.result(timeout=30)
    return len(names)
