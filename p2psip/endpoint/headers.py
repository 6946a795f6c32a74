"""Header-field grammar: names, compact forms, comma lists, parameters and typed values.

RFC 3261 §7.3 (header fields, compact forms), §20 (header definitions), §25.1 (ABNF).
Every parser here raises :class:`~p2psip.errors.SIPParseError` (status 400) on bad input
and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from p2psip.endpoint.uri import URI, parse_uri
from p2psip.errors import SIPParseError

__all__ = [
    "CSeq",
    "NameAddress",
    "Via",
    "canonical_name",
    "format_params",
    "header_key",
    "parse_address",
    "parse_cseq",
    "parse_params",
    "parse_via",
    "quote",
    "split_list",
]

# RFC 3261 §7.3.3 compact forms, plus those registered later (RFC 3265, 3515, 3892, 3841, 4028).
COMPACT_FORMS = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
    "n": "Identity-Info",
}
_KNOWN = [
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Allow-Events",
    "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "In-Reply-To",
    "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version", "Organization", "Priority",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Refer-To", "Referred-By", "Reply-To", "Require", "Retry-After", "Route",
    "RSeq", "Server", "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject",
    "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via",
    "Warning", "WWW-Authenticate", "Path", "Service-Route", "P-Asserted-Identity",
    "Accept-Contact", "Reject-Contact", "Request-Disposition", "Identity", "Identity-Info",
    "Replaces", "Privacy",
]  # fmt: skip
_CANONICAL: dict[str, str] = {n.lower(): n for n in _KNOWN}
_CANONICAL.update(COMPACT_FORMS)
# Exact spelling seen on the wire -> lower-case key of the canonical name. Filled lazily; the
# common spellings hit this dict on the first lookup.
_KEY_CACHE: dict[str, str] = {}
# Exact spelling seen on the wire (already validated as a token) -> (key, canonical name).
_NAME_CACHE: dict[str, tuple[str, str]] = {}
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")

# Headers whose values may be comma-separated lists (RFC 3261 §7.3.1). Authorization-type
# headers, Date and the like are not split: their grammar uses commas internally.
LIST_HEADERS = frozenset(
    k.lower()
    for k in (
        "Via", "Contact", "Route", "Record-Route", "Allow", "Supported", "Require",
        "Proxy-Require", "Unsupported", "Accept", "Accept-Encoding", "Accept-Language",
        "Content-Encoding", "Content-Language", "Alert-Info", "Call-Info", "Error-Info",
        "In-Reply-To", "Warning", "Allow-Events", "Path", "Service-Route", "Reason",
        "P-Asserted-Identity", "Privacy", "Accept-Contact", "Reject-Contact",
    )
)  # fmt: skip


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name (``"v"`` -> ``"Via"``, ``"cseq"`` -> ``"CSeq"``)."""
    return _CANONICAL.get(name.lower(), name)


def header_key(name: str) -> str:
    """The lookup key of a header name: its canonical name, lower-cased."""
    key = _KEY_CACHE.get(name)
    if key is None:
        key = canonical_name(name).lower()
        if len(_KEY_CACHE) < 4096:
            _KEY_CACHE[name] = key
    return key


def name_info(wire_name: str) -> tuple[str, str]:
    """(lookup key, canonical name) for a header name as written on the wire.

    Raises:
        SIPParseError: when the name is not a token.
    """
    info = _NAME_CACHE.get(wire_name)
    if info is None:
        name = wire_name.rstrip(" \t")
        if not _TOKEN_RE.match(name):
            raise SIPParseError(f"invalid header name {wire_name[:40]!r}")
        canon = canonical_name(name)
        info = (canon.lower(), canon)
        if len(_NAME_CACHE) < 4096:
            _NAME_CACHE[wire_name] = info
    return info


def is_token(text: str) -> bool:
    """True when ``text`` is an RFC 3261 token."""
    return bool(_TOKEN_RE.match(text))


