"""The nodes of one asyncio loop, and the operations the workload sends them.

A :class:`NodeHost` owns the overlay nodes that live in one event loop: all of them in virtual
mode, one worker process's share in real mode. Every node is the overlay's own
:class:`~p2psip.overlay.aio.dht.DHTNode` (built with
:meth:`~p2psip.locator.aio.dht.DHTLocator.node_arguments`, so it stores and serves signed AoR
records through the real validator) wrapped in a :class:`~p2psip.locator.aio.dht.DHTLocator`;
the harness only adds counters and, for the nodes chosen as attackers, misbehaviour.

Operations take plain tuples and return plain dataclasses, so that real mode can send them
through a pipe unchanged: ``start``, ``join``, ``publish``, ``resolve``, ``leave``,
``make_malicious``, ``census``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import resource
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2psip.errors import LocatorError, NotFound, RecordRefused
from p2psip.locator.aio.dht import DHTLocator
from p2psip.locator.static import contact_from_uri
from p2psip.overlay.aio.dht import DHTNode
from p2psip.overlay.dht import ID_BITS, Contact, Lookup
from p2psip.overlay.identity import Identity
from p2psip.overlay.records import (
    AoRRecord,
    DeviceEntry,
    RecordPolicy,
    normalize_aor,
    sign_entry,
)
from p2psip.overlay.records import Contact as RecordContact
from p2psip.overlay.records import dht_key as record_key
from simulations.calls import SIP_PORT, CallAgent, CallResult, attempt_call, is_call_aor
from simulations.config import SimSettings
from simulations.errors import SimulationError
from simulations.network import VirtualNetwork, VirtualTransport

__all__ = [
    "ATTACKER_USER",
    "Census",
    "JoinResult",
    "NodeHost",
    "PublishResult",
    "ResolveResult",
    "aor_of",
    "contact_uri",
    "derived_rng",
    "rss_bytes",
]

logger = logging.getLogger(__name__)

#: the user part of every forged contact, so that readers can tell a forgery they accepted
ATTACKER_USER = "mallory"
#: AoRs live in this domain
AOR_DOMAIN = "sim.p2psip.test"
#: the harness's wall-clock origin in virtual mode (records carry absolute expiry times)
VIRTUAL_EPOCH = 1_700_000_000.0
#: a resolve that takes longer than this (loop seconds) counts as failed
RESOLVE_TIMEOUT = 120.0

# A resolve puts a fresh list here; the lookup (which may run in a task created by
# ``wait_for``, with a copy of the context: same list) appends itself to it.
_LOOKUPS: contextvars.ContextVar[list[Lookup] | None] = contextvars.ContextVar(
    "simulations_lookups", default=None
)


def derived_rng(seed: int, *parts: object) -> random.Random:
    """A generator seeded from the run's seed and a purpose (same on every platform)."""
    return random.Random(":".join(str(p) for p in (seed, *parts)))


def aor_of(record: int) -> str:
    """The AoR of record number ``record``."""
    return f"sip:u{record}@{AOR_DOMAIN}"


def contact_uri(aor: str, address: tuple[str, int]) -> str:
    """The contact a publisher puts in its record (its overlay address stands for its SIP one)."""
    user = aor.partition(":")[2].partition("@")[0]
    return f"sip:{user}@{address[0]}:{address[1]}"


def rss_bytes() -> int:
    """This process's resident set size (``VmRSS``), or its peak when /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class MeteredDHTNode(DHTNode):
    """The overlay node, unchanged, except that each value lookup is remembered for the caller.

    The locator's ``resolve`` hides the :class:`~p2psip.overlay.dht.Lookup` (hops, RPCs); the
    task that runs a resolve finds it in a list it left in a context variable.
    """

    async def _value_lookup(self, dkey: bytes, quorum: int | None, check: Any) -> Lookup:
        lookup = await super()._value_lookup(dkey, quorum, check)
        seen = _LOOKUPS.get()
        if seen is not None:
            seen.append(lookup)
        return lookup


# -- results (plain data: they cross process boundaries in real mode) -----------------------------


@dataclass(slots=True)
class JoinResult:
    """One node's bootstrap."""

    index: int
    ok: bool
    contacts: int
    seconds: float
    rpcs: int


