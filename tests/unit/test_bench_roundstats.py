"""The statistics of benchmarks/pitr.py (pooled p99 and throughput ratios with bootstrap intervals),
on distributions whose ratio is known: no etcd."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from roundstats import _Tails, quantile, quantile_ratio, rate_ratio

ROUNDS, PUTS = 12, 1700
P99_EXP = math.log(100)  # the p99 of an exponential of mean 1


def exp_rounds(rng: random.Random, scale: float, drift: list[float] | None = None) -> list[list[float]]:
    means = [scale * (drift[r] if drift else 1.0) for r in range(ROUNDS)]
    return [[rng.expovariate(1 / mean) for _ in range(PUTS)] for mean in means]


def test_a_resamples_pooled_quantile_is_the_quantile_of_the_pooled_values() -> None:
    rng = random.Random(1)
    rounds = [[rng.random() for _ in range(rng.randint(50, 300))] for _ in range(6)]
    tails = _Tails(rounds, 0.99)
    for _ in range(50):
        idx = rng.choices(range(6), k=6)
        assert tails.pooled(idx) == quantile([v for i in idx for v in rounds[i]], 0.99)


@pytest.mark.parametrize("true_ratio", [1.0, 1.05, 1.5])
def test_the_p99_interval_contains_the_known_ratio(true_ratio: float) -> None:
    rng = random.Random(7)
    got = quantile_ratio(exp_rounds(rng, true_ratio), exp_rounds(rng, 1.0), resamples=1000)
    assert got.low <= true_ratio <= got.high, got
    assert got.low < got.value < got.high
    # 12 x 1,700 puts resolve an exponential's p99 to a few per cent (its standard error ~1.4 %)
    assert (got.high - got.low) / got.value < 0.15, got
    if true_ratio == 1.5:
        assert not got.within(0.05) and got.low > 1.05
    if true_ratio == 1.0:
        assert got.within(0.08), got


def test_round_to_round_drift_widens_the_interval() -> None:
    """A machine whose speed changes between rounds (both modes alike, as alternating rounds see it)
    gives a wider interval than a steady one: the drift is counted, not averaged away as if each put
    were independent."""
    rng = random.Random(3)
    drift = [1 + 0.3 * rng.random() for _ in range(ROUNDS)]
    steady = quantile_ratio(exp_rounds(rng, 1.0), exp_rounds(rng, 1.0), resamples=1000)
    # a mode that drifts on its own (its rounds at other moments than the other's)
    drifting = quantile_ratio(exp_rounds(rng, 1.0, drift), exp_rounds(rng, 1.0), resamples=1000)
    assert drifting.high - drifting.low > 1.5 * (steady.high - steady.low), (steady, drifting)


def test_the_throughput_interval_contains_the_known_ratio() -> None:
    rng = random.Random(5)
    base = [rng.gauss(330, 10) for _ in range(ROUNDS)]
    got = rate_ratio([x * 0.97 + rng.gauss(0, 3) for x in base], base, resamples=1000)
    assert got.low <= 0.97 <= got.high, got
    assert got.within(0.05) and not got.within(0.01), got
    assert rate_ratio([400.0] * 4, [400.0] * 4).as_dict() == {"ratio": 1.0, "low": 1.0, "high": 1.0}


def test_unpaired_rounds_are_refused_with_what_to_do() -> None:
    with pytest.raises(ValueError, match="same number of rounds"):
        rate_ratio([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="at least 2"):
        quantile_ratio([[1.0]], [[1.0]])
    with pytest.raises(ValueError, match="at least one value"):
        quantile_ratio([[1.0], []], [[1.0], [2.0]])
