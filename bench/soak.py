"""Soak: Parley under steady load for half an hour; memory, descriptors, latency each minute.

    .venv/bin/python -m bench.soak                      # `make soak`: 30 minutes at half
                                                         # the measured maximum rate
    .venv/bin/python -m bench.soak --minutes 3 --rate 40

Runs what production runs (two `parley serve` gateways with no in-process
worker, one `parley worker persist`; Kafka and PostgreSQL from
scripts/services.sh, or the three-broker cluster with `--cluster`) and drives
it with the fault tests' traffic (tests/faults/traffic.py: users in rooms over
both gateways, every ack and delivery recorded). Without `--rate` it first
measures the maximum on a fresh deployment, as the benchmark's fan-out does:
the same users at a rate raised by a quarter every `--probe-step-seconds`
until p99 (send → ack or → delivery) passes 250 ms or acks fall behind; the
last rate held is the maximum, and the soak runs at half of it.

Each minute it samples every process (RSS and open file descriptors from
/proc, the gateways' idempotency pairs from /metrics) and the latency of the
minute's messages (send → ack, send → delivery). At the end the checker
verifies that nothing was lost, duplicated or reordered and that every acked
message is stored, and the run is judged: RSS, descriptors and p99 latency
must not grow over the steady part of the run, and no minute's p99 may pass
the fan-out's 250 ms bar at this half rate. Growth is judged after two idempotency windows
(the gateways' idempotency maps fill over the first by design, and each
room's hash table reaches its final size at its first compaction, which
comes before the end of the second); the window's default here is a quarter
of the run, at most 10 minutes. The table and the verdict replace
the soak section of docs/reliability.md; the exit code is 1 on a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import gc
import json
import math
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
from tests.faults.checker import Report, check, wait_persisted
from tests.faults.infra import Deployment, KafkaCluster, deployment
from tests.faults.report import DOC, replace_section
from tests.faults.traffic import Topology, Traffic
from tests.harness import WorkerProcess
from tests.topics import drop_topics

from bench.run import fresh_database, services
from bench.scenarios import P99_LIMIT_MS  # the fan-out's bar for "sustained"

ROOT = Path(__file__).resolve().parent.parent

# Growth allowed over the steady part of the run before the verdict says "grows".
RSS_GROWTH = 0.10  # fraction, and ...
RSS_GROWTH_MIB = 16.0  # ... at least this much in MiB (allocator noise on a small heap)
FD_GROWTH = 4
P99_GROWTH = 2.0  # times, plus 20 ms
PROBE_FROM = 200.0  # msgs/s, the probe's first step
PROBE_STEPS = 20  # 200 * 1.25**19: about 14,000 msgs/s


@dataclass
class ProcSample:
    rss_mib: float
    fds: int


@dataclass
class Sample:
    minute: int
    acked: int
    rate: float
    procs: dict[str, ProcSample]
    pairs: dict[str, float]
    ack_p50_ms: float
    ack_p99_ms: float
    delivery_p50_ms: float
    delivery_p99_ms: float
    load1: float
    gc_max_ms: float = 0.0  # the load generator's longest garbage collection in the minute
    gc_full: int = 0  # and its full (oldest generation) collections


@dataclass
class Verdict:
    judged_from: int | None  # first minute of the steady part; None: too short to judge
    growth: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def proc_sample(pid: int) -> ProcSample:
    rss_kib = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    return ProcSample(round(rss_kib / 1024, 1), len(os.listdir(f"/proc/{pid}/fd")))


def _percentiles(blob: bytes, qs: Sequence[float]) -> list[float]:
    """Percentiles (ms) of an array('d') of seconds given as bytes; 0 when empty."""
    values = array("d")
    values.frombytes(blob)
    if not values:
        return [0.0 for _ in qs]
    ordered = sorted(values)
    return [round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1) for q in qs]


class GcPauses:
    """The load generator's garbage collections: how long each stalled its loop.

    The generator keeps every ack for the checker (millions of objects by the
    end), and a full collection walks them all: a stall that grows with the
    run, and that the messages in flight would show as the gateways' latency.
    So it is measured, and each minute what the run has kept is frozen out of
    the collector's reach (`gc.freeze`, after a collection of the young
    generations). Cyclic garbage that reached the old generation before a
    freeze is then never freed: a little memory in a process that ends with
    the run, where a full collection's stall would distort what is measured.
    """

    def __init__(self) -> None:
        self._started = 0.0
        self.max_s = 0.0
        self.full = 0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.max_s = max(self.max_s, time.perf_counter() - self._started)
        if info.get("generation") == 2:
            self.full += 1

    def minute(self) -> tuple[float, int]:
        """The minute's longest pause (ms) and full collections; the run kept so far is frozen."""
        out = (round(self.max_s * 1000, 1), self.full)
        self.max_s, self.full = 0.0, 0
        gc.collect(1)
        gc.freeze()
        return out

    def close(self) -> None:
        gc.callbacks.remove(self._on_gc)


