"""The soak's verdict: what counts as growth, and from which minute."""

from __future__ import annotations

import asyncio
from array import array

from bench.soak import ProcSample, Sample, judge, percentiles

from bench import soak


def run(rss: list[float], fds: int = 50, p99: float = 40.0) -> list[Sample]:
    return [
        Sample(
            minute=m,
            acked=1000 * m,
            rate=1000.0,
            procs={"gw0": ProcSample(rss_mib=r, fds=fds)},
            pairs={"gw0": 1e5},
            ack_p50_ms=10.0,
            ack_p99_ms=p99,
            delivery_p50_ms=10.0,
            delivery_p99_ms=p99,
            load1=1.0,
        )
        for m, r in enumerate(rss, start=1)
    ]


def test_the_step_of_the_maps_first_compaction_is_before_the_steady_part() -> None:
    # A 5-minute window: maps fill to minute 5, the tables' one step at minute 8.
    rss = [100.0 + 40 * min(m, 5) + (50 if m >= 8 else 0) for m in range(1, 21)]
    verdict = judge(run(rss), window_min=5)
    assert verdict.judged_from == 12
    assert verdict.failures == [], verdict


def test_growth_in_the_steady_part_is_a_failure() -> None:
    rss = [300.0 + (10 * (m - 11) if m > 11 else 0) for m in range(1, 21)]
    verdict = judge(run(rss), window_min=5)
    assert verdict.failures and "gw0 RSS grew" in verdict.failures[0], verdict


def test_a_single_minute_past_the_p99_bar_is_a_failure_though_the_medians_hold() -> None:
    samples = run([300.0] * 20)
    samples[15].delivery_p99_ms = 956.0  # a stall of one minute, between the first and last 3
    verdict = judge(samples, window_min=5)
    assert verdict.failures == ["delivery_p99_ms passed 250 ms: 956 ms at minute 16"], verdict
    short = run([300.0] * 8)
    short[4].ack_p99_ms = 300.0
    assert judge(short, window_min=5).failures == ["ack_p99_ms passed 250 ms: 300 ms at minute 5"]


def test_the_first_minute_may_pass_the_bar_while_sessions_settle() -> None:
    samples = run([300.0] * 20)
    samples[0].ack_p99_ms = 400.0
    assert judge(samples, window_min=5).failures == []


def test_a_run_too_short_for_two_windows_and_six_minutes_is_not_judged() -> None:
    assert judge(run([100.0] * 16), window_min=5).judged_from is None


def test_percentiles_are_taken_in_another_process_from_seconds_to_ms() -> None:
    waits = array("d", [i / 1000 for i in range(1, 1001)])  # 1..1000 ms, shuffled below
    waits = array("d", sorted(waits, key=lambda v: (v * 7919) % 1))
    try:
        assert asyncio.run(percentiles(waits, (0.5, 0.99))) == [501.0, 991.0]
        assert asyncio.run(percentiles(array("d"), (0.5,))) == [0.0]
    finally:  # the sorting process is the test's to stop
        if soak._SORTER is not None:
            soak._SORTER.shutdown()
            soak._SORTER = None
