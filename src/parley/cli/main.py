"""`parley serve | token | worker | chat`.

Every flag has a `PARLEY_*` variable; a flag given on the command line wins.
A wrong or missing setting ends the command with one line naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from parley.auth.tokens import TokenVerifier, VerifierConfig, issue_token
from parley.cli import heap
from parley.cli import workers as worker_set
from parley.cli.wiring import make_log, make_store
from parley.config import KNOWN_WORKERS, ConfigError, Settings, load_settings
from parley.log.base import Log, LogError
from parley.metrics import Metrics
from parley.storage.base import Store, StoreError

if TYPE_CHECKING:
    from parley.gateway.node import Node

logger = logging.getLogger("parley")


class StartupError(Exception):
    """Start-up failed for a reason the operator can fix; printed as one line."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description="Parley chat backend")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one gateway node")
    serve.add_argument("--host", help="listen address (PARLEY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", help="listen port (PARLEY_PORT, default 8000)")
    serve.add_argument("--node-id", help="this node's id (PARLEY_NODE_ID)")
    serve.add_argument(
        "--dev",
        action="store_true",
        default=None,
        help="development mode: dev tokens and the dev secret (PARLEY_DEV)",
    )
    token = sub.add_parser("token", help="print a JWT for USER")
    token.add_argument("user")
    token.add_argument("--ttl", help="seconds (PARLEY_TOKEN_TTL, default 86400)")
    token.add_argument("--dev", action="store_true", default=None, help="sign with the dev secret")
    worker = sub.add_parser("worker", help="run a worker process")
    worker.add_argument("name", choices=list(KNOWN_WORKERS))
    worker.add_argument("--host", help="listen address of /metrics (PARLEY_HOST)")
    worker.add_argument(
        "--metrics-port", help="port of /metrics and /healthz (PARLEY_METRICS_PORT, default 9101)"
    )
    # `parley chat` parses its own flags (parley.cli.chat.run_chat); listed here for --help.
    sub.add_parser("chat", help="the terminal chat client (see parley chat --help)", add_help=False)
    return parser


