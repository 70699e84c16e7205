"""Token buckets per user, driven by an injected clock."""

from __future__ import annotations

from parley.gateway.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.allow("alice") for _ in range(4)] == [True, True, True, False]
    clock.now += 0.25  # half a token
    assert limiter.allow("alice") is False
    clock.now += 0.25  # a whole one: refusals did not consume it
    assert limiter.allow("alice") is True
    assert limiter.allow("alice") is False
    clock.now += 1.0
    assert [limiter.allow("alice") for _ in range(3)] == [True, True, False]


def test_keys_have_their_own_buckets() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, clock=clock)
    assert limiter.allow("alice") is True
    assert limiter.allow("alice") is False
    assert limiter.allow("bob") is True


def test_an_idle_bucket_fills_up_to_the_burst_only() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10.0, burst=5, clock=clock)
    for _ in range(5):
        assert limiter.allow("alice")
    clock.now += 3600
    assert sum(limiter.allow("alice") for _ in range(20)) == 5


def test_full_buckets_are_pruned_past_100k_keys() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock)
    for i in range(100_000):
        limiter.allow(f"u{i}")
    clock.now += 10  # every bucket is full again: nothing to remember
    assert limiter.allow("trigger") is True
    assert len(limiter._buckets) < 10
    assert [limiter.allow("u1") for _ in range(3)] == [True, True, False]
