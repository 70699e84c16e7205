"""Run the Parley WebSocket stack benchmark and print a markdown report.

Every server variant runs as its own process pinned to CPU 0; the load
generator runs as WORKERS processes (loadgen.py) pinned to CPU 1, and this
runner holds one extra "control" connection that triggers the broadcast.

Fan-out:  CONNS client connections; the trigger makes the server broadcast
MESSAGES 200-byte JSON text frames to all of them.  BURST messages are produced
per event-loop turn (``await asyncio.sleep(0)`` after each BURST); burst 1 is
one message per turn (worst case for write coalescing), larger bursts model
many messages arriving in one turn.  Delivered frames/s = frames counted by
the clients / (last client done - trigger sent).  Server CPU comes from
/proc/<pid>/stat (utime+stime) around the broadcast.

Idle/handshake: IDLE_CONNS connections opened concurrently (CONCURRENCY
handshakes in flight per worker); handshakes/s over the whole batch, then
(RSS after - RSS before) / IDLE_CONNS.

Usage: python run.py [--variants A,B,C] [--loops asyncio,uvloop] [--reps 3]
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import importlib.metadata
import json
import os
import platform
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    WS_PATH,
    control_text,
    proc_cpu_seconds,
    proc_status_kib,
    raise_nofile_limit,
)

HERE = Path(__file__).resolve().parent
PY = sys.executable
HOST = "127.0.0.1"
LOG_DIR = Path(os.environ.get("STACK_BENCH_LOGS", "/tmp/parley-stack-bench-logs")) / time.strftime(
    "%Y%m%d-%H%M%S"
)
#: Scheduling priority of every benchmark process (set by --nice).  On a shared
#: machine a negative value keeps other work from stealing the measured cores.
NICE = 0
#: Longest wait for a quiet machine before a measurement (set by --quiet-wait).
QUIET_WAIT = 20.0


def child_setup() -> None:
    """Runs in each server / load-generator child before exec."""
    raise_nofile_limit()
    if NICE:
        os.setpriority(os.PRIO_PROCESS, 0, NICE)
        # With kernel.sched_autogroup_enabled=1, nice only ranks tasks inside
        # one session's autogroup; other sessions' autogroups still get an equal
        # share.  Give the child its own session and set that autogroup's nice.
        os.setsid()
        try:
            Path("/proc/self/autogroup").write_text(str(NICE))
        except OSError:
            pass


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    argv: tuple[str, ...]


VARIANTS: tuple[Variant, ...] = (
    Variant("A", "aiohttp `await ws.send_str()` per recipient", ("srv_aiohttp_naive.py",)),
    Variant(
        "B",
        "aiohttp, pre-encoded raw frames, call_soon flush per session",
        ("srv_aiohttp_raw.py", "--flush", "session"),
    ),
    Variant(
        "B2",
        "as B, one call_soon flush per loop turn for all sessions",
        ("srv_aiohttp_raw.py", "--flush", "hub"),
    ),
    Variant("C", "websockets asyncio server + `broadcast()`", ("srv_websockets.py",)),
    Variant(
        "D1",
        "uvicorn(httptools, ws=websockets) + Starlette `send_text`",
        ("srv_uvicorn.py", "--ws", "websockets"),
    ),
    Variant(
        "D2",
        "uvicorn(httptools, ws=websockets-sansio) + Starlette `send_text`",
        ("srv_uvicorn.py", "--ws", "websockets-sansio"),
    ),
    Variant("E", "picows `transport.send()` per recipient", ("srv_picows.py",)),
)


@dataclass
class Config:
    conns: int
    messages: int
    bursts: list[int]
    idle_conns: int
    concurrency: int
    workers: int
    reps: int
    timeout: float


# --------------------------------------------------------------------------- processes


def pin(pid: int, cpu: int) -> None:
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(pid, {cpu})
        assert os.sched_getaffinity(pid) == {cpu}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Server:
    def __init__(self, variant: Variant, loop: str, tag: str) -> None:
        self.port = free_port()
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"server-{variant.key}-{loop}-{tag}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [
                PY,
                str(HERE / variant.argv[0]),
                *variant.argv[1:],
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--loop",
                loop,
            ],
            cwd=HERE,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=child_setup,
        )
        self.pid = self.proc.pid
        pin(self.pid, 0)
        self._wait_listening(20.0)

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited, see {self.log_path}")
            try:
                with socket.create_connection((HOST, self.port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server not listening, see {self.log_path}")

    def cpu(self) -> float:
        return proc_cpu_seconds(self.pid)

    def rss_kib(self) -> int:
        return proc_status_kib(self.pid, "VmRSS")

    def reset_peak(self) -> bool:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def peak_kib(self) -> int:
        return proc_status_kib(self.pid, "VmHWM")

    def log_tail(self, n: int = 400) -> str:
        self._log.flush()
        return self.log_path.read_text()[-n:]

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


class WorkerProc:
    """A loadgen.py process driven over stdin/stdout JSON lines."""

    def __init__(self, port: int, tag: str) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self._err = open(LOG_DIR / f"loadgen-{tag}.log", "w")
        self.proc = subprocess.Popen(
            [PY, str(HERE / "loadgen.py"), "--host", HOST, "--port", str(port)],
            cwd=HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            bufsize=1,
            preexec_fn=child_setup,
        )
        pin(self.proc.pid, 1)
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.expect("hello", 20)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self._events.put(json.loads(line))

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"loadgen: no {event!r} within {timeout}s")
            try:
                msg = self._events.get(timeout=left)
            except queue.Empty:
                continue
            if msg["ev"] == event:
                return msg

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop_process(self.proc)
        self._err.close()


class ControlConn:
    """Blocking WebSocket client used only to send the trigger frame.

    A reader thread answers the server's pings: websockets and uvicorn close a
    connection whose pong is 20 s late, which would silently eat later triggers.
    """

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), 5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {WS_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("control connection closed during handshake")
            head += chunk
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head[:100])
        self.sock.settimeout(None)
        self._lock = threading.Lock()
        self._buf = head.split(b"\r\n\r\n", 1)[1]
        threading.Thread(target=self._read, daemon=True).start()

    def _frame(self, opcode: int, payload: bytes) -> bytes:
        assert len(payload) < 126
        return bytes((0x80 | opcode, 0x80 | len(payload))) + b"\0\0\0\0" + payload

    def _read(self) -> None:
        buf = self._buf
        while True:
            while len(buf) >= 2:
                length, hl = buf[1] & 0x7F, 2
                if length == 126:
                    length, hl = int.from_bytes(buf[2:4], "big"), 4
                elif length == 127:
                    length, hl = int.from_bytes(buf[2:10], "big"), 10
                if len(buf) < hl + length:
                    break
                if buf[0] & 0x0F == 0x9:  # ping -> pong
                    self._send(self._frame(0xA, buf[hl : hl + length]))
                buf = buf[hl + length :]
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk

    def _send(self, data: bytes) -> None:
        with self._lock:
            self.sock.sendall(data)

    def send_text(self, text: str) -> None:
        self._send(self._frame(0x1, text.encode()))

    def close(self) -> None:
        try:
            self._send(self._frame(0x8, (1000).to_bytes(2, "big")))
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# --------------------------------------------------------------------------- foreign load
# The machine may be shared (other sessions building, running services).  Busy
# time of the whole machine minus the CPU time of our own processes is
# "foreign" load; we wait for a quiet machine before measuring and redo a
# measurement that was disturbed.

_HZ = os.sysconf("SC_CLK_TCK")
FOREIGN_LIMIT = 0.15  # cores; above this a measurement is redone


def machine_busy_s() -> float:
    """user+nice+system+steal of all CPUs (irq/softirq left out: the loopback
    softirq work of our own sockets lands there and is no process's time)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(int, fields[1:9])
    return (user + nice + system + steal) / _HZ


def per_cpu_ticks() -> dict[str, list[int]]:
    """Per-CPU /proc/stat counters: user nice system idle iowait irq softirq steal."""
    out: dict[str, list[int]] = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                out[name] = [int(v) for v in vals[:8]]
    return out


def per_cpu_shares(a: dict[str, list[int]], b: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    """Share of wall time per CPU spent in user+nice, system, softirq+irq, idle."""
    shares = {}
    for cpu in a:
        d = [y - x for x, y in zip(a[cpu], b[cpu], strict=True)]
        total = sum(d) or 1
        shares[cpu] = {
            "user": (d[0] + d[1]) / total,
            "system": d[2] / total,
            "softirq": (d[5] + d[6]) / total,
            "idle": (d[3] + d[4]) / total,
        }
    return shares


class LoadWatch:
    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def ours_s(self) -> float:
        total = 0.0
        for pid in [os.getpid(), *self.pids]:
            try:
                total += proc_cpu_seconds(pid)
            except OSError:
                pass
        return total

    def snapshot(self) -> tuple[float, float, float]:
        return time.monotonic(), machine_busy_s(), self.ours_s()

    @staticmethod
    def foreign_cores(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
        return max(0.0, (b[1] - a[1]) - (b[2] - a[2])) / max(b[0] - a[0], 1e-9)

    def wait_quiet(self, window: float = 0.5) -> float:
        """Block until foreign load < FOREIGN_LIMIT / 2 over `window` (at most
        QUIET_WAIT seconds); return seconds waited."""
        start = time.monotonic()
        while time.monotonic() - start < QUIET_WAIT:
            a = self.snapshot()
            time.sleep(window)
            if self.foreign_cores(a, self.snapshot()) < FOREIGN_LIMIT / 2:
                break
        return time.monotonic() - start


# --------------------------------------------------------------------------- phases


def connect_all(
    workers: list[WorkerProc], total: int, concurrency: int, timeout: float
) -> list[dict[str, Any]]:
    for w, n in zip(workers, split(total, len(workers)), strict=True):
        w.send(f"connect {n} {concurrency}")
    replies = [w.expect("connected", timeout) for w in workers]
    failed = sum(r["failed"] for r in replies)
    if failed:
        errs = [r["first_error"] for r in replies if r["first_error"]]
        raise RuntimeError(f"{failed} connections failed: {errs[:1]}")
    return replies


def trigger(
    server: Server,
    workers: list[WorkerProc],
    ctl: ControlConn,
    messages: int,
    burst: int,
    expected: int,
    timeout: float,
    attempts: int = 2,
) -> dict[str, Any]:
    watch = LoadWatch([server.pid, *(w.proc.pid for w in workers)])
    for attempt in range(1, attempts + 1):
        waited = watch.wait_quiet()
        a = watch.snapshot()
        result = _trigger_once(server, workers, ctl, messages, burst, expected, timeout)
        result["foreign_cores"] = watch.foreign_cores(a, watch.snapshot())
        result["attempt"] = attempt
        result["waited_s"] = waited
        if result["foreign_cores"] <= FOREIGN_LIMIT:
            break
    return result


def _trigger_once(
    server: Server,
    workers: list[WorkerProc],
    ctl: ControlConn,
    messages: int,
    burst: int,
    expected: int,
    timeout: float,
) -> dict[str, Any]:
    for w in workers:
        w.send(f"arm {messages}")
    for w in workers:
        w.expect("armed", 10)
    time.sleep(0.1)
    rss0 = server.rss_kib()
    peak_ok = server.reset_peak()
    cpu0 = server.cpu()
    stat0 = per_cpu_ticks()
    t0 = time.monotonic()
    ctl.send_text(control_text(messages, burst))
    try:
        dones = [w.expect("done", timeout) for w in workers]
    except TimeoutError:
        for w in workers:
            w.send("status")
        status = [w.expect("status", 5) for w in workers]
        raise TimeoutError(
            f"broadcast incomplete after {timeout}s: {status}; "
            f"server alive={server.proc.poll() is None} "
            f"cpu={server.cpu():.2f}s log tail: {server.log_tail()!r}"
        ) from None
    cpu1 = server.cpu()
    shares = per_cpu_shares(stat0, per_cpu_ticks())
    elapsed = max(d["t"] for d in dones) - t0
    frames = sum(d["frames"] for d in dones)
    if frames != expected:
        raise RuntimeError(f"expected {expected} frames, counted {frames}")
    return {
        "burst": burst,
        "frames": frames,
        "elapsed_s": elapsed,
        "fps": frames / elapsed,
        "server_cpu_s": cpu1 - cpu0,
        "cpu_per_1k_ms": (cpu1 - cpu0) / (frames / 1000) * 1000,
        "server_util": (cpu1 - cpu0) / elapsed,
        "client_util": sum(d["cpu"] for d in dones) / elapsed,
        "peak_growth_mib": (server.peak_kib() - rss0) / 1024 if peak_ok else None,
        "cpu_shares": shares,
    }


def fanout_rep(variant: Variant, loop: str, cfg: Config, rep: int) -> list[dict[str, Any]]:
    tag = f"fanout-{rep}"
    server = Server(variant, loop, tag)
    workers: list[WorkerProc] = []
    ctl: ControlConn | None = None
    try:
        workers = [
            WorkerProc(server.port, f"{variant.key}-{loop}-{tag}-{i}") for i in range(cfg.workers)
        ]
        connect_all(workers, cfg.conns, cfg.concurrency, cfg.timeout)
        ctl = ControlConn(server.port)
        time.sleep(0.2)
        _trigger_once(server, workers, ctl, 50, 10, 50 * cfg.conns, cfg.timeout)  # warm-up
        return [
            trigger(
                server, workers, ctl, cfg.messages, burst, cfg.messages * cfg.conns, cfg.timeout
            )
            for burst in cfg.bursts
        ]
    finally:
        if ctl is not None:
            ctl.close()
        for w in workers:
            w.stop()
        server.stop()


def idle_rep(variant: Variant, loop: str, cfg: Config, rep: int) -> dict[str, Any]:
    tag = f"idle-{rep}"
    server = Server(variant, loop, tag)
    workers: list[WorkerProc] = []
    try:
        workers = [
            WorkerProc(server.port, f"{variant.key}-{loop}-{tag}-{i}") for i in range(cfg.workers)
        ]
        connect_all(workers[:1], 20, 20, cfg.timeout)  # warm code paths
        workers[0].send("close")
        workers[0].expect("closed", 10)
        watch = LoadWatch([server.pid, *(w.proc.pid for w in workers)])
        waited = watch.wait_quiet()
        time.sleep(0.3)
        rss0 = server.rss_kib()
        a = watch.snapshot()
        cpu0 = server.cpu()
        replies = connect_all(workers, cfg.idle_conns, cfg.concurrency, cfg.timeout)
        cpu1 = server.cpu()
        foreign = watch.foreign_cores(a, watch.snapshot())
        span = max(r["t1"] for r in replies) - min(r["t0"] for r in replies)
        time.sleep(1.0)
        rss1 = server.rss_kib()
        return {
            "handshakes_per_s": cfg.idle_conns / span,
            "hs_cpu_per_1k_ms": (cpu1 - cpu0) / (cfg.idle_conns / 1000) * 1000,
            "hs_client_util": sum(r["cpu"] for r in replies) / span,
            "rss_per_conn_kib": (rss1 - rss0) / cfg.idle_conns,
            "rss_idle_mib": rss1 / 1024,
            "foreign_cores": foreign,
            "waited_s": waited,
        }
    finally:
        for w in workers:
            w.stop()
        server.stop()


# --------------------------------------------------------------------------- report


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("aiohttp", "websockets", "uvicorn", "starlette", "httptools", "uvloop", "picows"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def machine() -> dict[str, str]:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def share(row: dict[str, Any], cpu: str, kind: str) -> float | None:
    shares = row.get("cpu_shares", {}).get(cpu)
    return None if shares is None else shares[kind] * 100


def report(results: dict[str, Any], cfg: Config) -> str:
    m, v = results["machine"], results["versions"]
    lines = [
        f"- date: {m['date']}",
        f"- machine: {m['nproc']} cores (`nproc`), {m['cpu']}, Linux {m['kernel']}",
        f"- Python {m['python']}; " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- fan-out: {cfg.conns} connections x {cfg.messages} messages of 200 B, "
        f"{cfg.workers} load-generator processes (raw asyncio Protocol on uvloop) pinned to CPU 1, "
        f"server pinned to CPU 0, server and load generators at nice {NICE} in their own "
        f"autogroups; median of {cfg.reps} runs (range of frames/s in brackets)",
        "- foreign load = busy CPU of the machine not used by the benchmark processes during the "
        "measurement, in cores (the machine is shared); "
        f"a run above {FOREIGN_LIMIT} cores is redone once",
        f"- idle: {cfg.idle_conns} connections opened with {cfg.concurrency} handshakes "
        "in flight per load-generator process",
        "",
        "### Fan-out",
        "",
        "| variant | loop | burst | delivered frames/s | server CPU s / 1,000 deliveries | "
        "server CPU busy | CPU 0 softirq | load-gen CPU busy | CPU 1 idle | "
        "server peak RSS growth | foreign load (max) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, runs in results["fanout"].items():
        variant, loop = key.split("|")
        for burst in cfg.bursts:
            rows = [r for rep in runs if isinstance(rep, list) for r in rep if r["burst"] == burst]
            if not rows:
                err = next((rep for rep in runs if isinstance(rep, str)), "failed")
                lines.append(f"| {variant} | {loop} | {burst} | FAILED: {err[:80]} | | | | | | | |")
                continue
            fps = [r["fps"] for r in rows]
            lines.append(
                f"| {variant} | {loop} | {burst} | "
                f"{med(fps):,.0f} [{min(fps):,.0f}-{max(fps):,.0f}] | "
                f"{fmt(med([r['cpu_per_1k_ms'] / 1000 for r in rows]), '.4f')} | "
                f"{fmt(med([r['server_util'] * 100 for r in rows]), '.0f')}% | "
                f"{fmt(med([share(r, 'cpu0', 'softirq') for r in rows]), '.0f')}% | "
                f"{fmt(med([r['client_util'] * 100 for r in rows]), '.0f')}% | "
                f"{fmt(med([share(r, 'cpu1', 'idle') for r in rows]), '.0f')}% | "
                f"{fmt(med([r['peak_growth_mib'] for r in rows]), '.1f')} MiB | "
                f"{max(r['foreign_cores'] for r in rows):.2f} |"
            )
    lines += [
        "",
        "### Idle connections and handshakes",
        "",
        "| variant | loop | RSS per idle connection | server RSS with idle conns | handshakes/s | "
        "server CPU ms / 1,000 handshakes | load-gen CPU busy | foreign load (max) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, runs in results["idle"].items():
        variant, loop = key.split("|")
        rows = [r for r in runs if isinstance(r, dict)]
        if not rows:
            lines.append(f"| {variant} | {loop} | FAILED | | | | | |")
            continue
        lines.append(
            f"| {variant} | {loop} | "
            f"{fmt(med([r['rss_per_conn_kib'] for r in rows]), '.1f')} KiB | "
            f"{fmt(med([r['rss_idle_mib'] for r in rows]), '.0f')} MiB | "
            f"{fmt(med([r['handshakes_per_s'] for r in rows]), ',.0f')} | "
            f"{fmt(med([r['hs_cpu_per_1k_ms'] for r in rows]), '.0f')} | "
            f"{fmt(med([r['hs_client_util'] * 100 for r in rows]), '.0f')}% | "
            f"{max(r['foreign_cores'] for r in rows):.2f} |"
        )
    lines += ["", "Variants:", ""]
    lines += [
        f"- **{v.key}**: {v.label}"
        for v in VARIANTS
        if any(k.startswith(v.key + "|") for k in results["idle"])
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    global NICE, QUIET_WAIT
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", default=",".join(v.key for v in VARIANTS))
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--conns", type=int, default=200)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--bursts", default="1,50")
    parser.add_argument("--idle-conns", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument(
        "--nice",
        type=int,
        default=-10,
        help="niceness (and autogroup niceness) of the benchmark processes",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=20.0,
        help="max seconds to wait for foreign load to drop before a measurement",
    )
    parser.add_argument("--json", type=Path, help="write raw results here")
    parser.add_argument("--out", type=Path, help="also write the markdown report here")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="no measuring: print the report of saved --json files (merged)",
    )
    args = parser.parse_args()
    if args.from_json:
        merged: dict[str, Any] = {}
        for path in args.from_json:
            data = json.loads(path.read_text())
            if not merged:
                merged = data
            else:
                merged["fanout"].update(data["fanout"])
                merged["idle"].update(data["idle"])
        c = merged["config"]
        NICE = args.nice
        print(report(merged, Config(**c)))
        return
    cfg = Config(
        args.conns,
        args.messages,
        [int(b) for b in args.bursts.split(",")],
        args.idle_conns,
        args.concurrency,
        args.workers,
        args.reps,
        args.timeout,
    )
    chosen = [v for v in VARIANTS if v.key in args.variants.split(",")]
    loops = args.loops.split(",")
    NICE, QUIET_WAIT = args.nice, args.quiet_wait
    raise_nofile_limit()
    pin(os.getpid(), 1)

    results: dict[str, Any] = {
        "machine": machine(),
        "versions": versions(),
        "config": vars(cfg),
        "fanout": {},
        "idle": {},
    }
    for loop in loops:
        for variant in chosen:
            key = f"{variant.key}|{loop}"
            results["fanout"][key] = []
            results["idle"][key] = []
            for rep in range(cfg.reps):
                for phase, fn in (("fanout", fanout_rep), ("idle", idle_rep)):
                    if phase == "idle" and args.skip_idle:
                        continue
                    res: Any = None
                    for _attempt in range(2):
                        try:
                            res = fn(variant, loop, cfg, rep)
                        except Exception as exc:  # keep going, report the failure
                            res = f"{type(exc).__name__}: {exc}"
                        if not (isinstance(res, dict) and res["foreign_cores"] > FOREIGN_LIMIT):
                            break
                    results[phase][key].append(res)
                    print(
                        f"[{key} rep {rep} {phase}] {json.dumps(res)[:400]}",
                        file=sys.stderr,
                        flush=True,
                    )
    text = report(results, cfg)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
