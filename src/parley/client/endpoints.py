"""A node's two addresses, from whichever one the user gave."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

_TO_WS = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_TO_HTTP = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


@dataclass(frozen=True, slots=True)
class Endpoints:
    """`http` is the base of the REST API (`{http}/api/rooms`); `ws` the socket (`.../ws`)."""

    http: str
    ws: str

    @classmethod
    def from_url(cls, url: str) -> Endpoints:
        """`http://host:8000`, `https://chat.example/`, or `ws://host:8000/ws` all work."""
        parts = urlsplit(url.strip())
        if parts.scheme not in _TO_WS or not parts.netloc:
            raise ValueError(f"not an http(s) or ws(s) URL: {url!r}")
        path = parts.path.rstrip("/")
        if path.endswith("/ws"):
            path = path[: -len("/ws")]
        http = urlunsplit((_TO_HTTP[parts.scheme], parts.netloc, path, "", ""))
        ws = urlunsplit((_TO_WS[parts.scheme], parts.netloc, path + "/ws", "", ""))
        return cls(http, ws)