# A minute holds ~500,000 delivery times, and sorting them takes a quarter of a
# second: done in this process, it stalled the load generator once a minute,
# and the messages it held up made that minute's p99 (83-556 ms from minute to
# minute in one run). A process of its own sorts them instead.
_SORTER: concurrent.futures.ProcessPoolExecutor | None = None


async def percentiles(values: array[float], qs: Sequence[float]) -> list[float]:
    global _SORTER
    if _SORTER is None:
        context = multiprocessing.get_context("spawn")  # not a fork of a running loop
        _SORTER = concurrent.futures.ProcessPoolExecutor(1, mp_context=context)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_SORTER, _percentiles, values.tobytes(), tuple(qs))


@dataclass
class Window:
    acked: int  # acks received in the window
    ack_ms: list[float]  # ack wait percentiles
    delivery_ms: list[float]  # delivery latency percentiles


async def window(traffic: Traffic, start: float, end: float, qs: Sequence[float]) -> Window:
    """The acks and deliveries that arrived between start and end (monotonic
    seconds), and their percentiles qs."""
    stats = traffic.stats
    lo, hi = stats.between(stats.ack_at, start, end)
    dlo, dhi = stats.between(stats.delivery_at, start, end)
    return Window(
        acked=hi - lo,
        ack_ms=await percentiles(stats.ack_wait[lo:hi], qs),
        delivery_ms=await percentiles(stats.delivery_wait[dlo:dhi], qs),
    )


async def _metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError):
        return math.nan
    value = WorkerProcess.parse_sample(text, name)
    return math.nan if value is None else value


def _pids(dep: Deployment) -> dict[str, int]:
    out = {}
    for g in dep.gateways:
        assert g.proc is not None
        out[g.node_id] = g.proc.pid
    assert dep.worker.proc is not None
    out["worker"] = dep.worker.proc.pid
    return out


async def take_sample(
    minute: int, dep: Deployment, traffic: Traffic, start: float, end: float, pauses: GcPauses
) -> Sample:
    pairs = {
        g.node_id: await _metric(dep.http, f"{g.url}/metrics", "parley_idempotency_pairs")
        for g in dep.gateways
    }
    gc_max_ms, gc_full = pauses.minute()
    w = await window(traffic, start, end, (0.5, 0.99))
    return Sample(
        minute=minute,
        acked=w.acked,
        rate=round(w.acked / (end - start), 1),
        procs={name: proc_sample(pid) for name, pid in _pids(dep).items()},
        pairs=pairs,
        ack_p50_ms=w.ack_ms[0],
        ack_p99_ms=w.ack_ms[1],
        delivery_p50_ms=w.delivery_ms[0],
        delivery_p99_ms=w.delivery_ms[1],
        load1=os.getloadavg()[0],
        gc_max_ms=gc_max_ms,
        gc_full=gc_full,
    )


