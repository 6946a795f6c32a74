"""SIP messages: parse, inspect, build and serialize (RFC 3261 §7, §18.3, §20).

Parsing is lazy where it is safe: :func:`parse_message` frames the message (start line,
headers, Content-Length body) and keeps header values as text; typed values (Via, CSeq,
From/To...) are parsed on first access and cached. :meth:`Message.check` validates what
a transaction layer needs and raises :class:`SIPParseError` carrying the status to answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from p2psip.endpoint.headers import (
    _NAME_CACHE,
    LIST_HEADERS,
    CSeq,
    NameAddress,
    Via,
    canonical_name,
    header_key,
    name_info,
    parse_address,
    parse_cseq,
    parse_via,
    split_list,
)
from p2psip.endpoint.uri import URI, parse_uri
from p2psip.errors import MessageTooLarge, SIPParseError

__all__ = [
    "KNOWN_METHODS",
    "REASON_PHRASES",
    "Headers",
    "Message",
    "Request",
    "Response",
    "StreamParser",
    "parse_message",
]

SIP_VERSION = "SIP/2.0"
DEFAULT_MAX_MESSAGE_SIZE = 65535

REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated", 200: "OK", 202: "Accepted",
    204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service", 400: "Bad Request",
    401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 412: "Conditional Request Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    428: "Use Identity Header", 429: "Provide Referrer Identity", 436: "Bad Identity Info",
    437: "Unsupported Credential", 438: "Invalid Identity Header",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported",
    513: "Message Too Large", 600: "Busy Everywhere", 603: "Decline",
    604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}  # fmt: skip

# One header line: name, optional WS, colon, value. Names are tokens (RFC 3261 §25.1).
_HEADER_LINE_RE = re.compile(r"([!#-'*+\-.0-9A-Z^-z|~]+)[ \t]*:[ \t]*(.*?)[ \t]*$", re.M)
_FOLD_RE = re.compile(r"\r?\n[ \t]+")
_FOLD_FIND_RE = re.compile(r"\n[ \t]")
_METHOD_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_CONTENT_LENGTH_KEY = "content-length"
_CL_TEXT_RE = re.compile(r"\n(?:content-length|l)[ \t]*:([^\n]*)", re.IGNORECASE)
KNOWN_METHODS = frozenset(
    ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "MESSAGE", "INFO", "PRACK",
     "UPDATE", "SUBSCRIBE", "NOTIFY", "PUBLISH", "REFER")
)  # fmt: skip
_STREAM_CL_RE = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$")


_EMPTY: list[str] = []


class Headers:
    """An ordered, case-insensitive multi-map of header fields.

    Names are stored in canonical spelling (compact forms expanded); values as text, one
    entry per header line. Lookups go through a lazily built index.
    """

    __slots__ = ("_index", "_list", "_raw")

    def __init__(self, items: Iterable[tuple[str, object]] = ()) -> None:
        self._list: list[tuple[str, str]] | None = [(canonical_name(n), str(v)) for n, v in items]
        self._raw: str | None = None
        self._index: dict[str, list[str]] | None = None

    @classmethod
    def from_canonical(cls, items: list[tuple[str, str]]) -> Headers:
        """Wrap a list of (canonical name, value) pairs without copying or renaming.

        For internal fast paths whose names are already canonical; the list is taken over.
        """
        headers = cls.__new__(cls)
        headers._list = items
        headers._raw = None
        headers._index = None
        return headers

    @classmethod
    def from_wire(cls, text: str) -> Headers:
        """Headers over the raw text of a received header section (after the start line).

        The lines are split and validated on first use (lazy parsing): a malformed line
        then raises :class:`SIPParseError` from whichever accessor touched the headers.
        """
        headers = cls.__new__(cls)
        headers._list = None
        headers._raw = text
        headers._index = None
        return headers

    @property
    def _items(self) -> list[tuple[str, str]]:
        items = self._list
        if items is None:
            items = self._list = _split_header_lines(self._raw or "")
            self._raw = None
        return items

    @_items.setter
    def _items(self, items: list[tuple[str, str]]) -> None:
        self._list = items
        self._raw = None

    def validate(self) -> None:
        """Split and check every header line now (raises SIPParseError)."""
        self._items  # noqa: B018

    def text(self) -> str:
        """The header lines as text, even when they do not parse (for error answers)."""
        if self._list is None:
            return self._raw or ""
        return "".join(f"{n}: {v}\r\n" for n, v in self._list)

    def _build_index(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for name, value in self._items:
            key = header_key(name)
            values = index.get(key)
            if values is None:
                index[key] = [value]
            else:
                values.append(value)
        self._index = index
        return index

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (any spelling), or ``default``."""
        index = self._index or self._build_index()
        values = index.get(header_key(name))
        return values[0] if values else default

    def get_lines(self, name: str) -> list[str]:
        """Every line's value of header ``name`` (not comma-split). Do not modify the list."""
        index = self._index or self._build_index()
        return index.get(header_key(name), _EMPTY)

    def get_all(self, name: str) -> list[str]:
        """All values of ``name``; list headers (Via, Contact, ...) are split at commas."""
        key = header_key(name)
        index = self._index or self._build_index()
        lines = index.get(key, ())
        if key in LIST_HEADERS:
            out: list[str] = []
            for line in lines:
                out.extend(split_list(line))
            return out
        return list(lines)

    def __contains__(self, name: object) -> bool:
        index = self._index or self._build_index()
        return isinstance(name, str) and header_key(name) in index

    def add(self, name: str, value: object) -> None:
        """Append a header line."""
        self._items.append((canonical_name(name), str(value)))
        self._index = None

    def prepend(self, name: str, value: object) -> None:
        """Insert a header line before the others (used for Via and Route)."""
        self._items.insert(0, (canonical_name(name), str(value)))
        self._index = None

    def set(self, name: str, value: object) -> None:
        """Replace every line of ``name`` with one line (kept at the first one's position)."""
        key = header_key(name)
        canon = canonical_name(name)
        out: list[tuple[str, str]] = []
        placed = False
        for item in self._items:
            if header_key(item[0]) == key:
                if not placed:
                    out.append((canon, str(value)))
                    placed = True
            else:
                out.append(item)
        if not placed:
            out.append((canon, str(value)))
        self._items = out
        self._index = None

    def remove(self, name: str) -> None:
        """Remove every line of ``name``."""
        key = header_key(name)
        self._items = [item for item in self._items if header_key(item[0]) != key]
        self._index = None

    def remove_first_value(self, name: str) -> str | None:
        """Remove the first comma-separated value of a list header (e.g. the top Via)."""
        key = header_key(name)
        for i, (n, v) in enumerate(self._items):
            if header_key(n) == key:
                values = split_list(v)
                first = values.pop(0)
                if values:
                    self._items[i] = (n, ", ".join(values))
                else:
                    del self._items[i]
                self._index = None
                return first
        return None

    def items(self) -> list[tuple[str, str]]:
        """The header lines as (canonical name, value) pairs, in order."""
        return list(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        """A shallow copy."""
        return Headers(self._items)


class Message:
    """Base of :class:`Request` and :class:`Response`.

    Attributes:
        headers: the header fields.
        body: the body bytes (framed by Content-Length when parsed).
    """

    __slots__ = ("_typed", "body", "headers")

    def __init__(
        self, headers: Headers | Iterable[tuple[str, str]] | None = None, body: bytes = b""
    ) -> None:
        self.headers = headers if isinstance(headers, Headers) else Headers(headers or ())
        self.body = body
        self._typed: dict[str, object] = {}

    # -- typed accessors (parsed on first use, cached; reset by invalidate()) ---------------
    def invalidate(self) -> None:
        """Forget cached typed values after editing ``headers`` directly."""
        self._typed.clear()

    def _single(self, key: str) -> str:
        values = self.headers.get_lines(key)
        if not values:
            raise SIPParseError(f"missing {canonical_name(key)} header")
        if len(values) > 1 and len(set(values)) > 1:
            raise SIPParseError(f"{canonical_name(key)} header appears more than once")
        return values[0]

    @property
    def vias(self) -> list[Via]:
        """All Via values, top first."""
        v = self._typed.get("via")
        if v is None:
            v = [parse_via(x) for x in self.headers.get_all("Via")]
            self._typed["via"] = v
        return v  # type: ignore[return-value]

    @property
    def top_via(self) -> Via:
        """The topmost Via. Raises SIPParseError when there is none."""
        vias = self.vias
        if not vias:
            raise SIPParseError("missing Via header")
        return vias[0]

    @property
    def call_id(self) -> str:
        """The Call-ID."""
        v = self._typed.get("call-id")
        if v is None:
            v = self._single("call-id")
            if not v or any(c in v for c in " \t"):
                raise SIPParseError("invalid Call-ID")
            self._typed["call-id"] = v
        return v  # type: ignore[return-value]

    @property
    def cseq(self) -> CSeq:
        """The CSeq (number and method)."""
        v = self._typed.get("cseq")
        if v is None:
            v = parse_cseq(self._single("cseq"))
            self._typed["cseq"] = v
        return v  # type: ignore[return-value]

    def _address(self, key: str) -> NameAddress:
        v = self._typed.get(key)
        if v is None:
            v = parse_address(self._single(key))
            self._typed[key] = v
        return v  # type: ignore[return-value]

    @property
    def from_(self) -> NameAddress:
        """The From header (``from`` is a Python keyword)."""
        return self._address("from")

    @property
    def to(self) -> NameAddress:
        """The To header."""
        return self._address("to")

    def _address_list(self, key: str) -> list[NameAddress]:
        v = self._typed.get(key)
        if v is None:
            v = [parse_address(x) for x in self.headers.get_all(key)]
            self._typed[key] = v
        return v  # type: ignore[return-value]

    @property
    def contacts(self) -> list[NameAddress]:
        """Contact values (empty for ``Contact: *``; see :attr:`contact_star`)."""
        if self.contact_star:
            return []
        return self._address_list("contact")

    @property
    def contact_star(self) -> bool:
        """True for the ``Contact: *`` of an un-REGISTER (RFC 3261 §10.2.2)."""
        return self.headers.get("Contact", "").strip() == "*"

    @property
    def routes(self) -> list[NameAddress]:
        """Route values in order."""
        return self._address_list("route")

    @property
    def record_routes(self) -> list[NameAddress]:
        """Record-Route values in order."""
        return self._address_list("record-route")

    def _int(self, key: str, limit: int) -> int | None:
        values = self.headers.get_lines(key)
        if not values:
            return None
        if len(set(values)) > 1:
            raise SIPParseError(f"conflicting {canonical_name(key)} values")
        text = values[0]
        if not text.isdigit() or not text.isascii() or len(text) > 12:
            raise SIPParseError(f"invalid {canonical_name(key)}: {text[:20]!r}")
        n = int(text)
        if n > limit:
            raise SIPParseError(f"{canonical_name(key)} out of range")
        return n

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (0-255), None when absent."""
        return self._int("max-forwards", 255)

    @property
    def expires(self) -> int | None:
        """Expires in seconds, None when absent (RFC 3261 §20.19: up to 2**32-1)."""
        return self._int("expires", 2**32 - 1)

    @property
    def content_length(self) -> int | None:
        """The Content-Length header's value (None when absent)."""
        return self._int(_CONTENT_LENGTH_KEY, 2**31)

    @property
    def content_type(self) -> str | None:
        """The media type without parameters, lower-case (``application/sdp``)."""
        v = self.headers.get("Content-Type")
        if v is None:
            return None
        return v.split(";", 1)[0].strip().lower()

    def tokens(self, name: str) -> list[str]:
        """A list header's values as lower-case tokens (Require, Supported, Allow...)."""
        return [t.lower() for t in self.headers.get_all(name)]

    # -- serialization ------------------------------------------------------------------------
    def start_line(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialize; Content-Length always matches the body."""
        body = self.body
        lines = [self.start_line()]
        has_cl = False
        for name, value in self.headers._items:
            if name == "Content-Length":
                if not has_cl:
                    lines.append(f"Content-Length: {len(body)}")
                    has_cl = True
                continue
            lines.append(f"{name}: {value}")
        if not has_cl:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("")
        lines.append("")
        head = "\r\n".join(lines).encode("utf-8", "surrogateescape")
        return head + body if body else head

    __bytes__ = to_bytes

    def head_bytes(self) -> bytes:
        """Start line and header lines as received or built, without validating them."""
        text = f"{self.start_line()}\r\n{self.headers.text()}\r\n\r\n"
        return text.encode("utf-8", "surrogateescape")

    def __str__(self) -> str:
        return self.to_bytes().decode("utf-8", "replace")


class Request(Message):
    """A SIP request.

    Attributes:
        method: the method (case-sensitive, RFC 3261 §7.1).
        uri: the Request-URI.
    """

    __slots__ = ("_uri", "_uri_text", "method")

    def __init__(
        self,
        method: str,
        uri: URI | str,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self._uri: URI | None = uri if isinstance(uri, URI) else parse_uri(uri)
        self._uri_text: str | None = None

    @property
    def uri(self) -> URI:
        """The Request-URI (parsed on first access for received requests).

        Raises:
            SIPParseError: for a malformed Request-URI (400).
        """
        uri = self._uri
        if uri is None:
            text = self._uri_text or ""
            if text.startswith("<"):
                raise SIPParseError("Request-URI enclosed in <>")
            uri = parse_uri(text)
            if uri.is_sip and uri.headers:
                # RFC 3261 §19.1.1 table 1: headers are not allowed in a Request-URI.
                raise SIPParseError("Request-URI contains headers")
            self._uri = uri
        return uri

    @uri.setter
    def uri(self, value: URI) -> None:
        self._uri = value
        self._uri_text = None

    def start_line(self) -> str:
        # The received text until the URI is replaced: reading .uri must not change the bytes.
        uri = self._uri_text if self._uri_text is not None else self._uri
        return f"{self.method} {uri} {SIP_VERSION}"

    def check(self) -> None:
        """Validate what any UA or transaction layer relies on (RFC 3261 §8.2, §16.3).

        Raises:
            SIPParseError: with status 400 for missing/duplicated/malformed mandatory headers
                or a CSeq method that does not match; 505 is raised at parse time.
        """
        _ = self.uri, self.top_via, self.call_id, self.from_, self.to
        cseq = self.cseq
        # RFC 3261 §8.2.x / RFC 4475 §3.1.2.x: the CSeq method must equal the request method.
        if cseq.method != self.method:
            raise SIPParseError("CSeq method does not match the request method")
        self.max_forwards  # noqa: B018 - validates range
        self.content_length  # noqa: B018
        if self.headers.get("Expires") is not None:
            self.expires  # noqa: B018
        if "contact" in self.headers and not self.contact_star:
            self.contacts  # noqa: B018


class Response(Message):
    """A SIP response.

    Attributes:
        status: the status code (100-699).
        reason: the reason phrase.
    """

    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | Iterable[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = REASON_PHRASES.get(status, "Unknown") if reason is None else reason

    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    @property
    def is_provisional(self) -> bool:
        """1xx."""
        return self.status < 200

    @property
    def is_final(self) -> bool:
        """2xx-6xx."""
        return self.status >= 200

    def check(self) -> None:
        """Validate the fields a client transaction relies on; raises SIPParseError."""
        _ = self.top_via, self.call_id, self.from_, self.to, self.cseq
        self.content_length  # noqa: B018


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------
def _split_head(data: bytes) -> tuple[bytes, bytes, bool]:
    """Split at the empty line. Returns (head, rest, found). Tolerates bare LF (RFC 5118)."""
    idx = data.find(b"\r\n\r\n")
    # The earliest end wins: a bare-LF head may be followed by CRLFs in the body.
    lf = data.find(b"\n\n", 0, idx if idx >= 0 else len(data))
    if lf >= 0:
        return data[:lf], data[lf + 2 :], True
    if idx >= 0:
        return data[:idx], data[idx + 4 :], True
    return data, b"", False


def _split_header_lines(text: str) -> list[tuple[str, str]]:
    """Split a header section (without its start line) into (canonical name, value) pairs."""
    try:
        return _split_lines(text)
    except SIPParseError:
        # A folded line (leading SP/HT) is not a valid header line: only then look for
        # folding, so unfolded messages never pay for the search.
        if _FOLD_FIND_RE.search(text) is None:
            raise
    return _split_lines(_FOLD_RE.sub(" ", text))  # RFC 3261 §7.3.1: folding is one SP


def _split_lines(text: str) -> list[tuple[str, str]]:
    if not text:
        return []
    lines = text.split("\r\n")
    if len(lines) != text.count("\n") + 1:
        lines = [line.rstrip("\r") for line in text.split("\n")]  # bare LF line ends
    items: list[tuple[str, str]] = []
    append = items.append
    cache = _NAME_CACHE
    for line in lines:
        name, sep, value = line.partition(":")
        info = cache.get(name) or name_info(name)
        if not sep:
            raise SIPParseError(f"malformed header line {line[:60]!r}")
        append((info[1], value.strip(" \t")))  # LWS only: NBSP, U+0085 ... are value
    return items


def _parse_start(start: str, headers: Headers) -> Message:
    if start.startswith(SIP_VERSION + " ") or start.startswith("SIP/"):
        parts = start.split(" ", 2)
        if parts[0] != SIP_VERSION:
            raise SIPParseError(f"unsupported version {parts[0]!r}", status=505)
        if len(parts) < 2 or len(parts[1]) != 3 or not (parts[1].isascii() and parts[1].isdigit()):
            raise SIPParseError(f"invalid status code in {start[:60]!r}")
        status = int(parts[1])
        if status < 100 or status > 699:
            raise SIPParseError(f"status code out of range: {status}")
        return Response(status, parts[2] if len(parts) > 2 else "", headers)
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SIPParseError(f"malformed request line {start[:80]!r}")
    method, uri_text, version = parts
    if method not in KNOWN_METHODS and not _METHOD_RE.match(method):
        raise SIPParseError(f"invalid method {method[:40]!r}")
    if version != SIP_VERSION:
        if version.startswith("SIP/"):
            raise SIPParseError(f"unsupported version {version!r}", status=505)
        raise SIPParseError(f"malformed request line {start[:80]!r}")
    req = Request.__new__(Request)
    req.headers = headers
    req.body = b""
    req._typed = {}
    req.method = method
    req._uri = None
    req._uri_text = uri_text
    return req


def parse_message(
    data: bytes, *, datagram: bool = True, max_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> Request | Response:
    """Parse one complete message.

    Args:
        data: the message bytes (a whole datagram, or one framed stream message).
        datagram: when True (UDP), a missing Content-Length means "the rest of the datagram"
            (RFC 3261 §18.3, RFC 2543 compatibility) and octets beyond Content-Length are
            discarded; when False a missing Content-Length means an empty body.
        max_size: the largest message accepted (answered with 513 otherwise).

    Returns:
        A :class:`Request` or :class:`Response`.

    Raises:
        SIPParseError: with ``status`` set to the response to send (400, 505, 513...).
    """
    if len(data) > max_size:
        raise MessageTooLarge()
    # RFC 3261 §7.5: implementations should ignore CRLFs preceding the start line.
    if data[:2] == b"\r\n":
        data = data.lstrip(b"\r\n")
    head, rest, found = _split_head(data)
    if not found:
        if not datagram:
            raise SIPParseError("incomplete message")
        # A datagram may end right after the last header line (RFC 5118 archive files).
        head = head.rstrip(b"\r\n")
        rest = b""
    text = head.decode("utf-8", "surrogateescape")
    start, _, header_text = text.partition("\n")
    msg = _parse_start(start.rstrip("\r"), Headers.from_wire(header_text))
    # Framing needs Content-Length now; everything else is split on first use.
    values = _CL_TEXT_RE.findall(text)
    if values and not all(v.strip(" \t\r").isdigit() for v in values):
        msg.headers.validate()  # a folded value, or a real error: let the full split decide
        values = msg.headers.get_lines("Content-Length")
    values = [v.strip(" \t\r") for v in values]
    if values:
        if len(set(values)) > 1:
            raise SIPParseError("conflicting Content-Length values")
        text = values[0]
        if not text.isdigit() or not text.isascii() or len(text) > 12:
            raise SIPParseError(f"invalid Content-Length {text[:20]!r}")
        length = int(text)
        if length > len(rest):
            raise SIPParseError("Content-Length larger than the message body")
        msg.body = rest[:length] if length != len(rest) else rest
    else:
        msg.body = rest if datagram else b""
    return msg


class StreamParser:
    """Frames messages on a stream transport (TCP, TLS) by Content-Length (RFC 3261 §18.3).

    Feed bytes with :meth:`receive_data`; take messages with :meth:`next_event`, which
    returns a message, ``None`` when more data is needed, or raises SIPParseError for a
    framing error (after which the connection must be closed: the stream is unrecoverable).
    CRLF keep-alives (RFC 5626 §3.5.1) are counted in :attr:`keepalives`;
    :attr:`pong_due` tells the adapter to answer a double-CRLF ping with a single CRLF.

    Args:
        max_size: largest header section + body accepted.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._buf = bytearray()
        self.max_size = max_size
        self.keepalives = 0
        self.pong_due = 0
        self._failed: SIPParseError | None = None
        self.last_bad_frame: bytes | None = None

    def receive_data(self, data: bytes) -> None:
        """Buffer received bytes."""
        if self._failed is None:
            self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes held and not yet framed."""
        return len(self._buf)

    def next_event(self) -> Request | Response | None:
        """The next complete message, or None when more data is needed."""
        if self._failed is not None:
            raise self._failed
        buf = self._buf
        # Keep-alives: "\r\n\r\n" is a ping (answer "\r\n"), a lone "\r\n" a pong.
        while buf[:2] == b"\r\n":
            if buf[:4] == b"\r\n\r\n":
                del buf[:4]
                self.keepalives += 1
                self.pong_due += 1
            elif len(buf) < 4 and b"\r\n\r\n".startswith(buf):
                return None  # could be the start of a ping
            else:
                del buf[:2]
                self.keepalives += 1
        if not buf:
            return None
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self.max_size:
                self._fail(MessageTooLarge())
            return None
        head = bytes(buf[:end])
        found = _STREAM_CL_RE.findall(head)
        length = 0
        if found:
            text = found[0]
            if len(set(found)) > 1 or not text.isdigit() or len(text) > 12:
                # Unrecoverable framing (RFC 4475 §3.1.2.3, §3.3.9): the head is kept so
                # the caller can still answer 400 before closing the connection.
                self.last_bad_frame = head + b"\r\n\r\n"
                self._fail(SIPParseError("invalid Content-Length on stream"))
            length = int(text)
        total = end + 4 + length
        if total > self.max_size:
            self._fail(MessageTooLarge())
        if len(buf) < total:
            return None
        frame = bytes(buf[:total])
        del buf[:total]
        try:
            return parse_message(frame, datagram=False, max_size=self.max_size)
        except SIPParseError:
            # Framed but malformed: the stream goes on; keep the bytes so the caller can
            # answer 400 from them.
            self.last_bad_frame = frame
            raise

    @property
    def failed(self) -> bool:
        """True after an unrecoverable framing error (the connection must be closed)."""
        return self._failed is not None

    def _fail(self, error: SIPParseError) -> None:
        self._failed = error
        self._buf.clear()
        raise error
