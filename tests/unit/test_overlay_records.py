"""Signed AoR records: encoding, parsing, policies, store-time merge and read-time checks."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psip.errors import InvalidAoR, P2PSIPError, RecordError
from p2psip.overlay.identity import Identity
from p2psip.overlay.records import (
    DEFAULT_MAX_RECORD_SIZE,
    AoRCertificate,
    AoRRecord,
    Contact,
    DeviceEntry,
    OverlayCA,
    PolicyMode,
    RecordPolicy,
    dht_key,
    merge_for_store,
    normalize_aor,
    parse_record,
    select_valid,
    sign_entry,
    verify_entry,
)

NOW = 1_700_000_000.0
HOUR = 3600
DAY = 86400
AOR = "sip:alice@p2p.example"
KEY = dht_key(AOR)
OPEN = RecordPolicy()


def seeded(n: int) -> Identity:
    return Identity.from_private_bytes(bytes([n]) * 32)


ALICE = seeded(1)
MALLORY = seeded(2)
CA = OverlayCA(seeded(9))


def contact(device: str = "laptop", n: int = 1, transport: str = "udp") -> Contact:
    return Contact(f"sip:alice@192.0.2.{n}:5060", transport, 0, device)


def entry(
    device: str = "laptop",
    seq: int = 1,
    expires: float = NOW + HOUR,
    identity: Identity = ALICE,
    aor: str = AOR,
    contacts: tuple[Contact, ...] | None = None,
    certificate: bytes | None = None,
) -> DeviceEntry:
    if contacts is None:
        contacts = (contact(device),)
    return sign_entry(identity, aor, device, contacts, expires, seq, certificate)


def value(*entries: DeviceEntry) -> bytes:
    return AoRRecord(entries[0].aor, entries).to_bytes()


def store(new: bytes, old: bytes | None = None, pins=None, now=NOW, policy=OPEN, key=KEY):
    return merge_for_store(key, new, old, now, policy, {} if pins is None else pins)


def refused(decision, word: str) -> bool:
    return not decision.accepted and decision.value is None and decision.reason.startswith(word)


# -- AoRs and DHT keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("sip:alice@p2p.example", "sip:alice@p2p.example"),
        ("alice@p2p.example", "sip:alice@p2p.example"),
        ("SIP:Alice@P2P.Example", "sip:Alice@p2p.example"),
        ("<sip:alice@p2p.example:5061;transport=tls>", "sip:alice@p2p.example"),
        ("sip:alice@p2p.example?subject=hi", "sip:alice@p2p.example"),
        ("alice@p2p.example:5060", "sip:alice@p2p.example"),
        ("  sips:bob@Example.COM.  ", "sips:bob@example.com"),
        ("sip:al%69ce@p2p.example", "sip:alice@p2p.example"),
        ("sip:a%2fb@p2p.example", "sip:a%2Fb@p2p.example"),
        ("sip:+1-555;x=y@192.0.2.1:5060", "sip:+1-555;x=y@192.0.2.1"),
        ("sip:alice@[2001:DB8:0:0::1]:5060", "sip:alice@[2001:db8::1]"),
    ],
)
def test_normalize_aor(given: str, normal: str) -> None:
    assert normalize_aor(given) == normal
    assert normalize_aor(normal) == normal


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "   ",
        "sip:",
        "sip:alice",
        "sip:@p2p.example",
        "sip:alice@",
        "alice",
        "tel:+15551234",
        "http://alice@p2p.example",
        "alice:secret@p2p.example",
        "sip:al ice@p2p.example",
        "sip:alice@-bad-.example",
        "sip:alice@p2p..example",
        "sip:alice@p2p.example:0",
        "sip:alice@p2p.example:99999",
        "sip:alice@p2p.example:",
        "sip:alice@p2p.example:50x",
        "sip:alice@999.1.1.1",
        "sip:alice@[::g]",
        "sip:alice@[::1",
        "sip:al%zzce@p2p.example",
        'sip:al"ce@p2p.example',
        "sip:alicé@p2p.example",
        "sip:alice@p2p.example\x00",
        "sip:" + "a" * 300 + "@p2p.example",
    ],
)
def test_normalize_aor_refuses_garbage(garbage: str) -> None:
    with pytest.raises(InvalidAoR):
        normalize_aor(garbage)


@pytest.mark.parametrize("not_a_string", [None, b"sip:alice@p2p.example", 42])
def test_normalize_aor_refuses_non_strings(not_a_string: object) -> None:
    with pytest.raises(InvalidAoR):
        normalize_aor(not_a_string)  # type: ignore[arg-type]


def test_invalid_aor_is_a_value_error_in_the_p2psip_tree() -> None:
    assert issubclass(InvalidAoR, ValueError)
    assert issubclass(InvalidAoR, RecordError)
    assert issubclass(RecordError, P2PSIPError)


def test_dht_key_is_sha1_of_the_prefixed_normal_form() -> None:
    assert dht_key(AOR) == hashlib.sha1(b"p2psip-aor:sip:alice@p2p.example").digest()
    assert len(dht_key(AOR)) == 20
    assert dht_key("ALICE@P2P.example".replace("ALICE", "alice")) == dht_key(AOR)
    assert dht_key("sip:Alice@p2p.example") != dht_key(AOR)  # user part is case-sensitive
    assert dht_key("sips:alice@p2p.example") != dht_key(AOR)


# -- entries and signatures ------------------------------------------------------------------------


def test_sign_and_verify_round_trip() -> None:
    e = entry()
    assert verify_entry(e)
    assert e.aor == AOR
    assert e.public_key == ALICE.public_key_bytes
    assert e.expires == int(NOW + HOUR)
    assert not e.is_tombstone
    assert e.fingerprint == ALICE.fingerprint


def test_sign_entry_normalizes_the_aor_and_floors_expiry() -> None:
    e = sign_entry(ALICE, "alice@P2P.example", "laptop", [contact()], NOW + 10.9, 1)
    assert e.aor == AOR
    assert e.expires == int(NOW) + 10
    assert verify_entry(e)


def test_signed_payload_is_the_documented_encoding() -> None:
    c = Contact("sip:a@192.0.2.1", "tcp", 5, "d1")
    e = sign_entry(ALICE, AOR, "d1", [c], 1000, 7)

    def lp(b: bytes) -> bytes:
        return len(b).to_bytes(4, "big") + b

    expected = (
        b"p2psip-aor-entry-v1\x00"
        + lp(AOR.encode())
        + lp(b"d1")
        + (1000).to_bytes(8, "big")
        + (7).to_bytes(8, "big")
        + lp(ALICE.public_key_bytes)
        + b"\x00"
        + (1).to_bytes(4, "big")
        + lp(b"sip:a@192.0.2.1")
        + lp(b"tcp")
        + (5).to_bytes(4, "big")
        + lp(b"d1")
    )
    assert e.signed_payload() == expected
    assert Identity.verify(ALICE.public_key_bytes, expected, e.signature)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda e: dataclasses.replace(e, contacts=(contact(n=66),)),
        lambda e: dataclasses.replace(
            e, contacts=(dataclasses.replace(e.contacts[0], priority=9),)
        ),
        lambda e: dataclasses.replace(e, contacts=()),
        lambda e: dataclasses.replace(e, expires=e.expires + 1),
        lambda e: dataclasses.replace(e, seq=e.seq + 1),
        lambda e: dataclasses.replace(e, aor="sip:bob@p2p.example"),
        lambda e: dataclasses.replace(
            e, device_id="phone", contacts=(dataclasses.replace(e.contacts[0], device_id="phone"),)
        ),
        lambda e: dataclasses.replace(e, public_key=MALLORY.public_key_bytes),
        lambda e: dataclasses.replace(e, signature=bytes(64)),
        lambda e: dataclasses.replace(e, certificate=b"extra"),
    ],
)
def test_tampered_entries_do_not_verify(tamper) -> None:
    assert not verify_entry(tamper(entry()))


def test_a_signature_cannot_be_moved_to_another_entry() -> None:
    alice_laptop = entry()
    alice_phone = entry(device="phone")
    moved = dataclasses.replace(alice_phone, signature=alice_laptop.signature)
    assert not verify_entry(moved)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"device_id": ""}, "device id"),
        ({"device_id": "has space"}, "device id"),
        ({"seq": -1}, "seq"),
        ({"seq": True}, "seq"),
        ({"seq": 2**63}, "seq"),
        ({"expires": float("nan")}, "expires"),
        ({"expires": -5}, "expires"),
        ({"contacts": [contact("other")]}, "device id"),
        ({"contacts": [contact(), contact()]}, "duplicate"),
        ({"contacts": [contact(n=i) for i in range(17)]}, "at most"),
        ({"aor": "not-an-aor"}, "sip"),
    ],
)
def test_sign_entry_refuses_malformed_fields(kwargs: dict, match: str) -> None:
    args = {
        "identity": ALICE,
        "aor": AOR,
        "device_id": "laptop",
        "contacts": [contact()],
        "expires": NOW + HOUR,
        "seq": 1,
    }
    args.update(kwargs)
    with pytest.raises(RecordError, match=match):
        sign_entry(**args)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"uri": "http://x"},
        {"uri": "sip:a b@x"},
        {"uri": 'sip:"a"@x'},
        {"uri": "sip:<a>@x"},
        {"uri": "sip:" + "a" * 300},
        {"uri": None},
        {"transport": "UDP"},
        {"transport": "carrier-pigeon"},
        {"transport": ["udp"]},
        {"priority": -1},
        {"priority": 65536},
        {"priority": 1.0},
        {"device_id": "x" * 129},
    ],
)
def test_contact_refuses_malformed_fields(kwargs: dict) -> None:
    args = {"uri": "sip:alice@192.0.2.1", "transport": "udp", "priority": 0, "device_id": "d"}
    args.update(kwargs)
    with pytest.raises(RecordError):
        Contact(**args)


# -- the stored value ------------------------------------------------------------------------------


def test_record_round_trip_and_canonical_form() -> None:
    phone = entry(device="phone", seq=3)
    laptop = entry(device="laptop", seq=5)
    record = AoRRecord(AOR, (phone, laptop))
    assert [e.device_id for e in record.entries] == ["laptop", "phone"]  # sorted
    data = record.to_bytes()
    assert parse_record(data) == record
    assert AoRRecord(AOR, (laptop, phone)).to_bytes() == data
    obj = json.loads(data)
    assert sorted(obj) == ["aor", "entries", "v"]
    assert obj["v"] == 1
    first = obj["entries"][0]
    assert sorted(first) == ["cert", "contacts", "device", "expires", "key", "seq", "sig"]
    assert base64.b64decode(first["key"]) == ALICE.public_key_bytes
    assert first["contacts"] == [
        {"priority": 0, "transport": "udp", "uri": "sip:alice@192.0.2.1:5060"}
    ]
    assert data == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert record.entry("phone") == phone
    assert record.entry("tablet") is None


def test_record_refuses_two_entries_for_one_device_or_a_foreign_entry() -> None:
    with pytest.raises(RecordError, match="one entry per device"):
        AoRRecord(AOR, (entry(seq=1), entry(seq=2)))
    with pytest.raises(RecordError, match="record's AoR"):
        AoRRecord(AOR, (entry(aor="sip:bob@p2p.example"),))


def test_to_bytes_enforces_the_size_limit() -> None:
    record = AoRRecord(AOR, (entry(),))
    with pytest.raises(RecordError, match="oversize"):
        record.to_bytes(max_size=100)


def _valid_json() -> dict:
    return json.loads(value(entry()))


def _canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _mutations() -> list:
    def m(fn):
        obj = _valid_json()
        fn(obj)
        return _canonical(obj)

    e = lambda o: o["entries"][0]  # noqa: E731
    c = lambda o: o["entries"][0]["contacts"][0]  # noqa: E731
    return [
        m(lambda o: o.update(v=2)),
        m(lambda o: o.update(v="1")),
        m(lambda o: o.update(v=True)),
        m(lambda o: o.pop("v")),
        m(lambda o: o.update(extra=1)),
        m(lambda o: o.update(aor=5)),
        m(lambda o: o.update(aor="SIP:alice@p2p.example")),
        m(lambda o: o.update(aor="garbage")),
        m(lambda o: o.update(entries={})),
        m(lambda o: o.update(entries=[])),
        m(lambda o: o.update(entries=[1])),
        m(lambda o: o.update(entries=[e(o), e(o)])),
        m(lambda o: e(o).update(seq="1")),
        m(lambda o: e(o).update(seq=-1)),
        m(lambda o: e(o).update(seq=True)),
        m(lambda o: e(o).update(seq=2**64)),
        m(lambda o: e(o).update(seq=None)),
        m(lambda o: e(o).update(expires=[1])),
        m(lambda o: e(o).update(key="!!!")),
        m(lambda o: e(o).update(key=base64.b64encode(b"x" * 31).decode())),
        m(lambda o: e(o).update(key=base64.b64encode(b"x" * 32).decode().rstrip("="))),
        m(lambda o: e(o).update(sig=None)),
        m(lambda o: e(o).update(cert=5)),
        m(lambda o: e(o).update(cert="")),
        m(lambda o: e(o).update(device=7)),
        m(lambda o: e(o).update(device="")),
        m(lambda o: e(o).pop("cert")),
        m(lambda o: e(o).update(contacts="sip:x@y")),
        m(lambda o: e(o).update(contacts=[None])),
        m(lambda o: c(o).update(priority="0")),
        m(lambda o: c(o).update(priority=False)),
        m(lambda o: c(o).update(transport=None)),
        m(lambda o: c(o).update(uri=["sip:x"])),
        m(lambda o: c(o).update(device="laptop")),
        b"[]",
        b"null",
        b'"record"',
        b"{}",
        value(entry()).replace(b'"seq":1', b'"seq":1.0'),
        value(entry()).replace(b'"seq":1', b'"seq":1e0'),
        value(entry()).replace(b'"seq":1', b'"seq":NaN'),
        value(entry()).replace(b'"seq":1', b'"seq":Infinity'),
        value(entry()).replace(b'"seq":1', b'"seq":1,"seq":1'),
        value(entry()).replace(b'{"aor"', b'{ "aor"'),  # not canonical
        value(entry()) + b"\n",
        value(entry()).replace(b"laptop", b"lapt\\u006fp"),
        value(entry()).replace(b"laptop", "läptop".encode()),
        b"[" * 5000 + b"]" * 5000,
        b"[" * 3000,
        b'{"a":' * 2000,
        b"9" * 5000,
        b"\xff\xfe\x00",
    ]


@pytest.mark.parametrize("bad", _mutations())
def test_parse_record_refuses_wrong_types_and_shapes(bad: bytes) -> None:
    with pytest.raises(RecordError):
        parse_record(bad, max_size=20000)


def test_parse_record_refuses_oversize_before_parsing() -> None:
    with pytest.raises(RecordError, match="oversize"):
        parse_record(b" " * (DEFAULT_MAX_RECORD_SIZE + 1))


@pytest.mark.parametrize("not_bytes", [None, "text", 5, ["a"]])
def test_parse_record_refuses_non_bytes(not_bytes: object) -> None:
    with pytest.raises(RecordError):
        parse_record(not_bytes)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_parse_record_random_bytes_raise_only_record_error(data: bytes) -> None:
    try:
        parse_record(data)
    except RecordError:
        pass


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["v", "aor", "entries", "device", "seq", "key", "sig", "cert", "uri"]),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(_json_values)
def test_parse_record_random_json_raises_only_record_error(obj: object) -> None:
    with pytest.raises(RecordError):
        parse_record(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode())


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=255))
def test_a_corrupted_byte_is_refused_or_fails_verification(index: int, byte: int) -> None:
    good = value(entry())
    index %= len(good)
    bad = good[:index] + bytes([byte]) + good[index + 1 :]
    if bad == good:
        return
    try:
        record = parse_record(bad)
    except RecordError:
        return
    assert not all(verify_entry(e) for e in record.entries)
    assert not store(bad).accepted


_devices = st.text("abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=12)


@settings(max_examples=50)
@given(
    st.dictionaries(
        _devices,
        st.tuples(
            st.integers(0, 2**63 - 1),
            st.integers(0, 2**40),
            st.lists(
                st.tuples(st.integers(1, 254), st.sampled_from(sorted(["udp", "tcp", "tls"]))),
                max_size=3,
                unique=True,
            ),
            st.integers(0, 65535),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_record_round_trip_property(devices: dict) -> None:
    entries = []
    for device, (seq, expires, contacts, prio) in devices.items():
        cs = tuple(Contact(f"sip:a@192.0.2.{n}", t, prio, device) for n, t in contacts)
        entries.append(sign_entry(ALICE, AOR, device, cs, expires, seq))
    record = AoRRecord(AOR, tuple(entries))
    data = record.to_bytes(max_size=100_000)
    parsed = parse_record(data, max_size=100_000)
    assert parsed == record
    assert all(verify_entry(e) for e in parsed.entries)


# -- merge_for_store: open overlays ----------------------------------------------------------------


def test_first_store_is_accepted_and_pins_the_key() -> None:
    pins: dict[str, bytes] = {}
    decision = store(value(entry()), pins=pins)
    assert decision.accepted and decision.reason == "ok"
    assert parse_record(decision.value) == parse_record(value(entry()))
    assert pins == {AOR: ALICE.public_key_bytes}


def test_forged_signature_is_refused() -> None:
    forged = dataclasses.replace(entry(), signature=MALLORY.sign(b"whatever"))
    pins: dict[str, bytes] = {}
    assert refused(store(value(forged), pins=pins), "bad-signature")
    assert pins == {}


@pytest.mark.parametrize(
    "tamper",
    [
        lambda e: dataclasses.replace(e, contacts=(contact(n=66),)),
        lambda e: dataclasses.replace(e, expires=e.expires + 60),
        lambda e: dataclasses.replace(e, seq=e.seq + 100),
        lambda e: dataclasses.replace(
            e, device_id="phone", contacts=(dataclasses.replace(e.contacts[0], device_id="phone"),)
        ),
    ],
)
def test_tampered_entries_are_refused(tamper) -> None:
    assert refused(store(value(tamper(entry()))), "bad-signature")


def test_an_entry_moved_to_another_aor_is_refused() -> None:
    bob = "sip:bob@p2p.example"
    moved = dataclasses.replace(entry(), aor=bob)
    decision = store(value(moved), key=dht_key(bob))
    assert refused(decision, "bad-signature")


def test_key_and_aor_mismatch_is_refused() -> None:
    decision = store(value(entry()), key=dht_key("sip:bob@p2p.example"))
    assert refused(decision, "key-mismatch")
    assert refused(store(value(entry()), key=b"\x00" * 20), "key-mismatch")


def test_another_key_claiming_a_pinned_aor_is_refused() -> None:
    pins: dict[str, bytes] = {}
    assert store(value(entry()), pins=pins).accepted
    decision = store(value(entry(identity=MALLORY, device="evil", seq=99)), pins=pins)
    assert refused(decision, "pinned-key")
    assert ALICE.fingerprint in decision.reason and MALLORY.fingerprint in decision.reason
    assert pins == {AOR: ALICE.public_key_bytes}


def test_the_stored_key_acts_as_pin_when_the_pin_table_was_lost() -> None:
    old = store(value(entry())).value
    pins: dict[str, bytes] = {}
    decision = store(value(entry(identity=MALLORY, device="evil")), old=old, pins=pins)
    assert refused(decision, "pinned-key")
    assert store(value(entry(seq=2)), old=old, pins=pins).accepted
    assert pins == {AOR: ALICE.public_key_bytes}


def test_entries_signed_by_two_keys_in_one_unpinned_value_are_refused() -> None:
    mixed = value(entry(), entry(device="evil", identity=MALLORY))
    assert refused(store(mixed), "pinned-key")


def test_replay_of_an_older_seq_is_refused() -> None:
    old = store(value(entry(seq=5))).value
    decision = store(value(entry(seq=4, contacts=(contact(n=9),))), old=old)
    assert refused(decision, "stale")
    assert "seq 4" in decision.reason and "stored seq 5" in decision.reason


def test_equal_seq_with_identical_content_is_idempotent() -> None:
    old = store(value(entry(seq=5))).value
    decision = store(value(entry(seq=5)), old=old)
    assert decision.accepted
    assert decision.value == old


def test_equal_seq_with_different_content_is_refused() -> None:
    old = store(value(entry(seq=5))).value
    decision = store(value(entry(seq=5, contacts=(contact(n=9),))), old=old)
    assert refused(decision, "conflict")


def test_higher_seq_replaces_the_device_entry() -> None:
    old = store(value(entry(seq=5))).value
    newer = entry(seq=6, contacts=(contact(n=9),))
    decision = store(value(newer), old=old)
    assert decision.accepted
    assert parse_record(decision.value).entries == (newer,)


def test_expired_entry_is_refused() -> None:
    assert refused(store(value(entry(expires=NOW - 1))), "expired")
    assert refused(store(value(entry(expires=NOW))), "expired")


def test_expiry_too_far_ahead_is_refused() -> None:
    assert refused(store(value(entry(expires=NOW + 8 * DAY))), "lifetime")
    assert store(value(entry(expires=NOW + 7 * DAY))).accepted
    short = RecordPolicy(max_lifetime=HOUR, clock_skew=0)
    assert refused(store(value(entry(expires=NOW + HOUR + 1)), policy=short), "lifetime")


def test_oversize_value_is_refused() -> None:
    entries = [
        entry(
            device=f"device-{i:02}",
            contacts=tuple(
                Contact(f"sip:alice@192.0.2.{n}:5060", "udp", n, f"device-{i:02}")
                for n in range(16)
            ),
        )
        for i in range(8)
    ]
    big = AoRRecord(AOR, tuple(entries)).to_bytes(max_size=100_000)
    assert len(big) > DEFAULT_MAX_RECORD_SIZE
    assert refused(store(big), "oversize")
    assert refused(store(value(entry()), policy=RecordPolicy(max_record_size=100)), "oversize")


def test_a_merge_that_would_grow_past_the_limit_is_refused() -> None:
    many = tuple(Contact(f"sip:alice@192.0.2.{n}:5060", "udp", n, "x") for n in range(16))
    policy = RecordPolicy(max_record_size=2000)
    first = sign_entry(ALICE, AOR, "x", many, NOW + HOUR, 1)
    second_contacts = tuple(dataclasses.replace(c, device_id="y") for c in many)
    second = sign_entry(ALICE, AOR, "y", second_contacts, NOW + HOUR, 1)
    old = store(value(first), policy=policy).value
    assert old is not None
    assert refused(store(value(second), old=old, policy=policy), "oversize")


def test_too_many_devices_is_refused() -> None:
    policy = RecordPolicy(max_devices=2)
    old = store(value(entry(device="a"), entry(device="b")), policy=policy).value
    assert refused(store(value(entry(device="c")), old=old, policy=policy), "too-many-devices")


@pytest.mark.parametrize("garbage", [b"", b"\x00" * 10, b"{}", b"not json", "text", None])
def test_garbage_is_refused_as_malformed(garbage: object) -> None:
    decision = store(garbage)  # type: ignore[arg-type]
    assert refused(decision, "malformed")


@settings(max_examples=200)
@given(st.binary(max_size=300), st.one_of(st.none(), st.binary(max_size=100)))
def test_merge_never_raises_on_random_bytes(new: bytes, old: bytes | None) -> None:
    pins: dict[str, bytes] = {}
    decision = merge_for_store(KEY, new, old, NOW, OPEN, pins)
    assert not decision.accepted
    assert pins == {}


def test_multi_device_merge_keeps_both_devices() -> None:
    pins: dict[str, bytes] = {}
    laptop = entry(device="laptop")
    phone = entry(device="phone", seq=3)
    first = store(value(laptop), pins=pins)
    second = store(value(phone), old=first.value, pins=pins)
    assert second.accepted
    assert parse_record(second.value).entries == (laptop, phone)
    assert select_valid(second.value, NOW, AOR) == [laptop, phone]


def test_a_value_with_one_new_and_one_stale_entry_merges_the_new_one() -> None:
    old = store(value(entry(device="laptop", seq=5), entry(device="phone", seq=5))).value
    newer_phone = entry(device="phone", seq=6, contacts=(contact("phone", n=7),))
    decision = store(value(entry(device="laptop", seq=4), newer_phone), old=old)
    assert decision.accepted
    assert "stale: device laptop" in decision.reason
    merged = parse_record(decision.value)
    assert merged.entry("laptop").seq == 5
    assert merged.entry("phone") == newer_phone


def test_tombstone_withdraws_one_device() -> None:
    old = store(value(entry(device="laptop"), entry(device="phone"))).value
    tombstone = entry(device="phone", seq=2, contacts=())
    assert tombstone.is_tombstone
    decision = store(value(tombstone), old=old)
    assert decision.accepted
    assert parse_record(decision.value).entry("phone") == tombstone
    assert [e.device_id for e in select_valid(decision.value, NOW, AOR)] == ["laptop"]
    # the withdrawn registration cannot be replayed while the tombstone stands
    assert refused(store(value(entry(device="phone")), old=decision.value), "stale")


def test_expired_entries_are_dropped_from_what_readers_see() -> None:
    old = store(value(entry(device="laptop", expires=NOW + 60), entry(device="phone"))).value
    later = NOW + 120
    decision = store(value(entry(device="tablet", expires=later + HOUR)), old=old, now=later)
    assert decision.accepted
    assert [e.device_id for e in select_valid(decision.value, later, AOR)] == ["phone", "tablet"]


def test_an_expired_newer_entry_still_blocks_the_replay_of_an_older_one() -> None:
    # seq 1 lives a week; seq 2 (newer) only a minute. Once seq 2 has expired, replaying
    # seq 1 must not bring its contacts back.
    old_long = entry(seq=1, expires=NOW + 6 * DAY)
    newer_short = entry(seq=2, expires=NOW + 60, contacts=(contact(n=2),))
    stored = store(value(newer_short)).value
    later = NOW + 600
    assert refused(store(value(old_long), old=stored, now=later), "stale")
    assert select_valid(stored, later, AOR) == []


def test_without_replay_guard_expired_entries_are_dropped_at_once() -> None:
    policy = RecordPolicy(replay_guard=0)
    stored = store(value(entry(device="laptop", expires=NOW + 60)), policy=policy).value
    later = NOW + 600
    decision = store(
        value(entry(device="phone", expires=later + HOUR)), stored, now=later, policy=policy
    )
    assert [e.device_id for e in parse_record(decision.value).entries] == ["phone"]


def test_unreadable_stored_state_does_not_block_the_owner() -> None:
    decision = store(value(entry()), old=b"corrupt")
    assert decision.accepted


# -- enrolled overlays -----------------------------------------------------------------------------


ENROLLED = RecordPolicy.enrolled(CA.public_key_bytes)


def cert_for(
    identity: Identity = ALICE,
    aor: str = AOR,
    not_after: float = NOW + 30 * DAY,
    ca: OverlayCA = CA,
    not_before: float = 0,
) -> bytes:
    return ca.issue(aor, identity.public_key_bytes, not_after, not_before)


def test_aor_certificate_round_trip() -> None:
    raw = cert_for()
    cert = AoRCertificate.from_bytes(raw)
    assert cert.aor == AOR
    assert cert.public_key == ALICE.public_key_bytes
    assert cert.not_after == int(NOW + 30 * DAY)
    assert cert.verify(CA.public_key_bytes)
    assert not cert.verify(ALICE.public_key_bytes)
    assert cert.to_bytes() == raw


@pytest.mark.parametrize(
    "bad",
    [b"", b"P2C1", cert_for()[:-1], cert_for() + b"x", b"XXXX" + cert_for()[4:]],
)
def test_aor_certificate_parser_is_strict(bad: bytes) -> None:
    with pytest.raises(RecordError):
        AoRCertificate.from_bytes(bad)


def test_overlay_ca_refuses_malformed_requests() -> None:
    with pytest.raises(RecordError):
        CA.issue(AOR, b"short", NOW)
    with pytest.raises(RecordError):
        CA.issue(AOR, ALICE.public_key_bytes, NOW, not_before=NOW + 1)
    with pytest.raises(InvalidAoR):
        CA.issue("nonsense", ALICE.public_key_bytes, NOW)


def test_enrolled_mode_accepts_a_certified_key() -> None:
    pins: dict[str, bytes] = {}
    e = entry(certificate=cert_for())
    decision = store(value(e), policy=ENROLLED, pins=pins)
    assert decision.accepted, decision.reason
    assert pins == {}  # the CA decides, nothing is pinned
    assert select_valid(decision.value, NOW, AOR, policy=ENROLLED) == [e]


def test_enrolled_mode_allows_a_certified_key_rotation() -> None:
    old = store(value(entry(certificate=cert_for())), policy=ENROLLED).value
    rotated = entry(identity=MALLORY, seq=2, certificate=cert_for(MALLORY))
    assert store(value(rotated), old=old, policy=ENROLLED).accepted


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: entry(), "certificate: missing"),
        (lambda: entry(certificate=cert_for(ca=OverlayCA(seeded(8)))), "certificate: not signed"),
        (lambda: entry(certificate=cert_for(aor="sip:bob@p2p.example")), "certificate: issued"),
        (lambda: entry(certificate=cert_for(MALLORY)), "certificate: certifies another key"),
        (
            lambda: entry(identity=MALLORY, certificate=cert_for(ALICE)),
            "certificate: certifies another key",
        ),
        (lambda: entry(certificate=cert_for(not_after=NOW + 60)), "certificate: the entry"),
        (
            lambda: entry(certificate=cert_for(not_before=NOW + DAY)),
            "certificate: not yet valid",
        ),
        (lambda: entry(certificate=b"P2C1 garbage"), "certificate: malformed"),
    ],
)
def test_enrolled_mode_refuses_uncertified_or_wrongly_certified_keys(make, reason: str) -> None:
    decision = store(value(make()), policy=ENROLLED)
    assert refused(decision, reason), decision.reason
    assert select_valid(value(make()), NOW, AOR, policy=ENROLLED) == []


def test_enrolled_mode_refuses_an_expired_certificate() -> None:
    # an entry may not outlive its certificate, so once the certificate has expired so has
    # the entry; the certificate check itself also refuses it
    e = entry(certificate=cert_for(not_after=NOW + HOUR), expires=NOW + HOUR)
    assert ENROLLED.accept(AOR, e, None, NOW).accepted
    assert not ENROLLED.accept(AOR, e, None, NOW + HOUR).accepted
    assert ENROLLED._check_certificate(AOR, e, NOW + HOUR).reason == "certificate: expired"


def test_policy_configuration_is_checked() -> None:
    with pytest.raises(RecordError):
        RecordPolicy(mode=PolicyMode.ENROLLED)
    with pytest.raises(RecordError):
        RecordPolicy.enrolled(b"short")
    with pytest.raises(RecordError):
        RecordPolicy(ca_public_key=CA.public_key_bytes)
    with pytest.raises(RecordError):
        RecordPolicy(max_lifetime=0)
    assert RecordPolicy.open().mode is PolicyMode.OPEN


# -- policy.accept and readers ---------------------------------------------------------------------


def test_policy_accept_on_its_own() -> None:
    e = entry()
    assert OPEN.accept(AOR, e, None, NOW).accepted
    assert OPEN.accept("alice@P2P.example", e, ALICE.public_key_bytes, NOW).accepted
    assert OPEN.accept(AOR, e, MALLORY.public_key_bytes, NOW).reason.startswith("pinned-key")
    assert OPEN.accept("sip:bob@p2p.example", e, None, NOW).reason.startswith("key-mismatch")
    assert OPEN.accept("garbage", e, None, NOW).reason.startswith("key-mismatch")
    assert OPEN.accept(AOR, e, None, NOW + 2 * HOUR).reason.startswith("expired")


def test_select_valid_rechecks_everything() -> None:
    good = entry(device="laptop")
    forged = dataclasses.replace(entry(device="phone"), seq=9)  # signature no longer matches
    expired = entry(device="old", expires=NOW - 1)
    tombstone = entry(device="gone", contacts=())
    data = value(good, forged, expired, tombstone)
    assert select_valid(data, NOW, AOR) == [good]
    assert select_valid(data, NOW, "alice@P2P.EXAMPLE") == [good]
    assert select_valid(data, NOW, "sip:bob@p2p.example") == []
    assert select_valid(data, NOW, AOR, pinned_key=MALLORY.public_key_bytes) == []
    assert select_valid(data, NOW, AOR, pinned_key=ALICE.public_key_bytes) == [good]
    assert select_valid(data, NOW + 2 * HOUR, AOR) == []


def test_select_valid_without_pin_gives_nothing_when_keys_disagree() -> None:
    data = value(entry(device="laptop"), entry(device="evil", identity=MALLORY))
    assert select_valid(data, NOW, AOR) == []
    assert select_valid(data, NOW, AOR, pinned_key=ALICE.public_key_bytes) == [
        entry(device="laptop")
    ]


@pytest.mark.parametrize("garbage", [b"", b"{}", b"\xff" * 40, "text", None])
def test_select_valid_returns_nothing_for_garbage(garbage: object) -> None:
    assert select_valid(garbage, NOW, AOR) == []  # type: ignore[arg-type]


def test_select_valid_raises_for_a_caller_error() -> None:
    with pytest.raises(InvalidAoR):
        select_valid(value(entry()), NOW, "not an aor")
