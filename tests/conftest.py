"""Fixtures: the real broker and database (`make services`), and clusters of nodes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Generator, Iterator, Mapping
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from tests.harness import Cluster, ServerProcess, base_env
from tests.topics import drop_topics, scratch_name, sweep_test_topics

ROOT = Path(__file__).resolve().parent.parent


def _services() -> dict[str, str]:
    """The broker and database URLs: from `make test`, or started here."""
    kafka = os.environ.get("PARLEY_TEST_KAFKA_BOOTSTRAP")
    db = os.environ.get("PARLEY_TEST_DATABASE_URL")
    if kafka and db:
        return {"kafka": kafka, "db": db}
    out = (
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "services.sh"), "start"],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()
    )
    values = dict(line.split("=", 1) for line in out[-2:])
    os.environ["PARLEY_TEST_KAFKA_BOOTSTRAP"] = values["PARLEY_KAFKA_BOOTSTRAP"]
    os.environ["PARLEY_TEST_DATABASE_URL"] = values["PARLEY_DATABASE_URL"]
    return {"kafka": values["PARLEY_KAFKA_BOOTSTRAP"], "db": values["PARLEY_DATABASE_URL"]}


@pytest.fixture(scope="session")
def services() -> dict[str, str]:
    return _services()


@pytest.fixture(scope="session")
def kafka_bootstrap(services: dict[str, str]) -> str:
    return services["kafka"]


@contextlib.asynccontextmanager
async def pg_database(admin: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"parley_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    yield admin.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def pg_url(services: dict[str, str]) -> AsyncIterator[str]:
    async with pg_database(services["db"]) as url:
        yield url


# Topic prefixes made by the test that runs now (tests.topics: dropped after it).
_made_prefixes: list[str] = []


def new_prefix() -> str:
    prefix = scratch_name("t", 6)
    _made_prefixes.append(prefix)
    return prefix


@pytest.fixture(autouse=True)
def _drop_test_topics() -> Iterator[None]:
    """Set up first, torn down last: the test's nodes have stopped when this runs."""
    yield
    made = list(_made_prefixes)
    _made_prefixes.clear()
    kafka = os.environ.get("PARLEY_TEST_KAFKA_BOOTSTRAP")
    if made and kafka:
        with contextlib.suppress(Exception):  # a broker a fault test stopped
            drop_topics(kafka, [p + "." for p in made])


def pytest_sessionstart(session: pytest.Session) -> None:
    """Before any test (on xdist's controller only): topics a killed run left.

    Only where `make test` asks for it (PARLEY_TEST_SWEEP_TOPICS=1): a pytest
    run by hand beside another run on the same broker must not take its topics.
    """
    kafka = os.environ.get("PARLEY_TEST_KAFKA_BOOTSTRAP")
    sweep = os.environ.get("PARLEY_TEST_SWEEP_TOPICS") == "1"
    if kafka and sweep and not hasattr(session.config, "workerinput"):
        with contextlib.suppress(Exception):
            sweep_test_topics(kafka)


@pytest.fixture
def prefix() -> str:
    return new_prefix()


async def _cluster(
    backend: str, size: int, tmp_path: Path, kafka: str | None, db: str | None
) -> Cluster:
    database = db or f"sqlite:///{tmp_path / 'parley.db'}"
    env = base_env(new_prefix(), kafka, database, tmp_path / "data")
    nodes = [
        ServerProcess(env=dict(env), node_id=f"n{i}", log_path=tmp_path / f"node{i}.log")
        for i in range(size)
    ]
    cluster = Cluster(backend, nodes, aiohttp.ClientSession())
    try:
        for n in nodes:
            await n.start()
    except BaseException:
        await cluster.close()
        raise
    return cluster


