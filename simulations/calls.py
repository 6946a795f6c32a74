"""SIP call attempts between simulated nodes: a user agent next to a DHT node.

A *call node* runs, besides its overlay node, the SDK's own
:class:`~p2psip.endpoint.aio.useragent.UserAgent` over UDP on the same host address (another
port) with a :class:`~p2psip.endpoint.aio.session.SessionManager` using
:class:`~p2psip.endpoint.aio.session.NullMedia` (signalling only) that accepts every incoming
call. It publishes its AoR (:func:`call_aor`) with its UDP SIP contact through the signed-records
locator; a call attempt resolves the callee's AoR through the DHT, INVITEs the first contact,
waits for the 200 and sends the ACK, then hangs up with BYE.

In virtual mode the user agent's UDP listener must live on the virtual network: the SDK's
transport binds a real socket first (``socket.bind``) and hands it to
``loop.create_datagram_endpoint(sock=...)``, which cannot work for a ``10.x.y.z`` address.
:class:`VirtualSIPTransports` therefore opens its UDP listener with
``create_datagram_endpoint(local_addr=...)``, which the
:class:`~simulations.vloop.VirtualEventLoop` serves; everything above the socket (parsing,
transactions, dialogs, sessions) is the SDK's code unchanged.

SIP timers are short (:data:`CALL_TIMERS`: T1 = 100 ms, so Timer B = 6.4 s): a call to a
departed callee costs seconds of (virtual) time, not the default 32 s.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2psip.endpoint.aio import transport as sip_transport
from p2psip.endpoint.aio.session import NullMedia, Session, SessionManager
from p2psip.endpoint.aio.useragent import UserAgent
from p2psip.endpoint.session import CallFailed, CallTimeout, SessionConfig
from p2psip.endpoint.useragent import UserAgentConfig
from p2psip.errors import LocatorError, NotFound, P2PSIPError, RecordRefused
from p2psip.timers import TimerConfig

__all__ = [
    "CALL_TIMEOUT",
    "CALL_TIMERS",
    "SIP_PORT",
    "CallAgent",
    "CallResult",
    "VirtualSIPTransports",
    "attempt_call",
    "call_aor",
    "is_call_aor",
]

logger = logging.getLogger(__name__)

#: the SIP port of every virtual call node (real mode: any free port)
SIP_PORT = 5060
#: short SIP timers: Timer B/F = 64 * T1 = 6.4 s (RFC 3261 §17.1.1.2)
CALL_TIMERS = TimerConfig(t1=0.1, t2=1.0, t4=1.0)
#: the whole INVITE (all contacts) may take this long, seconds
CALL_TIMEOUT = 10.0
#: the resolve before a call may take this long, seconds
CALL_RESOLVE_TIMEOUT = 30.0
#: waiting for the BYE's answer, seconds (Timer F plus margin)
HANGUP_TIMEOUT = 10.0
#: AoRs of call nodes live in this domain (distinct from the lookup workload's records)
CALL_DOMAIN = "calls.sim.p2psip.test"


def call_aor(index: int) -> str:
    """The AoR call node ``index`` publishes its SIP contact under."""
    return f"sip:c{index}@{CALL_DOMAIN}"


def is_call_aor(aor: str) -> bool:
    """Whether ``aor`` names a call node (see :func:`call_aor`)."""
    return aor.endswith("@" + CALL_DOMAIN)


@dataclass(slots=True)
class CallResult:
    """One call attempt.

    Attributes:
        index: the caller.
        callee: the callee's node index.
        outcome: ``ok`` (established and hung up), ``resolve:not-found``, ``resolve:refused``,
            ``resolve:timeout``, ``resolve:error``, ``invite:timeout`` (no final answer within
            Timer B / the call timeout), ``invite:<status>`` (a final error response),
            ``invite:error`` (the transport or session layer refused), ``bye:failed`` (set up,
            but the hang-up got no 200), ``caller-left``.
        started: the nodes' wall clock when the attempt began.
        callee_alive: the callee was up when the attempt began (as the workload knows it).
        resolve_ms: duration of the DHT resolve (loop milliseconds), 0 when not reached.
        setup_ms: INVITE sent to 200 received and ACK sent (loop milliseconds), 0 on failure.
    """

    index: int
    callee: int
    outcome: str
    started: float
    callee_alive: bool
    resolve_ms: float = 0.0
    setup_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class VirtualSIPTransports(sip_transport.TransportManager):
    """The SDK's transport manager with a UDP listener the virtual loop can serve.

    Only how the UDP endpoint is opened differs (``local_addr`` instead of a bound real
    socket); datagrams are parsed and dispatched by the SDK's own UDP protocol.
    """

    async def open_udp_endpoint(
        self,
        family: int,
        host: str,
        port: int,
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
    ) -> tuple[str, int]:
        if port == 0:
            raise sip_transport.TransportError("virtual SIP listeners need a fixed port")
        await asyncio.get_running_loop().create_datagram_endpoint(
            protocol_factory, local_addr=(host, port)
        )
        return host, port


class _VirtualUserAgent(UserAgent):
    """A user agent whose transports are :class:`VirtualSIPTransports`."""

    async def _ensure(self) -> sip_transport.TransportManager:
        if self.transports is None:
            self._loop = asyncio.get_running_loop()
            self.transports = await VirtualSIPTransports.create(
                self._on_message, self._on_bad_message, on_send_error=self._on_send_error
            )
        return self.transports


class CallAgent:
    """The SIP side of one call node: a user agent and a session manager answering every call.

    Args:
        index: the node's index (seeds the SIP random source).
        seed: the run's seed.
        virtual: listen on the virtual network (see :class:`VirtualSIPTransports`).
    """

    def __init__(self, index: int, seed: int, *, virtual: bool) -> None:
        rng = random.Random(f"{seed}:sip:{index}")
        config = UserAgentConfig(timers=CALL_TIMERS)
        self.ua: UserAgent = (
            _VirtualUserAgent(config, rng=rng) if virtual else UserAgent(config, rng=rng)
        )
        self.manager = SessionManager(
            self.ua,
            config=SessionConfig(no_answer_timeout=CALL_TIMEOUT),
            media_factory=lambda session: NullMedia(),
            on_incoming=self._answer,
            local_uri=call_aor(index),
            rng=rng,
        )
        self.address: tuple[str, int] = ("", 0)
        self.answered = 0

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        """Bind the UDP listener; returns its address."""
        bound = await self.ua.listen("udp", host, port)
        self.address = (bound.host, bound.port)
        return self.address

    async def _answer(self, session: Session) -> None:
        try:
            await session.accept()
            self.answered += 1
        except P2PSIPError as exc:
            logger.debug("could not answer %s: %s", session, exc)

    async def call(self, contacts: list[Any], aor: str) -> tuple[str, float]:
        """INVITE the first of ``contacts``, wait for the 200 (the ACK goes out), hang up.

        Returns:
            ``(outcome, setup seconds)`` (see :class:`CallResult`).
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            session = await self.manager.call(contacts[:1], to=aor, timeout=CALL_TIMEOUT)
        except CallTimeout:
            return "invite:timeout", 0.0
        except CallFailed as exc:
            if exc.status == 408:  # nothing came back (RFC 3261 §8.1.3.1)
                return "invite:timeout", 0.0
            return (f"invite:{exc.status}" if exc.status else "invite:failed"), 0.0
        except P2PSIPError:
            return "invite:error", 0.0
        setup = loop.time() - started
        try:
            ended = await asyncio.wait_for(session.terminate(), HANGUP_TIMEOUT)
        except (TimeoutError, P2PSIPError):
            return "bye:failed", setup
        if getattr(ended, "error", False):
            return "bye:failed", setup
        return "ok", setup

    async def close(self, *, graceful: bool = True) -> None:
        """Close the listener; ``graceful`` first ends every session (BYE, CANCEL)."""
        try:
            if graceful:
                await self.manager.close(timeout=1.0)
        finally:
            await self.ua.close()


