"""Metrics helpers: percentiles, the log2 fit, Poisson counts, the resolve summary."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from simulations.metrics import fit_log2, percentiles, quantile_curve, summarise_resolves
from simulations.nodes import ResolveResult, aor_of, contact_uri
from simulations.workload import poisson


def test_percentiles_nearest_rank() -> None:
    values = list(range(1, 101))
    p = percentiles(values)
    assert (p["p50"], p["p90"], p["p95"], p["p99"], p["max"]) == (50, 90, 95, 99, 100)
    assert p["mean"] == 50.5
    assert percentiles([])["p50"] is None
    assert quantile_curve([3, 1, 2], points=3) == [1, 2, 3]
    assert quantile_curve([]) == []


def test_fit_log2_recovers_a_line() -> None:
    sizes = [100, 1000, 10_000, 100_000]
    fit = fit_log2(sizes, [0.5 + 0.25 * math.log2(n) for n in sizes])
    assert fit is not None
    assert fit["a"] == pytest.approx(0.5) and fit["b"] == pytest.approx(0.25)
    assert fit["r2"] == pytest.approx(1.0)
    assert fit_log2([100, 100], [1.0, 2.0]) is None


@pytest.mark.parametrize("mean", [0.3, 4.0, 120.0])
def test_poisson_mean_and_variance(mean: float) -> None:
    rng = random.Random(1)
    draws = [poisson(rng, mean) for _ in range(20_000)]
    assert statistics.mean(draws) == pytest.approx(mean, rel=0.03, abs=0.01)
    assert statistics.pvariance(draws) == pytest.approx(mean, rel=0.06, abs=0.02)
    assert poisson(rng, 0) == 0


def test_summary_skips_departed_readers_and_counts_failures() -> None:
    def r(outcome: str, ms: float, hops: int) -> ResolveResult:
        return ResolveResult(1, aor_of(1), outcome, 0.0, ms, hops, 5, 3, False)

    summary = summarise_resolves(
        [r("ok", 10, 1), r("ok", 30, 2), r("not-found", 500, 0), r("reader-left", 1, 0)]
    )
    assert summary["lookups"] == 3
    assert summary["success_rate"] == pytest.approx(2 / 3, abs=1e-6)
    assert summary["latency_ms"]["max"] == 30  # successes only
    assert summary["latency_all_ms"]["max"] == 500
    assert summary["hops_mean"] == 1.5
    assert summary["hops_histogram"] == {"1": 1, "2": 1}
    assert summary["outcomes"] == {"not-found": 1, "ok": 2, "reader-left": 1}


def test_names() -> None:
    assert aor_of(7) == "sip:u7@sim.p2psip.test"
    assert contact_uri(aor_of(7), ("10.0.0.8", 4000)) == "sip:u7@10.0.0.8:4000"
