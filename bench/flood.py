"""Flood: does one abusive user slow everybody else down? (issue 7: under 2x)

Measured users chat in many rooms at a steady rate on one Parley node, with
the node's default limits (20 sends/s per user). In the middle third of the
run one more user, a member of one of those rooms, sends `send` frames at
many times its limit (bench/flooder.py): most get `rate_limited`, and the
node closes the connection (1008) once it ignores them, whereupon it connects
again. The figure is the measured users' p99 during the flood over their p99
before it. Parley alone: the peers have no per-user limits to compare.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

import orjson

from bench.driver import merge_hists, percentiles
from bench.procs import cpu_seconds
from bench.scenarios import (
    Sizes,
    connect,
    drain,
    errors_of,
    fleet,
    sent_counts,
    set_rate,
    stats,
    total_sent,
    verify,
)
from bench.systems import Parley
from parley.auth.tokens import issue_token

logger = logging.getLogger("bench")
FLOODER = "flooder"


class DefaultLimits(Parley):
    """Parley as deployed: the per-user send limit left at its default."""

    def node_env(self) -> dict[str, str]:
        env = super().node_env()
        del env["PARLEY_RATE_LIMIT"], env["PARLEY_RATE_BURST"]
        return env


async def run_flooder(system: Parley, room: str, rate: float, seconds: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.flooder",
        "--url",
        f"ws://127.0.0.1:{system.ports[0]}/ws",
        "--token",
        issue_token(system.env.secret, FLOODER, 3600),
        "--room",
        room,
        "--rate",
        str(rate),
        "--seconds",
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"flooder failed ({proc.returncode}): {out[-2000:]!r}")
    counts: dict[str, Any] = orjson.loads(lines[-1])
    return counts


async def flood(system: Parley, sz: Sizes) -> dict[str, Any]:
    rooms, members = sz.flood_rooms, sz.flood_members
    await system.start(1)
    f = fleet(system, 2)
    try:
        n = rooms * members
        room_of = {i: f"fl{i // members}" for i in range(n)}
        room_members: dict[str, list[str]] = {}
        room_senders: dict[str, list[int]] = {}
        for i in range(n):
            room_members.setdefault(room_of[i], []).append(f"u{i}")
            room_senders.setdefault(room_of[i], []).append(i)
        target = room_of[0]
        room_members[target].append(FLOODER)
        await system.setup_rooms(room_members)
        await f.start()
        await f.all("configured", cmd="config", room_senders=room_senders)
        port = system.ports[0]
        conn = await connect(f, [[i, f"u{i}", room_of[i], port] for i in range(n)], 50)
        if conn["failed"]:
            raise RuntimeError(f"flood: {conn['failed']} connections failed: {conn['errors']}")
        senders = list(range(n))
        await asyncio.sleep(sz.settle_s)
        phases = ["before", "during", "after"]
        cpu: dict[str, dict[str, float]] = {}
        flooder: dict[str, Any] = {}
        for k, phase in enumerate(phases):
            c0 = cpu_seconds({"servers": system.server_pids, "brokers": system.brokers()})
            t0 = time.monotonic()
            await set_rate(f, senders, sz.flood_rate, k)
            if phase == "during":
                flooder = await run_flooder(system, target, sz.flood_frames_per_s, sz.flood_step_s)
            else:
                await asyncio.sleep(sz.flood_step_s)
            c1 = cpu_seconds({"servers": system.server_pids, "brokers": system.brokers()})
            cpu[phase] = {g: (c1[g] - c0[g]) / (time.monotonic() - t0) for g in c0}
        await set_rate(f, senders, 0.0, len(phases))
        sent_steps, _ = await sent_counts(f)
        sent = total_sent(sent_steps)
        await drain(f, sum(sent.values()) * members, quiet_s=1 + 4 * sz.settle_s)
        st = await stats(f)
        check = await verify(f, sent)
        result: dict[str, Any] = {"rooms": rooms, "members": members, "flooder": flooder}
        for k, phase in enumerate(phases):
            hist = merge_hists([s["hist"].get(str(k), {}) for s in st])
            p50, p99, p999 = percentiles(hist, [50, 99, 99.9])
            result[phase] = {
                "delivered": sum(s["delivered"].get(str(k), 0) for s in st),
                "p50_ms": p50,
                "p99_ms": p99,
                "p999_ms": p999,
                "server_cpu_busy": cpu[phase]["servers"],
            }
        before, during = result["before"]["p99_ms"], result["during"]["p99_ms"]
        result["p99_ratio"] = during / before if before and during is not None else None
        # What reached the measured users from the flooder: its accepted sends only.
        result["flood_messages_delivered"] = errors_of(st).get("message without marker", 0)
        result["check"] = check
        result["ok"] = (
            check["lost"] == 0
            and check["dups"] == 0
            and check["foreign"] == 0
            and flooder.get("sent", 0) > 0
            and flooder.get("error:rate_limited", 0) > 0
        )
        logger.info(
            "flood: p99 %s ms before, %s ms during (x%s); flooder %s",
            before,
            during,
            None if result["p99_ratio"] is None else round(result["p99_ratio"], 2),
            flooder,
        )
        return result
    finally:
        await f.stop()
        await system.stop()
