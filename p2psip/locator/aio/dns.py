"""RFC 3263 resolution over real DNS, with dnspython.

:class:`DNSResolver` drives the sans-IO :class:`~p2psip.locator.rfc3263.Resolution` with
``dns.asyncresolver`` (and, for tools, ``dns.resolver``): it asks each query of the core,
converts dnspython's answer into the core's neutral records, and raises
:class:`~p2psip.errors.LocatorError` when nothing at all was found. A timeout or server
failure on one step is handed to the core as a :class:`QueryFailure`, which moves on to the
next step as RFC 3263 allows.

:class:`DNSLocator` offers the same as a :class:`~p2psip.locator.base.Locator` for the chain
locator. The resolver never reads ``/etc/resolv.conf``: the name servers are given explicitly::

    resolver = DNSResolver(nameservers=[("127.0.0.1", 5353)], timeout=2.0)
    targets = await resolver.resolve("sip:alice@example.test")
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.rrset

from p2psip.errors import LocatorError, NotFound
from p2psip.locator.base import LocatedContact
from p2psip.locator.rfc3263 import (
    MAX_QUERIES,
    TRANSPORTS,
    AddressRecord,
    Answer,
    NAPTRRecord,
    Query,
    QueryFailure,
    RdType,
    Record,
    Resolution,
    SIPTarget,
    SRVRecord,
    Target,
    parse_sip_target,
)

__all__ = ["DNSLocator", "DNSResolver", "answer_from_dnspython"]


class DNSResolver:
    """Locate SIP servers (RFC 3263) through the given DNS servers.

    Args:
        nameservers: ``(address, port)`` of each DNS server, tried in order.
        timeout: seconds allowed for one DNS query (all servers and retries included).
        supported_transports: the transports the client can use (see :class:`Resolution`).
        address_types: A and/or AAAA, in order of preference.
        rng: source of the RFC 2782 weighted draws; a fresh ``random.Random()`` by default.
        max_queries: upper bound on the DNS queries of one resolution.
    """

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]],
        *,
        timeout: float = 2.0,
        supported_transports: Sequence[str] = TRANSPORTS,
        address_types: Sequence[RdType | str] = (RdType.A, RdType.AAAA),
        rng: random.Random | None = None,
        max_queries: int = MAX_QUERIES,
    ) -> None:
        if not nameservers:
            raise ValueError("at least one name server is needed")
        self.nameservers = [(host, int(port)) for host, port in nameservers]
        self.timeout = timeout
        self.supported_transports = tuple(supported_transports)
        self.address_types = tuple(address_types)
        self.rng = rng if rng is not None else random.Random()
        self.max_queries = max_queries
        self._async = self._configure(dns.asyncresolver.Resolver(configure=False))
        self._sync: dns.resolver.Resolver | None = None

    def _configure(self, resolver: dns.resolver.BaseResolver) -> dns.resolver.BaseResolver:
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(host, port) for host, port in self.nameservers
        ]
        resolver.timeout = self.timeout
        resolver.lifetime = self.timeout
        resolver.use_edns(0, 0, 1232)
        resolver.retry_servfail = False
        return resolver

    def resolution(
        self, target: str | SIPTarget, *, supported_transports: Sequence[str] | None = None
    ) -> Resolution:
        """A new sans-IO :class:`Resolution` configured like this resolver."""
        return Resolution(
            parse_sip_target(target) if isinstance(target, str) else target,
            supported_transports=supported_transports or self.supported_transports,
            rng=self.rng,
            address_types=self.address_types,
            max_queries=self.max_queries,
        )

    async def resolve(
        self, target: str | SIPTarget, *, supported_transports: Sequence[str] | None = None
    ) -> list[Target]:
        """Resolve a SIP or SIPS URI into targets, in failover order (RFC 3263 §4).

        Args:
            target: the URI, as text or parsed.
            supported_transports: overrides the resolver's transports for this call.

        Returns:
            At least one :class:`Target`; each carries the smallest TTL of its DNS chain.

        Raises:
            NotFound: the DNS answered, and has no server for the URI (NXDOMAIN, no data).
            LocatorError: when the URI is not a SIP/SIPS URI, no transport fits, or the DNS
                failed (timeouts, server failures) before any server was found.
        """
        resolution = self.resolution(target, supported_transports=supported_transports)
        while (query := resolution.next_query()) is not None:
            resolution.query_result(query, await self.query(query))
        return _targets_or_raise(resolution)

    def resolve_sync(
        self, target: str | SIPTarget, *, supported_transports: Sequence[str] | None = None
    ) -> list[Target]:
        """Blocking form of :meth:`resolve`, for command-line tools (not for the event loop)."""
        if self._sync is None:
            self._sync = self._configure(dns.resolver.Resolver(configure=False))
        resolution = self.resolution(target, supported_transports=supported_transports)
        while (query := resolution.next_query()) is not None:
            try:
                answer = self._sync.resolve(
                    dns.name.from_text(query.qname),
                    query.rdtype.value,
                    raise_on_no_answer=False,
                    search=False,
                )
            except dns.exception.DNSException as exc:
                resolution.query_result(query, _failure(exc))
                continue
            except OSError:
                resolution.query_result(query, QueryFailure.SERVFAIL)
                continue
            resolution.query_result(query, answer_from_dnspython(answer))
        return _targets_or_raise(resolution)

    async def query(self, query: Query) -> Answer | QueryFailure:
        """Ask one query of the core and convert the outcome."""
        try:
            answer = await self._async.resolve(
                dns.name.from_text(query.qname),
                query.rdtype.value,
                raise_on_no_answer=False,
                search=False,
            )
        except dns.exception.DNSException as exc:
            return _failure(exc)
        except OSError:  # the socket could not be used at all
            return QueryFailure.SERVFAIL
        return answer_from_dnspython(answer)


def answer_from_dnspython(answer: dns.resolver.Answer) -> Answer | QueryFailure:
    """Convert a dnspython answer into the core's :class:`Answer` (or NO_DATA)."""
    if answer.rrset is None:
        return QueryFailure.NO_DATA
    ttl = answer.chaining_result.minimum_ttl  # includes the TTLs of a CNAME chain
    records = _records(answer.rrset, ttl)
    additional: list[Record] = []
    for rrset in answer.response.additional:
        additional.extend(_records(rrset, rrset.ttl))
    if not records:
        return QueryFailure.NO_DATA
    return Answer(records=tuple(records), additional=tuple(additional))


