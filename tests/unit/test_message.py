"""Unit tests of the SIP grammar: URIs, header values, messages, stream framing."""

from __future__ import annotations

import time

import pytest

from p2psip.endpoint.headers import (
    CSeq,
    NameAddress,
    Via,
    canonical_name,
    header_key,
    parse_address,
    parse_cseq,
    parse_params,
    parse_via,
    split_list,
)
from p2psip.endpoint.message import Headers, Request, Response, StreamParser, parse_message
from p2psip.endpoint.uri import URI, escape, parse_uri, unescape
from p2psip.errors import MessageTooLarge, SIPParseError

INVITE = (
    b"INVITE sip:bob@biloxi.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.com>\r\n"
    b'From: "Alice" <sip:alice@atlanta.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.com>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def request(*headers: str, body: bytes = b"", start: str = "OPTIONS sip:bob@biloxi.com SIP/2.0"):
    """A minimal valid request plus extra header lines."""
    base = [
        "Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1",
        "To: <sip:bob@biloxi.com>",
        "From: <sip:alice@atlanta.com>;tag=1",
        "Call-ID: c1",
        "CSeq: 1 " + start.split(" ", 1)[0],
        "Max-Forwards: 70",
    ]
    return ("\r\n".join([start, *base, *headers, "", ""])).encode() + body


def parse_status(data: bytes, **kwargs: object) -> int:
    """The status of the SIPParseError that parse_message + check raise."""
    with pytest.raises(SIPParseError) as excinfo:
        parse_message(data, **kwargs).check()  # type: ignore[arg-type]
    return excinfo.value.status


# --------------------------------------------------------------------------------------------
# URIs (RFC 3261 §19.1, §25.1; RFC 3966)
# --------------------------------------------------------------------------------------------
def test_sip_uri_all_parts() -> None:
    uri = parse_uri(
        "sips:alice:secretword@atlanta.com:5061;transport=TCP;lr?subject=project%20x&priority=urgent"
    )
    assert uri.scheme == "sips" and uri.is_sip
    assert (uri.user, uri.password, uri.host, uri.port) == (
        "alice",
        "secretword",
        "atlanta.com",
        5061,
    )
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.transport == "tcp"
    assert uri.headers == (("subject", "project x"), ("priority", "urgent"))
    assert uri.aor == "sips:alice@atlanta.com"
    assert str(uri) == (
        "sips:alice:secretword@atlanta.com:5061;transport=TCP;lr?subject=project%20x&priority=urgent"
    )


def test_sip_uri_minimal_and_case() -> None:
    uri = parse_uri("SIP:Alice@Example.COM")
    assert (uri.scheme, uri.user, uri.host, uri.port) == ("sip", "Alice", "Example.COM", None)
    assert uri.aor == "sip:Alice@example.com"
    assert str(parse_uri("sip:h;Transport=TCP")) == "sip:h;transport=TCP"
    assert parse_uri("sip:example.com").user is None
    assert parse_uri("sip:@h").user == ""


def test_tel_uri() -> None:
    uri = parse_uri("tel:+1-212-555-0101;phone-context=example.com")
    assert (uri.scheme, uri.user, uri.host) == ("tel", "+1-212-555-0101", "")
    assert uri.params == {"phone-context": "example.com"}
    assert not uri.is_sip
    assert str(uri) == "tel:+1-212-555-0101;phone-context=example.com"
    assert parse_uri("tel:+1%20212").user == "+1 212"


@pytest.mark.parametrize(
    ("text", "scheme", "opaque"),
    [
        ("urn:service:sos", "urn", "service:sos"),
        ("mailto:a@b.com", "mailto", "a@b.com"),
        ("http://www.example.com/a?b=c;d", "http", "//www.example.com/a?b=c;d"),
        ("isbn:2983792873", "isbn", "2983792873"),
        ("soap.beep://192.0.2.103:3002", "soap.beep", "//192.0.2.103:3002"),
    ],
)
def test_unknown_schemes_are_opaque(text: str, scheme: str, opaque: str) -> None:
    uri = parse_uri(text)
    assert (uri.scheme, uri.opaque, uri.user, uri.params) == (scheme, opaque, None, {})
    assert str(uri) == text
    assert uri.aor == text


def test_ipv6_hosts() -> None:
    uri = parse_uri("sip:alice@[2001:db8::1]:5070;maddr=[2001:db8::2]")
    assert (uri.host, uri.port, uri.host_plain) == ("[2001:db8::1]", 5070, "2001:db8::1")
    assert uri.params == {"maddr": "[2001:db8::2]"}
    assert str(uri) == "sip:alice@[2001:db8::1]:5070;maddr=[2001:db8::2]"
    ambiguous = parse_uri("sip:[2001:db8::10:5070]")  # RFC 5118 §4.3: all address, no port
    assert (ambiguous.host, ambiguous.port) == ("[2001:db8::10:5070]", None)
    assert parse_uri("sip:[::ffff:192.0.2.1]").host_plain == "::ffff:192.0.2.1"


def test_user_password_and_escapes() -> None:
    uri = parse_uri("sip:a%20b:p%40ss@h")
    assert (uri.user, uri.password) == ("a b", "p@ss")
    assert str(uri) == "sip:a%20b:p%40ss@h"
    assert str(parse_uri("sip:%61lice@h")) == "sip:alice@h"  # escaped unreserved: canonical
    assert parse_uri("sip:user;par=u%40example.net@example.com").user == "user;par=u@example.net"
    assert parse_uri("sip:%00@h").user == "\x00"


def test_params_and_headers() -> None:
    uri = parse_uri("sip:h;a=1;B=Two;flag;v=%41?Route=%3Csip:p%3E&x=y")
    assert uri.params == {"a": "1", "b": "Two", "flag": None, "v": "A"}
    assert uri.headers == (("Route", "<sip:p>"), ("x", "y"))
    assert str(uri) == "sip:h;a=1;b=Two;flag;v=A?Route=%3Csip:p%3E&x=y"
    assert parse_uri("sip:h;a=").params == {"a": ""}


@pytest.mark.parametrize(
    "text",
    [
        "alice@atlanta.com",
        "1sip:x",
        "sip:",
        "sip:alice@",
        "sip:h:",
        "sip:h:99999",
        "sip:h:abc",
        "sip:h:" + "1" * 5000,  # never int() a number of unbounded length
        "sip:-h",
        "sip:a b@c",
        "sip:a<b@h",
        "sip:a@h@i",
        "sip:h;=x",
        "sip:h;;a",
        "sip:h;a=b=c",
        "sip:h?",
        "sip:h?a",
        "sip:%zz@h",
        "sip:a%4@h",
        "sip:[2001:db8::1",
        "sip:[zz]",
        "sip:[::1]x",
        "tel:",
        "urn:",
        "mailto:a b",
        'x:"q"',
    ],
)
def test_invalid_uris(text: str) -> None:
    with pytest.raises(SIPParseError) as excinfo:
        parse_uri(text)
    assert excinfo.value.status == 400


def test_escape_and_unescape() -> None:
    assert escape("a b") == "a%20b"
    assert escape("alice") == "alice"
    assert escape("€") == "%E2%82%AC"
    assert escape("a;b") == "a;b"  # allowed raw in a user part
    assert unescape("%41%62c") == "Abc"
    assert unescape("%E2%82%AC") == "€"
    assert unescape("value%2541") == "value%41"  # once, not recursively
    assert unescape("no escapes") == "no escapes"
    with pytest.raises(SIPParseError):
        unescape("%4")
    # An octet that is not UTF-8 survives the round trip as that octet.
    assert escape(unescape("%E9")) == "%E9"
    assert escape(unescape("%C3%A9%E9")) == "%C3%A9%E9"


def test_non_utf8_escapes_keep_their_octets() -> None:
    latin1, utf8 = parse_uri("sip:%E9@h"), parse_uri("sip:%C3%A9@h")
    assert str(latin1) == "sip:%E9@h"
    assert str(utf8) == "sip:%C3%A9@h"
    assert utf8.user == "é"
    assert not latin1.equivalent(utf8)
    assert str(parse_uri("sip:%C3%A9%E9@h")) == "sip:%C3%A9%E9@h"


@pytest.mark.parametrize(
    ("a", "b"),
    [  # RFC 3261 §19.1.4: equivalent
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
        ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
        (
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
        ),
        (
            "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
            "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
        ),
    ],
)
def test_uri_equivalence(a: str, b: str) -> None:
    assert parse_uri(a).equivalent(parse_uri(b))
    assert parse_uri(b).equivalent(parse_uri(a))


@pytest.mark.parametrize(
    ("a", "b"),
    [  # RFC 3261 §19.1.4: not equivalent
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
        ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
        ("sip:alice:pw@h", "sip:alice@h"),
        ("sip:a@h;maddr=x", "sip:a@h"),
        ("sip:a@h;user=phone", "sip:a@h"),
        ("sip:%00@h", "sip:%00%00@h"),
    ],
)
def test_uri_not_equivalent(a: str, b: str) -> None:
    assert not parse_uri(a).equivalent(parse_uri(b))
    assert not parse_uri(b).equivalent(parse_uri(a))


def test_uri_helpers() -> None:
    uri = URI(user="bob", host="biloxi.com")
    assert str(uri) == "sip:bob@biloxi.com"
    assert str(uri.with_(port=5070, params={"transport": "tcp"})) == (
        "sip:bob@biloxi.com:5070;transport=tcp"
    )
    assert URI.parse("sip:bob@biloxi.com") == uri
    assert str(URI(user="a b", password="p:w", host="h")) == "sip:a%20b:p%3Aw@h"
    assert str(URI(scheme="tel", user="+1 555", params={"isub": "1"})) == "tel:+1%20555;isub=1"


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@atlanta.com",
        "sips:a:b@[2001:db8::1]:5061;transport=tls;lr;maddr=239.255.255.1?h=v&h2=%20",
        "sip:user;par=u%40example.net@example.com",
        "sip:%00%00@host5.example.com",
        "sip:I%20have%20spaces@example.net",
        "tel:+1-212-555-0101;phone-context=example.com",
        "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
    ],
)
def test_uri_serialization_round_trip(text: str) -> None:
    uri = parse_uri(text)
    assert str(uri) == text
    assert parse_uri(str(uri)) == uri


