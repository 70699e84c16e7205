"""The runner's side of the load generator: worker processes and their figures."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.procs import cpu_seconds, prioritise

ROOT = Path(__file__).resolve().parent.parent
SCALE = 50.0  # as loadgen.py: bucket = int(ln(µs + 1) * SCALE)
FASTREAD = ROOT / "bench" / "fastread.c"

logger = logging.getLogger("bench")


def build_fastread(cache: Path) -> Path | None:
    """bench/fastread.c as a shared library in the cache, built once per source.

    None when BENCH_READER=uvloop asks for the Python receive path, or when
    there is no C compiler: the workers then read through uvloop, and the
    results say which path ran (the figures of the two are not comparable).
    A compiler that fails on it is an error, not a reason to measure otherwise.
    """
    if os.environ.get("BENCH_READER", "fastread") == "uvloop":
        return None
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        logger.warning("no C compiler: the load generator reads through uvloop")
        return None
    source = FASTREAD.read_bytes()
    out = cache / "fastread" / f"fastread-{hashlib.sha256(source).hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run(
        [
            cc,
            "-O2",
            "-Wall",
            "-Wextra",
            "-shared",
            "-fPIC",
            "-pthread",
            "-o",
            str(tmp),
            str(FASTREAD),
        ],
        check=True,
    )
    tmp.replace(out)  # atomic: a concurrent run loads either this one or its own
    return out


class LoadWorker:
    """One loadgen.py process, driven by JSON lines."""

    def __init__(self, python: Path, dialect: str, wid: int, secret: str, log: Path) -> None:
        self.python = python
        self.dialect = dialect
        self.wid = wid
        self.secret = secret
        self.log = log
        self.bind = f"127.0.0.{10 + wid}"  # its own source address: its own 28k ports
        self.proc: asyncio.subprocess.Process | None = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None
        self._err: Any = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        self._err = self.log.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            str(self.python),
            str(ROOT / "bench" / "loadgen.py"),
            self.dialect,
            self.bind,
            str(self.wid),
            env={**os.environ, "BENCH_JWT_SECRET": self.secret},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._err,
            limit=1 << 28,
            start_new_session=True,
        )
        prioritise(self.proc.pid)
        self._pump = asyncio.create_task(self._read())
        await self.expect("hello", 60)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            await self.events.put(json.loads(line))
        await self.events.put({"ev": "exit"})

    def send(self, **cmd: Any) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")

    async def expect(self, ev: str, wait_s: float) -> dict[str, Any]:
        while True:
            msg = await asyncio.wait_for(self.events.get(), wait_s)
            if msg["ev"] == ev:
                return msg
            if msg["ev"] == "exit":
                raise RuntimeError(f"load worker {self.wid} exited (see {self.log})")

    async def request(self, ev: str, wait_s: float = 120.0, **cmd: Any) -> dict[str, Any]:
        self.send(**cmd)
        return await self.expect(ev, wait_s)

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            try:
                self.send(cmd="quit")
                await asyncio.wait_for(self.proc.wait(), 10)
            except (TimeoutError, ConnectionError, BrokenPipeError):
                self.proc.kill()
                await self.proc.wait()
        if self._pump is not None:
            self._pump.cancel()
        if self._err is not None:
            self._err.close()


class Fleet:
    """Every worker of one scenario."""

    def __init__(self, workers: list[LoadWorker]) -> None:
        self.workers = workers

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    async def start(self) -> None:
        await asyncio.gather(*(w.start() for w in self.workers))

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers))

    async def all(self, ev: str, wait_s: float = 120.0, **cmd: Any) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(w.request(ev, wait_s, **cmd) for w in self.workers)))

    async def each(
        self, ev: str, cmds: Sequence[dict[str, Any]], wait_s: float = 600.0
    ) -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(
                *(w.request(ev, wait_s, **c) for w, c in zip(self.workers, cmds, strict=True))
            )
        )

    def cpu(self) -> float:
        return cpu_seconds({"g": self.pids})["g"]


def merge_hists(hists: Sequence[dict[str, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for h in hists:
        for b, c in h.items():
            out[int(b)] = out.get(int(b), 0) + c
    return out


def bucket_ms(b: int) -> float:
    return (math.exp((b + 0.5) / SCALE) - 1) / 1000.0


def percentiles(hist: dict[int, int], ps: Sequence[float]) -> list[float | None]:
    total = sum(hist.values())
    if total == 0:
        return [None for _ in ps]
    out: list[float | None] = []
    items = sorted(hist.items())
    for p in ps:
        rank = math.ceil(total * p / 100.0)
        seen = 0
        for b, c in items:
            seen += c
            if seen >= rank:
                out.append(round(bucket_ms(b), 3))
                break
    return out


def exact_percentiles(values: Sequence[float], ps: Sequence[float]) -> list[float | None]:
    if not values:
        return [None for _ in ps]
    s = sorted(values)
    return [s[min(len(s) - 1, max(0, math.ceil(len(s) * p / 100.0) - 1))] for p in ps]
