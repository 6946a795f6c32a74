"""SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966), other schemes kept opaque.

Parsing unescapes each component exactly once (RFC 3261 §19.1.2: ``%HH`` in a user part,
password, parameter or header is the encoded octet); serialising escapes again only what the
grammar does not allow raw, so ``parse(str(uri)) == uri`` holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from p2psip.errors import SIPParseError

__all__ = [
    "URI",
    "escape",
    "parse_uri",
    "unescape",
]

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_MARK = "-_.!~*'()"
_UNRESERVED = _ALNUM + _MARK
# RFC 3261 §25.1 character classes, each with the unreserved set.
_USER_SAFE = frozenset(_UNRESERVED + "&=+$,;?/")
_PASSWORD_SAFE = frozenset(_UNRESERVED + "&=+$,")
_PARAM_SAFE = frozenset(_UNRESERVED + "[]/:&+$")
_HEADER_SAFE = frozenset(_UNRESERVED + "[]/?:+$")
_TEL_SAFE = frozenset(_UNRESERVED + "+#*;=/:&$,")  # liberal: RFC 3966 par/visual separators
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*\Z")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_.])?\Z")
_IPV6_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]\Z")
_ESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")


def unescape(text: str) -> str:
    """Decode ``%HH`` escapes once (RFC 3261 §19.1.2). Octets >= 0x80 decode as UTF-8.

    Raises:
        SIPParseError: for a ``%`` not followed by two hex digits.
    """
    if "%" not in text:
        return text
    if text.count("%") != len(_ESCAPE_RE.findall(text)):
        raise SIPParseError(f"bad escape in {text!r}")
    raw = _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
    try:
        # UTF-8 where the octets form valid sequences; any other octet becomes a lone
        # surrogate, which escape() turns back into the same octet.
        return raw.encode("latin-1").decode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return raw


def escape(text: str, safe: frozenset[str] = _USER_SAFE) -> str:
    """Escape every character of ``text`` not in ``safe`` as ``%HH`` (UTF-8 octets)."""
    if all(c in safe for c in text):
        return text
    out = []
    for c in text:
        if c in safe:
            out.append(c)
        else:
            out.extend(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
    return "".join(out)


_CHECK_RE: dict[frozenset[str], re.Pattern[str]] = {}


def _check_raw(text: str, safe: frozenset[str], what: str) -> None:
    pattern = _CHECK_RE.get(safe)
    if pattern is None:
        pattern = re.compile("[" + re.escape("".join(sorted(safe)) + "%") + "]*")
        _CHECK_RE[safe] = pattern
    if not pattern.fullmatch(text):
        bad = next(c for c in text if c not in safe and c != "%")
        raise SIPParseError(f"invalid character {bad!r} in URI {what}")


@dataclass(frozen=True, slots=True)
class URI:
    """A parsed URI.

    For ``sip``/``sips`` every field is meaningful; for ``tel`` the subscriber number is in
    ``user`` and ``params`` holds its parameters; any other scheme keeps its text in ``opaque``.

    Attributes:
        scheme: lower-case scheme name.
        user: unescaped user part (may contain any character, NUL included), or None.
        password: unescaped password, or None.
        host: host name, IPv4 address or bracketed IPv6 reference (``[2001:db8::1]``).
        port: port number or None when absent.
        params: URI parameters, names lower-cased, values unescaped (None for a flag).
        headers: URI headers (``?name=value&...``), unescaped, in order.
        opaque: everything after ``scheme:`` for schemes this library does not interpret.
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()
    opaque: str | None = None

    @classmethod
    def parse(cls, text: str) -> URI:
        """Parse a URI; see :func:`parse_uri`."""
        return parse_uri(text)

    # -- helpers ----------------------------------------------------------------------------
    @property
    def is_sip(self) -> bool:
        """True for ``sip:`` and ``sips:`` URIs."""
        return self.scheme in ("sip", "sips")

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower-cased, or None."""
        t = self.params.get("transport")
        return t.lower() if t else None

    @property
    def host_plain(self) -> str:
        """The host without IPv6 brackets (suitable for socket calls)."""
        h = self.host
        return h[1:-1] if h.startswith("[") else h

    @property
    def aor(self) -> str:
        """The address-of-record form ``scheme:user@host`` (no port, params or headers)."""
        if not self.is_sip:
            return str(self.with_(params={}, headers=()))
        user = f"{escape(self.user)}@" if self.user is not None else ""
        return f"{self.scheme}:{user}{self.host.lower()}"

    def with_(self, **changes: object) -> URI:
        """Return a copy with some fields replaced (``uri.with_(port=5070)``)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        parts = [self.scheme, ":"]
        if self.scheme == "tel":
            parts.append(escape(self.user or "", _TEL_SAFE))
        else:
            if self.user is not None:
                parts.append(escape(self.user, _USER_SAFE))
                if self.password is not None:
                    parts.append(":")
                    parts.append(escape(self.password, _PASSWORD_SAFE))
                parts.append("@")
            parts.append(self.host)
            if self.port is not None:
                parts.append(f":{self.port}")
        for name, value in self.params.items():
            parts.append(";")
            parts.append(escape(name, _PARAM_SAFE))
            if value is not None:
                parts.append("=")
                parts.append(escape(value, _PARAM_SAFE))
        if self.headers:
            parts.append("?")
            parts.append(
                "&".join(
                    f"{escape(n, _HEADER_SAFE)}={escape(v, _HEADER_SAFE)}" for n, v in self.headers
                )
            )
        return "".join(parts)

    def equivalent(self, other: URI) -> bool:
        """URI comparison of RFC 3261 §19.1.4 (simplified: user, host, port, key params)."""
        if self.scheme != other.scheme:
            return False
        if not self.is_sip:
            return str(self).lower() == str(other).lower()
        if (self.user, self.password) != (other.user, other.password):
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        for key in ("transport", "user", "ttl", "method", "maddr"):
            a, b = self.params.get(key), other.params.get(key)
            if (a is None) != (b is None) or (a and b and a.lower() != b.lower()):
                return False
        for key in set(self.params) & set(other.params):
            a, b = self.params[key], other.params[key]
            if (a or "").lower() != (b or "").lower():
                return False
        return sorted(self.headers) == sorted(other.headers)


