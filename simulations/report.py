"""``report.md`` and the PNG plots (matplotlib, Agg backend), from results dictionaries only.

Everything is drawn from what ``results.json`` holds (percentiles and 101-point quantile
curves), so a report can be redrawn from the JSON of an old run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulations.metrics import fit_log2

__all__ = ["plot_run", "plot_sweep", "write_run_report", "write_sweep_report"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _log_n_axis(ax: Any, sizes: Sequence[int]) -> None:
    """A log2 x axis labelled with the network sizes themselves."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(sizes))))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("nodes N (log scale)")


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f} %"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _kib(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024:,.1f} KiB"


# -- one run -------------------------------------------------------------------------------------


def plot_run(out: Path, results: dict[str, Any]) -> list[str]:
    """Draw the run's plots into ``out``; returns their file names."""
    plt = _pyplot()
    files = []
    title = f"{results['mode']} mode, {results['nodes']:,} nodes, seed {results['seed']}"

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = False
    for name, phase in results.get("phases", {}).items():
        cdf = phase.get("latency_cdf_ms") or []
        if cdf:
            ys = [i / (len(cdf) - 1) for i in range(len(cdf))]
            ax.plot(cdf, ys, label=f"{name} ({phase['lookups']:,} resolves)")
            drawn = True
    if drawn:
        ax.set_xlabel("resolve latency (ms)")
        ax.set_ylabel("share of successful resolves")
        ax.set_title(f"Resolve latency CDF — {title}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "latency_cdf.png", dpi=110)
        files.append("latency_cdf.png")
    plt.close(fig)

    histogram = results.get("phases", {}).get("steady", {}).get("hops_histogram") or {}
    if histogram:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        ax.bar([int(k) for k in histogram], list(histogram.values()), color="tab:green")
        ax.set_xlabel("hops to the first verified value")
        ax.set_ylabel("resolves")
        ax.set_title(f"Hops per resolve (steady phase) — {title}", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        fig.savefig(out / "hops.png", dpi=110)
        files.append("hops.png")
        plt.close(fig)

    traffic = results.get("traffic_per_node_cdf") or []
    if traffic:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        ax.plot([i for i in range(len(traffic))], traffic, color="tab:purple")
        ax.set_xlabel("nodes, sorted by traffic (percentile)")
        ax.set_ylabel("bytes sent per second")
        ax.set_yscale("symlog")
        ax.set_title(f"Traffic per node, whole run — {title}", fontsize=9)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "traffic_per_node.png", dpi=110)
        files.append("traffic_per_node.png")
        plt.close(fig)

    events = results.get("phases", {}).get("events")
    if events and events.get("timeseries"):
        series = events["timeseries"]
        t = [row["t"] for row in series]
        fig, (top, middle, bottom) = plt.subplots(3, 1, figsize=(7.0, 7.0), sharex=True)
        top.plot(t, [row["success_rate"] for row in series], marker=".", color="tab:blue")
        top.set_ylabel("resolve success")
        top.set_ylim(max(0.0, min((r["success_rate"] or 0) for r in series) - 0.05), 1.01)
        middle.plot(t, [row["latency_p50_ms"] for row in series], label="p50")
        middle.plot(t, [row["latency_p95_ms"] for row in series], label="p95")
        middle.set_ylabel("latency (ms)")
        middle.legend(fontsize=8)
        bottom.plot(t, [row["alive"] for row in series], color="tab:gray")
        bottom.set_ylabel("live nodes")
        bottom.set_xlabel("seconds into the event phase (tick start)")
        for ax in (top, middle, bottom):
            ax.grid(alpha=0.3)
            for row in series:
                if row.get("mass_failure"):
                    ax.axvline(row["t"], color="tab:red", linestyle="--", alpha=0.6)
        settings = results["settings"]
        top.set_title(
            f"Churn {100 * settings['churn']:.0f} %/min, mass failure "
            f"{100 * settings['mass_failure']:.0f} % — {title}",
            fontsize=9,
        )
        fig.tight_layout()
        fig.savefig(out / "timeseries.png", dpi=110)
        files.append("timeseries.png")
        plt.close(fig)
    return files


def _phase_rows(phases: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, p in phases.items():
        traffic = p.get("traffic", {})
        rows.append(
            [
                name,
                _fmt(p["lookups"]),
                _pct(p["success_rate"]),
                _fmt(p["latency_ms"]["p50"]),
                _fmt(p["latency_ms"]["p95"]),
                _fmt(p["latency_ms"]["p99"]),
                _fmt(p["hops_mean"], 2),
                _fmt(p["rpcs_per_lookup"]["mean"], 1),
                _fmt(traffic.get("bytes_per_lookup"), 0),
                _fmt(traffic.get("requests_per_node_per_second"), 2),
                _fmt(traffic.get("bytes_per_node_per_second"), 0),
            ]
        )
    return rows


def write_run_report(out: Path, results: dict[str, Any], plots: Sequence[str]) -> None:
    """``report.md`` of one run."""
    s = results["settings"]
    lines = [
        f"# Simulation: {results['mode']} mode, {results['nodes']:,} nodes, seed {results['seed']}",
        "",
        f"Wall clock {results['wall_seconds']:.1f} s. Settings: latency `{s['latency']}`"
        f" (virtual mode), loss {s['loss']}, k={s['ksize']}, alpha={s['alpha']},"
        f" join `{s['join']}`, {s['records']} records, {s['lookups']} steady resolves"
        f" ({s['concurrency']} in flight).",
        "",
        "## Summary",
        "",
    ]
    lat = results["lookup_latency_ms"]
    lines += _table(
        ["resolves", "success", "p50 ms", "p95 ms", "hops (mean)", "RPCs / resolve"],
        [
            [
                _fmt(results["lookups"]),
                _pct(results["lookup_success_rate"]),
                _fmt(lat["p50"]),
                _fmt(lat["p95"]),
                _fmt(results["hops_mean"], 2),
                _fmt(results["rpcs_per_lookup_mean"], 1),
            ]
        ],
    )
    lines += ["Outcomes: " + ", ".join(f"{k} {v:,}" for k, v in results["outcomes"].items()), ""]
    calls = results.get("calls")
    if calls:
        lines += ["## Calls", ""]
        lines += _table(
            [
                "call nodes",
                "attempted",
                "succeeded",
                "success",
                "success (callee up)",
                "resolve p50 / p95 ms",
                "setup p50 / p95 ms",
            ],
            [
                [
                    _fmt(calls["call_nodes"]),
                    _fmt(calls["attempted"]),
                    _fmt(calls["succeeded"]),
                    _pct(calls["success_rate"], 1),
                    _pct(calls["success_rate_live"], 1),
                    f"{_fmt(calls['resolve_ms']['p50'])} / {_fmt(calls['resolve_ms']['p95'])}",
                    f"{_fmt(calls['setup_ms']['p50'])} / {_fmt(calls['setup_ms']['p95'])}",
                ]
            ],
        )
        reasons = ", ".join(f"{k} {v:,}" for k, v in calls["failures"].items()) or "none"
        lines += [
            "A call resolves the callee's AoR through the DHT, INVITEs its first contact over"
            f" UDP, waits for the 200 (ACK sent) and hangs up with BYE. Failures: {reasons}.",
            "",
        ]
    lines += ["## Phases", ""]
    lines += _table(
        [
            "phase",
            "resolves",
            "success",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "hops",
            "RPCs/resolve",
            "bytes/resolve",
            "RPCs/node/s",
            "bytes/node/s",
        ],
        _phase_rows(results["phases"]),
    )
    lines += [
        "Bytes/resolve and the per-node rates count everything the nodes sent during the phase"
        " (in the event phase: joins, handovers and refreshes too).",
        "",
    ]
    join = results["join"]
    lines += ["## Join", ""]
    lines += _table(
        ["method", "joined", "failures", "RPCs/join (mean)", "join time p50 s", "contacts p50"],
        [
            [
                join["method"],
                _fmt(join["joined"]),
                _fmt(join["failures"]),
                _fmt(join["rpcs_per_join"]["mean"], 1),
                _fmt(join["join_seconds"]["p50"], 3),
                _fmt(join.get("routing_contacts_per_node", {}).get("p50")),
            ]
        ],
    )
    pub = results["publish"]
    lines += ["## Records", ""]
    rows = [
        [
            "after publish",
            _fmt(pub["records"]),
            _pct(pub["success_rate"]),
            _fmt(pub.get("replicas_per_record", {}).get("p50")),
            _fmt(pub.get("replicas_per_record", {}).get("mean"), 1),
            _fmt(pub.get("records_without_replica")),
            _fmt(pub.get("keys_per_node", {}).get("mean"), 1),
        ]
    ]
    end = results.get("end")
    if end:
        rows.append(
            [
                "end of run",
                _fmt(end["records"]),
                "",
                _fmt(end["replicas_per_record"]["p50"]),
                _fmt(end["replicas_per_record"]["mean"], 1),
                _fmt(end["records_without_replica"]),
                _fmt(end["keys_per_node"]["mean"], 1),
            ]
        )
    lines += _table(
        [
            "when",
            "records",
            "publish success",
            "replicas p50",
            "replicas mean",
            "without replica",
            "keys/node",
        ],
        rows,
    )
    if pub.get("failures"):
        lines += ["Publish failures: " + "; ".join(pub["failures"]), ""]
    events = results["phases"].get("events")
    if events:
        lines += ["## Events (churn, mass failure, refreshes)", ""]
        lines += [
            f"Churn {100 * s['churn']:.0f} %/min ({100 * s['crash_share']:.0f} % crashes),"
            f" mass failure {100 * s['mass_failure']:.0f} % at {s['mass_failure_at']:.0f} s,"
            f" {s['duration']:.0f} s in {s['tick']:.0f} s ticks, {s['lookup_rate']} resolves/s;"
            f" {events['arrivals_joined']} arrivals joined"
            f" ({events['arrival_join_failures']} failed), {events['refreshes']} publishes/"
            f"refreshes ({_pct(events['refresh_success_rate'])} accepted).",
            "",
        ]
        lines += _table(
            [
                "t (s)",
                "live",
                "arrivals",
                "departures",
                "crashes",
                "mass",
                "resolves",
                "success",
                "p50 ms",
                "p95 ms",
                *(["calls ok"] if results.get("calls") else []),
            ],
            [
                [
                    _fmt(row["t"], 0),
                    row["alive"],
                    row["arrivals"],
                    row["departures"],
                    row["crashes"],
                    row["mass_failure"] or "",
                    row["lookups"],
                    _pct(row["success_rate"], 1),
                    _fmt(row["latency_p50_ms"]),
                    _fmt(row["latency_p95_ms"]),
                    *(
                        [f"{row['calls_ok']}/{row['calls']}"]
                        if "calls" in row and "calls_ok" in row
                        else []
                    ),
                ]
                for row in events["timeseries"]
            ],
        )
    attack = results.get("attack")
    if attack:
        lines += ["## Attack", ""]
        lines += _table(
            [
                "attackers",
                "kinds",
                "forged answers sent",
                "forged accepted",
                "…by pinned readers",
                "requests dropped",
                "refused lookups",
            ],
            [
                [
                    _fmt(attack["attackers"]),
                    ", ".join(f"{k} {v}" for k, v in attack["kinds"].items()),
                    _fmt(attack["forged_answers_sent"]),
                    _fmt(attack["forged_accepted"]),
                    _fmt(attack["forged_accepted_by_pinned_readers"]),
                    _fmt(attack["requests_dropped"]),
                    _fmt(attack["refused_lookups"]),
                ]
            ],
        )
    diagnoses = results.get("failed_lookup_diagnoses")
    if diagnoses:
        lines += [
            "## Failed resolves, diagnosed",
            "",
            "At the end of the phase, which of the k live nodes closest to the key (omniscient"
            " view) hold the record: all of them holding it means a routing miss by the"
            " reader, none means the record was lost.",
            "",
        ]
        lines += _table(
            [
                "phase",
                "AoR",
                "outcome",
                "RPCs",
                "values",
                "reader contacts",
                "k closest holding",
                "holder ranks",
            ],
            [
                [
                    d["phase"],
                    d["aor"],
                    d["outcome"],
                    d["rpcs"],
                    d["values"],
                    d["reader_contacts"],
                    d["closest_holding"],
                    ",".join(str(x) for x in d["holder_ranks"]),
                ]
                for d in diagnoses
            ],
        )
    host = results["host"]
    lines += ["## Host (not deterministic)", ""]
    lines += _table(
        ["RSS max", "RSS per node", "join wall ms/node", "phase wall seconds"],
        [
            [
                f"{host['rss_bytes_max'] / 2**20:,.0f} MiB",
                _kib(host["rss_per_node_bytes"]),
                _fmt(host["join_wall_ms_per_node"], 2),
                ", ".join(f"{k} {v:.1f}" for k, v in host["phase_wall_seconds"].items()),
            ]
        ],
    )
    if "network" in results:
        n = results["network"]
        lines += [
            f"Virtual network: {n['datagrams_sent']:,} datagrams sent, {n['datagrams_lost']:,}"
            f" lost, {n['datagrams_vanished']:,} to departed nodes; {n['bytes_sent']:,} bytes.",
            "",
        ]
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")


# -- sweeps --------------------------------------------------------------------------------------


def _label(row: dict[str, Any]) -> str:
    return f"N={row['nodes']:,} churn={row['churn']:g} loss={row['loss']:g}"


def plot_sweep(out: Path, rows: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[str]:
    """Curves across a sweep: hops vs N (log axis, with the fit), success vs churn,
    latency and traffic vs N, and the latency CDFs of every run."""
    plt = _pyplot()
    files = []
    combos = sorted({(r["churn"], r["loss"]) for r in rows})

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for churn, loss in combos:
        pts = sorted(
            (r["nodes"], r["hops_mean"])
            for r in rows
            if (r["churn"], r["loss"]) == (churn, loss) and r["hops_mean"] is not None
        )
        if pts:
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o",
                label=f"churn {churn:g}, loss {loss:g}",
            )
    fit = fit_log2(
        [r["nodes"] for r in rows if r["churn"] == 0 and r["loss"] == 0],
        [r["hops_mean"] for r in rows if r["churn"] == 0 and r["loss"] == 0],
    )
    if fit:
        xs = sorted({r["nodes"] for r in rows})
        ax.plot(
            xs,
            [fit["a"] + fit["b"] * math.log2(x) for x in xs],
            "k--",
            label=f"fit {fit['a']:.2f} + {fit['b']:.3f}·log2 N (R² {fit['r2']:.2f})",
        )
    _log_n_axis(ax, [r["nodes"] for r in rows])
    ax.set_ylabel("mean hops per successful resolve")
    ax.set_title("Lookup hops vs network size", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "hops_vs_n.png", dpi=110)
    files.append("hops_vs_n.png")
    plt.close(fig)

    churns = sorted({r["churn"] for r in rows})
    if len(churns) > 1:
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.0))
        for n, loss in sorted({(r["nodes"], r["loss"]) for r in rows}):
            sel = sorted(
                (r for r in rows if (r["nodes"], r["loss"]) == (n, loss)),
                key=lambda r: r["churn"],
            )
            xs = [100 * r["churn"] for r in sel]
            label = f"N={n:,}, loss {loss:g}"
            left.plot(
                xs,
                [
                    r["events_success_rate"]
                    if r.get("events_success_rate") is not None
                    else r["lookup_success_rate"]
                    for r in sel
                ],
                marker="o",
                label=label,
            )
            for key, style in (("p50", "-"), ("p95", ":")):
                right.plot(
                    xs,
                    [r.get(f"events_latency_{key}_ms") or r[f"latency_{key}_ms"] for r in sel],
                    marker="o",
                    linestyle=style,
                    label=f"{key}, {label}",
                )
        left.set_ylabel("resolve success rate (event phase)")
        left.set_title("Resolve success vs churn rate", fontsize=9)
        right.set_ylabel("resolve latency (ms, event phase)")
        right.set_title("Resolve latency vs churn rate", fontsize=9)
        for ax in (left, right):
            ax.set_xlabel("churn (% of nodes replaced per minute)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "success_vs_churn.png", dpi=110)
        files.append("success_vs_churn.png")
        plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.0))
    for churn, loss in combos:
        sel = sorted(
            (r for r in rows if (r["churn"], r["loss"]) == (churn, loss)), key=lambda r: r["nodes"]
        )
        xs = [r["nodes"] for r in sel]
        left.plot(
            xs,
            [r["latency_p50_ms"] for r in sel],
            marker="o",
            label=f"p50, churn {churn:g}, loss {loss:g}",
        )
        left.plot(
            xs,
            [r["latency_p95_ms"] for r in sel],
            marker="x",
            linestyle=":",
            label=f"p95, churn {churn:g}, loss {loss:g}",
        )
        right.plot(
            xs,
            [r.get("bytes_per_lookup") for r in sel],
            marker="o",
            label=f"churn {churn:g}, loss {loss:g}",
        )
    for ax, label in ((left, "resolve latency (ms)"), (right, "bytes sent per resolve")):
        _log_n_axis(ax, [r["nodes"] for r in rows])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    left.set_title("Latency vs N", fontsize=9)
    right.set_title("Traffic per resolve vs N (steady phase, all nodes' datagrams)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "latency_traffic_vs_n.png", dpi=110)
    files.append("latency_traffic_vs_n.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for row, result in zip(rows, runs, strict=True):
        cdf = []
        for phase in result.get("phases", {}).values():
            cdf = phase.get("latency_cdf_ms") or cdf
            break
        if cdf:
            ax.plot(cdf, [i / (len(cdf) - 1) for i in range(len(cdf))], label=_label(row))
    ax.set_xlabel("resolve latency (ms), steady phase")
    ax.set_ylabel("share of successful resolves")
    ax.set_title("Latency CDF per run", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "latency_cdf.png", dpi=110)
    files.append("latency_cdf.png")
    plt.close(fig)
    return files


def write_sweep_report(
    out: Path, rows: list[dict[str, Any]], fit: dict[str, Any] | None, plots: Sequence[str]
) -> None:
    """``report.md`` of a sweep: one row per run, the hops-vs-log N fit, the plots."""
    lines = ["# Simulation sweep", ""]
    lines += _table(
        [
            "N",
            "churn/min",
            "loss",
            "resolves",
            "success",
            "events success",
            "p50 ms",
            "p95 ms",
            "hops",
            "RPCs/resolve",
            "bytes/resolve",
            "bytes/node/s (run)",
            "wall s",
            "folder",
        ],
        [
            [
                _fmt(r["nodes"]),
                f"{100 * r['churn']:g} %",
                f"{r['loss']:g}",
                _fmt(r["lookups"]),
                _pct(r["lookup_success_rate"]),
                _pct(r["events_success_rate"]),
                _fmt(r["latency_p50_ms"]),
                _fmt(r["latency_p95_ms"]),
                _fmt(r["hops_mean"], 2),
                _fmt(r["rpcs_per_lookup"], 1),
                _fmt(r.get("bytes_per_lookup"), 0),
                _fmt(r["bytes_per_node_per_second"], 0),
                _fmt(r["wall_seconds"], 1),
                f"[{r['folder']}]({r['folder']}/report.md)",
            ]
            for r in rows
        ],
    )
    lines += ["## Hops vs log N", ""]
    if fit:
        lines += [
            f"Least-squares fit over the runs without churn or loss: **hops = {fit['a']:.3f} +"
            f" {fit['b']:.3f} · log2 N** (R² = {fit['r2']:.3f}, {fit['points']} runs):"
            f" each doubling of N adds {fit['b']:.3f} hops. Kademlia bounds lookups by"
            " O(log N) hops (paper §2.3); with k-wide buckets a hop gains about log2 k bits,"
            " so the slope is well below 1. Hops here count rounds to the first verified"
            " replica, which is reached before the node closest to the key.",
            "",
        ]
    else:
        lines += ["Fewer than two network sizes without churn or loss: no fit.", ""]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
