"""Datagram transports for media: ICE (on ``aioice``) and plain UDP, behind one tiny interface.

* :class:`DatagramTransport` - what an audio stream needs: ``await send(data)``,
  ``await recv()``, ``await close()``, ``closed``. Both transports below implement it.
* :class:`IceTransport` - one ICE media stream with a single component (RTP and RTCP muxed,
  RFC 5761): host, server-reflexive (STUN) and relayed (TURN) candidates, trickle, controlling
  or controlled role, nomination, consent freshness (RFC 7675, done by ``aioice``) and a
  bounded :meth:`IceTransport.connect`.
* :class:`PlainUdpTransport` - for peers without ICE (SIPp, many phones): send to the address
  of the remote ``c=``/``m=`` lines, accept datagrams only from it, or latch onto the first
  source (RFC 7362 §4) - always sending from the socket we receive on (symmetric RTP, RFC 4961).
* :func:`parse_candidate` / :func:`format_candidate` - ``a=candidate`` values (RFC 8839 §5.1).

Loopback host candidates: ``aioice`` lists the machine's interfaces and skips 127.0.0.1 and ::1.
``IceTransport(host_addresses=[...])`` replaces that list with exactly the given addresses (for
example ``["127.0.0.1"]`` in tests). It does so by overriding the public
``Connection.get_component_candidates`` method in a private subclass - no module-level patching,
so other connections in the same process are unaffected. Without the option, ``aioice``'s own
interface listing is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

import aioice
from aioice import Candidate

from p2psip.errors import P2PSIPError

__all__ = [
    "Candidate",
    "CandidateError",
    "DatagramTransport",
    "IceError",
    "IceFailedError",
    "IceTimeoutError",
    "IceTransport",
    "MediaTransportError",
    "PlainUdpTransport",
    "TransportClosedError",
    "TransportStats",
    "format_candidate",
    "parse_candidate",
]

logger = logging.getLogger(__name__)

Address = tuple[str, int]


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class MediaTransportError(P2PSIPError):
    """Base class of the media transport errors."""


class TransportClosedError(MediaTransportError):
    """The transport is closed (by us, by the peer's consent expiring, or after a failure)."""


class IceError(MediaTransportError):
    """ICE could not be set up or used (not gathered, no remote credentials, not connected)."""


class IceTimeoutError(IceError):
    """:meth:`IceTransport.connect` did not complete within its timeout."""


class IceFailedError(IceError):
    """Every candidate pair failed (RFC 8445 §8.1.2: the check list is Failed)."""


class CandidateError(IceError):
    """An ``a=candidate`` value is malformed."""


# ---------------------------------------------------------------------------------------------
# The common interface
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class DatagramTransport(Protocol):
    """A connected datagram pipe to one peer, as an audio/video stream uses it."""

    @property
    def closed(self) -> bool:
        """True once closed; ``send``/``recv`` then raise :class:`TransportClosedError`."""
        ...

    async def send(self, data: bytes) -> None:
        """Send one datagram to the peer."""
        ...

    async def recv(self) -> bytes:
        """Wait for the next datagram from the peer."""
        ...

    async def close(self) -> None:
        """Release the sockets; pending ``recv`` calls raise :class:`TransportClosedError`."""
        ...


@dataclass(frozen=True)
class TransportStats:
    """Counters of a transport (a snapshot).

    Attributes:
        sent: datagrams handed to the socket.
        received: datagrams delivered (queued for ``recv``).
        dropped_foreign: datagrams dropped because they came from an address other than the
            peer's (plain UDP only).
        dropped_overflow: datagrams dropped because nobody called ``recv`` fast enough (the
            oldest ones go first; plain UDP only).
        send_errors: socket errors reported while sending.
    """

    sent: int = 0
    received: int = 0
    dropped_foreign: int = 0
    dropped_overflow: int = 0
    send_errors: int = 0


# ---------------------------------------------------------------------------------------------
# a=candidate (RFC 8839 §5.1)
# ---------------------------------------------------------------------------------------------

_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]{1,32}")  # foundation = 1*32ice-char
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`{|}~A-Za-z0-9]+")
_CANDIDATE_TYPES = ("host", "srflx", "prflx", "relay")


def _parse_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    # RFC 8839 allows an FQDN; browsers send mDNS names (<uuid>.local), which aioice resolves.
    if text.endswith(".local") and re.fullmatch(r"[A-Za-z0-9\-.]+", text):
        return text
    raise CandidateError(f"candidate address {text!r} is neither an IP address nor a .local name")


def _parse_int(text: str, low: int, high: int, what: str) -> int:
    if not text.isdigit() or len(text) > 10 or not low <= int(text) <= high:
        raise CandidateError(f"candidate {what} {text!r} is not in {low}..{high}")
    return int(text)


def parse_candidate(value: str) -> Candidate:
    """Parse an ``a=candidate`` value strictly (RFC 8839 §5.1; RFC 8445 §5.1.2 for priority).

    Accepts ``a=candidate:...``, ``candidate:...`` or just the value. Extension attributes
    (``generation``, ``tcptype``, ``ufrag``, ``network-id`` ...) are allowed; ``generation``
    and ``tcptype`` are kept.

    Raises:
        CandidateError: anything malformed.
    """
    if not isinstance(value, str):
        raise CandidateError("candidate must be a str")
    text = value.strip()
    for prefix in ("a=", "candidate:"):
        if text[: len(prefix)].lower() == prefix:
            text = text[len(prefix) :]
    bits = text.split()
    if len(bits) < 8 or len(bits) % 2:
        raise CandidateError(f"candidate needs 8 fields plus name/value pairs: {value[:80]!r}")
    foundation, component, transport, priority, host, port, typ, cand_type = bits[:8]
    if not _ICE_CHARS.fullmatch(foundation):
        raise CandidateError(f"malformed candidate foundation {foundation!r}")
    if not _TOKEN.fullmatch(transport):
        raise CandidateError(f"malformed candidate transport {transport!r}")
    if typ.lower() != "typ" or not _TOKEN.fullmatch(cand_type):
        raise CandidateError("candidate must carry 'typ <type>' in 7th/8th position")
    extensions: dict[str, str] = {}
    for name, val in zip(bits[8::2], bits[9::2], strict=True):
        if not _TOKEN.fullmatch(name) or name in extensions:
            raise CandidateError(f"malformed or repeated candidate extension {name!r}")
        extensions[name] = val
    related_address = extensions.get("raddr")
    related_port = extensions.get("rport")
    generation = extensions.get("generation")
    return Candidate(
        foundation=foundation,
        component=_parse_int(component, 1, 256, "component"),
        transport=transport.lower(),
        priority=_parse_int(priority, 1, 2**31 - 1, "priority"),
        host=_parse_address(host),
        port=_parse_int(port, 0, 65535, "port"),
        type=cand_type.lower(),
        related_address=None if related_address is None else _parse_address(related_address),
        related_port=None if related_port is None else _parse_int(related_port, 0, 65535, "rport"),
        tcptype=extensions.get("tcptype"),
        generation=None if generation is None else _parse_int(generation, 0, 2**32, "generation"),
    )


def format_candidate(candidate: Candidate) -> str:
    """The ``a=candidate`` value (without ``a=candidate:``) of ``candidate``."""
    return str(candidate.to_sdp())


# ---------------------------------------------------------------------------------------------
# ICE
# ---------------------------------------------------------------------------------------------


class _Connection(aioice.Connection):  # type: ignore[misc]
    """An aioice Connection with our gathering options.

    ``gather_candidates`` passes aioice's interface listing (which never contains 127.0.0.1
    or ::1) to the public ``get_component_candidates``; we substitute the pinned addresses and
    our STUN/TURN timeout there.
    """

    def __init__(
        self,
        *args: Any,
        pinned_addresses: list[str] | None,
        relay_only: bool,
        gather_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._p2psip_pinned = pinned_addresses
        self._p2psip_relay_only = relay_only
        self._p2psip_gather_timeout = gather_timeout
        self._p2psip_receiver: Callable[[bytes], None] | None = None

    def data_received(self, data: bytes, component: int) -> None:
        receiver = self._p2psip_receiver
        if receiver is None:
            super().data_received(data, component)
        else:
            receiver(data)

    def p2psip_set_receiver(self, receiver: Callable[[bytes], None] | None) -> int:
        """Deliver data to ``receiver`` from now on; hand it what is queued. Returns the count."""
        self._p2psip_receiver = receiver
        handed = 0
        queue = self._queue
        while receiver is not None and not queue.empty():
            item = queue.get_nowait()
            if item is None:  # a close marker stays for recv()
                queue.put_nowait(None)
                break
            receiver(item[0])
            handed += 1
        return handed

    def p2psip_send_nowait(self, data: bytes) -> None:
        """Send on the nominated pair without a coroutine (TURN sends still use a task)."""
        pair = self._nominated.get(1)
        if pair is None:
            raise ConnectionError("Cannot send data, not connected")
        transport = pair.protocol.transport
        closing = getattr(transport, "is_closing", None)  # aioice's TurnTransport has none
        if closing is not None and closing():
            raise ConnectionError("Cannot send data, transport closing")
        transport.sendto(data, pair.remote_addr)

    async def get_component_candidates(
        self, component: int, addresses: list[str], timeout: float = 5
    ) -> list[Candidate]:
        if self._p2psip_pinned is not None and not self._p2psip_relay_only:
            addresses = list(self._p2psip_pinned)
        return await super().get_component_candidates(
            component, addresses, timeout=self._p2psip_gather_timeout
        )


def _ip_literal(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{what} must be an IP address literal, got {text!r}") from None


class IceTransport:
    """One ICE media stream with one component (RTP/RTCP muxed), on ``aioice``.

    Typical use (offerer)::

        ice = IceTransport(controlling=True, stun_server=("stun.example.net", 3478))
        candidates = await ice.gather()
        # put ice.local_username / ice.local_password / candidates into the SDP offer ...
        ice.set_remote_credentials(ufrag, pwd)
        for value in remote_candidate_values:
            await ice.add_remote_candidate(value)
        await ice.end_of_candidates()  # or keep trickling while connect() runs
        await ice.connect(timeout=10)
        await ice.send(packet); data = await ice.recv()

    Args:
        controlling: our role (RFC 8445 §6.1.1: the offerer is controlling when both do full
            ICE). A role conflict is repaired by ``aioice`` (RFC 8445 §7.3.1.1).
        host_addresses: IP addresses to offer host candidates on, replacing ``aioice``'s
            interface listing (which skips loopback). None keeps ``aioice``'s listing.
        use_ipv4: gather IPv4 host candidates (with ``aioice``'s listing).
        use_ipv6: gather IPv6 host candidates (with ``aioice``'s listing).
        stun_server: (host, port) of a STUN server for server-reflexive candidates (IPv4).
        turn_server: (host, port) of a TURN server for a relayed candidate.
        turn_username: TURN long-term credential user name.
        turn_password: TURN long-term credential password.
        turn_transport: ``"udp"`` or ``"tcp"`` towards the TURN server.
        relay_only: gather and use only relayed candidates (hides our addresses).
        local_username: our ICE ufrag (random when None; RFC 8839 §5.4: 4-256 ice-chars).
        local_password: our ICE pwd (random when None; 22-256 ice-chars).
        gather_timeout: seconds to wait for STUN/TURN answers while gathering.
    """

    def __init__(
        self,
        *,
        controlling: bool,
        host_addresses: Sequence[str] | None = None,
        use_ipv4: bool = True,
        use_ipv6: bool = True,
        stun_server: Address | None = None,
        turn_server: Address | None = None,
        turn_username: str | None = None,
        turn_password: str | None = None,
        turn_transport: str = "udp",
        relay_only: bool = False,
        local_username: str | None = None,
        local_password: str | None = None,
        gather_timeout: float = 5.0,
    ) -> None:
        if turn_server is not None and (not turn_username or turn_password is None):
            raise ValueError("a TURN server needs turn_username and turn_password")
        if relay_only and turn_server is None:
            raise ValueError("relay_only needs a TURN server")
        if turn_transport not in ("udp", "tcp"):
            raise ValueError("turn_transport must be 'udp' or 'tcp'")
        kwargs: dict[str, Any] = {
            "ice_controlling": controlling,
            "components": 1,
            "stun_server": stun_server,
            "turn_server": turn_server,
            "turn_username": turn_username,
            "turn_password": turn_password,
            "turn_transport": turn_transport,
            "use_ipv4": use_ipv4,
            "use_ipv6": use_ipv6,
            "transport_policy": (
                aioice.TransportPolicy.RELAY if relay_only else aioice.TransportPolicy.ALL
            ),
            "local_username": local_username,
            "local_password": local_password,
        }
        pinned = (
            None
            if host_addresses is None
            else [_ip_literal(a, "host address") for a in host_addresses]
        )
        try:
            self._conn: aioice.Connection = _Connection(
                pinned_addresses=pinned,
                relay_only=relay_only,
                gather_timeout=gather_timeout,
                **kwargs,
            )
        except ValueError as exc:  # aioice validates ufrag/pwd
            raise IceError(str(exc)) from None
        self._gathered = False
        self._connected = False
        self._closed = False
        self._close_reason = ""
        self._watcher: asyncio.Task[None] | None = None
        self._sent = 0
        self._received = 0
        self._send_errors = 0
        self._ignored_candidates = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- local side ---------------------------------------------------------------------------

    @property
    def controlling(self) -> bool:
        """Our current role (it may change after a role conflict)."""
        return bool(self._conn.ice_controlling)

    @controlling.setter
    def controlling(self, value: bool) -> None:
        """Set the role before :meth:`connect` (when it was not known at creation, e.g. whether
        we offer or answer; RFC 8445 §6.1.1)."""
        if self._connected:
            raise IceError("the ICE role cannot change after connect()")
        self._conn.ice_controlling = bool(value)

    @property
    def local_username(self) -> str:
        """Our ``a=ice-ufrag``."""
        return str(self._conn.local_username)

    @property
    def local_password(self) -> str:
        """Our ``a=ice-pwd``."""
        return str(self._conn.local_password)

    @property
    def local_candidates(self) -> list[Candidate]:
        """Our candidates (after :meth:`gather`)."""
        return list(self._conn.local_candidates)

    @property
    def default_candidate(self) -> Candidate | None:
        """The candidate for the ``m=``/``c=`` lines (RFC 8839 §4.2.1.2): ``aioice`` picks the
        lowest priority one, i.e. the relayed candidate when there is one."""
        return self._conn.get_default_candidate(1)

    async def gather(self) -> list[Candidate]:
        """Gather host, server-reflexive and relayed candidates; return them.

        A STUN or TURN server that does not answer within ``gather_timeout`` only costs its
        candidate. Calling it again returns the same candidates.

        Raises:
            TransportClosedError: the transport is closed.
        """
        self._check_open()
        if not self._gathered:
            await self._conn.gather_candidates()
            self._gathered = True
        return self.local_candidates

    # -- remote side --------------------------------------------------------------------------

    def set_remote_credentials(
        self, username: str, password: str, *, ice_lite: bool = False
    ) -> None:
        """Set the peer's ``a=ice-ufrag`` / ``a=ice-pwd`` (and whether it is ICE-lite, in which
        case we nominate with a second check instead of aggressively, RFC 8445 §8.1.1)."""
        if not username or not password:
            raise IceError("remote ICE ufrag and pwd must not be empty")
        self._conn.remote_username = username
        self._conn.remote_password = password
        self._conn.remote_is_lite = ice_lite

    async def add_remote_candidate(self, candidate: Candidate | str) -> bool:
        """Add one remote candidate (an ``a=candidate`` value or a :class:`Candidate`).

        May be called before or during :meth:`connect` (trickle ICE, RFC 8838).

        Returns:
            True when the candidate was taken; False when ignored because ``aioice`` cannot use
            it (not UDP, or a type other than host/srflx/prflx/relay).

        Raises:
            CandidateError: a malformed candidate string.
            IceError: after :meth:`end_of_candidates`.
        """
        self._check_open()
        if isinstance(candidate, str):
            candidate = parse_candidate(candidate)
        if candidate.transport.lower() != "udp" or candidate.type not in _CANDIDATE_TYPES:
            self._ignored_candidates += 1
            return False
        if candidate.component != 1:  # single component: RTCP is muxed (RFC 5761)
            self._ignored_candidates += 1
            return False
        try:
            await self._conn.add_remote_candidate(candidate)
        except ValueError as exc:
            raise IceError(str(exc)) from None
        return True

    async def end_of_candidates(self) -> None:
        """Signal that the peer sends no more candidates (``a=end-of-candidates``, RFC 8838 §8).

        Until then a failing :meth:`connect` keeps waiting for more candidates (until its
        timeout); afterwards it fails as soon as every pair has failed.
        """
        self._check_open()
        with contextlib.suppress(ValueError):  # already signalled
            await self._conn.add_remote_candidate(None)

    # -- connectivity -------------------------------------------------------------------------

    async def connect(self, timeout: float = 10.0) -> None:
        """Run the connectivity checks until a pair is nominated (RFC 8445 §7-8).

        The controlling side nominates aggressively (USE-CANDIDATE on every check), or with a
        second check when the peer is ICE-lite. Once connected, ``aioice`` sends consent
        checks (RFC 7675: about every 5 s; six misses in a row close the transport, see
        :attr:`close_reason`).

        Args:
            timeout: seconds before giving up (without it an unreachable peer takes about 64 s
                to fail, or forever while more trickled candidates may come).

        Raises:
            IceError: :meth:`gather` not called or remote credentials missing.
            IceTimeoutError: no nominated pair within ``timeout``; the transport is closed.
            IceFailedError: every pair failed; the transport is closed.
        """
        self._check_open()
        if not self._gathered:
            raise IceError("call gather() before connect()")
        if self._conn.remote_username is None or self._conn.remote_password is None:
            raise IceError("set_remote_credentials() before connect()")
        try:
            await asyncio.wait_for(self._conn.connect(), timeout)
        except TimeoutError:
            await self._shutdown(f"ICE connect timed out after {timeout} s")
            raise IceTimeoutError(f"ICE did not connect within {timeout} s") from None
        except ConnectionError as exc:
            await self._shutdown(f"ICE failed: {exc}")
            raise IceFailedError(f"ICE failed: {exc}") from None
        self._connected = True
        self._watcher = asyncio.create_task(self._watch_events())

    @property
    def connected(self) -> bool:
        """True between a successful :meth:`connect` and close / consent loss."""
        return self._connected and not self._closed

    @property
    def selected_pair(self) -> tuple[Candidate, Candidate] | None:
        """(local, remote) candidates of the nominated pair, or None.

        ``aioice`` keeps the nominated pairs private; this reads them defensively and returns
        None if that ever changes.
        """
        nominated = getattr(self._conn, "_nominated", None)
        pair = nominated.get(1) if isinstance(nominated, dict) else None
        if pair is None:
            return None
        return pair.local_candidate, pair.remote_candidate

    @property
    def close_reason(self) -> str:
        """Why the transport closed ("" while open)."""
        return self._close_reason

    async def _watch_events(self) -> None:
        # aioice closes the connection by itself when consent expires (RFC 7675 §5.1).
        with contextlib.suppress(asyncio.CancelledError):
            event = await self._conn.get_event()
            if isinstance(event, aioice.ConnectionClosed) and not self._closed:
                self._closed = True
                self._close_reason = "consent to send expired (RFC 7675)"
                logger.info("ICE transport closed: %s", self._close_reason)

    # -- data ---------------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        """Send one datagram over the nominated pair.

        Raises:
            TransportClosedError: closed (also after consent expired).
            IceError: not connected yet.
        """
        self._check_open()
        if not self._connected:
            raise IceError("ICE is not connected")
        try:
            await self._conn.send(data)
        except ConnectionError as exc:
            raise TransportClosedError(f"cannot send: {exc}") from None
        except OSError as exc:
            self._send_errors += 1
            raise MediaTransportError(f"send failed: {exc}") from None
        self._sent += 1

    async def recv(self) -> bytes:
        """Wait for the next datagram (STUN is consumed by ``aioice``, never returned).

        Raises:
            TransportClosedError: closed, before or while waiting.
            IceError: not connected yet.
        """
        self._check_open()
        if not self._connected:
            raise IceError("ICE is not connected")
        try:
            data = await self._conn.recv()
        except ConnectionError:
            raise TransportClosedError(self._close_reason or "ICE transport closed") from None
        self._received += 1
        return bytes(data)

    def send_nowait(self, data: bytes) -> None:
        """Like :meth:`send`, without a coroutine: for media paced by a clock callback.

        Raises:
            TransportClosedError: closed (also after consent expired).
            IceError: not connected yet.
        """
        self._check_open()
        if not self._connected:
            raise IceError("ICE is not connected")
        try:
            self._conn.p2psip_send_nowait(data)
        except ConnectionError as exc:
            raise TransportClosedError(f"cannot send: {exc}") from None
        except OSError as exc:
            self._send_errors += 1
            raise MediaTransportError(f"send failed: {exc}") from None
        self._sent += 1

    def set_receiver(self, callback: Callable[[bytes], None] | None) -> None:
        """Deliver each received datagram to ``callback`` (called on the event loop) instead
        of queueing it for :meth:`recv`; datagrams already queued are handed over at once.
        ``None`` goes back to queueing. The callback must not raise."""
        self._received += self._conn.p2psip_set_receiver(
            None if callback is None else self._counting(callback)
        )

    def _counting(self, callback: Callable[[bytes], None]) -> Callable[[bytes], None]:
        def deliver(data: bytes) -> None:
            self._received += 1
            callback(data)

        return deliver

    @property
    def stats(self) -> TransportStats:
        """A snapshot of the counters."""
        return TransportStats(
            sent=self._sent, received=self._received, send_errors=self._send_errors
        )

    @property
    def closed(self) -> bool:
        """True once closed (by :meth:`close`, a failed connect, or lost consent)."""
        return self._closed

    async def close(self) -> None:
        """Close the sockets and the TURN allocation; idempotent."""
        await self._shutdown("closed locally")

    async def _shutdown(self, reason: str) -> None:
        if not self._closed:
            self._closed = True
            self._close_reason = reason
        await self._conn.close()
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    def _check_open(self) -> None:
        if self._closed:
            raise TransportClosedError(self._close_reason or "transport closed")


# ---------------------------------------------------------------------------------------------
# Plain UDP
# ---------------------------------------------------------------------------------------------


def _normalise(addr: tuple[Any, ...]) -> Address:
    """(host, port) with the host in canonical form; drops IPv6 flowinfo/scope id."""
    return str(ipaddress.ip_address(addr[0])), int(addr[1])


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: PlainUdpTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._owner._datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self._owner._error_received(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._connection_lost()


class PlainUdpTransport:
    """RTP over a plain UDP socket for peers that do not do ICE.

    We send to ``remote_address`` from the socket we receive on (symmetric RTP, RFC 4961 §3).
    Datagrams from any other address are dropped and counted. With ``latch=True`` the first
    datagram received fixes the remote address (RFC 7362 §4 "latching", for peers behind NAT
    whose signalled address is unusable); only that source is accepted afterwards. Latching
    trusts whoever speaks first (RFC 7362 §5): use it only where needed, and with SRTP.

    Create with :meth:`create`; use ``async with`` or :meth:`close`.
    """

    def __init__(self, *, latch: bool = False, queue_size: int = 512) -> None:
        """Use :meth:`create` instead (this does not open a socket)."""
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self._latch = latch
        self._latched = False
        self._remote: Address | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._queue: deque[bytes] = deque(maxlen=queue_size)
        self._readable = asyncio.Event()
        self._closed = False
        self._family_v6 = False
        self._counts = dict.fromkeys(TransportStats.__dataclass_fields__, 0)
        self._receiver: Callable[[bytes], None] | None = None

    @classmethod
    async def create(
        cls,
        local_address: Address = ("127.0.0.1", 0),
        remote_address: Address | None = None,
        *,
        latch: bool = False,
        queue_size: int = 512,
    ) -> PlainUdpTransport:
        """Bind a UDP socket and return the transport.

        Args:
            local_address: (IP, port) to bind; port 0 picks a free one. The family (IPv4 or
                IPv6) of this address is the transport's family.
            remote_address: (IP, port) from the peer's SDP ``c=``/``m=`` lines; may be set later
                with :meth:`set_remote_address`.
            latch: latch onto the first source address instead of trusting ``remote_address``.
            queue_size: datagrams kept for :meth:`recv`; the oldest are dropped beyond that.

        Raises:
            ValueError: an address is not an IP literal or of the wrong family.
            MediaTransportError: the socket could not be bound.
        """
        self = cls(latch=latch, queue_size=queue_size)
        host = _ip_literal(local_address[0], "local address")
        self._family_v6 = ipaddress.ip_address(host).version == 6
        if remote_address is not None:
            self.set_remote_address(remote_address)
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(host, int(local_address[1]))
            )
        except OSError as exc:
            raise MediaTransportError(f"cannot bind UDP {host}:{local_address[1]}: {exc}") from None
        self._transport = transport
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def local_address(self) -> Address:
        """(IP, port) the socket is bound to - what goes into our ``c=``/``m=`` lines."""
        if self._transport is None:
            raise TransportClosedError("not bound")
        return _normalise(self._transport.get_extra_info("sockname"))

    @property
    def remote_address(self) -> Address | None:
        """Where we send to (and the only source we accept), None until known."""
        return self._remote

    @property
    def _latch_done(self) -> bool:
        return self._latched or not self._latch

    @property
    def latched(self) -> bool:
        """True once ``latch=True`` fixed the remote address from a received datagram."""
        return self._latched

    def set_remote_address(self, address: Address) -> None:
        """Set the peer's address (e.g. from the SDP answer, or a re-INVITE)."""
        host = _ip_literal(address[0], "remote address")
        if (ipaddress.ip_address(host).version == 6) != self._family_v6:
            raise ValueError(f"remote address {host} is not of the socket's address family")
        port = int(address[1])
        if not 0 < port < 65536:
            raise ValueError(f"remote port {port} out of range")
        self._remote = (host, port)

    async def send(self, data: bytes) -> None:
        """Send one datagram to the remote address.

        Raises:
            TransportClosedError: closed.
            MediaTransportError: no remote address yet (with ``latch``: nothing received yet and
                no signalled address).
        """
        if self._closed or self._transport is None:
            raise TransportClosedError("transport closed")
        if self._remote is None:
            raise MediaTransportError("no remote address to send to")
        self._transport.sendto(data, self._remote)
        self._counts["sent"] += 1

    def send_nowait(self, data: bytes) -> None:
        """Like :meth:`send`, without a coroutine: for media paced by a clock callback.

        Raises:
            TransportClosedError: closed.
            MediaTransportError: no remote address yet.
        """
        if self._closed or self._transport is None:
            raise TransportClosedError("transport closed")
        if self._remote is None:
            raise MediaTransportError("no remote address to send to")
        self._transport.sendto(data, self._remote)
        self._counts["sent"] += 1

    def set_receiver(self, callback: Callable[[bytes], None] | None) -> None:
        """Deliver each datagram from the peer to ``callback`` (called on the event loop)
        instead of queueing it for :meth:`recv`; queued datagrams are handed over at once.
        ``None`` goes back to queueing. The callback must not raise."""
        self._receiver = callback
        while callback is not None and self._queue:
            callback(self._queue.popleft())

    async def recv(self) -> bytes:
        """Wait for the next datagram from the peer.

        Raises:
            TransportClosedError: closed, before or while waiting.
        """
        while not self._queue:
            if self._closed:
                raise TransportClosedError("transport closed")
            self._readable.clear()
            await self._readable.wait()
        if self._closed:
            raise TransportClosedError("transport closed")
        return self._queue.popleft()

    @property
    def stats(self) -> TransportStats:
        """A snapshot of the counters."""
        return TransportStats(**self._counts)

    @property
    def closed(self) -> bool:
        """True once closed."""
        return self._closed

    async def close(self) -> None:
        """Close the socket; pending :meth:`recv` calls raise. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._readable.set()
        if self._transport is not None:
            self._transport.close()
        await asyncio.sleep(0)  # let connection_lost run

    # -- protocol callbacks ---------------------------------------------------------------------

    def _datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self._closed:
            return
        remote = self._remote
        # fast path: the kernel gives the address in the canonical form we keep
        if remote is None or addr[0] != remote[0] or addr[1] != remote[1] or not self._latch_done:
            source = _normalise(addr)
            if self._latch and not self._latched:
                self._remote = source  # RFC 7362 §4: latch onto the first source
                self._latched = True
            elif source != remote:
                self._counts["dropped_foreign"] += 1
                return
        if self._receiver is not None:
            self._counts["received"] += 1
            self._receiver(data)
            return
        if len(self._queue) == self._queue.maxlen:
            self._counts["dropped_overflow"] += 1  # deque drops the oldest
        self._queue.append(data)
        self._counts["received"] += 1
        self._readable.set()

    def _error_received(self, exc: Exception) -> None:
        self._counts["send_errors"] += 1
        logger.debug("UDP error on %s: %s", self._remote, exc)

    def _connection_lost(self) -> None:
        self._closed = True
        self._readable.set()
