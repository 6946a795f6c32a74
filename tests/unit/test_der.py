"""The minimal DER encoder/decoder and PEM armour of p2psip.overlay.der."""

from __future__ import annotations

import base64
import datetime
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2psip.errors import P2PSIPError
from p2psip.overlay import der
from p2psip.overlay.der import DERError

FAST = settings(
    deadline=timedelta(milliseconds=1500),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fast(max_examples: int) -> settings:
    return settings(FAST, max_examples=max_examples)


def test_der_error_is_ours() -> None:
    assert issubclass(DERError, P2PSIPError)


# -- known encodings (X.690 examples and hand-checked values) --------------------------------------


@pytest.mark.parametrize(
    ("value", "encoding"),
    [
        (0, "020100"),
        (1, "020101"),
        (127, "02017f"),
        (128, "02020080"),
        (255, "020200ff"),
        (256, "02020100"),
        (-1, "0201ff"),
        (-128, "020180"),
        (-129, "0202ff7f"),
        (-256, "0202ff00"),
    ],
)
def test_integer_encodings(value: int, encoding: str) -> None:
    assert der.integer(value).hex() == encoding
    assert der.decode_integer(der.decode(bytes.fromhex(encoding))) == value


@pytest.mark.parametrize(
    ("dotted", "encoding"),
    [
        ("1.3.101.112", "06032b6570"),  # id-Ed25519, RFC 8410 §3
        ("2.5.29.19", "0603551d13"),  # basicConstraints
        ("1.2.840.10045.4.3.2", "06082a8648ce3d040302"),  # ecdsa-with-SHA256, RFC 5758 §3.2
        ("1.3.6.1.5.5.7.3.1", "06082b06010505070301"),  # id-kp-serverAuth
        ("2.999.3", "0603883703"),  # X.690 §8.19.5 example: first subidentifier 1079
        ("0.39", "060127"),
    ],
)
def test_oid_encodings(dotted: str, encoding: str) -> None:
    assert der.oid(dotted).hex() == encoding
    assert der.decode_oid(der.decode(bytes.fromhex(encoding))) == dotted


def test_uuid_oid_round_trip() -> None:
    dotted = "2.25.233065262399196248211660220002685419634"
    assert der.decode_oid(der.decode(der.oid(dotted))) == dotted


@pytest.mark.parametrize(
    ("length", "encoding"),
    [(0, "00"), (127, "7f"), (128, "8180"), (255, "81ff"), (256, "820100"), (65536, "83010000")],
)
def test_length_encodings(length: int, encoding: str) -> None:
    assert der.encode_length(length).hex() == encoding


def test_times_follow_rfc5280() -> None:
    utc = datetime.UTC
    # RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050
    assert der.time(datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=utc)) == (
        b"\x17\x0d491231235959Z"
    )
    assert der.time(datetime.datetime(2050, 1, 1, tzinfo=utc)) == b"\x18\x0f20500101000000Z"
    assert der.time(datetime.datetime(1950, 1, 1, tzinfo=utc)) == b"\x17\x0d500101000000Z"
    assert der.time(datetime.datetime(1949, 12, 31, tzinfo=utc)) == b"\x18\x0f19491231000000Z"
    # an aware time in another zone is converted, a naive one is UTC, microseconds are dropped
    east = datetime.timezone(datetime.timedelta(hours=2))
    assert der.time(datetime.datetime(2024, 3, 1, 14, 0, 0, 999, tzinfo=east)) == (
        b"\x17\x0d240301120000Z"
    )
    assert der.time(datetime.datetime(2024, 3, 1, 12)) == b"\x17\x0d240301120000Z"
    assert der.decode_time(der.decode(b"\x17\x0d500101000000Z")).year == 1950
    assert der.decode_time(der.decode(b"\x17\x0d491231235959Z")).year == 2049


