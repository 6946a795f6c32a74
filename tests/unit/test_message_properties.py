"""Property tests of the message parser (hypothesis).

* Generated valid requests and responses (random methods and tokens, URIs with parameters and
  escapes, display names needing quotes, Via lists, folding, compact names, binary bodies) parse
  to what was generated; ``parse(to_bytes(parse(m)))`` equals ``parse(m)`` field by field and
  ``to_bytes`` is a fixed point after one round; datagram and stream parsing agree.
* Random bytes and mutated valid messages make ``parse_message``, ``check()``, the typed
  accessors and :class:`StreamParser` raise nothing but :class:`SIPParseError`, quickly.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2psip.endpoint.headers import COMPACT_FORMS, CSeq, NameAddress, Via, canonical_name
from p2psip.endpoint.message import Request, Response, StreamParser, parse_message
from p2psip.endpoint.uri import URI, parse_uri
from p2psip.errors import SIPParseError

# A slow example is a bug here (catastrophic regex backtracking, quadratic loops).
FAST = settings(
    deadline=timedelta(milliseconds=1500),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fast(max_examples: int) -> settings:
    return settings(FAST, max_examples=max_examples)


ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
TOKEN = ALNUM + "-.!%*_+`'~"
UNRESERVED = ALNUM + "-_.!~*'()"
USER_SAFE = UNRESERVED + "&=+$,;?/"
PASSWORD_SAFE = UNRESERVED + "&=+$,"
PARAM_SAFE = UNRESERVED + "[]/:&+$"
HEADER_SAFE = UNRESERVED + "[]/?:+$"
WORD = ALNUM + "-.!%*_+`'~()<>:\\\"/[]?{}"  # Call-ID (RFC 3261 §25.1 word)

# Text that can sit in a header line: no CR, LF or surrogates.
LINE_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
    max_size=20,
)


def tokens(min_size: int = 1, max_size: int = 10, alphabet: str = TOKEN) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=min_size, max_size=max_size)


def escaped(safe: str, min_size: int = 1) -> st.SearchStrategy[str]:
    """URI component text: allowed characters and %HH escapes of any octet (either case)."""
    escape = st.tuples(st.integers(0, 255), st.booleans()).map(
        lambda t: f"%{t[0]:02X}" if t[1] else f"%{t[0]:02x}"
    )
    return st.lists(st.one_of(st.sampled_from(safe), escape), min_size=min_size, max_size=8).map(
        "".join
    )


# --------------------------------------------------------------------------------------------
# URIs
# --------------------------------------------------------------------------------------------
label = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)
hostnames = st.lists(label, min_size=1, max_size=4).map(".".join)
ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda n: f"[{ipaddress.IPv6Address(n)}]")
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.one_of(st.none(), st.integers(0, 65535))


@st.composite
def sip_uri_texts(draw: st.DrawFn, *, with_headers: bool = True) -> str:
    out = [draw(st.sampled_from(["sip", "sips", "SIP", "Sips"])), ":"]
    if draw(st.booleans()):
        out.append(draw(escaped(USER_SAFE, min_size=0)))
        if draw(st.booleans()):
            out += [":", draw(escaped(PASSWORD_SAFE, min_size=0))]
        out.append("@")
    out.append(draw(hosts))
    port = draw(ports)
    if port is not None:
        out.append(f":{port}")
    for name in draw(st.lists(escaped(PARAM_SAFE), max_size=4)):
        out += [";", name]
        if draw(st.booleans()):
            out += ["=", draw(escaped(PARAM_SAFE, min_size=0))]
    if with_headers and draw(st.booleans()):
        pairs = draw(
            st.lists(
                st.tuples(escaped(HEADER_SAFE), escaped(HEADER_SAFE, 0)), min_size=1, max_size=3
            )
        )
        out += ["?", "&".join(f"{n}={v}" for n, v in pairs)]
    return "".join(out)


tel_uri_texts = st.builds(
    lambda number, params: "tel:" + number + "".join(f";{n}={v}" for n, v in params),
    st.text(alphabet="0123456789-.()+", min_size=1, max_size=12),
    st.lists(st.tuples(tokens(alphabet=ALNUM + "-"), tokens(alphabet=ALNUM + "-.")), max_size=2),
)
opaque_uri_texts = st.builds(
    lambda scheme, rest: f"{scheme}:{rest}",
    st.sampled_from(["urn", "mailto", "http", "isbn", "x-foo"]),
    st.text(alphabet=UNRESERVED + "/?:@&=+$,;%#", min_size=1, max_size=20),
)


def uri_texts(*, with_headers: bool = True) -> st.SearchStrategy[str]:
    return st.one_of(sip_uri_texts(with_headers=with_headers), tel_uri_texts, opaque_uri_texts)


@fast(200)
@given(uri_texts())
def test_uri_text_round_trip(text: str) -> None:
    uri = parse_uri(text)
    canonical = str(uri)
    again = parse_uri(canonical)
    assert again == uri
    assert str(again) == canonical
    assert uri.equivalent(again)


@fast(150)
@given(
    st.builds(
        URI,
        scheme=st.sampled_from(["sip", "sips"]),
        user=st.one_of(st.none(), LINE_TEXT),
        password=st.none(),
        host=hosts,
        port=ports,
        params=st.dictionaries(tokens(alphabet=ALNUM + "-").map(str.lower), st.none(), max_size=3),
        headers=st.lists(st.tuples(tokens(), LINE_TEXT), max_size=2).map(tuple),
    )
)
def test_uri_object_round_trip(uri: URI) -> None:
    # Any user text (spaces, NUL, non-ASCII, '@'...) survives escaping.
    assert parse_uri(str(uri)) == uri


# --------------------------------------------------------------------------------------------
# Header values
# --------------------------------------------------------------------------------------------
def uris(*, with_headers: bool = True) -> st.SearchStrategy[URI]:
    return uri_texts(with_headers=with_headers).map(parse_uri)


# Parameter values: tokens, IPv6 references, or text that is quoted when serialized.
param_values = st.one_of(
    st.none(),
    tokens(),
    ipv6,
    st.text(alphabet=TOKEN + ' ,;"\\<>=/:@', min_size=0, max_size=10).map(lambda s: s + " "),
)
header_params = st.dictionaries(
    tokens(alphabet=ALNUM + "-.!%*_+`'~").map(str.lower), param_values, max_size=3
)
display_names = st.one_of(
    st.none(),
    st.lists(tokens(), min_size=1, max_size=3).map(" ".join),  # written unquoted
    LINE_TEXT,  # quoted when needed, with quoted-pairs
)
addresses = st.builds(NameAddress, uris(), display_names, header_params)


@st.composite
def vias(draw: st.DrawFn) -> Via:
    params: dict[str, str | None] = {"branch": "z9hG4bK" + draw(tokens(0))}
    if draw(st.booleans()):
        params["received"] = draw(st.one_of(ipv4, ipv6, ipv6.map(lambda h: h[1:-1])))
    if draw(st.booleans()):
        params["rport"] = draw(st.one_of(st.none(), st.integers(1, 65535).map(str)))
    params.update(draw(header_params))
    transport = draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS", "WSS", "X-NEW"]))
    return Via(transport, draw(hosts), draw(ports), params)


@fast(150)
@given(addresses)
def test_address_round_trip(addr: NameAddress) -> None:
    from p2psip.endpoint.headers import parse_address

    again = parse_address(str(addr))
    assert (again.display_name, again.uri, again.params) == (
        addr.display_name,
        addr.uri,
        addr.params,
    )


@fast(150)
@given(vias())
def test_via_round_trip(via: Via) -> None:
    from p2psip.endpoint.headers import parse_via

    assert parse_via(str(via)) == via


# --------------------------------------------------------------------------------------------
# Whole messages
# --------------------------------------------------------------------------------------------
@dataclass
class Model:
    """A message as generated, before rendering."""

    method: str | None  # None for a response
    uri_text: str
    status: int
    reason: str
    vias: list[Via]
    to: NameAddress
    from_: NameAddress
    call_id: str
    cseq: CSeq
    max_forwards: int | None
    contacts: list[NameAddress]
    extensions: list[tuple[str, str]]
    body: bytes
    content_length: str | None  # header name used, None: absent
    layout: dict[str, object] = field(default_factory=dict)


methods = st.one_of(
    st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "MESSAGE"]),
    tokens(max_size=15),
)
# Extension header values: any line text, no surrounding LWS.
ext_values = LINE_TEXT.map(lambda s: s.strip(" \t"))


@st.composite
def models(draw: st.DrawFn) -> Model:
    is_request = draw(st.booleans())
    method = draw(methods)
    return Model(
        method=method if is_request else None,
        uri_text=draw(uri_texts(with_headers=False)),
        status=draw(st.integers(100, 699)),
        reason=draw(LINE_TEXT),
        vias=draw(st.lists(vias(), min_size=1, max_size=4)),
        to=draw(addresses),
        from_=draw(addresses).with_tag(draw(tokens())),
        call_id=draw(tokens(alphabet=WORD, max_size=12))
        + draw(st.one_of(st.just(""), tokens(alphabet=WORD).map(lambda w: "@" + w))),
        cseq=CSeq(draw(st.integers(0, 2**31 - 1)), method),
        max_forwards=draw(st.one_of(st.none(), st.integers(0, 255))),
        contacts=draw(st.lists(addresses, max_size=3)),
        extensions=draw(
            st.lists(st.tuples(tokens().map(lambda t: "X-" + t), ext_values), max_size=4)
        ),
        body=draw(st.binary(max_size=200)),
        content_length=draw(st.sampled_from(["Content-Length", "l", "content-length", None])),
        layout={
            "crlf": draw(st.booleans()),
            "names": draw(st.sampled_from(["canonical", "compact", "lower", "upper"])),
            "via_lines": draw(st.booleans()),
            "fold": draw(st.booleans()),
            "colon": draw(st.sampled_from([": ", ":", " : ", ":\t"])),
            "leading_crlf": draw(st.booleans()),
        },
    )


_COMPACT = {v: k for k, v in COMPACT_FORMS.items()}


def render(model: Model) -> tuple[bytes, list[tuple[str, str]]]:
    """Wire bytes of ``model`` and the header lines the parser should report."""
    layout = model.layout
    lines: list[tuple[str, str]] = []
    if layout["via_lines"]:
        lines += [("Via", str(v)) for v in model.vias]
    else:
        lines.append(("Via", " , ".join(str(v) for v in model.vias)))
    lines += [
        ("To", str(model.to)),
        ("From", str(model.from_)),
        ("Call-ID", model.call_id),
        ("CSeq", str(model.cseq)),
    ]
    if model.max_forwards is not None:
        lines.append(("Max-Forwards", str(model.max_forwards)))
    lines += [("Contact", str(c)) for c in model.contacts]
    lines += model.extensions
    if model.content_length is not None:
        lines.append((model.content_length, str(len(model.body))))

    def spell(name: str) -> str:
        style = layout["names"]
        if style == "compact":
            return _COMPACT.get(name, name)
        if style == "lower":
            return name.lower()
        if style == "upper":
            return name.upper()
        return name

    def fold(value: str) -> str:
        # RFC 3261 §7.3.1: a single SP between words may become CRLF + SP.
        if not layout["fold"]:
            return value
        words = value.split(" ")
        if len(words) < 3 or any(not w or w[-1] == "\t" or w[0] == "\t" for w in words):
            return value
        return words[0] + " " + words[1] + "\r\n " + " ".join(words[2:])

    if model.method is not None:
        start = f"{model.method} {model.uri_text} SIP/2.0"
    else:
        start = f"SIP/2.0 {model.status} {model.reason}"
    text = "\r\n".join(
        [start, *(f"{spell(n)}{layout['colon']}{fold(v)}" for n, v in lines), "", ""]
    )
    if not layout["crlf"]:
        text = text.replace("\r\n", "\n")
    lead = "\r\n" if layout["leading_crlf"] else ""
    data = (lead + text).encode() + model.body
    expected = [(canonical_name(spell(n)), v) for n, v in lines]  # unknown names as written
    return data, expected


def snapshot(msg: Request | Response, *, skip_length: bool = False) -> tuple[object, ...]:
    items = [(n, v) for n, v in msg.headers.items() if not (skip_length and n == "Content-Length")]
    if isinstance(msg, Request):
        return ("request", msg.method, msg.start_line(), items, msg.body)
    return ("response", msg.status, msg.reason, items, msg.body)


def typed(msg: Request | Response) -> tuple[object, ...]:
    first = (msg.method, msg.uri) if isinstance(msg, Request) else (msg.status, msg.reason)
    return (
        first,
        msg.vias,
        (msg.to.display_name, msg.to.uri, msg.to.params),
        (msg.from_.display_name, msg.from_.uri, msg.from_.params),
        msg.call_id,
        msg.cseq,
        msg.max_forwards,
        [(c.display_name, c.uri, c.params) for c in msg.contacts],
        msg.content_length,
        msg.body,
    )


@fast(150)
@given(models())
def test_generated_messages_parse_as_generated(model: Model) -> None:
    data, expected = render(model)
    msg = parse_message(data)
    msg.check()
    if model.method is not None:
        assert isinstance(msg, Request)
        assert msg.method == model.method
        assert msg.uri == parse_uri(model.uri_text)
    else:
        assert isinstance(msg, Response)
        assert (msg.status, msg.reason) == (model.status, model.reason)
    assert msg.headers.items() == expected
    assert msg.vias == model.vias
    assert (msg.to.display_name, msg.to.uri, msg.to.params) == (
        model.to.display_name,
        model.to.uri,
        model.to.params,
    )
    assert msg.from_.tag == model.from_.tag
    assert msg.call_id == model.call_id
    assert msg.cseq == model.cseq
    assert msg.max_forwards == model.max_forwards
    assert [(c.display_name, c.uri, c.params) for c in msg.contacts] == [
        (c.display_name, c.uri, c.params) for c in model.contacts
    ]
    for name, value in model.extensions:
        assert value in msg.headers.get_lines(name)
    assert msg.body == model.body  # with or without Content-Length (a datagram)


@fast(150)
@given(models(), st.booleans())
def test_serialization_round_trip_and_fixed_point(model: Model, touch_uri: bool) -> None:
    data, _ = render(model)
    first = parse_message(data)
    if touch_uri and isinstance(first, Request):
        first.uri  # noqa: B018 - the serialized Request-URI then comes from the URI object
    wire = first.to_bytes()
    second = parse_message(wire)
    # Field by field; Content-Length is the one header to_bytes may add or rewrite.
    assert snapshot(second, skip_length=True) == snapshot(first, skip_length=True)
    assert typed(second)[:-2] == typed(first)[:-2]
    assert second.content_length == len(second.body) == len(first.body)
    assert second.to_bytes() == wire  # a fixed point after one round
    assert parse_message(wire, datagram=False).to_bytes() == wire


@fast(60)
@given(models(), st.lists(st.integers(1, 64), min_size=1, max_size=30))
def test_stream_agrees_with_datagram(model: Model, chunks: list[int]) -> None:
    model.layout["crlf"] = True
    if model.content_length is None:
        model.content_length = "Content-Length"
    data, _ = render(model)
    whole = parse_message(data)
    stream = b"\r\n\r\n" + data + data  # a ping, then the message twice
    parser = StreamParser()
    events: list[Request | Response] = []
    pos = 0
    sizes = iter(chunks * (len(stream) // min(chunks) + 1))
    while pos < len(stream):
        size = next(sizes)
        parser.receive_data(stream[pos : pos + size])
        pos += size
        while (event := parser.next_event()) is not None:
            events.append(event)
    assert [snapshot(e) for e in events] == [snapshot(whole)] * 2
    assert parser.pong_due == 1 and parser.buffered == 0


# --------------------------------------------------------------------------------------------
# Robustness: garbage in, SIPParseError (or a message) out, never anything else, never slow
# --------------------------------------------------------------------------------------------
def exercise(msg: Request | Response) -> None:
    """Touch every typed accessor; only SIPParseError may come out."""
    for attr in (
        "vias",
        "call_id",
        "cseq",
        "from_",
        "to",
        "contacts",
        "contact_star",
        "routes",
        "record_routes",
        "max_forwards",
        "expires",
        "content_length",
        "content_type",
        "uri",
        "top_via",
    ):
        try:
            value = getattr(msg, attr, None)
            if attr == "vias":
                for via in value:  # type: ignore[union-attr]
                    _ = via.rport, via.received, via.sent_by, str(via)
            if attr in ("contacts", "routes", "record_routes"):
                for addr in value:  # type: ignore[union-attr]
                    _ = str(addr), addr.uri.aor
        except SIPParseError:
            pass
    for name in ("Supported", "Require", "Allow", "X-Unknown"):
        try:
            msg.tokens(name)
        except SIPParseError:
            pass
    try:
        msg.check()
    except SIPParseError:
        pass


def parse_everything(data: bytes, chunk: int = 7) -> None:
    """Datagram, stream and round-trip handling of arbitrary bytes."""
    for datagram in (True, False):
        try:
            msg = parse_message(data, datagram=datagram)
            msg.headers.validate()  # header lines are split lazily
        except SIPParseError:
            continue
        exercise(msg)
        wire = msg.to_bytes()
        again = parse_message(wire)
        assert snapshot(again, skip_length=True) == snapshot(msg, skip_length=True)
        assert again.to_bytes() == wire
    parser = StreamParser()
    for i in range(0, len(data), chunk):
        parser.receive_data(data[i : i + chunk])
        for _ in range(len(data) + 2):  # every call consumes, waits or raises
            try:
                event = parser.next_event()
            except SIPParseError:
                break
            if event is None:
                break
            exercise(event)


@fast(300)
@given(st.binary(max_size=400), st.integers(1, 50))
def test_random_bytes(data: bytes, chunk: int) -> None:
    parse_everything(data, chunk)


SIP_BITS = [
    b"\r\n", b"\n", b"\r", b" ", b"\t", b":", b";", b",", b"<", b">", b'"', b"\\", b"=", b"@",
    b"[", b"]", b"%", b"%0", b"\x00", b"\xff", b"\xc3", b"SIP/2.0", b"Content-Length: ",
    b"l: 99999999999999", b"\r\n\r\n", b"\r\n ", b"z9hG4bK", b"sip:", b"tel:", b"<sip:a@[::1]>",
]  # fmt: skip


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    data = bytearray(render(draw(models()))[0])
    for _ in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "replace", "duplicate", "truncate"]))
        if kind == "insert":
            data[pos:pos] = draw(st.one_of(st.sampled_from(SIP_BITS), st.binary(max_size=4)))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 20))]
        elif kind == "replace" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif kind == "duplicate":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 80))]
        else:
            del data[pos:]
    return bytes(data)


@fast(200)
@given(mutated_messages(), st.integers(1, 50))
def test_mutated_messages(data: bytes, chunk: int) -> None:
    parse_everything(data, chunk)


# Long runs of one character class in the values that get parsed: any super-linear regex or
# loop in the grammar shows up as a slow parse. Deterministic: every header x every piece.
RUN_PIECES = ["a", "a ", " a", ";", ";a", "a=", "=", ",", "<", ">", '"', '\\"', ":", "[", "%",
              "%4", "1", "@", "/ ", "sip:", "\t", "a\t", "<a", ".", "-a"]  # fmt: skip
RUN_HEADERS = ["From", "To", "Contact", "Via", "CSeq", "Route", "Record-Route", "Call-ID",
               "Max-Forwards", "Content-Length", "Expires", "Supported", "X-Other"]  # fmt: skip
BASE = {
    "Via": "SIP/2.0/UDP h;branch=z9hG4bK1",
    "To": "<sip:a@b>",
    "From": "<sip:c@d>;tag=1",
    "Call-ID": "x",
    "CSeq": "1 OPTIONS",
}


def run_message(header: str, value: str) -> bytes:
    lines = {**BASE, header: value}
    uri = value if header == "R-URI" else "sip:a@b"
    head = "".join(f"{n}: {v}\r\n" for n, v in lines.items() if n != "R-URI")
    return f"OPTIONS {uri} SIP/2.0\r\n{head}\r\n".encode()


@pytest.mark.parametrize("piece", RUN_PIECES)
def test_long_runs_stay_fast(piece: str) -> None:
    for header in [*RUN_HEADERS, "R-URI"]:
        for run in (
            piece * 26,
            piece * 3000,
            "a" + piece * 3000 + "!",
            "<sip:a@b>;" + piece * 3000,
        ):
            start = time.perf_counter()
            parse_everything(run_message(header, run), chunk=1 << 16)
            elapsed = time.perf_counter() - start
            assert elapsed < 0.5, (header, run[:20], elapsed)
