"""DHT overlay on loopback: p2psip next to the stock kademlia package, same run.

    python benchmarks/overlay.py [--nodes 200] [--keys 50] [--gets 1000] [--churn 0.3]
                                 [--loss 0.05] [--impls ours,signed,stock]

Each implementation runs in its own child process (so RSS figures do not mix): N nodes on
127.0.0.1 in one asyncio loop, each joining through a random earlier node; ``--keys`` values
set from random nodes; ``--gets`` gets from random nodes (``--concurrency`` at a time); then
``--churn`` of the nodes stop silently and ``--churn-gets`` gets run again
(``--churn-concurrency`` at a time). ``--loss`` drops that share of every datagram a node
receives (requests and answers alike), from the first join on (the stock package joins
loss-free and gets the loss from its first get: its fixed 5 s timeouts would make a
1,000-node join under loss take hours).

Implementations: ``ours`` is p2psip's DHTNode with raw values (``set``/``get``);
``signed`` is the DHT locator on the same nodes: each key is an AoR whose signed record is
published by a random node, and every get is a ``resolve`` that verifies Ed25519 signatures
and the pinned key; ``stock`` is the kademlia package as shipped. The stock ``get`` answers
from local storage when it holds the key; ours always asks the network.

Printed: join time, RSS per node, get success and median/p95 latency before and after the
churn, set acceptance.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Loss:
    """The share of datagrams dropped, changeable while nodes run."""

    def __init__(self, share: float, rng: random.Random) -> None:
        self.share = share
        self.rng = rng


def make_lossy(protocol: Any, loss: Loss) -> None:
    """Drop ``loss.share`` of the datagrams ``protocol`` receives (every implementation alike)."""
    receive = protocol.datagram_received

    def lossy(data: bytes, addr: Any) -> None:
        if not loss.share or loss.rng.random() >= loss.share:
            receive(data, addr)

    protocol.datagram_received = lossy


class Stock:
    """The kademlia package as shipped."""

    name = "kademlia 2.2.3 (stock)"

    def __init__(self, ksize: int, seed: int) -> None:
        from kademlia.network import Server

        random.seed(seed)  # the package draws node ids from the global RNG
        self.server = Server(ksize=ksize)

    async def listen(self, loss: Loss) -> tuple[str, int]:
        await self.server.listen(0, "127.0.0.1")
        make_lossy(self.server.protocol, loss)
        return self.server.transport.get_extra_info("sockname")[:2]

    async def bootstrap(self, address: tuple[str, int]) -> None:
        await self.server.bootstrap([address])

    async def set(self, key: str, value: bytes) -> int:
        return int(bool(await self.server.set(key, value)))

    async def get(self, key: str) -> bytes | None:
        return await self.server.get(key)

    async def stop(self) -> None:
        self.server.stop()


class Ours:
    """p2psip.overlay.aio.dht.DHTNode."""

    name = "p2psip DHTNode"

    def __init__(self, ksize: int, seed: int) -> None:
        from p2psip.overlay.aio.dht import DHTNode
        from p2psip.overlay.dht import DHTConfig

        self.node = DHTNode(config=DHTConfig(ksize=ksize), rng=random.Random(seed))

    async def listen(self, loss: Loss) -> tuple[str, int]:
        address = await self.node.listen(0, "127.0.0.1")
        make_lossy(self.node.protocol, loss)
        return address

    async def bootstrap(self, address: tuple[str, int]) -> None:
        await self.node.bootstrap([address])

    async def set(self, key: str, value: bytes) -> int:
        return await self.node.set(key, value)

    async def get(self, key: str) -> bytes | None:
        return await self.node.get(key)

    async def stop(self) -> None:
        await self.node.stop()


class Signed(Ours):
    """p2psip's DHT locator: signed AoR records published and resolved (verified)."""

    name = "p2psip signed records"

    def __init__(self, ksize: int, seed: int) -> None:
        from p2psip.locator.aio.dht import DHTLocator
        from p2psip.overlay.aio.dht import DHTNode
        from p2psip.overlay.dht import DHTConfig
        from p2psip.overlay.identity import Identity
        from p2psip.overlay.records import RecordPolicy

        policy = RecordPolicy.open()
        rng = random.Random(seed)
        args = DHTLocator.node_arguments(policy, config=DHTConfig(ksize=ksize), rng=rng)
        self.node = DHTNode(**args)  # type: ignore[arg-type]
        self.locator = DHTLocator(self.node, Identity.generate(rng), policy=policy)

    async def set(self, key: str, value: bytes) -> int:
        from p2psip.locator.static import contact_from_uri

        aor = f"sip:{key}@bench.p2p"
        uri = "sip:" + value.decode().replace(" ", "_") + "@127.0.0.1:5060"
        try:
            return await self.locator.publish(aor, [contact_from_uri(uri)])
        except Exception:
            return 0

    async def get(self, key: str) -> bytes | None:
        contacts = await self.locator.resolve(f"sip:{key}@bench.p2p")
        user = contacts[0].uri.split(":", 1)[1].split("@", 1)[0]
        return user.replace("_", " ").encode()


