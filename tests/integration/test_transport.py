"""TransportManager over real loopback sockets: UDP, TCP and TLS (RFC 3261 §18)."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from p2psip.endpoint.addresses import TransportAddress
from p2psip.endpoint.aio.tls import (
    certificate_der,
    client_context,
    make_self_signed,
    server_context,
)
from p2psip.endpoint.aio.transport import TransportManager
from p2psip.endpoint.message import Request, Response, parse_message
from p2psip.errors import SIPParseError, TransportError

TIMEOUT = 5.0
T = TypeVar("T")


def _ipv6_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HOSTS = [
    pytest.param("127.0.0.1", id="ipv4"),
    pytest.param(
        "::1",
        id="ipv6",
        marks=pytest.mark.skipif(not _ipv6_available(), reason="no IPv6 loopback"),
    ),
]


# -- helpers -----------------------------------------------------------------------------------
def options(transport: str, local: TransportAddress, call_id: str, body: bytes = b"") -> Request:
    text = (
        f"OPTIONS sip:bob@{local.host_for_uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} {local.host_for_uri}:{local.port}"
        f";branch=z9hG4bK-{call_id}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=a1\r\n"
        "To: <sip:bob@example.com>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    message = parse_message(text.encode() + body)
    assert isinstance(message, Request)
    return message


def raw_options(call_id: str, body: bytes = b"") -> bytes:
    return options("tcp", TransportAddress("tcp", "127.0.0.1", 5060), call_id, body).to_bytes()


def response_to(request: Request) -> Response:
    headers = [("Via", v) for v in request.headers.get_lines("Via")]
    headers += [(n, request.headers.get(n) or "") for n in ("From", "To", "Call-ID", "CSeq")]
    return Response(200, headers=headers)


async def within(awaitable: Awaitable[T], timeout: float = TIMEOUT) -> T:
    return await asyncio.wait_for(awaitable, timeout)


async def until(predicate: Callable[[], bool]) -> None:
    """Yield to the event loop until ``predicate()`` holds (wrap in :func:`within`)."""
    while not predicate():
        await asyncio.sleep(0)


class Recorder:
    """Collects what a TransportManager reports; optionally answers requests with 200."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[tuple[Any, TransportAddress, TransportAddress]] = (
            asyncio.Queue()
        )
        self.bad: asyncio.Queue[tuple[bytes | None, SIPParseError, TransportAddress]] = (
            asyncio.Queue()
        )
        self.send_errors: asyncio.Queue[tuple[TransportAddress, TransportError]] = asyncio.Queue()
        self.manager: TransportManager | None = None
        self.auto_reply = False

    def on_message(self, message: Any, source: TransportAddress, local: TransportAddress) -> None:
        self.messages.put_nowait((message, source, local))
        if self.auto_reply and isinstance(message, Request):
            assert self.manager is not None
            self.manager.send(response_to(message), source)

    def on_bad_message(
        self,
        data: bytes | None,
        error: SIPParseError,
        source: TransportAddress,
        local: TransportAddress,
    ) -> None:
        self.bad.put_nowait((data, error, source))

    def on_send_error(self, destination: TransportAddress, error: TransportError) -> None:
        self.send_errors.put_nowait((destination, error))


Factory = Callable[..., Awaitable[tuple[TransportManager, Recorder]]]


@pytest.fixture(autouse=True)
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Fail a test that leaves "Task exception was never retrieved" or similar loop errors."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    gc.collect()
    loop.set_exception_handler(previous)
    assert not errors, errors


@pytest.fixture
async def make_manager() -> AsyncIterator[Factory]:
    managers: list[TransportManager] = []

    async def factory(**kwargs: Any) -> tuple[TransportManager, Recorder]:
        recorder = Recorder()
        manager = await TransportManager.create(
            recorder.on_message,
            recorder.on_bad_message,
            on_send_error=recorder.on_send_error,
            **kwargs,
        )
        recorder.manager = manager
        managers.append(manager)
        return manager, recorder

    yield factory
    for manager in managers:
        await manager.close()
        assert not manager.connections


@pytest.fixture
async def raw_clients() -> AsyncIterator[list[asyncio.StreamWriter]]:
    writers: list[asyncio.StreamWriter] = []
    yield writers
    for writer in writers:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


@pytest.fixture(scope="module")
def certs() -> dict[str, tuple[bytes, bytes]]:
    names = ["127.0.0.1", "::1"]
    return {
        "server": make_self_signed("localhost", alt_names=names),
        "other": make_self_signed("localhost", alt_names=names),
        "client": make_self_signed("alice.example.com"),
    }


