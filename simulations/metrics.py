"""What a run measured, as the ``results.json`` dictionary.

Everything here is computed from a :class:`~simulations.workload.RunRecord` in a fixed order,
so the same virtual-mode run gives the same dictionary, float for float. Host-dependent figures
(wall-clock seconds per phase, resident memory) live under ``host`` and in ``wall_seconds``
only.

Definitions:

* **lookup success** — a resolve of a live AoR (its publisher is up) from a random honest node
  returned the publisher's contact; resolves whose reader departed meanwhile are not counted.
* **latency** — of the successful resolves, in milliseconds of loop time (virtual time in
  virtual mode); ``latency_all_ms`` counts failures too.
* **hops** — sequential RPC rounds to the first verified value (see
  :attr:`p2psip.overlay.dht.Lookup.hops`); 0 when the reader held a copy itself.
* **RPCs per lookup** — requests the lookup sent (first sends; retransmissions are counted
  separately, per node).
* **bytes / datagrams per lookup** — everything the nodes sent during the steady phase (whose
  only activity is the resolves, plus background pings and refreshes), divided by the lookups.
* **replicas per record** — live nodes holding the record's key, counted in every node's
  storage after the publish phase and at the end.
"""

from __future__ import annotations

import itertools
import math
import platform
from collections.abc import Iterable, Sequence
from typing import Any

from simulations.nodes import Census, ResolveResult
from simulations.workload import RunRecord

__all__ = ["build_results", "fit_log2", "percentiles", "quantile_curve", "summarise_resolves"]

_QUANTILES = (50, 90, 95, 99)


def percentiles(values: Iterable[float], quantiles: Sequence[int] = _QUANTILES) -> dict[str, Any]:
    """Nearest-rank percentiles, mean and max of ``values`` (None when empty)."""
    ordered = sorted(values)
    out: dict[str, Any] = {}
    if not ordered:
        for q in quantiles:
            out[f"p{q}"] = None
        out["mean"] = None
        out["max"] = None
        return out
    n = len(ordered)
    for q in quantiles:
        rank = max(1, math.ceil(q / 100 * n))
        out[f"p{q}"] = _round(ordered[rank - 1])
    out["mean"] = _round(sum(ordered) / n)
    out["max"] = _round(ordered[-1])
    return out


def quantile_curve(values: Iterable[float], points: int = 101) -> list[float]:
    """``points`` evenly spaced quantiles (0 to 100 %) of ``values``: a CDF small enough for
    results.json, from which the plots are drawn."""
    ordered = sorted(values)
    if not ordered:
        return []
    n = len(ordered)
    return [_round(ordered[min(n - 1, round(i * (n - 1) / (points - 1)))]) for i in range(points)]


def _round(value: float, digits: int = 4) -> float:
    return round(float(value), digits)


def _share(part: int, whole: int) -> float | None:
    return _round(part / whole, 6) if whole else None


def summarise_resolves(results: Sequence[ResolveResult]) -> dict[str, Any]:
    """Success rate, outcome counts, latency, hops and RPCs of a list of resolves."""
    counted = [r for r in results if r.outcome != "reader-left"]
    good = [r for r in counted if r.ok]
    outcomes: dict[str, int] = {}
    for r in results:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    hops: dict[str, int] = {}
    for r in good:
        hops[str(r.hops)] = hops.get(str(r.hops), 0) + 1
    return {
        "lookups": len(counted),
        "successes": len(good),
        "success_rate": _share(len(good), len(counted)),
        "outcomes": dict(sorted(outcomes.items())),
        "latency_ms": percentiles(r.latency_ms for r in good),
        "latency_cdf_ms": quantile_curve(r.latency_ms for r in good),
        "latency_all_ms": percentiles(r.latency_ms for r in counted),
        "hops_mean": _round(sum(r.hops for r in good) / len(good)) if good else None,
        "hops_histogram": dict(sorted(hops.items(), key=lambda kv: int(kv[0]))),
        "rpcs_per_lookup": percentiles(r.rpcs for r in counted),
        "values_per_lookup_mean": (
            _round(sum(r.values for r in counted) / len(counted)) if counted else None
        ),
        "pinned_readers": sum(1 for r in counted if r.pinned),
    }


def fit_log2(sizes: Sequence[float], values: Sequence[float]) -> dict[str, Any] | None:
    """Least-squares fit ``value = a + b * log2(size)``, with R² (None for < 2 sizes)."""
    points = [(math.log2(n), v) for n, v in zip(sizes, values, strict=True) if v is not None]
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    b = sxy / sxx
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for _, y in points)
    ss_res = sum((y - (a + b * x)) ** 2 for x, y in points)
    r2 = 1 - ss_res / ss_tot if ss_tot else 1.0
    return {"a": _round(a), "b": _round(b), "r2": _round(r2), "points": n}