def judge(samples: Sequence[Sample], window_min: int) -> Verdict:
    """Compare the start and the end of the steady part: the first and last three minutes.

    The idempotency maps fill for one window, then hold one window (plus up to a
    minute, the gateways expire pairs once a minute). A dict that deletes at its
    head and inserts at its tail compacts when its table is full, and its first
    compaction, at 1 to 2 windows, sizes the table for three times its entries:
    a step of RSS (a soak saw +50 MiB at minute 17 of a 10-minute window) after
    which the table keeps that size. So the steady part starts after two windows.
    """
    start = 2 * window_min + 1
    steady = [s for s in samples if s.minute > start]
    # A spike of one minute is not growth by the medians, but at half the
    # maximum no minute may pass the bar that defines the maximum.
    spikes = [
        f"{what} passed {P99_LIMIT_MS:.0f} ms: "
        + ", ".join(f"{getattr(s, what):.0f} ms at minute {s.minute}" for s in over)
        for what in ("ack_p99_ms", "delivery_p99_ms")
        if (over := [s for s in samples[1:] if getattr(s, what) > P99_LIMIT_MS])
    ]
    if len(steady) < 6:
        return Verdict(None, failures=spikes)
    head, tail = steady[:3], steady[-3:]
    verdict = Verdict(steady[0].minute, failures=spikes)
    for name in head[0].procs:
        before = statistics.mean(s.procs[name].rss_mib for s in head)
        after = statistics.mean(s.procs[name].rss_mib for s in tail)
        verdict.growth[f"{name} RSS"] = f"{before:.1f} → {after:.1f} MiB"
        if after - before > max(RSS_GROWTH * before, RSS_GROWTH_MIB):
            verdict.failures.append(f"{name} RSS grew {before:.1f} → {after:.1f} MiB")
        fd_before = min(s.procs[name].fds for s in head)
        fd_after = min(s.procs[name].fds for s in tail)
        verdict.growth[f"{name} fds"] = f"{fd_before} → {fd_after}"
        if fd_after - fd_before > FD_GROWTH:
            verdict.failures.append(f"{name} open fds grew {fd_before} → {fd_after}")
    for what in ("ack_p99_ms", "delivery_p99_ms"):
        before = statistics.median(getattr(s, what) for s in head)
        after = statistics.median(getattr(s, what) for s in tail)
        verdict.growth[what] = f"{before:.0f} → {after:.0f} ms"
        if after > P99_GROWTH * before + 20:
            verdict.failures.append(f"{what} grew {before:.0f} → {after:.0f} ms")
    return verdict


# Infrastructure -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(
    workdir: Path, kafka: str, admin: str, topology: Topology, rate: float, **settings: str
) -> AsyncIterator[tuple[Deployment, Traffic]]:
    prefix = f"soak{uuid.uuid4().hex[:8]}"
    try:
        async with (
            fresh_database(admin, kind="parley_soak") as db,
            deployment(workdir, kafka, db, prefix, **settings) as dep,
        ):
            await dep.create_rooms(topology.room_members())
            traffic = Traffic(dep.gateways, topology, rate)
            try:
                await traffic.start()
                yield dep, traffic
            finally:
                await traffic.close()
    finally:  # the soak's topics are scratch, like its database
        await asyncio.to_thread(drop_topics, kafka, [prefix + "."])


async def finish(dep: Deployment, traffic: Traffic) -> Report:
    await traffic.stop_sending()
    await traffic.settle()
    rows, _ = await wait_persisted(traffic, dep.database_url, 120)
    return check(traffic, rows)


@dataclass
class ProbeStep:
    offered: float  # msgs/s
    acked: float  # msgs/s over the step's measured part
    ack_p99_ms: float
    delivery_p99_ms: float


async def probe_max(
    workdir: Path, kafka: str, admin: str, topology: Topology, step_s: float
) -> tuple[float, list[ProbeStep], Report]:
    """The highest rate the deployment sustains: p99 (ack and delivery) within
    P99_LIMIT_MS and every offered message acked, as the benchmark's fan-out
    defines it. The rate rises by a quarter each step from PROBE_FROM; each
    step is judged on its part after the first quarter (queues settle)."""
    steps: list[ProbeStep] = []
    best = 0.0
    rate = PROBE_FROM
    async with running(workdir, kafka, admin, topology, rate) as (dep, traffic):
        await asyncio.sleep(5)  # warm up: connections, caches, batches
        while True:
            traffic.set_rate(rate)
            began = time.monotonic()
            await asyncio.sleep(step_s)
            start, end = began + step_s / 4, time.monotonic()
            w = await window(traffic, start, end, (0.99,))
            step = ProbeStep(
                offered=rate,
                acked=round(w.acked / (end - start), 1),
                ack_p99_ms=w.ack_ms[0],
                delivery_p99_ms=w.delivery_ms[0],
            )
            steps.append(step)
            print(f"soak probe: {json.dumps(asdict(step))}", flush=True)
            held = (
                max(step.ack_p99_ms, step.delivery_p99_ms) <= P99_LIMIT_MS
                and step.acked >= 0.95 * rate
            )
            if not held or len(steps) >= PROBE_STEPS:
                break
            best = step.acked
            rate = round(rate * 1.25, 1)
        report = await finish(dep, traffic)
    return best, steps, report


