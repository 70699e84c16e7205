"""The client's exceptions: one tree, and each class says whether a retry helps.

```
ClientError
├── ServerError            an `error` frame (or a REST error) answered a call
│   ├── BadRequest         bad_request, unknown_type: the call itself is wrong
│   ├── TooLarge           too_large: the body is over 4,096 chars
│   ├── NotMember          not_member (REST: not_found): no such room, or not yours
│   ├── Forbidden          REST 403: e.g. removing another member without owning the room
│   ├── Conflict           REST 409: the room id is taken
│   ├── RateLimited        rate_limited            (retriable)
│   └── Internal           internal: log or database down (retriable, same client_id)
├── ProtocolViolation      the server sent something PROTOCOL.md does not allow
├── Unauthorized           the token was refused and no new one was accepted
├── ConnectionReplaced     close 4409: another connection of the same device took over
└── ClientClosed           the client is closed (by `close()`, or after one of the above)
```

`Client.send` retries `RateLimited` and `Internal` by itself (same
`client_id`, so a retry never makes a second message) and raises them only
once its attempts are spent.
"""

from __future__ import annotations

from typing import ClassVar


class ClientError(Exception):
    """Base of every error the client raises."""

    retriable: ClassVar[bool] = False


class ServerError(ClientError):
    """The server refused a call; `code` is the protocol's error code."""

    code: str
    message: str

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class BadRequest(ServerError):
    """The frame or request is malformed: sending it again will not help."""


class TooLarge(ServerError):
    """The body is over the protocol's limit."""


class NotMember(ServerError):
    """The room does not exist or the user is not a member (one answer, so ids don't leak)."""


class Forbidden(ServerError):
    """A member may not do this (REST 403)."""


class Conflict(ServerError):
    """The thing to create exists already (REST 409)."""


class RateLimited(ServerError):
    """Sending faster than the server's rate; wait and retry."""

    retriable = True


class Internal(ServerError):
    """The server's log or database is unavailable; retry with the same client_id."""

    retriable = True


class ProtocolViolation(ClientError):
    """A server frame that breaks PROTOCOL.md (missing field, wrong type)."""


class Unauthorized(ClientError):
    """The server refused the token (HTTP 401 or close 4401), and refreshing did not help."""


class ConnectionReplaced(ClientError):
    """Closed with 4409: a newer connection with the same `device` took over; do not reconnect."""


class ClientClosed(ClientError):
    """The client is closed; pending calls fail with this (or with the reason it stopped)."""


_BY_CODE: dict[str, type[ServerError]] = {
    "bad_request": BadRequest,
    "unknown_type": BadRequest,
    "too_large": TooLarge,
    "not_member": NotMember,
    "not_found": NotMember,
    "forbidden": Forbidden,
    "conflict": Conflict,
    "rate_limited": RateLimited,
    "internal": Internal,
}


def server_error(code: str, message: str) -> ServerError:
    """The typed exception for an error code (an unknown code is a plain ServerError)."""
    return _BY_CODE.get(code, ServerError)(code, message)
