"""The in-memory datagram network of virtual mode, and its latency models.

Endpoints are bound to virtual ``(ip, port)`` addresses (``10.x.y.z`` by default) and never
touch a socket. ``sendto`` draws the datagram's fate from the network's seeded RNG: lost with
probability ``loss``; otherwise it arrives after a one-way latency drawn from the
:class:`LatencyModel` (plus, when a per-node ``bandwidth`` is set, the time to serialise it
behind the sender's earlier datagrams). Arrivals wait in one heap, ordered by time then by send
order, which the :class:`~simulations.vloop.VirtualEventLoop` drains when its clock reaches
them. A datagram to an address nobody is bound to (a crashed or departed node) vanishes.

Latency model specifications (``--latency``):

* ``constant:MS`` — every datagram takes MS milliseconds;
* ``uniform:LOW,HIGH`` — uniform between LOW and HIGH ms;
* ``lognormal:MEDIAN,SIGMA`` — log-normal with that median (ms) and shape ``sigma``
  (heavy-tailed, as measured Internet RTTs are);
* ``matrix:FILE.json`` or ``matrix:JSON`` — groups of nodes (regions) with a one-way latency
  matrix: ``{"groups": ["eu", "us"], "weights": [0.5, 0.5], "ms": [[10, 45], [45, 12]],
  "jitter": 0.1}``; a node joins a group at random by weight, and each datagram takes the
  matrix entry times a uniform factor in ``[1 - jitter, 1 + jitter]``.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from simulations.errors import ConfigError, SimulationError

__all__ = [
    "ConstantLatency",
    "Delivery",
    "LatencyModel",
    "LogNormalLatency",
    "MatrixLatency",
    "UniformLatency",
    "VirtualNetwork",
    "VirtualTransport",
    "parse_latency",
    "virtual_host",
]

Address = tuple[str, int]
#: (arrival time, send order, destination, payload, source)
Delivery = tuple[float, int, Address, bytes, Address]


class LatencyModel(Protocol):
    """One-way datagram latency between two nodes, in seconds."""

    groups: int

    def sample(self, rng: random.Random, src_group: int, dst_group: int) -> float:
        """A latency for one datagram from a node of ``src_group`` to one of ``dst_group``."""
        ...

    def pick_group(self, rng: random.Random) -> int:
        """The group a new node joins."""
        ...

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description (for results.json)."""
        ...


class _OneGroup:
    groups = 1

    def pick_group(self, rng: random.Random) -> int:
        return 0


@dataclass(frozen=True)
class ConstantLatency(_OneGroup):
    """Every datagram takes ``ms`` milliseconds."""

    ms: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.ms) or self.ms < 0:
            raise ConfigError("constant latency must be >= 0 ms")

    def sample(self, rng: random.Random, src_group: int, dst_group: int) -> float:
        return self.ms / 1000.0

    def describe(self) -> dict[str, Any]:
        return {"model": "constant", "ms": self.ms}


@dataclass(frozen=True)
class UniformLatency(_OneGroup):
    """Uniform between ``low_ms`` and ``high_ms``."""

    low_ms: float
    high_ms: float

    def __post_init__(self) -> None:
        if not (0 <= self.low_ms <= self.high_ms and math.isfinite(self.high_ms)):
            raise ConfigError("uniform latency needs 0 <= LOW <= HIGH")

    def sample(self, rng: random.Random, src_group: int, dst_group: int) -> float:
        return (self.low_ms + (self.high_ms - self.low_ms) * rng.random()) / 1000.0

    def describe(self) -> dict[str, Any]:
        return {"model": "uniform", "low_ms": self.low_ms, "high_ms": self.high_ms}


@dataclass(frozen=True)
class LogNormalLatency(_OneGroup):
    """Log-normal: ``median_ms * exp(sigma * N(0, 1))``."""

    median_ms: float
    sigma: float

    def __post_init__(self) -> None:
        if not (self.median_ms > 0 and 0 <= self.sigma <= 5):
            raise ConfigError("lognormal latency needs MEDIAN > 0 and 0 <= SIGMA <= 5")

    def sample(self, rng: random.Random, src_group: int, dst_group: int) -> float:
        return rng.lognormvariate(math.log(self.median_ms), self.sigma) / 1000.0

    def describe(self) -> dict[str, Any]:
        return {"model": "lognormal", "median_ms": self.median_ms, "sigma": self.sigma}


