"""HTTP Digest authentication for SIP, sans-IO.

Parses and writes the values of the ``WWW-Authenticate`` / ``Proxy-Authenticate`` (challenge)
and ``Authorization`` / ``Proxy-Authorization`` (credentials) header fields, computes digests
(RFC 2617, RFC 7616, RFC 8760 for SIP) and holds the small state both ends need:

* :class:`DigestClient` answers challenges, counting ``nc`` per nonce.
* :class:`DigestServer` issues nonces tied to itself by an HMAC over their issue time, so it can
  tell its own nonces from forged ones and stale ones from fresh ones without keeping a list,
  and verifies credentials, refusing replayed nonce counts.

Nothing here reads the clock or a global random generator: time is an argument (``now``) and
randomness comes from an injected generator.

Example:
    >>> import random
    >>> server = DigestServer("example.org", {"alice": "secret"}.get, random.Random(1))
    >>> client = DigestClient("alice", "secret", random.Random(2))
    >>> challenges = [parse_challenge(value) for value in server.challenge(now=0.0)]
    >>> value = client.authorize(client.choose(challenges), "REGISTER", "sip:example.org")
    >>> server.verify(value, "REGISTER", now=1.0, request_uri="sip:example.org").username
    'alice'
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import math
import random
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from p2psip.errors import AuthenticationError, SIPParseError

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "Challenge",
    "Credentials",
    "DigestClient",
    "DigestServer",
    "RandomSource",
    "Verification",
    "VerifyFailure",
    "compute_ha1",
    "compute_ha2",
    "compute_response",
    "compute_userhash",
    "format_challenge",
    "format_challenges",
    "format_credentials",
    "hash_hex",
    "parse_challenge",
    "parse_challenges",
    "parse_credentials",
    "request_digest",
]


class RandomSource(Protocol):
    """What the client and server need from a random generator.

    ``random.Random(seed)`` in tests, ``random.SystemRandom()`` in production.
    """

    def getrandbits(self, k: int, /) -> int:
        """Return a non-negative integer with ``k`` random bits."""
        ...


# --------------------------------------------------------------------------------------------
# Algorithms
# --------------------------------------------------------------------------------------------

_HASH_NAMES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}


def _hash_available(name: str) -> bool:
    try:
        hashlib.new(name)
    except ValueError:
        return False
    return True


_BASE_ALGORITHMS = tuple(name for name, lib in _HASH_NAMES.items() if _hash_available(lib))

SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(
    variant for base in _BASE_ALGORITHMS for variant in (base, base + "-sess")
)
"""Algorithm names this module can compute, canonical spelling (RFC 7616 §6.1 registry).