async def timed_gets(
    jobs: list[tuple[Any, str, bytes]], concurrency: int, limit: float
) -> tuple[int, list[float]]:
    ok = 0
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(node: Any, key: str, expected: bytes) -> None:
        nonlocal ok
        async with gate:
            start = time.perf_counter()
            try:
                value = await asyncio.wait_for(node.get(key), limit)
            except (TimeoutError, Exception):
                value = None
            latencies.append(time.perf_counter() - start)
            ok += value == expected

    await asyncio.gather(*(one(*job) for job in jobs))
    return ok, latencies


async def run_child(args: argparse.Namespace) -> dict[str, Any]:
    logging.basicConfig(level=logging.CRITICAL)
    impl = {"stock": Stock, "ours": Ours, "signed": Signed}[args.impl]
    rng = random.Random(args.seed)
    # Loss applies from the first join, except for the stock package, which joins loss-free:
    # its fixed 5 s timeouts make a 1,000-node join under loss take hours.
    loss = Loss(0.0 if impl is Stock else args.loss, random.Random(args.seed + 7))
    impl(args.ksize, 0)  # imports and first-use allocations are not per-node costs
    rss_before = rss_kib()
    nodes: list[Any] = []
    addresses: list[tuple[str, int]] = []
    start = time.perf_counter()
    for i in range(args.nodes):
        node = impl(args.ksize, args.seed * 1_000_003 + i)
        address = await node.listen(loss)
        if addresses:
            await node.bootstrap(rng.choice(addresses))
        nodes.append(node)
        addresses.append(address)
    join = time.perf_counter() - start
    rss_after = rss_kib()

    keys = [f"bench-key-{i}" for i in range(args.keys)]
    values = {key: b"value of " + key.encode() for key in keys}
    start = time.perf_counter()
    accepted = [await rng.choice(nodes).set(key, values[key]) for key in keys]
    set_time = time.perf_counter() - start

    jobs = [(rng.choice(nodes), key, values[key]) for key in rng.choices(keys, k=args.gets)]
    loss.share = args.loss
    start = time.perf_counter()
    ok, latencies = await timed_gets(jobs, args.concurrency, 60.0)
    gets_wall = time.perf_counter() - start

    gone = rng.sample(nodes[1:], int(args.churn * len(nodes)))
    for node in gone:
        await node.stop()
    alive = [n for n in nodes if n not in gone]
    churn_gets = args.churn_gets if gone else 0
    jobs = [(rng.choice(alive), key, values[key]) for key in rng.choices(keys, k=churn_gets)]
    start = time.perf_counter()
    churn_ok, churn_latencies = await timed_gets(jobs, args.churn_concurrency, 120.0)
    churn_wall = time.perf_counter() - start
    for node in alive:
        await node.stop()
    return {
        "impl": impl.name,
        "nodes": args.nodes,
        "join_s": join,
        "rss_per_node_kib": (rss_after - rss_before) / args.nodes,
        "set_s_each": set_time / len(keys),
        "set_accepted_mean": statistics.mean(accepted),
        "loss": args.loss,
        "gets_wall_s": gets_wall,
        "gets": len(latencies),
        "gets_ok": ok,
        "get_median_ms": 1000 * statistics.median(latencies),
        "get_p95_ms": 1000 * percentile(latencies, 0.95),
        "churn_gone": len(gone),
        "churn_gets": len(churn_latencies),
        "churn_gets_ok": churn_ok,
        "churn_get_median_ms": 1000 * percentile(churn_latencies, 0.5),
        "churn_get_p95_ms": 1000 * percentile(churn_latencies, 0.95),
        "churn_wall_s": churn_wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--gets", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1, help="gets in flight at once")
    parser.add_argument("--churn", type=float, default=0.3, help="fraction stopped silently")
    parser.add_argument("--churn-gets", type=int, default=1000)
    parser.add_argument("--churn-concurrency", type=int, default=20)
    parser.add_argument("--loss", type=float, default=0.0, help="share of datagrams dropped")
    parser.add_argument("--impls", default="ours,signed,stock", help="comma-separated")
    parser.add_argument("--ksize", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--impl", choices=["stock", "ours", "signed"], help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.impl:
        print(json.dumps(asyncio.run(run_child(args))))
        return

    results = []
    for impl in args.impls.split(","):
        argv = [sys.executable, __file__, "--impl", impl]
        names = ("nodes", "keys", "gets", "concurrency", "churn", "churn_gets", "ksize", "loss")
        for name in (*names, "churn_concurrency"):
            argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        argv += ["--seed", str(args.seed)]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps(results, indent=1))
        return
    rows = [
        ("join, all nodes (s)", "join_s", "{:.2f}"),
        ("RSS per node (KiB)", "rss_per_node_kib", "{:.1f}"),
        ("set, each (ms)", "set_s_each", "{:.1f}", 1000),
        ("set: replicas counted", "set_accepted_mean", "{:.1f}"),
        ("gets ok", ("gets_ok", "gets"), "{}/{}"),
        ("gets ok (%)", "gets_ok_pct", "{:.2f}"),
        ("get median (ms)", "get_median_ms", "{:.2f}"),
        ("get p95 (ms)", "get_p95_ms", "{:.2f}"),
        (
            f"after {results[0]['churn_gone']} nodes vanish: gets ok",
            ("churn_gets_ok", "churn_gets"),
            "{}/{}",
        ),
        ("  gets ok (%)", "churn_ok_pct", "{:.2f}"),
        ("  get median (ms)", "churn_get_median_ms", "{:.0f}"),
        ("  get p95 (ms)", "churn_get_p95_ms", "{:.0f}"),
        ("  all gets, wall (s)", "churn_wall_s", "{:.1f}"),
    ]
    for result in results:
        result["gets_ok_pct"] = 100 * result["gets_ok"] / max(1, result["gets"])
        result["churn_ok_pct"] = 100 * result["churn_gets_ok"] / max(1, result["churn_gets"])
    print(
        f"DHT overlay, {args.nodes} nodes on 127.0.0.1, k={args.ksize}, "
        f"{100 * args.loss:g} % datagram loss, one process per implementation"
    )
    print(f"{'':38}" + "".join(f" {r['impl']:>24}" for r in results))
    if not results[0]["churn_gone"]:
        rows = rows[:-5]
    for label, field, fmt, *scale in rows:
        cells = []
        for result in results:
            if isinstance(field, tuple):
                cells.append(fmt.format(*(result[f] for f in field)))
            else:
                cells.append(fmt.format(result[field] * (scale[0] if scale else 1)))
        print(f"{label:38}" + "".join(f" {c:>24}" for c in cells))
    print("(stock set 'replicas' is True/False: it cannot count; stock get answers locally first)")


if __name__ == "__main__":
    main()
