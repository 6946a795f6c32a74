"""RFC 4475 torture messages against the message parser.

Every archive message is fed whole as a datagram, byte by byte through a :class:`StreamParser`
(when it has a Content-Length and CRLF line ends) and, where RFC 3261 §18.3 says the extra octets
of a datagram are ignored, with trailing data. The three must agree.

Status codes that an endpoint chooses for semantic reasons (416, 420, 415, 406, 501...) belong to
the UA core: for those messages the parser must accept and :meth:`check` must pass.
"""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import pytest

from p2psip.endpoint.headers import CSeq
from p2psip.endpoint.message import Request, Response, StreamParser, parse_message
from p2psip.errors import SIPParseError

MESSAGES = Path(__file__).parent / "messages" / "rfc4475"


def _manifest() -> dict[str, dict[str, str]]:
    with open(MESSAGES / "MANIFEST.tsv", newline="", encoding="utf-8") as f:
        return {row["name"]: row for row in csv.DictReader(f, delimiter="\t")}


ROWS = _manifest()

# Well formed: parse_message() and check() must both succeed. The comment says what an element
# does next (decided above the parser).
ACCEPT = {
    "wsinv",
    "intmeth",  # endpoint: 501 (unknown method)
    "esc01",
    "escnull",
    "esc02",  # endpoint: 501 (RE%47IST%45R is not REGISTER)
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
    "badbranch",  # transaction layer may 400 or fall back to RFC 2543 matching
    "unkscm",  # 416
    "novelsc",  # 416 or 404
    "unksm2",  # registrar: 400 (To is not a SIP AOR)
    "bext01",  # 420
    "invut",  # 415
    "regaut01",  # 401 / 405 / ignored
    "bcast",  # endpoint discards
    "zeromf",  # endpoint: as if Max-Forwards were positive
    "cparam01",
    "cparam02",
    "regescrt",
    "sdp01",  # 406 or 400
    "inv2543",
    # Manifest: invalid. RFC 4475 §3.1.2.12 lets an element ignore a bad Date when the Date does
    # not matter to its processing; this parser keeps Date as opaque text, so it accepts.
    "baddate",
}

# Must raise SIPParseError (from parse_message or check) with this status.
REJECT = {
    "badinv01": 400,
    "clerr": 400,  # over UDP; on a stream the parser waits for the rest (see below)
    "ncl": 400,
    "scalar02": 400,
    "scalarlg": 400,  # a response: raising is how it gets dropped
    "quotbal": 400,
    "ltgtruri": 400,
    "lwsruri": 400,
    "lwsstart": 400,
    "trws": 400,
    "escruri": 400,
    "regbadct": 400,
    "badaspec": 400,
    "baddn": 400,
    "badvers": 505,
    "mismatch01": 400,
    "bigcode": 400,  # a response: raising is how it gets dropped
    "insuf": 400,
    "multi01": 400,
    "mcl01": 400,
    # Not described by RFC 4475 (manifest: n/a): no SIP-Version, a header line without colon.
    "test": 400,
}

# RFC 4475 §3.1.2.16: parser accepts, the status belongs to the UA core (501 preferred, 400 ok).
UA_CORE_DECIDES = {"mismatch02"}

# Rejected by parse_message itself: framing, start line and version errors.
REJECT_AT_PARSE = {"clerr", "ncl", "mcl01", "badvers", "lwsstart", "trws", "lwsruri", "bigcode"}

_CONTENT_LENGTH_RE = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:")


def load(name: str) -> bytes:
    return (MESSAGES / ROWS[name]["file"]).read_bytes()


def parse_and_check(data: bytes) -> Request | Response:
    msg = parse_message(data)
    msg.check()
    return msg


def snapshot(msg: Request | Response) -> tuple[object, ...]:
    """What the parser produced: start line, header lines and body."""
    if isinstance(msg, Request):
        first: tuple[object, ...] = ("request", msg.method, msg.start_line())
    else:
        first = ("response", msg.status, msg.reason)
    return (*first, msg.headers.items(), msg.body)


def feed_bytewise(data: bytes) -> tuple[list[Request | Response], SIPParseError | None, int]:
    """Feed ``data`` one byte at a time; return (messages, first error, bytes left buffered)."""
    parser = StreamParser()
    events: list[Request | Response] = []
    for i in range(len(data)):
        parser.receive_data(data[i : i + 1])
        try:
            while (event := parser.next_event()) is not None:
                events.append(event)
        except SIPParseError as exc:
            return events, exc, parser.buffered
    return events, None, parser.buffered


