"""ICE and plain UDP media transports on loopback (real sockets), plus TURN through coturn.

``IceTransport(host_addresses=["127.0.0.1"])`` is how loopback host candidates are obtained
(aioice skips loopback in its own interface listing). coturn (Debian ``coturn``) is started per
test on free ports and stopped by PID; without it the TURN tests skip (fail under CI=true).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path

import aioice.ice
import aioice.stun
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psip.errors import P2PSIPError
from p2psip.media.aio.ice import (
    Candidate,
    CandidateError,
    DatagramTransport,
    IceError,
    IceFailedError,
    IceTimeoutError,
    IceTransport,
    MediaTransportError,
    PlainUdpTransport,
    TransportClosedError,
    format_candidate,
    parse_candidate,
)
from tests.conftest import ManagedProcess, ProcessFactory

LOOPBACK = ["127.0.0.1"]


def _ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def exchange_candidates(a: IceTransport, b: IceTransport, *, end: bool = True) -> None:
    """Signal credentials and candidates both ways, as two SDP bodies would."""
    a.set_remote_credentials(b.local_username, b.local_password)
    b.set_remote_credentials(a.local_username, a.local_password)
    for candidate in b.local_candidates:
        assert await a.add_remote_candidate(format_candidate(candidate))
    for candidate in a.local_candidates:
        assert await b.add_remote_candidate(format_candidate(candidate))
    if end:
        await a.end_of_candidates()
        await b.end_of_candidates()


async def ping_pong(a: DatagramTransport, b: DatagramTransport, count: int = 20) -> None:
    for i in range(count):
        await a.send(b"a->b %d" % i)
        assert await asyncio.wait_for(b.recv(), 2) == b"a->b %d" % i
        await b.send(b"b->a %d" % i)
        assert await asyncio.wait_for(a.recv(), 2) == b"b->a %d" % i


# ---------------------------------------------------------------------------------------------
# a=candidate values (no sockets)
# ---------------------------------------------------------------------------------------------


def test_parse_candidate_host_and_relay() -> None:
    host = parse_candidate("a=candidate:1 1 UDP 2130706431 192.0.2.1 49170 typ host generation 0")
    assert (host.component, host.transport, host.priority) == (1, "udp", 2130706431)
    assert (host.host, host.port, host.type, host.generation) == ("192.0.2.1", 49170, "host", 0)
    relay = parse_candidate(
        "candidate:3 1 udp 16777215 2001:db8::5 3478 typ relay raddr 0.0.0.0 rport 9"
    )
    assert (relay.type, relay.related_address, relay.related_port) == ("relay", "0.0.0.0", 9)
    assert parse_candidate(format_candidate(relay)).to_sdp() == relay.to_sdp()


def test_parse_candidate_keeps_mdns_names_and_ignores_unknown_extensions() -> None:
    c = parse_candidate("1 1 udp 2122262783 1f4712db-ea17.local 54596 typ host network-cost 10")
    assert c.host == "1f4712db-ea17.local"


@pytest.mark.parametrize(
    "value",
    [
        "1 1 udp 2130706431 192.0.2.1 49170 host",  # no typ
        "1 1 udp 2130706431 192.0.2.1 49170 kind host",
        "1 0 udp 2130706431 192.0.2.1 49170 typ host",  # component 1..256
        "1 1 udp 0 192.0.2.1 49170 typ host",  # priority 1..2^31-1
        "1 1 udp 2147483648 192.0.2.1 49170 typ host",
        "1 1 udp 2130706431 192.0.2.1 65536 typ host",
        "1 1 udp 2130706431 example.com 49170 typ host",  # FQDN other than mDNS
        "1 1 udp 2130706431 999.0.2.1 49170 typ host",
        "1 1 udp 2130706431 192.0.2.1 49170 typ host raddr",  # dangling extension
        "1 1 udp 2130706431 192.0.2.1 49170 typ srflx raddr x rport 1",
        "fóó 1 udp 2130706431 192.0.2.1 49170 typ host",
        "",
    ],
)
def test_parse_candidate_refuses_malformed(value: str) -> None:
    with pytest.raises(CandidateError):
        parse_candidate(value)


@given(st.text(max_size=120))
@settings(max_examples=300, deadline=None)
def test_parse_candidate_random_text_raises_only_our_error(text: str) -> None:
    try:
        candidate = parse_candidate(text)
    except CandidateError as exc:
        assert isinstance(exc, P2PSIPError)
    else:
        assert parse_candidate(format_candidate(candidate)).to_sdp() == candidate.to_sdp()


# ---------------------------------------------------------------------------------------------
# ICE on loopback
# ---------------------------------------------------------------------------------------------


async def test_two_ice_transports_connect_and_exchange_both_ways() -> None:
    async with (
        IceTransport(controlling=True, host_addresses=LOOPBACK) as a,
        IceTransport(controlling=False, host_addresses=LOOPBACK) as b,
    ):
        assert isinstance(a, DatagramTransport)
        candidates = await a.gather()
        await b.gather()
        assert [(c.type, c.host) for c in candidates] == [("host", "127.0.0.1")]
        assert a.default_candidate is not None and a.default_candidate.host == "127.0.0.1"
        await exchange_candidates(a, b)
        started = time.monotonic()
        await asyncio.gather(a.connect(timeout=5), b.connect(timeout=5))
        assert time.monotonic() - started < 2
        assert a.connected and b.connected
        assert a.controlling and not b.controlling
        local, remote = a.selected_pair or (None, None)
        assert local is not None and remote is not None
        assert (local.port, remote.port) == (candidates[0].port, b.local_candidates[0].port)
        await ping_pong(a, b)
        assert a.stats.sent == 20 and a.stats.received == 20
    assert a.closed and b.closed
    with pytest.raises(TransportClosedError):
        await a.send(b"late")
    with pytest.raises(TransportClosedError):
        await b.recv()


async def test_trickled_candidates_arrive_while_connecting() -> None:
    async with (
        IceTransport(controlling=True, host_addresses=LOOPBACK) as a,
        IceTransport(controlling=False, host_addresses=LOOPBACK) as b,
    ):
        await a.gather()
        await b.gather()
        a.set_remote_credentials(b.local_username, b.local_password)
        b.set_remote_credentials(a.local_username, a.local_password)
        connecting = asyncio.gather(a.connect(timeout=5), b.connect(timeout=5))
        await asyncio.sleep(0.1)  # checks are running with no remote candidate yet
        assert not a.connected
        await a.add_remote_candidate(b.local_candidates[0])  # trickle (RFC 8838)
        await b.add_remote_candidate(a.local_candidates[0])
        await connecting
        await ping_pong(a, b, count=3)
        await a.end_of_candidates()
        with pytest.raises(IceError):
            await a.add_remote_candidate(b.local_candidates[0])


async def test_role_conflict_is_repaired() -> None:
    async with (
        IceTransport(controlling=True, host_addresses=LOOPBACK) as a,
        IceTransport(controlling=True, host_addresses=LOOPBACK) as b,
    ):
        await a.gather()
        await b.gather()
        await exchange_candidates(a, b)
        await asyncio.gather(a.connect(timeout=5), b.connect(timeout=5))
        assert a.controlling != b.controlling  # RFC 8445 §7.3.1.1: the tie-breaker decides
        await ping_pong(a, b, count=3)


async def test_connect_timeout_against_a_dead_peer_is_bounded(
    free_port: Callable[..., int],
) -> None:
    port = free_port("udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blackhole:
        blackhole.bind(("127.0.0.1", port))  # receives the checks, never answers
        a = IceTransport(controlling=True, host_addresses=LOOPBACK)
        await a.gather()
        a.set_remote_credentials("deadbeef", "x" * 22)
        await a.add_remote_candidate(f"1 1 udp 2130706431 127.0.0.1 {port} typ host")
        await a.end_of_candidates()
        started = time.monotonic()
        with pytest.raises(IceTimeoutError):
            await a.connect(timeout=0.8)
        elapsed = time.monotonic() - started
        assert 0.7 < elapsed < 1.5
        blackhole.settimeout(0)
        assert blackhole.recv(2048)  # the checks did reach the dead peer
    assert a.closed and "timed out" in a.close_reason
    with pytest.raises(TransportClosedError):
        await a.send(b"x")


async def test_connect_timeout_when_no_candidate_ever_arrives() -> None:
    a = IceTransport(controlling=False, host_addresses=LOOPBACK)
    await a.gather()
    a.set_remote_credentials("abcd", "y" * 22)
    started = time.monotonic()
    with pytest.raises(IceTimeoutError):  # trickle still open: would wait forever
        await a.connect(timeout=0.3)
    assert time.monotonic() - started < 1.0


async def test_no_remote_candidates_fails_at_once() -> None:
    a = IceTransport(controlling=True, host_addresses=LOOPBACK)
    await a.gather()
    a.set_remote_credentials("abcd", "y" * 22)
    await a.end_of_candidates()
    with pytest.raises(IceFailedError):
        await a.connect(timeout=5)
    assert a.closed


async def test_misuse_raises_clear_errors() -> None:
    async with IceTransport(controlling=True, host_addresses=LOOPBACK) as a:
        a.set_remote_credentials("abcd", "y" * 22)
        with pytest.raises(IceError, match="gather"):
            await a.connect()
        await a.gather()
        with pytest.raises(IceError, match="not connected"):
            await a.send(b"x")
        with pytest.raises(IceError, match="not connected"):
            await a.recv()
        with pytest.raises(CandidateError):
            await a.add_remote_candidate("not a candidate")
        assert not await a.add_remote_candidate("1 1 tcp 2130706431 127.0.0.1 9 typ host")
        assert not await a.add_remote_candidate("1 2 udp 2130706431 127.0.0.1 9 typ host")
    with pytest.raises(IceError):
        IceTransport(controlling=True, local_username="a b")
    with pytest.raises(ValueError):
        IceTransport(controlling=True, host_addresses=["localhost"])
    with pytest.raises(ValueError):
        IceTransport(controlling=True, relay_only=True)
    b = IceTransport(controlling=True, host_addresses=LOOPBACK)
    await b.gather()
    with pytest.raises(IceError, match="set_remote_credentials"):
        await b.connect()
    await b.close()


async def test_lost_consent_closes_the_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    # RFC 7675: consent checks every ~5 s, closed after 6 misses; aioice keeps these as module
    # constants, shrunk here for this test only (the first check is scheduled by connect()).
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.05)
    monkeypatch.setattr(aioice.stun, "RETRY_RTO", 0.05)
    a = IceTransport(controlling=True, host_addresses=LOOPBACK)
    b = IceTransport(controlling=False, host_addresses=LOOPBACK)
    await a.gather()
    await b.gather()
    await exchange_candidates(a, b)
    await asyncio.gather(a.connect(timeout=5), b.connect(timeout=5))
    await asyncio.sleep(0.3)  # several consent checks succeed while b is there
    assert not a.closed
    await ping_pong(a, b, count=2)
    receiving = asyncio.ensure_future(a.recv())
    await b.close()  # the peer vanishes without a word
    with pytest.raises(TransportClosedError):
        await asyncio.wait_for(receiving, 5)
    for _ in range(50):
        if a.closed:
            break
        await asyncio.sleep(0.02)
    assert a.closed and "consent" in a.close_reason
    with pytest.raises(TransportClosedError, match="consent"):
        await a.send(b"x")
    await a.close()


# ---------------------------------------------------------------------------------------------
# Plain UDP
# ---------------------------------------------------------------------------------------------


async def _udp_pair(host: str) -> tuple[PlainUdpTransport, PlainUdpTransport]:
    a = await PlainUdpTransport.create((host, 0))
    b = await PlainUdpTransport.create((host, 0), a.local_address)
    a.set_remote_address(b.local_address)
    return a, b


async def test_plain_udp_pair_ipv4() -> None:
    a, b = await _udp_pair("127.0.0.1")
    async with a, b:
        assert isinstance(a, DatagramTransport)
        await ping_pong(a, b)
        assert a.stats.sent == 20 and b.stats.received == 20


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no ::1 on this machine")
async def test_plain_udp_pair_ipv6() -> None:
    a, b = await _udp_pair("::1")
    async with a, b:
        assert a.local_address[0] == "::1"
        await ping_pong(a, b, count=5)
        with pytest.raises(ValueError, match="family"):
            a.set_remote_address(("127.0.0.1", 5000))


async def test_plain_udp_drops_datagrams_from_other_sources() -> None:
    a, b = await _udp_pair("127.0.0.1")
    async with a, b:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as intruder:
            intruder.bind(("127.0.0.1", 0))
            intruder.sendto(b"spoofed", a.local_address)
            await b.send(b"genuine")
            assert await asyncio.wait_for(a.recv(), 2) == b"genuine"
            for _ in range(50):
                if a.stats.dropped_foreign:
                    break
                await asyncio.sleep(0.01)
        assert a.stats.dropped_foreign == 1 and a.stats.received == 1


async def test_plain_udp_latches_to_the_first_source() -> None:
    # the signalled address is wrong (a NAT rewrote it): latching finds the real one
    a = await PlainUdpTransport.create(("127.0.0.1", 0), ("127.0.0.1", 9), latch=True)
    b = await PlainUdpTransport.create(("127.0.0.1", 0), a.local_address)
    async with a, b:
        assert not a.latched
        await b.send(b"first")
        assert await asyncio.wait_for(a.recv(), 2) == b"first"
        assert a.latched and a.remote_address == b.local_address
        await a.send(b"reply")
        assert await asyncio.wait_for(b.recv(), 2) == b"reply"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.sendto(b"late intruder", a.local_address)
            await b.send(b"second")
            assert await asyncio.wait_for(a.recv(), 2) == b"second"
        assert a.remote_address == b.local_address


async def test_plain_udp_queue_overflow_drops_the_oldest() -> None:
    a = await PlainUdpTransport.create(("127.0.0.1", 0), queue_size=4)
    b = await PlainUdpTransport.create(("127.0.0.1", 0), a.local_address)
    a.set_remote_address(b.local_address)
    async with a, b:
        for i in range(10):
            await b.send(b"%d" % i)
        for _ in range(100):
            if a.stats.received == 10:
                break
            await asyncio.sleep(0.01)
        assert a.stats.dropped_overflow == 6
        assert [await a.recv() for _ in range(4)] == [b"6", b"7", b"8", b"9"]


async def test_plain_udp_close_wakes_a_waiting_recv_and_send_needs_a_remote() -> None:
    a = await PlainUdpTransport.create(("127.0.0.1", 0))
    with pytest.raises(MediaTransportError, match="no remote"):
        await a.send(b"x")
    waiting = asyncio.ensure_future(a.recv())
    await asyncio.sleep(0.01)
    await a.close()
    with pytest.raises(TransportClosedError):
        await asyncio.wait_for(waiting, 1)
    with pytest.raises(TransportClosedError):
        await a.send(b"x")
    with pytest.raises(ValueError):
        await PlainUdpTransport.create(("localhost", 0))


# ---------------------------------------------------------------------------------------------
# STUN and TURN through coturn
# ---------------------------------------------------------------------------------------------

TURN_USER, TURN_PASSWORD, TURN_REALM = "alice", "alicepass", "example.test"


@pytest.fixture
def coturn(
    require_binary: Callable[[str], str],
    free_port: Callable[..., int],
    process_factory: ProcessFactory,
    tmp_path: Path,
) -> tuple[tuple[str, int], ManagedProcess]:
    """A coturn STUN/TURN server on 127.0.0.1 (UDP only, long-term credentials, verbose log)."""
    binary = require_binary("turnserver")
    port = free_port("udp")
    relay_low = free_port("udp", count=10)
    argv = [
        binary,
        "-n",  # no configuration file: everything is below
        "--verbose",
        "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1",
        f"--listening-port={port}",
        f"--min-port={relay_low}",
        f"--max-port={relay_low + 9}",
        f"--realm={TURN_REALM}",
        "--lt-cred-mech",
        f"--user={TURN_USER}:{TURN_PASSWORD}",
        "--fingerprint",
        "--allow-loopback-peers",  # coturn refuses to relay to 127.x otherwise
        "--no-multicast-peers",
        "--no-tcp",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "--no-rfc5780",
        "--simple-log",
        "--log-file=stdout",
        f"--pidfile={tmp_path / 'turnserver.pid'}",
        f"--userdb={tmp_path / 'turndb.sqlite'}",
    ]
    proc = process_factory(argv, name="turnserver")
    proc.wait_for_udp_port(port)
    return ("127.0.0.1", port), proc


async def test_stun_and_turn_candidates_from_coturn(
    coturn: tuple[tuple[str, int], ManagedProcess],
) -> None:
    server, _ = coturn
    async with IceTransport(
        controlling=True,
        host_addresses=LOOPBACK,
        stun_server=server,
        turn_server=server,
        turn_username=TURN_USER,
        turn_password=TURN_PASSWORD,
    ) as a:
        candidates = {c.type: c for c in await a.gather()}
        assert set(candidates) == {"host", "srflx", "relay"}
        host, srflx, relay = candidates["host"], candidates["srflx"], candidates["relay"]
        # no NAT on loopback: the reflexive address is the host address
        assert (srflx.host, srflx.port) == (host.host, host.port)
        assert (srflx.related_address, srflx.related_port) == (host.host, host.port)
        assert relay.host == "127.0.0.1" and relay.port != host.port
        assert a.default_candidate is relay  # lowest priority goes into m=/c=


async def test_relay_only_side_connects_through_coturn(
    coturn: tuple[tuple[str, int], ManagedProcess],
) -> None:
    server, proc = coturn
    async with (
        IceTransport(
            controlling=True,
            host_addresses=LOOPBACK,
            turn_server=server,
            turn_username=TURN_USER,
            turn_password=TURN_PASSWORD,
            relay_only=True,
        ) as a,
        IceTransport(controlling=False, host_addresses=LOOPBACK) as b,
    ):
        relay = await a.gather()
        await b.gather()
        assert [c.type for c in relay] == ["relay"]  # a's own address is never offered
        assert relay[0].related_address == "0.0.0.0"  # hidden (RFC 8839 §5.1)
        await exchange_candidates(a, b)
        await asyncio.gather(a.connect(timeout=5), b.connect(timeout=5))
        assert a.selected_pair is not None and a.selected_pair[0].type == "relay"
        assert b.selected_pair is not None
        assert b.selected_pair[1].port == relay[0].port  # b talks to coturn's relay port
        await ping_pong(a, b)
        log = proc.wait_for_log(r"ALLOCATE processed, success")
        assert log is not None
        assert f"Local relay addr: 127.0.0.1:{relay[0].port}" in proc.log_text()
        proc.wait_for_log(r"(CHANNEL_BIND|CREATE_PERMISSION) processed, success")


async def test_wrong_turn_password_gives_no_relay_candidate(
    coturn: tuple[tuple[str, int], ManagedProcess],
) -> None:
    server, proc = coturn
    async with IceTransport(
        controlling=True,
        host_addresses=LOOPBACK,
        turn_server=server,
        turn_username=TURN_USER,
        turn_password="wrong",
        relay_only=True,
        gather_timeout=2,
    ) as a:
        assert await a.gather() == []
    proc.wait_for_log(r"user <alice>.*error 401")


def test_candidate_type_is_reexported() -> None:
    assert Candidate is aioice.Candidate
