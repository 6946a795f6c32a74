"""The workload: join, publish, resolve, then churn, mass failure, refreshes and attacks.

One :class:`Workload` drives either mode through the :class:`Cluster` interface: a
:class:`LocalCluster` (virtual mode: one :class:`~simulations.nodes.NodeHost` in this loop) or
:class:`~simulations.real.ProcessCluster` (real mode: worker processes). It decides everything
(who joins through whom, who publishes and resolves what, who departs) from one seeded RNG, and
keeps the raw results in a :class:`RunRecord` for :mod:`simulations.metrics`.

Phases:

1. **join** — node 0 starts alone; the others bootstrap through a random earlier node,
   ``join_batch`` at a time, trying another one when nobody answered (up to
   ``JOIN_ATTEMPTS`` times); or the oracle fills the tables at once.
2. **publish** — ``records`` AoRs, each signed and published by its own honest node (the
   attackers, chosen first, are active from here on).
3. **steady** — ``lookups`` resolves of random live AoRs from random honest nodes.
4. **events** (``duration`` > 0) — time runs in ``tick`` steps: Poisson departures (crash or
   graceful) and arrivals at the ``churn`` rate, a ``mass_failure`` at ``mass_failure_at``,
   record refreshes every ``refresh`` seconds, and ``lookup_rate`` resolves per second spread
   over each tick; arrivals publish an AoR of their own at the initial share.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from simulations.calls import CallResult, call_aor
from simulations.config import SimSettings
from simulations.nodes import (
    Census,
    JoinResult,
    NodeHost,
    PublishResult,
    ResolveResult,
    aor_of,
    contact_uri,
    derived_rng,
    record_keys,
)
from simulations.progress import Progress

__all__ = ["Cluster", "LocalCluster", "RunRecord", "Workload", "poisson"]

Address = tuple[str, int]
#: bootstrap attempts of a joining node, each through another random live node
JOIN_ATTEMPTS = 3


class Cluster(Protocol):
    """Where the nodes live (one loop, or worker processes); see :class:`NodeHost`."""

    mode: str

    def wall(self) -> float:
        """The nodes' wall clock (virtual in virtual mode)."""
        ...

    async def start(self, indices: list[int]) -> dict[int, Address]: ...

    async def join(self, items: list[tuple[int, list[Address]]]) -> list[JoinResult]: ...

    async def oracle_join(self, fill: int, seed: int, count: int) -> None: ...

    async def publish(
        self, items: list[tuple[int, str, float]], limit: int
    ) -> list[PublishResult]: ...

    async def resolve(
        self, items: list[tuple[int, str, str, bytes | None, float]], limit: int
    ) -> list[ResolveResult]: ...

    async def leave(self, items: list[tuple[int, bool]]) -> int: ...

    async def public_keys(self, indices: list[int]) -> dict[int, bytes]: ...

    async def register_victims(self, victims: dict[bytes, tuple[str, bytes]]) -> None: ...

    async def make_malicious(self, items: list[tuple[int, str]]) -> None: ...

    async def census(self, keys: list[bytes]) -> Census: ...

    async def closest_holders(self, key: bytes, count: int) -> list[tuple[int, int, bool]]: ...

    async def start_sip(self, indices: list[int]) -> dict[int, Address]: ...

    async def call(
        self, items: list[tuple[int, int, bool, float]], limit: int
    ) -> list[CallResult]: ...

    async def close(self) -> None: ...


