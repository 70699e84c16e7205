"""Did every acked message reach every member exactly once, in order, and the database?

`check()` compares what the users of a `Traffic` run recorded (tests/faults/user.py) with each other
and with the database: an acked message that some member never got is
*lost*; a message given twice to one user (the same seq, or the same
sender and client_id under another seq) is *duplicated*; a seq lower than one given before in
the same room is *out of order*; an acked message with no row, or with a row
or a delivered copy that disagrees with its ack, is a false ack. Zero of each
is the bar. `record()` appends a run's figures to a JSON-lines file, from
which docs/reliability.md is written.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from tests.faults.traffic import Traffic
from tests.faults.user import AckInfo, body_of, client_id_of, number_of

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REPORT = ROOT / ".parley" / "reliability-results.jsonl"


# The check ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    room: str
    seq: int
    id: str
    sender: str
    client_id: str
    body: str


async def fetch_rows(database_url: str, rooms: Sequence[str]) -> list[Row]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT room_id, seq, id, sender, client_id, body FROM messages"
            " WHERE room_id = ANY($1::text[]) ORDER BY room_id, seq",
            list(rooms),
        )
    finally:
        await conn.close()
    return [Row(r[0], int(r[1]), r[2], r[3], r[4], r[5]) for r in rows]


async def count_rows(database_url: str, rooms: Sequence[str] | None = None) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        if rooms is None:
            return int(await conn.fetchval("SELECT count(*) FROM messages"))
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM messages WHERE room_id = ANY($1::text[])", list(rooms)
            )
        )
    finally:
        await conn.close()


async def wait_persisted(
    traffic: Traffic, database_url: str, timeout: float = 60.0, *, acked_before: float | None = None
) -> tuple[list[Row], float]:
    """Rows of the run once every acked message (acked before `acked_before`, if given) has
    one, or at the timeout; (rows, seconds waited). Polls while PostgreSQL may still be down."""
    began = time.monotonic()
    stats = traffic.stats
    end = len(stats.ack_n) if acked_before is None else bisect_right(stats.ack_at, acked_before)
    wanted = set(stats.ack_n[:end])
    rooms = traffic.topology.rooms
    rows: list[Row] = []
    while True:
        late = time.monotonic() - began > timeout
        try:
            # Count first (cheap), read every row only once there can be enough.
            if late or await count_rows(database_url, rooms) >= len(wanted):
                rows = await fetch_rows(database_url, rooms)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            rows = []
        if late or wanted <= {number_of(r.client_id) for r in rows}:
            return rows, time.monotonic() - began
        await asyncio.sleep(0.25)


def _pct(values: Sequence[float] | array[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Report:
    """The figures of one run; `problems()` lists what breaks the guarantees."""

    sent: int
    acked: int
    attempts: int
    retries: int
    internal_errors: int
    delivered: int
    expected_deliveries: int
    lost: int
    lost_messages: int
    duplicated: int
    out_of_order: int
    unacked: int
    in_db: int
    missing_in_db: int
    db_mismatch: int
    db_unacked: int
    delivery_mismatch: int
    ack_conflicts: int
    unexpected: int
    reconnects: int
    truncated_resumes: int
    subscribe_errors: int
    reply_timeouts: int
    duration_s: float
    ack_p50_ms: float
    ack_p99_ms: float
    max_ack_wait_s: float
    examples: dict[str, list[str]] = field(default_factory=dict)

    def problems(self) -> list[str]:
        out = []
        for name in (
            "lost",
            "duplicated",
            "out_of_order",
            "unacked",
            "missing_in_db",
            "db_mismatch",
            "delivery_mismatch",
            "ack_conflicts",
            "unexpected",
            "truncated_resumes",
        ):
            value = getattr(self, name)
            if value:
                out.append(f"{name}={value} e.g. {self.examples.get(name, [])[:5]}")
        if self.delivered != self.expected_deliveries + self.duplicated:
            out.append(f"delivered {self.delivered} != expected {self.expected_deliveries}")
        return out

    def figures(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("examples")
        return out


def check(traffic: Traffic, rows: Sequence[Row]) -> Report:
    """Judge a run from its records and the `messages` rows of its rooms.

    One room at a time, so that a soak's millions of deliveries never need
    more than one room's worth of sets.
    """
    examples: dict[str, list[str]] = {}

    def example(kind: str, text: str) -> None:
        if len(examples.setdefault(kind, [])) < 10:
            examples[kind].append(text)

    stats = traffic.stats
    acks: dict[int, tuple[str, AckInfo]] = {
        n: (c.user, a) for c in traffic.clients for n, a in c.acks.items()
    }
    by_room: dict[str, list[int]] = {room: [] for room in traffic.topology.rooms}
    for n, (_, ack) in acks.items():
        by_room.setdefault(ack.room, []).append(n)

    duplicated = out_of_order = delivery_mismatch = lost = 0
    lost_ids: set[int] = set()
    for room, members in traffic.topology.room_members().items():
        for member in members:
            client = next(c for c in traffic.clients if c.user == member)
            given: set[int] = set()
            seqs: set[int] = set()
            top = -1
            for seq, n in zip(client.got_seq[room], client.got_n[room], strict=True):
                if n in given or seq in seqs:
                    duplicated += 1
                    example("duplicated", f"{member} {room}: seq {seq} (message {n}) again")
                    continue
                given.add(n)
                seqs.add(seq)
                if seq < top:
                    out_of_order += 1
                    example("out_of_order", f"{member} {room}: seq {seq} after {top}")
                top = max(top, seq)
                sender_ack = acks.get(n)
                if sender_ack is not None and (sender_ack[1].room, sender_ack[1].seq) != (
                    room,
                    seq,
                ):
                    # What the members got is not the message its sender was acked.
                    delivery_mismatch += 1
                    example("delivery_mismatch", f"{member} got {n} as {room}/{seq}: {sender_ack}")
            for n in by_room.get(room, ()):
                if n not in given:
                    lost += 1
                    lost_ids.add(n)
                    sender, ack = acks[n]
                    example("lost", f"{member} never got {sender}/{client_id_of(n)} ({ack})")
    delivery_mismatch += stats.bad_bodies

    # The database: every acked message has its row, with the ack's room, seq and id.
    by_number = {number_of(r.client_id): r for r in rows}
    missing_in_db = db_mismatch = 0
    for n, (sender, ack) in acks.items():
        row = by_number.get(n)
        if row is None:
            missing_in_db += 1
            example("missing_in_db", f"{sender}/{client_id_of(n)} acked as {ack}")
        elif (row.room, row.seq, row.id, row.sender) != (ack.room, ack.seq, ack.id, sender):
            db_mismatch += 1
            example("db_mismatch", f"{sender}/{client_id_of(n)}: ack {ack}, row {row}")
        elif row.body != body_of(sender, n, ack.room):
            db_mismatch += 1
            example("db_mismatch", f"{sender}/{client_id_of(n)}: stored body {row.body!r}")
    db_unacked = sum(1 for n in by_number if n not in acks)
    if len(by_number) != len(rows):
        db_mismatch += len(rows) - len(by_number)
        example("db_mismatch", "a client_id has several rows")

    unacked = 0
    for c in traffic.clients:
        for n, out in c.pending.items():
            unacked += 1
            example("unacked", f"{c.user}/{client_id_of(n)} ({out.room}, {out.attempts} sends)")
    for i, text in enumerate(stats.unexpected[:10]):
        example("unexpected", f"{i}: {text}")
    for text in stats.ack_conflicts[:10]:
        example("ack_conflicts", text)
    waits = stats.ack_wait
    sessions = sum(len(c.sessions) for c in traffic.clients)
    return Report(
        sent=traffic.sent(),
        acked=len(acks),
        attempts=stats.attempts,
        retries=stats.retries,
        internal_errors=stats.internal_errors,
        delivered=stats.delivered,
        expected_deliveries=sum(traffic.stats.room_size[a.room] for _, a in acks.values()),
        lost=lost,
        lost_messages=len(lost_ids),
        duplicated=duplicated,
        out_of_order=out_of_order,
        unacked=unacked,
        in_db=len(acks) - missing_in_db,
        missing_in_db=missing_in_db,
        db_mismatch=db_mismatch,
        db_unacked=db_unacked,
        delivery_mismatch=delivery_mismatch,
        ack_conflicts=len(stats.ack_conflicts),
        unexpected=len(stats.unexpected),
        reconnects=sessions - len(traffic.clients),
        truncated_resumes=stats.truncated_resumes,
        subscribe_errors=stats.subscribe_errors,
        reply_timeouts=stats.reply_timeouts,
        duration_s=round(time.monotonic() - traffic.t0, 1),
        ack_p50_ms=round(_pct(waits, 0.5) * 1000, 1),
        ack_p99_ms=round(_pct(waits, 0.99) * 1000, 1),
        max_ack_wait_s=round(max(waits, default=0.0), 2),
        examples=examples,
    )


# Recording -----------------------------------------------------------------------------------


def report_path() -> Path:
    return Path(os.environ.get("PARLEY_RELIABILITY_REPORT") or DEFAULT_REPORT)


def record(test: str, report: Report, traffic: Traffic, **extra: Any) -> None:
    """Append the run's figures as one JSON line (docs/reliability.md is written from these)."""
    path = report_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {
        "test": test,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rate": traffic.rate,
        "users": len(traffic.clients),
        "rooms": len(traffic.topology.rooms),
        "figures": report.figures(),
        "marks": traffic.marks,
        "problems": report.problems(),
        **{k: (round(v, 2) if isinstance(v, float) else v) for k, v in extra.items()},
    }
    with path.open("a") as f:
        f.write(json.dumps(line) + "\n")


def log_lines(logs: Mapping[str, str], words: Sequence[str] = ("WARNING", "ERROR")) -> str:
    """The lines of the nodes' logs worth showing when a check fails."""
    out: list[str] = []
    for name, text in logs.items():
        picked = [line for line in text.splitlines() if any(w in line for w in words)]
        out.extend(f"[{name}] {line}" for line in picked[-25:])
    return "\n".join(out)


def assert_clean(report: Report, logs: Callable[[], Mapping[str, str]]) -> None:
    """The bar: nothing lost, duplicated or out of order, every ack true and in the database."""
    problems = report.problems()
    if problems:
        raise AssertionError(
            "the guarantees broke:\n  "
            + "\n  ".join(problems)
            + f"\nfigures: {report.figures()}\nnode logs:\n{log_lines(logs())}"
        )
