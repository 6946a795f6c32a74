"""The virtual-time loop: clock jumps, ordering, stalls, and an hour of DHT timers in seconds."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from p2psip.overlay.aio.dht import DHTNode
from p2psip.overlay.dht import DHTConfig
from simulations.errors import SimulationError, SimulationStalled
from simulations.network import ConstantLatency, VirtualNetwork, virtual_host
from simulations.vloop import VirtualEventLoop, run_virtual


def test_an_hour_of_sleeps_takes_no_time_and_lands_exactly() -> None:
    fired: list[tuple[str, float]] = []

    async def sleeper(name: str, period: float, count: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(count):
            await asyncio.sleep(period)
            fired.append((name, loop.time()))

    async def main() -> float:
        await asyncio.gather(sleeper("a", 60.0, 60), sleeper("b", 900.0, 4))
        return asyncio.get_running_loop().time()

    began = time.perf_counter()
    end = run_virtual(main())
    assert time.perf_counter() - began < 1.0
    assert end == pytest.approx(3600.0)
    assert [t for name, t in fired if name == "b"] == pytest.approx([900.0, 1800.0, 2700.0, 3600.0])
    assert len([1 for name, _ in fired if name == "a"]) == 60
    # timers fire in time order (ties in scheduling order)
    assert [t for _, t in fired] == sorted(t for _, t in fired)


def test_call_later_and_wait_for_use_virtual_time() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        never: asyncio.Future[None] = loop.create_future()
        loop.call_later(5.0, lambda: None)  # keeps the loop from stalling meanwhile
        try:
            await asyncio.wait_for(never, 2.5)
        except TimeoutError:
            timed_out_at = loop.time()
        await asyncio.sleep(10)
        return timed_out_at, loop.time()

    timed_out_at, end = run_virtual(main(), start=100.0)
    assert timed_out_at == pytest.approx(102.5)
    assert end == pytest.approx(112.5)


def test_waiting_on_nothing_raises_instead_of_hanging() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(SimulationStalled):
        run_virtual(main())


def test_no_sockets_threads_or_names_on_a_virtual_loop() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(SimulationError):
            loop.run_in_executor(None, print)
        with pytest.raises(SimulationError):
            await loop.getaddrinfo("localhost", 80)
        with pytest.raises(SimulationError):  # no network attached
            await loop.create_datagram_endpoint(asyncio.DatagramProtocol, ("10.0.0.1", 1))

    run_virtual(main())


def test_a_simulated_hour_of_dht_maintenance_runs_in_seconds() -> None:
    """20 real DHTNodes on the virtual network; the hourly bucket refresh really happens."""
    network = VirtualNetwork(ConstantLatency(20.0), rng=random.Random(1))
    config = DHTConfig(ksize=8)

    async def main() -> tuple[int, int, float]:
        loop = asyncio.get_running_loop()
        nodes = []
        for i in range(20):
            node = DHTNode(config=config, rng=random.Random(i), clock=lambda: 1.7e9 + loop.time())
            await node.listen(4000, virtual_host(i))
            if nodes:
                await node.bootstrap([nodes[0].address])
            nodes.append(node)
        before = sum(n.stats.requests_sent for n in nodes)
        await asyncio.sleep(3700.0)  # past refresh_interval (3600 s): buckets go stale
        after = sum(n.stats.requests_sent for n in nodes)
        elapsed = loop.time()
        for node in nodes:
            await node.stop()
        return before, after, elapsed

    began = time.perf_counter()
    before, after, elapsed = run_virtual(main(), network)
    assert time.perf_counter() - began < 10.0
    assert elapsed > 3700.0
    assert after > before  # the refresh lookups went out over the virtual network
    assert network.datagrams_delivered > 0


def test_loop_time_is_virtual_and_starts_where_asked() -> None:
    loop = VirtualEventLoop(start=42.0)
    try:
        assert loop.time() == 42.0
        assert loop.run_until_complete(asyncio.sleep(8.0, result="done")) == "done"
        assert loop.time() == pytest.approx(50.0)
        assert loop.jumps >= 1
    finally:
        loop.close()