# --------------------------------------------------------------------------------------------
# name-addr / addr-spec (RFC 3261 §20.10, §20.20, §20.39)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "display", "uri", "params"),
    [
        (
            '"Alice Liddell" <sip:alice@atlanta.com>;tag=1928301774',
            "Alice Liddell",
            "sip:alice@atlanta.com",
            {"tag": "1928301774"},
        ),
        ("Bob <sip:bob@biloxi.com>", "Bob", "sip:bob@biloxi.com", {}),
        ("Lee M.  Foote<sips:lee@example.com>", "Lee M. Foote", "sips:lee@example.com", {}),
        ("<sip:x@y>", None, "sip:x@y", {}),
        ('"" <sip:x@y>', "", "sip:x@y", {}),
        (r'"a \"b\" \\ c" <sip:x@y>', 'a "b" \\ c', "sip:x@y", {}),
        ('"Doe, John"<sip:x@y> ; tag = 5 ', "Doe, John", "sip:x@y", {"tag": "5"}),
        # addr-spec: the parameters after the URI belong to the header (RFC 3261 §20.10)
        ("sip:x@y;tag=5;user=phone", None, "sip:x@y", {"tag": "5", "user": "phone"}),
        ("<sip:x@y;user=phone>;tag=5", None, "sip:x@y;user=phone", {"tag": "5"}),
        (
            '<sip:a@h>;+sip.instance="<urn:uuid:1234>";expires=60;q=0.5;Flag',
            None,
            "sip:a@h",
            {"+sip.instance": "<urn:uuid:1234>", "expires": "60", "q": "0.5", "flag": None},
        ),
        ("<urn:service:sos>", None, "urn:service:sos", {}),
    ],
)
def test_parse_address(text: str, display: str | None, uri: str, params: dict[str, str]) -> None:
    addr = parse_address(text)
    assert addr.display_name == display
    assert str(addr.uri) == uri
    assert addr.params == params


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "Bell, Alexander <sip:a.g.bell@bell-tel.com>",
        '"unterminated <sip:x@y>',
        "<sip:x@y",
        "sip:x@y?Route=%3Csip:p%3E",
        '"a" sip:x@y',
        "<sip:x@y> junk",
        "<sip:x@y>;=a",
        "<sip:x@y>;a b",
        "< sip:x@y >",
        "<sip:x @y>",
        "<>",
    ],
)
def test_invalid_addresses(text: str) -> None:
    with pytest.raises(SIPParseError) as excinfo:
        parse_address(text)
    assert excinfo.value.status == 400


