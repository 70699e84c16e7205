"""Run the benchmarks of issue 5 against Parley and its peers; write the results.

    .venv/bin/python -m bench.run            # `make bench`: everything, full size,
                                             # rewrites docs/benchmarks.md and its plots
    .venv/bin/python -m bench.run --quick    # `make bench-quick`: every scenario, tiny

The runner runs in Parley's .venv (it starts `.venv/bin/parley serve` nodes,
fills stores through parley.storage, pre-fills Kafka the way gateways write).
The peers, the load generator and the plots run in the benchmark's own venv
(~/.cache/parley/bench-venv, from bench/requirements.txt, created here when
missing or stale): nothing of theirs enters Parley's dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
from tests.topics import drop_topics

from bench import flood, parley_only, scenarios
from bench.driver import build_fastread
from bench.scenarios import FULL, QUICK
from bench.systems import ALL, Channels, Env, Parley, SioKafka, SioRedis, System

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("PARLEY_CACHE", Path.home() / ".cache" / "parley"))
BENCH_VENV = Path(os.environ.get("PARLEY_BENCH_VENV", CACHE / "bench-venv"))
REQUIREMENTS = ROOT / "bench" / "requirements.txt"
SECRET = "parley-bench-secret-0123456789abcdef"
SCENARIOS = ("fanout", "bigroom", "idle", "persist", "resume", "history", "flood")
NEEDS_REDIS = ("socketio-redis", "channels")

logger = logging.getLogger("bench")


def ensure_bench_venv() -> Path:
    """The benchmark's venv, (re)installed when bench/requirements.txt changed.

    Under a lock: two runs at once (two test workers on a fresh machine) would
    otherwise both build it, one of them calling pip before venv has put it there.
    """
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    stamp = BENCH_VENV / f".installed-{digest}"
    python = BENCH_VENV / "bin" / "python"
    BENCH_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(BENCH_VENV.parent / f"{BENCH_VENV.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and python.exists():
            return python
        logger.info("installing the benchmark venv %s (bench/requirements.txt)", BENCH_VENV)
        has_pip = python.exists() and (
            subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True).returncode
            == 0
        )
        if not has_pip:  # absent, or left half made by an interrupted run
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(BENCH_VENV)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "-r",
                str(REQUIREMENTS),
            ],
            check=True,
        )
        for old in BENCH_VENV.glob(".installed-*"):
            old.unlink()
        stamp.touch()
        return python


def raise_fd_limit() -> int:
    """As many descriptors as 20,000 connections on both ends need (children inherit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 250_000
    for limit in ((want, max(hard, want)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            return limit[0]
        except (ValueError, OSError):
            continue
    return soft


def services() -> tuple[str, str]:
    """(Kafka bootstrap, PostgreSQL admin URL) of `make services` (started or reused)."""
    out = subprocess.run(
        ["bash", str(ROOT / "scripts/services.sh"), "start"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    values = dict(line.split("=", 1) for line in out.splitlines()[-2:])
    return values["PARLEY_KAFKA_BOOTSTRAP"], values["PARLEY_DATABASE_URL"]


def redis_start() -> tuple[str, int, int]:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts/redis.sh"), "start"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    values = dict(line.split("=", 1) for line in out.splitlines()[-2:])
    url = values["REDIS_URL"]
    return url, int(values["REDIS_PID"]), int(url.rsplit(":", 1)[1])


def redis_stop(port: int) -> None:
    subprocess.run(["bash", str(ROOT / "scripts/redis.sh"), "stop", str(port)], check=False)


@contextlib.asynccontextmanager
async def fresh_database(admin_url: str, kind: str = "bench") -> AsyncIterator[str]:
    """A database of its own for one run, dropped afterwards."""
    name = f"{kind}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }


def local_versions(bench_python: Path) -> dict[str, str]:
    """Versions of Parley's packages, the bench venv's, Kafka's and redis-server's."""
    out: dict[str, str] = {}
    for name in ("parley", "aiohttp", "confluent-kafka", "asyncpg", "orjson"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    listing = subprocess.run(
        [str(bench_python), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    wanted = {
        "python-socketio",
        "python-engineio",
        "kafka-python",
        "gevent",
        "gunicorn",
        "simple-websocket",
        "redis",
        "django",
        "channels",
        "channels-redis",
        "uvicorn",
        "uvloop",
        "websockets",
        "httptools",
        "matplotlib",
    }
    with contextlib.suppress(ValueError):
        for pkg in json.loads(listing or "[]"):
            if pkg["name"].lower() in wanted:
                out[f"{pkg['name'].lower()} (bench venv)"] = pkg["version"]
    kafka_dirs = sorted(CACHE.glob("kafka-*/libs"))
    if kafka_dirs:
        out["Apache Kafka"] = kafka_dirs[-1].parent.name.removeprefix("kafka-")
    with contextlib.suppress(OSError):
        redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
        for part in redis.stdout.split():
            if part.startswith("v="):
                out["redis-server"] = part[2:]
    return out


async def versions(bench_python: Path, admin_url: str) -> dict[str, str]:
    out = await asyncio.to_thread(local_versions, bench_python)
    with contextlib.suppress(Exception):
        conn = await asyncpg.connect(admin_url)
        try:
            out["PostgreSQL"] = str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()
    return out


def make_system(name: str, env: Env, db_url: str) -> System:
    if name == "parley":
        return Parley(env, db_url)
    if name == "socketio-redis":
        return SioRedis(env)
    if name == "socketio-kafka":
        return SioKafka(env)
    return Channels(env)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sz = dataclasses.replace(QUICK if args.quick else FULL)
    for item in args.set:
        key, _, value = item.partition("=")
        current = getattr(sz, key, None)
        if current is None or not value:
            raise SystemExit(f"--set {item!r}: known sizes are {', '.join(sz.__dict__)}")
        if isinstance(current, list):
            setattr(sz, key, [float(v) for v in value.split(",")])
        else:
            setattr(sz, key, type(current)(value))
    systems = [s for s in args.systems.split(",") if s]
    wanted = [s for s in args.scenarios.split(",") if s]
    for s in systems:
        if s not in ALL:
            raise SystemExit(f"unknown system {s!r} (known: {', '.join(ALL)})")
    for s in wanted:
        if s not in SCENARIOS:
            raise SystemExit(f"unknown scenario {s!r} (known: {', '.join(SCENARIOS)})")
    t_start = time.monotonic()
    fd_limit = raise_fd_limit()
    bench_python = await asyncio.to_thread(ensure_bench_venv)
    fastread = await asyncio.to_thread(build_fastread, CACHE)
    if fastread is not None:
        os.environ["BENCH_FASTREAD"] = str(fastread)  # the load workers inherit it
    else:
        os.environ.pop("BENCH_FASTREAD", None)
    kafka, admin_url = await asyncio.to_thread(services)
    redis_url = redis_pid = redis_port = None
    if any(s in NEEDS_REDIS for s in systems):
        redis_url, redis_pid, redis_port = await asyncio.to_thread(redis_start)
    run_dir = CACHE / "bench-runs" / time.strftime("%Y%m%d-%H%M%S")
    await asyncio.to_thread(run_dir.mkdir, parents=True, exist_ok=True)
    env = Env(bench_python, SECRET, kafka, admin_url, redis_url, redis_pid, run_dir)
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "fd_limit": fd_limit,
        "sizes": sz.__dict__,
        "versions": await versions(bench_python, admin_url),
        "systems": {},
        "parley_only": {},
        "run_dir": str(run_dir),
    }
    logger.info("logs in %s", run_dir)
    try:
        for name in systems:
            entry: dict[str, Any] = {}
            results["systems"][name] = entry
            for scen in ("fanout", "bigroom", "idle"):
                if scen not in wanted:
                    continue
                logger.info("== %s: %s", name, scen)
                t0 = time.monotonic()
                try:
                    async with fresh_database(admin_url) as db_url:
                        system = make_system(name, env, db_url)
                        entry.setdefault("title", system.title)
                        entry.setdefault("config", system.config)
                        entry.setdefault("brokers", system.broker_names())
                        fn = getattr(scenarios, scen)
                        entry[scen] = await fn(system, sz)
                except Exception as exc:
                    logger.exception("%s %s failed", name, scen)
                    entry[scen] = {"error": f"{type(exc).__name__}: {exc}", "ok": False}
                entry[scen]["wall_seconds"] = time.monotonic() - t0
        if "parley" in systems:
            po = results["parley_only"]
            for scen in ("persist", "resume", "history", "flood"):
                if scen not in wanted:
                    continue
                logger.info("== parley: %s", scen)
                t0 = time.monotonic()
                try:
                    async with fresh_database(admin_url) as db_url:
                        if scen == "persist":
                            po[scen] = await parley_only.persist(env, db_url, sz)
                        elif scen == "resume":
                            po[scen] = await parley_only.resume(Parley(env, db_url), sz)
                        elif scen == "flood":
                            po[scen] = await flood.flood(flood.DefaultLimits(env, db_url), sz)
                        else:
                            po[scen] = {
                                "sqlite": await parley_only.history(env, "sqlite", db_url, sz),
                                "postgres": await parley_only.history(env, "postgres", db_url, sz),
                            }
                            po[scen]["ok"] = all(v["ok"] for v in po[scen].values())
                except Exception as exc:
                    logger.exception("parley %s failed", scen)
                    po[scen] = {"error": f"{type(exc).__name__}: {exc}", "ok": False}
                po[scen]["wall_seconds"] = time.monotonic() - t0
    finally:
        if redis_port is not None:
            await asyncio.to_thread(redis_stop, redis_port)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(drop_topics, kafka, [p + "." for p in env.topic_prefixes])
    results["total_seconds"] = time.monotonic() - t_start
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every scenario at a tiny size")
    parser.add_argument("--systems", default=",".join(ALL))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--out", type=Path, help="results JSON (default: by mode)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SIZE=VALUE",
        help="override one size, e.g. --set idle_conns=3000 --set fanout_rates=1,2,4",
    )
    parser.add_argument(
        "--report",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rewrite docs/benchmarks.md and docs/benchmarks/*.png (default: full runs only)",
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    results = asyncio.run(run(args))
    report = args.report if args.report is not None else not args.quick
    out = args.out or (
        ROOT / "docs/benchmarks/results.json"
        if report
        else Path(results["run_dir"]) / "results.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    logger.info("results in %s (%.0f s)", out, results["total_seconds"])
    if report:
        subprocess.run(
            [
                str(BENCH_VENV / "bin/python"),
                str(ROOT / "bench/report.py"),
                str(out),
                str(ROOT / "docs/benchmarks.md"),
                str(ROOT / "docs/benchmarks"),
            ],
            check=True,
        )
    failed = [
        f"{sys_name}/{scen}"
        for sys_name, entry in results["systems"].items()
        for scen, v in entry.items()
        if isinstance(v, dict) and not v.get("ok", True)
    ] + [f"parley/{scen}" for scen, v in results["parley_only"].items() if not v.get("ok", True)]
    if failed:
        logger.error("not correct: %s", ", ".join(failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