@dataclass(slots=True)
class PublishResult:
    """One publish (or refresh) of an AoR."""

    index: int
    aor: str
    ok: bool
    reason: str
    seconds: float
    rpcs: int


@dataclass(slots=True)
class ResolveResult:
    """One resolve.

    Attributes:
        outcome: ``ok`` (the publisher's contact), ``not-found``, ``refused`` (records found,
            none verified), ``forged`` (a forged contact was returned), ``wrong`` (another
            contact), ``error`` or ``timeout``.
        started: the nodes' wall clock when the resolve began (virtual mode: the virtual
            epoch plus loop time).
        latency_ms: its duration, milliseconds of loop time.
        hops: sequential RPC rounds to the first verified value (0 when none was found).
        rpcs: RPCs the lookup sent.
        values: values answered (forged ones included).
        pinned: the reader was given the owner's key beforehand.
        contacts: the reader's routing-table size when the resolve began.
    """

    index: int
    aor: str
    outcome: str
    started: float
    latency_ms: float
    hops: int
    rpcs: int
    values: int
    pinned: bool
    contacts: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass
class Census:
    """What the live nodes of a host hold and have done (summed by the driver).

    Attributes:
        alive: live nodes.
        storage: keys held per live node (one list entry per node).
        record_holders: record key -> live nodes holding it.
        routing: routing-table size per live node.
        traffic: bytes sent per live node since it started.
        counters: DHT counters summed over every node ever started (departed ones included),
            plus the traffic counters ``datagrams_sent``, ``bytes_sent``, ``datagrams_received``,
            ``bytes_received`` and the attack counters ``forged_answers``,
            ``dropped_requests``.
        rss: this process's resident memory, bytes.
        cpu: this process's CPU time so far (user + system), seconds.
    """

    alive: int = 0
    storage: list[int] = field(default_factory=list)
    record_holders: dict[bytes, int] = field(default_factory=dict)
    routing: list[int] = field(default_factory=list)
    traffic: list[int] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    rss: int = 0
    cpu: float = 0.0


# -- one node --------------------------------------------------------------------------------------


class _Dropped(Exception):
    """Raised by a dropping attacker's handlers: the protocol counts it and answers nothing."""


class _Meter:
    """Traffic counters of a real socket (virtual transports count by themselves)."""

    __slots__ = ("bytes_received", "bytes_sent", "datagrams_received", "datagrams_sent")

    def __init__(self) -> None:
        self.datagrams_sent = 0
        self.bytes_sent = 0
        self.datagrams_received = 0
        self.bytes_received = 0


class SimNode:
    """A node of the simulation: the DHT node, its locator, its role."""

    __slots__ = (
        "address",
        "agent",
        "alive",
        "behaviour",
        "contact",
        "forged",
        "identity",
        "index",
        "locator",
        "meter",
        "node",
        "transport",
    )

    def __init__(self, index: int, node: DHTNode, locator: DHTLocator) -> None:
        self.index = index
        self.node = node
        self.locator = locator
        self.address: tuple[str, int] = ("", 0)
        self.contact: Contact | None = None
        self.alive = False
        self.behaviour = "honest"
        self.identity: Identity | None = None
        self.forged: dict[bytes, bytes] = {}
        self.meter: Any = None
        self.transport: Any = None
        self.agent: CallAgent | None = None


