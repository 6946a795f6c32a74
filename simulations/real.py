"""Real mode: nodes on real UDP sockets of 127.0.0.1, spread over worker processes.

The coordinator (this process) runs the same :class:`~simulations.workload.Workload` as virtual
mode against a :class:`ProcessCluster`. Each worker process runs one asyncio loop holding a
:class:`~simulations.nodes.NodeHost` with its share of the nodes (node ``i`` lives in worker
``i % workers``); nodes of different workers talk over loopback UDP like any two peers.

Coordinator and workers exchange length-prefixed pickles over a socketpair made before the
fork: ``(request id, operation, arguments)`` one way and ``(request id, ok, result)`` back.
Both ends are our own processes (nothing from the network is ever unpickled). A worker runs
each request in its own task, so a long join batch does not hold up resolves.

Loss is emulated by each node dropping that share of what it receives; latency is loopback's.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
import pickle
import socket
import time
import traceback
from typing import Any

from simulations.calls import CallResult
from simulations.config import SimSettings
from simulations.errors import WorkerError
from simulations.nodes import Census, JoinResult, NodeHost, PublishResult, ResolveResult
from simulations.progress import Progress
from simulations.workload import RunRecord, Workload

__all__ = ["LOOPBACK", "ProcessCluster", "run_real_record"]

logger = logging.getLogger(__name__)

#: real-mode nodes listen here, and only here
LOOPBACK = "127.0.0.1"
_HEADER = 8
#: seconds a worker gets to stop its nodes and exit before it is terminated
_STOP_GRACE = 20.0

Address = tuple[str, int]


async def _send(writer: asyncio.StreamWriter, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(len(data).to_bytes(_HEADER, "big") + data)
    await writer.drain()


async def _receive(reader: asyncio.StreamReader) -> Any:
    size = int.from_bytes(await reader.readexactly(_HEADER), "big")
    return pickle.loads(await reader.readexactly(size))


# -- the worker side -------------------------------------------------------------------------------


def _worker_main(sock: socket.socket, others: list[socket.socket], settings: SimSettings) -> None:
    for other in others:  # inherited ends of the other channels (the coordinator's ones)
        other.close()
    logging.getLogger("p2psip").setLevel(logging.ERROR)
    asyncio.run(_serve(sock, settings))


async def _serve(sock: socket.socket, settings: SimSettings) -> None:
    reader, writer = await asyncio.open_connection(sock=sock)
    host = NodeHost(settings, host_of=lambda index: LOOPBACK, port=0)
    tasks: set[asyncio.Task[None]] = set()

    async def handle(request: int, operation: str, args: tuple[Any, ...]) -> None:
        try:
            result = await _dispatch(host, operation, args)
            reply: tuple[int, bool, Any] = (request, True, result)
        except Exception as exc:
            reply = (request, False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        try:
            await _send(writer, reply)
        except ConnectionError:
            pass  # the coordinator is gone; the read loop ends too

    try:
        while True:
            try:
                request, operation, args = await _receive(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break  # the coordinator is gone
            if operation == "shutdown":
                await host.close()
                try:
                    await _send(writer, (request, True, None))
                except ConnectionError:
                    pass
                break
            task = asyncio.create_task(handle(request, operation, args))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()
        await host.close()
        writer.close()


async def _dispatch(host: NodeHost, operation: str, args: tuple[Any, ...]) -> Any:
    if operation == "start":
        return await host.start(*args)
    if operation == "join":
        return await host.join(*args)
    if operation == "publish":
        return await host.publish(*args)
    if operation == "resolve":
        return await host.resolve(*args)
    if operation == "leave":
        return await host.leave(*args)
    if operation == "public_keys":
        return {i: host.public_key(i) for i in args[0]}
    if operation == "register_victims":
        return host.register_victims(*args)
    if operation == "make_malicious":
        return host.make_malicious(*args)
    if operation == "census":
        return host.census(*args)
    if operation == "closest_holders":
        return host.closest_holders(*args)
    if operation == "start_sip":
        return await host.start_sip(*args)
    if operation == "call":
        return await host.call(*args)
    raise WorkerError(f"unknown operation {operation!r}")


# -- the coordinator side --------------------------------------------------------------------------


class ProcessCluster:
    """The :class:`~simulations.workload.Cluster` of real mode: one channel per worker.

    Args:
        channels: ``(reader, writer)`` of each worker, in worker order.
    """

    mode = "real"

    def __init__(self, channels: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]) -> None:
        self._channels = channels
        self._pending: list[dict[int, asyncio.Future[Any]]] = [{} for _ in channels]
        self._next = 0
        self._readers = [
            asyncio.ensure_future(self._read(reader, w)) for w, (reader, _) in enumerate(channels)
        ]

    @property
    def workers(self) -> int:
        return len(self._channels)

    def worker_of(self, index: int) -> int:
        return index % len(self._channels)

    def wall(self) -> float:
        return time.time()

    async def _read(self, reader: asyncio.StreamReader, worker: int) -> None:
        try:
            while True:
                request, ok, result = await _receive(reader)
                future = self._pending[worker].pop(request, None)
                if future is None or future.done():
                    continue
                if ok:
                    future.set_result(result)
                else:
                    future.set_exception(WorkerError(f"worker {worker}: {result}"))
        except (asyncio.IncompleteReadError, ConnectionError):
            error = WorkerError(f"worker {worker} exited")
            for future in self._pending[worker].values():
                if not future.done():
                    future.set_exception(error)
            self._pending[worker].clear()

    async def _call(self, worker: int, operation: str, *args: Any) -> Any:
        self._next += 1
        request = self._next
        future = asyncio.get_running_loop().create_future()
        self._pending[worker][request] = future
        await _send(self._channels[worker][1], (request, operation, args))
        return await future

    def _split(self, items: list[Any]) -> dict[int, list[Any]]:
        parts: dict[int, list[Any]] = {}
        for item in items:
            parts.setdefault(self.worker_of(item[0]), []).append(item)
        return parts

    async def _each(self, operation: str, items: list[Any], *extra: Any) -> list[Any]:
        """Send each worker its items; results back in the items' order."""
        parts = self._split(items)
        answers = await asyncio.gather(
            *(self._call(w, operation, part, *extra) for w, part in parts.items())
        )
        by_index: dict[int, list[Any]] = {}
        for answer in answers:
            for result in answer:
                by_index.setdefault(result.index, []).append(result)
        return [by_index[item[0]].pop(0) for item in items]

    async def start(self, indices: list[int]) -> dict[int, Address]:
        parts: dict[int, list[int]] = {}
        for index in indices:
            parts.setdefault(self.worker_of(index), []).append(index)
        answers = await asyncio.gather(*(self._call(w, "start", p) for w, p in parts.items()))
        merged: dict[int, Address] = {}
        for answer in answers:
            merged.update(answer)
        return {i: merged[i] for i in indices}

    async def join(self, items: list[tuple[int, list[Address]]]) -> list[JoinResult]:
        return await self._each("join", items)

    async def oracle_join(self, fill: int, seed: int, count: int) -> None:
        raise WorkerError("the oracle join needs every node in one process (virtual mode)")

    async def publish(self, items: list[tuple[int, str, float]], limit: int) -> list[PublishResult]:
        share = max(1, math.ceil(limit / self.workers))
        return await self._each("publish", items, share)

    async def resolve(
        self, items: list[tuple[int, str, str, bytes | None, float]], limit: int
    ) -> list[ResolveResult]:
        share = max(1, math.ceil(limit / self.workers))
        return await self._each("resolve", items, share)

    async def leave(self, items: list[tuple[int, bool]]) -> int:
        parts = self._split(items)
        answers = await asyncio.gather(*(self._call(w, "leave", p) for w, p in parts.items()))
        return sum(answers)

    async def public_keys(self, indices: list[int]) -> dict[int, bytes]:
        parts: dict[int, list[int]] = {}
        for index in indices:
            parts.setdefault(self.worker_of(index), []).append(index)
        answers = await asyncio.gather(*(self._call(w, "public_keys", p) for w, p in parts.items()))
        merged: dict[int, bytes] = {}
        for answer in answers:
            merged.update(answer)
        return {i: merged[i] for i in indices}

    async def register_victims(self, victims: dict[bytes, tuple[str, bytes]]) -> None:
        await asyncio.gather(
            *(self._call(w, "register_victims", victims) for w in range(self.workers))
        )

    async def make_malicious(self, items: list[tuple[int, str]]) -> None:
        parts = self._split(items)
        await asyncio.gather(*(self._call(w, "make_malicious", p) for w, p in parts.items()))

    async def census(self, keys: list[bytes]) -> Census:
        answers: list[Census] = await asyncio.gather(
            *(self._call(w, "census", keys) for w in range(self.workers))
        )
        merged = Census()
        for census in answers:
            merged.alive += census.alive
            merged.storage.extend(census.storage)
            merged.routing.extend(census.routing)
            merged.traffic.extend(census.traffic)
            merged.rss += census.rss
            merged.cpu += census.cpu
            for name, value in census.counters.items():
                merged.counters[name] = merged.counters.get(name, 0) + value
            for key, count in census.record_holders.items():
                merged.record_holders[key] = merged.record_holders.get(key, 0) + count
        return merged

    async def closest_holders(self, key: bytes, count: int) -> list[tuple[int, int, bool]]:
        answers = await asyncio.gather(
            *(self._call(w, "closest_holders", key, count) for w in range(self.workers))
        )
        return sorted(item for answer in answers for item in answer)[:count]

    async def start_sip(self, indices: list[int]) -> dict[int, Address]:
        parts: dict[int, list[int]] = {}
        for index in indices:
            parts.setdefault(self.worker_of(index), []).append(index)
        answers = await asyncio.gather(*(self._call(w, "start_sip", p) for w, p in parts.items()))
        merged: dict[int, Address] = {}
        for answer in answers:
            merged.update(answer)
        return {i: merged[i] for i in indices}

    async def call(self, items: list[tuple[int, int, bool, float]], limit: int) -> list[CallResult]:
        share = max(1, math.ceil(limit / self.workers))
        return await self._each("call", items, share)

    async def close(self) -> None:
        await asyncio.gather(
            *(self._call(w, "shutdown") for w in range(self.workers)), return_exceptions=True
        )
        for task in self._readers:
            task.cancel()
        for _, writer in self._channels:
            writer.close()