async def attempt_call(
    agent: CallAgent,
    locator: Any,
    callee: int,
    callee_alive: bool,
    wall: float,
    *,
    still_alive: Callable[[], bool],
) -> CallResult:
    """Resolve ``callee``'s AoR through the DHT, then call it with ``agent``."""
    loop = asyncio.get_running_loop()
    aor = call_aor(callee)
    result = CallResult(0, callee, "resolve:error", wall, callee_alive)
    began = loop.time()
    try:
        located = await asyncio.wait_for(locator.resolve(aor), CALL_RESOLVE_TIMEOUT)
    except NotFound:
        result.outcome = "resolve:not-found"
    except RecordRefused:
        result.outcome = "resolve:refused"
    except TimeoutError:
        result.outcome = "resolve:timeout"
    except LocatorError:
        result.outcome = "resolve:error"
    else:
        result.resolve_ms = (loop.time() - began) * 1000.0
        if not located:
            result.outcome = "resolve:not-found"
        else:
            try:
                outcome, setup = await agent.call(list(located), aor)
            except asyncio.CancelledError:
                if still_alive():
                    raise
                outcome, setup = "caller-left", 0.0
            result.outcome = outcome
            result.setup_ms = setup * 1000.0
    if not still_alive():
        result.outcome = "caller-left"
    return result
