"""The sans-IO RFC 3263 core: scripted DNS answers, seeded randomness, no sockets."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping

import pytest

from p2psip.errors import LocatorError
from p2psip.locator.rfc3263 import (
    AddressRecord,
    Answer,
    NAPTRRecord,
    Query,
    QueryFailure,
    QueryResult,
    RdType,
    Resolution,
    SIPTarget,
    SRVRecord,
    Target,
    order_srv_records,
    parse_sip_target,
)

Zone = Mapping[tuple[str, str], QueryResult]


# -- scripted zones ----------------------------------------------------------------------------
def naptr(order: int, pref: int, service: str, replacement: str, *, ttl: int = 300,
          flags: str = "s", regexp: str = "") -> NAPTRRecord:  # fmt: skip
    return NAPTRRecord(order, pref, flags, service, regexp, replacement, ttl)


def srv(priority: int, weight: int, port: int, target: str, *, ttl: int = 300) -> SRVRecord:
    return SRVRecord(priority, weight, port, target, ttl)


def addr(address: str, *, ttl: int = 300, name: str = "") -> AddressRecord:
    return AddressRecord(address, ttl, name)


#: INTEROP_NOTES §10 as scripted answers (no glue: every address is a query of its own)
EXAMPLE: dict[tuple[str, str], QueryResult] = {
    ("example.test", "NAPTR"): [
        naptr(30, 50, "SIP+D2U", "_sip._udp.example.test"),
        naptr(10, 50, "SIPS+D2T", "_sips._tcp.example.test"),
        naptr(20, 50, "SIP+D2T", "_sip._tcp.example.test"),
    ],
    ("example.test", "A"): [addr("127.0.0.1")],
    ("_sips._tcp.example.test", "SRV"): [srv(10, 100, 5061, "sip1.example.test")],
    ("_sip._tcp.example.test", "SRV"): [srv(10, 100, 5060, "sip1.example.test")],
    ("_sip._udp.example.test", "SRV"): [
        srv(10, 60, 5060, "sip1.example.test"),
        srv(10, 40, 5060, "sip2.example.test"),
        srv(20, 0, 5060, "sip6.example.test"),
    ],
    ("sip1.example.test", "A"): [addr("127.0.0.1")],
    ("sip2.example.test", "A"): [addr("127.0.0.2")],
    ("sip6.example.test", "AAAA"): [addr("::1")],
    ("srvonly.test", "A"): [addr("127.0.0.3")],
    ("_sip._udp.srvonly.test", "SRV"): [srv(0, 0, 5070, "srvonly.test")],
    ("aonly.test", "A"): [addr("127.0.0.4")],
}
EXISTING = {name for name, _ in EXAMPLE}


def answer(zone: Zone, query: Query) -> QueryResult:
    """Like the dnsmasq zone: NXDOMAIN for unknown names, no data for known ones."""
    found = zone.get((query.qname, query.rdtype.value))
    if found is not None:
        return found
    known = {name for name, _ in zone}
    return QueryFailure.NO_DATA if query.qname in known else QueryFailure.NXDOMAIN


def drive(resolution: Resolution, zone: Zone = EXAMPLE) -> list[Target]:
    while (query := resolution.next_query()) is not None:
        resolution.query_result(query, answer(zone, query))
    return resolution.result()


def resolve(uri: str, zone: Zone = EXAMPLE, seed: int = 1, **options: object) -> Resolution:
    resolution = Resolution(uri, rng=random.Random(seed), **options)  # type: ignore[arg-type]
    drive(resolution, zone)
    return resolution


def summary(targets: list[Target]) -> list[tuple[str, str, int]]:
    return [(t.transport, t.host, t.port) for t in targets]


def asked(resolution: Resolution) -> list[tuple[str, str]]:
    return [(q.qname, q.rdtype.value) for q, _ in resolution.queries]


# -- the URI -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:example.test", SIPTarget("example.test")),
        ("SIP:Alice@Example.TEST", SIPTarget("example.test", user="Alice")),
        ("sips:bob@example.test:5071", SIPTarget("example.test", "sips", 5071, user="bob")),
        ("<sip:[::1]:5070;transport=TCP>", SIPTarget("::1", port=5070, transport="tcp")),
        ("sip:a;b@h.test;lr;maddr=127.0.0.9?subject=x", SIPTarget("h.test", maddr="127.0.0.9",
                                                                   user="a;b")),
        ("sip:[2001:db8::0:1]", SIPTarget("2001:db8::1")),
        ("sip:example.test.", SIPTarget("example.test")),
    ],
)  # fmt: skip
def test_parse_sip_target(uri: str, expected: SIPTarget) -> None:
    assert parse_sip_target(uri) == expected


@pytest.mark.parametrize(
    "uri",
    ["tel:+15551234", "http://example.test", "sip:", "sip:h.test:99999", "sip:h.test:",
     "sip:[::1", "sip:[example.test]", "sip:bad host", "example.test", "sip:h.test;maddr=a b"],
)  # fmt: skip
def test_parse_rejects_what_cannot_be_located(uri: str) -> None:
    with pytest.raises(LocatorError):
        parse_sip_target(uri)


def test_target_properties() -> None:
    target = parse_sip_target("sips:alice@Example.test;maddr=[::1]")
    assert target.destination == "::1"
    assert target.numeric and target.secure
    assert not parse_sip_target("sip:example.test").numeric
    assert (
        str(parse_sip_target("sip:a@[::1]:5070;transport=tcp")) == "sip:a@[::1]:5070;transport=tcp"
    )


# -- §4.1/§4.2 without DNS ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:127.0.0.1", ("udp", "127.0.0.1", 5060)),
        ("sips:127.0.0.1", ("tls", "127.0.0.1", 5061)),
        ("sip:[::1]:5070", ("udp", "::1", 5070)),
        ("sip:127.0.0.1;transport=tcp", ("tcp", "127.0.0.1", 5060)),
        ("sip:127.0.0.1;transport=TLS", ("tls", "127.0.0.1", 5061)),
        ("sips:127.0.0.1:5091;transport=tcp", ("tls", "127.0.0.1", 5091)),
        ("sip:alice@example.test;maddr=127.0.0.9", ("udp", "127.0.0.9", 5060)),
    ],
)
def test_numeric_host_needs_no_dns(uri: str, expected: tuple[str, str, int]) -> None:
    resolution = Resolution(uri, rng=random.Random(0))
    assert resolution.next_query() is None
    assert resolution.done
    [target] = resolution.result()
    assert (target.transport, target.host, target.port) == expected
    assert target.ttl is None and target.hostname is None and resolution.ttl is None


@pytest.mark.parametrize(
    ("uri", "transports", "reason"),
    [
        ("sips:127.0.0.1;transport=udp", ("udp", "tcp", "tls"), "not allowed with SIPS"),
        ("sip:127.0.0.1;transport=sctp", ("udp", "tcp", "tls"), "not supported"),
        ("sip:127.0.0.1;transport=tcp", ("udp",), "not enabled"),
        ("sips:example.test", ("udp", "tcp"), "none of the enabled transports"),
    ],
)
def test_unusable_transport_gives_no_target_and_a_reason(
    uri: str, transports: tuple[str, ...], reason: str
) -> None:
    resolution = resolve(uri, supported_transports=transports)
    assert resolution.result() == []
    assert resolution.queries == []
    assert resolution.problem is not None and reason in resolution.problem
    assert reason in resolution.describe_failure()


def test_default_transport_falls_back_to_what_is_supported() -> None:
    # RFC 3263 §4.1 says UDP for a SIP URI; a TCP-only client uses TCP.
    resolution = resolve("sip:127.0.0.1", supported_transports=("tcp",))
    assert summary(resolution.result()) == [("tcp", "127.0.0.1", 5060)]


def test_explicit_port_means_address_records_only() -> None:
    resolution = resolve("sip:sip1.example.test:5080")
    assert asked(resolution) == [("sip1.example.test", "A"), ("sip1.example.test", "AAAA")]
    assert summary(resolution.result()) == [("udp", "127.0.0.1", 5080)]
    assert resolution.result()[0].hostname == "sip1.example.test"
    secure = resolve("sips:sip1.example.test:5081")
    assert summary(secure.result()) == [("tls", "127.0.0.1", 5081)]


def test_transport_parameter_skips_naptr() -> None:
    resolution = resolve("sip:example.test;transport=tcp")
    assert asked(resolution)[0] == ("_sip._tcp.example.test", "SRV")
    assert summary(resolution.result()) == [("tcp", "127.0.0.1", 5060)]
    # for a TLS transport the SRV service is _sips, also for a SIP URI (§4.2)
    tls = resolve("sip:example.test;transport=tls")
    assert asked(tls)[0] == ("_sips._tcp.example.test", "SRV")
    assert summary(tls.result()) == [("tls", "127.0.0.1", 5061)]


def test_transport_parameter_without_srv_uses_the_default_port_of_that_transport() -> None:
    resolution = resolve("sip:aonly.test;transport=tls")
    assert summary(resolution.result()) == [("tls", "127.0.0.4", 5061)]


# -- NAPTR -------------------------------------------------------------------------------------
def test_example_zone_order_follows_naptr_then_srv() -> None:
    targets = resolve("sip:example.test").result()
    assert summary(targets[:2]) == [("tls", "127.0.0.1", 5061), ("tcp", "127.0.0.1", 5060)]
    assert {(t.host, t.weight) for t in targets[2:4]} == {("127.0.0.1", 60), ("127.0.0.2", 40)}
    assert all(t.transport == "udp" and t.priority == 10 for t in targets[2:4])
    assert summary(targets[4:]) == [("udp", "::1", 5060)]
    assert targets[4].priority == 20 and targets[4].srv_name == "_sip._udp.example.test"


def test_naptr_order_preference_and_unusable_records() -> None:
    zone: dict[tuple[str, str], QueryResult] = {
        ("n.test", "NAPTR"): [
            naptr(20, 10, "SIP+D2U", "_sip._udp.n.test"),
            naptr(10, 20, "SIP+D2T", "_sip._tcp.n.test"),
            naptr(10, 10, "SIPS+D2T", "_sips._tcp.n.test"),
            naptr(1, 0, "SIP+D2S", "_sip._sctp.n.test"),  # SCTP: not supported
            naptr(1, 0, "E2U+sip", "!^.*$!sip:x@n.test!", regexp="!^.*$!sip:x@n.test!"),
            naptr(2, 0, "SIP+D2U", "_other._udp.n.test", flags="a"),  # not an SRV lookup
            naptr(3, 0, "SIP+D2U", "."),  # no replacement
        ],
        ("_sip._udp.n.test", "SRV"): [srv(0, 0, 5060, "h.n.test")],
        ("_sip._tcp.n.test", "SRV"): [srv(0, 0, 5062, "h.n.test")],
        ("_sips._tcp.n.test", "SRV"): [srv(0, 0, 5063, "h.n.test")],
        ("_sip._sctp.n.test", "SRV"): [srv(0, 0, 5064, "h.n.test")],
        ("_other._udp.n.test", "SRV"): [srv(0, 0, 5065, "h.n.test")],
        ("h.n.test", "A"): [addr("192.0.2.1")],
    }
    resolution = resolve("sip:n.test", zone)
    assert summary(resolution.result()) == [
        ("tls", "192.0.2.1", 5063),
        ("tcp", "192.0.2.1", 5062),
        ("udp", "192.0.2.1", 5060),
    ]
    no_tls = resolve("sip:n.test", zone, supported_transports=("udp", "tcp"))
    assert [t.transport for t in no_tls.result()] == ["tcp", "udp"]
    assert ("_sips._tcp.n.test", "SRV") not in asked(no_tls)


def test_sips_uses_only_sips_naptr_records() -> None:
    resolution = resolve("sips:example.test")
    assert summary(resolution.result()) == [("tls", "127.0.0.1", 5061)]
    assert not any(name.startswith("_sip.") for name, _ in asked(resolution))


def test_sips_without_sips_naptr_falls_back_to_sips_srv_then_address() -> None:
    zone = {
        ("plain.test", "NAPTR"): [naptr(10, 10, "SIP+D2U", "_sip._udp.plain.test")],
        ("_sip._udp.plain.test", "SRV"): [srv(0, 0, 5060, "plain.test")],
        ("plain.test", "A"): [addr("192.0.2.7")],
    }
    resolution = resolve("sips:plain.test", zone)
    assert asked(resolution) == [
        ("plain.test", "NAPTR"),
        ("_sips._tcp.plain.test", "SRV"),
        ("plain.test", "A"),
        ("plain.test", "AAAA"),
    ]
    assert summary(resolution.result()) == [("tls", "192.0.2.7", 5061)]


# -- SRV (RFC 2782) ----------------------------------------------------------------------------
def test_srv_weights_share_first_place_by_weight() -> None:
    firsts = Counter()
    for seed in range(3000):
        targets = resolve("sip:example.test", seed=seed, supported_transports=("udp",)).result()
        assert [t.priority for t in targets] == [10, 10, 20]  # priority first, always
        firsts[targets[0].host] += 1
    share = firsts["127.0.0.1"] / 3000  # weight 60 of 100
    assert 0.56 < share < 0.64, firsts


def test_srv_order_is_repeatable_and_independent_of_answer_order() -> None:
    records = [srv(1, w, 5060, f"h{w}.test") for w in (10, 20, 30, 40)] + [srv(0, 5, 1, "a.t")]
    first = order_srv_records(records, random.Random(42))
    again = order_srv_records(list(reversed(records)), random.Random(42))
    assert first == again
    assert first[0].target == "a.t"  # priority 0 before priority 1


def test_weight_zero_has_a_small_chance_among_heavier_records() -> None:
    zero, heavy = srv(0, 0, 1, "zero.test"), srv(0, 100, 1, "heavy.test")
    rng = random.Random(7)
    zero_first = sum(order_srv_records([heavy, zero], rng)[0] == zero for _ in range(10000))
    assert 30 < zero_first < 200  # RFC 2782: 1 in (sum + 1) = ~99 in 10000


def test_srv_duplicates_count_once() -> None:
    record = srv(0, 10, 5060, "dup.test")
    assert order_srv_records([record, record], random.Random(1)) == [record]


def test_srv_target_dot_means_not_available_and_stops_the_fallback() -> None:
    zone = {
        ("dot.test", "NAPTR"): [naptr(10, 10, "SIPS+D2T", "_sips._tcp.dot.test")],
        ("_sips._tcp.dot.test", "SRV"): [srv(0, 0, 0, ".")],
        ("dot.test", "A"): [addr("192.0.2.9")],
    }
    resolution = resolve("sips:dot.test", zone)
    assert resolution.result() == []
    assert ("dot.test", "A") not in asked(resolution)


# -- fallbacks ---------------------------------------------------------------------------------
def test_no_naptr_queries_srv_for_supported_transports() -> None:
    resolution = resolve("sip:alice@srvonly.test")
    assert asked(resolution) == [
        ("srvonly.test", "NAPTR"),
        ("_sips._tcp.srvonly.test", "SRV"),
        ("_sip._tcp.srvonly.test", "SRV"),
        ("_sip._udp.srvonly.test", "SRV"),
        ("srvonly.test", "A"),
        ("srvonly.test", "AAAA"),
    ]
    assert summary(resolution.result()) == [("udp", "127.0.0.3", 5070)]
    only_udp = resolve("sip:srvonly.test", supported_transports=("udp",))
    assert [name for name, rdtype in asked(only_udp) if rdtype == "SRV"] == [
        "_sip._udp.srvonly.test"
    ]


def test_no_naptr_prefers_tls_then_tcp_then_udp() -> None:
    zone = {
        ("two.test", "A"): [addr("192.0.2.1")],
        ("_sip._udp.two.test", "SRV"): [srv(0, 0, 5060, "two.test")],
        ("_sip._tcp.two.test", "SRV"): [srv(0, 0, 5060, "two.test")],
    }
    assert summary(resolve("sip:two.test", zone).result()) == [
        ("tcp", "192.0.2.1", 5060),
        ("udp", "192.0.2.1", 5060),
    ]


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:aonly.test", ("udp", "127.0.0.4", 5060)),
        ("sips:aonly.test", ("tls", "127.0.0.4", 5061)),
    ],
)
def test_no_naptr_no_srv_uses_the_address_with_the_default_port(
    uri: str, expected: tuple[str, str, int]
) -> None:
    resolution = resolve(uri)
    assert summary(resolution.result()) == [expected]
    assert asked(resolution)[-2:] == [("aonly.test", "A"), ("aonly.test", "AAAA")]


def test_ipv6_only_host_and_address_preference() -> None:
    assert summary(resolve("sip:sip6.example.test:5060").result()) == [("udp", "::1", 5060)]
    zone = {("dual.test", "A"): [addr("192.0.2.1")], ("dual.test", "AAAA"): [addr("2001:db8::1")]}
    v4_first = resolve("sip:dual.test:5060", zone).result()
    assert [t.host for t in v4_first] == ["192.0.2.1", "2001:db8::1"]
    v6_first = resolve("sip:dual.test:5060", zone, address_types=("AAAA", "A")).result()
    assert [t.host for t in v6_first] == ["2001:db8::1", "192.0.2.1"]
    v6_only = resolve("sip:dual.test:5060", zone, address_types=(RdType.AAAA,))
    assert asked(v6_only) == [("dual.test", "AAAA")]


def test_additional_section_glue_saves_address_queries() -> None:
    zone = dict(EXAMPLE)
    zone[("_sip._udp.example.test", "SRV")] = Answer(
        records=tuple(EXAMPLE[("_sip._udp.example.test", "SRV")]),  # type: ignore[arg-type]
        additional=(
            addr("127.0.0.2", name="sip2.example.test."),
            addr("::1", ttl=20, name="SIP6.example.test"),
            addr("192.0.2.66", name="unrelated.test"),
        ),
    )
    resolution = resolve("sip:example.test", zone, supported_transports=("udp",))
    assert asked(resolution) == [
        ("example.test", "NAPTR"),
        ("_sip._udp.example.test", "SRV"),
        ("sip1.example.test", "A"),  # no glue for sip1: asked
        ("sip1.example.test", "AAAA"),
    ]
    assert {t.host for t in resolution.result()} == {"127.0.0.1", "127.0.0.2", "::1"}
    assert resolution.result()[-1].ttl == 20


def test_same_address_twice_is_one_target() -> None:
    zone = {
        ("d.test", "NAPTR"): [naptr(1, 1, "SIP+D2U", "_sip._udp.d.test")],
        ("_sip._udp.d.test", "SRV"): [srv(0, 1, 5060, "a.d.test"), srv(1, 1, 5060, "b.d.test")],
        ("a.d.test", "A"): [addr("192.0.2.1")],
        ("b.d.test", "A"): [addr("192.0.2.1")],
    }
    assert summary(resolve("sip:d.test", zone).result()) == [("udp", "192.0.2.1", 5060)]


# -- failures ----------------------------------------------------------------------------------
def test_naptr_timeout_moves_on_to_srv() -> None:
    zone = dict(EXAMPLE)
    zone[("example.test", "NAPTR")] = QueryFailure.TIMEOUT
    resolution = resolve("sip:example.test", zone)
    assert [t.transport for t in resolution.result()] == ["tls", "tcp", "udp", "udp", "udp"]
    assert resolution.failures[0] == (Query("example.test", RdType.NAPTR), QueryFailure.TIMEOUT)


def test_srv_and_address_failures_skip_only_their_step() -> None:
    zone = dict(EXAMPLE)
    zone[("_sips._tcp.example.test", "SRV")] = QueryFailure.SERVFAIL
    zone[("sip2.example.test", "A")] = QueryFailure.TIMEOUT
    resolution = resolve("sip:example.test", zone)
    assert summary(resolution.result()) == [
        ("tcp", "127.0.0.1", 5060),
        ("udp", "127.0.0.1", 5060),
        ("udp", "::1", 5060),
    ]
    assert {reason for _, reason in resolution.failures} >= {
        QueryFailure.SERVFAIL,
        QueryFailure.TIMEOUT,
    }


def test_complete_failure_lists_every_failed_step() -> None:
    resolution = Resolution("sip:example.test", rng=random.Random(1))
    while (query := resolution.next_query()) is not None:
        resolution.query_result(query, QueryFailure.TIMEOUT)
    assert resolution.result() == []
    assert [q.rdtype.value for q, _ in resolution.failures] == [
        "NAPTR", "SRV", "SRV", "SRV", "A", "AAAA",
    ]  # fmt: skip
    assert "NAPTR example.test: timeout" in resolution.describe_failure()


def test_nxdomain_is_remembered_for_the_same_name() -> None:
    resolution = resolve("sip:nope.example.test")
    assert resolution.result() == []
    assert ("nope.example.test", "A") not in asked(resolution)  # RFC 8020
    assert all(reason is QueryFailure.NXDOMAIN for _, reason in resolution.failures)


def test_query_budget_bounds_the_resolution() -> None:
    zone: dict[tuple[str, str], QueryResult] = {
        ("many.test", "NAPTR"): [naptr(1, 1, "SIP+D2U", "_sip._udp.many.test")],
        ("_sip._udp.many.test", "SRV"): [srv(0, 1, 5060, f"h{i}.many.test") for i in range(40)],
    }
    for i in range(40):
        zone[(f"h{i}.many.test", "A")] = [addr(f"192.0.2.{i + 1}")]
    resolution = resolve("sip:many.test", zone, max_queries=10)
    assert len(resolution.queries) == 10
    assert resolution.query_limit_reached
    assert len(resolution.result()) == 4  # (10 - NAPTR - SRV) / (A + AAAA)


# -- TTL ---------------------------------------------------------------------------------------
def test_each_target_keeps_the_minimum_ttl_of_its_chain() -> None:
    zone = {
        ("t.test", "NAPTR"): [
            naptr(1, 1, "SIP+D2T", "_sip._tcp.t.test", ttl=300),
            naptr(2, 1, "SIP+D2U", "_sip._udp.t.test", ttl=50),
        ],
        ("_sip._tcp.t.test", "SRV"): [srv(0, 0, 5060, "a.t.test", ttl=120)],
        ("_sip._udp.t.test", "SRV"): [srv(0, 0, 5060, "a.t.test", ttl=3600)],
        ("a.t.test", "A"): [addr("192.0.2.1", ttl=600)],
    }
    resolution = resolve("sip:t.test", zone)
    assert [(t.transport, t.ttl) for t in resolution.result()] == [("tcp", 120), ("udp", 50)]
    assert resolution.ttl == 50
    zone[("a.t.test", "A")] = [addr("192.0.2.1", ttl=30)]
    assert resolve("sip:t.test", zone).ttl == 30


# -- the driving API ---------------------------------------------------------------------------
def test_driving_api_contract() -> None:
    resolution = Resolution(parse_sip_target("sip:aonly.test"), rng=random.Random(1))
    with pytest.raises(RuntimeError):
        resolution.result()
    query = resolution.next_query()
    assert query == Query("aonly.test", RdType.NAPTR) == ("aonly.test", "NAPTR")
    assert resolution.next_query() == query  # still outstanding
    with pytest.raises(ValueError):
        resolution.query_result(Query("other.test", RdType.NAPTR), QueryFailure.NXDOMAIN)
    resolution.query_result(query, Answer())  # an empty answer is "no data"
    assert resolution.queries[-1][1] is QueryFailure.NO_DATA
    drive(resolution)
    assert resolution.done and resolution.next_query() is None
    assert summary(resolution.result()) == [("udp", "127.0.0.4", 5060)]
    with pytest.raises(ValueError):
        resolution.query_result(query, QueryFailure.NXDOMAIN)


def test_constructor_checks_its_options() -> None:
    with pytest.raises(ValueError):
        Resolution("sip:a.test", supported_transports=("udp", "sctp"))
    with pytest.raises(ValueError):
        Resolution("sip:a.test", address_types=("MX",))
    with pytest.raises(LocatorError):
        Resolution("tel:+1555")
