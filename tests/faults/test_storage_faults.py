"""Persistence fails under load: the worker is killed mid-batch, PostgreSQL is gone for 30 s.

Neither is on the send path: gateways ack from the log and deliver from the
log, so users see nothing; history catches up when the worker or the
database is back, each message once (the worker commits its Kafka offsets
after the database transaction, and rows are keyed by (room, seq) with a
unique (room, sender, client_id)). `/readyz` says the database is down
while it is.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.checker import count_rows, wait_persisted
from tests.faults.conftest import Scenario

BASELINE_S = 10.0
AFTER_S = 10.0
OUTAGE_S = 30.0


@pytest.mark.cluster
@pytest.mark.timeout(600)
async def test_persist_worker_killed_mid_batch_and_restarted(scenario: Scenario) -> None:
    traffic, dep = scenario.traffic, scenario.dep
    db = dep.database_url
    await traffic.run_for(BASELINE_S)
    killed = traffic.mark("SIGKILL the persist worker")
    await dep.worker.kill()
    await traffic.run_for(BASELINE_S)  # a backlog builds up: one big batch at restart
    rows_at_restart = await count_rows(db)
    backlog = traffic.acked() - rows_at_restart
    await dep.worker.start()
    traffic.mark("worker started")
    # Kill it again the moment its first batch lands: between the database commit
    # and the Kafka commit, or inside the next batch.
    began = time.monotonic()
    while (now := await count_rows(db)) == rows_at_restart:
        assert time.monotonic() - began < 60, "the restarted worker wrote nothing"
        await asyncio.sleep(0.01)
    await dep.worker.kill()
    traffic.mark(f"SIGKILL the worker mid-batch ({now - rows_at_restart} rows in)")
    rows_at_second_kill = await count_rows(db)
    await dep.worker.start()
    restarted = traffic.mark("worker started again")
    _, caught_up = await wait_persisted(traffic, db, 60, acked_before=restarted)
    traffic.mark("every message acked before the restart is stored")
    await traffic.run_for(AFTER_S)
    report = await scenario.finish(
        killed,
        backlog_at_restart=backlog,
        rows_at_second_kill=rows_at_second_kill,
        history_caught_up_s=caught_up,
    )

    assert backlog > 0 and report.missing_in_db == 0
    assert report.reconnects == 0, "users saw nothing"


@pytest.mark.cluster
@pytest.mark.timeout(600)
async def test_postgres_down_for_30s_gateways_keep_delivering(scenario: Scenario) -> None:
    traffic, dep, pg = scenario.traffic, scenario.dep, scenario.pg
    await traffic.run_for(BASELINE_S)
    stopped = traffic.mark("PostgreSQL stopped")
    await pg.stop()
    seen: list[tuple[int, int, bool | None]] = []
    while time.monotonic() - stopped < OUTAGE_S:
        for node in (0, 1):
            status, body = await dep.readyz(node)
            seen.append((node, status, body.get("database")))
        await asyncio.sleep(1.0)
    starting = traffic.mark("PostgreSQL started")
    await pg.start()
    acks_during = traffic.acks_between(stopped, starting)
    deliveries_during = traffic.deliveries_between(stopped, starting)
    errors_during = traffic.errors_between(stopped, starting)

    async def both_ready() -> bool:
        answers = [await dep.readyz(node) for node in (0, 1)]
        return all(status == 200 for status, _ in answers)

    while not await both_ready():
        assert time.monotonic() - starting < 60, f"/readyz not 200 after the restart: {seen[-4:]}"
        await asyncio.sleep(0.25)
    ready = traffic.mark("/readyz 200 on both gateways")
    _, caught_up = await wait_persisted(traffic, dep.database_url, 60, acked_before=starting)
    traffic.mark("every message acked during the outage is stored")
    await traffic.run_for(AFTER_S)
    report = await scenario.finish(
        stopped,
        acks_during_outage=acks_during,
        deliveries_during_outage=deliveries_during,
        internal_errors_during_outage=errors_during,
        ready_after_s=ready - starting,
        history_caught_up_s=caught_up,
        readyz_database_false=sum(1 for _, s, db in seen if s == 503 and db is False),
    )

    expected = traffic.rate * OUTAGE_S
    assert acks_during > 0.5 * expected, (acks_during, expected)
    assert deliveries_during > 0.5 * expected, (deliveries_during, expected)
    for node in (0, 1):
        assert any(n == node and s == 503 and db is False for n, s, db in seen), seen
    assert report.reconnects == 0