def stream_framable(data: bytes) -> bool:
    """CRLF header section, closed, with a Content-Length (what a stream transport needs)."""
    head, sep, _ = data.partition(b"\r\n\r\n")
    return bool(sep) and bool(_CONTENT_LENGTH_RE.search(head))


def framed_length(data: bytes) -> int | None:
    """Octets of the first message as Content-Length frames it, or None without one."""
    msg = parse_message(data)
    if msg.content_length is None:
        return None
    return data.index(b"\r\n\r\n") + 4 + msg.content_length


# --------------------------------------------------------------------------------------------
# The manifest and the copies
# --------------------------------------------------------------------------------------------
def test_every_manifest_row_has_an_expectation() -> None:
    assert len(ROWS) == 50
    classified = ACCEPT | set(REJECT) | UA_CORE_DECIDES
    assert set(ROWS) == classified
    assert not (ACCEPT & set(REJECT))


@pytest.mark.parametrize("name", sorted(ROWS))
def test_copy_is_byte_exact(name: str) -> None:
    data = load(name)
    assert len(data) == int(ROWS[name]["bytes"])
    assert hashlib.sha256(data).hexdigest() == ROWS[name]["sha256"]


@pytest.mark.parametrize("name", sorted(ROWS))
def test_manifest_outcome(name: str) -> None:
    data = load(name)
    row = ROWS[name]
    if name in ACCEPT:
        assert row["valid_or_invalid"] == "valid" or name == "baddate"
        msg = parse_and_check(data)
        assert isinstance(msg, Request | Response)
    elif name in REJECT:
        assert row["valid_or_invalid"] in ("invalid", "n/a")
        if name in REJECT_AT_PARSE:
            with pytest.raises(SIPParseError) as excinfo:
                parse_message(data)
        else:
            with pytest.raises(SIPParseError) as excinfo:
                parse_and_check(data)
        assert excinfo.value.status == REJECT[name]
    else:
        assert name in UA_CORE_DECIDES
        parse_message(data)


# --------------------------------------------------------------------------------------------
# Whole, byte by byte, with trailing data: the results agree
# --------------------------------------------------------------------------------------------
STREAMABLE = sorted(n for n in ROWS if stream_framable(load(n)))


def test_streamable_selection() -> None:
    # inv2543 has no Content-Length; baddn's header section is never closed.
    assert set(ROWS) - set(STREAMABLE) == {"inv2543", "baddn"}


@pytest.mark.parametrize("name", STREAMABLE)
def test_stream_bytewise_agrees_with_datagram(name: str) -> None:
    data = load(name)
    events, error, buffered = feed_bytewise(data)
    try:
        whole = parse_message(data)
    except SIPParseError as exc:
        if name == "clerr":
            # RFC 4475 §3.1.2.2: on a stream, wait for the missing octets.
            assert (events, error, buffered) == ([], None, len(data))
            return
        assert events == []
        assert error is not None and error.status == exc.status
        return
    assert error is None or name == "dblreq", error
    assert events, "no message framed"
    assert snapshot(events[0]) == snapshot(whole)
    if name in ACCEPT:
        events[0].check()
    elif name in REJECT:
        with pytest.raises(SIPParseError) as excinfo:
            events[0].check()
        assert excinfo.value.status == REJECT[name]
    if name == "dblreq":
        # On a stream the trailing octets are no noise: they frame as a second request (whose
        # 155-octet body overruns its Content-Length of 150; the leftover "C\r\n\r\n" then fails).
        assert [e.method for e in events] == ["REGISTER", "INVITE"]  # type: ignore[union-attr]
        assert error is not None and error.status == 400
    else:
        assert len(events) == 1
        assert buffered == 0


DATAGRAMS_WITH_LENGTH = sorted(
    n for n in STREAMABLE if n not in ("clerr",)
)  # clerr: trailing data would just fill the announced body


@pytest.mark.parametrize("name", DATAGRAMS_WITH_LENGTH)
@pytest.mark.parametrize(
    "trailer", [b"\r\nINVITE sip:x@example.com SIP/2.0\r\n\r\n", b"\x00\xff\r\n\r\n", b"x"]
)
def test_trailing_data_after_content_length_is_ignored(name: str, trailer: bytes) -> None:
    # RFC 3261 §18.3 / RFC 4475 §3.1.1.8: octets beyond Content-Length in a datagram are dropped.
    data = load(name)
    try:
        whole = parse_message(data)
    except SIPParseError as exc:
        with pytest.raises(SIPParseError) as excinfo:
            parse_message(data + trailer)
        assert excinfo.value.status == exc.status
        return
    assert snapshot(parse_message(data + trailer)) == snapshot(whole)