def quote(text: str) -> str:
    """Make a quoted-string, escaping ``"`` and ``\\`` (RFC 3261 §25.1 quoted-pair)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted-string starting at ``text[start] == '"'``; return (value, end index)."""
    out = []
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 >= n:
                break
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise SIPParseError("unterminated quoted string")


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quoted strings and ``<...>``.

    Raises:
        SIPParseError: on an empty element (``a,,b``) or an unterminated quote.
    """
    if "," not in value:
        v = value.strip()
        if not v:
            raise SIPParseError("empty header value")
        return [v]
    items = []
    depth = 0
    start = 0
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c == '"':
            _, i = _read_quoted(value, i)
            continue
        if c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            items.append(value[start:i].strip())
            start = i + 1
        i += 1
    items.append(value[start:].strip())
    if any(not item for item in items):
        raise SIPParseError("empty element in header list")
    return items


def _split_semicolons(text: str) -> list[str]:
    if '"' not in text:
        return text.split(";")
    parts = []
    start = i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            _, i = _read_quoted(text, i)
            continue
        if c == ";":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


_FAST_PARAMS_RE = re.compile(
    r"[A-Za-z0-9\-.!%*_+`'~]+(?:=[^;\s\"<>,=]+)?(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[^;\s\"<>,=]+)?)*\Z"
)


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` header parameters (generic-param, RFC 3261 §25.1).

    ``text`` starts after the first ``;`` (or is empty). Names are lower-cased; quoted values
    are unquoted. Raises SIPParseError for an empty or non-token name.
    """
    params: dict[str, str | None] = {}
    if _FAST_PARAMS_RE.match(text):
        for item in text.split(";"):
            name, eq, value = item.partition("=")
            params[name.lower()] = value if eq else None
        return params
    if not text.strip():
        if text:
            raise SIPParseError("empty header parameter")
        return params
    for item in _split_semicolons(text):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not name or not _TOKEN_RE.match(name):
            raise SIPParseError(f"invalid header parameter {item.strip()!r}")
        if eq:
            value = value.strip()
            if value.startswith('"'):
                unq, end = _read_quoted(value, 0)
                if value[end:].strip():
                    raise SIPParseError(f"junk after quoted parameter {name}")
                params[name.lower()] = unq
            else:
                if not value or any(c in value for c in ' \t"<>,'):
                    raise SIPParseError(f"invalid value for parameter {name}")
                params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def format_params(params: dict[str, str | None]) -> str:
    """Serialize header parameters as ``;name=value`` (values quoted when not tokens/hosts)."""
    out = []
    for name, value in params.items():
        if value is None:
            out.append(f";{name}")
        elif value == "" or any(c in value for c in ' \t";,<>\\'):
            out.append(f";{name}={quote(value)}")
        else:
            out.append(f";{name}={value}")
    return "".join(out)


