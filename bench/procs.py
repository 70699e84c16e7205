"""Processes the benchmark starts, and what /proc says they cost.

CPU of a process tree = the root's utime + stime + cutime + cstime (its reaped
children) + the same for every live descendant: PostgreSQL backends and
Gunicorn workers come and go during a run and are all counted once. RSS is
summed over the tree (VmRSS).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

CLK_TCK = os.sysconf("SC_CLK_TCK")
PY_SPY = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "py-spy"


# With kernel.sched_autogroup_enabled=1 every session is one scheduling group with
# an equal share of the CPU, whatever its processes' nice: on a machine shared with
# other engineers' test runs, each process the benchmark starts gets a session of
# its own whose autogroup runs at this nice (as bench/stack did). BENCH_NICE=0 turns
# it off. The shared brokers (Kafka, PostgreSQL) are not ours and keep theirs.
NICE = int(os.environ.get("BENCH_NICE", "-10"))


def prioritise(pid: int) -> None:
    if NICE == 0:
        return
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(NICE))
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, NICE)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stats() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, cpu ticks incl. reaped children) for every process."""
    out: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rindex(b")") + 2 :].split()
        # fields[1] = ppid (field 4); utime, stime, cutime, cstime = fields 14-17
        ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        out[int(entry.name)] = (int(fields[1]), ticks)
    return out


def _tree(roots: Iterable[int], stats: dict[int, tuple[int, int]]) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    todo = [r for r in roots if r in stats]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, ()))
    return seen


def cpu_seconds(groups: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """CPU seconds so far of each group of process trees."""
    stats = _stats()
    return {
        name: sum(stats[p][1] for p in _tree(roots, stats)) / CLK_TCK
        for name, roots in groups.items()
    }


def rss_kib(roots: Sequence[int]) -> int:
    total = 0
    for pid in _tree(roots, _stats()):
        with contextlib.suppress(OSError, ValueError):
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
    return total


def find_pids(needle: str) -> list[int]:
    """Processes whose command line contains `needle`."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if needle.encode() in cmd:
            out.append(int(entry.name))
    return out


def postmaster_pid() -> list[int]:
    """The PostgreSQL postmaster(s) on this machine: `postgres -D …` processes."""
    return [p for p in find_pids("postgres -D") if "postgres" in _comm(p)]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@dataclass
class Proc:
    """A server the benchmark started: output to a log file, ready on a line or a port."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready_line: str | None = None
    port: int | None = None
    cwd: str | None = None
    proc: asyncio.subprocess.Process | None = None
    _pump: asyncio.Task[None] | None = None
    started_at: float = 0.0
    ready_at: float = 0.0
    _ready: asyncio.Future[None] | None = field(default=None, repr=False)
    _spy: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, wait_s: float = 120.0) -> None:
        self.started_at = time.monotonic()
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        prioritise(self.proc.pid)
        self._ready = asyncio.get_running_loop().create_future()
        # an exit after start-up (a stop) is not an error anyone waits for
        self._ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pump = asyncio.create_task(self._read())
        try:
            if self.ready_line is not None:
                await asyncio.wait_for(asyncio.shield(self._ready), wait_s)
            else:
                await self._wait_port(wait_s)
        except BaseException:
            await self.kill()
            raise
        self.ready_at = time.monotonic()
        spy_dir = os.environ.get("BENCH_PYSPY_DIR")
        if spy_dir and not PY_SPY.exists():
            # Not a reason to fail the scenario (and leave this process behind).
            logger.warning("BENCH_PYSPY_DIR is set but %s is missing: no profile", PY_SPY)
        elif spy_dir and self.name.startswith(("bench-", "persist", "hist-")):
            # py-spy (in Parley's .venv) samples the process until it stops: raw
            # collapsed stacks, one file per process start, for the report's analysis.
            out = Path(spy_dir) / f"{self.name}-{int(time.time())}.txt"
            self._spy = await asyncio.create_subprocess_exec(
                str(PY_SPY),
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                "200",
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(out),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )

    async def _stop_spy(self) -> None:
        if self._spy is not None and self._spy.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._spy.send_signal(signal.SIGINT)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._spy.wait(), 20)
        self._spy = None

    async def _wait_port(self, wait_s: float) -> None:
        assert self.port is not None and self._ready is not None
        deadline = time.monotonic() + wait_s
        while True:
            if self._ready.done() and self._ready.exception() is not None:
                raise self._ready.exception()  # type: ignore[misc]
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name}: port {self.port} not open") from None
                await asyncio.sleep(0.1)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None and self._ready is not None
        with self.log_path.open("ab") as out:
            async for line in self.proc.stdout:
                out.write(line)
                out.flush()
                if (
                    self.ready_line is not None
                    and not self._ready.done()
                    and self.ready_line.encode() in line
                ):
                    self._ready.set_result(None)
        if not self._ready.done():
            self._ready.set_exception(
                RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-3000:]}")
            )

    async def stop(self, wait_s: float = 30.0) -> None:
        await self._stop_spy()
        if self.proc is None or self.proc.returncode is not None:
            await self._drain()
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), wait_s)
        except TimeoutError:
            await self.kill()
        await self._drain()

    async def kill(self) -> None:
        await self._stop_spy()
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        await self._drain()

    async def _drain(self) -> None:
        if self._pump is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pump, 5)
            self._pump = None