async def connect_raw(
    address: TransportAddress, writers: list[asyncio.StreamWriter]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(address.host, address.port)
    writers.append(writer)
    return reader, writer


async def assert_closed_by_peer(reader: asyncio.StreamReader) -> None:
    """The manager closed the connection: EOF (or a reset) within the timeout."""
    try:
        data = await within(reader.read())
    except ConnectionResetError:
        return
    assert data == b""


# -- UDP ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", HOSTS)
async def test_udp_options_round_trip(make_manager: Factory, host: str) -> None:
    alice, alice_rec = await make_manager()
    bob, bob_rec = await make_manager()
    bob_rec.auto_reply = True
    a_addr = await alice.listen("udp", host, 0)
    b_addr = await bob.listen("udp", host, 0)
    assert a_addr.port and b_addr.port and a_addr.host == host
    assert alice.local_address("udp", socket.AF_INET6 if ":" in host else 4) == a_addr
    assert alice.can_send("udp", 6 if ":" in host else 4)

    alice.send(options("udp", a_addr, "udp-1"), b_addr)

    request, source, local = await within(bob_rec.messages.get())
    assert isinstance(request, Request) and request.call_id == "udp-1"
    assert source == a_addr  # sent from the listener socket of the same family
    assert local == b_addr
    response, source, _ = await within(alice_rec.messages.get())
    assert isinstance(response, Response) and response.status == 200
    assert response.call_id == "udp-1"
    assert source == b_addr


async def test_udp_keepalives_and_binary_are_ignored(make_manager: Factory) -> None:
    bob, bob_rec = await make_manager()
    b_addr = await bob.listen("udp", "127.0.0.1", 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        for junk in (b"\r\n\r\n", b"\r\n", b"", b"\x00\x01\x00\x00!\x12\xa4B" + bytes(12)):
            s.sendto(junk, (b_addr.host, b_addr.port))
        # Leading CRLFs before a start line are allowed (RFC 3261 §7.5).
        s.sendto(b"\r\n" + raw_options("after-pings"), (b_addr.host, b_addr.port))
        message, source, _ = await within(bob_rec.messages.get())
        assert message.call_id == "after-pings"
        assert source == TransportAddress("udp", *s.getsockname())
    assert bob_rec.bad.empty()
    assert bob.stats.bad_messages == 0


async def test_bad_datagram_reported_with_400(make_manager: Factory) -> None:
    bob, bob_rec = await make_manager()
    b_addr = await bob.listen("udp", "127.0.0.1", 0)
    garbage = b"this is not SIP\r\nVia SIP/2.0/UDP x\r\n\r\n"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.sendto(garbage, (b_addr.host, b_addr.port))
        data, error, source = await within(bob_rec.bad.get())
        assert source == TransportAddress("udp", *s.getsockname())
    assert data == garbage
    assert error.status == 400
    assert bob_rec.messages.empty()


async def test_oversize_datagram_reported_with_513(make_manager: Factory) -> None:
    bob, bob_rec = await make_manager(max_message_size=1000)
    b_addr = await bob.listen("udp", "127.0.0.1", 0)
    big = raw_options("big", body=b"x" * 2000)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(big, (b_addr.host, b_addr.port))
        data, error, _ = await within(bob_rec.bad.get())
    assert data == big
    assert error.status == 513


async def test_udp_send_errors(make_manager: Factory) -> None:
    alice, alice_rec = await make_manager()
    await alice.listen("udp", "127.0.0.1", 0)
    assert not alice.can_send("udp", 6)
    v6 = TransportAddress("udp", "::1", 5060)
    with pytest.raises(TransportError, match="no IPv6 UDP listener"):
        await alice.send_async(b"x", v6)
    alice.send(b"x", TransportAddress("udp", "example.com", 5060))  # not resolved: refused
    destination, error = await within(alice_rec.send_errors.get())
    assert destination.host == "example.com"
    assert "IP address" in str(error)
    with pytest.raises(TransportError, match="no udp listener for family 6"):
        alice.local_address("udp", 6)


# -- TCP ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", HOSTS)
async def test_tcp_response_reuses_the_request_connection(make_manager: Factory, host: str) -> None:
    alice, alice_rec = await make_manager()
    bob, bob_rec = await make_manager()
    bob_rec.auto_reply = True
    a_addr = await alice.listen("tcp", host, 0)
    b_addr = await bob.listen("tcp", host, 0)

    for n in range(3):
        await alice.send_async(options("tcp", a_addr, f"tcp-{n}"), b_addr)
        request, source, local = await within(bob_rec.messages.get())
        assert request.call_id == f"tcp-{n}"
        assert source.transport == "tcp" and source.host == host
        assert local.port == b_addr.port
        response, r_source, _ = await within(alice_rec.messages.get())
        assert response.status == 200 and response.call_id == f"tcp-{n}"
        assert r_source == b_addr  # arrived over the connection alice opened

    # One connection each way: requests reuse it, responses go back over it (§18.2.2).
    assert alice.stats.connections_opened == 1
    assert bob.stats.connections_accepted == 1
    assert bob.stats.connections_opened == 0
    assert alice.connections == [b_addr]
    assert bob.connections == [source]


async def test_sends_queued_while_connecting_share_one_connection(make_manager: Factory) -> None:
    alice, alice_rec = await make_manager()
    bob, bob_rec = await make_manager()
    b_addr = await bob.listen("tcp", "127.0.0.1", 0)
    for n in range(5):  # send() returns at once; the bytes wait for the connection
        alice.send(raw_options(f"queued-{n}"), b_addr)
    assert alice.connections == [b_addr]
    for n in range(5):
        message, _, _ = await within(bob_rec.messages.get())
        assert message.call_id == f"queued-{n}"
    await asyncio.gather(*(alice.send_async(raw_options(f"c-{n}"), b_addr) for n in range(3)))
    assert sorted([(await within(bob_rec.messages.get()))[0].call_id for _ in range(3)]) == [
        "c-0",
        "c-1",
        "c-2",
    ]
    assert alice.stats.connections_opened == 1 and bob.stats.connections_accepted == 1
    assert alice_rec.send_errors.empty()


async def test_tcp_byte_by_byte_and_many_in_one_write(
    make_manager: Factory, raw_clients: list[asyncio.StreamWriter]
) -> None:
    bob, bob_rec = await make_manager()
    b_addr = await bob.listen("tcp", "127.0.0.1", 0)
    _, writer = await connect_raw(b_addr, raw_clients)

    for byte in raw_options("split", body=b"v=0\r\n"):
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0)  # let the manager read each byte on its own
    message, _, _ = await within(bob_rec.messages.get())
    assert message.call_id == "split" and message.body == b"v=0\r\n"

    writer.write(b"".join(raw_options(f"batch-{n}", body=b"abc" * n) for n in range(3)))
    for n in range(3):
        message, _, _ = await within(bob_rec.messages.get())
        assert message.call_id == f"batch-{n}" and message.body == b"abc" * n
    assert bob.stats.connections_accepted == 1
    assert bob_rec.bad.empty()


async def test_tcp_ping_answered_with_pong(
    make_manager: Factory, raw_clients: list[asyncio.StreamWriter]
) -> None:
    bob, bob_rec = await make_manager()
    b_addr = await bob.listen("tcp", "127.0.0.1", 0)
    reader, writer = await connect_raw(b_addr, raw_clients)
    writer.write(b"\r\n\r\n")
    assert await within(reader.readexactly(2)) == b"\r\n"
    # The connection stays usable, and a pong from the peer is no message.
    writer.write(b"\r\n" + raw_options("after-ping"))
    message, _, _ = await within(bob_rec.messages.get())
    assert message.call_id == "after-ping"
    assert bob_rec.bad.empty()


async def test_stream_framing_error_closes_connection(
    make_manager: Factory, raw_clients: list[asyncio.StreamWriter]
) -> None:
    bob, bob_rec = await make_manager()
    b_addr = await bob.listen("tcp", "127.0.0.1", 0)
    reader, writer = await connect_raw(b_addr, raw_clients)
    bad = raw_options("negative").replace(b"Content-Length: 0", b"Content-Length: -5")
    writer.write(bad)
    data, error, source = await within(bob_rec.bad.get())
    # the head is handed over so the UA can answer 400 before the connection closes
    assert data is not None and data.startswith(b"OPTIONS") and error.status == 400
    assert source.port == writer.get_extra_info("sockname")[1]
    await assert_closed_by_peer(reader)
    assert bob_rec.messages.empty()


async def test_stream_bad_message_keeps_connection(
    make_manager: Factory, raw_clients: list[asyncio.StreamWriter]
) -> None:
    """A message that is framed but malformed is reported; the stream goes on."""
    bob, bob_rec = await make_manager()
    b_addr = await bob.listen("tcp", "127.0.0.1", 0)
    _, writer = await connect_raw(b_addr, raw_clients)
    writer.write(b"NOT A VALID START LINE AT ALL\r\nContent-Length: 0\r\n\r\n")
    writer.write(raw_options("next"))
    _, error, _ = await within(bob_rec.bad.get())
    assert error.status == 400
    message, _, _ = await within(bob_rec.messages.get())
    assert message.call_id == "next"


async def test_stream_oversize_message_513_and_closed(
    make_manager: Factory, raw_clients: list[asyncio.StreamWriter]
) -> None:
    bob, bob_rec = await make_manager(max_message_size=1000)
    b_addr = await bob.listen("tcp", "127.0.0.1", 0)
    reader, writer = await connect_raw(b_addr, raw_clients)
    writer.write(raw_options("big", body=b"x" * 2000))
    data, error, _ = await within(bob_rec.bad.get())
    assert data is None and error.status == 513
    await assert_closed_by_peer(reader)


async def test_partial_message_closed_after_read_timeout(
    make_manager: Factory, raw_clients: list[asyncio.StreamWriter]
) -> None:
    bob, bob_rec = await make_manager(read_timeout=0.3)
    b_addr = await bob.listen("tcp", "127.0.0.1", 0)
    reader, writer = await connect_raw(b_addr, raw_clients)
    started = time.monotonic()
    writer.write(raw_options("partial", body=b"0123456789")[:-4])  # body incomplete
    await assert_closed_by_peer(reader)
    assert time.monotonic() - started >= 0.25
    assert bob_rec.messages.empty()


async def test_idle_connection_closed(
    make_manager: Factory, raw_clients: list[asyncio.StreamWriter]
) -> None:
    bob, bob_rec = await make_manager(idle_timeout=0.3)
    b_addr = await bob.listen("tcp", "127.0.0.1", 0)
    reader, writer = await connect_raw(b_addr, raw_clients)
    writer.write(raw_options("then-idle"))
    await within(bob_rec.messages.get())
    started = time.monotonic()
    await assert_closed_by_peer(reader)
    assert time.monotonic() - started >= 0.25
    assert bob.connections == []


async def test_max_connections_closes_least_recently_active(
    make_manager: Factory, raw_clients: list[asyncio.StreamWriter]
) -> None:
    bob, bob_rec = await make_manager(max_connections=2)
    b_addr = await bob.listen("tcp", "127.0.0.1", 0)
    readers = []
    for n in range(3):
        reader, writer = await connect_raw(b_addr, raw_clients)
        writer.write(raw_options(f"conn-{n}"))
        await within(bob_rec.messages.get())  # accepted and active, in this order
        readers.append(reader)
    await assert_closed_by_peer(readers[0])
    assert len(bob.connections) == 2


async def test_connection_refused(make_manager: Factory, free_port: Callable[..., int]) -> None:
    alice, alice_rec = await make_manager()
    destination = TransportAddress("tcp", "127.0.0.1", free_port("tcp"))
    with pytest.raises(TransportError, match="cannot connect"):
        await alice.send_async(raw_options("refused"), destination)
    alice.send(raw_options("refused-2"), destination)
    failed, error = await within(alice_rec.send_errors.get())
    assert failed == destination
    assert isinstance(error, TransportError)
    assert alice.connections == []
    assert alice.stats.connect_failures == 2


async def test_peer_that_does_not_read_is_dropped(make_manager: Factory) -> None:
    writers: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda _r, w: writers.append(w), "127.0.0.1", 0)
    destination = TransportAddress("tcp", "127.0.0.1", server.sockets[0].getsockname()[1])
    try:
        alice, _ = await make_manager(max_buffer=64 * 1024)
        chunk = b"x" * 60_000
        with pytest.raises(TransportError, match="does not read"):
            for _ in range(5000):  # the kernel's socket buffers fill first
                await alice.send_async(chunk, destination)
        await within(until(lambda: not alice.connections))
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_send_after_peer_closed_opens_new_connection(make_manager: Factory) -> None:
    alice, _ = await make_manager()
    bob, bob_rec = await make_manager()
    b_addr = await bob.listen("tcp", "127.0.0.1", 0)
    await alice.send_async(raw_options("first"), b_addr)
    _, source, _ = await within(bob_rec.messages.get())
    assert bob.close_connection(source)
    await within(until(lambda: not alice.connections))  # alice sees the close
    await alice.send_async(raw_options("second"), b_addr)
    message, _, _ = await within(bob_rec.messages.get())
    assert message.call_id == "second"
    assert alice.stats.connections_opened == 2