def test_constructed_elements_and_children() -> None:
    encoding = der.sequence(der.integer(5), der.context(0, der.integer(2)), der.boolean(True))
    element = der.decode(encoding)
    assert element.tag == der.SEQUENCE and element.constructed
    assert element.encoded == encoding
    first, tagged, flag = element.children()
    assert der.decode_integer(first) == 5
    assert tagged.tag == 0xA0
    assert der.decode_integer(tagged.children()[0]) == 2
    assert der.decode_boolean(flag) is True
    assert der.decode_boolean(der.decode(der.boolean(False))) is False
    with pytest.raises(DERError):
        first.children()  # primitive
    with pytest.raises(DERError):
        first.expect(der.OCTET_STRING)


def test_set_of_sorts_its_elements() -> None:
    # X.690 §11.6: the encodings of a SET OF are sorted
    assert der.set_of(der.integer(2), der.integer(1)) == der.tlv(
        der.SET, der.integer(1) + der.integer(2)
    )


def test_bit_strings() -> None:
    element = der.decode(der.bit_string(b"\x01\x02"))
    assert element.content == b"\x00\x01\x02"
    assert der.decode_bit_string(element) == (b"\x01\x02", 0)
    assert der.decode_bit_string(der.decode(bytes.fromhex("030206c0"))) == (b"\xc0", 6)
    assert der.decode_bit_string(der.decode(bytes.fromhex("030100"))) == (b"", 0)
    implicit = der.decode(der.bit_string(b"\xaa", tag=0x81))
    assert der.decode_bit_string(implicit, tag=0x81) == (b"\xaa", 0)


# -- strictness: everything that is not DER is refused ---------------------------------------------


@pytest.mark.parametrize(
    "encoding",
    [
        "",  # nothing
        "30",  # no length
        "3080",  # indefinite length (X.690 §10.1)
        "300500",  # content shorter than the length
        "30810100",  # long form for a short length
        "3082000100",  # leading zero length octet
        "3085000000000100",  # five length octets
        "1f0100",  # high tag number form
        "02010000",  # trailing bytes
        "30ff",  # reserved length octet
    ],
)
def test_malformed_elements_are_refused(encoding: str) -> None:
    with pytest.raises(DERError):
        der.decode(bytes.fromhex(encoding))


@pytest.mark.parametrize(
    ("encoding", "reader"),
    [
        ("0200", der.decode_integer),  # empty INTEGER
        ("02020001", der.decode_integer),  # redundant 0x00
        ("0202ff80", der.decode_integer),  # redundant 0xff
        ("040100", der.decode_integer),  # OCTET STRING, not INTEGER
        ("010101", der.decode_boolean),  # DER TRUE is 0xff (X.690 §11.1)
        ("0100", der.decode_boolean),
        ("0300", der.decode_bit_string),  # empty BIT STRING
        ("030108", der.decode_bit_string),  # unused bits without octets
        ("030208ff", der.decode_bit_string),  # 8 unused bits
        ("030201ff", der.decode_bit_string),  # an unused bit that is not zero (X.690 §11.2.1)
        ("0600", der.decode_oid),  # empty OID
        ("06022b80", der.decode_oid),  # unfinished subidentifier
        ("0603808001", der.decode_oid),  # subidentifier with a leading 0x80
        ("170c3234303330313132303030", der.decode_time),  # UTCTime without seconds/Z
        ("170d3234303233303132303030305a", der.decode_time),  # 30 February
        ("17113234303330313132303030302b30313030", der.decode_time),  # offset, not Z
        ("18113230353030313031303030303030302e315a", der.decode_time),  # fraction
        ("180d3230353030313031303030305a", der.decode_time),  # GeneralizedTime too short
        ("040d3234303330313132303030305a", der.decode_time),  # OCTET STRING
    ],
)
def test_malformed_values_are_refused(encoding: str, reader) -> None:
    with pytest.raises(DERError):
        reader(der.decode(bytes.fromhex(encoding)))


