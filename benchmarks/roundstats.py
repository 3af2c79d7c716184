"""Pooled figures of a benchmark run in alternating rounds, with bootstrap confidence intervals.

A round's p99 is its 17th slowest put of ~1,700: the rounds' p99s range over 30-80 % of their
median, so the median of them cannot tell a 5 % difference. Pooling every round of a mode gives a
p99 of ~20,000 puts; resampling whole rounds (never single puts) keeps what makes rounds differ
(the machine's other load, etcd's compaction and fsync moments) in the interval.

Rounds are resampled by index, the same indices for every mode: round r of each mode ran back to
back, so a slow minute that hits both stays paired (that is what alternating rounds are for).

Plain Python (the venv has no numpy): a pooled quantile needs only each round's slowest puts, so a
resample merges those, not every put.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Sequence
from dataclasses import dataclass

Rounds = Sequence[Sequence[float]]  # a mode's rounds, each its latencies (any order)


def quantile(xs: Sequence[float], p: float) -> float:
    """The benchmark's quantile: the element at int(p * n) of the sorted values (p99 of 1,700 puts:
    the 17th slowest)."""
    if not xs:
        raise ValueError("quantile of no values")
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


@dataclass(frozen=True)
class Interval:
    value: float  # the ratio on the rounds as measured
    low: float  # the bootstrap's 2.5th and 97.5th percentiles (for level 0.95)
    high: float

    def within(self, tolerance: float) -> bool:
        """Is the whole interval within 1 +- tolerance (a difference of at most that, shown)?"""
        return 1 - tolerance <= self.low and self.high <= 1 + tolerance

    def as_dict(self) -> dict[str, float]:
        return {"ratio": self.value, "low": self.low, "high": self.high}


class _Tails:
    """A mode's rounds kept as their slowest values, enough for a pooled quantile at p of any
    resample of them."""

    def __init__(self, rounds: Rounds, p: float) -> None:
        if not rounds or any(not r for r in rounds):
            raise ValueError("every round needs at least one value")
        self.p = p
        self.sizes = [len(r) for r in rounds]
        # A resample holds at most len(rounds) copies of the largest round: its pooled quantile is
        # the m-th largest of the pool, and no single round contributes more than m of those.
        most = len(rounds) * max(self.sizes)
        self.m = most - int(p * most)
        self.tops = [heapq.nlargest(self.m, r) for r in rounds]

    def pooled(self, idx: Sequence[int]) -> float:
        n = sum(self.sizes[i] for i in idx)
        m = n - min(n - 1, int(self.p * n))  # the quantile() element, counted from the top
        return heapq.nlargest(m, (v for i in idx for v in self.tops[i][:m]))[-1]


def _percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _interval(value: float, reps: list[float], level: float) -> Interval:
    a = (1 - level) / 2
    return Interval(value, _percentile(reps, a), _percentile(reps, 1 - a))


def _indices(rounds_a: Rounds, rounds_b: Rounds) -> int:
    if len(rounds_a) != len(rounds_b) or len(rounds_a) < 2:
        raise ValueError(
            f"paired rounds: {len(rounds_a)} and {len(rounds_b)} rounds given; run both modes the same "
            "number of rounds (at least 2, alternating)"
        )
    return len(rounds_a)


def quantile_ratio(
    with_: Rounds,
    without: Rounds,
    p: float = 0.99,
    *,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """The pooled p-quantile of `with_` over that of `without`, with its bootstrap interval."""
    k = _indices(with_, without)
    ta, tb = _Tails(with_, p), _Tails(without, p)
    every = range(k)
    rng = random.Random(seed)
    reps = []
    for _ in range(resamples):
        idx = rng.choices(every, k=k)
        reps.append(ta.pooled(idx) / tb.pooled(idx))
    return _interval(ta.pooled(every) / tb.pooled(every), reps, level)


def rate_ratio(
    with_: Sequence[float],
    without: Sequence[float],
    *,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Throughput pooled over the rounds (all puts over all seconds; rounds of equal length, so the
    mean of the rounds' rates) of `with_` over `without`, with its bootstrap interval."""
    k = _indices(with_, without)
    rng = random.Random(seed)
    reps = []
    for _ in range(resamples):
        idx = rng.choices(range(k), k=k)
        reps.append(sum(with_[i] for i in idx) / sum(without[i] for i in idx))
    return _interval(sum(with_) / sum(without), reps, level)
