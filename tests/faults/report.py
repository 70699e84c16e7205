"""Write the fault tests' figures into docs/reliability.md.

    .venv/bin/pytest tests/faults                  # appends one JSON line per test
    .venv/bin/python -m tests.faults.report        # rewrites the figures section

Each test appends its figures to $PARLEY_RELIABILITY_REPORT (default
.parley/reliability-results.jsonl); the newest line of each test becomes its
row. The document is written between `<!-- faults:start -->` and
`<!-- faults:end -->`, so the prose around it is kept; bench/soak.py writes
its own section the same way.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.faults.checker import ROOT, report_path

DOC = ROOT / "docs" / "reliability.md"

# test name -> (the fault, in words; the recovery figure and what it measures)
FAULTS: dict[str, tuple[str, str]] = {
    "test_no_fault_baseline": ("none (baseline)", "longest send → ack"),
    "test_a_broker_killed_and_restarted_leaders_move_nothing_lost": (
        "the broker leading most partitions SIGKILLed, restarted 10 s after they moved",
        "longest send → ack of a message sent from the kill on",
    ),
    "test_gateway_killed_its_users_resume_on_the_other_with_since": (
        "a gateway SIGKILLed (half the users on it)",
        "longest send → ack from the kill on",
    ),
    "test_persist_worker_killed_mid_batch_and_restarted": (
        "persistence worker SIGKILLed; 10 s later restarted, killed mid-batch, restarted",
        "longest send → ack from the kill on",
    ),
    "test_postgres_down_for_30s_gateways_keep_delivering": (
        "PostgreSQL stopped for 30 s",
        "longest send → ack from the stop on",
    ),
    "test_all_of_kafka_down_for_30s_sends_fail_then_everything_resumes": (
        "all three brokers SIGKILLed for 30 s",
        "longest send → ack (first send to final ack, retries included)",
    ),
    "test_rolling_restart_of_both_gateways_loses_nothing": (
        "rolling restart: SIGTERM + start, one gateway then the other",
        "longest send → ack from the first SIGTERM on",
    ),
}

# Figures of a row beyond the common ones: (key in the JSON line, label)
EXTRA: dict[str, list[tuple[str, str]]] = {
    "test_a_broker_killed_and_restarted_leaders_move_nothing_lost": [
        ("leaders_moved_after_s", "leaders moved after {} s"),
        ("acks_while_down", "{} acks with the broker down"),
        ("broker_restart_s", "broker restart took {} s"),
    ],
    "test_gateway_killed_its_users_resume_on_the_other_with_since": [
        ("users_moved", "{} users moved"),
        ("resumed_after_s", "all resumed on the other node {} s after the kill"),
    ],
    "test_persist_worker_killed_mid_batch_and_restarted": [
        ("backlog_at_restart", "backlog {} rows at restart"),
        ("history_caught_up_s", "history complete {} s after the last restart"),
    ],
    "test_postgres_down_for_30s_gateways_keep_delivering": [
        ("acks_during_outage", "{} acks"),
        ("deliveries_during_outage", "{} deliveries during the outage"),
        ("readyz_database_false", "/readyz `database: false` {} times"),
        ("ready_after_s", "ready {} s after the restart"),
        ("history_caught_up_s", "history complete {} s after the restart"),
    ],
    "test_all_of_kafka_down_for_30s_sends_fail_then_everything_resumes": [
        ("internal_errors_during_outage", "{} `internal` errors during the outage"),
        ("acks_during_outage", "{} acks during it"),
        ("cluster_start_s", "cluster start took {} s"),
        ("first_ack_after_restart_s", "first ack {} s after it served"),
    ],
    "test_rolling_restart_of_both_gateways_loses_nothing": [
        ("exit_after_s", "SIGTERM → exit {} s"),
        ("resumed_after_s", "users resumed elsewhere after {} s"),
    ],
}


def load(path: Path) -> dict[str, dict[str, Any]]:
    """The newest entry of each test."""
    latest: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                latest[entry["test"]] = entry
    return latest


def _row(name: str, e: Mapping[str, Any]) -> str:
    f = e["figures"]
    fault, _ = FAULTS.get(name, (name, ""))
    notes = [label.format(e[key]) for key, label in EXTRA.get(name, []) if key in e]
    if e.get("problems"):
        notes.insert(0, "**FAILED**: " + "; ".join(e["problems"])[:300])
    return (
        f"| {fault} | {f['sent']} | {f['acked']} | {f['delivered']} | {f['lost']}"
        f" | {f['duplicated']} | {f['out_of_order']} | {f['in_db']}/{f['acked']}"
        f" | {f['internal_errors']} / {f['retries']} | {f['reconnects']}"
        f" | {e.get('recovery_s', 0):.1f} s | {f['ack_p50_ms']:.0f} / {f['ack_p99_ms']:.0f}"
        f" | {'; '.join(notes)} | {e['at'][:16].replace('T', ' ')} |"
    )


def render(entries: Mapping[str, Mapping[str, Any]]) -> str:
    head = (
        "| fault | sent | acked | delivered | lost | dup | out of order | in DB"
        " | `internal` / retries | reconnects | recovery | ack p50 / p99 ms | more | run (UTC) |\n"
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|"
    )
    order = [n for n in FAULTS if n in entries] + sorted(set(entries) - set(FAULTS))
    return "\n".join([head, *(_row(n, entries[n]) for n in order)])


def replace_section(doc: Path, name: str, body: str) -> None:
    """Put `body` between the section's markers (appended at the end when absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = doc.read_text() if doc.exists() else ""
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=report_path())
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(list(argv) if argv is not None else None)
    entries = load(args.results)
    if not entries:
        raise SystemExit(f"no results in {args.results}: run .venv/bin/pytest tests/faults first")
    replace_section(args.doc, "faults", render(entries))
    print(f"{args.doc}: figures of {len(entries)} tests from {args.results}")


if __name__ == "__main__":
    main()
