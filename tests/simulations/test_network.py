"""The in-memory network: latency models, loss, bandwidth, vanished datagrams (seeded)."""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
from pathlib import Path
from typing import Any

import pytest

from simulations.errors import ConfigError, SimulationError
from simulations.network import (
    ConstantLatency,
    LatencyModel,
    LogNormalLatency,
    MatrixLatency,
    UniformLatency,
    VirtualNetwork,
    parse_latency,
    virtual_host,
)
from simulations.vloop import run_virtual


class Recorder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[tuple[float, bytes, Any]] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append((asyncio.get_running_loop().time(), data, addr))


def _send_many(
    network: VirtualNetwork,
    count: int,
    size: int = 10,
    hosts: tuple[str, str] = ("10.0.0.1", "10.0.0.2"),
) -> tuple[Recorder, list[float]]:
    """Send ``count`` datagrams from hosts[0] to hosts[1] at t=0, 1, 2, ... s."""

    async def main() -> tuple[Recorder, list[float]]:
        loop = asyncio.get_running_loop()
        _, _ = await loop.create_datagram_endpoint(Recorder, local_addr=(hosts[0], 5000))
        _, receiver = await loop.create_datagram_endpoint(Recorder, local_addr=(hosts[1], 5000))
        sender = network.endpoint((hosts[0], 5000))
        assert sender is not None
        sent = []
        for i in range(count):
            sent.append(loop.time())
            sender.sendto(i.to_bytes(4, "big") + bytes(size - 4), (hosts[1], 5000))
            await asyncio.sleep(1.0)
        await asyncio.sleep(10.0)
        return receiver, sent  # type: ignore[return-value]

    return run_virtual(main(), network)


def _delays(receiver: Recorder, sent: list[float]) -> list[float]:
    return [t - sent[int.from_bytes(data[:4], "big")] for t, data, _ in receiver.got]


def test_constant_latency_is_exact_and_the_source_address_is_the_senders() -> None:
    receiver, sent = _send_many(VirtualNetwork(ConstantLatency(25.0)), 5)
    assert _delays(receiver, sent) == pytest.approx([0.025] * 5)
    assert {addr for _, _, addr in receiver.got} == {("10.0.0.1", 5000)}


def test_uniform_latency_statistics() -> None:
    network = VirtualNetwork(UniformLatency(10.0, 50.0), rng=random.Random(7))
    delays = [1000 * d for d in _delays(*_send_many(network, 4000))]
    assert min(delays) >= 10.0 and max(delays) <= 50.0
    assert statistics.mean(delays) == pytest.approx(30.0, abs=0.8)  # sd 11.5/sqrt(4000)=0.18
    assert statistics.pstdev(delays) == pytest.approx(40 / math.sqrt(12), rel=0.05)


def test_lognormal_latency_median_and_spread() -> None:
    network = VirtualNetwork(LogNormalLatency(40.0, 0.5), rng=random.Random(3))
    delays = [1000 * d for d in _delays(*_send_many(network, 4000))]
    assert statistics.median(delays) == pytest.approx(40.0, rel=0.05)
    logs = [math.log(d) for d in delays]
    assert statistics.pstdev(logs) == pytest.approx(0.5, rel=0.06)


def test_loss_rate_matches_within_four_sigma() -> None:
    network = VirtualNetwork(ConstantLatency(1.0), loss=0.2, rng=random.Random(11))
    receiver, _ = _send_many(network, 5000)
    lost = 5000 - len(receiver.got)
    assert lost == network.datagrams_lost
    sigma = math.sqrt(5000 * 0.2 * 0.8)
    assert abs(lost - 1000) < 4 * sigma


def test_bandwidth_queues_datagrams_behind_each_other() -> None:
    network = VirtualNetwork(ConstantLatency(5.0), bandwidth=1_000_000)  # 1 Mbit/s

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(Recorder, local_addr=("10.0.0.1", 1))
        _, receiver = await loop.create_datagram_endpoint(Recorder, local_addr=("10.0.0.2", 1))
        sender = network.endpoint(("10.0.0.1", 1))
        assert sender is not None
        for _ in range(10):
            sender.sendto(bytes(1250), ("10.0.0.2", 1))  # 10 ms on the wire each
        await asyncio.sleep(1.0)
        return [t for t, _, _ in receiver.got]  # type: ignore[attr-defined]

    arrivals = run_virtual(main(), network)
    assert arrivals == pytest.approx([0.005 + 0.010 * (i + 1) for i in range(10)])


