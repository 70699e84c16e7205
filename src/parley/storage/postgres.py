"""PostgreSQL through asyncpg, a connection pool on the event loop.

The shared queries use `?`; asyncpg wants `$1`, so each is translated once
and cached. Connection loss or a server error raises StoreUnavailable.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from parley.protocol.messages import ChatMessage
from parley.storage.base import StoreError, StoreUnavailable
from parley.storage.sql import Row, SqlStore, Statement, migrations, split_statements

_MIGRATION_LOCK = 0x5A11E7  # pg_advisory_xact_lock key: one migrator at a time


@functools.lru_cache(maxsize=256)
def to_dollar(query: str) -> str:
    counter = iter(range(1, 1000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", query)


_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
# A constraint the caller broke: retrying cannot help.
_INTEGRITY = asyncpg.IntegrityConstraintViolationError


async def _keep_session(conn: Any) -> None:
    """Parley keeps no session state (no LISTEN, cursors, SET or session locks),
    so a connection goes back to the pool without asyncpg's reset round trip."""


class PostgresStore(SqlStore):
    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10) -> None:
        self._dsn = dsn
        self._min = min_size
        self._max = max_size
        self._pool: Any = None

    async def start(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min,
                max_size=self._max,
                command_timeout=30,
                reset=_keep_session,
            )
        except _ERRORS as exc:
            raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS parley_schema (version INTEGER PRIMARY KEY)"
            )
            done = {r[0] for r in await conn.fetch("SELECT version FROM parley_schema")}
            for version, sql in migrations():
                if version not in done:
                    for statement in split_statements(sql):
                        await conn.execute(statement)
                    await conn.execute("INSERT INTO parley_schema VALUES ($1)", version)

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def _one_of(self, values: Sequence[str]) -> tuple[str, Any]:
        return "= ANY(?::text[])", list(values)

    async def _fetch(self, query: str, *args: Any) -> list[Row]:
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not started")
        try:
            rows = await self._pool.fetch(to_dollar(query), *args)
        except _ERRORS as exc:
            raise StoreUnavailable(f"postgres: {exc}") from exc
        return [tuple(r) for r in rows]

    async def _transaction(
        self, statements: Sequence[Statement], *, all_or_nothing: bool = False
    ) -> list[int]:
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not started")
        changed: list[int] = []
        try:
            async with self._pool.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                try:
                    for i, (query, rows) in enumerate(statements):
                        n = 0
                        sql = to_dollar(query)
                        if len(rows) == 1:
                            status = await conn.execute(sql, *rows[0])
                            n = int(status.rsplit(" ", 1)[-1]) if status[-1].isdigit() else 0
                        else:
                            n = await self._execute_many(conn, sql, rows)
                        changed.append(n)
                        if all_or_nothing and i == 0 and n == 0:
                            await tx.rollback()
                            return changed
                except BaseException:
                    await tx.rollback()
                    raise
                await tx.commit()
        except _INTEGRITY as exc:
            raise StoreError(f"postgres: {exc}") from exc
        except _ERRORS as exc:
            raise StoreUnavailable(f"postgres: {exc}") from exc
        return changed

    async def save_messages(
        self,
        messages: Sequence[ChatMessage],
        progress: tuple[str, Mapping[int, int]] | None = None,
    ) -> int:
        """One INSERT … SELECT FROM unnest(…) per batch: a round trip per batch, not per row.

        unnest keeps the array order, so rows are inserted in (room, seq)
        order and the first record of a retried send is the one kept.
        """
        if not messages and progress is None:
            return 0
        statements = self._save_statements(messages, progress)
        _, rows = statements[0]
        columns = list(zip(*rows, strict=True)) if rows else [()] * 7
        insert = (
            "INSERT INTO messages (room_id, id, seq, sender, body, ts_ms, client_id)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[],"
            " $5::text[], $6::bigint[], $7::text[]) ON CONFLICT DO NOTHING"
        )
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not started")
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                status = await conn.execute(insert, *[list(c) for c in columns])
                for query, args in statements[1:]:
                    if args:
                        await conn.executemany(to_dollar(query), args)
        except _ERRORS as exc:
            raise StoreUnavailable(f"postgres: {exc}") from exc
        return int(status.rsplit(" ", 1)[-1])

    @staticmethod
    async def _execute_many(conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """executemany, counting rows changed (asyncpg's executemany reports none)."""
        if not rows:
            return 0
        counted = sql + " RETURNING 1" if sql.lstrip().upper().startswith("INSERT") else None
        if counted is None:
            await conn.executemany(sql, rows)
            return len(rows)
        stmt = await conn.prepare(counted)
        total = 0
        for row in rows:
            total += len(await stmt.fetch(*row))
        return total