# --------------------------------------------------------------------------------------------
# Values: §3.1.1 valid messages
# --------------------------------------------------------------------------------------------
def test_wsinv_values() -> None:
    msg = parse_and_check(load("wsinv"))
    assert isinstance(msg, Request)
    assert msg.method == "INVITE"
    assert str(msg.uri) == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert msg.uri.params == {"unknownparam": None}
    assert msg.max_forwards == 68  # written 0068
    assert msg.cseq == CSeq(9, "INVITE")  # written 0009, folded
    assert msg.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert msg.headers.get("Subject") == ""  # "s :" with nothing after it
    assert msg.headers.get_all("UnknownHeaderWithUnusualValue") == [";;,,;;,;"]
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.to.display_name is None
    assert str(msg.to.uri) == "sip:vivekg@chair-dnrc.example.com"
    assert msg.to.tag == "1918181833n"
    assert msg.from_.display_name == 'J Rosenberg \\"'
    assert str(msg.from_.uri) == "sip:jdrosen@example.com"
    assert msg.from_.tag == "98asjd8"
    [contact] = msg.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert [(v.transport, v.host, v.port, v.branch) for v in msg.vias] == [
        ("UDP", "192.0.2.2", None, "390skdjuw"),
        ("TCP", "spindle.example.com", None, "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", None, "z9hG4bK30239"),
    ]
    [route] = msg.routes
    assert route.uri.host == "services.example.com"
    assert route.uri.params == {"lr": None, "unknownwith": "value", "unknown-no-value": None}
    assert msg.content_type == "application/sdp"
    assert msg.content_length == len(msg.body) == 150
    assert msg.body.startswith(b"v=0\r\n") and msg.body.endswith(b"a=rtpmap:31 LPC\r\n")


def test_intmeth_values() -> None:
    msg = parse_and_check(load("intmeth"))
    assert isinstance(msg, Request)
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.method == method
    assert msg.cseq == CSeq(139122385, method)
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.uri.host == "example.com"
    assert msg.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    # quoted-pairs carrying raw NUL, BEL and DEL
    assert msg.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.to.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.from_.params["fromparam''~+*_!.-%"] == "работающий"
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.max_forwards == 255
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_esc01_values() -> None:
    msg = parse_and_check(load("esc01"))
    assert isinstance(msg, Request)
    assert msg.uri.user == "sips:user@example.com"
    assert msg.uri.host == "example.net"
    assert msg.to.uri.user == "user"
    assert msg.from_.uri.user == "I have spaces"
    [contact] = msg.contacts
    assert contact.uri.user == "caller"
    # %6C%72 is the flag "lr"; value%25%34%31 unescapes once, to value%41 (not valueA)
    assert contact.uri.params == {"lr": None, "name": "value%41"}
    assert msg.content_type == "application/sdp"  # compact "C"
    assert len(msg.body) == 150


def test_escnull_values() -> None:
    msg = parse_and_check(load("escnull"))
    assert msg.to.uri.user == "null-\x00-null"
    assert msg.from_.uri.user == "null-\x00-null"
    assert [c.uri.user for c in msg.contacts] == ["\x00", "\x00\x00"]
    assert [str(c.uri) for c in msg.contacts] == [
        "sip:%00@host5.example.com",
        "sip:%00%00@host5.example.com",
    ]
    assert not msg.contacts[0].uri.equivalent(msg.contacts[1].uri)
    assert msg.content_length == 0  # "L:0"


def test_esc02_values() -> None:
    msg = parse_and_check(load("esc02"))
    assert isinstance(msg, Request)
    assert msg.method == "RE%47IST%45R"
    assert msg.cseq.method == "RE%47IST%45R"
    assert msg.to.display_name == "%Z%45"
    assert msg.from_.display_name == "%Z%45"
    assert [c.uri.user for c in msg.contacts] == ["alias1", "alias3"]
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"
    assert [n for n, _ in msg.headers.items()].count("C%6Fntact") == 1
    assert msg.top_via.branch == "z9hG4bK209%fzsnel234"


