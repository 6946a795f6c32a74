"""A grid of runs over network size, churn and loss, with the curves across it."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulations.config import SimSettings
from simulations.metrics import fit_log2
from simulations.runner import run

__all__ = ["run_sweep", "sweep_row"]


def _folder(nodes: int, churn: float, loss: float) -> str:
    return f"n{nodes}-churn{churn:g}-loss{loss:g}"


def sweep_row(results: dict[str, Any], folder: str) -> dict[str, Any]:
    """The figures of one run that the sweep's table and curves use."""
    settings = results["settings"]
    steady = results["phases"]["steady"]
    events = results["phases"].get("events")
    return {
        "folder": folder,
        "nodes": results["nodes"],
        "churn": settings["churn"],
        "loss": settings["loss"],
        "lookups": results["lookups"],
        "lookup_success_rate": results["lookup_success_rate"],
        "events_success_rate": events["success_rate"] if events else None,
        "events_latency_p50_ms": events["latency_ms"]["p50"] if events else None,
        "events_latency_p95_ms": events["latency_ms"]["p95"] if events else None,
        "latency_p50_ms": results["lookup_latency_ms"]["p50"],
        "latency_p95_ms": results["lookup_latency_ms"]["p95"],
        "hops_mean": steady["hops_mean"],
        "rpcs_per_lookup": results["rpcs_per_lookup_mean"],
        "bytes_per_node_per_second": results.get("traffic_per_node_bytes_per_second", {}).get(
            "mean"
        ),
        "bytes_per_lookup": steady.get("traffic", {}).get("bytes_per_lookup"),
        "wall_seconds": results["wall_seconds"],
    }


def run_sweep(
    base: dict[str, Any],
    nodes: Sequence[int],
    churns: Sequence[float],
    losses: Sequence[float],
    out: Path,
) -> dict[str, Any]:
    """Run every (N, churn, loss) combination with the ``base`` settings.

    Args:
        base: :class:`SimSettings` keyword arguments shared by every run (not ``nodes``,
            ``churn``, ``loss`` or ``out``).
        nodes, churns, losses: the grid.
        out: the sweep folder; each run writes into a sub-folder.

    Returns:
        the ``sweep.json`` dictionary (one row per run, and the hops-vs-log2 N fit).
    """
    from simulations.report import plot_sweep, write_sweep_report

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    runs = []
    grid = list(itertools.product(sorted(nodes), sorted(churns), sorted(losses)))
    for number, (n, churn, loss) in enumerate(grid, 1):
        folder = _folder(n, churn, loss)
        settings = SimSettings(
            **{**base, "nodes": n, "churn": churn, "loss": loss, "out": out / folder}
        )
        label = f"[{number}/{len(grid)} N={n} churn={churn:g} loss={loss:g}]"
        results = run(settings, label)
        runs.append(results)
        rows.append(sweep_row(results, folder))
    plain = [r for r in rows if r["churn"] == 0 and r["loss"] == 0]
    fit = fit_log2([r["nodes"] for r in plain], [r["hops_mean"] for r in plain])
    summary = {"rows": rows, "hops_fit_log2": fit, "base_settings": _jsonable(base)}
    (out / "sweep.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    plots = plot_sweep(out, rows, runs)
    write_sweep_report(out, rows, fit, plots)
    return summary


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}