class MatrixLatency:
    """Groups of nodes with a one-way latency matrix (ms) and a relative jitter.

    Args:
        ms: ``ms[i][j]`` is the latency from group i to group j.
        weights: relative group sizes (default equal).
        names: group names for the report.
        jitter: each datagram's latency is the entry times ``uniform(1 - jitter, 1 + jitter)``.
    """

    def __init__(
        self,
        ms: Sequence[Sequence[float]],
        weights: Sequence[float] | None = None,
        names: Sequence[str] | None = None,
        jitter: float = 0.0,
    ) -> None:
        n = len(ms)
        if n == 0 or any(len(row) != n for row in ms):
            raise ConfigError("the latency matrix must be square and non-empty")
        if any(not (isinstance(v, int | float) and 0 <= v < math.inf) for row in ms for v in row):
            raise ConfigError("latency matrix entries must be finite numbers >= 0")
        weights = list(weights) if weights is not None else [1.0] * n
        if len(weights) != n or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ConfigError("one non-negative weight per group, not all zero")
        if not 0 <= jitter < 1:
            raise ConfigError("jitter must be in [0, 1)")
        self.groups = n
        self.ms = [[float(v) for v in row] for row in ms]
        self.weights = weights
        self.names = list(names) if names is not None else [f"g{i}" for i in range(n)]
        if len(self.names) != n:
            raise ConfigError("one name per group")
        self.jitter = jitter
        total = sum(weights)
        self._cumulative = [sum(weights[: i + 1]) / total for i in range(n)]
        self._seconds = [[v / 1000.0 for v in row] for row in self.ms]

    def sample(self, rng: random.Random, src_group: int, dst_group: int) -> float:
        base = self._seconds[src_group][dst_group]
        if self.jitter:
            base *= 1.0 + self.jitter * (2.0 * rng.random() - 1.0)
        return base

    def pick_group(self, rng: random.Random) -> int:
        x = rng.random()
        for i, edge in enumerate(self._cumulative):
            if x < edge:
                return i
        return self.groups - 1

    def describe(self) -> dict[str, Any]:
        return {
            "model": "matrix",
            "groups": self.names,
            "weights": self.weights,
            "ms": self.ms,
            "jitter": self.jitter,
        }


def _numbers(text: str, count: int, spec: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"latency {spec!r}: expected numbers") from None
    if len(values) != count:
        raise ConfigError(f"latency {spec!r}: expected {count} number(s)")
    return values


def parse_latency(spec: str) -> LatencyModel:
    """A latency model from its command-line specification (see the module docstring).

    Raises:
        ConfigError: unknown model or bad parameters.
    """
    kind, _, rest = spec.strip().partition(":")
    kind = kind.lower()
    if kind == "constant":
        return ConstantLatency(*_numbers(rest, 1, spec))
    if kind == "uniform":
        return UniformLatency(*_numbers(rest, 2, spec))
    if kind == "lognormal":
        return LogNormalLatency(*_numbers(rest, 2, spec))
    if kind == "matrix":
        text = rest.strip()
        if not text.startswith(("{", "[")):
            try:
                text = Path(text).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"latency matrix file {rest!r}: {exc}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"latency matrix is not JSON: {exc}") from None
        if isinstance(data, list):
            data = {"ms": data}
        if not isinstance(data, dict) or "ms" not in data:
            raise ConfigError('latency matrix: expected {"ms": [[...], ...], ...}')
        try:
            return MatrixLatency(
                data["ms"], data.get("weights"), data.get("groups"), float(data.get("jitter", 0))
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"latency matrix: {exc}") from None
    raise ConfigError(f"unknown latency model {kind!r} (constant, uniform, lognormal, matrix)")


def virtual_host(index: int) -> str:
    """The virtual IPv4 address of node ``index`` (0 -> ``10.0.0.1``; 16 million addresses)."""
    if not 0 <= index < 0xFFFFFE:
        raise ConfigError("at most 16,777,214 virtual nodes")
    n = index + 1
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


class VirtualTransport(asyncio.DatagramTransport):
    """A datagram endpoint of a :class:`VirtualNetwork` (no socket).

    Attributes:
        datagrams_sent, bytes_sent, datagrams_received, bytes_received: traffic counters.
        group: the latency group of this endpoint.
    """

    def __init__(
        self, network: VirtualNetwork, address: Address, protocol: Any, group: int
    ) -> None:
        super().__init__()
        self._network = network
        self._address = address
        self._protocol = protocol
        self._closing = False
        self.group = group
        self.tx_free_at = 0.0
        self.datagrams_sent = 0
        self.bytes_sent = 0
        self.datagrams_received = 0
        self.bytes_received = 0

    def sendto(self, data: bytes, addr: Address | None = None) -> None:  # type: ignore[override]
        if self._closing:
            return
        if addr is None:
            raise SimulationError("virtual endpoints are not connected: give an address")
        self._network.send(self, bytes(data), addr)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._address
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._network.unbind(self)
        self._network.loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_write_buffer_size(self) -> int:
        return 0

    @property
    def address(self) -> Address:
        return self._address

    @property
    def protocol(self) -> Any:
        return self._protocol