@pytest.mark.parametrize("display", ["Bob", "a  b", " a", "a\tb", "", "a,b", 'a "b"', "é", "a\\b"])
def test_name_address_round_trip(display: str) -> None:
    addr = NameAddress(parse_uri("sip:x@y"), display, {"tag": "1", "x": "a b", "e": ""})
    again = parse_address(str(addr))
    assert (again.display_name, again.uri, again.params) == (display, addr.uri, addr.params)


def test_name_address_str_and_tag() -> None:
    addr = NameAddress(parse_uri("sip:x@y"), "Bob")
    assert str(addr) == "Bob <sip:x@y>"
    tagged = addr.with_tag("abc")
    assert tagged.tag == "abc" and addr.tag is None
    assert str(tagged) == "Bob <sip:x@y>;tag=abc"
    assert str(NameAddress(parse_uri("sip:x@y"))) == "<sip:x@y>"


def test_long_token_display_is_not_exponential() -> None:
    # A run of token characters not followed by "<" must fail in linear time.
    start = time.perf_counter()
    for n in (30, 5000):
        with pytest.raises(SIPParseError):
            parse_address("a" * n + ";")
        with pytest.raises(SIPParseError):
            parse_address("a " * n + "!")
    assert time.perf_counter() - start < 1.0


# --------------------------------------------------------------------------------------------
# Via (RFC 3261 §20.42; RFC 3581; RFC 5118)
# --------------------------------------------------------------------------------------------
def test_via_basic() -> None:
    via = parse_via("SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds")
    assert (via.transport, via.host, via.port, via.branch) == (
        "UDP",
        "pc33.atlanta.com",
        None,
        "z9hG4bK776asdhds",
    )
    assert via.protocol == "SIP/2.0"
    assert str(via) == "SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds"


def test_via_with_lws() -> None:
    # RFC 3261 §20.42 example
    via = parse_via(
        "SIP / 2.0 / UDP first.example.com: 4000;ttl=16 ;maddr=224.2.0.1"
        " ;branch=z9hG4bKa7c6a8dlze.1"
    )
    assert (via.host, via.port) == ("first.example.com", 4000)
    assert via.params == {"ttl": "16", "maddr": "224.2.0.1", "branch": "z9hG4bKa7c6a8dlze.1"}
    assert str(via) == (
        "SIP/2.0/UDP first.example.com:4000;ttl=16;maddr=224.2.0.1;branch=z9hG4bKa7c6a8dlze.1"
    )
    assert parse_via(str(via)) == via