# Output -----------------------------------------------------------------------------------


def table(samples: Sequence[Sample]) -> str:
    names = list(samples[0].procs) if samples else []
    head = (
        "| min | msgs/s | "
        + " | ".join(f"{n} RSS MiB | {n} fds" for n in names)
        + " | idempotency pairs | ack p50 / p99 ms | delivery p50 / p99 ms | load"
        + " | load generator's longest GC ms (full GCs) |"
    )
    sep = "|" + "---:|" * (2 + 2 * len(names) + 5)
    rows = []
    for s in samples:
        procs = " | ".join(f"{s.procs[n].rss_mib:.1f} | {s.procs[n].fds}" for n in names)
        pairs = " / ".join("?" if math.isnan(v) else f"{v:.0f}" for v in s.pairs.values())
        rows.append(
            f"| {s.minute} | {s.rate:.1f} | {procs} | {pairs}"
            f" | {s.ack_p50_ms:.0f} / {s.ack_p99_ms:.0f}"
            f" | {s.delivery_p50_ms:.0f} / {s.delivery_p99_ms:.0f} | {s.load1:.1f}"
            f" | {s.gc_max_ms:.0f} ({s.gc_full}) |"
        )
    return "\n".join([head, sep, *rows])


def section(
    args: argparse.Namespace,
    rate: float,
    how: str,
    probe_steps: Sequence[ProbeStep],
    samples: Sequence[Sample],
    report: Report,
    verdict: Verdict,
) -> str:
    f = report.figures()
    if verdict.judged_from is None:
        judged = (
            f"Too short to judge growth: {len(samples)} minutes, of which fewer than six"
            f" come after two {args.idempotency_window} s idempotency windows."
        )
        if verdict.failures:
            judged += " **Fails**: " + "; ".join(verdict.failures) + "."
    elif verdict.failures:
        judged = "**Grows**: " + "; ".join(verdict.failures) + "."
    else:
        judged = f"Nothing grows from minute {verdict.judged_from} on (first vs last 3 minutes)."
    growth = "; ".join(f"{k} {v}" for k, v in verdict.growth.items())
    bar = "none" if not report.problems() else "; ".join(report.problems())
    return "\n".join(
        [
            f"Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}:"
            f" {args.minutes} minutes at {rate:.1f} msgs/s ({how}), {args.users} users in"
            f" {args.rooms} rooms over two gateways, Kafka `{args.kafka_label}`,"
            f" `PARLEY_IDEMPOTENCY_WINDOW={args.idempotency_window}`.",
            "",
            *(
                [
                    f"Probe ({args.probe_step_seconds:g} s a rate; msgs/s offered → acked,"
                    " ack / delivery p99 ms): "
                    + ", ".join(
                        f"{p.offered:g} → {p.acked:g} ({p.ack_p99_ms:g} / {p.delivery_p99_ms:g})"
                        for p in probe_steps
                    )
                    + ".",
                    "",
                ]
                if probe_steps
                else []
            ),
            table(samples),
            "",
            f"Checker: {f['sent']} sent, {f['acked']} acked, {f['delivered']} delivered,"
            f" {f['lost']} lost, {f['duplicated']} duplicated, {f['out_of_order']} out of"
            f" order, {f['in_db']}/{f['acked']} in the database; guarantee failures: {bar}.",
            "",
            f"Verdict: {judged}" + (f" ({growth})" if growth else ""),
        ]
    )


# Main ---------------------------------------------------------------------------------------


