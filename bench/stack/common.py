"""Helpers shared by the benchmark servers, the load generator and the runner."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import struct
import sys
import time
from collections.abc import Coroutine
from typing import Any

WS_PATH = "/ws"
CONTROL_PREFIX = "bcast "
DEFAULT_BACKLOG = 1024
_FILLER = "x" * 100


def message_text(seq: int) -> str:
    """One chat message as JSON text, 200 bytes when encoded (seq < 10**8)."""
    return json.dumps(
        {
            "type": "message",
            "room": "bench",
            "id": f"{seq:08d}",
            "from": "user-000042",
            "ts": 1700000000.123,
            "text": _FILLER,
        },
        separators=(",", ":"),
    )


def control_text(messages: int, burst: int) -> str:
    """Text of the trigger frame asking the server to broadcast `messages`."""
    return f"{CONTROL_PREFIX}{messages} {burst}"


def parse_control(text: str) -> tuple[int, int] | None:
    """Parse a trigger frame: returns (messages, burst) or None."""
    if not text.startswith(CONTROL_PREFIX):
        return None
    parts = text[len(CONTROL_PREFIX) :].split()
    if len(parts) != 2:
        return None
    messages, burst = int(parts[0]), int(parts[1])
    return messages, max(1, burst)


def encode_text_frame(payload: bytes) -> bytes:
    """Encode one unmasked (server-to-client) WebSocket text frame, FIN set."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


def raise_nofile_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit (many sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run_with_loop(main: Coroutine[Any, Any, None], loop_name: str) -> None:
    """Run `main` on the stdlib asyncio loop or on uvloop."""
    if loop_name == "uvloop":
        import uvloop

        uvloop.run(main)
    elif loop_name == "asyncio":
        asyncio.run(main)
    else:
        raise ValueError(f"unknown loop {loop_name!r}")


def log_event(text: str) -> None:
    """One diagnostic line on stderr (the runner sends it to the server log)."""
    print(f"{time.monotonic():.3f} {text}", file=sys.stderr, flush=True)


def keep_task(tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None]) -> None:
    """Start a background task and keep a strong reference until it ends."""
    task = asyncio.get_running_loop().create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid: int, key: str) -> int:
    """A kB value (VmRSS, VmHWM, ...) from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def add_server_args(parser: Any) -> None:
    """Command-line options common to every server variant."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--backlog", type=int, default=DEFAULT_BACKLOG)