SHA-512-256 is included only when ``hashlib`` provides ``sha512_256``.
"""

# RFC 8760 §2.4 / RFC 7616 §3.7: prefer the strongest hash; MD5 is the last resort.
_STRENGTH = {"MD5": 0, "SHA-256": 1, "SHA-512-256": 2}

_CANONICAL_ALGORITHMS = {
    name.lower(): name for base in _HASH_NAMES for name in (base, base + "-sess")
}


def _canonical_algorithm(algorithm: str | None) -> str:
    """Return the canonical name of a supported algorithm; ``None`` (absent) means MD5."""
    if algorithm is None:
        return "MD5"  # RFC 2617 §3.2.1: "If this is not present it is assumed to be MD5"
    canonical = _CANONICAL_ALGORITHMS.get(algorithm.lower())
    if canonical is None or canonical not in SUPPORTED_ALGORITHMS:
        raise AuthenticationError(
            f"unsupported digest algorithm {algorithm!r}; supported: "
            + ", ".join(SUPPORTED_ALGORITHMS)
        )
    return canonical


def _split_algorithm(algorithm: str | None) -> tuple[str, bool]:
    """Return ``(hash name, is -sess)`` for an algorithm name."""
    canonical = _canonical_algorithm(algorithm)
    if canonical.endswith("-sess"):
        return canonical[: -len("-sess")], True
    return canonical, False


def hash_hex(algorithm: str | None, data: bytes) -> str:
    """Hash ``data`` with the hash of a digest algorithm, as lower-case hex.

    Args:
        algorithm: a digest algorithm name (``"SHA-256-sess"`` hashes with SHA-256); ``None``
            means MD5.
        data: the bytes to hash.

    Returns:
        The hex digest, ``H(data)`` in RFC 7616 notation.

    Raises:
        AuthenticationError: the algorithm is not supported.
    """
    base, _ = _split_algorithm(algorithm)
    return hashlib.new(_HASH_NAMES[base], data).hexdigest()


def _h(algorithm: str | None, *parts: str) -> str:
    # RFC 7616 §3.4: strings are joined with ":" and hashed as UTF-8 (charset=UTF-8, §4).
    return hash_hex(algorithm, ":".join(parts).encode("utf-8"))


def compute_userhash(algorithm: str | None, username: str, realm: str) -> str:
    """Compute the hashed user name sent when the server asks for ``userhash=true``.

    Args:
        algorithm: the challenge's algorithm (``None`` means MD5).
        username: the clear user name.
        realm: the challenge's realm.

    Returns:
        ``H(username ":" realm)`` (RFC 7616 §3.4.4).

    Raises:
        AuthenticationError: the algorithm is not supported.
    """
    return _h(algorithm, username, realm)


def compute_ha1(
    algorithm: str | None,
    username: str,
    realm: str,
    password: str,
    nonce: str = "",
    cnonce: str = "",
) -> str:
    """Compute ``H(A1)``.

    Args:
        algorithm: the digest algorithm (``None`` means MD5).
        username: the clear user name (not the userhash).
        realm: the realm.
        password: the password.
        nonce: the server nonce; used by ``-sess`` algorithms only.
        cnonce: the client nonce; used by ``-sess`` algorithms only.

    Returns:
        The hex ``H(A1)``.

    Raises:
        AuthenticationError: the algorithm is not supported.
    """
    _, session = _split_algorithm(algorithm)
    # RFC 7616 §3.4.2: A1 = unq(username) ":" unq(realm) ":" passwd
    ha1 = _h(algorithm, username, realm, password)
    if session:
        # RFC 7616 §3.4.2: for -sess, A1 = H(user:realm:passwd) ":" nonce ":" cnonce
        ha1 = _h(algorithm, ha1, nonce, cnonce)
    return ha1


def compute_ha2(
    algorithm: str | None,
    method: str,
    uri: str,
    qop: str | None = None,
    body: bytes = b"",
    body_hash: str | None = None,
) -> str:
    """Compute ``H(A2)``.

    Args:
        algorithm: the digest algorithm (``None`` means MD5).
        method: the request method (``"INVITE"``).
        uri: the ``uri`` directive, the Request-URI as sent.
        qop: ``None``, ``"auth"`` or ``"auth-int"``.
        body: the message body; hashed for ``auth-int`` only (an empty body hashes the empty
            string, RFC 3261 §22.4).
        body_hash: ``H(entity-body)`` if already known; replaces hashing ``body``.

    Returns:
        The hex ``H(A2)``.

    Raises:
        AuthenticationError: unsupported algorithm or qop.
    """
    if qop is None or qop.lower() == "auth":
        # RFC 7616 §3.4.3: A2 = Method ":" request-uri
        return _h(algorithm, method, uri)
    if qop.lower() == "auth-int":
        # RFC 7616 §3.4.3: A2 = Method ":" request-uri ":" H(entity-body)
        if body_hash is None:
            body_hash = hash_hex(algorithm, body)
        return _h(algorithm, method, uri, body_hash)
    raise AuthenticationError(f"unsupported qop {qop!r}; supported: auth, auth-int")


def request_digest(
    algorithm: str | None,
    ha1: str,
    ha2: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """Compute the ``response`` directive from ``H(A1)`` and ``H(A2)``.

    Args:
        algorithm: the digest algorithm (``None`` means MD5).
        ha1: ``H(A1)`` from :func:`compute_ha1`.
        ha2: ``H(A2)`` from :func:`compute_ha2`.
        nonce: the server nonce.
        qop: ``None`` for an RFC 2069 style answer, else ``"auth"`` / ``"auth-int"``.
        nc: the nonce count, 8 hex digits; required with ``qop``.
        cnonce: the client nonce; required with ``qop``.

    Returns:
        The hex request digest.

    Raises:
        AuthenticationError: unsupported algorithm, or ``qop`` given without ``nc``/``cnonce``.
    """
    if qop is None:
        # RFC 2617 §3.2.2.1 (RFC 2069 compatibility): KD(H(A1), nonce ":" H(A2))
        return _h(algorithm, ha1, nonce, ha2)
    if nc is None or cnonce is None:
        raise AuthenticationError("qop needs both nc and cnonce")
    # RFC 7616 §3.4.1: KD(H(A1), nonce ":" nc ":" cnonce ":" qop ":" H(A2))
    return _h(algorithm, ha1, nonce, nc, cnonce, qop, ha2)


def compute_response(
    *,
    algorithm: str | None,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """Compute the ``response`` directive of Digest credentials.

    Args:
        algorithm: ``MD5``, ``MD5-sess``, ``SHA-256``, ``SHA-256-sess``, ``SHA-512-256``,
            ``SHA-512-256-sess`` (any case); ``None`` means MD5.
        username: the clear user name (also when sending a userhash).
        realm: the realm.
        password: the password.
        method: the request method.
        uri: the ``uri`` directive.
        nonce: the server nonce.
        qop: ``None`` (RFC 2069 compatibility), ``"auth"`` or ``"auth-int"``.
        nc: the nonce count as sent, 8 hex digits; required with ``qop``.
        cnonce: the client nonce; required with ``qop`` (and so with ``-sess``).
        body: the message body, hashed for ``auth-int``.

    Returns:
        The hex request digest.

    Raises:
        AuthenticationError: unsupported algorithm or qop, or a missing ``nc``/``cnonce``.
    """
    ha1 = compute_ha1(algorithm, username, realm, password, nonce, cnonce or "")
    ha2 = compute_ha2(algorithm, method, uri, qop, body)
    return request_digest(algorithm, ha1, ha2, nonce, qop, nc, cnonce)


# --------------------------------------------------------------------------------------------
# Header values
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    """One challenge from a ``WWW-Authenticate`` or ``Proxy-Authenticate`` header field.

    Attributes:
        scheme: the auth-scheme; ``"Digest"`` in any case is written ``"Digest"``, other
            schemes are kept as received (the caller decides what to do with them).
        realm: the ``realm`` directive.
        nonce: the ``nonce`` directive.
        opaque: the ``opaque`` directive, echoed by the client.
        algorithm: the ``algorithm`` directive, canonical spelling when known; ``None`` when
            absent (meaning MD5).
        qop: the offered qop options, lower-case, in the server's order; empty when absent
            (RFC 2069 compatibility).
        stale: ``stale=true``: the previous nonce was stale but the credentials were right.
        domain: the URIs of the ``domain`` directive.
        userhash: the server accepts a hashed user name (RFC 7616 §3.3).
        charset: the ``charset`` directive (only ``UTF-8`` is defined).
        token68: the token68 form of other schemes (``Negotiate abc==``), else ``None``.
        params: every auth-param as received, names lower-cased, values unquoted, including
            extension parameters. Not compared: it mirrors the fields above. When a
            challenge is built by hand it may hold only extension parameters.
    """

    scheme: str = "Digest"
    realm: str | None = None
    nonce: str | None = None
    opaque: str | None = None
    algorithm: str | None = None
    qop: tuple[str, ...] = ()
    stale: bool = False
    domain: tuple[str, ...] = ()
    userhash: bool = False
    charset: str | None = None
    token68: str | None = None
    params: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def is_digest(self) -> bool:
        """Whether this is a Digest challenge."""
        return self.scheme.lower() == "digest"


@dataclass(frozen=True)
class Credentials:
    """The value of an ``Authorization`` or ``Proxy-Authorization`` header field.

    Attributes:
        scheme: the auth-scheme, ``"Digest"`` normalised as in :class:`Challenge`.
        username: the user name (decoded from ``username*`` if that was used), or the
            userhash when ``userhash`` is true.
        realm: the ``realm`` directive.
        nonce: the ``nonce`` directive.
        uri: the ``uri`` directive (the Request-URI).
        response: the request digest.
        algorithm: canonical spelling when known; ``None`` when absent (MD5).
        cnonce: the client nonce.
        opaque: the ``opaque`` directive echoed from the challenge.
        qop: the chosen qop, lower-case.
        nc: the nonce count exactly as sent (8 hex digits).
        userhash: ``username`` is ``H(username:realm)`` (RFC 7616 §3.4.4).
        username_star: the user name travels as ``username*`` (RFC 7616 §3.4.4, RFC 8187).
        token68: the token68 form of other schemes, else ``None``.
        params: every auth-param as received (see :class:`Challenge`); not compared.
    """

    scheme: str = "Digest"
    username: str | None = None
    realm: str | None = None
    nonce: str | None = None
    uri: str | None = None
    response: str | None = None
    algorithm: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    userhash: bool = False
    username_star: bool = False
    token68: str | None = None
    params: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def is_digest(self) -> bool:
        """Whether these are Digest credentials."""
        return self.scheme.lower() == "digest"


# RFC 7230 §3.2.6 tchar (a superset of RFC 3261's token characters).
_TCHAR = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)
# RFC 7235 §2.1 token68.
_TOKEN68_CHAR = frozenset("-._~+/" + string.ascii_letters + string.digits)
_HEXDIGITS = frozenset(string.hexdigits)
_WSP = " \t"


class _Scanner:
    """A cursor over a header value, following RFC 7235 §2.1 / RFC 3261 §25.1."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, what: str) -> SIPParseError:
        return SIPParseError(f"bad auth header value at offset {self.pos}: {what}")

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _line_break_length(self, pos: int) -> int:
        """Length of the folded line break (CRLF or LF, then WSP) at ``pos``."""
        if self.text.startswith("\r\n", pos):
            length = 2
        elif self.text.startswith("\n", pos):
            length = 1
        else:
            raise self.error("CR without LF")
        following = self.text[pos + length : pos + length + 1]
        if not following or following not in _WSP:
            # RFC 3261 §7.3.1: a line break is only allowed when followed by whitespace.
            raise self.error("line break that is not a continuation line")
        return length

    def skip_ws(self) -> bool:
        """Skip LWS (RFC 3261 §25.1); return whether any was skipped."""
        start = self.pos
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in _WSP:
                self.pos += 1
            elif char in "\r\n":
                self.pos += self._line_break_length(self.pos)
            else:
                break
        return self.pos > start

    def token(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TCHAR:
            self.pos += 1
        return self.text[start : self.pos]

    def quoted_string(self) -> str:
        """Read a quoted-string starting at the opening quote; return it unquoted."""
        self.pos += 1  # the opening DQUOTE
        chars: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise self.error("unterminated quoted-string")
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(chars)
            if char == "\\":
                # RFC 3261 §25.1 quoted-pair: "\" (%x00-09 / %x0B-0C / %x0E-7F)
                escaped = self.text[self.pos + 1 : self.pos + 2]
                if not escaped or escaped in "\r\n":
                    raise self.error("bad quoted-pair")
                chars.append(escaped)
                self.pos += 2
            elif char in "\r\n":
                # A folded line inside quotes is kept as its whitespace.
                self.pos += self._line_break_length(self.pos)
            elif (char < " " and char != "\t") or char == "\x7f":
                raise self.error("control character in quoted-string")
            else:
                chars.append(char)
                self.pos += 1

    def skip_list_separators(self) -> None:
        """Skip ``,`` and the empty list elements RFC 7230 §7 tells recipients to accept."""
        while True:
            self.skip_ws()
            if self.peek() != ",":
                return
            self.pos += 1

    def next_is_param(self) -> bool:
        """Whether an auth-param (``name =``) starts here, rather than a new challenge."""
        start = self.pos
        name = self.token()
        self.skip_ws()
        is_param = bool(name) and self.peek() == "="
        self.pos = start
        return is_param

    def try_token68(self) -> str | None:
        """Read a token68 if one, alone, ends this challenge; else leave the cursor."""
        start = self.pos
        while self.peek() in _TOKEN68_CHAR:
            self.pos += 1
        if self.pos == start:
            return None
        while self.peek() == "=":
            self.pos += 1
        value = self.text[start : self.pos]
        self.skip_ws()
        if self.at_end() or self.peek() == ",":
            return value
        self.pos = start
        return None


_Parsed = tuple[str, str | None, dict[str, str]]


def _parse_auth_list(text: str) -> list[_Parsed]:
    """Parse ``1#challenge`` (RFC 7235 §4.1) into (scheme, token68, params) triples."""
    if not isinstance(text, str):
        raise SIPParseError("auth header value must be a str")
    scanner = _Scanner(text)
    scanner.skip_list_separators()
    if scanner.at_end():
        raise SIPParseError("empty auth header value")
    result: list[_Parsed] = []
    while not scanner.at_end():
        scheme = scanner.token()
        if not scheme:
            raise scanner.error("expected an auth-scheme")
        params: dict[str, str] = {}
        token68 = None
        separated = scanner.skip_ws()
        if not scanner.at_end() and scanner.peek() != ",":
            if not separated:
                raise scanner.error("expected whitespace after the auth-scheme")
            token68 = scanner.try_token68()
            if token68 is None:
                _parse_params(scanner, params)
            elif scheme.lower() == "digest":
                # RFC 7616 §3.3: Digest takes auth-params only.
                raise SIPParseError(f"Digest needs name=value parameters, not {token68!r}")
        result.append((scheme, token68, params))
        scanner.skip_ws()
        if scanner.at_end():
            break
        if scanner.peek() != ",":
            raise scanner.error("expected ','")
        scanner.skip_list_separators()
    return result


def _parse_params(scanner: _Scanner, params: dict[str, str]) -> None:
    """Parse ``#auth-param`` up to the end or to the start of the next challenge."""
    while True:
        name = scanner.token()
        if not name:
            raise scanner.error("expected a parameter name")
        scanner.skip_ws()
        if scanner.peek() != "=":
            raise scanner.error(f"expected '=' after {name!r}")
        scanner.pos += 1
        scanner.skip_ws()
        if scanner.peek() == '"':
            value = scanner.quoted_string()
        else:
            value = scanner.token()
            if not value:
                raise scanner.error(f"expected a token or quoted-string for {name!r}")
        key = name.lower()
        if key in params:
            # RFC 7235 §2.1: each parameter name MUST only occur once per challenge.
            raise scanner.error(f"duplicate parameter {name!r}")
        params[key] = value
        scanner.skip_ws()
        if scanner.at_end():
            return
        if scanner.peek() != ",":
            raise scanner.error("expected ',' between parameters")
        comma = scanner.pos
        scanner.skip_list_separators()
        if scanner.at_end() or not scanner.next_is_param():
            # The end, or a new challenge: leave the comma to the caller.
            scanner.pos = comma
            return


def _normalise_scheme(scheme: str) -> str:
    return "Digest" if scheme.lower() == "digest" else scheme


def _normalise_algorithm(value: str | None) -> str | None:
    if value is None:
        return None
    return _CANONICAL_ALGORITHMS.get(value.lower(), value)


def _is_true(value: str | None) -> bool:
    return value is not None and value.lower() == "true"


def _challenge_from(scheme: str, token68: str | None, params: dict[str, str]) -> Challenge:
    qop = params.get("qop")
    domain = params.get("domain")
    return Challenge(
        scheme=_normalise_scheme(scheme),
        realm=params.get("realm"),
        nonce=params.get("nonce"),
        opaque=params.get("opaque"),
        algorithm=_normalise_algorithm(params.get("algorithm")),
        # RFC 7616 §3.3: qop = "auth" / "auth-int" / token, comma separated, quoted
        qop=tuple(o.strip().lower() for o in qop.split(",") if o.strip()) if qop else (),
        # RFC 7616 §3.3: stale is case-insensitive; anything but "true" is false
        stale=_is_true(params.get("stale")),
        # RFC 3261 §25.1 / RFC 7616 §3.3: a space-separated list of URIs
        domain=tuple(domain.split()) if domain else (),
        userhash=_is_true(params.get("userhash")),
        charset=params.get("charset"),
        token68=token68,
        params=params,
    )


def parse_challenges(value: str) -> list[Challenge]:
    """Parse a header value that may hold several challenges (RFC 7235 §4.1).

    SIP sends one challenge per header field (RFC 3261 §20.44), but HTTP style values with
    several comma-separated challenges are accepted here.

    Args:
        value: the header field value, without the header name.

    Returns:
        The challenges, in order.

    Raises:
        SIPParseError: the value is not valid auth-param syntax.
    """
    return [_challenge_from(*parsed) for parsed in _parse_auth_list(value)]


def parse_challenge(value: str) -> Challenge:
    """Parse one ``WWW-Authenticate`` / ``Proxy-Authenticate`` header value.

    Parameter names and the scheme are case-insensitive; values may be tokens or
    quoted-strings with backslash quoted-pairs; whitespace and folded lines are tolerated.
    A scheme other than Digest is returned as is for the caller to judge.

    Args:
        value: the header field value, e.g. ``'Digest realm="atlanta.com", nonce="..."'``.

    Returns:
        The challenge.

    Raises:
        SIPParseError: the value is malformed or holds more than one challenge.
    """
    challenges = parse_challenges(value)
    if len(challenges) != 1:
        raise SIPParseError(f"expected one challenge, found {len(challenges)}")
    return challenges[0]


def _decode_ext_value(value: str) -> str:
    """Decode an RFC 8187 §3.2 ext-value (``UTF-8''J%C3%A4s%C3%B8n``)."""
    parts = value.split("'")
    if len(parts) != 3:
        raise SIPParseError("bad username* value: expected charset'language'value")
    charset, _language, encoded = parts
    if charset.lower() not in ("utf-8", "iso-8859-1"):
        raise SIPParseError(f"bad username* value: unsupported charset {charset!r}")
    raw = bytearray()
    i = 0
    while i < len(encoded):
        char = encoded[i]
        if char == "%":
            pair = encoded[i + 1 : i + 3]
            if len(pair) != 2 or not set(pair) <= _HEXDIGITS:
                raise SIPParseError("bad username* value: bad percent-encoding")
            raw.append(int(pair, 16))
            i += 3
        elif char in _ATTR_CHAR:
            raw.append(ord(char))
            i += 1
        else:
            raise SIPParseError(f"bad username* value: character {char!r} not allowed")
    try:
        return raw.decode("utf-8" if charset.lower() == "utf-8" else "iso-8859-1")
    except UnicodeDecodeError as exc:
        raise SIPParseError("bad username* value: not valid UTF-8") from exc


# RFC 8187 §3.2.1 attr-char
_ATTR_CHAR = frozenset("!#$&+-.^_`|~" + string.ascii_letters + string.digits)


def _encode_ext_value(value: str) -> str:
    """Encode a string as an RFC 8187 §3.2 ext-value in UTF-8."""
    encoded = "".join(
        chr(byte) if chr(byte) in _ATTR_CHAR else f"%{byte:02X}" for byte in value.encode("utf-8")
    )
    return "UTF-8''" + encoded


def parse_credentials(value: str) -> Credentials:
    """Parse an ``Authorization`` / ``Proxy-Authorization`` header value.

    Same syntax as :func:`parse_challenge`. Presence of the directives Digest requires is not
    checked here (a server reports missing ones when verifying), but ``nc`` must be 8 hex
    digits and ``username*`` a valid RFC 8187 ext-value.

    Args:
        value: the header field value, e.g. ``'Digest username="bob", realm="biloxi.com", ...'``.

    Returns:
        The credentials.

    Raises:
        SIPParseError: the value is malformed.
    """
    parsed = _parse_auth_list(value)
    if len(parsed) != 1:
        raise SIPParseError(f"expected one set of credentials, found {len(parsed)}")
    scheme, token68, params = parsed[0]
    nc = params.get("nc")
    # RFC 7616 §3.4: nc-value = 8LHEX
    if nc is not None and (len(nc) != 8 or not set(nc) <= _HEXDIGITS):
        raise SIPParseError(f"bad nc {nc!r}: expected 8 hex digits")
    username = params.get("username")
    username_star = "username*" in params
    if username_star:
        # RFC 7616 §3.4.4: username* MUST NOT be used together with username or userhash
        if username is not None:
            raise SIPParseError("both username and username* present")
        username = _decode_ext_value(params["username*"])
    qop = params.get("qop")
    return Credentials(
        scheme=_normalise_scheme(scheme),
        username=username,
        realm=params.get("realm"),
        nonce=params.get("nonce"),
        uri=params.get("uri"),
        response=params.get("response"),
        algorithm=_normalise_algorithm(params.get("algorithm")),
        cnonce=params.get("cnonce"),
        opaque=params.get("opaque"),
        qop=qop.lower() if qop is not None else None,
        nc=nc,
        userhash=_is_true(params.get("userhash")),
        username_star=username_star,
        token68=token68,
        params=params,
    )


def _is_token(value: str) -> bool:
    return bool(value) and all(char in _TCHAR for char in value)


def _quote(value: str) -> str:
    for char in value:
        if (char < " " and char != "\t") or char == "\x7f":
            raise AuthenticationError(f"cannot write {value!r} in a header: control character")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _token(name: str, value: str) -> str:
    if not _is_token(value):
        raise AuthenticationError(f"{name} must be a token, not {value!r}")
    return value


def _auto(value: str) -> str:
    """A token if the value is one, else a quoted-string (extension parameters)."""
    return value if _is_token(value) else _quote(value)


def _join(scheme: str, items: list[tuple[str, str]]) -> str:
    _token("scheme", scheme)
    if not items:
        return scheme
    return scheme + " " + ", ".join(f"{name}={value}" for name, value in items)


def _extensions(params: Mapping[str, str], known: Iterable[str]) -> list[tuple[str, str]]:
    known_names = set(known)
    return [
        (_token("parameter name", name), _auto(value))
        for name, value in params.items()
        if name.lower() not in known_names
    ]


_CHALLENGE_PARAMS = (
    "realm",
    "domain",
    "qop",
    "nonce",
    "opaque",
    "stale",
    "algorithm",
    "charset",
    "userhash",
)


def format_challenge(challenge: Challenge) -> str:
    """Write a challenge as a ``WWW-Authenticate`` / ``Proxy-Authenticate`` header value.

    Quoted per RFC 2617 §3.2.1 / RFC 7616 §3.3: realm, domain, nonce, opaque and qop are
    quoted-strings; stale, algorithm, charset and userhash are tokens. Extension parameters
    from ``params`` follow, as tokens where possible.

    Args:
        challenge: the challenge.

    Returns:
        The header value.

    Raises:
        AuthenticationError: a value cannot be written (control characters, bad token).
    """
    if challenge.token68 is not None:
        return f"{_token('scheme', challenge.scheme)} {challenge.token68}"
    items: list[tuple[str, str]] = []
    if challenge.realm is not None:
        items.append(("realm", _quote(challenge.realm)))
    if challenge.domain:
        items.append(("domain", _quote(" ".join(challenge.domain))))
    if challenge.qop:
        items.append(("qop", _quote(",".join(challenge.qop))))
    if challenge.nonce is not None:
        items.append(("nonce", _quote(challenge.nonce)))
    if challenge.opaque is not None:
        items.append(("opaque", _quote(challenge.opaque)))
    if challenge.stale:
        items.append(("stale", "true"))
    if challenge.algorithm is not None:
        items.append(("algorithm", _token("algorithm", challenge.algorithm)))
    if challenge.charset is not None:
        items.append(("charset", _token("charset", challenge.charset)))
    if challenge.userhash:
        items.append(("userhash", "true"))
    items += _extensions(challenge.params, _CHALLENGE_PARAMS)
    return _join(challenge.scheme, items)


def format_challenges(challenges: Iterable[Challenge]) -> list[str]:
    """Write challenges as header values, one per header field (RFC 3261 §20.44).

    Args:
        challenges: the challenges, in order of preference.

    Returns:
        One header value per challenge.
    """
    return [format_challenge(challenge) for challenge in challenges]


_CREDENTIAL_PARAMS = (
    "username",
    "username*",
    "realm",
    "nonce",
    "uri",
    "algorithm",
    "qop",
    "nc",
    "cnonce",
    "response",
    "opaque",
    "userhash",
)


def format_credentials(credentials: Credentials) -> str:
    """Write credentials as an ``Authorization`` / ``Proxy-Authorization`` header value.

    Quoted per RFC 2617 §3.2.2 / RFC 7616 §3.4: username, realm, nonce, uri, cnonce,
    response and opaque are quoted-strings; algorithm, qop, nc and userhash are tokens.
    The order follows the example of RFC 2617 §3.5.

    Args:
        credentials: the credentials.

    Returns:
        The header value.

    Raises:
        AuthenticationError: a value cannot be written (control characters, bad token, an
            ``nc`` that is not 8 hex digits).
    """
    if credentials.token68 is not None:
        return f"{_token('scheme', credentials.scheme)} {credentials.token68}"
    items: list[tuple[str, str]] = []
    if credentials.username is not None:
        if credentials.username_star:
            # RFC 7616 §3.4.4: username*=UTF-8''percent-encoded
            items.append(("username*", _encode_ext_value(credentials.username)))
        else:
            items.append(("username", _quote(credentials.username)))
    for name in ("realm", "nonce", "uri"):
        value = getattr(credentials, name)
        if value is not None:
            items.append((name, _quote(value)))
    if credentials.algorithm is not None:
        items.append(("algorithm", _token("algorithm", credentials.algorithm)))
    if credentials.qop is not None:
        items.append(("qop", _token("qop", credentials.qop)))
    if credentials.nc is not None:
        nc = credentials.nc
        if len(nc) != 8 or not set(nc) <= _HEXDIGITS:
            raise AuthenticationError(f"nc must be 8 hex digits, not {nc!r}")
        items.append(("nc", nc))
    if credentials.cnonce is not None:
        items.append(("cnonce", _quote(credentials.cnonce)))
    if credentials.response is not None:
        items.append(("response", _quote(credentials.response)))
    if credentials.opaque is not None:
        items.append(("opaque", _quote(credentials.opaque)))
    if credentials.userhash:
        items.append(("userhash", "true"))
    items += _extensions(credentials.params, _CREDENTIAL_PARAMS)
    return _join(credentials.scheme, items)


# --------------------------------------------------------------------------------------------
# Client
# --------------------------------------------------------------------------------------------


def _rank(algorithm: str) -> tuple[int, int]:
    base, session = _split_algorithm(algorithm)
    return _STRENGTH[base], 0 if session else 1


@dataclass
class _NonceUse:
    cnonce: str
    count: int = 0


class DigestClient:
    """Answers Digest challenges for one user.

    Keeps, for each nonce it has answered, the client nonce and the nonce count, so that
    reusing a nonce (RFC 7616 §3.4: preemptive authorization) sends ``nc`` 2, 3, ...

    Args:
        username: the user name.
        password: the password.
        rng: the source of client nonces; defaults to ``random.SystemRandom()``.
        algorithms: the algorithms the client accepts, default all of
            :data:`SUPPORTED_ALGORITHMS` (pass ``("SHA-256",)`` to refuse MD5).
        max_nonces: how many nonces to remember; the oldest is forgotten first.

    Raises:
        AuthenticationError: an unsupported algorithm was named.
    """

    def __init__(
        self,
        username: str,
        password: str,
        rng: RandomSource | None = None,
        *,
        algorithms: Iterable[str] | None = None,
        max_nonces: int = 32,
    ) -> None:
        self.username = username
        self.password = password
        self._rng: RandomSource = rng if rng is not None else random.SystemRandom()
        self.algorithms = tuple(
            _canonical_algorithm(name)
            for name in (algorithms if algorithms is not None else SUPPORTED_ALGORITHMS)
        )
        self._max_nonces = max_nonces
        self._nonces: dict[str, _NonceUse] = {}

    def _usable(self, challenge: Challenge) -> bool:
        if not challenge.is_digest:
            return False
        name = _normalise_algorithm(challenge.algorithm) or "MD5"
        return name in self.algorithms

    def choose(self, challenges: Iterable[Challenge]) -> Challenge:
        """Pick the challenge to answer among several.

        RFC 8760 §2.4 / RFC 7616 §3.7: the strongest algorithm the client supports wins
        (SHA-512-256, then SHA-256, then MD5); on a tie the server's order wins.

        Args:
            challenges: the challenges of one response (e.g. one per ``WWW-Authenticate``).

        Returns:
            The challenge to answer.

        Raises:
            AuthenticationError: no Digest challenge with a supported algorithm.
        """
        offered = list(challenges)
        usable = [challenge for challenge in offered if self._usable(challenge)]
        if not usable:
            described = ", ".join(
                f"{c.scheme} {c.algorithm or 'MD5'}" if c.is_digest else c.scheme for c in offered
            )
            raise AuthenticationError(
                f"no challenge can be answered (offered: {described or 'none'}; "
                f"supported: Digest {', '.join(self.algorithms)})"
            )
        best = max(_rank(_canonical_algorithm(c.algorithm)) for c in usable)
        return next(c for c in usable if _rank(_canonical_algorithm(c.algorithm)) == best)

    def _next_use(self, nonce: str) -> _NonceUse:
        use = self._nonces.get(nonce)
        if use is None:
            use = _NonceUse(cnonce=f"{self._rng.getrandbits(64):016x}")
            self._nonces[nonce] = use
            while len(self._nonces) > self._max_nonces:
                del self._nonces[next(iter(self._nonces))]
        use.count += 1
        return use

    def credentials(
        self, challenge: Challenge, method: str, uri: str, body: bytes = b""
    ) -> Credentials:
        """Build the credentials answering a challenge.

        Args:
            challenge: the challenge (see :meth:`choose` when there are several).
            method: the method of the request to authorize.
            uri: the Request-URI of that request, as it will be sent.
            body: its body, hashed when the server only offers ``auth-int``.

        Returns:
            The credentials; ``nc`` counts the uses of this nonce.

        Raises:
            AuthenticationError: not Digest, realm or nonce missing, unsupported algorithm or
                qop.
        """
        if not challenge.is_digest:
            raise AuthenticationError(
                f"cannot answer a {challenge.scheme!r} challenge: only Digest is supported"
            )
        if challenge.realm is None:
            raise AuthenticationError("the Digest challenge has no realm")
        if challenge.nonce is None:
            raise AuthenticationError("the Digest challenge has no nonce")
        algorithm = _canonical_algorithm(challenge.algorithm)
        if algorithm not in self.algorithms:
            raise AuthenticationError(f"digest algorithm {algorithm} is not allowed")
        qop = self._choose_qop(challenge.qop)
        if qop is None and algorithm.endswith("-sess"):
            raise AuthenticationError(f"{algorithm} needs a cnonce, but the server sent no qop")

        nc = cnonce = None
        if qop is not None:
            use = self._next_use(challenge.nonce)
            cnonce = use.cnonce
            nc = f"{use.count:08x}"  # RFC 7616 §3.4: 8LHEX
        response = compute_response(
            algorithm=algorithm,
            username=self.username,
            realm=challenge.realm,
            password=self.password,
            method=method,
            uri=uri,
            nonce=challenge.nonce,
            qop=qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        username = self.username
        if challenge.userhash:
            username = compute_userhash(algorithm, self.username, challenge.realm)
        return Credentials(
            username=username,
            realm=challenge.realm,
            nonce=challenge.nonce,
            uri=uri,
            response=response,
            # RFC 2617 §3.2.2: echo the algorithm only if the challenge named it
            algorithm=algorithm if challenge.algorithm is not None else None,
            cnonce=cnonce,
            opaque=challenge.opaque,
            qop=qop,
            nc=nc,
            userhash=challenge.userhash,
        )

    def authorize(self, challenge: Challenge, method: str, uri: str, body: bytes = b"") -> str:
        """Answer a challenge with the value of an ``Authorization`` header field.

        Use it as ``Proxy-Authorization`` when the challenge came in ``Proxy-Authenticate``.

        Args:
            challenge: the challenge (see :meth:`choose` when there are several).
            method: the method of the request to authorize.
            uri: the Request-URI of that request, as it will be sent.
            body: its body, hashed when the server only offers ``auth-int``.

        Returns:
            The header value.

        Raises:
            AuthenticationError: as :meth:`credentials`.
        """
        return format_credentials(self.credentials(challenge, method, uri, body))

    @staticmethod
    def _choose_qop(offered: tuple[str, ...]) -> str | None:
        if not offered:
            return None  # RFC 2617 §3.2.2: RFC 2069 compatibility
        # RFC 3261 §22.4 / RFC 7616 §3.4: pick one we support; auth-int only if auth is not
        # offered (it needs the body and is rarely supported end to end).
        for choice in ("auth", "auth-int"):
            if choice in offered:
                return choice
        raise AuthenticationError(
            f"unsupported qop options {', '.join(offered)!r}; supported: auth, auth-int"
        )


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class VerifyFailure(enum.Enum):
    """Why :meth:`DigestServer.verify` refused credentials."""

    MALFORMED = "malformed credentials"
    WRONG_SCHEME = "not Digest credentials"
    WRONG_REALM = "credentials for another realm"
    UNSUPPORTED_ALGORITHM = "algorithm not offered"
    UNSUPPORTED_QOP = "qop not offered"
    USERHASH_UNSUPPORTED = "userhash not supported"
    URI_MISMATCH = "uri directive differs from the Request-URI"
    UNKNOWN_NONCE = "nonce not issued by this server"
    UNKNOWN_USER = "unknown user"
    WRONG_RESPONSE = "wrong response (wrong password?)"
    STALE_NONCE = "nonce expired"
    REPLAYED_NONCE_COUNT = "nonce count replayed"


@dataclass(frozen=True)
class Verification:
    """The outcome of :meth:`DigestServer.verify`; true when the credentials are good.

    Attributes:
        username: the authenticated user name, or the claimed one on failure (may be
            ``None`` when it could not be read).
        failure: why the credentials were refused, ``None`` on success.
    """

    username: str | None
    failure: VerifyFailure | None = None

    @property
    def ok(self) -> bool:
        """Whether the credentials were verified."""
        return self.failure is None

    @property
    def stale(self) -> bool:
        """Whether to challenge again with ``stale=true`` (right password, old nonce)."""
        return self.failure is VerifyFailure.STALE_NONCE

    def __bool__(self) -> bool:
        return self.ok


_NONCE_RANDOM_BYTES = 8
_NONCE_MAC_BYTES = 16


class DigestServer:
    """Challenges requests and verifies Digest credentials for one realm.

    A nonce is ``base64url(issue time in ms | 8 random bytes | HMAC-SHA256 of both)``: the
    server recognises its own nonces and their age without storing them (RFC 7616 §5.4). It
    remembers the highest ``nc`` seen for each nonce still fresh, to refuse replays.

    Args:
        realm: the realm, e.g. the SIP domain (RFC 3261 §22.1).
        lookup_password: returns a user's password, or ``None`` for an unknown user.
        rng: the source of nonces and of the default secret; defaults to
            ``random.SystemRandom()``.
        algorithms: the algorithms to offer, one challenge each, in order of preference
            (RFC 8760 §2.4: SHA-256 before MD5).
        qop: the qop options to offer.
        nonce_lifetime: seconds after which a nonce is stale.
        secret: the HMAC key for nonces; 32 bytes from ``rng`` by default.

    Raises:
        AuthenticationError: an unsupported algorithm or qop was named.
    """

    def __init__(
        self,
        realm: str,
        lookup_password: Callable[[str], str | None],
        rng: RandomSource | None = None,
        *,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        qop: Iterable[str] = ("auth",),
        nonce_lifetime: float = 300.0,
        secret: bytes | None = None,
    ) -> None:
        self.realm = realm
        self._lookup_password = lookup_password
        self._rng: RandomSource = rng if rng is not None else random.SystemRandom()
        self.algorithms = tuple(_canonical_algorithm(name) for name in algorithms)
        if not self.algorithms:
            raise AuthenticationError("a DigestServer needs at least one algorithm")
        self.qop = tuple(option.lower() for option in qop)
        for option in self.qop:
            if option not in ("auth", "auth-int"):
                raise AuthenticationError(f"unsupported qop {option!r}; use auth, auth-int")
        if not self.qop:
            raise AuthenticationError("a DigestServer needs qop (RFC 2069 mode is not offered)")
        self.nonce_lifetime = nonce_lifetime
        self._secret = secret if secret is not None else self._random_bytes(32)
        # nonce -> (issue time, highest nc accepted), in order of first use.
        self._counts: dict[str, tuple[float, int]] = {}

    def _random_bytes(self, count: int) -> bytes:
        return self._rng.getrandbits(8 * count).to_bytes(count, "big")

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:_NONCE_MAC_BYTES]

    def new_nonce(self, now: float) -> str:
        """Issue a nonce.

        Args:
            now: the current time in seconds, on the clock also passed to :meth:`verify`.

        Returns:
            The nonce.
        """
        issued_ms = math.floor(now * 1000)
        payload = issued_ms.to_bytes(8, "big", signed=True) + self._random_bytes(
            _NONCE_RANDOM_BYTES
        )
        token = payload + self._mac(payload)
        return base64.urlsafe_b64encode(token).decode("ascii").rstrip("=")

    def _nonce_issued_at(self, nonce: str) -> float | None:
        """Return the issue time of one of our nonces, or ``None`` if it is not ours."""
        try:
            token = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except ValueError:  # binascii.Error, or non-ASCII text
            return None
        if len(token) != 8 + _NONCE_RANDOM_BYTES + _NONCE_MAC_BYTES:
            return None
        payload, mac = token[:-_NONCE_MAC_BYTES], token[-_NONCE_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        return int.from_bytes(payload[:8], "big", signed=True) / 1000

    def challenge(self, now: float, stale: bool = False) -> list[str]:
        """Build the challenge header values for a 401 / 407 response.

        Args:
            now: the current time in seconds.
            stale: set ``stale=true`` (after :attr:`Verification.stale`), so the client
                retries with the new nonce without asking the user (RFC 7616 §3.3).

        Returns:
            One ``WWW-Authenticate`` / ``Proxy-Authenticate`` value per algorithm, sharing one
            nonce, strongest first (RFC 8760 §2.4).
        """
        nonce = self.new_nonce(now)
        return [
            format_challenge(
                Challenge(
                    realm=self.realm,
                    nonce=nonce,
                    algorithm=algorithm,
                    qop=self.qop,
                    stale=stale,
                )
            )
            for algorithm in self.algorithms
        ]

    def _forget_old_nonces(self, now: float) -> None:
        for nonce, (issued, _) in list(self._counts.items()):
            if now - issued <= self.nonce_lifetime:
                break
            del self._counts[nonce]

    def verify(
        self,
        credentials_value: str | Credentials,
        method: str,
        body: bytes = b"",
        *,
        now: float,
        request_uri: str | None = None,
    ) -> Verification:
        """Check credentials sent in ``Authorization`` / ``Proxy-Authorization``.

        The response digest is checked before the nonce's age, so a stale nonce is reported
        only to a client that knows the password (RFC 7616 §3.3).

        Args:
            credentials_value: the header value, or already parsed credentials.
            method: the request method.
            body: the request body (for ``qop=auth-int``).
            now: the current time in seconds.
            request_uri: the Request-URI; if given, the ``uri`` directive must equal it
                (RFC 7616 §3.4.6).

        Returns:
            A :class:`Verification`, true when the credentials are good.
        """
        self._forget_old_nonces(now)
        if isinstance(credentials_value, Credentials):
            credentials = credentials_value
        else:
            try:
                credentials = parse_credentials(credentials_value)
            except SIPParseError:
                return Verification(None, VerifyFailure.MALFORMED)
        username = credentials.username

        def fail(reason: VerifyFailure) -> Verification:
            return Verification(username, reason)

        if not credentials.is_digest:
            return fail(VerifyFailure.WRONG_SCHEME)
        nonce, uri, response = credentials.nonce, credentials.uri, credentials.response
        nc, cnonce = credentials.nc, credentials.cnonce
        if username is None or credentials.realm is None:
            return fail(VerifyFailure.MALFORMED)
        if nonce is None or uri is None or response is None:
            return fail(VerifyFailure.MALFORMED)
        if credentials.realm != self.realm:
            return fail(VerifyFailure.WRONG_REALM)
        algorithm = _normalise_algorithm(credentials.algorithm) or "MD5"
        if algorithm not in self.algorithms:
            return fail(VerifyFailure.UNSUPPORTED_ALGORITHM)
        # RFC 3261 §22.4: servers send qop, so clients must answer with one of its options.
        if credentials.qop not in self.qop:
            return fail(VerifyFailure.UNSUPPORTED_QOP)
        if nc is None or cnonce is None:
            return fail(VerifyFailure.MALFORMED)
        if credentials.userhash:
            return fail(VerifyFailure.USERHASH_UNSUPPORTED)
        if request_uri is not None and uri != request_uri:
            return fail(VerifyFailure.URI_MISMATCH)
        issued = self._nonce_issued_at(nonce)
        if issued is None or issued > now:
            return fail(VerifyFailure.UNKNOWN_NONCE)
        password = self._lookup_password(username)
        if password is None:
            return fail(VerifyFailure.UNKNOWN_USER)

        expected = compute_response(
            algorithm=algorithm,
            username=username,
            realm=self.realm,
            password=password,
            method=method,
            uri=uri,
            nonce=nonce,
            qop=credentials.qop,
            nc=nc,
            cnonce=cnonce,
            body=body,
        )
        if not hmac.compare_digest(expected.encode(), response.lower().encode("utf-8")):
            return fail(VerifyFailure.WRONG_RESPONSE)
        if now - issued > self.nonce_lifetime:
            return fail(VerifyFailure.STALE_NONCE)
        # RFC 7616 §3.4: the server checks the nonce count to detect replays.
        count = int(nc, 16)
        _, highest = self._counts.get(nonce, (issued, 0))
        if count <= highest:
            return fail(VerifyFailure.REPLAYED_NONCE_COUNT)
        self._counts[nonce] = (issued, count)
        return Verification(username)
