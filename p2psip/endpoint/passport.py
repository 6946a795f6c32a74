"""Caller identity: the SIP ``Identity`` header (RFC 8224) carrying a PASSporT (RFC 8225).

A caller signs who it is (``orig``), whom it calls (``dest``) and when (``iat``) with its Ed25519
identity key (JWS ``"alg": "EdDSA"``, RFC 8037 §3.1) and sends the token in the ``Identity``
header of its INVITE. The callee finds the caller's key in the caller's signed AoR record (the
``info`` parameter names that AoR) and checks the signature, the freshness of ``iat`` and that
the token names the From and To of the request it came in.

Sans-IO: no clock (``now`` is a parameter), no keys (``sign`` / ``verify`` are callables), no
lookups. The errors carry the response RFC 8224 §6.2.2 prescribes:

* 428 Use Identity Header - none, and the callee requires one;
* 436 Bad Identity Info - the ``info`` URI cannot be used to find a key;
* 437 Unsupported Credential - an algorithm or credential we do not handle;
* 438 Invalid Identity Header - malformed, a bad signature, or claims that do not match;
* 403 Stale Date - ``iat`` outside the freshness window (RFC 8224 §6.2.1: 60 s recommended).

The token is in PASSporT's *full form* (header, claims and signature, RFC 8225 §7); header and
claims are serialized in the canonical form of RFC 8225 §9 (keys sorted, no white space).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from p2psip.endpoint.message import REASON_PHRASES
from p2psip.errors import P2PSIPError

__all__ = [
    "ALGORITHM",
    "FRESHNESS",
    "IdentityHeaderError",
    "PASSporT",
    "create_identity_header",
    "parse_identity_header",
]

#: The JWS algorithm of our tokens: Ed25519 (RFC 8037 §3.1).
ALGORITHM = "EdDSA"
#: Seconds an ``iat`` may be away from the verifier's clock (RFC 8224 §6.2.1).
FRESHNESS = 60.0
#: The longest Identity header value we parse.
MAX_HEADER_LENGTH = 4096

_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_PARAM_NAME = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")


class IdentityHeaderError(P2PSIPError):
    """An Identity header the callee cannot accept, with the response to send.

    Attributes:
        status: the SIP status (RFC 8224 §6.2.2).
        phrase: its reason phrase.
    """

    def __init__(self, message: str, status: int = 438, phrase: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.phrase = phrase or _PHRASES.get(status) or REASON_PHRASES.get(status, "Unknown")


# RFC 8224 §6.2.2 gives this 403 its own phrase; the 43x are in REASON_PHRASES.
_PHRASES = {403: "Stale Date"}


@dataclass(frozen=True)
class PASSporT:
    """A parsed PASSporT and the Identity header parameters around it.

    Attributes:
        orig: the caller's URI (``orig.uri`` claim).
        dest: the called URIs (``dest.uri`` claim).
        iat: issued-at, seconds since the Unix epoch.
        kid: the signer's key fingerprint (JWS ``kid``, RFC 7515 §4.1.4), if given.
        jti: the token's unique id (RFC 7519 §4.1.7), if given.
        info: the ``info`` URI of the Identity header (where the key is found: the AoR).
        signing_input: the signed bytes, ``BASE64URL(header) "." BASE64URL(claims)``.
        signature: the 64-byte Ed25519 signature.
    """

    orig: str
    dest: tuple[str, ...]
    iat: int
    kid: str | None
    jti: str | None
    info: str
    signing_input: bytes
    signature: bytes

    def verify(self, public_key: bytes, verify: Callable[[bytes, bytes, bytes], bool]) -> bool:
        """Whether ``public_key`` signed this token; ``verify(key, data, signature)`` is the
        Ed25519 check (e.g. :meth:`p2psip.overlay.identity.Identity.verify`)."""
        return bool(verify(public_key, self.signing_input, self.signature))

    def check(
        self,
        *,
        from_aor: str,
        to_aor: str,
        now: float,
        same: Callable[[str, str], bool] | None = None,
        freshness: float = FRESHNESS,
    ) -> None:
        """Check the claims against the request (RFC 8224 §6.2 steps 2 and 4).

        Args:
            from_aor: the AoR of the request's From.
            to_aor: the AoR of the request's To (or its Request-URI's).
            now: the verifier's clock, seconds since the Unix epoch.
            same: compares two URIs as AoRs (default: exact text).
            freshness: the window for ``iat``.

        Raises:
            IdentityHeaderError: 403 for a stale ``iat``, 438 for a mismatching orig/dest.
        """
        equal = same or (lambda a, b: a == b)
        if abs(now - self.iat) > freshness:
            raise IdentityHeaderError(
                f"the identity was signed {now - self.iat:+.0f} s from now", 403
            )
        if not equal(self.orig, from_aor):
            raise IdentityHeaderError(f"the identity is for {self.orig}, not {from_aor}")
        if not any(equal(d, to_aor) for d in self.dest):
            raise IdentityHeaderError(f"the identity does not name {to_aor} as destination")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str, what: str) -> bytes:
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise IdentityHeaderError(f"the PASSporT {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise IdentityHeaderError(f"the PASSporT {what} is not base64url") from None


def _canonical(obj: object) -> bytes:
    # RFC 8225 §9: lexicographic key order, no white space
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def create_identity_header(
    sign: Callable[[bytes], bytes],
    *,
    orig: str,
    dest: Sequence[str],
    iat: int,
    kid: str | None = None,
    info: str | None = None,
    jti: str | None = None,
) -> str:
    """The value of an ``Identity`` header for a request from ``orig`` to ``dest``.

    Args:
        sign: Ed25519 signing with the caller's identity key (e.g. ``Identity.sign``).
        orig: the caller's AoR (the From URI).
        dest: the called AoRs (the To URI).
        iat: now, whole seconds since the Unix epoch.
        kid: the fingerprint of the signing key, so that a callee can pick it among several.
        info: where the key is found; default ``orig`` (the caller's signed AoR record).
        jti: a unique token id (RFC 7519 §4.1.7); default 96 random bits. Ed25519 signatures
            are deterministic and ``iat`` counts whole seconds: without it two calls to the
            same callee in one second would carry the same token and look like a replay.

    Returns:
        ``<header>.<claims>.<signature>;info=<...>`` (RFC 8224 §4).
    """
    header: dict[str, object] = {"alg": ALGORITHM, "typ": "passport"}
    if kid is not None:
        header["kid"] = kid
    claims = {
        "dest": {"uri": list(dest)},
        "iat": int(iat),
        "jti": secrets.token_urlsafe(12) if jti is None else jti,
        "orig": {"uri": orig},
    }
    signing_input = f"{_b64url(_canonical(header))}.{_b64url(_canonical(claims))}"
    signature = sign(signing_input.encode("ascii"))
    return f"{signing_input}.{_b64url(signature)};info=<{info or orig}>"


def _split_params(text: str) -> dict[str, str]:
    """``;info=<uri>;alg=x`` -> {"info": "uri", "alg": "x"} (names lower-cased)."""
    params: dict[str, str] = {}
    rest = text
    while rest:
        rest = rest.lstrip(" \t")
        if not rest:
            break
        if not rest.startswith(";"):
            raise IdentityHeaderError("malformed Identity header parameters")
        rest = rest[1:].lstrip(" \t")
        name, eq, rest = rest.partition("=")
        name = name.strip(" \t").lower()
        if not eq or not _PARAM_NAME.fullmatch(name):
            raise IdentityHeaderError("malformed Identity header parameter")
        rest = rest.lstrip(" \t")
        if rest.startswith("<"):
            end = rest.find(">")
            if end < 0:
                raise IdentityHeaderError("unterminated <URI> in the Identity header")
            value, rest = rest[1:end], rest[end + 1 :]
        else:
            cut = rest.find(";")
            value, rest = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
            value = value.strip(" \t")
        if name in params:
            raise IdentityHeaderError(f"the Identity header repeats {name!r}")
        params[name] = value
    return params


def parse_identity_header(value: str) -> PASSporT:
    """Parse an ``Identity`` header value holding a full-form PASSporT.

    Raises:
        IdentityHeaderError: 438 when malformed (or compact form: no claims to check), 437 for
            an algorithm other than EdDSA or a ``ppt`` extension, 436 without a usable ``info``.
    """
    if not isinstance(value, str) or len(value) > MAX_HEADER_LENGTH:
        raise IdentityHeaderError("Identity header missing or too long")
    token, semi, tail = value.strip().partition(";")
    params = _split_params(semi + tail)
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise IdentityHeaderError("the Identity header is not a JWS (three dot-separated parts)")
    if not parts[1]:
        raise IdentityHeaderError("compact-form PASSporTs are not supported")
    header_bytes = _unb64url(parts[0], "header")
    claims_bytes = _unb64url(parts[1], "claims")
    signature = _unb64url(parts[2], "signature")
    try:
        header = json.loads(header_bytes)
        claims = json.loads(claims_bytes)
    except (ValueError, RecursionError):
        raise IdentityHeaderError("the PASSporT is not JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise IdentityHeaderError("the PASSporT header and claims must be JSON objects")
    alg = header.get("alg")
    if alg != ALGORITHM or params.get("alg", ALGORITHM) != ALGORITHM:
        raise IdentityHeaderError(f"unsupported PASSporT algorithm {alg!r}", 437)
    if "ppt" in header or "ppt" in params:
        raise IdentityHeaderError("PASSporT extensions (ppt) are not supported", 437)
    if header.get("typ", "passport") != "passport":
        raise IdentityHeaderError("the JWS is not a PASSporT (typ)")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise IdentityHeaderError("the PASSporT kid must be a string")
    orig = claims.get("orig")
    dest = claims.get("dest")
    iat = claims.get("iat")
    if not isinstance(orig, dict) or not isinstance(orig.get("uri"), str):
        raise IdentityHeaderError("the PASSporT has no orig URI")
    if not isinstance(dest, dict):
        raise IdentityHeaderError("the PASSporT has no dest")
    uris = dest.get("uri")
    if isinstance(uris, str):
        uris = [uris]
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
        raise IdentityHeaderError("the PASSporT has no dest URI")
    if not isinstance(iat, int) or isinstance(iat, bool) or not 0 <= iat < 2**63:
        raise IdentityHeaderError("the PASSporT iat is not a NumericDate")
    jti = claims.get("jti")
    if jti is not None and not isinstance(jti, str):
        raise IdentityHeaderError("the PASSporT jti must be a string")
    if len(signature) != 64:
        raise IdentityHeaderError("an EdDSA signature is 64 bytes")
    info = params.get("info")
    if not info or ":" not in info:
        raise IdentityHeaderError("the Identity header has no info URI", 436)
    return PASSporT(
        orig=orig["uri"],
        dest=tuple(uris),
        iat=iat,
        kid=kid,
        jti=jti,
        info=info,
        signing_input=f"{parts[0]}.{parts[1]}".encode("ascii"),
        signature=signature,
    )
