"""Locating SIP servers (RFC 3263 §4, client side) without any I/O.

A :class:`Resolution` turns a SIP or SIPS URI into the ordered list of ``(transport, address,
port)`` a client tries in turn: the list order *is* the failover order (RFC 3263 §4.3). It never
touches the network. Like dnspython's ``dns.resolver._Resolution``, the business logic lives in
one object that a front end drives::

    resolution = Resolution(parse_sip_target("sip:alice@example.test"), rng=random.Random(7))
    while (query := resolution.next_query()) is not None:
        resolution.query_result(query, lookup(query))  # an Answer or a QueryFailure
    targets = resolution.result()

Queries are ``(qname, rdtype)`` pairs and answers are the small record classes of this module,
so the core depends on no DNS library; ``p2psip.locator.aio.dns`` drives it with dnspython.

The steps, as RFC 3263 §4.1/§4.2 give them:

* numeric host: no DNS, the port of the URI or the default port (§4.2);
* explicit port: A/AAAA of the host only;
* transport parameter: SRV for that transport only, then A/AAAA;
* otherwise NAPTR (services SIP+D2U, SIP+D2T, SIPS+D2T that we support; for SIPS only
  SIPS+D2T), sorted by order and preference, then SRV for every chosen service; without NAPTR,
  SRV for ``_sips._tcp``, ``_sip._tcp``, ``_sip._udp`` (those we support);
* SRV records ordered by priority, and by a weighted random draw within a priority
  (RFC 2782), from an injected :class:`random.Random`;
* A/AAAA of every SRV target, from the additional section when the server sent glue;
* no SRV records at all: A/AAAA of the domain with the default port of the transport.

A failed step (timeout, server failure) is skipped and the next one tried; the chain of TTLs
that led to each target is kept (:attr:`Target.ttl`) for a cache layer.
"""

from __future__ import annotations

import enum
import ipaddress
import random
import re
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from p2psip.errors import LocatorError

__all__ = [
    "DEFAULT_PORTS",
    "TRANSPORTS",
    "AddressRecord",
    "Answer",
    "NAPTRRecord",
    "Query",
    "QueryFailure",
    "QueryResult",
    "RdType",
    "Record",
    "Resolution",
    "SIPTarget",
    "SRVRecord",
    "Target",
    "order_srv_records",
    "parse_sip_target",
]

#: Transports this module knows how to locate (RFC 3263 §4.1), in lower case.
TRANSPORTS = ("udp", "tcp", "tls")
#: RFC 3261 §19.1.2: 5060 for UDP and TCP, 5061 for TLS.
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
#: NAPTR service field -> transport (RFC 3263 §4.1; the SCTP services are not supported).
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
#: transport -> SRV service prefix (RFC 3263 §4.1: TLS is looked up with "_sips").
SRV_PREFIXES = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}
#: RFC 3263 §4.1 (no NAPTR): the SRV services we try, in our order of preference.
SRV_FALLBACK_ORDER = ("tls", "tcp", "udp")
#: RFC 3263 §4.1: UDP for a SIP URI; TCP is the next best, then TLS.
SIP_DEFAULT_ORDER = ("udp", "tcp", "tls")
MAX_QUERIES = 32


class RdType(enum.StrEnum):
    """The DNS record types RFC 3263 uses."""

    NAPTR = "NAPTR"
    SRV = "SRV"
    A = "A"
    AAAA = "AAAA"


class Query(NamedTuple):
    """One DNS question the front end must ask.

    Attributes:
        qname: absolute domain name, lower case, without the trailing dot.
        rdtype: the record type asked for.
    """

    qname: str
    rdtype: RdType


@dataclass(frozen=True)
class NAPTRRecord:
    """A NAPTR record (RFC 3403 §4.1).

    Attributes:
        order: lower values are processed first.
        preference: order among records of equal ``order``.
        flags: ``"s"`` when the replacement names an SRV record set.
        service: e.g. ``"SIP+D2U"``.
        regexp: must be empty for RFC 3263.
        replacement: the next name to look up (an SRV name here).
        ttl: time to live in seconds.
        name: the owner name.
    """

    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str
    ttl: int
    name: str = ""