def test_an_oversized_length_is_refused_without_reading_it() -> None:
    claimed = der.MAX_SIZE + 1
    with pytest.raises(DERError, match="too large"):
        der.read_element(b"\x04" + der.encode_length(claimed) + b"\x00" * 10)


def test_an_over_long_oid_is_refused() -> None:
    with pytest.raises(DERError):
        der.decode_oid(der.decode(der.tlv(der.OID, b"\x81" * 100 + b"\x01")))


def test_every_truncation_of_a_valid_encoding_is_refused() -> None:
    encoding = der.sequence(der.oid("1.3.101.112"), der.octet_string(b"x" * 200))
    der.decode(encoding)
    for end in range(len(encoding)):
        with pytest.raises(DERError):
            der.decode(encoding[:end])


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (der.oid, "1"),
        (der.oid, "3.1"),
        (der.oid, "1.40"),
        (der.oid, "1.2.x"),
        (der.oid, "1.-2"),
        (der.encode_length, -1),
        (der.encode_length, 1 << 40),
    ],
)
def test_encoder_refuses_impossible_values(call, argument) -> None:
    with pytest.raises(DERError):
        call(argument)


def test_decode_refuses_non_bytes() -> None:
    with pytest.raises(DERError):
        der.decode("3000")  # type: ignore[arg-type]


# -- PEM (RFC 7468) --------------------------------------------------------------------------------


def test_pem_round_trip_and_line_length() -> None:
    blob = bytes(range(256)) * 2
    text = der.pem_encode("CERTIFICATE", blob)
    lines = text.decode("ascii").splitlines()
    assert lines[0] == "-----BEGIN CERTIFICATE-----"
    assert lines[-1] == "-----END CERTIFICATE-----"
    assert all(len(line) == 64 for line in lines[1:-2]) and 0 < len(lines[-2]) <= 64
    assert der.pem_decode(text, "CERTIFICATE") == blob
    assert der.pem_decode(text.decode("ascii"), "CERTIFICATE") == blob


def test_pem_decode_is_lax_about_whitespace_and_explanatory_text() -> None:
    body = base64.b64encode(b"hello DER").decode()
    text = (
        f"Subject: x\r\n-----BEGIN X-----\r\n {body[:4]}\n\t{body[4:]}\r\n-----END X-----\ntrailer"
    )
    assert der.pem_decode(text.encode(), "X") == b"hello DER"


def test_pem_decode_takes_the_first_block_with_the_label() -> None:
    text = der.pem_encode("PRIVATE KEY", b"key") + der.pem_encode("CERTIFICATE", b"one")
    text += der.pem_encode("CERTIFICATE", b"two")
    assert der.pem_decode(text, "CERTIFICATE") == b"one"
    assert der.pem_labels(text) == ["PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"]


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"no pem here",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n",  # unfinished
        b"-----BEGIN CERTIFICATE-----\nA*AA\n-----END CERTIFICATE-----\n",  # bad base64
        b"-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n",  # bad padding
        b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",  # empty
        b"x-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",  # not a line start
        b"-----BEGIN ENCRYPTED CERTIFICATE-----\nAAAA\n-----END ENCRYPTED CERTIFICATE-----\n",
        "-----BEGIN CERTIFICATE-----\nAAAA\u00e9\n-----END CERTIFICATE-----\n",  # not ASCII
    ],
)
def test_pem_decode_refusals(text: bytes | str) -> None:
    with pytest.raises(DERError):
        der.pem_decode(text, "CERTIFICATE")


# -- properties ------------------------------------------------------------------------------------


@fast(300)
@given(st.integers(min_value=-(2**1024), max_value=2**1024))
def test_integer_round_trip(value: int) -> None:
    element = der.decode(der.integer(value))
    assert der.decode_integer(element) == value


