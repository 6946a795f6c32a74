"""Digest authentication against published vectors (RFC 2617, RFC 7616, SIP auth examples).

The vectors and their origins are in ``vectors/digest/`` (see ``SOURCE.md`` there).
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from p2psip.endpoint.digest import (
    SUPPORTED_ALGORITHMS,
    Credentials,
    compute_ha1,
    compute_ha2,
    compute_response,
    compute_userhash,
    format_credentials,
    parse_challenge,
    parse_credentials,
    request_digest,
)

VECTOR_DIR = Path(__file__).parent / "vectors" / "digest"
DOCUMENT = json.loads((VECTOR_DIR / "digest_vectors.json").read_text(encoding="utf-8"))
VECTORS: list[dict[str, Any]] = DOCUMENT["vectors"]

# Every field a vector may carry; an unknown one fails test_vector_fields_are_all_understood.
KNOWN_FIELDS = {
    "id",
    "source",
    "note",
    "verified_locally",
    "algorithm",
    "username",
    "realm",
    "password",
    "method",
    "uri",
    "nonce",
    "opaque",
    "qop",
    "nc",
    "cnonce",
    "charset",
    "userhash",
    "username_star",
    "HA1",
    "HA1_sess",
    "HA2",
    "H_entity_body",
    "response",
    "response_as_printed_in_rfc",
    "userhash_as_printed_in_rfc",
}


def _algorithm(vector: dict[str, Any]) -> str | None:
    """The vector's algorithm; "(absent = MD5)" means the directive was not sent."""
    algorithm = vector["algorithm"]
    return None if algorithm.startswith("(absent") else algorithm


def _needs_unsupported_hash(vector: dict[str, Any]) -> bool:
    algorithm = _algorithm(vector)
    return algorithm is not None and algorithm not in SUPPORTED_ALGORITHMS


def _params() -> list[Any]:
    return [
        pytest.param(
            vector,
            id=vector["id"],
            marks=pytest.mark.skipif(
                _needs_unsupported_hash(vector), reason="hashlib lacks this hash"
            ),
        )
        for vector in VECTORS
    ]


def _ha1(vector: dict[str, Any]) -> str:
    return compute_ha1(
        _algorithm(vector),
        vector["username"],
        vector["realm"],
        vector["password"],
        vector["nonce"],
        vector["cnonce"],
    )


def _ha2(vector: dict[str, Any]) -> str:
    return compute_ha2(
        _algorithm(vector),
        vector["method"],
        vector["uri"],
        vector["qop"],
        body_hash=vector.get("H_entity_body"),
    )


def _credentials(vector: dict[str, Any]) -> Credentials:
    return Credentials(
        username=vector["username"],
        realm=vector["realm"],
        nonce=vector["nonce"],
        uri=vector["uri"],
        response=vector["response"],
        algorithm=_algorithm(vector),
        cnonce=vector["cnonce"],
        opaque=vector.get("opaque"),
        qop=vector["qop"],
        nc=vector["nc"],
    )


def test_there_are_vectors() -> None:
    assert len(VECTORS) >= 9
    assert len({vector["id"] for vector in VECTORS}) == len(VECTORS)


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["id"] for vector in VECTORS])
def test_vector_fields_are_all_understood(vector: dict[str, Any]) -> None:
    assert set(vector) <= KNOWN_FIELDS, f"new fields to test: {set(vector) - KNOWN_FIELDS}"
    assert vector["verified_locally"] is True


@pytest.mark.parametrize("vector", _params())
def test_request_digest(vector: dict[str, Any]) -> None:
    ha1 = _ha1(vector)
    ha2 = _ha2(vector)
    digest = request_digest(
        _algorithm(vector), ha1, ha2, vector["nonce"], vector["qop"], vector["nc"], vector["cnonce"]
    )
    assert digest == vector["response"]


@pytest.mark.parametrize("vector", _params())
def test_intermediate_hashes(vector: dict[str, Any]) -> None:
    if "HA1" in vector:
        assert _ha1(vector) == vector["HA1"]
    if "HA1_sess" in vector:
        assert _algorithm(vector).endswith("-sess")
        assert _ha1(vector) == vector["HA1_sess"]
    if "HA2" in vector:
        assert _ha2(vector) == vector["HA2"]


# auth-int vectors give H(entity-body), not the body: test_request_digest covers them.
@pytest.mark.parametrize("vector", [p for p in _params() if "H_entity_body" not in p.values[0]])
def test_compute_response(vector: dict[str, Any]) -> None:
    response = compute_response(
        algorithm=_algorithm(vector),
        username=vector["username"],
        realm=vector["realm"],
        password=vector["password"],
        method=vector["method"],
        uri=vector["uri"],
        nonce=vector["nonce"],
        qop=vector["qop"],
        nc=vector["nc"],
        cnonce=vector["cnonce"],
    )
    assert response == vector["response"]


