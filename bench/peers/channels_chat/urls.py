"""No HTTP views: the peer is WebSocket only."""

from __future__ import annotations

urlpatterns: list[object] = []
