"""Which workers run, built from the settings: in `parley serve` or alone.

Each worker is its own consumer group, so the same code scales by starting
more processes of it (`parley worker NAME`), and runs beside a gateway when
`PARLEY_WORKERS` names it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from parley.config import ConfigError, Settings
from parley.log.base import Log
from parley.log.records import events_spec, messages_spec
from parley.metrics import Metrics
from parley.storage.base import Store
from parley.workers.runner import supervise

Run = Callable[[asyncio.Event], Awaitable[None]]


def check_worker_settings(settings: Settings, names: Sequence[str]) -> None:
    """Refuse to start a worker that lacks its settings (before anything starts)."""
    if "notify" in names:
        if not settings.notify_url:
            raise ConfigError("PARLEY_NOTIFY_URL is not set (the notify worker's webhook)")
        if not settings.notify_secret:
            raise ConfigError("PARLEY_NOTIFY_SECRET is not set (it signs the webhook's body)")


def build(
    settings: Settings,
    names: Sequence[str],
    log: Log,
    store: Store,
    metrics: Metrics,
    *,
    public_metrics: bool = False,
) -> tuple[list[tuple[str, Run]], list[Callable[[], Awaitable[None]]]]:
    """(name, run) per worker, and what to close when they are done.

    `public_metrics`: the metrics are served on a gateway's unauthenticated
    /metrics, so no series may name a room."""
    out: list[tuple[str, Run]] = []
    closers: list[Callable[[], Awaitable[None]]] = []
    prefix = settings.topic_prefix
    if "persist" in names:
        from parley.workers.persist import PersistWorker

        out.append(("persist", PersistWorker(log, store, prefix, metrics).run))
    if "notify" in names:
        from parley.workers.notify import NotifyWorker, WebhookSender

        assert settings.notify_url and settings.notify_secret  # check_worker_settings
        sender = WebhookSender(settings.notify_url, settings.notify_secret)
        closers.append(sender.close)
        notify = NotifyWorker(
            log,
            store,
            prefix,
            metrics,
            sender,
            presence_timeout_s=settings.presence_timeout_s,
            coalesce_s=settings.notify_coalesce_s,
            window_s=settings.idempotency_window_s,
        )
        out.append(("notify", notify.run))
    if "analytics" in names:
        from parley.workers.analytics import AnalyticsWorker

        analytics = AnalyticsWorker(
            log,
            store,
            prefix,
            metrics,
            settings.idempotency_window_s,
            room_labels=not public_metrics,
        )
        out.append(("analytics", analytics.run))
    return out, closers


async def ensure_topics(settings: Settings, log: Log) -> None:
    """A worker may start before any gateway: the topics it reads must exist."""
    await log.ensure_topic(
        messages_spec(settings.topic_prefix, settings.partitions, settings.log_retention_ms)
    )
    await log.ensure_topic(events_spec(settings.topic_prefix))


def start(runs: Sequence[tuple[str, Run]], stop: asyncio.Event) -> list[asyncio.Task[None]]:
    return [
        asyncio.create_task(supervise(name, functools.partial(run, stop), stop), name=name)
        for name, run in runs
    ]


async def finish(
    tasks: Sequence[asyncio.Task[None]], closers: Sequence[Callable[[], Awaitable[None]]]
) -> None:
    for task in tasks:
        with contextlib.suppress(Exception):
            await task
    for close in closers:
        await close()


async def serve_metrics(metrics: Metrics, host: str, port: int) -> web.AppRunner:
    """/metrics and /healthz of a worker process (a gateway serves its own)."""

    async def render(_: web.Request) -> web.Response:
        return web.Response(text=metrics.render(), content_type="text/plain")

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/metrics", render)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
