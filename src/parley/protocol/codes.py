"""Error and close codes of the protocol, as enums so that no code is a bare string."""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """The `code` of an `error` frame (and of a REST error body)."""

    BAD_REQUEST = "bad_request"
    UNKNOWN_TYPE = "unknown_type"
    NOT_MEMBER = "not_member"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    INTERNAL = "internal"
    # REST-only codes.
    UNAUTHORIZED = "unauthorized"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"


class CloseCode(enum.IntEnum):
    """WebSocket close codes; each tells the client what to do next."""

    GOING_AWAY = 1001  # server stops: reconnect (to any node) with `since`
    POLICY = 1008  # too many errors, or too slow a reader: reconnect with `since`
    TOO_LARGE = 1009  # a frame over the size limit
    UNAUTHORIZED = 4401  # get a new token before reconnecting
    REPLACED = 4409  # a newer connection of the same device took over: do not reconnect