async def test_listen_all_same_port(make_manager: Factory, certs: dict) -> None:
    bob, _ = await make_manager()
    ctx = server_context(*certs["server"])
    udp, tcp, tls = await bob.listen_all("127.0.0.1", 0, ctx)
    assert (udp.transport, tcp.transport, tls.transport) == ("udp", "tcp", "tls")
    assert udp.port == tcp.port and tls.port not in (0, udp.port)
    assert bob.listeners == [udp, tcp, tls]
    assert bob.local_address("tls") == tls
    assert bob.can_send("tcp") and bob.can_send("tls")


# -- TLS ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", HOSTS)
async def test_tls_round_trip_verified(make_manager: Factory, certs: dict, host: str) -> None:
    server_cert, server_key = certs["server"]
    alice, alice_rec = await make_manager(tls_client_context=client_context(cadata=server_cert))
    bob, bob_rec = await make_manager()
    bob_rec.auto_reply = True
    b_addr = await bob.listen("tls", host, 0, server_context(server_cert, server_key))

    # The client verifies the chain and the IP address against the certificate's SANs.
    await alice.send_async(options("tls", b_addr, "tls-1"), b_addr)
    request, source, _ = await within(bob_rec.messages.get())
    assert request.call_id == "tls-1" and source.transport == "tls"
    response, r_source, _ = await within(alice_rec.messages.get())
    assert response.status == 200 and r_source == b_addr
    assert alice.peer_certificate(b_addr) == certificate_der(server_cert)
    assert bob.peer_certificate(source) is None  # no client certificate asked for
    assert bob.stats.connections_accepted == 1


