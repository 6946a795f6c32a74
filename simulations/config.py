"""The settings of one simulation run, as data (what ``python -m simulations run`` parses)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2psip.overlay.dht import DHTConfig
from simulations.errors import ConfigError
from simulations.network import parse_latency

__all__ = ["ATTACK_KINDS", "JOIN_MODES", "MODES", "SimSettings"]

MODES = ("virtual", "real")
JOIN_MODES = ("protocol", "oracle")
#: drop: answer pings only; forge-sig: answer FIND_VALUE with the victim's key and a bad
#: signature; forge-key: answer with a record signed by the attacker's own key; forge: half each
ATTACK_KINDS = ("drop", "forge-sig", "forge-key", "forge")


@dataclass
class SimSettings:
    """Every knob of a run; defaults give a quick steady-state run.

    Attributes:
        mode: ``virtual`` (in-memory network, virtual clock) or ``real`` (UDP on 127.0.0.1,
            several processes).
        nodes: nodes at the start.
        seed: seeds every RNG (node ids, message ids, workload, network).
        out: output folder (None: nothing written).
        records: AoRs published (each by its own random honest node); default ``min(nodes, 500)``.
        lookups: resolves of the steady phase, from random live nodes.
        concurrency: resolves (and publishes) in flight at once.
        latency: one-way latency model, virtual mode (see
            :func:`~simulations.network.parse_latency`).
        loss: probability that a datagram is lost (real mode: dropped on receipt).
        bandwidth: per-node uplink in bits/s (virtual mode), None for unlimited.
        ksize, alpha: the DHT's k and alpha (default: :class:`DHTConfig`'s).
        join: ``protocol`` (each node bootstraps through a random earlier node) or ``oracle``
            (routing tables filled from the global node list, no messages: a converged network
            at any size; virtual mode only).
        join_batch: nodes joining at once (protocol join).
        oracle_fill: contacts put in each far bucket by the oracle join (default k).
        measured_joins: with the oracle join, this many of the nodes (the last ones) still
            join by protocol, through random oracle-joined nodes: join cost and behaviour
            measured on a network of the full size.
        churn: departures per minute as a share of the live nodes, with as many Poisson
            arrivals (``0.1`` = 10 %/min), during the event phase.
        crash_share: share of churn departures that crash (others leave gracefully, handing
            their stored records to the closest nodes first).
        mass_failure: share of the live nodes that crash at once, ``mass_failure_at`` seconds
            into the event phase.
        duration: length of the event phase, seconds (default 600 when churn or a mass
            failure is asked for, else 0).
        tick: time-series bin, seconds.
        lookup_rate: resolves per second during the event phase.
        refresh: each publisher re-publishes its record this often (seconds).
        lifetime: record lifetime, seconds.
        attack_share: share of the nodes that turn malicious after joining.
        attack: ``drop``, ``forge-sig``, ``forge-key`` or ``forge`` (both forgeries).
        reader_pins: share of resolves made by a reader that already pinned the AoR's key
            (trust on first use from an earlier contact).
        workers: worker processes (real mode).
        quiet: no progress bar.
        calls: SIP call attempts between call nodes (resolve the callee's AoR through the
            DHT, INVITE, 200/ACK, BYE): after the steady phase, or spread over the event
            phase when there is one.
        call_nodes: nodes that also run a SIP user agent and publish a call AoR (default
            ``min(50, nodes)`` when calls are asked for).
    """

    mode: str = "virtual"
    nodes: int = 100
    seed: int = 1
    out: Path | None = None
    records: int | None = None
    lookups: int = 1000
    concurrency: int = 64
    latency: str = "uniform:10,50"
    loss: float = 0.0
    bandwidth: float | None = None
    ksize: int = field(default_factory=lambda: DHTConfig().ksize)
    alpha: int = field(default_factory=lambda: DHTConfig().alpha)
    join: str = "protocol"
    join_batch: int | None = None
    oracle_fill: int | None = None
    measured_joins: int = 0
    churn: float = 0.0
    crash_share: float = 0.5
    mass_failure: float = 0.0
    mass_failure_at: float | None = None
    duration: float | None = None
    tick: float = 10.0
    lookup_rate: float = 10.0
    refresh: float = 300.0
    lifetime: float = 3600.0
    attack_share: float = 0.0
    attack: str = "drop"
    reader_pins: float = 0.0
    workers: int = 4
    quiet: bool = False
    calls: int = 0
    call_nodes: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}")
        if self.join not in JOIN_MODES:
            raise ConfigError(f"join must be one of {JOIN_MODES}")
        if self.attack not in ATTACK_KINDS:
            raise ConfigError(f"attack must be one of {ATTACK_KINDS}")
        if self.nodes < 2:
            raise ConfigError("at least 2 nodes")
        if self.records is None:
            self.records = min(self.nodes, 500)
        if not 1 <= self.records <= self.nodes:
            raise ConfigError("records must be between 1 and the number of nodes")
        for name in ("loss", "crash_share", "mass_failure", "attack_share", "reader_pins"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value <= 1):
                raise ConfigError(f"{name} must be a share in [0, 1]")
        if self.loss >= 1 or self.mass_failure >= 1 or self.attack_share >= 1:
            raise ConfigError("loss, mass_failure and attack_share must be below 1")
        if self.churn < 0 or not math.isfinite(self.churn):
            raise ConfigError("churn must be >= 0 (share of the nodes per minute)")
        positive = ("concurrency", "tick", "lookup_rate", "refresh", "lifetime", "workers")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0")
        if self.lookups < 0:
            raise ConfigError("lookups must be >= 0")
        if self.refresh >= self.lifetime:
            raise ConfigError("refresh must be shorter than the record lifetime")
        if not isinstance(self.calls, int) or self.calls < 0:
            raise ConfigError("calls must be a whole number >= 0")
        if self.call_nodes is None:
            self.call_nodes = min(50, self.nodes) if self.calls else 0
        if self.calls and not 2 <= self.call_nodes <= self.nodes:
            raise ConfigError("call_nodes must be between 2 and the number of nodes")
        if self.mode == "real" and self.join == "oracle":
            raise ConfigError("the oracle join is for virtual mode (real nodes join by protocol)")
        if self.mode == "real" and self.bandwidth is not None:
            raise ConfigError("bandwidth limits are simulated in virtual mode only")
        if self.duration is None:
            self.duration = 600.0 if (self.churn or self.mass_failure) else 0.0
        if self.duration < 0:
            raise ConfigError("duration must be >= 0")
        if self.mass_failure_at is None:
            self.mass_failure_at = self.duration / 3
        if self.mass_failure and not 0 <= self.mass_failure_at <= self.duration:
            raise ConfigError("mass_failure_at must fall inside the event phase")
        if self.join_batch is None:
            self.join_batch = max(16, min(512, self.nodes // 50))
        if self.oracle_fill is None:
            self.oracle_fill = self.ksize
        if not 0 <= self.measured_joins < self.nodes or (
            self.measured_joins and self.join != "oracle"
        ):
            raise ConfigError("measured_joins needs the oracle join and fewer than N nodes")
        if self.join_batch < 1 or not 1 <= self.oracle_fill <= self.ksize:
            raise ConfigError("join_batch >= 1 and 1 <= oracle_fill <= ksize required")
        self.latency_model()  # validates the specification

    def latency_model(self) -> Any:
        """The parsed latency model (see :func:`~simulations.network.parse_latency`)."""
        return parse_latency(self.latency)

    def dht_config(self) -> DHTConfig:
        """The overlay configuration every node runs."""
        try:
            return DHTConfig(ksize=self.ksize, alpha=self.alpha)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly copy (``out`` as a string)."""
        data = dataclasses.asdict(self)
        data["out"] = str(self.out) if self.out is not None else None
        return data

    def replace(self, **changes: Any) -> SimSettings:
        """A copy with ``changes`` (validated again)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.update(changes)
        return SimSettings(**data)
