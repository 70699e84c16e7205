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
from collections.abc import Callable, Iterable

from confluent_kafka.admin import AdminClient

# Names only tests make: `t` + 10 hex digits (conftest.new_prefix) and the log
# contract's `contract-` + 32 hex digits; never a topic of a developer's own.
TEST_TOPIC = re.compile(r"^(t[0-9a-f]{10}\.|contract-[0-9a-f]{32})")


def drop_topics(bootstrap: str, prefixes: Iterable[str]) -> int:
    """Delete the broker's topics whose names start with one of `prefixes`."""
    wanted = tuple(prefixes)
    if not wanted:
        return 0
    return _delete(bootstrap, lambda name: name.startswith(wanted))


def sweep_test_topics(bootstrap: str) -> int:
    """Delete what killed runs left: every topic named the way only tests name them."""
    return _delete(bootstrap, lambda name: TEST_TOPIC.match(name) is not None)


def _delete(bootstrap: str, doomed: Callable[[str], bool]) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if doomed(t)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(Exception):  # gone already: nothing to clean
                future.result(timeout=30)
    return len(names)
