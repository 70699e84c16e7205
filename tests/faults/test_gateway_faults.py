"""Gateways that die or are restarted under load: nothing acked is lost or doubled.

A gateway killed with SIGKILL drops its sockets; its users resume on the other
node with `since` and resend what was not acked, with the same client_id. A
rolling restart (SIGTERM, then start, one node after the other) drains each
node: sessions close with 1001, sends in flight get their answer first.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.conftest import Scenario

BASELINE_S = 10.0
AFTER_S = 10.0


@pytest.mark.cluster
@pytest.mark.timeout(600)
async def test_no_fault_baseline(scenario: Scenario) -> None:
    """The same traffic with nothing broken: the checker's figures to compare with."""
    start = time.monotonic()
    await scenario.traffic.run_for(2 * BASELINE_S)
    report = await scenario.finish(start)
    # (`internal` errors are possible without a fault: a loaded machine can make a
    # produce outlast PARLEY_KAFKA_TIMEOUT_MS; the retry makes them harmless.)
    assert report.reconnects == 0
    assert report.acked == report.sent > 0.8 * scenario.traffic.rate * 2 * BASELINE_S


@pytest.mark.cluster
@pytest.mark.timeout(600)
async def test_gateway_killed_its_users_resume_on_the_other_with_since(
    scenario: Scenario,
) -> None:
    traffic, gateways = scenario.traffic, scenario.dep.gateways
    await traffic.run_for(BASELINE_S)
    victims = [c for c in traffic.clients if c.connected_to == 0]
    others = [c for c in traffic.clients if c.connected_to == 1]
    assert victims and others
    seen_before = {c.user: dict(c.last_seq) for c in victims}
    killed = traffic.mark("SIGKILL gw0")
    await gateways[0].kill()

    def resumed() -> bool:
        return all(
            len(c.sessions) >= 2 and c.sessions[-1].node == 1 and c.sessions[-1].ready is not None
            for c in victims
        )

    took = await traffic.wait_until(resumed, 30, "every user of gw0 resumed on gw1")
    traffic.mark("users of gw0 resumed on gw1")
    await traffic.run_for(AFTER_S)
    report = await scenario.finish(
        killed,
        users_moved=len(victims),
        resumed_after_s=took,
        acks_after_kill=traffic.acks_between(killed, time.monotonic()),
    )

    for c in victims:
        second = c.sessions[1]
        assert second.node == 1
        # It resumed every room after what it had been given, not from the start.
        assert second.since == {r: max(s, seen_before[c.user][r]) for r, s in second.since.items()}
        assert any(s >= 0 for s in second.since.values()), (c.user, second.since)
    assert all(len(c.sessions) == 1 for c in others), "users of gw1 were not disturbed"
    assert report.reconnects == len(victims)


DRAIN_TIMEOUT_S = 10.0  # PARLEY_DRAIN_TIMEOUT of tests.faults.infra.gateway_env
EXIT_SLACK_S = 5.0


@pytest.mark.cluster
@pytest.mark.timeout(600)
async def test_rolling_restart_of_both_gateways_loses_nothing(scenario: Scenario) -> None:
    traffic, gateways = scenario.traffic, scenario.dep.gateways
    await traffic.run_for(BASELINE_S)
    first = time.monotonic()
    exits: list[tuple[int | None, float]] = []  # (exit code, seconds from SIGTERM to exit)
    resumed: list[float] = []
    for i, gw in enumerate(gateways):
        other = 1 - i
        leaving = {c.user for c in traffic.clients if c.connected_to == i}
        began = traffic.mark(f"SIGTERM gw{i}")

        def moved(leaving: set[str] = leaving, other: int = other) -> bool:
            return all(
                c.sessions[-1].node == other and c.sessions[-1].ready is not None
                for c in traffic.clients
                if c.user in leaving
            )

        # The users leave while the node drains: they resume on the other one
        # before this node has even exited.
        stopping = asyncio.create_task(gw.stop(timeout=DRAIN_TIMEOUT_S + 30))
        resumed.append(await traffic.wait_until(moved, 30, f"users of gw{i} resumed on gw{other}"))
        code = await stopping
        exits.append((code, time.monotonic() - began))
        traffic.mark(f"gw{i} exited ({code}) after {exits[-1][1]:.1f} s")
        await gw.start()
        traffic.mark(f"gw{i} started again")
        await traffic.run_for(5)
    await traffic.run_for(AFTER_S - 5)
    report = await scenario.finish(
        first,
        exit_codes=[code for code, _ in exits],
        exit_after_s=[round(took, 2) for _, took in exits],
        resumed_after_s=[round(r, 2) for r in resumed],
    )

    # The users close their sockets only after the test: every session that ended
    # so far was ended by a drain, with 1001. Every user was on the second node
    # when it drained, so each moved at least once.
    closes = [s.close_code for c in traffic.clients for s in c.sessions if s.closed is not None]
    assert all(len(c.sessions) >= 2 for c in traffic.clients)
    others = [
        (
            c.user,
            s.node,
            s.close_code,
            round(s.opened - traffic.t0, 2),
            round(s.closed - traffic.t0, 2),
        )
        for c in traffic.clients
        for s in c.sessions
        if s.closed is not None and s.close_code != 1001
    ]
    assert closes and not others, (others, traffic.marks)
    assert report.reconnects >= len(traffic.clients)
    # SIGTERM takes at most PARLEY_DRAIN_TIMEOUT (plus what exiting a process costs).
    for gw, (code, took) in zip(gateways, exits, strict=True):
        assert code == 0 and took < DRAIN_TIMEOUT_S + EXIT_SLACK_S, (
            f"{gw.node_id}: exit code {code} after {took:.1f} s;"
            f" its log ends:\n{gw.output()[-2500:]}"
        )