@fast(300)
@given(
    st.one_of(
        st.tuples(st.integers(0, 1), st.integers(0, 39)),
        st.tuples(st.just(2), st.integers(0, 2**64)),
    ),
    st.lists(st.integers(0, 2**128), max_size=6),
)
def test_oid_round_trip(head: tuple[int, int], rest: list[int]) -> None:
    dotted = ".".join(str(arc) for arc in (*head, *rest))
    encoding = der.oid(dotted)
    if len(encoding) - 2 <= der.MAX_OID_SIZE:
        assert der.decode_oid(der.decode(encoding)) == dotted


@fast(300)
@given(
    st.datetimes(
        min_value=datetime.datetime(1950, 1, 1),
        max_value=datetime.datetime(9999, 12, 31, 23, 59, 59),
        timezones=st.just(datetime.UTC),
    )
)
def test_time_round_trip(moment: datetime.datetime) -> None:
    assert der.decode_time(der.decode(der.time(moment))) == moment.replace(microsecond=0)


@fast(300)
@given(st.binary(max_size=300))
def test_octet_strings_round_trip(value: bytes) -> None:
    assert der.decode(der.octet_string(value)).expect(der.OCTET_STRING).content == value


def test_size_limit_is_exact() -> None:
    largest = der.octet_string(b"\x00" * (der.MAX_SIZE - 4))  # 04 83 xx xx xx + content
    assert len(largest) <= der.MAX_SIZE
    assert len(der.decode(largest).content) == der.MAX_SIZE - 4
    content_limit = der.tlv(der.OCTET_STRING, b"\x00" * der.MAX_SIZE)
    assert len(der.read_element(content_limit)[0].content) == der.MAX_SIZE
    with pytest.raises(DERError):
        der.decode(content_limit)  # the whole encoding is larger than MAX_SIZE
    with pytest.raises(DERError):
        der.read_element(der.tlv(der.OCTET_STRING, b"\x00" * (der.MAX_SIZE + 1)))


def _walk(element: der.Element, depth: int = 0) -> int:
    """Decode everything below ``element``; typed readers on the primitive ones."""
    assert depth < 10000
    if element.constructed:
        return 1 + sum(_walk(child, depth + 1) for child in element.children())
    readers = {
        der.INTEGER: der.decode_integer,
        der.BOOLEAN: der.decode_boolean,
        der.BIT_STRING: der.decode_bit_string,
        der.OID: der.decode_oid,
        der.UTC_TIME: der.decode_time,
        der.GENERALIZED_TIME: der.decode_time,
    }
    reader = readers.get(element.tag)
    if reader is not None:
        reader(element)
    return 1


@fast(1000)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_der_error(data: bytes) -> None:
    try:
        _walk(der.decode(data))
    except DERError:
        pass


@fast(500)
@given(
    st.lists(st.integers(0, 255), min_size=1, max_size=300),
    st.sampled_from([0x30, 0x31, 0xA0, 0xA3]),
)
def test_random_constructed_content_raises_only_der_error(content: list[int], tag: int) -> None:
    try:
        _walk(der.decode(der.tlv(tag, bytes(content))))
    except DERError:
        pass


@fast(300)
@given(st.binary(max_size=300), st.text(max_size=40))
def test_random_pem_text_raises_only_der_error(body: bytes, noise: str) -> None:
    encoded = base64.b64encode(body).decode()
    text = f"{noise}\n-----BEGIN X-----\n{encoded}\n-----END X-----\n{noise}"
    if body and noise.isascii():
        assert der.pem_decode(text, "X") == body
    else:
        with pytest.raises(DERError):
            der.pem_decode(text, "X")


@fast(500)
@given(st.binary(max_size=200))
def test_random_bytes_as_pem_raise_only_der_error(data: bytes) -> None:
    try:
        der.pem_decode(b"-----BEGIN X-----\n" + data + b"\n-----END X-----", "X")
    except DERError:
        pass