class VirtualNetwork:
    """Endpoints by address, and the datagrams in flight between them.

    Args:
        latency: the one-way latency model.
        loss: probability that a datagram is lost (independent per datagram).
        bandwidth: optional uplink of every node, bits per second (serialisation delay and
            a FIFO queue per sender); None for unlimited.
        rng: the network's own seeded generator (loss, latency, groups).

    Attributes:
        datagrams_sent, datagrams_lost, datagrams_delivered, datagrams_vanished (arrived at an
        address nobody is bound to), bytes_sent: totals.
    """

    def __init__(
        self,
        latency: LatencyModel | None = None,
        loss: float = 0.0,
        bandwidth: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 <= loss < 1:
            raise ConfigError("loss must be in [0, 1)")
        if bandwidth is not None and not bandwidth > 0:
            raise ConfigError("bandwidth must be > 0 bits/s")
        self.latency: LatencyModel = latency or ConstantLatency(0.0)
        self.loss = loss
        self.bandwidth = bandwidth
        self.rng = rng or random.Random(0)
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._endpoints: dict[Address, VirtualTransport] = {}
        self._groups: dict[str, int] = {}
        self._queue: list[Delivery] = []
        self._order = 0
        self._next_port = 40000
        self.datagrams_sent = 0
        self.datagrams_lost = 0
        self.datagrams_delivered = 0
        self.datagrams_vanished = 0
        self.bytes_sent = 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called by the loop that owns this network."""
        if self.loop is not None and self.loop is not loop:
            raise SimulationError("a virtual network belongs to one loop")
        self.loop = loop

    # -- endpoints ------------------------------------------------------------------------

    def group_of(self, host: str) -> int:
        """The latency group of ``host`` (drawn from the model on first use)."""
        group = self._groups.get(host)
        if group is None:
            group = self.latency.pick_group(self.rng) if self.latency.groups > 1 else 0
            self._groups[host] = group
        return group

    def bind(self, local_addr: Address, protocol: Any) -> VirtualTransport:
        """A transport at ``local_addr`` (port 0: the next free one) delivering to ``protocol``.

        Raises:
            SimulationError: the address is taken or not an IPv4 literal.
        """
        host, port = local_addr[0], int(local_addr[1])
        if host in ("", "0.0.0.0", "::"):
            raise SimulationError("bind virtual endpoints to their own address, not a wildcard")
        if port == 0:
            while (host, self._next_port) in self._endpoints:
                self._next_port += 1
            port = self._next_port
            self._next_port = 40000 + (self._next_port - 40000 + 1) % 20000
        address = (host, port)
        if address in self._endpoints:
            raise SimulationError(f"virtual address {host}:{port} is in use")
        transport = VirtualTransport(self, address, protocol, self.group_of(host))
        self._endpoints[address] = transport
        return transport

    def unbind(self, transport: VirtualTransport) -> None:
        """Forget ``transport``: datagrams in flight to it will vanish."""
        if self._endpoints.get(transport.address) is transport:
            del self._endpoints[transport.address]

    def endpoint(self, address: Address) -> VirtualTransport | None:
        return self._endpoints.get(address)

    def __len__(self) -> int:
        return len(self._endpoints)

    # -- datagrams ------------------------------------------------------------------------

    def send(self, source: VirtualTransport, data: bytes, addr: Address) -> None:
        """Put one datagram on the wire (lost, or queued for its arrival time)."""
        size = len(data)
        self.datagrams_sent += 1
        self.bytes_sent += size
        source.datagrams_sent += 1
        source.bytes_sent += size
        rng = self.rng
        if self.loss and rng.random() < self.loss:
            self.datagrams_lost += 1
            return
        now = self.loop.time()
        departure = now
        if self.bandwidth is not None:
            departure = max(now, source.tx_free_at) + size * 8.0 / self.bandwidth
            source.tx_free_at = departure
        dst = (addr[0], addr[1])
        dst_group = self._groups.get(dst[0], 0)
        delay = self.latency.sample(rng, source.group, dst_group)
        self._order += 1
        heapq.heappush(self._queue, (departure + delay, self._order, dst, data, source.address))

    def next_arrival(self) -> float | None:
        """When the next datagram arrives, or None."""
        return self._queue[0][0] if self._queue else None

    def due(self, until: float) -> list[Delivery]:
        """Take every datagram arriving at or before ``until``, in arrival order."""
        queue = self._queue
        out = []
        while queue and queue[0][0] <= until:
            out.append(heapq.heappop(queue))
        return out

    def deliver(self, deliveries: list[Delivery]) -> None:
        """Hand datagrams to their receivers (called by the loop)."""
        endpoints = self._endpoints
        for _, _, dst, data, src in deliveries:
            transport = endpoints.get(dst)
            if transport is None:
                self.datagrams_vanished += 1
                continue
            self.datagrams_delivered += 1
            transport.datagrams_received += 1
            transport.bytes_received += len(data)
            try:
                transport._protocol.datagram_received(data, src)
            except Exception as exc:  # as a real loop does with a failing callback
                self.loop.call_exception_handler(
                    {"message": "datagram_received failed", "exception": exc}
                )

    def in_flight(self) -> int:
        return len(self._queue)

    def describe(self) -> dict[str, Any]:
        """Model and totals, JSON-friendly."""
        return {
            "latency": self.latency.describe(),
            "loss": self.loss,
            "bandwidth_bps": self.bandwidth,
            "datagrams_sent": self.datagrams_sent,
            "datagrams_lost": self.datagrams_lost,
            "datagrams_delivered": self.datagrams_delivered,
            "datagrams_vanished": self.datagrams_vanished,
            "bytes_sent": self.bytes_sent,
        }