def run_real_record(settings: SimSettings, label: str = "") -> RunRecord:
    """Fork the workers, run the workload from this process, stop the workers."""
    context = multiprocessing.get_context("fork")
    pairs = [socket.socketpair() for _ in range(settings.workers)]
    processes = []
    try:
        for w, (_, theirs) in enumerate(pairs):
            others = [p[0] for p in pairs] + [p[1] for i, p in enumerate(pairs) if i != w]
            process = context.Process(
                target=_worker_main,
                args=(theirs, others, settings),
                name=f"p2psip-sim-worker-{w}",
                daemon=True,
            )
            process.start()
            processes.append(process)
        for _, theirs in pairs:
            theirs.close()

        async def coordinate() -> RunRecord:
            channels = [await asyncio.open_connection(sock=mine) for mine, _ in pairs]
            cluster = ProcessCluster(channels)
            progress = Progress(not settings.quiet, label)
            return await Workload(settings, cluster, progress).run()

        return asyncio.run(coordinate())
    finally:
        deadline = time.monotonic() + _STOP_GRACE
        for process in processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():  # our own child, by its handle
                logger.warning("worker %s did not stop; terminating it", process.pid)
                process.terminate()
                process.join(5)
        for mine, theirs in pairs:
            mine.close()
            theirs.close()