def test_lwsdisp_values() -> None:
    msg = parse_and_check(load("lwsdisp"))
    assert msg.from_.display_name == "caller"
    assert str(msg.from_.uri) == "sip:caller@example.com"
    assert msg.from_.tag == "323"


def test_longreq_values() -> None:
    msg = parse_and_check(load("longreq"))
    assert len(msg.vias) == 34
    assert [v.host for v in msg.vias[:3]] == [
        "sip33.example.com",
        "sip32.example.com",
        "sip31.example.com",
    ]
    last = msg.vias[-1]
    assert last.host == "host.example.com" and last.received == "192.0.2.5"
    assert last.branch is not None and len(last.branch) == 215
    assert last.branch.startswith("verylonglong") and last.branch.endswith("branchvalue")
    assert msg.to.display_name is not None and msg.to.display_name.startswith(
        "I have a user name of extremeextreme"
    )
    assert msg.to.display_name.endswith(" proportion")
    assert msg.to.uri.port == 6000
    long_name = "longparam" + "name" * 25
    assert msg.to.uri.params[long_name] == "shortvalue"
    assert msg.from_.tag is not None and len(msg.from_.tag) > 150
    assert msg.call_id.startswith("longreq.onereally") and msg.call_id.endswith("longcallid")
    unknown = [n for n, _ in msg.headers.items() if n.startswith("Unknown-LongLong")]
    assert len(unknown) == 1 and len(unknown[0]) > 80
    assert len(msg.contacts[0].uri.user or "") > 100
    assert len(msg.body) == 150


def test_dblreq_values() -> None:
    data = load("dblreq")
    msg = parse_and_check(data)
    assert isinstance(msg, Request)
    assert msg.method == "REGISTER"
    assert msg.body == b""
    assert msg.content_length == 0
    assert b"INVITE" not in msg.to_bytes()  # a forwarder must not include the trailing octets


def test_semiuri_values() -> None:
    msg = parse_and_check(load("semiuri"))
    assert isinstance(msg, Request)
    assert msg.uri.user == "user;par=u@example.net"
    assert msg.uri.host == "example.com"
    assert msg.uri.params == {}
    assert msg.tokens("Accept") == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]


def test_transports_values() -> None:
    msg = parse_and_check(load("transports"))
    assert [(v.transport, v.host) for v in msg.vias] == [
        ("UDP", "t1.example.com"),
        ("SCTP", "t2.example.com"),
        ("TLS", "t3.example.com"),
        ("UNKNOWN", "t4.example.com"),
        ("TCP", "t5.example.com"),
    ]


def test_mpart01_body_is_byte_exact() -> None:
    data = load("mpart01")
    msg = parse_and_check(data)
    assert msg.content_length == 553
    body = data[data.index(b"\r\n\r\n") + 4 :]
    assert len(body) == 553
    assert msg.body == body
    assert b"\x00" in msg.body
    assert re.search(rb"[^\r]\n", msg.body)  # bare LF in the binary part
    assert msg.content_type == "multipart/mixed"
    assert msg.to_bytes().endswith(body)


def test_unreason_values() -> None:
    msg = parse_and_check(load("unreason"))
    assert isinstance(msg, Response)
    assert msg.status == 200
    assert msg.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert len(msg.body) == 154


def test_noreason_values() -> None:
    msg = parse_and_check(load("noreason"))
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (100, "")


# --------------------------------------------------------------------------------------------
# §3.2-3.4: transaction, application layer and backward compatibility
# --------------------------------------------------------------------------------------------
def test_semantic_rejections_are_left_to_the_ua_core() -> None:
    unkscm = parse_and_check(load("unkscm"))
    assert isinstance(unkscm, Request)
    assert (unkscm.uri.scheme, unkscm.uri.opaque) == (
        "nobodyknowsthisscheme",
        "totallyopaquecontent",
    )
    assert not unkscm.uri.is_sip
    novelsc = parse_and_check(load("novelsc"))
    assert isinstance(novelsc, Request)
    assert (novelsc.uri.scheme, novelsc.uri.opaque) == ("soap.beep", "//192.0.2.103:3002")
    unksm2 = parse_and_check(load("unksm2"))
    assert [unksm2.to.uri.scheme, unksm2.from_.uri.scheme, unksm2.contacts[0].uri.scheme] == [
        "isbn",
        "http",
        "name",
    ]
    bext01 = parse_and_check(load("bext01"))
    assert bext01.tokens("Require") == ["nothingsupportsthis", "nothingsupportsthiseither"]
    assert bext01.headers.get_all("Proxy-Require") == [
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    ]
    assert parse_and_check(load("invut")).content_type == "application/unknownformat"
    regaut01 = parse_and_check(load("regaut01"))
    assert regaut01.headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"
    assert parse_and_check(load("zeromf")).max_forwards == 0
    assert parse_and_check(load("sdp01")).tokens("Accept") == ["text/nobodyknowsthis"]
    bcast = parse_and_check(load("bcast"))
    assert [v.host for v in bcast.vias] == ["192.0.2.198", "255.255.255.255"]
    assert parse_and_check(load("badbranch")).top_via.branch == "z9hG4bK"
    baddate = parse_and_check(load("baddate"))
    assert baddate.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"


