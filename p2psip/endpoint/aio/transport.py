"""asyncio SIP transports: UDP, TCP and TLS listeners and connections (RFC 3261 §18).

:class:`TransportManager` owns every socket of an endpoint. Received messages are parsed here
(:func:`parse_message` for datagrams, one :class:`StreamParser` per connection) and handed to
``on_message``; what could not be parsed goes to ``on_bad_message`` with the status code to
answer. Sending is fire-and-forget (:meth:`TransportManager.send`, failures reported through
``on_send_error``) or awaited (:meth:`TransportManager.send_async`, raising TransportError).

Stream connections are kept in a table keyed by the peer's :class:`TransportAddress`, so a
response sent to the source of a request goes back over the connection the request came on
(RFC 3261 §18.2.2), and requests to the same destination reuse one connection (§18.1.1).

Not handled here: the switch to TCP for large requests (§18.1.1, the UA core decides; see
:meth:`TransportManager.can_send`), RFC 5626 STUN keep-alives over UDP (such datagrams are
dropped silently), connection aliasing (RFC 5923) and name resolution (RFC 3263: destinations
must be IP address literals).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from p2psip.endpoint.addresses import TransportAddress
from p2psip.endpoint.aio.tls import client_context
from p2psip.endpoint.message import Request, Response, StreamParser, parse_message
from p2psip.errors import SIPParseError, TransportError

__all__ = [
    "BadMessageCallback",
    "MessageCallback",
    "SendErrorCallback",
    "TransportManager",
    "TransportStats",
]

logger = logging.getLogger(__name__)

MessageCallback = Callable[[Request | Response, TransportAddress, TransportAddress], None]
"""``on_message(message, source, local)``: a message arrived from ``source`` at ``local``."""

BadMessageCallback = Callable[
    [bytes | None, SIPParseError, TransportAddress, TransportAddress], None
]
"""``on_bad_message(data, error, source, local)``: ``data`` is the datagram or the framed stream
message (None after a stream framing error);
``error.status`` is the response to send (400, 505, 513...)."""

SendErrorCallback = Callable[[TransportAddress, TransportError], None]
"""``on_send_error(destination, error)``: a message given to :meth:`TransportManager.send`
could not be sent (RFC 3261 §17.1.4: the transaction layer reports a transport error)."""

STREAM_TRANSPORTS = frozenset(("tcp", "tls"))
# Largest UDP payload per address family (65535 - IP and UDP headers).
_MAX_UDP_PAYLOAD = {socket.AF_INET: 65507, socket.AF_INET6: 65527}
_UDP_SOCKET_BUFFER = 4 * 1024 * 1024  # asked for; the kernel caps it (net.core.rmem_max)
_SOURCE_CACHE_SIZE = 4096
_TIMER_SLACK = 0.001  # loop.call_at may fire up to one clock resolution early
_CRLF = b"\r\n"


@functools.lru_cache(maxsize=4096)
def _parse_ip(host: str) -> tuple[int, str]:
    """(address family, canonical text) of an IP literal; ValueError for anything else."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    ip = ipaddress.ip_address(host)
    return (socket.AF_INET6 if ip.version == 6 else socket.AF_INET), str(ip)


def _canonical(address: TransportAddress) -> TransportAddress:
    """``address`` with the host in canonical form (the connection table's key)."""
    try:
        host = _parse_ip(address.host)[1]
    except ValueError:
        raise TransportError(
            f"cannot send to {address}: the host must be an IP address (resolve it first)"
        ) from None
    if host == address.host:
        return address
    return TransportAddress(address.transport, host, address.port)


_FAMILIES: dict[object, int] = {
    socket.AF_INET: socket.AF_INET,
    socket.AF_INET6: socket.AF_INET6,
    4: socket.AF_INET,
    6: socket.AF_INET6,
    "ipv4": socket.AF_INET,
    "ipv6": socket.AF_INET6,
}


def _family_of(family: int | str | None) -> int | None:
    if family is None:
        return None
    try:
        return _FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown address family {family!r}") from None