def test_via_ipv6_received_rport() -> None:
    via = parse_via("SIP/2.0/tls [2001:db8::1]:5061;rport;received=2001:db8::2;branch=z9hG4bKx")
    assert (via.transport, via.host, via.port) == ("TLS", "[2001:db8::1]", 5061)
    assert via.params["rport"] is None
    assert via.rport is None
    assert via.received == "2001:db8::2"
    assert parse_via("SIP/2.0/UDP h;received=[2001:db8::2]").received == "[2001:db8::2]"
    assert parse_via("SIP/2.0/UDP h;rport=5061;received=192.0.2.1").rport == 5061
    assert parse_via("SIP/2.0/UDP h;rport=²").rport is None  # not an ASCII number
    assert parse_via("SIP/2.0/UDP H.Example.COM:5060").sent_by == ("h.example.com", 5060)


def test_via_built_and_serialized() -> None:
    via = Via("UDP", "192.0.2.1", 5060, {"branch": "z9hG4bK1", "rport": None})
    assert str(via) == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport"
    assert parse_via(str(via)) == via


@pytest.mark.parametrize(
    "text",
    [
        "SIP/3.0/UDP h",
        "SIPS/2.0/UDP h",
        "SIP/2.0 h",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP h:70000",
        "SIP/2.0/UDP h:",
        'SIP/2.0/UDP h;branch="x',
        "SIP/2.0/UDP h;;branch=x",
        "SIP/2.0/UDP h;branch=",
        "SIP/2.0/UDP h junk",
        "",
    ],
)
def test_invalid_vias(text: str) -> None:
    with pytest.raises(SIPParseError):
        parse_via(text)


# --------------------------------------------------------------------------------------------
# CSeq, parameters, comma lists, compact forms, folding
# --------------------------------------------------------------------------------------------
def test_cseq() -> None:
    assert parse_cseq("4711 INVITE") == CSeq(4711, "INVITE")
    assert parse_cseq("  0009\t INVITE ") == CSeq(9, "INVITE")
    assert str(CSeq(1, "BYE")) == "1 BYE"
    assert parse_cseq(str(2**31 - 1) + " ACK").seq == 2**31 - 1
    for bad in ("2147483648 INVITE", "1", "INVITE", "a INVITE", "1 INV ITE", "-1 BYE", ""):
        with pytest.raises(SIPParseError):
            parse_cseq(bad)


def test_parse_params() -> None:
    assert parse_params("tag = 1 ; LR") == {"tag": "1", "lr": None}
    assert parse_params('a="x;y";b') == {"a": "x;y", "b": None}
    assert parse_params('q="a \\"b\\""') == {"q": 'a "b"'}
    assert parse_params("received=[2001:db8::1]") == {"received": "[2001:db8::1]"}
    assert parse_params("") == {}
    for bad in (" ", "=x", "a=", "a b", 'a="x', 'a="x"y', "a=<b>", "a=b,c", ";"):
        with pytest.raises(SIPParseError):
            parse_params(bad)


def test_split_list_respects_quotes_and_brackets() -> None:
    value = '<sip:a@b>;q=1, "Doe, John" <sip:c@d> ,<sip:e@f;x=1,2>'
    assert split_list(value) == ["<sip:a@b>;q=1", '"Doe, John" <sip:c@d>', "<sip:e@f;x=1,2>"]
    assert split_list(" single ") == ["single"]
    assert split_list('"a\\", b", c') == ['"a\\", b"', "c"]
    for bad in ("a,,b", "a,", ",a", "", " , ", '"unterminated, x'):
        with pytest.raises(SIPParseError):
            split_list(bad)


@pytest.mark.parametrize(
    ("compact", "name"),
    [
        ("i", "Call-ID"),
        ("m", "Contact"),
        ("f", "From"),
        ("t", "To"),
        ("v", "Via"),
        ("l", "Content-Length"),
        ("c", "Content-Type"),
        ("k", "Supported"),
        ("s", "Subject"),
        ("e", "Content-Encoding"),
        ("o", "Event"),
        ("u", "Allow-Events"),
        ("r", "Refer-To"),
        ("b", "Referred-By"),
        ("x", "Session-Expires"),
    ],
)
def test_compact_forms(compact: str, name: str) -> None:
    assert canonical_name(compact) == canonical_name(compact.upper()) == name
    assert header_key(compact) == name.lower()


def test_compact_forms_in_a_message() -> None:
    data = (
        b"INVITE sip:bob@biloxi.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"f: <sip:a@b>;tag=1\r\n"
        b"T: <sip:c@d>\r\n"
        b"i: abc\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"m: <sip:a@h>\r\n"
        b"k: timer, 100rel\r\n"
        b"c: application/sdp; charset=x\r\n"
        b"s: hi\r\n"
        b"L: 3\r\n"
        b"\r\nabc"
    )
    msg = parse_message(data)
    msg.check()
    assert [n for n, _ in msg.headers.items()] == [
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "Supported",
        "Content-Type",
        "Subject",
        "Content-Length",
    ]
    assert msg.call_id == "abc"
    assert msg.tokens("Supported") == ["timer", "100rel"]
    assert msg.content_type == "application/sdp"
    assert msg.content_length == 3 and msg.body == b"abc"
    assert msg.headers.get("k") == msg.headers.get("SUPPORTED") == "timer, 100rel"


