"""An asyncio event loop on a virtual clock, with an in-memory datagram network.

:class:`VirtualEventLoop` is a :class:`asyncio.BaseEventLoop` whose :meth:`~VirtualEventLoop.time`
is a number the loop advances itself: when every coroutine waits, the loop's "selector" does not
sleep until the next timer or datagram, it *jumps* the clock there. Unmodified asyncio code
(``asyncio.sleep``, ``asyncio.wait(timeout=...)``, ``loop.call_later``) therefore runs as it
would on a real loop, but a simulated hour of timers takes as long as the callbacks take to run.

There is no file descriptor anywhere: ``create_datagram_endpoint`` returns transports of a
:class:`~simulations.network.VirtualNetwork`, whose datagrams are kept in one heap and handed to
the receiving protocol when the clock reaches their arrival time (no task and no timer handle per
datagram). Threads, sockets, subprocesses and executors are not available on this loop.

When nothing at all is scheduled while the loop is asked to wait, the simulation would wait
forever: :class:`~simulations.errors.SimulationStalled` is raised instead.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from simulations.errors import SimulationError, SimulationStalled
from simulations.network import Delivery, VirtualNetwork

__all__ = ["VirtualEventLoop", "run_virtual"]

#: the loop never jumps further than this in one step (asyncio's own bound on select timeouts)
_MAX_JUMP = 24 * 3600.0


class _VirtualSelector:
    """Stands in for the selector: "waiting" advances the clock and yields due datagrams."""

    def __init__(self, loop: VirtualEventLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Delivery]:
        loop = self._loop
        now = loop._now
        target = math.inf if timeout is None else now + min(timeout, _MAX_JUMP)
        network = loop.network
        arrival = network.next_arrival() if network is not None else None
        if arrival is not None and arrival < target:
            target = arrival if arrival > now else now
        if target == math.inf:
            raise SimulationStalled(
                f"nothing is scheduled at virtual time {now:.6f} s but the loop was asked to wait"
            )
        loop._now = target
        loop.jumps += target > now
        if network is None:
            return []
        return network.due(target)

    # the loop registers its self-pipe and nothing else: nothing to watch here
    def register(self, *args: Any, **kwargs: Any) -> None:
        raise SimulationError("the virtual loop has no file descriptors")

    def close(self) -> None:
        return None


class VirtualEventLoop(asyncio.BaseEventLoop):
    """A :class:`asyncio.BaseEventLoop` whose clock jumps instead of sleeping.

    Args:
        network: the in-memory network its datagram endpoints live on (optional: without one,
            ``create_datagram_endpoint`` fails and the loop is a pure virtual-time loop).
        start: the loop clock's initial value, seconds.

    Attributes:
        jumps: how many times the clock moved forward.
    """

    def __init__(self, network: VirtualNetwork | None = None, start: float = 0.0) -> None:
        super().__init__()
        self._now = float(start)
        self.network = network
        self.jumps = 0
        self._selector = _VirtualSelector(self)
        if network is not None:
            network.attach(self)

    def time(self) -> float:
        """Virtual seconds (what ``call_later`` and ``asyncio.sleep`` count in)."""
        return self._now

    def _process_events(self, event_list: list[Delivery]) -> None:
        if event_list:
            assert self.network is not None
            self.network.deliver(event_list)

    def _write_to_self(self) -> None:
        # call_soon_threadsafe wakes nothing: there is no other thread on a virtual loop
        return None

    async def create_datagram_endpoint(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.DatagramTransport, asyncio.BaseProtocol]:
        """A transport of the virtual network bound to ``local_addr`` (port 0: any free one).

        Raises:
            SimulationError: no network is attached, or the address is taken.
        """
        if self.network is None:
            raise SimulationError("this virtual loop has no network")
        if remote_addr is not None:
            raise SimulationError("connected datagram endpoints are not simulated")
        protocol = protocol_factory()
        transport = self.network.bind(local_addr or ("0.0.0.0", 0), protocol)
        protocol.connection_made(transport)
        return transport, protocol

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise SimulationError("the virtual network has no name resolution: use IP literals")

    def run_in_executor(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise SimulationError("no threads on a virtual loop")


def run_virtual(coro: Any, network: VirtualNetwork | None = None, start: float = 0.0) -> Any:
    """Run ``coro`` to completion on a fresh :class:`VirtualEventLoop` and close it.

    Tasks still pending at the end are cancelled (as :func:`asyncio.run` does).
    """
    loop = VirtualEventLoop(network, start)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