class LocalCluster:
    """Every node in this event loop (virtual mode)."""

    mode = "virtual"

    def __init__(self, host: NodeHost) -> None:
        self.host = host

    def wall(self) -> float:
        return self.host.clock()

    async def start(self, indices: list[int]) -> dict[int, Address]:
        return await self.host.start(indices)

    async def join(self, items: list[tuple[int, list[Address]]]) -> list[JoinResult]:
        return await self.host.join(items)

    async def oracle_join(self, fill: int, seed: int, count: int) -> None:
        self.host.oracle_join(fill, derived_rng(seed, "oracle"), range(count))

    async def publish(self, items: list[tuple[int, str, float]], limit: int) -> list[PublishResult]:
        return await self.host.publish(items, limit)

    async def resolve(
        self, items: list[tuple[int, str, str, bytes | None, float]], limit: int
    ) -> list[ResolveResult]:
        return await self.host.resolve(items, limit)

    async def leave(self, items: list[tuple[int, bool]]) -> int:
        return await self.host.leave(items)

    async def public_keys(self, indices: list[int]) -> dict[int, bytes]:
        return {i: self.host.public_key(i) for i in indices}

    async def register_victims(self, victims: dict[bytes, tuple[str, bytes]]) -> None:
        self.host.register_victims(victims)

    async def make_malicious(self, items: list[tuple[int, str]]) -> None:
        self.host.make_malicious(items)

    async def census(self, keys: list[bytes]) -> Census:
        return self.host.census(keys)

    async def closest_holders(self, key: bytes, count: int) -> list[tuple[int, int, bool]]:
        return self.host.closest_holders(key, count)

    async def start_sip(self, indices: list[int]) -> dict[int, Address]:
        return await self.host.start_sip(indices)

    async def call(self, items: list[tuple[int, int, bool, float]], limit: int) -> list[CallResult]:
        return await self.host.call(items, limit)

    async def close(self) -> None:
        await self.host.close()


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson-distributed count (Knuth's method; normal approximation above 30)."""
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit = math.exp(-mean)
    count, product = 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


class _Pool:
    """A set with O(1) add, remove and seeded random choice (insertion-ordered, deterministic)."""

    def __init__(self, items: Iterable[int] = ()) -> None:
        self._items: list[int] = []
        self._where: dict[int, int] = {}
        for item in items:
            self.add(item)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item: int) -> bool:
        return item in self._where

    def __iter__(self) -> Any:
        return iter(list(self._items))

    def add(self, item: int) -> None:
        if item not in self._where:
            self._where[item] = len(self._items)
            self._items.append(item)

    def remove(self, item: int) -> None:
        where = self._where.pop(item, None)
        if where is None:
            return
        last = self._items.pop()
        if where < len(self._items):
            self._items[where] = last
            self._where[last] = where

    def choice(self, rng: random.Random) -> int:
        return self._items[rng.randrange(len(self._items))]


@dataclass
class _Record:
    number: int
    aor: str
    publisher: int
    public_key: bytes
    uri: str
    next_refresh: float


@dataclass
class RunRecord:
    """Raw results of a run (see :mod:`simulations.metrics` for what is made of them).

    Attributes:
        phases: phase -> ``(loop start, loop end)`` seconds (virtual or real).
        walls: phase -> wall-clock seconds this host spent on it.
        censuses: ``start``, ``oracle`` (oracle-filled, before the measured joins),
            ``joined``, ``published``, ``steady``, ``end`` -> :class:`Census`.
        timeline: one dict per event tick (``t``, ``alive``, ``arrivals``, ``departures``,
            ``crashes``, ``mass_failure``).
        event_origin: the nodes' wall clock at the start of the event phase.
    """

    settings: SimSettings
    joins: list[JoinResult] = field(default_factory=list)
    publishes: list[PublishResult] = field(default_factory=list)
    refreshes: list[PublishResult] = field(default_factory=list)
    steady: list[ResolveResult] = field(default_factory=list)
    events: list[ResolveResult] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    censuses: dict[str, Census] = field(default_factory=dict)
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)
    walls: dict[str, float] = field(default_factory=dict)
    attackers: dict[int, str] = field(default_factory=dict)
    diagnoses: list[dict[str, Any]] = field(default_factory=list)
    arrivals_joined: list[JoinResult] = field(default_factory=list)
    calls: list[CallResult] = field(default_factory=list)
    call_nodes: list[int] = field(default_factory=list)
    call_publishes: list[PublishResult] = field(default_factory=list)
    record_count: int = 0
    event_origin: float = 0.0
    rss_before: int = 0