async def soak(args: argparse.Namespace) -> int:
    # SIGTERM or ^C cancels the run, so that the nodes it started are stopped.
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    kafka, admin = services()
    cluster = KafkaCluster() if args.cluster else None
    if cluster is not None:
        kafka = await asyncio.to_thread(cluster.start_sync)
    args.kafka_label = "three-broker cluster" if cluster else kafka
    try:
        return await _soak(args, kafka, admin)
    finally:
        if cluster is not None:  # the soak stops what it started
            await asyncio.to_thread(cluster.stop_sync)


async def _soak(args: argparse.Namespace, kafka: str, admin: str) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="parley-soak-"))
    print(f"soak: logs in {workdir}", flush=True)
    topology = Topology.make(args.users, args.rooms, tag="s")
    settings = {"PARLEY_IDEMPOTENCY_WINDOW": str(args.idempotency_window)}
    if args.rate:
        rate, how = args.rate, "given"
        probe_steps: list[ProbeStep] = []
    else:
        top, probe_steps, probe = await probe_max(
            workdir / "probe",
            kafka,
            admin,
            Topology.make(args.users, args.rooms, tag="p"),
            args.probe_step_seconds,
        )
        if not top:
            print(f"soak: not even {PROBE_FROM} msgs/s held: {probe_steps}", file=sys.stderr)
            return 1
        rate, how = round(top / 2, 1), f"half of the {top:.1f} msgs/s sustained in the probe"
        print(f"soak: maximum {top:.1f} msgs/s (probe problems: {probe.problems()})", flush=True)
    samples: list[Sample] = []
    async with running(workdir / "soak", kafka, admin, topology, rate, **settings) as (
        dep,
        traffic,
    ):
        began = time.monotonic()
        print(f"soak: {args.minutes} min at {rate:.1f} msgs/s", flush=True)
        pauses = GcPauses()
        try:
            for minute in range(1, args.minutes + 1):
                end = began + 60 * minute
                await asyncio.sleep(max(0.0, end - time.monotonic()))
                sample = await take_sample(minute, dep, traffic, end - 60, end, pauses)
                samples.append(sample)
                print(json.dumps(asdict(sample)), flush=True)
        finally:
            pauses.close()
        report = await finish(dep, traffic)
    verdict = judge(samples, math.ceil(args.idempotency_window / 60))
    text = section(args, rate, how, probe_steps, samples, report, verdict)
    print(text)
    results = ROOT / ".parley" / f"soak-{time.strftime('%Y%m%dT%H%M%S')}.json"
    results.parent.mkdir(exist_ok=True)
    results.write_text(
        json.dumps(
            {
                "rate": rate,
                "how": how,
                "probe": [asdict(p) for p in probe_steps],
                "samples": [asdict(s) for s in samples],
                "figures": report.figures(),
                "problems": report.problems(),
                "verdict": asdict(verdict),
            },
            indent=1,
        )
    )
    if not args.no_docs:
        replace_section(args.doc, "soak", text)
        print(f"soak: wrote the soak section of {args.doc} (and {results})")
    return 1 if report.problems() or verdict.failures else 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--rate", type=float, default=0.0, help="msgs/s (default: half the max)")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument(
        "--probe-step-seconds", type=float, default=20.0, help="each rate of the probe"
    )
    parser.add_argument(
        "--idempotency-window",
        type=int,
        default=0,
        help="PARLEY_IDEMPOTENCY_WINDOW in s (default: a quarter of the run, at most 600)",
    )
    parser.add_argument("--cluster", action="store_true", help="the three-broker cluster")
    parser.add_argument("--doc", type=Path, default=DOC)
    parser.add_argument("--no-docs", action="store_true", help="do not touch the docs")
    args = parser.parse_args(argv)
    if args.minutes < 1:
        parser.error("--minutes must be at least 1")
    if not args.idempotency_window:
        args.idempotency_window = max(60, min(600, args.minutes * 15))
    try:
        code = asyncio.run(soak(args))
    except asyncio.CancelledError:
        print("soak: interrupted; its nodes were stopped", file=sys.stderr)
        code = 130
    finally:
        if _SORTER is not None:
            _SORTER.shutdown()
    sys.exit(code)


if __name__ == "__main__":
    main()
