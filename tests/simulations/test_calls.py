"""SIP call attempts in the simulation harness: resolve through the DHT, INVITE, ACK, BYE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from p2psip.locator.static import contact_from_uri
from simulations.__main__ import build_parser, main
from simulations.calls import SIP_PORT, CallAgent, call_aor, is_call_aor
from simulations.config import SimSettings
from simulations.errors import ConfigError
from simulations.network import ConstantLatency, VirtualNetwork, virtual_host
from simulations.nodes import derived_rng
from simulations.runner import run
from simulations.vloop import run_virtual


def _virtual(**changes: Any) -> SimSettings:
    base: dict[str, Any] = {
        "mode": "virtual",
        "nodes": 60,
        "seed": 3,
        "records": 20,
        "lookups": 20,
        "calls": 20,
        "call_nodes": 10,
        "quiet": True,
    }
    base.update(changes)
    return SimSettings(**base)


def test_call_aor_names() -> None:
    assert call_aor(7) == "sip:c7@calls.sim.p2psip.test"
    assert is_call_aor(call_aor(7))
    assert not is_call_aor("sip:u7@sim.p2psip.test")


def test_two_agents_call_over_the_virtual_network() -> None:
    network = VirtualNetwork(ConstantLatency(20.0), 0.0, None, derived_rng(1, "network"))

    async def scenario() -> tuple[str, float, int]:
        alice = CallAgent(0, 1, virtual=True)
        bob = CallAgent(1, 1, virtual=True)
        await alice.listen(virtual_host(0), SIP_PORT)
        address = await bob.listen(virtual_host(1), SIP_PORT)
        contact = contact_from_uri(f"sip:c1@{address[0]}:{address[1]}", source="dht")
        outcome, setup = await alice.call([contact], call_aor(1))
        answered = bob.answered
        await alice.close()
        await bob.close()
        return outcome, setup, answered

    outcome, setup, answered = run_virtual(scenario(), network)
    assert (outcome, answered) == ("ok", 1)
    assert setup == pytest.approx(0.040)  # INVITE out, 200 back: two 20 ms hops, no wall time
    totals = network.describe()  # INVITE, 200, ACK, BYE, 200: all on the virtual network
    assert totals["datagrams_delivered"] >= 5 and totals["datagrams_vanished"] == 0


def test_virtual_calls_all_succeed_and_repeat(tmp_path: Path) -> None:
    first = run(_virtual(out=tmp_path / "a"))
    second = run(_virtual())
    calls = first["calls"]
    assert calls["attempted"] == 20 and calls["call_nodes"] == 10
    assert calls["succeeded"] == 20 and calls["success_rate"] == 1.0
    assert calls["aor_publish_success_rate"] == 1.0
    assert calls["failures"] == {}
    # virtual milliseconds: a resolve and a set-up take at least one 10-50 ms round trip
    assert 20 <= calls["resolve_ms"]["p50"] <= calls["resolve_ms"]["p95"] < 2000
    assert 20 <= calls["setup_ms"]["p50"] <= calls["setup_ms"]["p95"] <= 100
    assert second["calls"] == calls  # same seed, same calls section
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["calls"] == calls
    assert "## Calls" in (tmp_path / "a" / "report.md").read_text()


def test_real_calls_succeed() -> None:
    results = run(
        SimSettings(
            mode="real",
            nodes=20,
            seed=2,
            records=10,
            lookups=20,
            calls=6,
            call_nodes=6,
            workers=2,
            quiet=True,
        )
    )
    calls = results["calls"]
    assert calls["attempted"] == 6 and calls["succeeded"] == 6
    assert calls["failures"] == {}
    assert calls["setup_ms"]["p50"] > 0 and calls["resolve_ms"]["p50"] > 0


def test_calls_to_vanished_callees_fail_with_a_reason() -> None:
    results = run(
        _virtual(
            calls=30,
            mass_failure=0.5,
            mass_failure_at=5.0,
            duration=60.0,
            tick=10.0,
            lookup_rate=1.0,
        )
    )
    calls = results["calls"]
    assert calls["attempted"] == 30
    assert calls["callee_departed"] > 0
    failed = calls["attempted"] - calls["succeeded"]
    assert failed > 0
    assert sum(calls["failures"].values()) == failed
    assert set(calls["failures"]) <= {
        "invite:timeout",
        "resolve:not-found",
        "resolve:refused",
        "resolve:timeout",
        "caller-left",
    }
    assert calls["success_rate_live"] == 1.0  # every callee that was up answered
    series = results["phases"]["events"]["timeseries"]
    assert sum(row["calls"] for row in series) == 30 - calls["failures"].get("caller-left", 0)
    assert all(0 <= row["calls_ok"] <= row["calls"] for row in series)


def test_call_records_are_refreshed_in_runs_longer_than_their_lifetime() -> None:
    results = run(_virtual(calls=30, duration=400.0, tick=20.0, lifetime=120.0, refresh=60.0))
    calls = results["calls"]
    assert calls["attempted"] == 30
    assert calls["success_rate_live"] == 1.0, calls["failures"]  # records outlived 120 s
    assert calls["aor_publish_success_rate"] == 1.0


@pytest.mark.parametrize(
    "changes",
    [{"calls": -1}, {"calls": 2.5}, {"calls": 5, "call_nodes": 1}, {"calls": 5, "call_nodes": 99}],
)
def test_bad_call_settings(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SimSettings(nodes=60, **changes)


def test_call_defaults_and_cli(tmp_path: Path) -> None:
    assert SimSettings(nodes=80, calls=5).call_nodes == 50
    assert SimSettings(nodes=30, calls=5).call_nodes == 30
    assert SimSettings(nodes=30).call_nodes == 0
    out = str(tmp_path / "x")
    argv = ["run", "--nodes", "40", "--out", out, "--calls", "7", "--call-nodes", "5"]
    args = build_parser().parse_args(argv)
    assert (args.calls, args.call_nodes) == (7, 5)
    bad = ["run", "--nodes", "40", "--out", out, "--calls", "3", "--call-nodes", "41", "--quiet"]
    assert main(bad) == 2