def test_line_folding_is_one_space() -> None:
    msg = parse_message(
        request(
            "Subject: a\r\n  b\r\n\tc",
            "Contact: <sip:a@h>,\r\n <sip:b@h>",
            "Route:\r\n <sip:p1;lr>",
        )
    )
    msg.check()
    assert msg.headers.get("Subject") == "a b c"
    assert [c.uri.user for c in msg.contacts] == ["a", "b"]
    assert msg.routes[0].uri.params == {"lr": None}
    bare_lf = parse_message(b"OPTIONS sip:a@b SIP/2.0\nSubject: a\n  b\nContent-Length: 2\n\nxyz")
    assert bare_lf.headers.items() == [("Subject", "a b"), ("Content-Length", "2")]
    assert bare_lf.body == b"xy"


def test_header_values_keep_non_lws_whitespace() -> None:
    # Only SP and HTAB are LWS (RFC 3261 §25.1); NBSP and friends are part of the value.
    msg = parse_message(request("Subject: \t hi\u00a0 "))
    assert msg.headers.get("Subject") == "hi\u00a0"
    msg = parse_message(request("X-A: \x1fv"))
    assert msg.headers.get("X-A") == "\x1fv"


# --------------------------------------------------------------------------------------------
# Headers container
# --------------------------------------------------------------------------------------------
def test_headers_container() -> None:
    h = Headers(
        [
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"),
            ("v", "SIP/2.0/UDP c"),
            ("to", "<sip:x@y>"),
        ]
    )
    assert h.items()[1:] == [("Via", "SIP/2.0/UDP c"), ("To", "<sip:x@y>")]  # canonical names
    assert h.get("VIA") == "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"
    assert len(h.get_lines("via")) == 2
    assert h.get_all("v") == [
        "SIP/2.0/UDP a;branch=z9hG4bK1",
        "SIP/2.0/UDP b;branch=z9hG4bK2",
        "SIP/2.0/UDP c",
    ]
    assert "t" in h and "To" in h and "From" not in h and 5 not in h
    assert h.get("From") is None and h.get("From", "x") == "x"
    assert h.remove_first_value("Via") == "SIP/2.0/UDP a;branch=z9hG4bK1"
    assert h.get_lines("Via") == ["SIP/2.0/UDP b;branch=z9hG4bK2", "SIP/2.0/UDP c"]
    assert h.remove_first_value("Route") is None
    h.prepend("Via", "SIP/2.0/TCP z")
    h.set("Max-Forwards", 70)
    h.add("m", "<sip:c@h>")
    assert h.items() == [
        ("Via", "SIP/2.0/TCP z"),
        ("Via", "SIP/2.0/UDP b;branch=z9hG4bK2"),
        ("Via", "SIP/2.0/UDP c"),
        ("To", "<sip:x@y>"),
        ("Max-Forwards", "70"),
        ("Contact", "<sip:c@h>"),
    ]
    h.set("via", "SIP/2.0/UDP only")
    assert h.get_lines("Via") == ["SIP/2.0/UDP only"] and h.items()[0][0] == "Via"
    copy = h.copy()
    h.remove("Contact")
    assert "Contact" not in h and "Contact" in copy
    assert len(copy) == len(list(copy)) == 4


def test_unknown_headers_are_opaque_and_not_split() -> None:
    msg = parse_message(request("X-List: a, b", "Date: Sat, 13 Nov 2010 23:29:00 GMT"))
    assert msg.headers.get_all("X-List") == ["a, b"]
    assert msg.headers.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]


# --------------------------------------------------------------------------------------------
# Messages: parse, typed access, check
# --------------------------------------------------------------------------------------------
def test_parse_request() -> None:
    msg = parse_message(INVITE)
    msg.check()
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert str(msg.uri) == "sip:bob@biloxi.com"
    assert msg.top_via.branch == "z9hG4bK776asdhds"
    assert msg.max_forwards == 70
    assert msg.to.display_name == "Bob" and msg.to.tag is None
    assert msg.from_.display_name == "Alice" and msg.from_.tag == "1928301774"
    assert msg.call_id == "a84b4c76e66710@pc33.atlanta.com"
    assert msg.cseq == CSeq(314159, "INVITE")
    assert [str(c.uri) for c in msg.contacts] == ["sip:alice@pc33.atlanta.com"]
    assert not msg.contact_star
    assert msg.content_type == "application/sdp"
    assert msg.content_length == 4 and msg.body == b"v=0\n"
    assert msg.expires is None and msg.routes == [] and msg.record_routes == []
    assert msg.to_bytes() == INVITE


def test_parse_response() -> None:
    data = INVITE.replace(b"INVITE sip:bob@biloxi.com SIP/2.0", b"SIP/2.0 180 Ringing")
    msg = parse_message(data)
    msg.check()
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (180, "Ringing")
    assert msg.is_provisional and not msg.is_final
    assert msg.to_bytes() == data
    ok = parse_message(b"SIP/2.0 200 OK  with  spaces \r\n\r\n")
    assert isinstance(ok, Response) and ok.reason == "OK  with  spaces " and ok.is_final