async def test_tls_mutual_peer_certificate(make_manager: Factory, certs: dict) -> None:
    server_cert, server_key = certs["server"]
    client_cert, client_key = certs["client"]
    alice, _ = await make_manager(
        tls_client_context=client_context(
            cadata=server_cert, cert_pem=client_cert, key_pem=client_key
        )
    )
    bob, bob_rec = await make_manager()
    ctx = server_context(
        server_cert, server_key, client_cadata=client_cert, require_client_cert=True
    )
    b_addr = await bob.listen("tls", "127.0.0.1", 0, ctx)
    await alice.send_async(raw_options("mtls"), b_addr)
    _, source, _ = await within(bob_rec.messages.get())
    assert bob.peer_certificate(source) == certificate_der(client_cert)


async def test_tls_ed25519_certificate(make_manager: Factory) -> None:
    cert, key = make_self_signed("127.0.0.1", ed25519.Ed25519PrivateKey.generate())
    alice, _ = await make_manager(tls_client_context=client_context(cadata=cert))
    bob, bob_rec = await make_manager()
    b_addr = await bob.listen("tls", "127.0.0.1", 0, server_context(cert, key))
    await alice.send_async(raw_options("ed25519"), b_addr)
    message, _, _ = await within(bob_rec.messages.get())
    assert message.call_id == "ed25519"
    assert alice.peer_certificate(b_addr) == certificate_der(cert)