@dataclass(slots=True)
class TransportStats:
    """Counters of a :class:`TransportManager` (for tests and monitoring).

    Attributes:
        connections_accepted: stream connections accepted by the listeners.
        connections_opened: outgoing stream connections established.
        connections_closed: stream connections closed (either side, any reason).
        connect_failures: outgoing connections that could not be established.
        bad_messages: messages that failed to parse.
        send_errors: failures reported through ``on_send_error``.
    """

    connections_accepted: int = 0
    connections_opened: int = 0
    connections_closed: int = 0
    connect_failures: int = 0
    bad_messages: int = 0
    send_errors: int = 0


@dataclass(slots=True)
class _Listener:
    address: TransportAddress
    family: int
    server: asyncio.Server | None = None
    udp: _UDPProtocol | None = None


class _UDPProtocol(asyncio.DatagramProtocol):
    """One UDP socket. Datagrams are parsed right in :meth:`datagram_received` (no task)."""

    __slots__ = (
        "_manager",
        "_max_size",
        "_on_message",
        "_sources",
        "closed",
        "local",
        "transport",
    )

    def __init__(self, manager: TransportManager, local: TransportAddress) -> None:
        self._manager = manager
        self._on_message = manager._on_message
        self._max_size = manager.max_message_size
        self._sources: dict[Any, TransportAddress] = {}
        self.local = local
        self.transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = manager._loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if (not data or data[0] < 0x20) and _not_sip(data):
            return
        source = self._sources.get(addr)
        if source is None:
            source = self._source(addr)
        try:
            message = parse_message(data, datagram=True, max_size=self._max_size)
        except SIPParseError as exc:
            self._manager._bad_message(data, exc, source, self.local)
            return
        try:
            self._on_message(message, source, self.local)
        except Exception:
            logger.exception("on_message failed for a datagram from %s", source)

    def _source(self, addr: Any) -> TransportAddress:
        if len(self._sources) >= _SOURCE_CACHE_SIZE:
            self._sources.clear()
        source = TransportAddress("udp", addr[0], addr[1])
        self._sources[addr] = source
        return source

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for an unconnected socket name no destination: the transaction times out.
        logger.debug("UDP %s: %s", self.local, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class _Connection(asyncio.Protocol):
    """One TCP or TLS connection, accepted or opened; frames messages with a StreamParser."""

    __slots__ = (
        "_idle_handle",
        "_manager",
        "_read_handle",
        "closed",
        "closing",
        "key",
        "last_activity",
        "local",
        "name",
        "outbound",
        "parser",
        "partial_since",
        "peer_cert",
        "pending",
        "pending_size",
        "ready",
        "report_errors",
        "task",
        "transport",
    )

    def __init__(
        self, manager: TransportManager, name: str, key: TransportAddress | None = None
    ) -> None:
        loop = manager._loop
        self._manager = manager
        self.name = name
        self.key = key  # the peer; known in advance for outgoing connections
        self.outbound = key is not None
        self.local: TransportAddress | None = None
        self.transport: asyncio.Transport | None = None
        self.parser = StreamParser(max_size=manager.max_message_size)
        self.pending: list[bytes] = []  # written before the connection was established
        self.pending_size = 0
        self.report_errors = False  # a fire-and-forget send() waits on this connection
        self.ready: asyncio.Future[None] = loop.create_future()
        self.ready.add_done_callback(_consume_exception)
        self.closed: asyncio.Future[None] = loop.create_future()
        self.closing = False
        self.last_activity = loop.time()
        self.partial_since: float | None = None
        self.peer_cert: bytes | None = None
        self.task: asyncio.Task[None] | None = None
        self._idle_handle: asyncio.TimerHandle | None = None
        self._read_handle: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        sockname = transport.get_extra_info("sockname")
        if self.key is None:
            self.key = TransportAddress(self.name, _parse_ip(peer[0])[1], peer[1])
        self.local = TransportAddress(self.name, sockname[0], sockname[1])
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.peer_cert = ssl_object.getpeercert(binary_form=True)
        manager = self._manager
        manager._connection_made(self)
        if self.pending:
            transport.write(b"".join(self.pending))  # type: ignore[attr-defined]
            self.pending.clear()
            self.pending_size = 0
        self.last_activity = manager._loop.time()
        if manager.idle_timeout is not None:
            self._idle_handle = manager._loop.call_at(
                self.last_activity + manager.idle_timeout, self._check_idle
            )
        if not self.ready.done():
            self.ready.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        manager = self._manager
        now = manager._loop.time()
        self.last_activity = now
        parser = self.parser
        parser.receive_data(data)
        key, local = self.key, self.local
        completed = False
        last_error: SIPParseError | None = None
        while True:
            try:
                message = parser.next_event()
            except SIPParseError as exc:
                # A framing error (bad Content-Length, too large) is sticky: the parser raises
                # it again on every call and the stream is unusable. A message that was framed
                # but is malformed is only skipped.
                if exc is last_error:
                    self.close()
                    return
                frame = parser.last_bad_frame
                parser.last_bad_frame = None
                manager._bad_message(frame, exc, key, local)  # type: ignore[arg-type]
                if parser.failed:
                    self.close()
                    return
                last_error = exc
                completed = True
                continue
            if message is None:
                break
            completed = True
            try:
                manager._on_message(message, key, local)  # type: ignore[arg-type]
            except Exception:
                logger.exception("on_message failed for a message from %s", key)
            if self.closing:
                return
        if parser.pong_due:
            # RFC 5626 §3.5.1: answer a double-CRLF ping with a single CRLF pong.
            self.transport.write(_CRLF * parser.pong_due)  # type: ignore[union-attr]
            parser.pong_due = 0
        # RFC 4475 §3.1.2.x over a stream: close when the rest of a message does not come in
        # reasonable time. A lone CRLF (maybe half a ping) does not count.
        if parser.buffered > 2:
            if completed or self.partial_since is None:
                self.partial_since = now
            if self._read_handle is None:
                self._read_handle = manager._loop.call_at(
                    self.partial_since + manager.read_timeout, self._check_read
                )
        else:
            self.partial_since = None

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self._cancel_timers()
        self._manager._connection_lost(self)
        if not self.ready.done():
            self.ready.set_exception(TransportError(f"connection to {self.key} lost"))
        if not self.closed.done():
            self.closed.set_result(None)
        self.transport = None

    # -- used by the manager ----------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Write or queue ``data``; raises TransportError when it cannot be accepted."""
        if self.closing:
            raise TransportError(f"connection to {self.key} is closed")
        manager = self._manager
        transport = self.transport
        if transport is None:
            if self.pending_size + len(data) > manager.max_buffer:
                raise TransportError(f"send queue to {self.key} is full")
            self.pending.append(data)
            self.pending_size += len(data)
            return
        transport.write(data)
        self.last_activity = manager._loop.time()
        if transport.get_write_buffer_size() > manager.max_buffer:
            # The peer does not read: drop it rather than buffer without bound.
            transport.abort()
            self.closing = True
            raise TransportError(f"{self.key} does not read; connection aborted")

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self._cancel_timers()
        if self.transport is not None:
            self.transport.close()
        elif self.task is not None:
            self.task.cancel()

    def _cancel_timers(self) -> None:
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        if self._read_handle is not None:
            self._read_handle.cancel()
            self._read_handle = None

    def _check_idle(self) -> None:
        self._idle_handle = None
        if self.closing:
            return
        loop = self._manager._loop
        due = self.last_activity + self._manager.idle_timeout  # type: ignore[operator]
        if loop.time() + _TIMER_SLACK >= due:
            logger.debug("closing idle connection %s", self.key)
            self.close()
        else:
            self._idle_handle = loop.call_at(due, self._check_idle)

    def _check_read(self) -> None:
        self._read_handle = None
        if self.closing or self.partial_since is None:
            return
        loop = self._manager._loop
        due = self.partial_since + self._manager.read_timeout
        if loop.time() + _TIMER_SLACK >= due:
            logger.debug("closing %s: incomplete message for %.1f s", self.key, loop.time() - due)
            self.close()
        else:
            self._read_handle = loop.call_at(due, self._check_read)


def _not_sip(data: bytes) -> bool:
    r"""Whether a datagram that does not start with text is to be dropped silently.

    Empty datagrams, CRLF keep-alives (a "\r\n\r\n" ping) and binary payloads such as RFC 5626
    STUN keep-alives (not answered: out of scope) are dropped. CRLFs before a start line are
    allowed (RFC 3261 §7.5): parse_message skips them.
    """
    return data[:1] not in (b"\r", b"\n") or not data.strip(b"\r\n")


def _consume_exception(future: asyncio.Future[Any]) -> None:
    """Mark a shared future's exception as seen (it is also reported in another way)."""
    if not future.cancelled():
        future.exception()


class TransportManager:
    """UDP, TCP and TLS listeners and connections of one SIP endpoint.

    Create it with :meth:`create` inside a running event loop, then :meth:`listen`. Callbacks are
    plain functions called from the event loop; they must not block.

    Attributes:
        max_message_size: largest message accepted (larger ones: ``on_bad_message`` with 513).
        idle_timeout: seconds without traffic after which a connection is closed (None: never).
        read_timeout: seconds a partial message may wait for its remainder on a stream.
        max_connections: stream connections kept; beyond it the least recently active is closed.
        max_buffer: bytes queued per connection (before it is up, or unsent) before giving up.
        connect_timeout: seconds for a TCP connect plus TLS handshake.
        tls_client_context: the context of outgoing TLS connections; when None, a verifying
            context using the system CA store is made on first use.
        on_send_error: the ``on_send_error(destination, error)`` callback (may be set later).
        stats: counters.
    """

    def __init__(
        self,
        on_message: MessageCallback,
        on_bad_message: BadMessageCallback | None = None,
        *,
        on_send_error: SendErrorCallback | None = None,
        max_message_size: int = 65535,
        idle_timeout: float | None = 300.0,
        read_timeout: float = 32.0,
        max_connections: int = 1024,
        max_buffer: int = 1024 * 1024,
        connect_timeout: float = 10.0,
        tls_client_context: ssl.SSLContext | None = None,
    ) -> None:
        """Prefer :meth:`create`; this must run inside the event loop that will serve it."""
        self._loop = asyncio.get_running_loop()
        self._on_message = on_message
        self._on_bad_message = on_bad_message
        self.on_send_error = on_send_error
        self.max_message_size = max_message_size
        self.idle_timeout = idle_timeout
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.max_buffer = max_buffer
        self.connect_timeout = connect_timeout
        self.tls_client_context = tls_client_context
        self.stats = TransportStats()
        self._listeners: list[_Listener] = []
        self._udp_by_family: dict[int, _UDPProtocol] = {}
        self._connections: dict[TransportAddress, _Connection] = {}
        self._all_connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @classmethod
    async def create(
        cls,
        on_message: MessageCallback,
        on_bad_message: BadMessageCallback | None = None,
        *,
        on_send_error: SendErrorCallback | None = None,
        max_message_size: int = 65535,
        idle_timeout: float | None = 300.0,
        read_timeout: float = 32.0,
        max_connections: int = 1024,
        max_buffer: int = 1024 * 1024,
        connect_timeout: float = 10.0,
        tls_client_context: ssl.SSLContext | None = None,
    ) -> TransportManager:
        """Make a manager bound to the running event loop (no socket is opened yet).

        Args:
            on_message: ``on_message(message, source, local)`` for every parsed message.
                ``source`` is the peer (its IP and port, with the transport); ``local`` is the
                address it arrived at (for UDP the listener's, possibly a wildcard).
            on_bad_message: ``on_bad_message(data, error, source, local)`` for a message that
                failed to parse; ``data`` is the raw datagram over UDP (so that a 400 can be
                answered when the Via is readable) and None on streams. After a stream framing
                error the connection is closed once the callback returns.
            on_send_error: ``on_send_error(destination, error)`` for failures of :meth:`send`
                (called from the event loop, never from inside ``send``).
            max_message_size: largest message accepted, per datagram or per stream message.
            idle_timeout: close stream connections idle this long (seconds; None: never).
            read_timeout: close a stream connection whose partial message does not complete
                within this many seconds.
            max_connections: most stream connections kept; when a new one would exceed it the
                least recently active connection is closed.
            max_buffer: most bytes queued per connection while connecting, or left unsent by a
                peer that does not read.
            connect_timeout: seconds allowed for a TCP connect plus TLS handshake.
            tls_client_context: SSL context for outgoing TLS connections (see
                :func:`p2psip.endpoint.aio.tls.client_context`).

        Returns:
            The manager.
        """
        return cls(
            on_message,
            on_bad_message,
            on_send_error=on_send_error,
            max_message_size=max_message_size,
            idle_timeout=idle_timeout,
            read_timeout=read_timeout,
            max_connections=max_connections,
            max_buffer=max_buffer,
            connect_timeout=connect_timeout,
            tls_client_context=tls_client_context,
        )

    # -- listening ----------------------------------------------------------------------------
    async def listen(
        self, transport: str, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> TransportAddress:
        """Open a listener.

        Args:
            transport: ``"udp"``, ``"tcp"`` or ``"tls"``.
            host: an IPv4 or IPv6 address literal (``"0.0.0.0"``/``"::"`` for all).
            port: the port; 0 for an ephemeral one.
            ssl_context: the server context, required for ``"tls"`` only (see
                :func:`p2psip.endpoint.aio.tls.server_context`).

        Returns:
            The address actually bound.

        Raises:
            ValueError: for an unknown transport, a host that is not an IP address, or a
                missing/unexpected ``ssl_context``.
            TransportError: when the socket cannot be bound (address in use, ...).
        """
        if self._closed:
            raise TransportError("the transport manager is closed")
        transport = transport.lower()
        try:
            family, host = _parse_ip(host)
        except ValueError:
            raise ValueError(f"listen host must be an IP address literal, not {host!r}") from None
        if transport == "udp":
            if ssl_context is not None:
                raise ValueError("ssl_context is for tls only")
            listener = await self._listen_udp(family, host, port)
        elif transport in STREAM_TRANSPORTS:
            if (transport == "tls") != (ssl_context is not None):
                raise ValueError("tls needs an ssl_context; tcp takes none")
            listener = await self._listen_stream(transport, family, host, port, ssl_context)
        else:
            raise ValueError(f"unsupported transport {transport!r}")
        self._listeners.append(listener)
        logger.debug("listening on %s", listener.address)
        return listener.address

    async def open_udp_endpoint(
        self,
        family: int,
        host: str,
        port: int,
        protocol_factory: Callable[[], asyncio.DatagramProtocol],
    ) -> tuple[str, int]:
        """Open the datagram endpoint of a UDP listener; returns the bound (host, port).

        The default binds a real socket (IPv6-only for AF_INET6, large buffers). Override it
        to serve the listener from elsewhere, e.g. a simulated network whose event loop
        accepts ``local_addr``; parsing and dispatch stay the manager's.

        Raises:
            TransportError: the address cannot be bound.
        """
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, _UDP_SOCKET_BUFFER)
            sock.bind((host, port))
            sock.setblocking(False)
            name = sock.getsockname()
        except OSError as exc:
            sock.close()
            raise TransportError(f"cannot listen on udp {host} port {port}: {exc}") from exc
        await self._loop.create_datagram_endpoint(protocol_factory, sock=sock)
        return name[0], name[1]

    async def _listen_udp(self, family: int, host: str, port: int) -> _Listener:
        protocol = _UDPProtocol(self, TransportAddress("udp", host, port))
        bound = await self.open_udp_endpoint(family, host, port, lambda: protocol)
        local = TransportAddress("udp", bound[0], bound[1])
        protocol.local = local
        self._udp_by_family.setdefault(family, protocol)
        return _Listener(local, family, udp=protocol)

    async def _listen_stream(
        self, name: str, family: int, host: str, port: int, ssl_context: ssl.SSLContext | None
    ) -> _Listener:
        extra: dict[str, Any] = {}
        if ssl_context is not None:
            extra = {"ssl": ssl_context, "ssl_handshake_timeout": self.connect_timeout}
        try:
            server = await self._loop.create_server(
                lambda: _Connection(self, name),
                host=host,
                port=port,
                family=family,
                backlog=1024,
                reuse_address=True,
                **extra,
            )
        except OSError as exc:
            raise TransportError(f"cannot listen on {name} {host} port {port}: {exc}") from exc
        sockname = server.sockets[0].getsockname()
        return _Listener(TransportAddress(name, sockname[0], sockname[1]), family, server=server)

    async def listen_all(
        self,
        host: str,
        port: int = 0,
        ssl_server_context: ssl.SSLContext | None = None,
        *,
        tls_port: int | None = None,
    ) -> list[TransportAddress]:
        """Listen on UDP and TCP on the same port number, and on TLS when given a context.

        Args:
            host: an IP address literal.
            port: the UDP and TCP port; 0 picks one free for both.
            ssl_server_context: the TLS server context; no TLS listener when None.
            tls_port: the TLS port; defaults to ``port + 1`` (5060 -> 5061), or an ephemeral
                port when ``port`` is 0.

        Returns:
            The bound addresses: UDP, TCP, then TLS if any.

        Raises:
            TransportError: when a socket cannot be bound.
        """
        attempts = 20 if port == 0 else 1
        for attempt in range(attempts):
            udp = await self.listen("udp", host, port)
            try:
                tcp = await self.listen("tcp", host, udp.port)
            except TransportError:
                await self.stop_listening(udp)
                if attempt == attempts - 1:
                    raise
                continue  # the ephemeral UDP port is taken for TCP: try another
            break
        addresses = [udp, tcp]
        if ssl_server_context is not None:
            if tls_port is None:
                tls_port = port + 1 if port else 0
            addresses.append(await self.listen("tls", host, tls_port, ssl_server_context))
        return addresses

    async def stop_listening(self, address: TransportAddress) -> None:
        """Close the listener bound at ``address`` (connections it accepted stay open)."""
        for listener in list(self._listeners):
            if listener.address == address:
                self._listeners.remove(listener)
                await self._close_listener(listener)

    async def _close_listener(self, listener: _Listener) -> None:
        if listener.server is not None:
            listener.server.close()
            await self._wait_server_closed(listener.server)
        if listener.udp is not None:
            protocol = listener.udp
            if self._udp_by_family.get(listener.family) is protocol:
                del self._udp_by_family[listener.family]
                for other in self._listeners:  # another UDP listener of the family takes over
                    if other.udp is not None and other.family == listener.family:
                        self._udp_by_family[listener.family] = other.udp
                        break
            if protocol.transport is not None:
                protocol.transport.close()
            await protocol.closed

    @property
    def listeners(self) -> list[TransportAddress]:
        """The bound listener addresses, in the order they were opened."""
        return [listener.address for listener in self._listeners]

    def local_address(self, transport: str, family: int | str | None = None) -> TransportAddress:
        """The listener address to advertise in Via and Contact.

        Args:
            transport: ``"udp"``, ``"tcp"`` or ``"tls"``.
            family: ``socket.AF_INET``/``socket.AF_INET6`` (or 4/6, "ipv4"/"ipv6"); None for
                the first listener of ``transport``.

        Returns:
            The first matching listener's address (a wildcard if it was bound to one).

        Raises:
            TransportError: when there is no such listener.
        """
        wanted = _family_of(family)
        transport = transport.lower()
        for listener in self._listeners:
            if listener.address.transport == transport and wanted in (None, listener.family):
                return listener.address
        suffix = f" for family {family}" if family is not None else ""
        raise TransportError(f"no {transport} listener{suffix}")

    def can_send(self, transport: str, family: int | str | None = None) -> bool:
        """Whether :meth:`send` can use ``transport`` (for the UA core's choice, §18.1.1).

        UDP needs a UDP listener of the destination's family (it sends from there); TCP and TLS
        open connections on demand.
        """
        if self._closed:
            return False
        transport = transport.lower()
        if transport == "udp":
            wanted = _family_of(family)
            if wanted is None:
                return bool(self._udp_by_family)
            return wanted in self._udp_by_family
        return transport in STREAM_TRANSPORTS

    # -- connections --------------------------------------------------------------------------
    @property
    def connections(self) -> list[TransportAddress]:
        """Peers of the stream connections in the table (connecting or established)."""
        return list(self._connections)

    def peer_certificate(self, address: TransportAddress) -> bytes | None:
        """The DER certificate the peer of a TLS connection presented, or None.

        Args:
            address: the connection's peer (the ``source`` of a received message, or the
                destination of a send).

        Returns:
            The certificate; None when there is no such established TLS connection or the peer
            sent none (a server gets client certificates only when it asks for them).
        """
        connection = self._connections.get(address)
        if connection is None:
            with contextlib.suppress(TransportError):
                connection = self._connections.get(_canonical(address))
        return connection.peer_cert if connection is not None else None

    def close_connection(self, address: TransportAddress) -> bool:
        """Close the stream connection to ``address``; False when there is none."""
        connection = self._connections.get(address)
        if connection is None:
            return False
        connection.close()
        return True

    def _connection_made(self, connection: _Connection) -> None:
        self._all_connections.add(connection)
        if connection.outbound:
            self.stats.connections_opened += 1
        else:
            self.stats.connections_accepted += 1
            if self._closed:
                connection.close()
                return
            self._connections[connection.key] = connection  # type: ignore[index]
        if len(self._connections) > self.max_connections:
            self._evict(connection)

    def _evict(self, keep: _Connection) -> None:
        active = [
            c
            for c in self._connections.values()
            if not c.closing and c.transport is not None and c is not keep
        ]
        excess = len(active) + 1 - self.max_connections
        if excess <= 0:
            return
        active.sort(key=lambda c: c.last_activity)
        for connection in active[:excess]:
            logger.debug("max_connections reached: closing %s", connection.key)
            connection.close()

    def _connection_lost(self, connection: _Connection) -> None:
        self._all_connections.discard(connection)
        self.stats.connections_closed += 1
        if connection.key is not None and self._connections.get(connection.key) is connection:
            del self._connections[connection.key]

    def _open(self, destination: TransportAddress, server_hostname: str | None) -> _Connection:
        """Start connecting to ``destination`` (canonical); queued writes go out once it is up."""
        connection = _Connection(self, destination.transport, destination)
        self._connections[destination] = connection
        task = self._loop.create_task(self._connect(connection, server_hostname))
        connection.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return connection

    async def _connect(self, connection: _Connection, server_hostname: str | None) -> None:
        destination = connection.key
        assert destination is not None
        extra: dict[str, Any] = {}
        if destination.transport == "tls":
            if self.tls_client_context is None:
                self.tls_client_context = client_context()
            extra = {
                "ssl": self.tls_client_context,
                "server_hostname": server_hostname,  # None: the destination IP address
                "ssl_handshake_timeout": self.connect_timeout,
            }
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._loop.create_connection(
                    lambda: connection, destination.host, destination.port, **extra
                )
        except asyncio.CancelledError:
            self._connect_failed(connection, TransportError(f"connecting to {destination} stopped"))
            raise
        except TimeoutError:
            self._connect_failed(
                connection,
                TransportError(f"cannot connect to {destination}: timed out"),
            )
        except Exception as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            error = TransportError(f"cannot connect to {destination}: {reason or exc!r}")
            error.__cause__ = exc
            self._connect_failed(connection, error)

    def _connect_failed(self, connection: _Connection, error: TransportError) -> None:
        if connection.ready.done():
            return  # the connection was made: its loss is handled by connection_lost
        self.stats.connect_failures += 1
        connection.closing = True
        key = connection.key
        if key is not None and self._connections.get(key) is connection:
            del self._connections[key]
        connection.pending.clear()
        if not connection.ready.done():
            connection.ready.set_exception(error)
        if not connection.closed.done():
            connection.closed.set_result(None)
        if connection.report_errors and not self._closed:
            self._report_send_error(key, error)  # type: ignore[arg-type]
        logger.debug("%s", error)

    # -- receiving helpers --------------------------------------------------------------------
    def _bad_message(
        self,
        data: bytes | None,
        error: SIPParseError,
        source: TransportAddress,
        local: TransportAddress,
    ) -> None:
        self.stats.bad_messages += 1
        if self._on_bad_message is None:
            logger.debug("bad message from %s: %s (%d)", source, error, error.status)
            return
        try:
            self._on_bad_message(data, error, source, local)
        except Exception:
            logger.exception("on_bad_message failed for a message from %s", source)

    # -- sending ------------------------------------------------------------------------------
    def send(
        self,
        message: Request | Response | bytes,
        destination: TransportAddress,
        *,
        server_hostname: str | None = None,
    ) -> None:
        """Send without waiting; failures go to ``on_send_error``.

        UDP goes out at once from the UDP listener of the destination's address family. TCP and
        TLS use the connection to ``destination`` when there is one (for a response: the one the
        request came on, RFC 3261 §18.2.2), else open one and queue the bytes until it is up.

        Args:
            message: a Request/Response, or raw bytes (e.g. a ``b"\\r\\n\\r\\n"`` keep-alive).
            destination: where to send; the host must be an IP address literal.
            server_hostname: for a new TLS connection, the name to verify the certificate
                against (RFC 5922: the SIP domain); defaults to the destination IP address.
        """
        data = message if isinstance(message, bytes) else message.to_bytes()
        transport = destination.transport
        try:
            if transport == "udp":
                self._send_udp(data, destination)
                return
            connection = self._connections.get(destination)
            if connection is None or connection.closing:
                connection = self._stream_connection(destination, server_hostname)
            if connection.transport is None:
                connection.report_errors = True
            connection.write(data)
        except TransportError as exc:
            self._loop.call_soon(self._report_send_error, destination, exc)

    async def send_async(
        self,
        message: Request | Response | bytes,
        destination: TransportAddress,
        *,
        server_hostname: str | None = None,
    ) -> None:
        """Send, waiting for a new stream connection to be established.

        Args:
            message: a Request/Response, or raw bytes.
            destination: where to send; the host must be an IP address literal.
            server_hostname: see :meth:`send`.

        Raises:
            TransportError: when the message cannot be sent (no listener for UDP, connection
                refused, TLS verification failed, timed out, ...). ``on_send_error`` is not
                called for these.
        """
        data = message if isinstance(message, bytes) else message.to_bytes()
        if destination.transport == "udp":
            self._send_udp(data, destination)
            return
        connection = self._connections.get(destination)
        if connection is None or connection.closing:
            connection = self._stream_connection(destination, server_hostname)
        connection.write(data)
        if not connection.ready.done():
            await asyncio.shield(connection.ready)

    def _send_udp(self, data: bytes, destination: TransportAddress) -> None:
        try:
            family, host = _parse_ip(destination.host)
        except ValueError:
            raise TransportError(
                f"cannot send to {destination}: the host must be an IP address (resolve it first)"
            ) from None
        protocol = self._udp_by_family.get(family)
        if protocol is None or protocol.transport is None or protocol.transport.is_closing():
            version = 6 if family == socket.AF_INET6 else 4
            raise TransportError(f"cannot send to {destination}: no IPv{version} UDP listener")
        if not 0 < destination.port < 65536:
            raise TransportError(f"cannot send to {destination}: invalid port")
        if len(data) > _MAX_UDP_PAYLOAD[family]:
            raise TransportError(f"cannot send {len(data)} bytes over UDP to {destination}")
        protocol.transport.sendto(data, (host, destination.port))

    def _stream_connection(
        self, destination: TransportAddress, server_hostname: str | None
    ) -> _Connection:
        if self._closed:
            raise TransportError("the transport manager is closed")
        if destination.transport not in STREAM_TRANSPORTS:
            raise TransportError(f"unsupported transport {destination.transport!r}")
        key = _canonical(destination)
        connection = self._connections.get(key)
        if connection is None or connection.closing:
            # RFC 3261 §18.2.2: when the connection a request came on is gone, open a new one.
            connection = self._open(key, server_hostname)
        return connection

    def _report_send_error(self, destination: TransportAddress, error: TransportError) -> None:
        self.stats.send_errors += 1
        callback = self.on_send_error
        if callback is None:
            logger.warning("%s", error)
            return
        try:
            callback(destination, error)
        except Exception:
            logger.exception("on_send_error failed for %s", destination)

    # -- closing ------------------------------------------------------------------------------
    async def close(self, timeout: float = 2.0) -> None:
        """Close listeners and connections and stop pending connects.

        Args:
            timeout: seconds to wait for connections to close gracefully (TLS close_notify,
                unsent data) before aborting them.
        """
        if self._closed:
            return
        self._closed = True
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            if listener.server is not None:
                listener.server.close()
            if listener.udp is not None and listener.udp.transport is not None:
                listener.udp.transport.close()
        self._udp_by_family.clear()
        connections = set(self._all_connections) | set(self._connections.values())
        for connection in connections:
            connection.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        waiters: list[asyncio.Future[None]] = [c.closed for c in connections]
        waiters += [listener.udp.closed for listener in listeners if listener.udp is not None]
        pending: set[asyncio.Future[None]] = set()
        if waiters:
            _, pending = await asyncio.wait(waiters, timeout=timeout)
        for connection in connections:
            if not connection.closed.done() and connection.transport is not None:
                connection.transport.abort()
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for listener in listeners:
            if listener.server is not None:
                await self._wait_server_closed(listener.server, timeout)
        self._connections.clear()

    @staticmethod
    async def _wait_server_closed(server: asyncio.Server, timeout: float = 2.0) -> None:
        # Python 3.12+ waits for every accepted transport, including TLS handshakes in progress
        # that never reached our protocol: close those (3.13+) and bound the wait.
        close_clients = getattr(server, "close_clients", None)
        if close_clients is not None:
            close_clients()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), timeout)

    async def __aenter__(self) -> TransportManager:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
