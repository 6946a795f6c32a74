"""Run one simulation and write its outputs (``results.json``, ``report.md``, plots)."""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Any

from simulations.config import SimSettings
from simulations.metrics import build_results
from simulations.network import VirtualNetwork, virtual_host
from simulations.nodes import VIRTUAL_EPOCH, NodeHost, derived_rng
from simulations.progress import Progress
from simulations.vloop import run_virtual
from simulations.workload import LocalCluster, RunRecord, Workload

__all__ = ["VIRTUAL_PORT", "run", "run_virtual_record", "write_outputs"]

#: every virtual node listens on this port of its own 10.x.y.z address
VIRTUAL_PORT = 4000


def run_virtual_record(settings: SimSettings, label: str = "") -> tuple[RunRecord, VirtualNetwork]:
    """Run the workload on a virtual network; returns the raw record and the network."""
    network = VirtualNetwork(
        settings.latency_model(),
        settings.loss,
        settings.bandwidth,
        derived_rng(settings.seed, "network"),
    )

    async def main() -> RunRecord:
        host = NodeHost(
            settings,
            host_of=virtual_host,
            port=VIRTUAL_PORT,
            network=network,
            epoch=VIRTUAL_EPOCH,
        )
        progress = Progress(not settings.quiet, label)
        return await Workload(settings, LocalCluster(host), progress).run()

    # Millions of long-lived objects: collect the young generation every 100,000 allocations
    # instead of 700 (full collections already wait for 25 % new long-lived objects).
    thresholds = gc.get_threshold()
    gc.set_threshold(100_000, thresholds[1], thresholds[2])
    try:
        record = run_virtual(main(), network)
    finally:
        gc.set_threshold(*thresholds)
        gc.collect()
    return record, network


def run(settings: SimSettings, label: str = "") -> dict[str, Any]:
    """Run one simulation (either mode); write its outputs when ``settings.out`` is set.

    Returns:
        the ``results.json`` dictionary.
    """
    began = time.perf_counter()
    network_info = None
    if settings.mode == "virtual":
        record, network = run_virtual_record(settings, label)
        network_info = network.describe()
    else:
        from simulations.real import run_real_record

        record = run_real_record(settings, label)
    results = build_results(record, time.perf_counter() - began, network_info)
    if settings.out is not None:
        write_outputs(Path(settings.out), results)
    return results


def write_outputs(out: Path, results: dict[str, Any]) -> None:
    """``results.json``, ``report.md`` and the PNG plots of one run into ``out``."""
    from simulations.report import plot_run, write_run_report

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    plots = plot_run(out, results)
    write_run_report(out, results, plots)