def test_mismatch02_parser_accepts_and_ua_core_answers() -> None:
    msg = parse_message(load("mismatch02"))
    assert isinstance(msg, Request)
    # Everything the UA core needs for its 501 (RFC 3261 §8.2.1 method inspection comes
    # before §8.2.2 header inspection) is readable.
    assert msg.method == "NEWMETHOD"
    assert msg.cseq == CSeq(8, "INVITE")
    assert msg.top_via.branch == "z9hG4bKkdjuw"
    assert msg.call_id == "mismatch02.dj0234sxdfl3"
    assert msg.from_.tag == "34525"
    assert len(msg.body) == 138
    # RFC 4475 §3.1.2.16: 501 preferred, 400 acceptable; check() may report the mismatch.
    try:
        msg.check()
    except SIPParseError as exc:
        assert exc.status in (400, 501)


def test_inv2543_values() -> None:
    data = load("inv2543")
    msg = parse_and_check(data)
    assert msg.top_via.branch is None
    assert msg.from_.tag is None
    assert msg.to.tag is None
    assert msg.max_forwards is None
    assert msg.content_length is None
    # No Content-Length over UDP: the body runs to the end of the datagram (RFC 3261 §18.3).
    assert msg.body == data[data.index(b"\r\n\r\n") + 4 :]
    assert msg.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")
    # addr-spec without <>: ";user=phone" is a header parameter (RFC 3261 §20.10) ...
    assert msg.to.params == {"user": "phone"} and msg.to.uri.params == {}
    # ... inside <> it belongs to the URI.
    assert msg.from_.uri.params == {"user": "phone"} and msg.from_.params == {}
    assert msg.record_routes[0].uri.params == {"maddr": "ss1.example.com"}
    # On a stream a missing Content-Length means an empty body.
    assert parse_message(data, datagram=False).body == b""


def test_cparam01_unknownparam_is_a_header_param() -> None:
    [contact] = parse_and_check(load("cparam01")).contacts
    assert contact.params == {"unknownparam": None}
    assert contact.uri.params == {}
    assert str(contact.uri) == "sip:+19725552222@gw1.example.net"


def test_cparam02_unknownparam_is_a_uri_param() -> None:
    [contact] = parse_and_check(load("cparam02")).contacts
    assert contact.params == {}
    assert contact.uri.params == {"unknownparam": None}
    assert str(contact.uri) == "sip:+19725552222@gw1.example.net;unknownparam"


def test_regescrt_contact_keeps_escaped_route_header() -> None:
    [contact] = parse_and_check(load("regescrt")).contacts  # compact "M"
    assert contact.uri.headers == (("Route", "<sip:sip.example.com>"),)
    assert str(contact.uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"


def test_baddn_variant_with_terminating_crlf_is_rejected_too() -> None:
    data = (MESSAGES / "variants" / "baddn.with-terminating-crlf.dat").read_bytes()
    with pytest.raises(SIPParseError) as excinfo:
        parse_and_check(data)
    assert excinfo.value.status == 400
    events, error, _ = feed_bytewise(data)
    assert error is None and len(events) == 1
    with pytest.raises(SIPParseError):
        events[0].check()


def test_clerr_on_a_stream_completes_when_the_rest_arrives() -> None:
    # RFC 4475 §3.1.2.2: a stream waits for the announced octets instead of failing.
    data = load("clerr")
    parser = StreamParser()
    parser.receive_data(data)
    assert parser.next_event() is None
    missing = 9999 - (len(data) - data.index(b"\r\n\r\n") - 4)
    parser.receive_data(b"\x00" * missing)
    msg = parser.next_event()
    assert msg is not None and len(msg.body) == 9999
