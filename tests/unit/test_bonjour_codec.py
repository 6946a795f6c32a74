"""The sans-IO Bonjour parts: TXT records, instance names, service plans, the directory."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2psip.errors import LocatorError
from p2psip.locator.base import LocatedContact
from p2psip.locator.bonjour import (
    DOT_STAND_IN,
    MAX_LABEL_OCTETS,
    BonjourAdvert,
    BonjourDirectory,
    host_name,
    instance_name,
    plan_services,
    service_type_is_valid,
)

ALICE = "sip:alice@p2p.example"
KEY = bytes(range(32))
FULL = BonjourAdvert(
    aor=ALICE,
    uri="sip:alice@192.0.2.4:5061;transport=tls",
    transport="tls",
    priority=10,
    device_id="laptop",
    key_fingerprint="sha256:0123abcd",
    public_key=KEY,
)
MINIMAL = BonjourAdvert(aor=ALICE, uri="sip:alice@192.0.2.4", transport="udp")


def txt(*items: bytes) -> bytes:
    """TXT record data from raw strings (each given a length octet)."""
    return b"".join(bytes([len(item)]) + item for item in items)


def strings(data: bytes) -> list[bytes]:
    out, index = [], 0
    while index < len(data):
        out.append(data[index + 1 : index + 1 + data[index]])
        index += 1 + data[index]
    return out


VALID = [
    b"txtvers=1",
    b"aor=sip:alice@p2p.example",
    b"uri=sip:alice@192.0.2.4",
    b"tp=udp",
    b"pri=0",
]


# -- TXT round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("advert", [FULL, MINIMAL], ids=["full", "minimal"])
def test_txt_round_trip(advert: BonjourAdvert) -> None:
    data = advert.to_txt()
    assert BonjourAdvert.from_txt(data) == advert
    assert BonjourAdvert.from_txt(data).public_key == advert.public_key  # not in eq's repr


def test_txt_layout_is_rfc6763_key_value_strings_with_txtvers_first() -> None:
    assert strings(MINIMAL.to_txt()) == VALID
    items = strings(FULL.to_txt())
    assert items[0] == b"txtvers=1"
    assert b"pk=" + base64.b64encode(KEY) in items
    assert b"fp=sha256:0123abcd" in items and b"dev=laptop" in items
    assert all(len(item) <= 255 for item in items)


def test_from_contact_takes_the_contact_fields_and_normalises_the_aor() -> None:
    contact = LocatedContact(
        "sip:alice@192.0.2.4:5061;transport=tls",
        "TLS",
        "192.0.2.4",
        5061,
        3,
        key_fingerprint="fp",
        public_key=KEY,
    )
    advert = BonjourAdvert.from_contact("Alice@P2P.example", contact, "dev9")
    assert advert.aor == "sip:Alice@p2p.example"
    assert (advert.transport, advert.priority, advert.device_id) == ("tls", 3, "dev9")
    assert (advert.key_fingerprint, advert.public_key) == ("fp", KEY)
    owned = LocatedContact("sip:a@192.0.2.4", "udp", "192.0.2.4", 5060, device_id="phone")
    assert BonjourAdvert.from_contact(ALICE, owned, "dev9").device_id == "phone"


def test_to_contacts_one_per_address_with_source_bonjour() -> None:
    contacts = FULL.to_contacts(["192.0.2.4", "2001:db8::4"], 5061)
    assert [(c.host, c.port, c.source) for c in contacts] == [
        ("192.0.2.4", 5061, "bonjour"),
        ("2001:db8::4", 5061, "bonjour"),
    ]
    assert contacts[0].key_fingerprint == "sha256:0123abcd" and contacts[0].public_key == KEY
    assert contacts[0].device_id == "laptop" and contacts[0].priority == 10


@pytest.mark.parametrize(
    "advert",
    [
        BonjourAdvert(ALICE, "sip:alice@192.0.2.4", "sctp"),
        BonjourAdvert(ALICE, "http://example.com/", "udp"),
        BonjourAdvert(ALICE, "sip:alice@192.0.2.4", "udp", priority=70000),
        BonjourAdvert(ALICE, "sip:alice@192.0.2.4", "udp", device_id="d" * 65),
        BonjourAdvert(ALICE, "sip:alice@192.0.2.4", "udp", device_id="bad\nid"),
        BonjourAdvert(ALICE, "sip:alice@192.0.2.4", "udp", key_fingerprint="has space"),
        BonjourAdvert(ALICE, "sip:alice@192.0.2.4", "udp", public_key=b"k" * 65),
        BonjourAdvert("sip:" + "a" * 250 + "@p2p.example", "sip:a@192.0.2.4", "udp"),
        BonjourAdvert("http:alice@p2p.example", "sip:alice@192.0.2.4", "udp"),
    ],
    ids=[
        "transport",
        "uri",
        "priority",
        "long-device",
        "control-device",
        "fingerprint",
        "long-key",
        "long-aor",
        "scheme",
    ],
)
def test_unpublishable_adverts_raise_locator_error(advert: BonjourAdvert) -> None:
    assert advert.problem() is not None
    with pytest.raises(LocatorError):
        advert.to_txt()


# -- hostile TXT from the network -------------------------------------------------------------


def without(key: bytes) -> list[bytes]:
    return [item for item in VALID if not item.startswith(key + b"=")]


def replaced(key: bytes, value: bytes) -> list[bytes]:
    return [*without(key), key + b"=" + value]


HOSTILE = {
    "empty": b"",
    "no-txtvers": txt(*without(b"txtvers")),
    "txtvers-2": txt(*replaced(b"txtvers", b"2")),
    "no-aor": txt(*without(b"aor")),
    "no-uri": txt(*without(b"uri")),
    "no-transport": txt(*without(b"tp")),
    "no-priority": txt(*without(b"pri")),
    "aor-boolean": txt(*without(b"aor"), b"aor"),
    "aor-empty": txt(*replaced(b"aor", b"")),
    "aor-not-sip": txt(*replaced(b"aor", b"mailto:alice@p2p.example")),
    "aor-control": txt(*replaced(b"aor", b"sip:al\x07ice@p2p.example")),
    "uri-not-sip": txt(*replaced(b"uri", b"http://192.0.2.4/")),
    "uri-bad-port": txt(*replaced(b"uri", b"sip:alice@192.0.2.4:99999")),
    "priority-text": txt(*replaced(b"pri", b"high")),
    "priority-negative": txt(*replaced(b"pri", b"-1")),
    "priority-huge": txt(*replaced(b"pri", b"65536")),
    "priority-float": txt(*replaced(b"pri", b"1.5")),
    "priority-unicode-digits": txt(*replaced(b"pri", "١٢".encode())),
    "transport-unknown": txt(*replaced(b"tp", b"sctp")),
    "non-utf8-aor": txt(*replaced(b"aor", b"sip:\xff\xfe@p2p.example")),
    "non-utf8-device": txt(*VALID, b"dev=\xc3"),
    "device-too-long": txt(*VALID, b"dev=" + b"d" * 65),
    "fingerprint-space": txt(*VALID, b"fp=ab cd"),
    "fingerprint-too-long": txt(*VALID, b"fp=" + b"f" * 129),
    "key-not-base64": txt(*VALID, b"pk=not base64!"),
    "key-bad-padding": txt(*VALID, b"pk=AAA"),
    "key-empty": txt(*VALID, b"pk="),
    "key-too-long": txt(*VALID, b"pk=" + base64.b64encode(b"k" * 65)),
    "truncated-string": txt(*VALID)[:-1],
    "length-past-end": txt(*VALID) + b"\x20abc",
    "oversized": txt(*VALID, *([b"x=" + b"y" * 250] * 8)),
}


@pytest.mark.parametrize("data", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_txt_is_ignored(data: bytes) -> None:
    assert BonjourAdvert.from_txt(data) is None


@pytest.mark.parametrize("data", [None, "txtvers=1", 42, [b"txtvers=1"]])
def test_non_bytes_txt_is_ignored(data: object) -> None:
    assert BonjourAdvert.from_txt(data) is None  # type: ignore[arg-type]


def test_unknown_keys_empty_strings_and_boolean_attributes_are_skipped() -> None:
    data = txt(b"", b"=novalue", b"flag", *VALID, b"future=1", b"\x01bin=x")
    assert BonjourAdvert.from_txt(data) == MINIMAL


def test_first_occurrence_of_a_key_wins_and_keys_are_case_insensitive() -> None:
    # RFC 6763 §6.4
    data = txt(
        b"TXTVERS=1", b"Aor=sip:alice@p2p.example", b"aor=sip:mallory@p2p.example", *VALID[2:]
    )
    assert BonjourAdvert.from_txt(data) == MINIMAL


def test_txt_aor_is_normalised() -> None:
    data = txt(*replaced(b"aor", b"<sip:alice@P2P.Example;x=y>"))
    advert = BonjourAdvert.from_txt(data)
    assert advert is not None and advert.aor == ALICE


@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    advert = BonjourAdvert.from_txt(data)
    assert advert is None or advert.problem() is None


@given(st.integers(0, 10_000), st.integers(0, 255))
def test_corrupted_valid_txt_never_raises(position: int, value: int) -> None:
    data = bytearray(FULL.to_txt())
    data[position % len(data)] = value
    advert = BonjourAdvert.from_txt(bytes(data))
    assert advert is None or advert.problem() is None


printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)


@given(
    user=st.from_regex(r"[a-z0-9._-]{1,30}", fullmatch=True),
    transport=st.sampled_from(["udp", "tcp", "tls"]),
    priority=st.integers(0, 65535),
    device=st.none()
    | st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, blacklist_categories=("Cs",)),
        min_size=1,
        max_size=20,
    ).filter(lambda s: s.isprintable()),
    fingerprint=st.none() | printable,
    key=st.none() | st.binary(min_size=1, max_size=64),
)
def test_generated_adverts_round_trip(user, transport, priority, device, fingerprint, key) -> None:
    advert = BonjourAdvert(
        f"sip:{user}@p2p.example",
        f"sip:{user}@192.0.2.1:5060",
        transport,
        priority,
        device,
        fingerprint,
        key,
    )
    decoded = BonjourAdvert.from_txt(advert.to_txt())
    assert decoded == advert and decoded.public_key == key


# -- instance names ---------------------------------------------------------------------------


def octets(label: str) -> int:
    return len(label.encode("utf-8"))


def test_plain_instance_name_is_readable_and_has_no_dots() -> None:
    label = instance_name(ALICE, "laptop", "tls")
    assert label == f"alice@p2p{DOT_STAND_IN}example (laptop, tls)"
    assert instance_name(ALICE, "laptop") == f"alice@p2p{DOT_STAND_IN}example (laptop)"
    assert instance_name("sips:alice@p2p.example", "d").startswith("sips:alice@")


def test_unicode_aor_stays_readable() -> None:
    label = instance_name("sip:jürgen@例え.jp", "phone", "udp")
    assert label == f"jürgen@例え{DOT_STAND_IN}jp (phone, udp)"
    assert octets(label) <= MAX_LABEL_OCTETS


def test_long_names_are_truncated_to_63_octets_and_stay_unique() -> None:
    base = "sip:" + "a" * 80
    one = instance_name(base + "1@p2p.example", "laptop", "tls")
    two = instance_name(base + "2@p2p.example", "laptop", "tls")
    other_device = instance_name(base + "1@p2p.example", "phone", "tls")
    assert {octets(one), octets(two), octets(other_device)} <= set(range(MAX_LABEL_OCTETS + 1))
    assert len({one.lower(), two.lower(), other_device.lower()}) == 3
    assert one.startswith("a" * 20) and "(laptop, tls) ~" in one


def test_truncation_never_splits_a_multibyte_character() -> None:
    label = instance_name("sip:" + "ü" * 40 + "@p2p.example", "ß" * 30, "udp")
    assert octets(label) <= MAX_LABEL_OCTETS
    label.encode("utf-8").decode("utf-8")  # whole characters only
    assert "\ufffd" not in label


def test_names_differing_only_in_case_do_not_collide() -> None:
    # DNS compares names case-insensitively; SIP user parts are case-sensitive
    upper = instance_name("sip:Alice@p2p.example", "laptop", "udp")
    lower = instance_name("sip:alice@p2p.example", "laptop", "udp")
    assert upper.lower() != lower.lower()
    assert instance_name("sip:a@x.example", "DEV").lower() != instance_name(
        "sip:a@x.example", "dev"
    )


def test_control_characters_are_replaced_and_hashed() -> None:
    label = instance_name("sip:al\x00ice@p2p.example", "dev", "udp")
    assert "\x00" not in label and "~" in label
    assert label != instance_name("sip:al\x01ice@p2p.example", "dev", "udp")


def test_an_aor_already_containing_the_dot_stand_in_is_not_confused() -> None:
    dotted = instance_name("sip:a.b@p2p.example", "dev")
    lookalike = instance_name(f"sip:a{DOT_STAND_IN}b@p2p.example", "dev")
    assert dotted.lower() != lookalike.lower()


@given(
    user=st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="@:;?<>[] "),
        min_size=1,
        max_size=120,
    ),
    device=st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80),
    tag=st.sampled_from(["", "udp", "tls-2"]),
)
def test_any_instance_name_fits_a_label_without_dots_or_controls(user, device, tag) -> None:
    label = instance_name(f"sip:{user}@p2p.example", device, tag)
    assert 0 < octets(label) <= MAX_LABEL_OCTETS
    assert "." not in label
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in label)


# -- service plans ----------------------------------------------------------------------------


def contact(host: str = "192.0.2.4", port: int = 5061, transport: str = "tls", **kw):
    uri_host = f"[{host}]" if ":" in host else host
    return LocatedContact(
        f"sip:alice@{uri_host}:{port};transport={transport}", transport, host, port, **kw
    )


def test_plan_one_service_per_contact_with_transport_tags() -> None:
    plans = plan_services(
        ALICE,
        [contact(), contact("192.0.2.5"), contact(port=5060, transport="udp")],
        device_id="laptop",
    )
    assert [p.instance.rsplit("(", 1)[1] for p in plans] == [
        "laptop, tls)",
        "laptop, tls-2)",
        "laptop, udp)",
    ]
    assert plans[0].name == plans[0].instance + "._p2psip._udp.local."
    assert (plans[0].address, plans[0].port) == ("192.0.2.4", 5061)
    assert plans[0].server == host_name("laptop", "192.0.2.4") != plans[1].server
    assert plans[0].server.startswith("p2psip-") and plans[0].server.endswith(".local.")
    assert BonjourAdvert.from_txt(plans[0].txt) == plans[0].advert


def test_plan_uses_each_contacts_own_device_id() -> None:
    plans = plan_services(ALICE, [contact(device_id="phone"), contact()], device_id="laptop")
    assert [p.advert.device_id for p in plans] == ["phone", "laptop"]
    assert "(phone, tls)" in plans[0].instance and "(laptop, tls)" in plans[1].instance


def test_plan_keeps_ipv6_and_drops_a_scope() -> None:
    plans = plan_services(ALICE, [contact("fe80::1%eth0", 5060, "udp")], device_id="d")
    assert plans[0].address == "fe80::1"


@pytest.mark.parametrize("host", ["alice.example.com", "0.0.0.0", "::", "224.0.0.251", ""])
def test_plan_refuses_hosts_that_are_not_unicast_addresses(host: str) -> None:
    with pytest.raises(LocatorError):
        plan_services(ALICE, [LocatedContact("sip:a@192.0.2.4", "udp", host, 5060)], device_id="d")


def test_plan_refuses_bad_ports_and_oversized_fields() -> None:
    with pytest.raises(LocatorError):
        plan_services(ALICE, [contact(port=0)], device_id="d")
    with pytest.raises(LocatorError):
        plan_services(ALICE, [contact(public_key=b"k" * 200)], device_id="d")


@pytest.mark.parametrize(
    ("service_type", "valid"),
    [
        ("_p2psip._udp.local.", True),
        ("_sip._tcp.local.", True),
        ("_p2psip._udp.local", False),
        ("p2psip._udp.local.", False),
        ("_a-very-long-name-x._udp.local.", False),
        ("_p2psip._sctp.local.", False),
        ("_123._udp.local.", False),
    ],
)
def test_service_type_validation(service_type: str, valid: bool) -> None:
    assert service_type_is_valid(service_type) is valid


# -- the directory ----------------------------------------------------------------------------

NAME = "alice (laptop, tls)._p2psip._udp.local."


def test_directory_stores_and_resolves_by_aor() -> None:
    directory = BonjourDirectory(ttl=120.0)
    entry = directory.update(NAME, FULL.to_txt(), ["192.0.2.4"], 5061, now=10.0)
    assert entry is not None and entry.expires == 130.0
    [found] = directory.contacts("alice@P2P.example", now=11.0)
    assert (found.host, found.port, found.source) == ("192.0.2.4", 5061, "bonjour")
    assert found.public_key == KEY and found.key_fingerprint == "sha256:0123abcd"
    assert NAME.upper() in directory and len(directory) == 1
    assert directory.contacts("sip:bob@p2p.example", now=11.0) == []


def test_directory_orders_by_priority_then_device() -> None:
    directory = BonjourDirectory()
    for name, priority, device in [("c", 5, "z"), ("b", 1, "y"), ("a", 1, "x")]:
        advert = BonjourAdvert(ALICE, "sip:alice@192.0.2.4", "udp", priority, device)
        directory.update(name, advert.to_txt(), ["192.0.2.4"], 5060, now=0.0)
    assert [c.device_id for c in directory.contacts(ALICE, now=1.0)] == ["x", "y", "z"]


def test_directory_goodbye_and_expiry() -> None:
    directory = BonjourDirectory(ttl=120.0)
    directory.update(NAME, FULL.to_txt(), ["192.0.2.4"], 5061, now=0.0)
    directory.update("other", MINIMAL.to_txt(), ["192.0.2.5"], 5060, now=30.0)
    assert directory.get_timer() == 120.0
    assert len(directory.contacts(ALICE, now=119.9)) == 2
    assert len(directory.contacts(ALICE, now=120.0)) == 1  # expired entries are not used
    assert [e.name for e in directory.expire(120.0)] == [NAME]
    assert directory.get_timer() == 150.0
    assert directory.remove("OTHER") is not None  # a goodbye; names are case-insensitive
    assert directory.contacts(ALICE, now=121.0) == [] and directory.get_timer() is None
    assert directory.remove("other") is None


def test_directory_refresh_extends_the_lifetime() -> None:
    directory = BonjourDirectory(ttl=120.0)
    directory.update(NAME, FULL.to_txt(), ["192.0.2.4"], 5061, now=0.0)
    directory.update(NAME, FULL.to_txt(), ["192.0.2.4"], 5061, now=100.0)
    assert directory.expire(150.0) == [] and directory.get_timer() == 220.0


def test_directory_unusable_update_drops_the_previous_entry() -> None:
    directory = BonjourDirectory()
    directory.update(NAME, FULL.to_txt(), ["192.0.2.4"], 5061, now=0.0)
    assert directory.update(NAME, b"\x05garbage", ["192.0.2.4"], 5061, now=1.0) is None
    assert len(directory) == 0 and directory.contacts(ALICE, now=1.0) == []


@pytest.mark.parametrize(
    ("addresses", "port"),
    [
        ([], 5060),
        (["224.0.0.251", "0.0.0.0", "::", "not-an-ip", 7], 5060),  # no usable address
        (["192.0.2.4"], 0),
        (["192.0.2.4"], 70000),
        (["192.0.2.4"], None),
        (["192.0.2.4"], True),
        (None, 5060),
    ],
)
def test_directory_ignores_answers_without_usable_address_or_port(addresses, port) -> None:
    directory = BonjourDirectory()
    assert directory.update(NAME, MINIMAL.to_txt(), addresses, port, now=0.0) is None
    assert len(directory) == 0


def test_directory_filters_dedupes_and_caps_addresses() -> None:
    directory = BonjourDirectory()
    addresses = [
        "224.0.0.1",
        "192.0.2.1",
        "192.0.2.1",
        "fe80::1%3",
        *[f"192.0.2.{i}" for i in range(2, 9)],
    ]
    entry = directory.update(NAME, MINIMAL.to_txt(), addresses, 5060, now=0.0)
    assert entry is not None
    assert entry.addresses == ("192.0.2.1", "fe80::1%3", "192.0.2.2", "192.0.2.3")


def test_directory_moves_a_name_whose_aor_changed() -> None:
    directory = BonjourDirectory()
    directory.update(NAME, MINIMAL.to_txt(), ["192.0.2.4"], 5060, now=0.0)
    bob = BonjourAdvert("sip:bob@p2p.example", "sip:bob@192.0.2.4", "udp")
    directory.update(NAME, bob.to_txt(), ["192.0.2.4"], 5060, now=1.0)
    assert directory.contacts(ALICE, now=2.0) == []
    assert len(directory.contacts("sip:bob@p2p.example", now=2.0)) == 1


def test_directory_is_bounded() -> None:
    directory = BonjourDirectory(max_entries=3, max_per_aor=2)
    for i in range(3):  # a flood for one AoR cannot push out what is known
        directory.update(f"alice-{i}", MINIMAL.to_txt(), ["192.0.2.4"], 5060, now=float(i))
    assert len(directory.contacts(ALICE, now=5.0)) == 2 and "alice-2" not in directory
    for user in ("bob", "carol"):
        advert = BonjourAdvert(f"sip:{user}@p2p.example", f"sip:{user}@192.0.2.4", "udp")
        directory.update(user, advert.to_txt(), ["192.0.2.4"], 5060, now=10.0)
    # least recently updated evicted first
    assert len(directory) == 3 and "alice-0" not in directory and "alice-1" in directory
    assert len(directory.contacts(ALICE, now=11.0)) == 1


def test_directory_lookups_of_non_aors_are_empty() -> None:
    assert BonjourDirectory().contacts("", now=0.0) == []