def _env_with_flags(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    for flag, var in (
        ("host", "PARLEY_HOST"),
        ("port", "PARLEY_PORT"),
        ("node_id", "PARLEY_NODE_ID"),
        ("metrics_port", "PARLEY_METRICS_PORT"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            env[var] = str(value)
    if getattr(args, "dev", None):
        env["PARLEY_DEV"] = "1"
    return env


def _verifier(settings: Settings) -> TokenVerifier:
    try:
        return TokenVerifier(
            VerifierConfig(
                algorithms=settings.jwt_algorithms,
                secret=settings.jwt_secret,
                public_key=settings.jwt_public_key,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
            )
        )
    except ValueError as exc:
        raise ConfigError(f"PARLEY_JWT_*: {exc}") from None


_SECRETS = re.compile(r"(?i)(token=|bearer\s+)[^\s&'\"\\]+|eyJ[\w-]*\.[\w-]*\.[\w-]*")


def _redact(match: re.Match[str]) -> str:
    return (match.group(1) or "") + "<redacted>"


class RedactTokens(logging.Filter):
    """Tokens travel in `?token=` and `Authorization`; aiohttp's HTTP parser quotes
    raw request lines and headers in its errors, so every record is scrubbed."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = _SECRETS.sub(_redact, text), None
        if record.exc_text:
            record.exc_text = _SECRETS.sub(_redact, record.exc_text)
        return True


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactTokens())
    logging.getLogger("aiohttp.access").setLevel(
        logging.INFO if settings.log_level == "DEBUG" else logging.WARNING
    )


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def run_loop(settings: Settings, main: Coroutine[Any, Any, None]) -> None:
    """Run the process's one event loop: uvloop unless PARLEY_EVENT_LOOP=asyncio.

    In a connection storm a gateway on the standard loop spent about 45 % of
    its samples in the loop's own Python (accepting, making transports,
    select, reading, writing); uvloop does that in C.
    """
    logger = logging.getLogger(__name__)
    if settings.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:  # a platform without it (Windows): the standard loop
            logger.info("uvloop is not installed: the asyncio loop runs")
        else:
            logger.debug("event loop: uvloop")
            uvloop.run(main)
            return
    logger.debug("event loop: asyncio")
    asyncio.run(main)


async def serve(settings: Settings) -> None:
    from parley.gateway.node import Node
    from parley.gateway.server import AccessLogger, build_app

    verifier = _verifier(settings)
    worker_set.check_worker_settings(settings, settings.workers)
    metrics = Metrics()
    log = make_log(settings, settings.node_id)
    store = make_store(settings)
    try:
        await store.start()
    except StoreError as exc:
        raise StartupError(f"PARLEY_DATABASE_URL: {exc}") from None
    try:
        await log.start()
        node = Node(settings, log, store, metrics)
        await node.start()
    except (LogError, Exception) as exc:
        await store.stop()
        where = settings.kafka_bootstrap or "the embedded log"
        raise StartupError(f"PARLEY_KAFKA_BOOTSTRAP: cannot use {where}: {exc}") from None
    stop_workers = asyncio.Event()
    runs, closers = worker_set.build(
        settings, settings.workers, log, store, metrics, public_metrics=True
    )
    workers = worker_set.start(runs, stop_workers)
    app = build_app(node, verifier, dev_secret=settings.jwt_secret if settings.dev else None)
    runner = web.AppRunner(app, access_log_class=AccessLogger, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=4096)
    try:
        await site.start()
    except OSError as exc:
        raise StartupError(
            f"PARLEY_PORT: cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
        ) from None
    mode = "Kafka " + settings.kafka_bootstrap if settings.kafka_bootstrap else "the embedded log"
    logger.info(
        "node %s listening on http://%s:%d (%s, %s)%s",
        settings.node_id,
        settings.host,
        settings.port,
        mode,
        settings.database_url.split("@")[-1],
        " [dev]" if settings.dev else "",
    )
    heap.settle()
    print(
        f"parley: node {settings.node_id} ready on http://{settings.host}:{settings.port}",
        flush=True,
    )
    try:
        await _wait_for_signal()
    finally:
        await _drain(settings, node, site, runner, stop_workers, workers, closers, log, store)


async def _drain(
    settings: Settings,
    node: Node,
    site: web.TCPSite,
    runner: web.AppRunner,
    stop_workers: asyncio.Event,
    workers: list[asyncio.Task[None]],
    closers: list[Callable[[], Awaitable[None]]],
    log: Log,
    store: Store,
) -> None:
    """SIGTERM: stop accepting, let sends in flight get their ack, close every
    session with 1001 (clients resume elsewhere with `since`), stop the
    workers after their batch (offsets committed), flush the producer; all
    within PARLEY_DRAIN_TIMEOUT, after which the process exits anyway."""
    started = time.monotonic()
    logger.info("draining (at most %.0f s)", settings.drain_timeout_s)
    node.draining = True
    try:
        async with asyncio.timeout(settings.drain_timeout_s):
            await site.stop()
            if not await node.drain(settings.drain_timeout_s / 2):
                logger.warning("sends still waiting for the log when sessions closed")
            await node.stop()
            await runner.shutdown()
            await runner.cleanup()
            stop_workers.set()
            await worker_set.finish(workers, closers)
            await log.stop()
    except TimeoutError:
        logger.warning("drain took over %.0f s; exiting anyway", settings.drain_timeout_s)
    finally:
        await store.stop()
    logger.info("drained in %.1f s", time.monotonic() - started)


async def worker(settings: Settings, name: str) -> None:
    if not settings.kafka_bootstrap:
        raise ConfigError(
            "PARLEY_KAFKA_BOOTSTRAP is not set: a worker process needs Kafka "
            "(with the embedded log, workers run inside `parley serve`)"
        )
    worker_set.check_worker_settings(settings, [name])
    metrics = Metrics()
    log = make_log(settings, f"{settings.node_id}-{name}")
    store = make_store(settings)
    try:
        await store.start()
    except StoreError as exc:
        raise StartupError(f"PARLEY_DATABASE_URL: {exc}") from None
    try:
        await log.start()
        await worker_set.ensure_topics(settings, log)
    except (LogError, Exception) as exc:
        await store.stop()
        raise StartupError(
            f"PARLEY_KAFKA_BOOTSTRAP: cannot use {settings.kafka_bootstrap}: {exc}"
        ) from None
    try:
        http = await worker_set.serve_metrics(metrics, settings.host, settings.metrics_port)
    except OSError as exc:
        await log.stop()
        await store.stop()
        raise StartupError(
            f"PARLEY_METRICS_PORT: cannot listen on {settings.host}:{settings.metrics_port}:"
            f" {exc.strerror}"
        ) from None
    stop = asyncio.Event()
    runs, closers = worker_set.build(settings, [name], log, store, metrics)
    tasks = worker_set.start(runs, stop)
    print(
        f"parley: worker {name} running (metrics on http://{settings.host}:"
        f"{settings.metrics_port}/metrics)",
        flush=True,
    )
    waiter = asyncio.create_task(_wait_for_signal())
    await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    waiter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiter
    await worker_set.finish(tasks, closers)
    await http.cleanup()
    await log.stop()
    await store.stop()


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["chat"]:
        # Imported here: the terminal client (Textual) costs a second of start-up
        # that `serve` and `worker` should not pay.
        from parley.cli.chat import run_chat

        return run_chat(words[1:])
    args = _parser().parse_args(words)
    try:
        env = _env_with_flags(args)
        if args.command == "token":
            settings = load_settings(env, need_auth=False)
            if not settings.jwt_secret:
                raise ConfigError("PARLEY_JWT_SECRET is not set (or pass --dev for the dev secret)")
            ttl_raw = args.ttl or env.get("PARLEY_TOKEN_TTL") or "86400"
            if not ttl_raw.isdigit() or int(ttl_raw) < 1:
                raise ConfigError(
                    f"PARLEY_TOKEN_TTL (--ttl) must be a positive integer, got {ttl_raw!r}"
                )
            print(
                issue_token(
                    settings.jwt_secret,
                    args.user,
                    int(ttl_raw),
                    issuer=settings.jwt_issuer,
                    audience=settings.jwt_audience,
                )
            )
            return 0
        settings = load_settings(env)
        _setup_logging(settings)
        if args.command == "serve":
            run_loop(settings, serve(settings))
        else:
            run_loop(settings, worker(settings, args.name))
        return 0
    except (ConfigError, StartupError) as exc:
        print(f"parley: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"parley: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
