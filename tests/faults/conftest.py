"""Fixtures of the fault tests: the cluster, a private PostgreSQL, a running scenario.

The three-broker cluster (a private instance of scripts/kafka-cluster.sh, on
free ports) and the private PostgreSQL live for the session: both are created
in temporary directories, started once, stopped and deleted at the end. Each
test gets its own prefix (topics, groups), its own database, two gateways, a
persistence worker and steady traffic already flowing (`scenario`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.faults.checker import Report, assert_clean, check, record, wait_persisted
from tests.faults.infra import Deployment, KafkaCluster, PrivatePostgres, deployment
from tests.faults.traffic import Topology, Traffic

RATE = 30.0  # messages per second over all users: steady, well below what a node takes
USERS, ROOMS = 20, 10


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[KafkaCluster]:
    cluster = KafkaCluster()
    try:
        cluster.start_sync()
        yield cluster
    finally:
        # The tests stop what they start (also when the start failed half-way).
        cluster.stop_sync()


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres.create()
    try:
        pg.start_sync()
        yield pg
    finally:
        pg.remove()


@pytest.fixture
async def fault_db(private_pg: PrivatePostgres) -> AsyncIterator[str]:
    """A fresh database on the private server for one test, dropped afterwards."""
    if not private_pg.running_sync():  # an earlier test failed during its outage
        await private_pg.start()
    name = f"parley_f_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(private_pg.admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield private_pg.url(name)
    if not private_pg.running_sync():
        await private_pg.start()
    conn = await asyncpg.connect(private_pg.admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass
class Scenario:
    """One fault test's world: cluster, database, nodes and the traffic through them."""

    name: str
    cluster: KafkaCluster
    pg: PrivatePostgres
    dep: Deployment
    traffic: Traffic

    async def finish(self, fault_at: float, **extra: Any) -> Report:
        """Stop sending, let everything settle, check, record the figures, assert the bar.

        `fault_at` (monotonic) is when the fault began: the recovery time is the
        longest any message created from then on waited for its ack.
        """
        traffic = self.traffic
        await traffic.stop_sending()
        await traffic.settle()
        rows, waited = await wait_persisted(traffic, self.dep.database_url, 60)
        report = check(traffic, rows)
        record(
            self.name,
            report,
            traffic,
            recovery_s=traffic.worst_wait(fault_at),
            persisted_after_s=waited,
            **extra,
        )
        assert_clean(report, self.dep.logs)
        return report


@pytest.fixture
async def scenario(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    kafka_cluster: KafkaCluster,
    private_pg: PrivatePostgres,
    fault_db: str,
    prefix: str,
) -> AsyncIterator[Scenario]:
    """Two gateways and a worker with 20 users in 10 rooms sending 30 msgs/s, flowing."""
    began = time.monotonic()
    await kafka_cluster.start()  # all three serving, whatever an earlier test left
    topology = Topology.make(USERS, ROOMS)
    async with deployment(tmp_path, kafka_cluster.bootstrap, fault_db, prefix) as dep:
        await dep.create_rooms(topology.room_members())
        traffic = Traffic(dep.gateways, topology, RATE)
        try:
            await traffic.start()
            traffic.mark(f"set up in {time.monotonic() - began:.1f} s")
            yield Scenario(request.node.name, kafka_cluster, private_pg, dep, traffic)
        finally:
            await traffic.close()