@pytest.fixture(params=["embedded", "kafka"])
async def cluster(
    request: pytest.FixtureRequest, tmp_path: Path, services: dict[str, str]
) -> AsyncIterator[Cluster]:
    """The protocol suite's target: the embedded log + SQLite, and Kafka + PostgreSQL."""
    if request.param == "embedded":
        c = await _cluster("embedded", 1, tmp_path, None, None)
        try:
            yield c
        finally:
            await c.close()
        return
    async with pg_database(services["db"]) as db:
        c = await _cluster("kafka", 1, tmp_path, services["kafka"], db)
        try:
            yield c
        finally:
            await c.close()


@pytest.fixture
async def two_nodes(
    tmp_path: Path, services: dict[str, str], pg_url: str
) -> AsyncIterator[Cluster]:
    """Two gateway nodes on one Kafka and one PostgreSQL."""
    c = await _cluster("kafka", 2, tmp_path, services["kafka"], pg_url)
    yield c
    await c.close()


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


@contextlib.asynccontextmanager
async def own_cluster(
    backend: str,
    tmp_path: Path,
    services: dict[str, str] | None = None,
    *,
    name: str = "own",
    drop: tuple[str, ...] = (),
    settings: Mapping[str, str] | None = None,
    **extra: str,
) -> AsyncIterator[Cluster]:
    """One node with extra (or without some) PARLEY_* settings, on either backend."""
    async with contextlib.AsyncExitStack() as stack:
        if backend == "kafka":
            assert services is not None, "a Kafka node needs the services fixture"
            kafka: str | None = services["kafka"]
            db = await stack.enter_async_context(pg_database(services["db"]))
        else:
            kafka, db = None, f"sqlite:///{tmp_path / (name + '.db')}"
        env = base_env(new_prefix(), kafka, db, tmp_path / f"data-{name}")
        for key in drop:
            env.pop(key, None)
        env.update(settings or {})
        env.update(extra)
        node = ServerProcess(env=env, node_id=name, log_path=tmp_path / f"{name}.log")
        cluster = Cluster(backend, [node], aiohttp.ClientSession())
        stack.push_async_callback(cluster.close)
        await node.start()
        yield cluster


# Every test that starts a three-broker cluster runs on one xdist worker (`make
# test` runs two), one after the other: two clusters at once, six JVMs beside
# the gateways and the traffic, would overload a 2-core machine.
_ONE_CLUSTER = ("tests/faults/", "tests/e2e/test_kafka_cluster.py")
_UNGROUPED = pytest.StashKey[list[str]]()


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> Iterator[None]:
    for item in items:
        if item.nodeid.startswith(_ONE_CLUSTER):
            item.add_marker(pytest.mark.xdist_group("kafka-cluster"))
    yield  # xdist's worker suffixes each grouped test's id with "@<group>" here
    # A pytest that xdist does not keep up with can drop the suffix, and with
    # it the grouping, without a word (pytest-dev/pytest-xdist#1386): two
    # workers would then each start a three-broker cluster and a bench run.
    if getattr(config.option, "loadgroup", False):
        config.stash[_UNGROUPED] = [
            i.nodeid
            for i in items
            if (groups := sorted({str(m.args[0]) for m in i.iter_markers("xdist_group")}))
            and not i.nodeid.endswith("@" + "_".join(groups))
        ]


@pytest.fixture(scope="session", autouse=True)
def _xdist_groups_hold(pytestconfig: pytest.Config) -> None:
    """Fails every test, with the reason, when xdist's groups were lost (above)."""
    lost = pytestconfig.stash.get(_UNGROUPED, [])
    if lost:
        pytest.fail(
            f"--dist loadgroup did not group {len(lost)} tests (first: {lost[0]});"
            " see the pytest pin in pyproject.toml",
            pytrace=False,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report carries the tails of its servers' logs.

    A flake seen once in CI is only explained by what the nodes logged, and
    the test's directory is gone by the time anyone reads the report.
    """
    report: pytest.TestReport = yield
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if report.failed and isinstance(tmp, Path):
        for log in sorted(tmp.rglob("*.log"))[:6]:
            lines = log.read_text(errors="replace").splitlines()[-60:]
            report.sections.append((f"{log.relative_to(tmp)} (last 60 lines)", "\n".join(lines)))
    return report