class Workload:
    """Runs the phases of one simulation against a :class:`Cluster`.

    Args:
        settings: the run's settings.
        cluster: where the nodes live.
        progress: progress bars (or silent).
    """

    def __init__(self, settings: SimSettings, cluster: Cluster, progress: Progress) -> None:
        self.s = settings
        self.cluster = cluster
        self.progress = progress
        self.rng = derived_rng(settings.seed, "workload")
        self.record = RunRecord(settings)
        self.addresses: dict[int, Address] = {}
        self.alive = _Pool()  # joined and not departed
        self.readers = _Pool()  # alive and honest
        self.records: dict[int, _Record] = {}
        self.live_records = _Pool()  # record numbers whose publisher is alive
        self.by_publisher: dict[int, list[int]] = {}
        self.call_refresh_at: dict[int, float] = {}  # call node -> its next record refresh
        self.next_index = settings.nodes
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    async def run(self) -> RunRecord:
        """All phases, then stop every node."""
        try:
            await self._phase("join", self._join())
            await self._phase("publish", self._publish())
            await self._phase("steady", self._steady())
            if self.s.calls and not self.s.duration:
                await self._phase("calls", self._calls())
            if self.s.duration:
                await self._phase("events", self._events())
            self.record.censuses["end"] = await self.cluster.census(self._record_keys())
        finally:
            await self.cluster.close()
        self.record.record_count = len(self.records)
        return self.record

    async def _phase(self, name: str, work: Awaitable[None]) -> None:
        began, wall = self.loop.time(), time.perf_counter()
        await work
        self.record.phases[name] = (began, self.loop.time())
        self.record.walls[name] = time.perf_counter() - wall

    def _record_keys(self) -> list[bytes]:
        return record_keys(r.aor for r in self.records.values())

    # -- join -----------------------------------------------------------------------------

    async def _join(self) -> None:
        s = self.s
        n = s.nodes
        self.record.censuses["start"] = await self.cluster.census([])
        self.record.rss_before = self.record.censuses["start"].rss
        bar = self.progress.bar("start", n, "node")
        chunk = max(256, s.join_batch or 1)
        for first in range(0, n, chunk):
            batch = list(range(first, min(n, first + chunk)))
            self.addresses.update(await self.cluster.start(batch))
            bar.update(len(batch))
        bar.close()
        first = 1
        if s.join == "oracle":
            first = n - s.measured_joins
            await self.cluster.oracle_join(s.oracle_fill or s.ksize, s.seed, first)
            for index in range(first):
                self._joined(index)
            self.record.censuses["oracle"] = await self.cluster.census([])
        else:
            self._joined(0)
        if first < n:
            bar = self.progress.bar("join", n - first, "node")
            batch_size = s.join_batch or 1
            for begin in range(first, n, batch_size):
                batch = list(range(begin, min(n, begin + batch_size)))
                results = await self._join_with_retries(batch)
                self.record.joins.extend(results)
                for result in results:
                    self._joined(result.index)  # failed ones too: isolated, as in life
                bar.update(len(results))
            bar.close()
        self.record.censuses["joined"] = await self.cluster.census([])

    async def _join_with_retries(self, indices: list[int]) -> list[JoinResult]:
        """Bootstrap ``indices`` through random live nodes; a node that reached nobody tries
        again through another one, up to ``JOIN_ATTEMPTS`` times (what a node given a list of
        bootstrap addresses does)."""
        final: dict[int, JoinResult] = {}
        pending = indices
        for _ in range(JOIN_ATTEMPTS):
            items = [(i, [self.addresses[self.alive.choice(self.rng)]]) for i in pending]
            results = await self.cluster.join(items)
            for result in results:
                final[result.index] = result
            pending = [r.index for r in results if not r.ok]
            if not pending:
                break
        return [final[i] for i in indices]

    def _joined(self, index: int) -> None:
        self.alive.add(index)
        if index not in self.record.attackers:
            self.readers.add(index)

    # -- publish (attackers chosen first) ---------------------------------------------------

    async def _publish(self) -> None:
        s = self.s
        rng = self.rng
        everyone = list(range(s.nodes))
        count = round(s.attack_share * s.nodes)
        attackers = sorted(rng.sample(everyone, count)) if count else []
        for index in attackers:
            if s.attack == "forge":
                kind = "forge-sig" if rng.random() < 0.5 else "forge-key"
            else:
                kind = s.attack
            self.record.attackers[index] = kind
            self.readers.remove(index)
        honest = [i for i in everyone if i not in self.record.attackers]
        publishers = rng.sample(honest, min(s.records or 1, len(honest)))
        keys = await self.cluster.public_keys(publishers)
        items = []
        now = self.loop.time()
        for number, index in enumerate(publishers):
            aor = aor_of(number)
            record = _Record(
                number,
                aor,
                index,
                keys[index],
                contact_uri(aor, self.addresses[index]),
                now + s.refresh * (1 + rng.random()) / 2,  # staggered refreshes
            )
            self.records[number] = record
            self.by_publisher.setdefault(index, []).append(number)
            items.append((index, aor, 0.0))
        if attackers:
            victims = {
                k: (r.aor, r.public_key)
                for k, r in zip(self._record_keys(), self.records.values(), strict=True)
            }
            await self.cluster.register_victims(victims)
            await self.cluster.make_malicious(sorted(self.record.attackers.items()))
        bar = self.progress.bar("publish", len(items), "record")
        results = []
        for first in range(0, len(items), 4 * s.concurrency):
            chunk = items[first : first + 4 * s.concurrency]
            results.extend(await self.cluster.publish(chunk, s.concurrency))
            bar.update(len(chunk))
        bar.close()
        self.record.publishes = results
        for result in results:
            self.live_records.add(self._number(result.aor))
        if s.calls:
            await self._start_call_nodes(honest)
        self.record.censuses["published"] = await self.cluster.census(self._record_keys())

    async def _start_call_nodes(self, honest: list[int]) -> None:
        """Give ``call_nodes`` random honest nodes a SIP user agent; each publishes its AoR
        with its UDP SIP contact."""
        s = self.s
        chosen = sorted(self.rng.sample(honest, min(s.call_nodes or 0, len(honest))))
        self.record.call_nodes = chosen
        await self.cluster.start_sip(chosen)
        items = [(index, call_aor(index), 0.0) for index in chosen]
        self.record.call_publishes = await self.cluster.publish(items, s.concurrency)
        now = self.loop.time()
        self.call_refresh_at = {
            index: now + s.refresh * (1 + self.rng.random()) / 2 for index in chosen
        }

    def _call_items(self, count: int, spread: float) -> list[tuple[int, int, bool, float]]:
        """``count`` attempts from random live call nodes to random other call nodes (alive
        or not: a caller cannot know that its callee departed)."""
        rng = self.rng
        nodes = self.record.call_nodes
        items: list[tuple[int, int, bool, float]] = []
        for _ in range(count):
            live = [i for i in nodes if i in self.alive]
            if not live or len(nodes) < 2:
                break
            caller = live[rng.randrange(len(live))]
            callee = caller
            while callee == caller:
                callee = nodes[rng.randrange(len(nodes))]
            delay = rng.random() * spread if spread else 0.0
            items.append((caller, callee, callee in self.alive, delay))
        return items

    async def _calls(self) -> None:
        s = self.s
        items = self._call_items(s.calls, 0.0)
        bar = self.progress.bar("calls", len(items), "call")
        for first in range(0, len(items), 256):
            part = items[first : first + 256]
            self.record.calls.extend(await self.cluster.call(part, s.concurrency))
            bar.update(len(part))
        bar.close()

    async def _event_calls(self, items: list[tuple[int, int, bool, float]]) -> None:
        self.record.calls.extend(await self.cluster.call(items, self.s.concurrency))

    @staticmethod
    def _number(aor: str) -> int:
        return int(aor.partition(":u")[2].partition("@")[0])

    # -- resolves ---------------------------------------------------------------------------

    def _resolve_items(
        self, count: int, spread: float
    ) -> list[tuple[int, str, str, bytes | None, float]]:
        rng = self.rng
        items: list[tuple[int, str, str, bytes | None, float]] = []
        if not len(self.live_records) or not len(self.readers):
            return items
        for _ in range(count):
            record = self.records[self.live_records.choice(rng)]
            reader = self.readers.choice(rng)
            pinned = record.public_key if rng.random() < self.s.reader_pins else None
            delay = rng.random() * spread if spread else 0.0
            items.append((reader, record.aor, record.uri, pinned, delay))
        return items

    async def _steady(self) -> None:
        s = self.s
        items = self._resolve_items(s.lookups, 0.0)
        bar = self.progress.bar("resolve", len(items), "lookup")
        chunk = max(s.concurrency * 8, 256)
        for first in range(0, len(items), chunk):
            part = items[first : first + chunk]
            self.record.steady.extend(await self.cluster.resolve(part, s.concurrency))
            bar.update(len(part))
        bar.close()
        self.record.censuses["steady"] = await self.cluster.census(self._record_keys())
        await self._diagnose(self.record.steady, "steady")

    # -- events -----------------------------------------------------------------------------

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _sleep_until(self, when: float) -> None:
        delay = when - self.loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _events(self) -> None:
        s = self.s
        rng = self.rng
        assert s.duration is not None and s.mass_failure_at is not None
        start = self.loop.time()
        self.record.event_origin = self.cluster.wall()
        ticks = max(1, math.ceil(s.duration / s.tick))
        target = s.nodes
        mass_done = not s.mass_failure
        carry = 0.0
        call_carry = 0.0
        bar = self.progress.bar("events", ticks, "tick")
        for k in range(ticks):
            t0 = start + k * s.tick
            await self._sleep_until(t0)
            length = min(s.tick, s.duration - k * s.tick)
            entry: dict[str, Any] = {
                "t": k * s.tick,
                "alive": len(self.alive),
                "arrivals": 0,
                "departures": 0,
                "crashes": 0,
                "mass_failure": 0,
            }
            if not mass_done and k * s.tick + length > s.mass_failure_at:
                mass_done = True
                victims = self._pick_departures(round(s.mass_failure * len(self.alive)))
                entry["mass_failure"] = len(victims)
                delay = max(0.0, s.mass_failure_at - k * s.tick)
                self._spawn(self._depart(victims, [False] * len(victims), delay))
            if s.churn:
                departures = poisson(rng, s.churn * len(self.alive) * length / 60.0)
                arrivals = poisson(rng, s.churn * target * length / 60.0)
                for _ in range(departures):
                    graceful = rng.random() >= s.crash_share
                    entry["departures"] += 1
                    entry["crashes"] += not graceful
                    self._spawn(self._depart_later(graceful, rng.random() * length))
                for _ in range(arrivals):
                    entry["arrivals"] += 1
                    self._spawn(self._arrive(self.next_index, rng.random() * length))
                    self.next_index += 1
            refresh = []
            for number in self.live_records:
                record = self.records[number]
                if record.next_refresh < t0 + length:
                    refresh.append(
                        (record.publisher, record.aor, max(0.0, record.next_refresh - t0))
                    )
                    record.next_refresh += s.refresh
            if refresh:
                self._spawn(self._refresh(refresh))
            # call nodes keep their AoR records alive like any publisher (a run longer than
            # the record lifetime otherwise loses every callee)
            call_refresh = []
            for index, due in self.call_refresh_at.items():
                if due < t0 + length and index in self.alive:
                    call_refresh.append((index, call_aor(index), max(0.0, due - t0)))
                    self.call_refresh_at[index] = due + s.refresh
            if call_refresh:
                self._spawn(self._refresh_calls(call_refresh))
            wanted = s.lookup_rate * length + carry
            count = int(wanted)
            carry = wanted - count
            items = self._resolve_items(count, length)
            if items:
                self._spawn(self._event_resolves(items))
            if s.calls:  # the attempts spread evenly over the event phase
                wanted = s.calls * length / s.duration + call_carry
                count = int(wanted + 1e-9)
                call_carry = wanted - count
                if k == ticks - 1:
                    count = max(0, s.calls - sum(t.get("calls", 0) for t in self.record.timeline))
                entry["calls"] = count
                calls = self._call_items(count, length)
                if calls:
                    self._spawn(self._event_calls(calls))
            self.record.timeline.append(entry)
            bar.update(1)
        await self._sleep_until(start + s.duration)
        while self._background:
            await asyncio.gather(*list(self._background))
        bar.close()
        await self._diagnose(self.record.events, "events")

    async def _diagnose(self, results: list[ResolveResult], phase: str, limit: int = 10) -> None:
        """For the first failed resolves: do the k live nodes closest to the key (the
        omniscient view) hold the record? Tells a routing miss from a lost record."""
        failed = [r for r in results if not r.ok and r.outcome != "reader-left"][:limit]
        k = self.s.ksize
        for r in failed:
            key = record_keys([r.aor])[0]
            closest = sorted(await self.cluster.closest_holders(key, k))[:k]
            self.record.diagnoses.append(
                {
                    "phase": phase,
                    "aor": r.aor,
                    "reader": r.index,
                    "outcome": r.outcome,
                    "rpcs": r.rpcs,
                    "values": r.values,
                    "reader_contacts": r.contacts,
                    "closest_holding": sum(1 for _, _, holds in closest if holds),
                    "holder_ranks": [rank for rank, (_, _, h) in enumerate(closest) if h],
                    "reader_rank": next(
                        (rank for rank, (_, i, _) in enumerate(closest) if i == r.index), None
                    ),
                }
            )

    def _pick_departures(self, count: int) -> list[int]:
        victims = []
        for _ in range(min(count, len(self.alive) - 1)):
            index = self.alive.choice(self.rng)
            self._gone(index)
            victims.append(index)
        return victims

    def _gone(self, index: int) -> None:
        self.alive.remove(index)
        self.readers.remove(index)
        for number in self.by_publisher.get(index, []):
            self.live_records.remove(number)

    async def _depart_later(self, graceful: bool, delay: float) -> None:
        await asyncio.sleep(delay)
        if len(self.alive) <= 2:
            return
        index = self.alive.choice(self.rng)
        self._gone(index)
        await self.cluster.leave([(index, graceful)])

    async def _depart(self, victims: list[int], graceful: list[bool], delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        await self.cluster.leave(list(zip(victims, graceful, strict=True)))

    async def _arrive(self, index: int, delay: float) -> None:
        await asyncio.sleep(delay)
        bootstrap = self.addresses[self.alive.choice(self.rng)]
        self.addresses.update(await self.cluster.start([index]))
        publishes = self.rng.random() < (self.s.records or 0) / self.s.nodes
        (result,) = await self.cluster.join([(index, [bootstrap])])
        for _ in range(JOIN_ATTEMPTS - 1):
            if result.ok or len(self.alive) < 2:
                break
            retry = self.addresses[self.alive.choice(self.rng)]
            (result,) = await self.cluster.join([(index, [retry])])
        self.record.arrivals_joined.append(result)
        if not result.ok:
            await self.cluster.leave([(index, False)])
            return
        self._joined(index)
        if publishes:
            number = len(self.records)
            aor = aor_of(number)
            (key,) = (await self.cluster.public_keys([index])).values()
            self.records[number] = _Record(
                number,
                aor,
                index,
                key,
                contact_uri(aor, self.addresses[index]),
                self.loop.time() + self.s.refresh,
            )
            self.by_publisher.setdefault(index, []).append(number)
            (published,) = await self.cluster.publish([(index, aor, 0.0)], 1)
            self.record.refreshes.append(published)
            if published.ok and index in self.alive:
                self.live_records.add(number)

    async def _refresh(self, items: list[tuple[int, str, float]]) -> None:
        self.record.refreshes.extend(await self.cluster.publish(items, self.s.concurrency))

    async def _refresh_calls(self, items: list[tuple[int, str, float]]) -> None:
        self.record.call_publishes.extend(await self.cluster.publish(items, self.s.concurrency))

    async def _event_resolves(self, items: list[tuple[int, str, str, bytes | None, float]]) -> None:
        self.record.events.extend(await self.cluster.resolve(items, self.s.concurrency))
