"""RFC 3263 resolution over real DNS on loopback: the in-process server and dnsmasq.

Both serve the zones of INTEROP_NOTES §10 (``example.test``: NAPTR TLS/TCP/UDP, SRV weights
60/40 and an IPv6 host at priority 20; ``srvonly.test``; ``aonly.test``). Where sofia-sip's
``sip-dig`` is installed, our order is compared with its order: sip-dig reads
``/etc/resolv.conf``, so it runs in a private network namespace whose
``/etc/netns/NAME/resolv.conf`` points to a dnsmasq on port 53 inside that namespace. The
system resolver is never used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from p2psip.errors import LocatorError, NotFound
from p2psip.locator.aio.dns import DNSLocator, DNSResolver
from p2psip.locator.rfc3263 import Target
from tests.conftest import ManagedProcess, free_port, register_process, require_binary
from tests.dnsserver import DNSServer

TIMEOUT = 1.0

INTEROP_ZONE = {
    "example.test": {
        "A": ["127.0.0.1"],
        "NAPTR": [
            '10 50 "s" "SIPS+D2T" "" _sips._tcp.example.test',
            '20 50 "s" "SIP+D2T" "" _sip._tcp.example.test',
            '30 50 "s" "SIP+D2U" "" _sip._udp.example.test',
        ],
    },
    "sip1.example.test": {"A": ["127.0.0.1"]},
    "sip2.example.test": {"A": ["127.0.0.2"]},
    "sip6.example.test": {"AAAA": ["::1"]},
    "_sips._tcp.example.test": {"SRV": ["10 100 5061 sip1.example.test"]},
    "_sip._tcp.example.test": {"SRV": ["10 100 5060 sip1.example.test"]},
    "_sip._udp.example.test": {
        "SRV": [
            "10 60 5060 sip1.example.test",
            "10 40 5060 sip2.example.test",
            "20 0 5060 sip6.example.test",
        ]
    },
    "srvonly.test": {"A": ["127.0.0.3"]},
    "_sip._udp.srvonly.test": {"SRV": ["0 0 5070 srvonly.test"]},
    "aonly.test": {"A": ["127.0.0.4"]},
}

# /work/shared/interop/dns/dnsmasq.conf with the port as a parameter (the same zone as above).
DNSMASQ_CONF = """\
port={port}
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
no-poll
no-negcache
local=/example.test/
log-queries
local-ttl=60
log-facility=-
host-record=sip1.example.test,127.0.0.1
host-record=sip2.example.test,127.0.0.2
host-record=sip6.example.test,::1
host-record=example.test,127.0.0.1
naptr-record=example.test,10,50,"s","SIPS+D2T","",_sips._tcp.example.test
naptr-record=example.test,20,50,"s","SIP+D2T","",_sip._tcp.example.test
naptr-record=example.test,30,50,"s","SIP+D2U","",_sip._udp.example.test
srv-host=_sips._tcp.example.test,sip1.example.test,5061,10,100
srv-host=_sip._tcp.example.test,sip1.example.test,5060,10,100
srv-host=_sip._udp.example.test,sip1.example.test,5060,10,60
srv-host=_sip._udp.example.test,sip2.example.test,5060,10,40
srv-host=_sip._udp.example.test,sip6.example.test,5060,20,0
host-record=srvonly.test,127.0.0.3
srv-host=_sip._udp.srvonly.test,srvonly.test,5070,0,0
local=/srvonly.test/
host-record=aonly.test,127.0.0.4
local=/aonly.test/
"""


def dnsmasq_argv(binary: str, conf: Path, pid_file: Path) -> list[str]:
    argv = [binary, "--keep-in-foreground", f"--conf-file={conf}", f"--pid-file={pid_file}"]
    if os.geteuid() == 0:
        argv.append("--user=root")  # stay root instead of switching to "nobody"
    return argv


@pytest.fixture(scope="module")
def dnsmasq(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, int]]:
    """A dnsmasq serving INTEROP_ZONE on 127.0.0.1 (a free UDP port); yields its address."""
    binary = require_binary("dnsmasq")
    directory = tmp_path_factory.mktemp("dnsmasq")
    port = free_port("both")
    conf = directory / "dnsmasq.conf"
    conf.write_text(DNSMASQ_CONF.format(port=port))
    process = ManagedProcess(
        dnsmasq_argv(binary, conf, directory / "dnsmasq.pid"), directory / "dnsmasq.log"
    )
    register_process(request.node, process)
    process.start()
    try:
        process.wait_for_udp_port(port)
        yield ("127.0.0.1", port)
    finally:
        process.stop()


@pytest.fixture(params=["in-process", "dnsmasq"])
async def nameserver(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, int]]:
    """The address of a DNS server with INTEROP_ZONE: ours or dnsmasq."""
    if request.param == "dnsmasq":
        yield request.getfixturevalue("dnsmasq")
        return
    async with DNSServer(INTEROP_ZONE, port=free_port("udp")) as server:
        yield server.address


@pytest.fixture
async def zone_server() -> AsyncIterator[DNSServer]:
    async with DNSServer(INTEROP_ZONE, port=free_port("udp")) as server:
        yield server


def resolver_for(
    address: tuple[str, int],
    seed: int = 1,
    timeout: float = TIMEOUT,
    transports: tuple[str, ...] = ("udp", "tcp", "tls"),
) -> DNSResolver:
    return DNSResolver(
        nameservers=[address],
        timeout=timeout,
        rng=random.Random(seed),
        supported_transports=transports,
    )


def summary(targets: list[Target]) -> list[tuple[str, str, int]]:
    return [(t.transport, t.host, t.port) for t in targets]


# -- the §10 zones, on both servers ------------------------------------------------------------
async def test_example_test_failover_order(nameserver: tuple[str, int]) -> None:
    targets = await resolver_for(nameserver).resolve("sip:alice@example.test")
    assert summary(targets[:2]) == [("tls", "127.0.0.1", 5061), ("tcp", "127.0.0.1", 5060)]
    assert {(t.transport, t.host, t.port, t.priority, t.weight) for t in targets[2:4]} == {
        ("udp", "127.0.0.1", 5060, 10, 60),
        ("udp", "127.0.0.2", 5060, 10, 40),
    }
    assert summary(targets[4:]) == [("udp", "::1", 5060)]
    assert targets[4].priority == 20
    assert {t.ttl for t in targets} == {60}


async def test_srv_weights_60_40(nameserver: tuple[str, int]) -> None:
    resolver = resolver_for(nameserver, seed=2024, transports=("udp",))
    firsts = [(await resolver.resolve("sip:example.test"))[0].host for _ in range(300)]
    share = firsts.count("127.0.0.1") / len(firsts)
    assert 0.5 < share < 0.7, share  # weight 60 of 100


async def test_sips_uses_tls_only(nameserver: tuple[str, int]) -> None:
    targets = await resolver_for(nameserver).resolve("sips:bob@example.test")
    assert summary(targets) == [("tls", "127.0.0.1", 5061)]


async def test_srv_without_naptr(nameserver: tuple[str, int]) -> None:
    targets = await resolver_for(nameserver).resolve("sip:alice@srvonly.test")
    assert summary(targets) == [("udp", "127.0.0.3", 5070)]
    assert targets[0].srv_name == "_sip._udp.srvonly.test"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:aonly.test", ("udp", "127.0.0.4", 5060)),
        ("sips:aonly.test", ("tls", "127.0.0.4", 5061)),
    ],
)
async def test_address_only(
    nameserver: tuple[str, int], uri: str, expected: tuple[str, str, int]
) -> None:
    targets = await resolver_for(nameserver).resolve(uri)
    assert summary(targets) == [expected]
    assert targets[0].srv_name is None and targets[0].ttl == 60


async def test_unknown_name_is_not_found(nameserver: tuple[str, int]) -> None:
    with pytest.raises(NotFound, match=r"nope\.example\.test: NXDOMAIN"):
        await resolver_for(nameserver).resolve("sip:nope.example.test")


async def test_name_outside_the_zones_is_refused(nameserver: tuple[str, int]) -> None:
    with pytest.raises(LocatorError, match="server failure") as caught:
        await resolver_for(nameserver).resolve("sip:bob@elsewhere.invalid")
    assert not isinstance(caught.value, NotFound)  # a refusal proves nothing: not cacheable


async def test_explicit_port_and_transport(nameserver: tuple[str, int]) -> None:
    resolver = resolver_for(nameserver)
    assert summary(await resolver.resolve("sip:sip1.example.test:5080")) == [
        ("udp", "127.0.0.1", 5080)
    ]
    assert summary(await resolver.resolve("sip:sip6.example.test:5080;transport=tcp")) == [
        ("tcp", "::1", 5080)
    ]
    assert summary(await resolver.resolve("sip:example.test;transport=tcp")) == [
        ("tcp", "127.0.0.1", 5060)
    ]


async def test_resolve_sync(nameserver: tuple[str, int]) -> None:
    resolver = resolver_for(nameserver)
    # blocking call: run it in a thread so that the in-process server keeps answering
    targets = await asyncio.to_thread(resolver.resolve_sync, "sip:alice@srvonly.test")
    assert summary(targets) == [("udp", "127.0.0.3", 5070)]
    with pytest.raises(NotFound):
        await asyncio.to_thread(resolver.resolve_sync, "sip:nope.example.test")


async def test_dns_locator_contacts(nameserver: tuple[str, int]) -> None:
    locator = DNSLocator(resolver_for(nameserver))
    contacts = await locator.resolve("sips:bob@example.test")
    assert [(c.uri, c.source, c.priority) for c in contacts] == [
        ("sips:bob@127.0.0.1:5061;transport=tcp", "dns", 0)
    ]
    with pytest.raises(NotImplementedError):
        await locator.publish("sip:bob@example.test", contacts)
    await locator.close()


# -- what only the in-process server can show ----------------------------------------------
async def test_numeric_host_asks_nothing(zone_server: DNSServer) -> None:
    targets = await resolver_for(zone_server.address).resolve("sips:[::1]:5071")
    assert summary(targets) == [("tls", "::1", 5071)]
    assert zone_server.queries == []


async def test_explicit_port_asks_only_addresses(zone_server: DNSServer) -> None:
    await resolver_for(zone_server.address).resolve("sip:sip1.example.test:5080")
    assert zone_server.queries == [("sip1.example.test", "A"), ("sip1.example.test", "AAAA")]


async def test_glue_in_the_additional_section_is_used(zone_server: DNSServer) -> None:
    resolver = resolver_for(zone_server.address, transports=("udp",))
    await resolver.resolve("sip:example.test")
    assert zone_server.queries == [("example.test", "NAPTR"), ("_sip._udp.example.test", "SRV")]
    zone_server.glue = False
    zone_server.queries.clear()
    targets = await resolver.resolve("sip:example.test")
    assert len(targets) == 3
    assert ("sip6.example.test", "AAAA") in zone_server.queries


async def test_a_timeout_moves_on_to_the_next_step(zone_server: DNSServer) -> None:
    zone_server.drop.add(("_sips._tcp.example.test", "SRV"))
    resolver = resolver_for(zone_server.address, timeout=0.3)
    started = time.monotonic()
    targets = await resolver.resolve("sip:example.test")
    assert time.monotonic() - started >= 0.3
    assert [t.transport for t in targets] == ["tcp", "udp", "udp", "udp"]


async def test_servfail_on_naptr_falls_back_to_srv(zone_server: DNSServer) -> None:
    zone_server.servfail.add(("example.test", "NAPTR"))
    targets = await resolver_for(zone_server.address).resolve("sip:example.test")
    assert [t.transport for t in targets] == ["tls", "tcp", "udp", "udp", "udp"]
    assert [q for q in zone_server.queries if q[1] == "SRV"] == [
        ("_sips._tcp.example.test", "SRV"),
        ("_sip._tcp.example.test", "SRV"),
        ("_sip._udp.example.test", "SRV"),
    ]


async def test_silent_server_is_a_locator_error(zone_server: DNSServer) -> None:
    zone_server.silent = True
    resolver = resolver_for(zone_server.address, timeout=0.2)
    with pytest.raises(LocatorError, match=r"NAPTR example\.test: timeout") as caught:
        await resolver.resolve("sip:example.test")
    assert not isinstance(caught.value, NotFound)  # no answer proves nothing: not cacheable
    assert len(zone_server.queries) == 6  # NAPTR, 3 SRV, A, AAAA: each step tried once


async def test_unreachable_server_is_a_locator_error() -> None:
    resolver = resolver_for(("127.0.0.1", free_port("udp")), timeout=0.2)  # nothing listens
    with pytest.raises(LocatorError) as caught:
        await resolver.resolve("sip:example.test")
    assert not isinstance(caught.value, NotFound)


# -- sip-dig (sofia-sip) as the reference resolver -------------------------------------------
@dataclass
class SipDig:
    """sip-dig inside a private network namespace with its own dnsmasq on port 53."""

    ip: str
    namespace: str
    binary: str

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.ip, "netns", "exec", self.namespace, self.binary, *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def lines(self, *args: str) -> list[tuple[int, float, str, int, str]]:
        """``(rank, weight share, transport, port, host)`` per line of output."""
        done = self.run(*args)
        out = []
        for line in done.stdout.splitlines():
            fields = line.split()
            if len(fields) == 5 and fields[0].isdigit():
                rank, share, transport, port, host = fields
                out.append((int(rank), float(share), transport, int(port), host))
        return out


def _ip_binary() -> str | None:
    return shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin")


@pytest.fixture(scope="module")
def sip_dig(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SipDig]:
    sip_dig_binary = require_binary("sip-dig")
    dnsmasq_binary = require_binary("dnsmasq")
    ip = _ip_binary() or require_binary("ip")  # missing: a skip here, a failure under CI
    namespace = f"p2psip-dns-{os.getpid()}-{secrets.token_hex(3)}"
    added = subprocess.run([ip, "netns", "add", namespace], capture_output=True, text=True)
    if added.returncode != 0:
        pytest.skip(f"sip-dig comparison skipped: 'ip netns add' not permitted: {added.stderr}")
    etc = Path("/etc/netns") / namespace
    etc_parent_existed = etc.parent.exists()
    process: ManagedProcess | None = None
    try:
        try:
            subprocess.run([ip, "-n", namespace, "link", "set", "lo", "up"], check=True)
            etc.mkdir(parents=True)
            (etc / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        except (OSError, subprocess.CalledProcessError) as error:
            pytest.skip(f"sip-dig comparison skipped: cannot prepare the namespace: {error}")
        directory = tmp_path_factory.mktemp("sipdig")
        conf = directory / "dnsmasq.conf"
        conf.write_text(DNSMASQ_CONF.format(port=53))
        pid_file = directory / "dnsmasq.pid"
        process = ManagedProcess(
            [ip, "netns", "exec", namespace, *dnsmasq_argv(dnsmasq_binary, conf, pid_file)],
            directory / "dnsmasq-netns.log",
            name="dnsmasq-netns",
        )
        register_process(request.node, process)
        process.start()
        process.wait_for_log(r"started, version")
        dig = SipDig(ip, namespace, sip_dig_binary)
        deadline = time.monotonic() + 10
        while not dig.lines("--udp", "sip:aonly.test") and time.monotonic() < deadline:
            time.sleep(0.1)  # until dnsmasq answers inside the namespace
        yield dig
    finally:
        if process is not None:
            process.stop()
        subprocess.run([ip, "netns", "del", namespace], capture_output=True)
        shutil.rmtree(etc, ignore_errors=True)
        if not etc_parent_existed:
            with contextlib.suppress(OSError):  # only when empty: others may use it now
                etc.parent.rmdir()


def sip_dig_groups(lines: list[tuple[int, float, str, int, str]]) -> list[set[tuple]]:
    groups: dict[int, set[tuple]] = {}
    for rank, share, transport, port, host in lines:
        groups.setdefault(rank, set()).add((transport, port, host, round(share, 3)))
    return [groups[rank] for rank in sorted(groups)]


def our_groups(targets: list[Target]) -> list[set[tuple]]:
    """Targets grouped as sip-dig ranks them: one group per SRV record set and priority,
    with each target's share of the weight of its group (sip-dig's second column)."""
    runs: list[list[Target]] = []
    for target in targets:
        key = (target.srv_name, target.priority)
        if runs and (runs[-1][0].srv_name, runs[-1][0].priority) == key:
            runs[-1].append(target)
        else:
            runs.append([target])
    groups = []
    for run in runs:
        total = sum(t.weight for t in run)
        groups.append(
            {
                (
                    t.transport,
                    t.port,
                    t.host,
                    round(t.weight / total if total else 0.0 if t.srv_name else 1 / len(run), 3),
                )
                for t in run
            }
        )
    return groups


# (sip-dig arguments, URI, our transports, compare all groups or the common beginning)
# sip-dig stops at the first NAPTR order it can use, and tries UDP and TCP where RFC 3263
# names one transport (A-only domain, explicit port, numeric host): there a single-transport
# run is the deterministic comparison.
SIP_DIG_CASES = [
    (("--udp",), "sip:example.test", ("udp",), "all"),
    (("--tcp",), "sip:example.test", ("tcp",), "all"),
    (("--tls",), "sip:example.test", ("tls",), "all"),
    ((), "sip:example.test", ("udp", "tcp", "tls"), "prefix"),
    (("--udp", "--tcp"), "sip:example.test", ("udp", "tcp"), "prefix"),
    ((), "sips:example.test", ("udp", "tcp", "tls"), "all"),
    ((), "sip:example.test;transport=tcp", ("udp", "tcp", "tls"), "all"),
    ((), "sip:alice@srvonly.test", ("udp", "tcp", "tls"), "all"),
    (("--udp",), "sip:aonly.test", ("udp",), "all"),
    ((), "sips:aonly.test", ("udp", "tcp", "tls"), "all"),
    (("--udp",), "sip:sip1.example.test:5080", ("udp",), "all"),
    (("--udp",), "sip:sip6.example.test", ("udp",), "all"),
    (("--udp",), "sip:127.0.0.1", ("udp",), "prefix"),  # sip-dig adds TCP here regardless
]


@pytest.mark.interop
@pytest.mark.parametrize(
    ("args", "uri", "transports", "extent"),
    SIP_DIG_CASES,
    ids=[" ".join((*c[0], c[1])) for c in SIP_DIG_CASES],
)
async def test_order_matches_sip_dig(
    sip_dig: SipDig,
    dnsmasq: tuple[str, int],
    args: tuple[str, ...],
    uri: str,
    transports: tuple[str, ...],
    extent: str,
) -> None:
    reference = sip_dig_groups(await asyncio.to_thread(sip_dig.lines, *args, uri))
    assert reference, f"sip-dig {' '.join(args)} {uri} found nothing"
    ours = our_groups(await resolver_for(dnsmasq, transports=transports).resolve(uri))
    if extent == "all":
        assert ours == reference
    else:  # one list is the beginning of the other
        shorter = min(len(ours), len(reference))
        assert shorter >= 1
        assert ours[:shorter] == reference[:shorter]


@pytest.mark.interop
async def test_not_found_agrees_with_sip_dig(sip_dig: SipDig, dnsmasq: tuple[str, int]) -> None:
    done = await asyncio.to_thread(sip_dig.run, "sip:nope.example.test")
    assert done.returncode != 0 and "not found" in done.stdout + done.stderr
    with pytest.raises(NotFound):
        await resolver_for(dnsmasq).resolve("sip:nope.example.test")