def _traffic(before: Census, after: Census, seconds: float, lookups: int) -> dict[str, Any]:
    def delta(name: str) -> int:
        return after.counters.get(name, 0) - before.counters.get(name, 0)

    nodes = max(1, (before.alive + after.alive) / 2)
    out: dict[str, Any] = {
        "seconds": _round(seconds),
        "requests_sent": delta("requests_sent"),
        "retransmissions": delta("retransmissions"),
        "datagrams_sent": delta("datagrams_sent"),
        "bytes_sent": delta("bytes_sent"),
    }
    for name in ("requests_sent", "datagrams_sent", "bytes_sent"):
        per = name.replace("_sent", "")
        out[f"{per}_per_node_per_second"] = (
            _round(delta(name) / nodes / seconds) if seconds else None
        )
        out[f"{per}_per_lookup"] = _round(delta(name) / lookups) if lookups else None
    return out


def _census_summary(census: Census, keys_count: int) -> dict[str, Any]:
    holders = list(census.record_holders.values())
    histogram: dict[str, int] = {}
    for h in holders:
        histogram[str(h)] = histogram.get(str(h), 0) + 1
    return {
        "alive": census.alive,
        "keys_per_node": percentiles(census.storage),
        "routing_contacts_per_node": percentiles(census.routing),
        "replicas_per_record": percentiles(holders),
        "records_without_replica": sum(1 for h in holders if h == 0),
        "replica_histogram": dict(sorted(histogram.items(), key=lambda kv: int(kv[0]))),
        "records": keys_count,
    }


def summarise_calls(record: RunRecord) -> dict[str, Any]:
    """The ``calls`` section: attempts, success, resolve and set-up times, failure reasons.

    ``success_rate`` is over every attempt; ``success_rate_live`` over attempts whose callee
    was up when the attempt began and whose caller stayed (what the overlay and SIP promise).
    """
    calls = record.calls
    counted = [c for c in calls if c.outcome != "caller-left"]
    live = [c for c in counted if c.callee_alive]
    ok = sum(1 for c in counted if c.ok)
    failures: dict[str, int] = {}
    for c in calls:
        if not c.ok:
            failures[c.outcome] = failures.get(c.outcome, 0) + 1
    publishes = record.call_publishes
    return {
        "call_nodes": len(record.call_nodes),
        "aor_publish_success_rate": _share(sum(1 for p in publishes if p.ok), len(publishes)),
        "attempted": len(calls),
        "succeeded": ok,
        "success_rate": _share(ok, len(counted)),
        "success_rate_live": _share(sum(1 for c in live if c.ok), len(live)),
        "callee_departed": sum(1 for c in calls if not c.callee_alive),
        "resolve_ms": percentiles(c.resolve_ms for c in counted if c.resolve_ms > 0),
        "setup_ms": percentiles(c.setup_ms for c in counted if c.ok),
        "failures": dict(sorted(failures.items())),
    }


