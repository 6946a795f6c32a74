"""Real mode: UDP nodes on 127.0.0.1 in worker processes, same workload and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulations.config import SimSettings
from simulations.real import LOOPBACK
from simulations.runner import run


def test_real_nodes_on_loopback_resolve_everything(tmp_path: Path) -> None:
    assert LOOPBACK == "127.0.0.1"
    results = run(
        SimSettings(
            mode="real",
            nodes=40,
            seed=3,
            lookups=150,
            records=30,
            workers=2,
            quiet=True,
            out=tmp_path,
        )
    )
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["mode"] == "real" and on_disk["nodes"] == 40
    assert results["lookup_success_rate"] == 1.0
    assert results["outcomes"] == {"ok": 150}
    assert results["publish"]["success_rate"] == 1.0
    assert results["publish"]["replicas_per_record"]["p50"] == 20
    assert results["join"]["failures"] == 0
    assert results["traffic"]["datagrams_per_lookup"] > 0  # counted on the real sockets
    assert results["host"]["rss_per_node_bytes"] > 0
    assert "network" not in results
    assert (tmp_path / "latency_cdf.png").exists() and (tmp_path / "report.md").exists()


def test_real_mode_churn_with_loss_and_dropping_attackers() -> None:
    results = run(
        SimSettings(
            mode="real",
            nodes=40,
            seed=4,
            lookups=60,
            records=20,
            workers=2,
            quiet=True,
            churn=0.6,
            duration=4.0,
            tick=1.0,
            lookup_rate=10.0,
            loss=0.02,
            attack_share=0.1,
            attack="drop",
        )
    )
    events = results["phases"]["events"]
    assert len(events["timeseries"]) == 4
    assert sum(row["departures"] + row["arrivals"] for row in events["timeseries"]) > 0
    assert results["attack"]["requests_dropped"] > 0
    assert results["lookup_success_rate"] >= 0.95


@pytest.mark.parametrize("nodes", [48])
def test_real_and_virtual_modes_agree(nodes: int) -> None:
    """Same workload, same seed: success rates equal, mean hops within 0.1."""
    common = dict(nodes=nodes, seed=8, lookups=200, records=40, quiet=True)
    real = run(SimSettings(mode="real", workers=2, **common))
    virtual = run(SimSettings(mode="virtual", latency="constant:0.1", **common))
    assert real["lookup_success_rate"] == virtual["lookup_success_rate"] == 1.0
    assert abs(real["hops_mean"] - virtual["hops_mean"]) <= 0.1
    assert (
        real["publish"]["replicas_per_record"]["p50"]
        == virtual["publish"]["replicas_per_record"]["p50"]
    )