def test_matrix_latency_groups_and_jitter() -> None:
    model = MatrixLatency([[10, 100], [100, 20]], weights=[3, 1], names=["eu", "us"], jitter=0.1)
    rng = random.Random(5)
    groups = [model.pick_group(rng) for _ in range(8000)]
    assert groups.count(0) / 8000 == pytest.approx(0.75, abs=0.02)
    for (a, b), base in {(0, 0): 10, (0, 1): 100, (1, 0): 100, (1, 1): 20}.items():
        samples = [1000 * model.sample(rng, a, b) for _ in range(500)]
        assert min(samples) >= base * 0.9 - 1e-9 and max(samples) <= base * 1.1 + 1e-9
        assert statistics.mean(samples) == pytest.approx(base, rel=0.02)
    # on a network: a node's group is fixed at bind time and used for every datagram
    network = VirtualNetwork(model, rng=random.Random(2))
    hosts = [virtual_host(i) for i in range(200)]
    assert 100 < sum(network.group_of(h) == 0 for h in hosts) < 190
    assert network.group_of(hosts[0]) == network.group_of(hosts[0])


def test_datagrams_to_a_closed_endpoint_vanish() -> None:
    network = VirtualNetwork(ConstantLatency(10.0))

    async def main() -> Recorder:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(Recorder, local_addr=("10.0.0.1", 1))
        transport, receiver = await loop.create_datagram_endpoint(
            Recorder, local_addr=("10.0.0.2", 1)
        )
        sender = network.endpoint(("10.0.0.1", 1))
        assert sender is not None
        sender.sendto(b"in flight", ("10.0.0.2", 1))
        transport.close()  # the receiver crashes before the datagram arrives
        sender.sendto(b"to nobody", ("10.9.9.9", 1))
        await asyncio.sleep(1.0)
        return receiver  # type: ignore[return-value]

    receiver = run_virtual(main(), network)
    assert receiver.got == []
    assert network.datagrams_vanished == 2


def test_same_seed_same_arrivals() -> None:
    def arrivals(seed: int) -> list[float]:
        network = VirtualNetwork(LogNormalLatency(30, 0.8), loss=0.1, rng=random.Random(seed))
        receiver, _ = _send_many(network, 200)
        return [t for t, _, _ in receiver.got]

    assert arrivals(9) == arrivals(9)
    assert arrivals(9) != arrivals(10)


def test_binding_rules() -> None:
    network = VirtualNetwork()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        t1, _ = await loop.create_datagram_endpoint(Recorder, local_addr=("10.0.0.1", 0))
        t2, _ = await loop.create_datagram_endpoint(Recorder, local_addr=("10.0.0.1", 0))
        assert t1.get_extra_info("sockname") != t2.get_extra_info("sockname")
        assert t1.get_extra_info("socket") is None
        with pytest.raises(SimulationError):
            await loop.create_datagram_endpoint(Recorder, local_addr=t1.get_extra_info("sockname"))
        with pytest.raises(SimulationError):
            await loop.create_datagram_endpoint(Recorder, local_addr=("0.0.0.0", 1))

    run_virtual(main(), network)


@pytest.mark.parametrize(
    ("spec", "kind"),
    [
        ("constant:20", ConstantLatency),
        ("uniform:10,50", UniformLatency),
        ("lognormal:30,0.6", LogNormalLatency),
        ('matrix:{"ms": [[5, 50], [50, 5]], "weights": [1, 2], "jitter": 0.2}', MatrixLatency),
        ("matrix:[[1]]", MatrixLatency),
    ],
)
def test_parse_latency(spec: str, kind: type[LatencyModel]) -> None:
    model = parse_latency(spec)
    assert isinstance(model, kind)
    json.dumps(model.describe())


def test_parse_latency_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"groups": ["a", "b"], "ms": [[1, 2], [3, 4]]}))
    model = parse_latency(f"matrix:{path}")
    assert model.describe()["groups"] == ["a", "b"]


@pytest.mark.parametrize(
    "spec",
    [
        "gaussian:3",
        "constant:-1",
        "constant:x",
        "uniform:50,10",
        "uniform:1",
        "lognormal:0,1",
        "matrix:[[1, 2]]",
        "matrix:{not json",
        "matrix:/nonexistent/file.json",
        'matrix:{"ms": [[1, -2], [3, 4]]}',
        'matrix:{"ms": [[1]], "weights": [0]}',
    ],
)
def test_bad_latency_specs_raise_config_error(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_latency(spec)


def test_bad_network_parameters() -> None:
    with pytest.raises(ConfigError):
        VirtualNetwork(loss=1.0)
    with pytest.raises(ConfigError):
        VirtualNetwork(bandwidth=0)
    with pytest.raises(ConfigError):
        virtual_host(-1)
    assert virtual_host(0) == "10.0.0.1"
    assert virtual_host(65535) == "10.1.0.0"
