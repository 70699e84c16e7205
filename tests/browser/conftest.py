"""Fixtures of the browser tests: Debian's Chromium under Playwright, and dev nodes.

The browser is the distribution's `/usr/bin/chromium`, driven through
`executable_path`; `scripts/chromium.sh` installs it with apt-get when it is
absent. Playwright never downloads a browser here, and these tests never skip:
a machine that cannot run Chromium fails them.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, async_playwright, expect

from tests.browser.pages import ChatPage
from tests.conftest import ROOT, new_prefix
from tests.harness import Cluster, ServerProcess, base_env

CHROMIUM = Path("/usr/bin/chromium")

# Reconnects and polls take seconds, not the 5 s Playwright waits by default.
expect.set_options(timeout=20_000)

OpenPage = Callable[..., Awaitable[ChatPage]]


@pytest.fixture(scope="session")
def chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        out = subprocess.run(
            ["bash", str(ROOT / "scripts" / "chromium.sh")],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert out.stdout.strip().splitlines()[-1] == str(CHROMIUM), out.stdout
    return str(CHROMIUM)


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Where a test's screenshots go (pytest keeps the last runs' tmp dirs)."""
    return tmp_path / "screenshots"


@pytest.fixture
async def open_page(browser: Browser, shots: Path) -> AsyncIterator[OpenPage]:
    """Open the page of one node as one user, in a browser context of their own."""
    opened: list[ChatPage] = []

    async def open_(node: ServerProcess, user: str, height: int = 720) -> ChatPage:
        page = await ChatPage.open(browser, node, user, shots, height)
        opened.append(page)
        return page

    yield open_
    for page in opened:
        await page.close()


@contextlib.asynccontextmanager
async def dev_nodes(
    tmp_path: Path, kafka: str, database_url: str, size: int = 2, **settings: str
) -> AsyncIterator[Cluster]:
    """`size` dev nodes (POST /api/dev/token on) of one cluster: Kafka and PostgreSQL."""
    env = base_env(new_prefix(), kafka, database_url, tmp_path / "data")
    env.update(PARLEY_DEV="1", **settings)
    nodes = [
        ServerProcess(env=dict(env), node_id=f"n{i}", log_path=tmp_path / f"node{i}.log")
        for i in range(size)
    ]
    cluster = Cluster("kafka", nodes, aiohttp.ClientSession())
    try:
        for node in nodes:
            await node.start()
        yield cluster
    finally:
        await cluster.close()


@pytest.fixture
async def web_cluster(
    tmp_path: Path, services: dict[str, str], pg_url: str
) -> AsyncIterator[Cluster]:
    """Two dev nodes. A replay cap of 10 makes every resume past 10 messages page back."""
    async with dev_nodes(tmp_path, services["kafka"], pg_url, PARLEY_REPLAY_CAP="10") as c:
        yield c