# --------------------------------------------------------------------------------------------
# name-addr / addr-spec: From, To, Contact, Route, Record-Route, Reply-To, Refer-To, ...
# --------------------------------------------------------------------------------------------
@dataclass(slots=True)
class NameAddress:
    """A name-addr or addr-spec with header parameters (RFC 3261 §20.10, §20.20, §20.39).

    Attributes:
        uri: the URI.
        display_name: the display name (unquoted), or None.
        params: header parameters (``tag``, ``expires``, ``q``, ...), names lower-case.
    """

    uri: URI
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (From/To), or None."""
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddress:
        """A copy with the ``tag`` parameter set."""
        params = dict(self.params)
        params["tag"] = tag
        return NameAddress(self.uri, self.display_name, params)

    def __str__(self) -> str:
        if self.display_name is not None:
            dn = self.display_name
            plain = dn and is_token_list(dn) and " ".join(dn.split()) == dn
            head = (dn + " ") if plain else (quote(dn) + " ")
        else:
            head = ""
        return f"{head}<{self.uri}>{format_params(self.params)}"


def is_token_list(text: str) -> bool:
    """True for ``token *(LWS token)`` (an unquoted display name)."""
    return all(_TOKEN_RE.match(t) for t in text.split())


# name-addr without quoted-pairs in the display name: the shape of nearly every header.
_FAST_ADDRESS_RE = re.compile(
    r"[ \t]*(?:\"([^\"\\]*)\"[ \t]*"
    r"|((?:[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*)?)[ \t]*)"
    r"<([^<>\"\s]+)>[ \t]*(?:;(.*))?\Z",
    re.S,
)


def parse_address(value: str) -> NameAddress:
    """Parse a name-addr or addr-spec followed by header parameters.

    RFC 3261 §20.10: without ``<>`` the URI ends at the first ``;``, whose parameters belong
    to the header; such a URI may not contain ``,``, ``?`` or ``;``.

    Raises:
        SIPParseError: (400) on malformed input.
    """
    m = _FAST_ADDRESS_RE.match(value)
    if m is not None:
        quoted, tokens, uri_text, ptext = m.groups()
        display = quoted if quoted is not None else (" ".join(tokens.split()) or None)
        return NameAddress(parse_uri(uri_text), display, parse_params(ptext) if ptext else {})
    s = value.strip()
    if not s:
        raise SIPParseError("empty address")
    display = None
    if s[0] == '"':
        display, end = _read_quoted(s, 0)
        s = s[end:].lstrip()
        if not s.startswith("<"):
            raise SIPParseError("quoted display name without <URI>")
    lt = s.find("<")
    if lt >= 0:
        if lt > 0:
            dn = s[:lt].strip()
            if not is_token_list(dn):
                raise SIPParseError(f"invalid display name {dn!r}")
            display = " ".join(dn.split())
        gt = s.find(">", lt)
        if gt < 0:
            raise SIPParseError("unterminated <URI>")
        uri_text = s[lt + 1 : gt]
        rest = s[gt + 1 :].strip()
    else:
        semi = s.find(";")
        if semi >= 0:
            uri_text, rest = s[:semi].strip(), s[semi:]
        else:
            uri_text, rest = s, ""
        if any(c in uri_text for c in " \t?,"):
            raise SIPParseError(f"addr-spec must be enclosed in <>: {uri_text!r}")
    if any(c in uri_text for c in " \t\r\n"):
        raise SIPParseError(f"whitespace inside URI {uri_text!r}")
    uri = parse_uri(uri_text)
    if rest:
        if rest[0] != ";":
            raise SIPParseError(f"junk after address: {rest[:40]!r}")
        params = parse_params(rest[1:])
    else:
        params = {}
    return NameAddress(uri, display, params)


# --------------------------------------------------------------------------------------------
# Via (RFC 3261 §20.42), CSeq (§20.16)
# --------------------------------------------------------------------------------------------
_VIA_RE = re.compile(
    r"\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*"
    r"([A-Za-z0-9\-.!%*_+`'~]+)\s+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_\-.]+)"
    r"(?:\s*:\s*(\d{1,5}))?\s*(?:;(.*))?\Z",
    re.S,
)


@dataclass(slots=True)
class Via:
    """One Via header value.

    Attributes:
        transport: upper-case transport (``UDP``, ``TCP``, ``TLS``, ``SCTP``, unknown kept).
        host: sent-by host (IPv6 with brackets).
        port: sent-by port or None.
        params: parameters (``branch``, ``received``, ``rport``, ``maddr``, ``ttl``...).
        protocol: protocol name and version, normally ``SIP/2.0``.
    """

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The ``received`` parameter (RFC 3261 §18.2.1)."""
        return self.params.get("received")

    @property
    def rport(self) -> int | None:
        """The ``rport`` value (RFC 3581), or None when absent or empty."""
        v = self.params.get("rport")
        return int(v) if v and v.isascii() and v.isdigit() and len(v) <= 5 else None

    @property
    def sent_by(self) -> tuple[str, int | None]:
        """(host, port) of sent-by, host lower-cased."""
        return self.host.lower(), self.port

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"


def parse_via(value: str) -> Via:
    """Parse one Via value (``SIP/2.0/UDP host:port;branch=...``), LWS tolerant."""
    m = _VIA_RE.match(value)
    if not m:
        raise SIPParseError(f"invalid Via {value[:80]!r}")
    name, version, transport, host, port, ptext = m.groups()
    if name.upper() != "SIP" or version != "2.0":
        raise SIPParseError(f"unsupported Via protocol {name}/{version}")
    params = parse_params(ptext) if ptext is not None else {}
    # RFC 5118 §4.5: received may carry an IPv6 address with or without brackets.
    p = int(port) if port else None
    if p is not None and p > 65535:
        raise SIPParseError("Via port out of range")
    return Via(transport.upper(), host, p, params)


@dataclass(frozen=True, slots=True)
class CSeq:
    """CSeq value: sequence number and method."""

    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


_CSEQ_RE = re.compile(r"\s*(\d{1,10})\s+([A-Za-z0-9\-.!%*_+`'~]+)\s*\Z")


def parse_cseq(value: str) -> CSeq:
    """Parse a CSeq value; the number must be below 2**31 (RFC 3261 §8.1.1.5)."""
    m = _CSEQ_RE.match(value)
    if not m:
        raise SIPParseError(f"invalid CSeq {value[:40]!r}")
    seq = int(m.group(1))
    if seq >= 2**31:
        raise SIPParseError("CSeq number too large")
    return CSeq(seq, m.group(2))