def test_contact_star_and_expires() -> None:
    msg = parse_message(
        request("Contact: *", "Expires: 0", start="REGISTER sip:registrar.biloxi.com SIP/2.0")
    )
    msg.check()
    assert msg.contact_star and msg.contacts == []
    assert msg.expires == 0


def test_typed_values_are_cached_until_invalidated() -> None:
    msg = parse_message(INVITE)
    assert msg.cseq is msg.cseq
    msg.headers.set("CSeq", "2 INVITE")
    assert msg.cseq.seq == 314159
    msg.invalidate()
    assert msg.cseq.seq == 2


def test_leading_crlf_ignored() -> None:
    # RFC 3261 §7.5
    assert parse_message(b"\r\n\r\n" + INVITE).to_bytes() == INVITE


def test_content_length_framing_datagram() -> None:
    assert parse_message(INVITE + b"trailing").body == b"v=0\n"
    no_length = INVITE.replace(b"Content-Length: 4\r\n", b"")
    assert parse_message(no_length).body == b"v=0\n"  # datagram: rest of the datagram
    assert parse_message(no_length, datagram=False).body == b""
    twice = INVITE.replace(b"Content-Length: 4\r\n", b"Content-Length: 4\r\nl: 4\r\n")
    assert parse_message(twice).body == b"v=0\n"  # repeated but agreeing


@pytest.mark.parametrize(
    "length",
    [b"5", b"-1", b"five", b"4 4", b"\xd9\xa4", b"1" * 5000, b""],
)
def test_bad_content_length(length: bytes) -> None:
    data = INVITE.replace(b"Content-Length: 4", b"Content-Length: " + length)
    with pytest.raises(SIPParseError) as excinfo:
        parse_message(data)
    assert excinfo.value.status == 400


def test_conflicting_content_length() -> None:
    data = INVITE.replace(b"Content-Length: 4\r\n", b"Content-Length: 4\r\nl: 3\r\n")
    with pytest.raises(SIPParseError):
        parse_message(data)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", 400),
        (b"\r\n", 400),
        (b"INVITE sip:a@b SIP/3.0\r\n\r\n", 505),
        (b"SIP/3.0 200 OK\r\n\r\n", 505),
        (b"INVITE sip:a@b HTTP/1.1\r\n\r\n", 400),
        (b"INVITE  sip:a@b SIP/2.0\r\n\r\n", 400),
        (b"INVITE sip:a@b SIP/2.0 \r\n\r\n", 400),
        (b"INVITE sip:a@b\r\n\r\n", 400),
        (b"INV<ITE sip:a@b SIP/2.0\r\n\r\n", 400),
        (b"SIP/2.0 2000 OK\r\n\r\n", 400),
        (b"SIP/2.0 099 Low\r\n\r\n", 400),
        (b"SIP/2.0 700 High\r\n\r\n", 400),
        (b"SIP/2.0 20 OK\r\n\r\n", 400),
        ("SIP/2.0 ²³¹ OK\r\n\r\n".encode(), 400),
        ("SIP/2.0 ٢٠٠ OK\r\n\r\n".encode(), 400),
        (b"SIP/2.0 4294967301 big\r\n\r\n", 400),
        (b"OPTIONS sip:a@b SIP/2.0\r\nNo colon here\r\n\r\n", 400),
        (b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n", 400),
        (b"OPTIONS sip:a@b SIP/2.0\r\n: x\r\n\r\n", 400),
        (b"\xff\xfe\x00garbage", 400),
    ],
)
def test_start_line_and_header_errors(data: bytes, status: int) -> None:
    # Header lines are split lazily: a malformed one raises when the headers are first
    # used, at the latest from headers.validate() (which Request.check() implies).
    with pytest.raises(SIPParseError) as excinfo:
        parse_message(data).headers.validate()
    assert excinfo.value.status == status


def test_malformed_header_line_fails_the_request_check() -> None:
    message = parse_message(b"OPTIONS sip:a@b SIP/2.0\r\nNo colon here\r\n\r\n")
    with pytest.raises(SIPParseError):
        message.check()


@pytest.mark.parametrize(
    ("start", "headers"),
    [
        ("OPTIONS <sip:bob@biloxi.com> SIP/2.0", ()),  # R-URI in <>
        ("OPTIONS sip:bob@biloxi.com?Route=%3Csip:x%3E SIP/2.0", ()),  # headers in R-URI
        ("OPTIONS sip:2001:db8::10 SIP/2.0", ()),  # RFC 5118 §4.2
        ("OPTIONS sip:bob@biloxi.com SIP/2.0", ("Max-Forwards: 256",)),
        ("OPTIONS sip:bob@biloxi.com SIP/2.0", ("Max-Forwards: -1",)),
        ("OPTIONS sip:bob@biloxi.com SIP/2.0", ("Expires: 4294967296",)),
        ("OPTIONS sip:bob@biloxi.com SIP/2.0", ("To: <sip:other@biloxi.com>",)),
        ("OPTIONS sip:bob@biloxi.com SIP/2.0", ("Call-ID: c2",)),
        ("OPTIONS sip:bob@biloxi.com SIP/2.0", ("Contact: <sip:a@b",)),
        ("OPTIONS sip:bob@biloxi.com SIP/2.0", ("CSeq: 2 OPTIONS",)),
    ],
)
def test_check_rejects(start: str, headers: tuple[str, ...]) -> None:
    assert parse_status(request(*headers, start=start)) == 400


