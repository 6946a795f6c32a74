"""``python -m simulations run|sweep``: see ``simulations/README.md``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulations.config import ATTACK_KINDS, JOIN_MODES, MODES, SimSettings
from simulations.errors import SimulationError

__all__ = ["build_parser", "main"]


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers: {text!r}") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers: {text!r}") from None


def _add_common(p: argparse.ArgumentParser) -> None:
    d = SimSettings()
    p.add_argument("--mode", choices=MODES, default="virtual")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--records", type=int, help="AoRs published (default min(N, 500))")
    p.add_argument("--lookups", type=int, default=d.lookups, help="steady-phase resolves")
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="resolves in flight")
    p.add_argument(
        "--latency",
        default=d.latency,
        help="virtual one-way latency: constant:MS | uniform:LO,HI | lognormal:MEDIAN,SIGMA |"
        " matrix:FILE.json (default %(default)s)",
    )
    p.add_argument("--bandwidth", type=float, help="virtual per-node uplink, bits/s")
    p.add_argument("--ksize", type=int, default=d.ksize)
    p.add_argument("--alpha", type=int, default=d.alpha)
    p.add_argument("--join", choices=JOIN_MODES, default="protocol")
    p.add_argument("--join-batch", type=int, help="nodes bootstrapping at once")
    p.add_argument("--oracle-fill", type=int, help="contacts per far bucket (oracle join)")
    p.add_argument(
        "--measured-joins",
        type=int,
        help="with --join oracle: the last M nodes still join by protocol (measured)",
    )
    p.add_argument("--crash-share", type=float, default=d.crash_share)
    p.add_argument("--mass-failure", type=float, default=d.mass_failure, help="share, e.g. 0.3")
    p.add_argument("--mass-failure-at", type=float, help="seconds into the event phase")
    p.add_argument("--duration", type=float, help="event phase length, seconds")
    p.add_argument("--tick", type=float, default=d.tick, help="time-series bin, seconds")
    p.add_argument("--lookup-rate", type=float, default=d.lookup_rate, help="event resolves/s")
    p.add_argument("--refresh", type=float, default=d.refresh, help="record refresh period, s")
    p.add_argument("--lifetime", type=float, default=d.lifetime, help="record lifetime, s")
    p.add_argument("--attack-share", type=float, default=d.attack_share)
    p.add_argument("--attack", choices=ATTACK_KINDS, default=d.attack)
    p.add_argument("--reader-pins", type=float, default=d.reader_pins)
    p.add_argument("--calls", type=int, default=d.calls, help="SIP call attempts")
    p.add_argument(
        "--call-nodes", type=int, help="nodes running a SIP user agent (default min(50, N))"
    )
    p.add_argument("--workers", type=int, default=d.workers, help="real-mode processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--verbose", action="store_true", help="show the nodes' warnings (p2psip loggers)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m simulations",
        description="Multi-node simulations of the p2psip overlay (real UDP or virtual network).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="one run: results.json, report.md, plots")
    run_p.add_argument("--nodes", type=int, required=True)
    run_p.add_argument("--churn", type=float, default=0.0, help="share of nodes per minute")
    run_p.add_argument("--loss", type=float, default=0.0, help="datagram loss probability")
    _add_common(run_p)
    sweep_p = sub.add_parser("sweep", help="a grid over N, churn and loss, with curves")
    sweep_p.add_argument("--nodes", type=_ints, default=[100, 300, 1000, 3000])
    sweep_p.add_argument("--churn", type=_floats, default=[0.0])
    sweep_p.add_argument("--loss", type=_floats, default=[0.0])
    _add_common(sweep_p)
    return parser


def _settings_args(args: argparse.Namespace) -> dict[str, Any]:
    names = {
        "mode",
        "seed",
        "records",
        "lookups",
        "concurrency",
        "latency",
        "bandwidth",
        "ksize",
        "alpha",
        "join",
        "join_batch",
        "oracle_fill",
        "measured_joins",
        "crash_share",
        "mass_failure",
        "mass_failure_at",
        "duration",
        "tick",
        "lookup_rate",
        "refresh",
        "lifetime",
        "attack_share",
        "attack",
        "reader_pins",
        "calls",
        "call_nodes",
        "workers",
        "quiet",
    }
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # thousands of nodes repeat the same warnings
        logging.getLogger("p2psip").setLevel(logging.ERROR)
    base = _settings_args(args)
    try:
        if args.command == "run":
            from simulations.runner import run

            settings = SimSettings(
                **base, nodes=args.nodes, churn=args.churn, loss=args.loss, out=args.out
            )
            if settings.join == "protocol" and settings.nodes > 20_000:
                print(
                    f"note: {settings.nodes:,} protocol joins cost tens of milliseconds of CPU"
                    " each; --join oracle [--measured-joins M] fills the tables in well under"
                    " one",
                    file=sys.stderr,
                )
            results = run(settings)
            summary = {
                k: results[k]
                for k in (
                    "mode",
                    "nodes",
                    "lookup_success_rate",
                    "lookup_latency_ms",
                    "hops_mean",
                    "wall_seconds",
                )
            }
            summary["lookup_latency_ms"] = {
                k: summary["lookup_latency_ms"][k] for k in ("p50", "p95")
            }
            print(json.dumps(summary))
            print(f"wrote {args.out}/results.json, report.md and plots", file=sys.stderr)
        else:
            from simulations.sweep import run_sweep

            summary = run_sweep(base, args.nodes, args.churn, args.loss, args.out)
            print(json.dumps({"runs": len(summary["rows"]), "hops_fit": summary["hops_fit_log2"]}))
            print(f"wrote {args.out}/sweep.json, report.md and plots", file=sys.stderr)
    except SimulationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
