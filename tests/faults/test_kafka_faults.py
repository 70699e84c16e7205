"""Kafka fails under load: one broker crashes, then the whole cluster is gone for 30 s.

The cluster has three brokers, RF 3 and min ISR 2: one broker down leaves
every partition writable once its leadership has moved. With no broker at
all, sends cannot be acked: each gets `error internal` (after
PARLEY_KAFKA_TIMEOUT_MS), is retried with the same client_id, and is acked
once the cluster is back; an ack is never given for a record not in the log.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from parley.log.records import messages_topic
from tests.faults.conftest import Scenario

BASELINE_S = 10.0
AFTER_S = 10.0
OUTAGE_S = 30.0


@pytest.mark.cluster
@pytest.mark.timeout(600)
async def test_a_broker_killed_and_restarted_leaders_move_nothing_lost(
    scenario: Scenario,
) -> None:
    traffic, cluster = scenario.traffic, scenario.cluster
    topic = messages_topic(scenario.dep.prefix)
    await traffic.run_for(BASELINE_S)
    before = await cluster.leaders(topic)
    victim, led = Counter(before.values()).most_common(1)[0]
    killed = traffic.mark(f"SIGKILL broker {victim} (leader of {led} partitions)")
    await cluster.kill(victim)
    after, moved_s = await cluster.wait_leaders(topic, avoid=victim)
    traffic.mark("its partitions have new leaders")
    await traffic.run_for(AFTER_S)
    restarting = traffic.mark(f"restart broker {victim}")
    await cluster.restart(victim)
    back = traffic.mark("all three brokers serve again")
    await traffic.run_for(AFTER_S)
    report = await scenario.finish(
        killed,
        broker=victim,
        leaders_before=before,
        leaders_after=after,
        leaders_moved_after_s=moved_s,
        broker_restart_s=back - restarting,
        acks_while_down=traffic.acks_between(killed, restarting),
        longest_ack_gap_s=traffic.longest_ack_gap(killed, back),
    )

    moved = [p for p, leader in before.items() if leader == victim]
    assert moved and all(after[p] not in (victim, -1) for p in moved), (before, after)
    # Two brokers are enough: messages were acked while the third was down.
    assert traffic.acks_between(killed + moved_s, restarting) > 0
    assert report.reconnects == 0, "a broker crash does not drop any client"


@pytest.mark.cluster
@pytest.mark.timeout(600)
async def test_all_of_kafka_down_for_30s_sends_fail_then_everything_resumes(
    scenario: Scenario,
) -> None:
    traffic, cluster, dep = scenario.traffic, scenario.cluster, scenario.dep
    await traffic.run_for(BASELINE_S)
    down = traffic.mark("SIGKILL all three brokers")
    await cluster.kill_all()
    # Watch /readyz while the cluster is gone (this is the 30 s of the outage).
    seen: list[tuple[int, int, bool | None]] = []
    while time.monotonic() - down < OUTAGE_S:
        for node in (0, 1):
            status, body = await dep.readyz(node)
            seen.append((node, status, body.get("log")))
        await asyncio.sleep(1.0)
    errors_during = traffic.errors_between(down, time.monotonic())
    up = traffic.mark("start the brokers")
    await cluster.start()
    serving = traffic.mark("all three brokers serve again")
    first_ack = traffic.first_ack_after(serving)
    await traffic.run_for(AFTER_S)
    first = traffic.first_ack_after(serving) if first_ack is None else first_ack
    report = await scenario.finish(
        down,
        outage_s=up - down,
        cluster_start_s=serving - up,
        internal_errors_during_outage=errors_during,
        first_ack_after_restart_s=None if first is None else first - serving,
        acks_during_outage=traffic.acks_between(down + 1.0, up),
        readyz_log_false=sum(1 for _, status, log in seen if status == 503 and log is False),
    )

    assert errors_during > 0, "sends got `error internal` while Kafka was down"
    assert report.retries >= errors_during, "each failed send was retried (same client_id)"
    for node in (0, 1):
        assert any(n == node and status == 503 and log is False for n, status, log in seen), seen
    # Everything resumed: every message was acked, given to every member, stored.
    assert report.unacked == 0 and report.acked == report.sent
