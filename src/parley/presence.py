"""Who is online, cluster-wide, from the nodes' presence events and heartbeats.

Each node announces a user's first connection and last disconnection at once,
and every few seconds sends a heartbeat listing all its connected users. Both
are keyed by node id, so one node's events stay in order. A node not heard
from within the timeout is taken as dead and its users as gone: a user whose
node dies shows offline within the timeout (15 s by default, under the 30 s
that PROTOCOL users are promised).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

Change = tuple[str, str]  # (user, "online" | "offline")


@dataclass(slots=True)
class _NodeView:
    users: set[str] = field(default_factory=set)
    last_seen: float = 0.0


class Presence:
    def __init__(self, timeout_s: float) -> None:
        self._timeout = timeout_s
        self._nodes: dict[str, _NodeView] = {}
        self._count: dict[str, int] = {}  # user -> number of nodes that hold them

    def is_online(self, user: str) -> bool:
        return self._count.get(user, 0) > 0

    def online_users(self) -> list[str]:
        return list(self._count)

    def _add(self, view: _NodeView, user: str, changes: list[Change]) -> None:
        if user in view.users:
            return
        view.users.add(user)
        n = self._count.get(user, 0) + 1
        self._count[user] = n
        if n == 1:
            changes.append((user, "online"))

    def _drop(self, view: _NodeView, user: str, changes: list[Change]) -> None:
        if user not in view.users:
            return
        view.users.discard(user)
        n = self._count.get(user, 0) - 1
        if n <= 0:
            self._count.pop(user, None)
            changes.append((user, "offline"))
        else:
            self._count[user] = n

    def on_status(self, node: str, user: str, status: str, now: float) -> list[Change]:
        view = self._nodes.setdefault(node, _NodeView())
        view.last_seen = now
        changes: list[Change] = []
        if status == "online":
            self._add(view, user, changes)
        else:
            self._drop(view, user, changes)
        return changes

    def on_heartbeat(self, node: str, users: Iterable[str], now: float) -> list[Change]:
        view = self._nodes.setdefault(node, _NodeView())
        view.last_seen = now
        listed = set(users)
        changes: list[Change] = []
        for user in list(view.users - listed):
            self._drop(view, user, changes)
        for user in listed - view.users:
            self._add(view, user, changes)
        return changes

    def expire(self, now: float) -> list[Change]:
        changes: list[Change] = []
        for node, view in list(self._nodes.items()):
            if now - view.last_seen > self._timeout:
                for user in list(view.users):
                    self._drop(view, user, changes)
                del self._nodes[node]
        return changes