@dataclass(frozen=True)
class SRVRecord:
    """An SRV record (RFC 2782).

    Attributes:
        priority: lower values are tried first.
        weight: relative share of the selection among records of equal priority.
        port: the port of the service.
        target: the host name; ``"."`` (or empty) means "decidedly not available".
        ttl: time to live in seconds.
        name: the owner name, e.g. ``_sip._udp.example.com``.
    """

    priority: int
    weight: int
    port: int
    target: str
    ttl: int
    name: str = ""


@dataclass(frozen=True)
class AddressRecord:
    """An A or AAAA record: the address tells which.

    Attributes:
        address: an IPv4 or IPv6 address literal.
        ttl: time to live in seconds.
        name: the owner name.
    """

    address: str
    ttl: int
    name: str = ""


Record = NAPTRRecord | SRVRecord | AddressRecord


@dataclass(frozen=True)
class Answer:
    """A positive DNS answer.

    Attributes:
        records: the records of the answer section of the asked type (an empty tuple means
            "no data", like :attr:`QueryFailure.NO_DATA`).
        additional: records of the additional section (SRV and A/AAAA glue); they must carry
            their owner ``name``.
    """

    records: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()


class QueryFailure(enum.Enum):
    """Why a query produced no records."""

    NXDOMAIN = "NXDOMAIN"
    NO_DATA = "no data"
    TIMEOUT = "timeout"
    SERVFAIL = "server failure"  #: SERVFAIL, REFUSED or no usable name server


QueryResult = Answer | QueryFailure | Sequence[Record]


@dataclass(frozen=True)
class Target:
    """One place to send a request to, in failover order.

    Attributes:
        transport: ``"udp"``, ``"tcp"`` or ``"tls"``.
        host: an IP address literal (IPv6 without brackets).
        port: the port.
        priority: the SRV priority (0 when no SRV record was used).
        weight: the SRV weight (0 when no SRV record was used).
        hostname: the name whose A/AAAA record gave ``host``; None for a numeric URI host.
        srv_name: the SRV owner name the target came from; None when no SRV record was used.
        ttl: the smallest TTL of the records that led here (NAPTR, SRV, A/AAAA); None when
            no DNS was used.
    """

    transport: str
    host: str
    port: int
    priority: int = 0
    weight: int = 0
    hostname: str | None = None
    srv_name: str | None = None
    ttl: int | None = None


# -- the URI ---------------------------------------------------------------------------------

_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_.])?\Z")


@dataclass(frozen=True)
class SIPTarget:
    """The parts of a SIP or SIPS URI that RFC 3263 looks at.

    Attributes:
        host: host name or IP address literal (IPv6 without brackets).
        scheme: ``"sip"`` or ``"sips"``.
        port: the explicit port, None when absent.
        transport: the ``transport`` URI parameter in lower case, None when absent.
        maddr: the ``maddr`` URI parameter, None when absent.
        user: the user part, None when absent (not used for resolution).
    """

    host: str
    scheme: str = "sip"
    port: int | None = None
    transport: str | None = None
    maddr: str | None = None
    user: str | None = None

    @property
    def destination(self) -> str:
        """RFC 3263 §4: TARGET is the maddr parameter when present, else the host."""
        return _normalize_host(self.maddr or self.host)

    @property
    def numeric(self) -> bool:
        """True when :attr:`destination` is an IP address literal."""
        return _is_ip(self.destination)

    @property
    def secure(self) -> bool:
        """True for a SIPS URI."""
        return self.scheme == "sips"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        text = f"{self.scheme}:{self.user + '@' if self.user else ''}{host}"
        if self.port is not None:
            text += f":{self.port}"
        if self.transport:
            text += f";transport={self.transport}"
        if self.maddr:
            text += f";maddr={self.maddr}"
        return text