def _parse_params(text: str, safe: frozenset[str]) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if not text:
        return params
    for item in text.split(";"):
        if not item:
            raise SIPParseError("empty URI parameter")
        name, eq, value = item.partition("=")
        _check_raw(name, safe, "parameter")
        if not name:
            raise SIPParseError("empty URI parameter name")
        if eq:
            _check_raw(value, safe, "parameter")
            params[unescape(name).lower()] = unescape(value)
        else:
            params[unescape(name).lower()] = None
    return params


def _parse_host(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SIPParseError("unterminated IPv6 reference")
        host, rest = text[: end + 1], text[end + 1 :]
        if not _IPV6_RE.match(host):
            raise SIPParseError(f"invalid IPv6 reference {host!r}")
        if rest and not rest.startswith(":"):
            raise SIPParseError(f"junk after IPv6 reference: {rest!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_ = text.partition(":")
        port_text = port_text_ if colon else None
        if not _HOSTNAME_RE.match(host):
            raise SIPParseError(f"invalid host {host!r}")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not port_text.isascii():
            raise SIPParseError(f"invalid port {port_text!r}")
        if len(port_text.lstrip("0")) > 5:
            raise SIPParseError(f"port out of range: {port_text[:20]}")
        port = int(port_text)
        if port > 65535:
            raise SIPParseError(f"port out of range: {port}")
    return host, port


# Fast path for the common shape of a SIP URI; anything it does not match (escapes, odd
# IPv6 forms, headers, errors) goes through the general parser below, which raises the
# precise error. The character classes are those of RFC 3261 §25.1.
_FAST_SIP_RE = re.compile(
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,;?/]+)@)?"
    r"([A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_.])?|\[[0-9A-Fa-f:.]+\])"
    r"(?::([0-9]{1,5}))?((?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$=]+)*)\Z"
)
_CACHE: dict[str, URI] = {}
_CACHE_MAX = 4096


def parse_uri(text: str) -> URI:
    """Parse ``text`` as a URI.

    Results are cached by text: URIs are immutable values; never edit one in place (use
    :meth:`URI.with_`).

    Raises:
        SIPParseError: (status 400) when the text is not a valid URI of its scheme. A URI
            of an unknown scheme is not an error: it is returned with ``opaque`` set.
    """
    uri = _CACHE.get(text)
    if uri is not None:
        return uri
    uri = _parse_uri_fast(text) or _parse_uri_slow(text)
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[text] = uri
    return uri


def _parse_uri_fast(text: str) -> URI | None:
    m = _FAST_SIP_RE.match(text)
    if m is None:
        return None
    scheme, user, host, port, ptext = m.groups()
    params: dict[str, str | None] = {}
    if ptext:
        for item in ptext[1:].split(";"):
            name, eq, value = item.partition("=")
            if not name or "=" in value:
                return None
            params[name.lower()] = value if eq else None
    p = int(port) if port else None
    if p is not None and p > 65535:
        return None
    return URI(scheme, user, None, host, p, params)


def _parse_uri_slow(text: str) -> URI:
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME_RE.match(scheme):
        raise SIPParseError(f"not a URI: {text[:80]!r}")
    scheme = scheme.lower()
    if scheme in ("sip", "sips"):
        return _parse_sip(scheme, rest)
    if scheme == "tel":
        number, _, ptext = rest.partition(";")
        if not number:
            raise SIPParseError("empty tel URI")
        _check_raw(number, _TEL_SAFE, "tel number")
        return URI(scheme="tel", user=unescape(number), params=_parse_params(ptext, _PARAM_SAFE))
    if not rest or any(c in ' \t\r\n<>"' for c in rest):
        raise SIPParseError(f"invalid URI {text[:80]!r}")
    return URI(scheme=scheme, opaque=rest)


def _parse_sip(scheme: str, rest: str) -> URI:
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo, hostpart = rest[:at], rest[at + 1 :]
        u, colon, p = userinfo.partition(":")
        _check_raw(u, _USER_SAFE, "user part")
        user = unescape(u)
        if colon:
            _check_raw(p, _PASSWORD_SAFE, "password")
            password = unescape(p)
    else:
        hostpart = rest
    hostpart, q, htext = hostpart.partition("?")
    hostport, _, ptext = hostpart.partition(";")
    if not hostport:
        raise SIPParseError("URI has no host")
    host, port = _parse_host(hostport)
    headers: tuple[tuple[str, str], ...] = ()
    if q:
        hs = []
        for item in htext.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                raise SIPParseError(f"invalid URI header {item!r}")
            _check_raw(name, _HEADER_SAFE, "header")
            _check_raw(value, _HEADER_SAFE, "header")
            hs.append((unescape(name), unescape(value)))
        headers = tuple(hs)
    return URI(
        scheme=scheme,
        user=user,
        password=password,
        host=host,
        port=port,
        params=_parse_params(ptext, _PARAM_SAFE),
        headers=headers,
    )
