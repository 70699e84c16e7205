"""SQLite, the embedded default: one connection on one thread of its own.

sqlite3 blocks, so every call runs on a single-thread executor, never on the
event loop; one thread also serializes writers, which SQLite wants anyway.
WAL mode lets the readers of other processes (a `parley worker`) run beside it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from parley.storage.base import StoreError, StoreUnavailable
from parley.storage.sql import Row, SqlStore, Statement, migrations, split_statements

T = TypeVar("T")


def _set_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL; the switch takes no busy timeout, so retry while another opens."""
    deadline = time.monotonic() + 10
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class SqliteStore(SqlStore):
    def __init__(self, path: Path | str) -> None:
        self._path = str(path)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._conn is None:
                raise StoreUnavailable("the SQLite store is not started")
            try:
                return fn(self._conn)
            except (sqlite3.IntegrityError, OverflowError) as exc:
                raise StoreError(f"sqlite: {exc}") from exc
            except sqlite3.OperationalError as exc:
                raise StoreUnavailable(f"sqlite: {exc}") from exc

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except RuntimeError as exc:  # the executor is shut down: the store is stopped
            raise StoreUnavailable("the SQLite store is stopped") from exc

    async def start(self) -> None:
        def open_and_migrate() -> None:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self._path, check_same_thread=False, isolation_level=None, timeout=5.0
            )
            _set_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("CREATE TABLE IF NOT EXISTS parley_schema (version INTEGER PRIMARY KEY)")
            done = {r[0] for r in conn.execute("SELECT version FROM parley_schema")}
            for version, sql in migrations():
                if version in done:
                    continue
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if (
                        conn.execute(
                            "SELECT 1 FROM parley_schema WHERE version = ?", (version,)
                        ).fetchone()
                        is None
                    ):
                        for statement in split_statements(sql):
                            conn.execute(statement)
                        conn.execute("INSERT INTO parley_schema VALUES (?)", (version,))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            self._conn = conn

        await asyncio.get_running_loop().run_in_executor(self._executor, open_and_migrate)

    async def stop(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)

    def _one_of(self, values: Sequence[str]) -> tuple[str, Any]:
        return "IN (SELECT value FROM json_each(?))", json.dumps(list(values))

    async def _fetch(self, query: str, *args: Any) -> list[Row]:
        return await self._run(lambda c: list(c.execute(query, args).fetchall()))

    async def _transaction(
        self, statements: Sequence[Statement], *, all_or_nothing: bool = False
    ) -> list[int]:
        def run(conn: sqlite3.Connection) -> list[int]:
            changed: list[int] = []
            conn.execute("BEGIN IMMEDIATE")
            try:
                for i, (query, rows) in enumerate(statements):
                    before = conn.total_changes
                    conn.executemany(query, rows)
                    changed.append(conn.total_changes - before)
                    if all_or_nothing and i == 0 and changed[0] == 0:
                        conn.execute("ROLLBACK")
                        return changed
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return changed

        return await self._run(run)