def parse_sip_target(uri: str) -> SIPTarget:
    """Take scheme, user, host, port and the transport and maddr parameters from a URI.

    Only what RFC 3263 needs is parsed: ``<sip:alice@example.com:5070;transport=tcp>`` (angle
    brackets allowed); other parameters and headers are ignored.

    Args:
        uri: a ``sip:`` or ``sips:`` URI.

    Returns:
        The :class:`SIPTarget`.

    Raises:
        LocatorError: for another scheme or a malformed host or port.
    """
    text = uri.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ("sip", "sips"):
        raise LocatorError(f"not a SIP or SIPS URI: {uri!r}")
    rest = rest.partition("?")[0]  # headers
    user, at, hostpart = rest.rpartition("@")  # parameters cannot hold an unescaped "@"
    hostport, *params = hostpart.split(";")
    host, port = _split_hostport(hostport, uri)
    transport = maddr = None
    for param in params:
        name, _, value = param.partition("=")
        name = name.strip().lower()
        if name == "transport" and value:
            transport = value.strip().lower()
        elif name == "maddr" and value:
            maddr = _normalize_host(value.strip())
            if not (_is_ip(maddr) or _HOSTNAME_RE.match(maddr)):
                raise LocatorError(f"bad maddr in SIP URI {uri!r}")
    return SIPTarget(
        host=host,
        scheme=scheme,
        port=port,
        transport=transport,
        maddr=maddr,
        user=(user or None) if at else None,
    )


def _split_hostport(hostport: str, uri: str) -> tuple[str, int | None]:
    port_text = ""
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise LocatorError(f"bad IPv6 reference in SIP URI {uri!r}")
        port_text = after[1:]
        if not _is_ip(host) or ":" not in host:
            raise LocatorError(f"bad IPv6 reference in SIP URI {uri!r}")
    else:
        host, _, port_text = hostport.partition(":")
        if not (_is_ip(host) or _HOSTNAME_RE.match(host)):
            raise LocatorError(f"bad host in SIP URI {uri!r}")
    port: int | None = None
    if port_text or hostport.endswith(":"):
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise LocatorError(f"bad port in SIP URI {uri!r}")
        port = int(port_text)
    return _normalize_host(host), port


def _normalize_host(host: str) -> str:
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return _normalize_name(host)


def _normalize_name(name: str) -> str:
    return name.rstrip(".").lower()


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# -- RFC 2782 ordering -----------------------------------------------------------------------


def order_srv_records(records: Iterable[SRVRecord], rng: random.Random) -> list[SRVRecord]:
    """Order SRV records for use (RFC 2782, "Usage rules").

    Lower priorities come first. Within a priority, records are drawn one at a time, each with
    a probability proportional to its weight; a weight-0 record gets a small chance ahead of
    the others (it is placed first and chosen only when the draw is 0). Identical records
    count once. The input order does not matter, so a seeded ``rng`` repeats the result.

    Args:
        records: the SRV records of one name.
        rng: the source of the random draws.

    Returns:
        The records in the order to try them.
    """
    unique = sorted(
        set(records), key=lambda r: (r.priority, r.weight != 0, r.target, r.port, r.weight)
    )
    ordered: list[SRVRecord] = []
    for priority in sorted({r.priority for r in unique}):
        group = [r for r in unique if r.priority == priority]
        while group:
            # RFC 2782: a random number between 0 and the sum of the weights (inclusive);
            # the first record whose running sum is >= that number is next.
            draw = rng.randint(0, sum(r.weight for r in group))
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= draw:
                    ordered.append(group.pop(index))
                    break
    return ordered


# -- the resolution --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Service:
    """One transport to look up by SRV (from NAPTR or from the §4.1 fallback)."""

    transport: str
    srv_name: str
    ttl: int | None = None  # the NAPTR record's TTL


_Steps = Generator[Query, QueryResult, None]