def _records(rrset: dns.rrset.RRset, ttl: int) -> list[Record]:
    name = rrset.name.to_text(omit_final_dot=True).lower()
    out: list[Record] = []
    for rdata in rrset:
        if rrset.rdtype == dns.rdatatype.NAPTR:
            out.append(
                NAPTRRecord(
                    order=rdata.order,
                    preference=rdata.preference,
                    flags=rdata.flags.decode("ascii", "replace"),
                    service=rdata.service.decode("ascii", "replace"),
                    regexp=rdata.regexp.decode("utf-8", "replace"),
                    replacement=rdata.replacement.to_text(omit_final_dot=True),
                    ttl=ttl,
                    name=name,
                )
            )
        elif rrset.rdtype == dns.rdatatype.SRV:
            target = rdata.target.to_text(omit_final_dot=True)
            out.append(
                SRVRecord(
                    priority=rdata.priority,
                    weight=rdata.weight,
                    port=rdata.port,
                    target=target or ".",  # the root name means "not available"
                    ttl=ttl,
                    name=name,
                )
            )
        elif rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            out.append(AddressRecord(address=rdata.address, ttl=ttl, name=name))
    return out


def _failure(exc: dns.exception.DNSException) -> QueryFailure:
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return QueryFailure.NXDOMAIN
    if isinstance(exc, dns.resolver.NoAnswer):
        return QueryFailure.NO_DATA
    if isinstance(exc, dns.exception.Timeout):
        return QueryFailure.TIMEOUT
    return QueryFailure.SERVFAIL  # NoNameservers (SERVFAIL, REFUSED, unreachable), YXDOMAIN...


def _targets_or_raise(resolution: Resolution) -> list[Target]:
    targets = resolution.result()
    if targets:
        return targets
    message = f"no SIP server found for {resolution.target}: {resolution.describe_failure()}"
    definitive = (QueryFailure.NXDOMAIN, QueryFailure.NO_DATA)
    if (
        resolution.problem is None
        and not resolution.query_limit_reached
        and all(reason in definitive for _, reason in resolution.failures)
    ):
        raise NotFound(message)  # the DNS answered: there is no such server
    raise LocatorError(message)


class DNSLocator:
    """The :class:`~p2psip.locator.base.Locator` face of :class:`DNSResolver`.

    ``resolve(aor)`` returns one :class:`LocatedContact` per target, ``source="dns"``, with
    ``priority`` = position in the failover order. DNS cannot publish.

    Args:
        resolver: the resolver to use.
    """

    name = "dns"

    def __init__(self, resolver: DNSResolver) -> None:
        self.resolver = resolver

    async def resolve(self, aor: str) -> list[LocatedContact]:
        """Contacts for ``aor`` (RFC 3263 on its host), best first.

        Raises:
            NotFound: the domain has no SIP server.
            LocatorError: the DNS failed, or ``aor`` is not a SIP/SIPS URI.
        """
        target = parse_sip_target(aor)
        targets = await self.resolver.resolve(target)
        contacts = []
        for index, found in enumerate(targets):
            host = f"[{found.host}]" if ":" in found.host else found.host
            user = f"{target.user}@" if target.user else ""
            # RFC 5630 §3.1.3: a SIPS URI says transport=tcp for TLS over TCP.
            param = "tcp" if target.secure and found.transport == "tls" else found.transport
            uri = f"{target.scheme}:{user}{host}:{found.port};transport={param}"
            contacts.append(
                LocatedContact(uri, found.transport, found.host, found.port, index, "dns")
            )
        return contacts

    async def publish(self, aor: str, contacts: Sequence[LocatedContact]) -> None:
        """DNS records are not published by the SDK."""
        raise NotImplementedError("the DNS locator cannot publish")

    async def withdraw(self, aor: str) -> None:
        """DNS records are not published by the SDK."""
        raise NotImplementedError("the DNS locator cannot withdraw")

    async def close(self) -> None:
        """Nothing to release (dnspython opens a socket per query)."""