@pytest.mark.parametrize("missing", ["Via", "To", "From", "Call-ID", "CSeq"])
def test_check_missing_mandatory_header(missing: str) -> None:
    lines = request().split(b"\r\n")
    data = b"\r\n".join(line for line in lines if not line.startswith(missing.encode() + b":"))
    assert parse_status(data) == 400
    response = data.replace(b"OPTIONS sip:bob@biloxi.com SIP/2.0", b"SIP/2.0 200 OK")
    assert parse_status(response) == 400


def test_check_cseq_method_mismatch() -> None:
    data = request().replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
    assert parse_status(data) == 400


def test_call_id_with_whitespace_is_invalid() -> None:
    data = request().replace(b"Call-ID: c1", b"Call-ID: c 1")
    assert parse_status(data) == 400


def test_max_size_is_513() -> None:
    with pytest.raises(MessageTooLarge) as excinfo:
        parse_message(INVITE, max_size=len(INVITE) - 1)
    assert excinfo.value.status == 513
    assert parse_message(INVITE, max_size=len(INVITE)).body == b"v=0\n"


# --------------------------------------------------------------------------------------------
# Building and serializing
# --------------------------------------------------------------------------------------------
def test_build_request_and_serialize() -> None:
    req = Request(
        "INVITE",
        "sip:bob@biloxi.com",
        [
            ("Via", "SIP/2.0/UDP pc33.atlanta.com;branch=z9hG4bK776asdhds"),
            ("Max-Forwards", 70),
            ("To", "Bob <sip:bob@biloxi.com>"),
            ("From", '"Alice" <sip:alice@atlanta.com>;tag=1928301774'),
            ("Call-ID", "a84b4c76e66710@pc33.atlanta.com"),
            ("CSeq", CSeq(314159, "INVITE")),
            ("Contact", "<sip:alice@pc33.atlanta.com>"),
            ("Content-Type", "application/sdp"),
        ],
        b"v=0\n",
    )
    req.check()
    assert req.to_bytes() == INVITE  # Content-Length added at the end
    assert bytes(req) == INVITE
    assert str(req) == INVITE.decode()
    again = parse_message(req.to_bytes())
    assert isinstance(again, Request)
    assert (again.method, str(again.uri), again.headers.items(), again.body) == (
        "INVITE",
        "sip:bob@biloxi.com",
        [*req.headers.items(), ("Content-Length", "4")],
        b"v=0\n",
    )


def test_serialize_corrects_content_length() -> None:
    req = Request("MESSAGE", URI(user="bob", host="biloxi.com"), body=b"hello")
    req.headers.add("Content-Length", 99)
    req.headers.add("Subject", "x")
    req.headers.add("l", 7)
    assert req.to_bytes() == (
        b"MESSAGE sip:bob@biloxi.com SIP/2.0\r\nContent-Length: 5\r\nSubject: x\r\n\r\nhello"
    )
    built = Request("MESSAGE", "sip:bob@biloxi.com", [("l", "7"), ("content-length", "1")])
    assert built.to_bytes() == b"MESSAGE sip:bob@biloxi.com SIP/2.0\r\nContent-Length: 0\r\n\r\n"
    msg = parse_message(INVITE)
    msg.body = b""
    assert b"\r\nContent-Length: 0\r\n" in msg.to_bytes()
    assert parse_message(msg.to_bytes()).content_length == 0


def test_build_response() -> None:
    assert Response(200).reason == "OK"
    assert Response(299).reason == "Unknown"
    assert Response(486, "Busy").start_line() == "SIP/2.0 486 Busy"
    assert Response(180).to_bytes() == b"SIP/2.0 180 Ringing\r\nContent-Length: 0\r\n\r\n"
    resp = Response(200, "OK", Headers([("v", "SIP/2.0/UDP h;branch=z9hG4bK1")]), b"x")
    assert resp.to_bytes() == (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 1\r\n\r\nx"
    )


def test_reading_request_uri_keeps_the_received_text() -> None:
    data = INVITE.replace(b"sip:bob@biloxi.com SIP", b"SIP:%62ob@biloxi.com;Transport=TCP SIP")
    msg = parse_message(data)
    assert isinstance(msg, Request)
    assert str(msg.uri) == "sip:bob@biloxi.com;transport=TCP"
    assert msg.to_bytes() == data  # e.g. digest "uri" must still match the Request-URI


def test_edited_request_uri_is_serialized() -> None:
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    msg.uri = parse_uri("sip:bob@192.0.2.4:5070")
    assert msg.to_bytes().startswith(b"INVITE sip:bob@192.0.2.4:5070 SIP/2.0\r\n")
    with pytest.raises(SIPParseError):
        Request("INVITE", "not a uri")


