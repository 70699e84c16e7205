"""The exception tree of the protocol layer.

ProtocolError
    FrameError      the client sent something the server cannot accept; it is
                    answered with an `error` frame and the connection stays open.

The `code` says which `error` frame answers it, `ref` echoes the client's ref
when the frame got far enough to have one.
"""

from __future__ import annotations

from parley.protocol.codes import ErrorCode


class ProtocolError(Exception):
    """Base of every error the protocol layer raises."""


class FrameError(ProtocolError):
    """A client frame that is answered with an `error` frame."""

    def __init__(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