def _timeseries(record: RunRecord) -> list[dict[str, Any]]:
    s = record.settings
    bins: dict[int, list[ResolveResult]] = {}
    for r in record.events:
        k = int((r.started - record.event_origin) // s.tick)
        bins.setdefault(k, []).append(r)
    call_bins: dict[int, list[Any]] = {}
    for c in record.calls:
        k = int((c.started - record.event_origin) // s.tick)
        call_bins.setdefault(k, []).append(c)
    series = []
    for k, entry in enumerate(record.timeline):
        results = bins.get(k, [])
        summary = summarise_resolves(results)
        series.append(
            {
                **entry,
                "lookups": summary["lookups"],
                "success_rate": summary["success_rate"],
                "latency_p50_ms": summary["latency_ms"]["p50"],
                "latency_p95_ms": summary["latency_ms"]["p95"],
                "hops_mean": summary["hops_mean"],
            }
        )
        if s.calls:
            attempts = [c for c in call_bins.get(k, []) if c.outcome != "caller-left"]
            series[-1]["calls"] = len(attempts)
            series[-1]["calls_ok"] = sum(1 for c in attempts if c.ok)
            series[-1]["call_success_rate"] = _share(series[-1]["calls_ok"], len(attempts))
    return series


def build_results(
    record: RunRecord, wall_seconds: float, network: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``results.json`` dictionary of a run."""
    s = record.settings
    everything = record.steady + record.events
    overall = summarise_resolves(everything)
    steady = summarise_resolves(record.steady)
    censuses = record.censuses
    joins = record.joins
    join_phase = record.phases.get("join", (0.0, 0.0))
    results: dict[str, Any] = {
        "mode": s.mode,
        "nodes": s.nodes,
        "seed": s.seed,
        "wall_seconds": round(wall_seconds, 3),
        "lookup_success_rate": overall["success_rate"],
        "lookup_latency_ms": overall["latency_ms"],
        "hops_mean": overall["hops_mean"],
        "lookups": overall["lookups"],
        "outcomes": overall["outcomes"],
        "rpcs_per_lookup_mean": overall["rpcs_per_lookup"]["mean"],
        "settings": s.to_dict(),
    }
    results["join"] = {
        "method": s.join,
        "joined": (
            len(joins) + 1 if s.join == "protocol" else s.nodes - s.measured_joins + len(joins)
        ),
        "measured_joins": len(joins),
        "failures": sum(1 for j in joins if not j.ok),
        "rpcs_per_join": percentiles(j.rpcs for j in joins),
        "join_seconds": percentiles(j.seconds for j in joins),
        "contacts_after_join": percentiles(j.contacts for j in joins),
        "phase_seconds": _round(join_phase[1] - join_phase[0]),
    }
    if "joined" in censuses:
        results["join"]["routing_contacts_per_node"] = percentiles(censuses["joined"].routing)
    publishes = record.publishes
    results["publish"] = {
        "records": len(publishes),
        "success_rate": _share(sum(1 for p in publishes if p.ok), len(publishes)),
        "failures": sorted({p.reason for p in publishes if not p.ok})[:5],
        "latency_ms": percentiles(p.seconds * 1000 for p in publishes),
        "rpcs_per_publish": percentiles(p.rpcs for p in publishes),
    }
    if "published" in censuses:
        results["publish"].update(_census_summary(censuses["published"], len(publishes)))
    phases: dict[str, Any] = {"steady": steady}
    if "published" in censuses and "steady" in censuses:
        began, ended = record.phases.get("steady", (0.0, 0.0))
        steady["traffic"] = _traffic(
            censuses["published"], censuses["steady"], ended - began, steady["lookups"]
        )
        results["traffic"] = steady["traffic"]
    if s.duration:
        events = summarise_resolves(record.events)
        refreshes = record.refreshes
        events["refreshes"] = len(refreshes)
        events["refresh_success_rate"] = _share(sum(1 for p in refreshes if p.ok), len(refreshes))
        events["arrivals_joined"] = sum(1 for j in record.arrivals_joined if j.ok)
        events["arrival_join_failures"] = sum(1 for j in record.arrivals_joined if not j.ok)
        events["timeseries"] = _timeseries(record)
        if "steady" in censuses and "end" in censuses:
            began, ended = record.phases.get("events", (0.0, 0.0))
            events["traffic"] = _traffic(
                censuses["steady"], censuses["end"], ended - began, events["lookups"]
            )
        phases["events"] = events
    results["phases"] = phases
    if s.calls:
        results["calls"] = summarise_calls(record)
    if "end" in censuses:
        results["end"] = _census_summary(censuses["end"], record.record_count)
        results["storage_keys_per_node"] = results["end"]["keys_per_node"]
        counters = censuses["end"].counters
        results["counters"] = dict(sorted(counters.items()))
        traffic = censuses["end"].traffic
        total = record.phases.get("events", record.phases.get("steady", (0.0, 0.0)))[1]
        began = record.phases.get("join", (0.0, 0.0))[0]
        seconds = max(total - began, 1e-9)
        results["traffic_per_node_bytes_per_second"] = percentiles(t / seconds for t in traffic)
        results["traffic_per_node_cdf"] = quantile_curve(t / seconds for t in traffic)
    if record.attackers:
        kinds: dict[str, int] = {}
        for kind in record.attackers.values():
            kinds[kind] = kinds.get(kind, 0) + 1
        counters = censuses["end"].counters if "end" in censuses else {}
        forged = [r for r in everything if r.outcome == "forged"]
        results["attack"] = {
            "share": s.attack_share,
            "kinds": dict(sorted(kinds.items())),
            "attackers": len(record.attackers),
            "forged_answers_sent": counters.get("forged_answers", 0),
            "requests_dropped": counters.get("dropped_requests", 0),
            "forged_accepted": len(forged),
            "forged_accepted_by_pinned_readers": sum(1 for r in forged if r.pinned),
            "refused_lookups": overall["outcomes"].get("refused", 0),
        }
    if record.diagnoses:
        results["failed_lookup_diagnoses"] = record.diagnoses
    if network is not None:
        results["network"] = network
    names = ("start", "oracle", "joined", "published", "steady", "end")
    order = [name for name in names if name in censuses]
    phase_of = {
        "oracle": "oracle",
        "joined": "join",
        "published": "publish",
        "steady": "steady",
        "end": "events",
    }
    cpu = {
        phase_of[b]: round(censuses[b].cpu - censuses[a].cpu, 3)
        for a, b in itertools.pairwise(order)
    }
    rss_values = [c.rss for c in censuses.values()]
    joined_rss = censuses["joined"].rss if "joined" in censuses else 0
    results["host"] = {
        "rss_bytes_max": max(rss_values) if rss_values else 0,
        "rss_bytes_after_join": joined_rss,
        "rss_per_node_bytes": round((joined_rss - record.rss_before) / s.nodes),
        "phase_wall_seconds": {k: round(v, 3) for k, v in record.walls.items()},
        "join_wall_ms_per_node": round(1000 * record.walls.get("join", 0.0) / s.nodes, 3),
        "oracle_cpu_ms_per_node": (
            round(1000 * cpu["oracle"] / s.nodes, 3) if "oracle" in cpu else None
        ),
        "phase_cpu_seconds": cpu,
        # per node that joined by protocol (all of them, or the measured joins)
        "join_cpu_ms_per_node": (
            round(1000 * cpu.get("join", 0.0) / len(joins), 3) if joins else None
        ),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    return results