class Resolution:
    """The RFC 3263 §4 resolution of one URI, driven by a front end that does the DNS I/O.

    Call :meth:`next_query`, answer it with :meth:`query_result`, repeat until
    :meth:`next_query` returns None, then read :meth:`result`. One query is outstanding at a
    time; asking again before answering returns the same query.

    Args:
        target: the URI to resolve, parsed (see :func:`parse_sip_target`) or as text.
        supported_transports: the transports the client can use; others are never chosen.
        rng: source of the RFC 2782 weighted draws (seed it in tests).
        address_types: the address record types to look up for a host, in order of
            preference (``(RdType.A, RdType.AAAA)``: IPv4 first).
        max_queries: upper bound on the DNS queries of this resolution; when it is reached
            the resolution ends with the targets found so far.

    Raises:
        LocatorError: when ``target`` is text that is not a SIP or SIPS URI.
    """

    def __init__(
        self,
        target: SIPTarget | str,
        *,
        supported_transports: Sequence[str] = TRANSPORTS,
        rng: random.Random | None = None,
        address_types: Sequence[RdType | str] = (RdType.A, RdType.AAAA),
        max_queries: int = MAX_QUERIES,
    ) -> None:
        self.target = parse_sip_target(target) if isinstance(target, str) else target
        self.supported_transports = tuple(t.lower() for t in supported_transports)
        unknown = set(self.supported_transports) - set(TRANSPORTS)
        if unknown:
            raise ValueError(f"unsupported transports {sorted(unknown)}; known: {TRANSPORTS}")
        self.address_types = tuple(RdType(t) for t in address_types)
        if not self.address_types or not set(self.address_types) <= {RdType.A, RdType.AAAA}:
            raise ValueError("address_types must be A and/or AAAA")
        self.max_queries = max_queries
        self._rng = rng if rng is not None else random.Random()
        #: queries answered so far, with their results
        self.queries: list[tuple[Query, Answer | QueryFailure]] = []
        #: queries that gave no records, and why
        self.failures: list[tuple[Query, QueryFailure]] = []
        #: a reason that needs no DNS (no usable transport, ...), or None
        self.problem: str | None = None
        #: True when :attr:`max_queries` cut the resolution short
        self.query_limit_reached = False
        self._answers: dict[Query, Answer | QueryFailure] = {}
        self._glue: dict[Query, list[Record]] = {}
        self._targets: list[Target] = []
        self._seen: set[tuple[str, str, int]] = set()
        self._steps: _Steps | None = None
        self._pending: Query | None = None
        self._done = False

    # -- driving API ---------------------------------------------------------------------

    def next_query(self) -> Query | None:
        """The DNS question to ask next, or None when the resolution is finished."""
        if self._steps is None:
            self._steps = self._resolve()
            self._advance(None)
        return self._pending

    def query_result(self, query: Query, result: QueryResult) -> None:
        """Hand in the outcome of ``query``.

        Args:
            query: the query returned by :meth:`next_query`.
            result: an :class:`Answer`, a sequence of records (an answer without additional
                section) or a :class:`QueryFailure`.

        Raises:
            ValueError: when ``query`` is not the outstanding query.
        """
        if self._pending is None or query != self._pending:
            raise ValueError(f"{query!r} is not the outstanding query ({self._pending!r})")
        if not isinstance(result, Answer | QueryFailure):
            result = Answer(records=tuple(result))
        if isinstance(result, Answer) and not result.records:
            result = QueryFailure.NO_DATA
        self.queries.append((query, result))
        self._advance(result)

    @property
    def done(self) -> bool:
        """True once :meth:`next_query` has returned None."""
        return self._done

    def result(self) -> list[Target]:
        """The targets in failover order (empty when nothing was found).

        Raises:
            RuntimeError: when the resolution is not finished.
        """
        if not self._done:
            raise RuntimeError("the resolution is not finished: call next_query() first")
        return list(self._targets)

    @property
    def ttl(self) -> int | None:
        """The smallest TTL over the targets found (None: no DNS used or nothing found)."""
        ttls = [t.ttl for t in self._targets if t.ttl is not None]
        return min(ttls) if ttls else None

    def describe_failure(self) -> str:
        """A one-line explanation of an empty result, for error messages."""
        if self.problem:
            return self.problem
        parts = [f"{q.rdtype} {q.qname}: {reason.value}" for q, reason in self.failures[:8]]
        if len(self.failures) > 8:
            parts.append(f"... {len(self.failures) - 8} more")
        if self.query_limit_reached:
            parts.append(f"query limit of {self.max_queries} reached")
        return "; ".join(parts) or "no usable records"

    def _advance(self, result: QueryResult | None) -> None:
        assert self._steps is not None
        try:
            self._pending = next(self._steps) if result is None else self._steps.send(result)
        except StopIteration:
            self._pending = None
            self._done = True

    # -- the algorithm -------------------------------------------------------------------

    def _resolve(self) -> _Steps:
        target = self.target
        host = target.destination
        transport = self._uri_transport()
        if transport is None:
            return
        if target.numeric:
            # RFC 3263 §4.2: a numeric TARGET is used as is, with the URI port or the default.
            port = target.port or DEFAULT_PORTS[transport]
            self._add(Target(transport, host, port))
            return
        if target.port is not None:
            # RFC 3263 §4.2: an explicit port means A/AAAA only.
            yield from self._add_host(host, transport, target.port)
            return
        naptr_services: list[_Service] = []
        if target.transport is not None:
            # RFC 3263 §4.2: a transport given explicitly is looked up by SRV directly.
            services = [_Service(transport, f"{SRV_PREFIXES[transport]}.{host}")]
        else:
            services = naptr_services = yield from self._naptr_services(host)
            if not services:
                # RFC 3263 §4.1: without NAPTR, SRV queries for the transports we support.
                prefer = ("tls",) if target.secure else SRV_FALLBACK_ORDER
                services = [
                    _Service(t, f"{SRV_PREFIXES[t]}.{host}")
                    for t in prefer
                    if t in self.supported_transports
                ]
        srv_found = False
        for service in services:
            records = yield from self._srv_records(service.srv_name)
            srv_found |= bool(records)
            for srv in order_srv_records(records, self._rng):
                if srv.target in ("", "."):
                    continue  # RFC 2782: "decidedly not available at this domain"
                yield from self._add_host(
                    _normalize_name(srv.target),
                    service.transport,
                    srv.port,
                    srv=srv,
                    chain_ttl=_min_ttl(service.ttl, srv.ttl),
                    srv_name=service.srv_name,
                )
        if not srv_found:
            # RFC 3263 §4.2: no SRV records: A/AAAA of the domain, default port, with the
            # transport NAPTR chose or else the one of §4.1.
            first = naptr_services[0] if naptr_services else _Service(transport, "")
            yield from self._add_host(
                host, first.transport, DEFAULT_PORTS[first.transport], chain_ttl=first.ttl
            )

    def _uri_transport(self) -> str | None:
        """RFC 3263 §4.1: the transport parameter, or the default transport of the scheme."""
        target = self.target
        requested = target.transport
        if requested is not None:
            if target.secure:
                # RFC 3261 §26.2.2 / RFC 5630: SIPS runs over TLS on a reliable transport.
                if requested == "udp":
                    self.problem = f"{target}: transport=udp is not allowed with SIPS"
                    return None
                if requested == "tcp":
                    requested = "tls"
            if requested not in TRANSPORTS:
                self.problem = f"{target}: transport {requested!r} is not supported"
                return None
            if requested not in self.supported_transports:
                self.problem = f"{target}: transport {requested!r} is not enabled"
                return None
            return requested
        # RFC 3263 §4.1: UDP for a SIP URI, TCP (TLS) for a SIPS URI.
        for candidate in ("tls",) if target.secure else SIP_DEFAULT_ORDER:
            if candidate in self.supported_transports:
                return candidate
        self.problem = f"{target}: none of the enabled transports can reach a {target.scheme} URI"
        return None

    def _naptr_services(self, host: str) -> Generator[Query, QueryResult, list[_Service]]:
        """RFC 3263 §4.1: the usable NAPTR records of ``host``, in order."""
        result = yield from self._lookup(Query(host, RdType.NAPTR))
        if isinstance(result, QueryFailure):
            return []
        usable: list[NAPTRRecord] = []
        for record in result.records:
            if not isinstance(record, NAPTRRecord):
                continue
            service = record.service.upper()
            transport = NAPTR_SERVICES.get(service)
            if (
                record.flags.lower() != "s"  # only terminal lookups leading to SRV
                or record.regexp
                or record.replacement in ("", ".")
                or transport not in self.supported_transports
                or (self.target.secure and not service.startswith("SIPS+"))
            ):
                continue
            usable.append(record)
        usable.sort(key=lambda r: (r.order, r.preference, r.service.upper(), r.replacement))
        services: list[_Service] = []
        for record in usable:
            transport = NAPTR_SERVICES[record.service.upper()]
            name = _normalize_name(record.replacement)
            if all(s.srv_name != name or s.transport != transport for s in services):
                services.append(_Service(transport, name, record.ttl))
        return services

    def _srv_records(self, name: str) -> Generator[Query, QueryResult, list[SRVRecord]]:
        query = Query(name, RdType.SRV)
        glue = [r for r in self._glue.get(query, []) if isinstance(r, SRVRecord)]
        if glue:
            return glue
        result = yield from self._lookup(query)
        if isinstance(result, QueryFailure):
            return []
        return [r for r in result.records if isinstance(r, SRVRecord)]

    def _add_host(
        self,
        hostname: str,
        transport: str,
        port: int,
        *,
        srv: SRVRecord | None = None,
        chain_ttl: int | None = None,
        srv_name: str | None = None,
    ) -> _Steps:
        """A/AAAA of ``hostname``; every address becomes a target."""
        if _is_ip(hostname):  # an SRV target must be a name (RFC 2782), but accept an IP
            addresses: list[tuple[str, int | None]] = [(_normalize_host(hostname), None)]
        else:
            records = yield from self._addresses(hostname)
            addresses = [(r.address, r.ttl) for r in records]
        for address, ttl in addresses:
            self._add(
                Target(
                    transport=transport,
                    host=address,
                    port=port,
                    priority=srv.priority if srv else 0,
                    weight=srv.weight if srv else 0,
                    hostname=hostname,
                    srv_name=srv_name,
                    ttl=_min_ttl(chain_ttl, ttl),
                )
            )

    def _addresses(self, hostname: str) -> Generator[Query, QueryResult, list[AddressRecord]]:
        glue = {
            rdtype: [
                r
                for r in self._glue.get(Query(hostname, rdtype), [])
                if isinstance(r, AddressRecord) and _family(r.address) is rdtype
            ]
            for rdtype in self.address_types
        }
        if any(glue.values()):
            # Use the additional section of the SRV answer when it has addresses.
            return [r for rdtype in self.address_types for r in glue[rdtype]]
        found: list[AddressRecord] = []
        for rdtype in self.address_types:
            result = yield from self._lookup(Query(hostname, rdtype))
            if isinstance(result, Answer):
                found.extend(
                    AddressRecord(_normalize_host(r.address), r.ttl, r.name)
                    for r in result.records
                    if isinstance(r, AddressRecord) and _family(r.address) is rdtype
                )
        return found

    def _lookup(self, query: Query) -> Generator[Query, QueryResult, Answer | QueryFailure]:
        """Ask ``query`` once per resolution, within the query budget."""
        if query in self._answers:
            return self._answers[query]
        if any(q.qname == query.qname and r is QueryFailure.NXDOMAIN for q, r in self.failures):
            # RFC 1034 §4.3.2 (RFC 8020): a name that does not exist has no records of any type.
            return QueryFailure.NXDOMAIN
        if len(self.queries) >= self.max_queries:
            self.query_limit_reached = True
            return QueryFailure.NO_DATA
        result = yield query
        assert isinstance(result, Answer | QueryFailure)  # normalized by query_result()
        self._answers[query] = result
        if isinstance(result, QueryFailure):
            self.failures.append((query, result))
            return result
        for record in result.additional:
            self._remember_glue(record)
        return result

    def _remember_glue(self, record: Record) -> None:
        if not record.name:
            return
        if isinstance(record, SRVRecord):
            rdtype = RdType.SRV
        elif isinstance(record, AddressRecord) and _family(record.address) is not None:
            rdtype = _family(record.address)
            record = AddressRecord(_normalize_host(record.address), record.ttl, record.name)
        else:
            return
        assert rdtype is not None
        self._glue.setdefault(Query(_normalize_name(record.name), rdtype), []).append(record)

    def _add(self, target: Target) -> None:
        key = (target.transport, target.host, target.port)
        if key not in self._seen:  # the first occurrence keeps its place
            self._seen.add(key)
            self._targets.append(target)


def _family(address: str) -> RdType | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return RdType.A if ip.version == 4 else RdType.AAAA


def _min_ttl(*ttls: int | None) -> int | None:
    known = [t for t in ttls if t is not None]
    return min(known) if known else None