@pytest.mark.parametrize("vector", _params())
def test_credentials_header_round_trip(vector: dict[str, Any]) -> None:
    """Write the vector's credentials, read them back, and recompute the response."""
    credentials = _credentials(vector)
    value = format_credentials(credentials)
    parsed = parse_credentials(value)
    assert parsed == credentials
    ha1 = compute_ha1(
        parsed.algorithm,
        parsed.username or "",
        parsed.realm or "",
        vector["password"],
        parsed.nonce or "",
        parsed.cnonce or "",
    )
    ha2 = compute_ha2(
        parsed.algorithm,
        vector["method"],
        parsed.uri or "",
        parsed.qop,
        body_hash=vector.get("H_entity_body"),
    )
    digest = request_digest(
        parsed.algorithm, ha1, ha2, parsed.nonce or "", parsed.qop, parsed.nc, parsed.cnonce
    )
    assert digest == parsed.response == vector["response"]


USERHASH_VECTORS = [p for p in _params() if "userhash" in p.values[0]]


@pytest.mark.parametrize("vector", USERHASH_VECTORS)
def test_userhash(vector: dict[str, Any]) -> None:
    algorithm = _algorithm(vector)
    userhash = compute_userhash(algorithm, vector["username"], vector["realm"])
    assert userhash == vector["userhash"]
    # Errata 4897: the RFC's printed values came from a pre-final SHA-512/256.
    if "userhash_as_printed_in_rfc" in vector:
        assert userhash != vector["userhash_as_printed_in_rfc"]
    if "response_as_printed_in_rfc" in vector:
        assert vector["response"] != vector["response_as_printed_in_rfc"]
    # RFC 7616 §3.4.4: the response is computed with the clear user name even so.
    credentials = Credentials(
        username=userhash,
        realm=vector["realm"],
        nonce=vector["nonce"],
        uri=vector["uri"],
        response=vector["response"],
        algorithm=algorithm,
        cnonce=vector["cnonce"],
        opaque=vector["opaque"],
        qop=vector["qop"],
        nc=vector["nc"],
        userhash=True,
    )
    value = format_credentials(credentials)
    assert "userhash=true" in value
    assert parse_credentials(value) == credentials


@pytest.mark.parametrize("vector", [p for p in _params() if "username_star" in p.values[0]])
def test_username_star(vector: dict[str, Any]) -> None:
    assert vector["charset"] == "UTF-8"
    credentials = Credentials(
        username=vector["username"], realm=vector["realm"], username_star=True
    )
    value = format_credentials(credentials)
    assert f"username*={vector['username_star']}" in value
    parsed = parse_credentials(value)
    assert parsed.username == vector["username"]
    assert parsed.username_star


# ---------------------------------------------------------------------------------------------
# RFC 2617 §3.5 as printed
# ---------------------------------------------------------------------------------------------

RFC2617_TEXT = (VECTOR_DIR / "rfc2617_section3.5_example.txt").read_text(encoding="utf-8")
RFC2617_VECTOR = next(vector for vector in VECTORS if vector["id"] == "rfc2617-3.5")
# The RFC's Authorization header carries no algorithm directive (MD5 by default).
RFC2617_CREDENTIALS = replace(_credentials(RFC2617_VECTOR), algorithm=None)


def _header_value(name: str, line_break: str) -> str:
    """The value of a header printed in the RFC text, its folded lines kept as folds."""
    lines = RFC2617_TEXT.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(name + ":"))
    value = [lines[start].split(":", 1)[1]]
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        value.append(line)
    return line_break.join(value)


@pytest.mark.parametrize("line_break", ["\r\n", "\n", " "])
def test_rfc2617_example_challenge(line_break: str) -> None:
    challenge = parse_challenge(_header_value("WWW-Authenticate", line_break))
    assert challenge.scheme == "Digest"
    assert challenge.realm == RFC2617_VECTOR["realm"] == "testrealm@host.com"
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.nonce == RFC2617_VECTOR["nonce"]
    assert challenge.opaque == RFC2617_VECTOR["opaque"]
    assert challenge.algorithm is None
    assert not challenge.stale


@pytest.mark.parametrize("line_break", ["\r\n", "\n", " "])
def test_rfc2617_example_authorization(line_break: str) -> None:
    value = _header_value("Authorization", line_break)
    credentials = parse_credentials(value)
    assert credentials == RFC2617_CREDENTIALS
    response = compute_response(
        algorithm=credentials.algorithm,
        username=credentials.username or "",
        realm=credentials.realm or "",
        password=RFC2617_VECTOR["password"],
        method=RFC2617_VECTOR["method"],
        uri=credentials.uri or "",
        nonce=credentials.nonce or "",
        qop=credentials.qop,
        nc=credentials.nc,
        cnonce=credentials.cnonce,
    )
    assert response == credentials.response == "6629fae49393a05397450978507c4ef1"


def test_rfc2617_example_authorization_is_written_as_printed() -> None:
    printed = re.sub(r"\s+", " ", _header_value("Authorization", " ")).strip()
    assert format_credentials(RFC2617_CREDENTIALS) == printed