def test_body_bytes_are_exact() -> None:
    body = bytes(range(256)) + b"\r\n\r\n" + b"\n\n"
    req = Request("MESSAGE", "sip:a@b", [("Content-Type", "application/octet-stream")], body)
    assert parse_message(req.to_bytes()).body == body
    assert parse_message(req.to_bytes() + b"junk").body == body


def test_non_utf8_header_bytes_round_trip() -> None:
    data = request("Subject: @@ raw", "Content-Length: 0").replace(b"@@", b"\xff\xfe")
    msg = parse_message(data)
    assert msg.to_bytes() == data


# --------------------------------------------------------------------------------------------
# StreamParser (RFC 3261 §18.3; RFC 5626 §3.5.1 keep-alives)
# --------------------------------------------------------------------------------------------
def drain(parser: StreamParser) -> list[Request | Response]:
    out = []
    while (event := parser.next_event()) is not None:
        out.append(event)
    return out


def test_stream_two_messages_in_one_chunk() -> None:
    parser = StreamParser()
    parser.receive_data(INVITE + INVITE)
    events = drain(parser)
    assert [e.to_bytes() for e in events] == [INVITE, INVITE]
    assert parser.buffered == 0


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 10_000])
def test_stream_any_chunking(chunk: int) -> None:
    data = b"\r\n\r\n" + INVITE + b"\r\n" + INVITE
    parser = StreamParser()
    events = []
    for i in range(0, len(data), chunk):
        parser.receive_data(data[i : i + chunk])
        events += drain(parser)
    assert [e.to_bytes() for e in events] == [INVITE, INVITE]
    assert (parser.keepalives, parser.pong_due, parser.buffered) == (2, 1, 0)


def test_stream_ping_and_pong() -> None:
    parser = StreamParser()
    parser.receive_data(b"\r\n\r\n")
    assert parser.next_event() is None
    assert (parser.keepalives, parser.pong_due) == (1, 1)
    parser.receive_data(b"\r\n")  # lone CRLF: could still become a ping
    assert parser.next_event() is None and parser.buffered == 2
    parser.receive_data(INVITE)
    assert parser.next_event() is not None
    assert (parser.keepalives, parser.pong_due) == (2, 1)


def test_stream_ping_byte_by_byte() -> None:
    parser = StreamParser()
    for b in b"\r\n\r\n":
        parser.receive_data(bytes([b]))
        assert parser.next_event() is None
    assert (parser.keepalives, parser.pong_due, parser.buffered) == (1, 1, 0)


def test_stream_waits_for_body() -> None:
    parser = StreamParser()
    parser.receive_data(INVITE[:-1])
    assert parser.next_event() is None
    parser.receive_data(INVITE[-1:])
    msg = parser.next_event()
    assert msg is not None and msg.body == b"v=0\n"


def test_stream_missing_content_length_means_empty_body() -> None:
    parser = StreamParser()
    parser.receive_data(INVITE.replace(b"Content-Length: 4\r\n", b"")[:-4] + INVITE)
    first, second = drain(parser)
    assert first.body == b"" and second.body == b"v=0\n"


@pytest.mark.parametrize("length", [b"-1", b"five", b"1" * 5000, b""])
def test_stream_framing_errors_are_fatal(length: bytes) -> None:
    parser = StreamParser()
    parser.receive_data(INVITE.replace(b"Content-Length: 4", b"Content-Length: " + length))
    with pytest.raises(SIPParseError) as excinfo:
        parser.next_event()
    assert excinfo.value.status == 400
    parser.receive_data(INVITE)  # ignored: the connection must be closed
    with pytest.raises(SIPParseError):
        parser.next_event()
    assert parser.buffered == 0


def test_stream_conflicting_content_length_is_fatal() -> None:
    parser = StreamParser()
    parser.receive_data(INVITE.replace(b"Content-Length: 4\r\n", b"Content-Length: 4\r\nl: 5\r\n"))
    with pytest.raises(SIPParseError):
        parser.next_event()


def test_stream_bad_message_in_a_good_frame_is_not_fatal() -> None:
    parser = StreamParser()
    parser.receive_data(b"BAD LINE\r\nContent-Length: 0\r\n\r\n" + INVITE)
    with pytest.raises(SIPParseError):
        parser.next_event()
    msg = parser.next_event()
    assert msg is not None and msg.to_bytes() == INVITE


def test_stream_max_size() -> None:
    parser = StreamParser(max_size=100)
    parser.receive_data(b"INVITE sip:a@b SIP/2.0\r\n" + b"X: y\r\n" * 20)
    with pytest.raises(MessageTooLarge) as excinfo:
        parser.next_event()
    assert excinfo.value.status == 513

    # Content-Length announcing too much fails before the body arrives.
    parser = StreamParser(max_size=len(INVITE) + 10)
    parser.receive_data(INVITE.replace(b"Content-Length: 4", b"Content-Length: 400")[:-4])
    with pytest.raises(MessageTooLarge):
        parser.next_event()

    parser = StreamParser(max_size=len(INVITE))
    parser.receive_data(INVITE)
    assert parser.next_event() is not None
