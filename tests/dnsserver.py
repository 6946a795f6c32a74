"""A tiny authoritative DNS server for tests, on dnspython (UDP, loopback only).

Zones come from a dict of owner name -> record type -> record texts (master-file syntax,
names absolute with or without the final dot)::

    ZONE = {
        "example.test": {
            "NAPTR": ['10 50 "s" "SIPS+D2T" "" _sips._tcp.example.test'],
            "A": ["127.0.0.1"],
        },
        "_sips._tcp.example.test": {"SRV": ["10 100 5061 sip1.example.test"]},
        "sip1.example.test": {"A": ["127.0.0.1"]},
    }
    async with DNSServer(ZONE, port=free_port("udp")) as server:
        resolver = DNSResolver(nameservers=[server.address])

Behaviour: authoritative answers (AA) inside its zones; A/AAAA glue of SRV targets in the
additional section (``glue=False`` turns it off); NXDOMAIN for unknown names (names with
records below them are empty non-terminals: NOERROR, no data); an SOA in the authority
section of negative answers; REFUSED outside its zones. Fault injection: add
``(name, rdtype)`` pairs to ``server.drop`` (no answer: a timeout) or ``server.servfail``;
``server.silent = True`` drops everything.
Every question is logged in ``server.queries`` as ``(name, rdtype)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = ["DNSServer", "ZoneData"]

ZoneData = Mapping[str, Mapping[str, Sequence[str]]]


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text.rstrip(".") + ".")


def _key(text: str) -> str:
    return text.rstrip(".").lower()


class DNSServer:
    """Serve ``records`` over UDP on ``host:port`` (``port=0``: any free port).

    Args:
        records: owner name -> record type -> list of record texts.
        host: loopback address to bind.
        port: UDP port; 0 picks one (read :attr:`port` after entering).
        zones: the zones served (apexes); by default the last two labels of every owner name.
        ttl: TTL of every record.
        glue: add A/AAAA of SRV targets to the additional section.
    """

    def __init__(
        self,
        records: ZoneData,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        zones: Iterable[str] | None = None,
        ttl: int = 60,
        glue: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.ttl = ttl
        self.glue = glue
        self.rrsets: dict[tuple[str, dns.rdatatype.RdataType], dns.rrset.RRset] = {}
        for owner, by_type in records.items():
            for rdtype_text, texts in by_type.items():
                rdtype = dns.rdatatype.from_text(rdtype_text)
                self.rrsets[(_key(owner), rdtype)] = dns.rrset.from_text_list(
                    _name(owner),
                    ttl,
                    dns.rdataclass.IN,
                    rdtype,
                    list(texts),
                    origin=dns.name.root,
                    relativize=False,
                )
        if zones is None:
            zones = {".".join(_key(owner).split(".")[-2:]) for owner in records}
        self.zones = sorted({_key(z) for z in zones}, key=len, reverse=True)
        self.owners = {owner for owner, _ in self.rrsets}
        #: every question received, as (name, rdtype text)
        self.queries: list[tuple[str, str]] = []
        #: (name, rdtype text) pairs left unanswered
        self.drop: set[tuple[str, str]] = set()
        #: (name, rdtype text) pairs answered with SERVFAIL
        self.servfail: set[tuple[str, str]] = set()
        #: answer nothing at all
        self.silent = False
        self._transport: asyncio.DatagramTransport | None = None

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` to give to a resolver."""
        return (self.host, self.port)

    # -- the answering logic (no I/O) ------------------------------------------------------

    def handle(self, wire: bytes) -> bytes | None:
        """The response to one query datagram, or None to stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if query.flags & dns.flags.QR:
            return None
        response = dns.message.make_response(query)
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            response.set_rcode(dns.rcode.NOTIMP)
            return response.to_wire()
        question = query.question[0]
        name = _key(question.name.to_text())
        rdtype = dns.rdatatype.RdataType(question.rdtype)
        asked = (name, dns.rdatatype.to_text(rdtype))
        self.queries.append(asked)
        if self.silent or asked in self.drop:
            return None
        if asked in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        zone = self._zone_of(name)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        response.flags |= dns.flags.AA
        rrset = self.rrsets.get((name, rdtype))
        if rrset is not None:
            response.answer.append(rrset)
            if rdtype == dns.rdatatype.SRV and self.glue:
                response.additional.extend(self._glue(rrset))
        else:
            if not self._exists(name):
                response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(self._soa(zone))
        return response.to_wire()

    def _zone_of(self, name: str) -> str | None:
        for zone in self.zones:
            if name == zone or name.endswith("." + zone):
                return zone
        return None

    def _exists(self, name: str) -> bool:
        return any(owner == name or owner.endswith("." + name) for owner in self.owners)

    def _glue(self, srv: dns.rrset.RRset) -> list[dns.rrset.RRset]:
        out = []
        for rdata in srv:
            target = _key(rdata.target.to_text())
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                rrset = self.rrsets.get((target, rdtype))
                if rrset is not None and rrset not in out:
                    out.append(rrset)
        return out

    def _soa(self, zone: str) -> dns.rrset.RRset:
        return dns.rrset.from_text(
            _name(zone),
            self.ttl,
            dns.rdataclass.IN,
            dns.rdatatype.SOA,
            f"ns.{zone}. hostmaster.{zone}. 1 3600 600 86400 {self.ttl}",
        )

    # -- asyncio ---------------------------------------------------------------------------

    async def __aenter__(self) -> DNSServer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, self.port)
        )
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: DNSServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.server.handle(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)