async def test_tls_verification_failure(make_manager: Factory, certs: dict) -> None:
    alice, alice_rec = await make_manager(
        tls_client_context=client_context(cadata=certs["other"][0])
    )
    bob, bob_rec = await make_manager()
    b_addr = await bob.listen("tls", "127.0.0.1", 0, server_context(*certs["server"]))

    with pytest.raises(TransportError, match="certificate verify failed"):
        await alice.send_async(raw_options("untrusted"), b_addr)
    alice.send(raw_options("untrusted-2"), b_addr)
    destination, error = await within(alice_rec.send_errors.get())
    assert destination == b_addr
    assert "certificate verify failed" in str(error)
    assert bob_rec.messages.empty()
    assert alice.peer_certificate(b_addr) is None

    # Without verification (legacy peers, or keys pinned after the handshake) it works.
    alice.tls_client_context = client_context(verify=False)
    await alice.send_async(raw_options("unverified"), b_addr)
    message, _, _ = await within(bob_rec.messages.get())
    assert message.call_id == "unverified"
    assert alice.peer_certificate(b_addr) == certificate_der(certs["server"][0])


async def test_close_stops_pending_handshake(make_manager: Factory) -> None:
    """A TLS peer that never answers the handshake: close() ends the attempt quietly."""
    accepted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    writers: list[asyncio.StreamWriter] = []

    def mute(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        if not accepted.done():
            accepted.set_result(None)

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        alice, alice_rec = await make_manager(tls_client_context=client_context(verify=False))
        alice.send(raw_options("stuck"), TransportAddress("tls", "127.0.0.1", port))
        await within(accepted)
        assert len(alice.connections) == 1
        await within(alice.close())
        assert alice.connections == []
        assert alice_rec.send_errors.empty()
        assert not alice.can_send("tcp")
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()