class NodeHost:
    """The nodes living in this event loop.

    Args:
        settings: the run's settings.
        host_of: the IP literal node ``index`` listens on.
        port: UDP port of every node (0: any free port; virtual mode uses a fixed one).
        network: the virtual network (virtual mode), or None for real sockets.
        epoch: added to the loop clock to make the nodes' wall clock (records carry absolute
            expiry times); None uses ``time.time`` (real mode).
    """

    def __init__(
        self,
        settings: SimSettings,
        *,
        host_of: Callable[[int], str],
        port: int = 0,
        network: VirtualNetwork | None = None,
        epoch: float | None = None,
    ) -> None:
        self.settings = settings
        self.host_of = host_of
        self.port = port
        self.network = network
        self.nodes: dict[int, SimNode] = {}
        self.policy = RecordPolicy.open()
        self.config = settings.dht_config()
        self.loop = asyncio.get_running_loop()
        self.origin = self.loop.time()
        if epoch is None:
            self.clock: Callable[[], float] = time.time
        else:
            loop = self.loop
            base = epoch - self.origin

            def clock() -> float:
                return base + loop.time()

            self.clock = clock
        #: record key -> (aor, publisher public key): what forgers impersonate
        self.victims: dict[bytes, tuple[str, bytes]] = {}
        self.departed_counters: dict[str, int] = {}
        self.forged_answers = 0
        self.dropped_requests = 0
        #: resolves that raised something other than a locator error (a bug, not an outcome)
        self.exceptions = 0

    def now(self) -> float:
        """Loop seconds since this host started."""
        return self.loop.time() - self.origin

    # -- lifecycle ------------------------------------------------------------------------

    def _make(self, index: int) -> SimNode:
        seed = self.settings.seed
        node = MeteredDHTNode(
            **DHTLocator.node_arguments(  # type: ignore[arg-type]
                self.policy,
                config=self.config,
                rng=derived_rng(seed, "node", index),
                clock=self.clock,
            )
        )
        locator = DHTLocator(
            node,
            None,
            policy=self.policy,
            lifetime=self.settings.lifetime,
            clock=self.clock,
        )
        return SimNode(index, node, locator)

    async def start(self, indices: Iterable[int]) -> dict[int, tuple[str, int]]:
        """Create and bind nodes (not joined yet); returns their addresses."""
        out = {}
        for index in indices:
            if index in self.nodes:
                raise SimulationError(f"node {index} exists already")
            sim = self._make(index)
            address = await sim.node.listen(self.port, self.host_of(index))
            sim.address = address
            sim.contact = Contact(sim.node.node_id, address[0], address[1])
            sim.alive = True
            transport = sim.node.protocol.transport
            if isinstance(transport, VirtualTransport):
                sim.transport = transport
            else:
                sim.meter = self._install_meter(sim)
            self.nodes[index] = sim
            out[index] = address
        return out

    def _install_meter(self, sim: SimNode) -> _Meter:
        """Count a real socket's traffic; drop ``loss`` of what it receives."""
        meter = _Meter()
        protocol = sim.node.protocol
        transport = protocol.transport
        send = transport.sendto
        receive = protocol.datagram_received
        loss = self.settings.loss
        rng = derived_rng(self.settings.seed, "loss", sim.index)

        def sendto(data: bytes, addr: Any = None) -> None:
            meter.datagrams_sent += 1
            meter.bytes_sent += len(data)
            send(data, addr)

        def datagram_received(data: bytes, addr: Any) -> None:
            if loss and rng.random() < loss:
                return
            meter.datagrams_received += 1
            meter.bytes_received += len(data)
            receive(data, addr)

        transport.sendto = sendto  # type: ignore[method-assign]
        protocol.datagram_received = datagram_received  # type: ignore[method-assign]
        return meter

    def alive(self, index: int) -> SimNode:
        sim = self.nodes.get(index)
        if sim is None or not sim.alive:
            raise SimulationError(f"node {index} is not alive here")
        return sim

    async def join(self, items: Iterable[tuple[int, list[tuple[str, int]]]]) -> list[JoinResult]:
        """Bootstrap each ``(index, [bootstrap addresses])``, all at once."""

        async def one(index: int, addresses: list[tuple[str, int]]) -> JoinResult:
            sim = self.alive(index)
            before = sim.node.stats.requests_sent
            started = self.loop.time()
            try:
                contacts = await sim.node.bootstrap(addresses)
            except (OSError, ValueError) as exc:
                logger.warning("node %d failed to join: %s", index, exc)
                contacts = 0
            return JoinResult(
                index,
                contacts > 0,
                contacts,
                self.loop.time() - started,
                sim.node.stats.requests_sent - before,
            )

        return list(await asyncio.gather(*(one(i, a) for i, a in items)))

    def oracle_join(
        self, fill: int, now_rng: random.Random, indices: Iterable[int] | None = None
    ) -> None:
        """Fill every live node's routing table from the global node list (no messages).

        For each distance range of a node (ids sharing exactly ``p`` leading bits with it) the
        table gets every node of the range when there are at most k, else ``fill`` of them at
        random: the table of a converged Kademlia network (paper §2.2), reached at any size
        without the cost of N bootstraps. Only possible where every node lives (virtual mode).
        ``indices`` limits it to those nodes (default: every live node).
        """
        ksize = self.config.ksize
        chosen = self.nodes.values() if indices is None else (self.nodes[i] for i in indices)
        nodes = sorted(
            (sim for sim in chosen if sim.alive),
            key=lambda s: s.node.router.own_int,
        )
        ints = [s.node.router.own_int for s in nodes]
        contacts = [s.contact for s in nodes]
        now = self.clock()
        top = ID_BITS - 1
        for sim in nodes:
            router = sim.node.router
            x = router.own_int
            for p in range(ID_BITS):
                bit = top - p
                base = (x >> (bit + 1)) << (bit + 1)
                low = base | ((~x >> bit & 1) << bit)
                high = low | ((1 << bit) - 1)
                a = bisect_left(ints, low)
                b = bisect_right(ints, high, a)
                count = b - a
                if count:
                    picks = range(a, b) if count <= ksize else now_rng.sample(range(a, b), fill)
                    for i in picks:
                        router.touch(contacts[i], now)  # type: ignore[arg-type]
                same_low = base | (x & (1 << bit))
                same_high = same_low | ((1 << bit) - 1)
                if bisect_right(ints, same_high) - bisect_left(ints, same_low) <= 1:
                    break

    async def leave(self, items: Iterable[tuple[int, bool]]) -> int:
        """Stop each ``(index, graceful)``; returns how many stopped.

        A crashed node just vanishes. A graceful one first offers every record it holds to
        the k contacts of its routing table closest to the record's key (a STORE each; those
        already holding the record answer at once), so that the next-closest node takes its
        place as a replica: Kademlia has no leave message, this is the harness's handover.
        """

        async def one(index: int, graceful: bool) -> int:
            sim = self.nodes.get(index)
            if sim is None or not sim.alive:
                return 0
            sim.alive = False
            node = sim.node
            if graceful:
                protocol = node.protocol
                stores = [
                    protocol.call_store(contact, key, value)
                    for key, value in node.storage.items(self.clock())
                    for contact in node.router.closest(key)
                ]
                await asyncio.gather(*stores, return_exceptions=True)
            if sim.agent is not None:  # a crash sends no BYE: its calls just go silent
                await sim.agent.close(graceful=graceful)
            await node.stop()
            self._retire(sim)
            return 1

        return sum(await asyncio.gather(*(one(i, g) for i, g in items)))

    def _retire(self, sim: SimNode) -> None:
        counters = self.departed_counters
        for name, value in self._node_counters(sim).items():
            counters[name] = counters.get(name, 0) + value
        del self.nodes[sim.index]  # its memory goes; its counters stay in the totals

    async def close(self) -> None:
        """Stop every live node."""
        await self.leave([(i, False) for i, s in self.nodes.items() if s.alive])

    # -- records ----------------------------------------------------------------------------

    def _identity(self, sim: SimNode) -> Identity:
        if sim.identity is None:
            sim.identity = Identity.generate(derived_rng(self.settings.seed, "identity", sim.index))
            sim.locator.identity = sim.identity
        return sim.identity

    def public_key(self, index: int) -> bytes:
        """The identity key of node ``index`` (created on first use)."""
        return self._identity(self.nodes[index]).public_key_bytes

    async def publish(
        self, items: Iterable[tuple[int, str, float]], limit: int
    ) -> list[PublishResult]:
        """Sign and publish ``(index, aor, delay)``: node ``index`` publishes its contact for
        ``aor`` after ``delay`` seconds; at most ``limit`` at once."""
        gate = asyncio.Semaphore(limit)

        async def one(index: int, aor: str, delay: float) -> PublishResult:
            if delay > 0:
                await asyncio.sleep(delay)
            async with gate:
                sim = self.nodes.get(index)
                if sim is None or not sim.alive:
                    return PublishResult(index, aor, False, "publisher gone", 0.0, 0)
                self._identity(sim)
                address = sim.address
                if is_call_aor(aor) and sim.agent is not None:
                    address = sim.agent.address  # its SIP contact
                contact = contact_from_uri(contact_uri(aor, address), source="dht")
                started = self.loop.time()
                before = sim.node.stats.requests_sent
                try:
                    await sim.locator.publish(aor, [contact])
                    ok, reason = True, "ok"
                except LocatorError as exc:
                    ok, reason = False, f"{type(exc).__name__}: {exc}"
                return PublishResult(
                    index,
                    aor,
                    ok,
                    reason,
                    self.loop.time() - started,
                    sim.node.stats.requests_sent - before,
                )

        return list(await asyncio.gather(*(one(*item) for item in items)))

    async def resolve(
        self,
        items: Iterable[tuple[int, str, str, bytes | None, float]],
        limit: int,
    ) -> list[ResolveResult]:
        """Resolve ``(index, aor, expected contact URI, pinned key or None, delay)``; at most
        ``limit`` at once. A pinned key plays a reader that met the AoR's owner before."""
        gate = asyncio.Semaphore(limit)

        async def one(
            index: int, aor: str, expected: str, pinned: bytes | None, delay: float
        ) -> ResolveResult:
            if delay > 0:
                await asyncio.sleep(delay)
            async with gate:
                return await self._resolve_one(index, aor, expected, pinned)

        tasks = [asyncio.ensure_future(one(*item)) for item in items]
        return list(await asyncio.gather(*tasks))

    async def _resolve_one(
        self, index: int, aor: str, expected: str, pinned: bytes | None
    ) -> ResolveResult:
        started = self.loop.time()
        sim = self.nodes.get(index)
        if sim is None or not sim.alive:  # departed before its turn came
            return ResolveResult(
                index, aor, "reader-left", self.clock(), 0.0, 0, 0, 0, pinned is not None
            )
        locator = sim.locator
        if pinned is not None:
            locator.known_keys[normalize_aor(aor)] = pinned
        seen: list[Lookup] = []
        _LOOKUPS.set(seen)
        table_size = len(sim.node.router)
        wall = self.clock()
        outcome = "error"
        try:
            located = await asyncio.wait_for(locator.resolve(aor), RESOLVE_TIMEOUT)
        except NotFound:
            outcome = "not-found"
        except RecordRefused:
            outcome = "refused"
        except LocatorError:
            outcome = "error"
        except TimeoutError:
            outcome = "timeout"
        except Exception as exc:  # a bug below us: counted and reported, the run goes on
            outcome = f"exception:{type(exc).__name__}"
            if not self.exceptions:
                logger.error("resolve of %s raised", aor, exc_info=True)
            self.exceptions += 1
        else:
            uris = [c.uri for c in located]
            if expected in uris:
                outcome = "ok"
            elif any(f"sip:{ATTACKER_USER}@" in uri for uri in uris):
                outcome = "forged"
            else:
                outcome = "wrong"
        if not sim.alive:
            outcome = "reader-left"  # the reader departed meanwhile: not the overlay's failure
        lookup = seen[-1] if seen else None
        return ResolveResult(
            index,
            aor,
            outcome,
            wall,
            (self.loop.time() - started) * 1000.0,
            lookup.hops if lookup is not None else 0,
            lookup.queries if lookup is not None else 0,
            len(lookup.values) if lookup is not None else 0,
            pinned is not None,
            table_size,
        )

    # -- calls ------------------------------------------------------------------------------

    async def start_sip(self, indices: Iterable[int]) -> dict[int, tuple[str, int]]:
        """Give each node a SIP user agent on its own host address (see
        :class:`~simulations.calls.CallAgent`); returns their UDP addresses."""
        out = {}
        virtual = self.network is not None
        for index in indices:
            sim = self.alive(index)
            agent = CallAgent(index, self.settings.seed, virtual=virtual)
            out[index] = await agent.listen(sim.address[0], SIP_PORT if virtual else 0)
            sim.agent = agent
        return out

    async def call(
        self, items: Iterable[tuple[int, int, bool, float]], limit: int
    ) -> list[CallResult]:
        """Call attempts ``(caller, callee, callee alive, delay)``: resolve the callee's AoR
        through the caller's DHT node, INVITE its first contact, hang up; at most ``limit``
        at once."""
        gate = asyncio.Semaphore(limit)

        async def one(index: int, callee: int, callee_alive: bool, delay: float) -> CallResult:
            if delay > 0:
                await asyncio.sleep(delay)
            async with gate:
                sim = self.nodes.get(index)
                if sim is None or not sim.alive or sim.agent is None:
                    return CallResult(index, callee, "caller-left", self.clock(), callee_alive)
                result = await attempt_call(
                    sim.agent,
                    sim.locator,
                    callee,
                    callee_alive,
                    self.clock(),
                    still_alive=lambda: sim.alive,
                )
                result.index = index
                return result

        return list(await asyncio.gather(*(one(*item) for item in items)))

    # -- attackers --------------------------------------------------------------------------

    def register_victims(self, victims: dict[bytes, tuple[str, bytes]]) -> None:
        """Record key -> (AoR, its owner's public key): what forgers answer about."""
        self.victims.update(victims)

    def make_malicious(self, items: Iterable[tuple[int, str]]) -> None:
        """Turn ``(index, kind)`` nodes into attackers (see ``SimSettings.attack``).

        ``drop``: answers pings (so it stays in routing tables) but no FIND_NODE, FIND_VALUE or
        STORE. ``forge-sig``/``forge-key``: answers FIND_VALUE for every published AoR with a
        record naming the attacker as contact, carrying the owner's key with a bad signature
        or signed with the attacker's own key.
        """
        for index, kind in items:
            sim = self.alive(index)
            sim.behaviour = kind
            protocol = sim.node.protocol
            if kind == "drop":

                def dropped(*args: Any) -> Any:
                    self.dropped_requests += 1
                    raise _Dropped

                protocol.rpc_find_node = dropped  # type: ignore[method-assign]
                protocol.rpc_find_value = dropped  # type: ignore[method-assign]
                protocol.rpc_store = dropped  # type: ignore[method-assign]
            elif kind in ("forge-sig", "forge-key"):
                protocol.rpc_find_value = self._forging_handler(  # type: ignore[method-assign]
                    sim, protocol.rpc_find_value
                )
            else:
                raise SimulationError(f"unknown attack {kind!r}")

    def _forging_handler(self, sim: SimNode, honest: Callable[..., Any]) -> Callable[..., Any]:
        def rpc_find_value(sender: tuple[str, int], nodeid: bytes, key: object) -> Any:
            answer = honest(sender, nodeid, key)
            if not isinstance(key, bytes) or key not in self.victims:
                return answer
            forged = sim.forged.get(key)
            if forged is None:
                forged = sim.forged[key] = self._forge(sim, key)
            self.forged_answers += 1
            if isinstance(answer, dict):
                nodes = answer.get("nodes", [])
            elif isinstance(answer, list):
                nodes = answer
            else:
                nodes = []
            return {"value": forged, "nodes": nodes}

        return rpc_find_value

    def _forge(self, sim: SimNode, key: bytes) -> bytes:
        aor, owner_key = self.victims[key]
        now = self.clock()
        contacts = (
            RecordContact(
                f"sip:{ATTACKER_USER}@{sim.address[0]}:{sim.address[1]}", "udp", 0, "default"
            ),
        )
        seq = int(now * 1000) + 10_000_000  # "newer" than anything the owner published
        if sim.behaviour == "forge-key":
            entry = sign_entry(self._identity(sim), aor, "default", contacts, now + 3000, seq)
        else:  # the owner's key, a signature that does not verify
            rng = derived_rng(self.settings.seed, "forge", sim.index, key.hex())
            entry = DeviceEntry(
                normalize_aor(aor),
                "default",
                contacts,
                int(now + 3000),
                seq,
                owner_key,
                rng.randbytes(64),
            )
        return AoRRecord(normalize_aor(aor), (entry,)).to_bytes()

    def closest_holders(self, key: bytes, count: int) -> list[tuple[int, int, bool]]:
        """This host's ``count`` live nodes closest to ``key``: ``(distance, index, holds it)``.

        The omniscient view a failed lookup is compared with (see ``Workload``'s diagnosis).
        """
        target = int.from_bytes(key, "big")
        now = self.clock()
        ranked = sorted(
            (sim.node.router.own_int ^ target, sim.index)
            for sim in self.nodes.values()
            if sim.alive
        )[:count]
        return [(d, i, self.nodes[i].node.storage.get(key, now) is not None) for d, i in ranked]

    # -- what the nodes hold and did ----------------------------------------------------------

    def _node_counters(self, sim: SimNode) -> dict[str, int]:
        stats = sim.node.stats
        traffic = sim.transport if sim.transport is not None else sim.meter
        out = {
            "requests_sent": stats.requests_sent,
            "retransmissions": stats.retransmissions,
            "rpc_failures": stats.rpc_failures,
            "requests_received": stats.requests_received,
            "malformed_datagrams": stats.malformed_datagrams,
            "stores_accepted": stats.stores_accepted,
            "stores_refused": stats.stores_refused,
            "handover_stores": stats.handover_stores,
            "contacts_evicted": stats.contacts_evicted,
        }
        if traffic is not None:
            out["datagrams_sent"] = traffic.datagrams_sent
            out["bytes_sent"] = traffic.bytes_sent
            out["datagrams_received"] = traffic.datagrams_received
            out["bytes_received"] = traffic.bytes_received
        return out

    def census(self, record_keys: Iterable[bytes] = ()) -> Census:
        """Storage, routing and counters of this host's nodes (see :class:`Census`)."""
        wanted = set(record_keys)
        census = Census(counters=dict(self.departed_counters))
        now = self.clock()
        holders: dict[bytes, int] = dict.fromkeys(wanted, 0)
        counters = census.counters
        for sim in self.nodes.values():
            if not sim.alive:
                continue
            census.alive += 1
            storage = sim.node.storage
            census.storage.append(len(storage))
            census.routing.append(len(sim.node.router))
            if wanted:
                for key, _ in storage.items(now):
                    if key in holders:
                        holders[key] += 1
            node_counters = self._node_counters(sim)
            census.traffic.append(node_counters.get("bytes_sent", 0))
            for name, value in node_counters.items():
                counters[name] = counters.get(name, 0) + value
        counters["forged_answers"] = self.forged_answers
        counters["dropped_requests"] = self.dropped_requests
        census.record_holders = holders
        census.rss = rss_bytes()
        census.cpu = time.process_time()
        return census


def record_keys(aors: Iterable[str]) -> list[bytes]:
    """The DHT keys of ``aors``."""
    return [record_key(aor) for aor in aors]
