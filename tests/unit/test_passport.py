"""The Identity header / PASSporT codec (RFC 8224, RFC 8225, EdDSA per RFC 8037): sans-IO."""

from __future__ import annotations

import base64
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psip.endpoint.passport import (
    FRESHNESS,
    IdentityHeaderError,
    PASSporT,
    create_identity_header,
    parse_identity_header,
)
from p2psip.overlay.identity import Identity

ALICE = "sip:alice@p2p.test"
BOB = "sip:bob@p2p.test"
NOW = 1_790_000_000


def identity(seed: int) -> Identity:
    return Identity.generate(random.Random(seed))


def header(signer: Identity, **kw: object) -> str:
    args: dict[str, object] = {"orig": ALICE, "dest": [BOB], "iat": NOW}
    args.update(kw)
    return create_identity_header(signer.sign, **args)  # type: ignore[arg-type]


def b64(obj: object) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_round_trip_and_signature() -> None:
    alice = identity(1)
    value = header(alice, kid=alice.fingerprint)
    passport = parse_identity_header(value)
    assert (passport.orig, passport.dest, passport.iat) == (ALICE, (BOB,), NOW)
    assert passport.kid == alice.fingerprint and passport.info == ALICE
    assert passport.verify(alice.public_key_bytes, Identity.verify)
    assert not passport.verify(identity(2).public_key_bytes, Identity.verify)
    passport.check(from_aor=ALICE, to_aor=BOB, now=NOW + 5)


def test_canonical_json_rfc8225_section9() -> None:
    # keys sorted, no white space: the signed bytes are reproducible by any implementation
    passport = parse_identity_header(header(identity(1), jti="n1"))
    head, claims = passport.signing_input.decode().split(".")
    pad = "=" * (-len(head) % 4)
    assert base64.urlsafe_b64decode(head + pad) == b'{"alg":"EdDSA","typ":"passport"}'
    pad = "=" * (-len(claims) % 4)
    assert base64.urlsafe_b64decode(claims + pad) == (
        b'{"dest":{"uri":["sip:bob@p2p.test"]},"iat":1790000000,"jti":"n1",'
        b'"orig":{"uri":"sip:alice@p2p.test"}}'
    )


def test_two_tokens_in_one_second_differ() -> None:
    alice = identity(1)
    first, second = parse_identity_header(header(alice)), parse_identity_header(header(alice))
    assert first.jti and second.jti and first.jti != second.jti
    assert first.signature != second.signature


def test_tampered_claims_fail_the_signature() -> None:
    alice = identity(1)
    token, _, params = header(alice).partition(";")
    head, _claims, sig = token.split(".")
    forged_claims = b64(
        {"dest": {"uri": ["sip:carol@p2p.test"]}, "iat": NOW, "orig": {"uri": ALICE}}
    )
    forged = parse_identity_header(f"{head}.{forged_claims}.{sig};{params}")
    assert forged.dest == ("sip:carol@p2p.test",)
    assert not forged.verify(alice.public_key_bytes, Identity.verify)


@pytest.mark.parametrize(
    ("now", "from_aor", "to_aor", "status"),
    [
        (NOW + FRESHNESS + 1, ALICE, BOB, 403),  # stale (RFC 8224 §6.2.1)
        (NOW - FRESHNESS - 1, ALICE, BOB, 403),  # from the future
        (NOW, "sip:mallory@p2p.test", BOB, 438),  # not the From
        (NOW, ALICE, "sip:carol@p2p.test", 438),  # not the To: cut and paste
    ],
)
def test_check_claims(now: float, from_aor: str, to_aor: str, status: int) -> None:
    passport = parse_identity_header(header(identity(1)))
    with pytest.raises(IdentityHeaderError) as info:
        passport.check(from_aor=from_aor, to_aor=to_aor, now=now)
    assert info.value.status == status
    assert info.value.phrase == {403: "Stale Date", 438: "Invalid Identity Header"}[status]


def test_check_uses_the_given_aor_comparison() -> None:
    passport = parse_identity_header(header(identity(1)))
    same = lambda a, b: a.lower() == b.lower()  # noqa: E731
    passport.check(from_aor=ALICE.upper(), to_aor=BOB, now=NOW, same=same)


def _with_header(
    head: object, claims: object | None = None, params: str = ";info=<sip:a@b>"
) -> str:
    claims = (
        claims
        if claims is not None
        else {"dest": {"uri": [BOB]}, "iat": NOW, "orig": {"uri": ALICE}}
    )
    sig = base64.urlsafe_b64encode(bytes(64)).rstrip(b"=").decode()
    return f"{b64(head)}.{b64(claims)}.{sig}{params}"


@pytest.mark.parametrize(
    ("value", "status"),
    [
        (_with_header({"alg": "ES256", "typ": "passport"}), 437),
        (_with_header({"alg": "EdDSA", "ppt": "shaken"}), 437),
        (_with_header({"alg": "EdDSA"}, params=";info=<sip:a@b>;alg=ES256"), 437),
        (_with_header({"alg": "EdDSA"}, params=""), 436),  # no info: where is the key?
        (_with_header({"alg": "EdDSA", "typ": "JWT"}), 438),
        (
            _with_header(
                {"alg": "EdDSA"}, {"orig": {"tn": "12155551212"}, "dest": {"uri": [BOB]}, "iat": 1}
            ),
            438,
        ),
        (
            _with_header({"alg": "EdDSA"}, {"orig": {"uri": ALICE}, "dest": {"uri": []}, "iat": 1}),
            438,
        ),
        (
            _with_header(
                {"alg": "EdDSA"}, {"orig": {"uri": ALICE}, "dest": {"uri": [BOB]}, "iat": "1"}
            ),
            438,
        ),
        (
            _with_header(
                {"alg": "EdDSA"}, {"orig": {"uri": ALICE}, "dest": {"uri": [BOB]}, "iat": True}
            ),
            438,
        ),
        (_with_header({"alg": "EdDSA", "kid": 5}), 438),
        (_with_header([1, 2]), 438),
        ("a.b", 438),
        ("a..c;info=<sip:a@b>", 438),  # compact form: nothing to check the claims against
        ("!!.??.**;info=<sip:a@b>", 438),
        (_with_header({"alg": "EdDSA"}, params=";info=<sip:a@b;info=x"), 438),
        (_with_header({"alg": "EdDSA"}, params=";info=<sip:a@b>;info=<sip:c@d>"), 438),
        ("x" * 5000, 438),
    ],
)
def test_refused_headers(value: str, status: int) -> None:
    with pytest.raises(IdentityHeaderError) as info:
        parse_identity_header(value)
    assert info.value.status == status


def test_info_uri_may_hold_semicolons_and_other_params_are_kept_apart() -> None:
    value = _with_header({"alg": "EdDSA"}, params=" ;info=<sip:a@b;transport=tls> ;alg=EdDSA")
    passport = parse_identity_header(value)
    assert isinstance(passport, PASSporT) and passport.info == "sip:a@b;transport=tls"


def test_a_single_dest_string_is_accepted() -> None:
    value = _with_header({"alg": "EdDSA"}, {"orig": {"uri": ALICE}, "dest": {"uri": BOB}, "iat": 1})
    assert parse_identity_header(value).dest == (BOB,)


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_random_text_raises_only_our_error(text: str) -> None:
    try:
        parse_identity_header(text)
    except IdentityHeaderError as exc:
        assert exc.status in (403, 428, 436, 437, 438)


@given(st.binary(max_size=64), st.integers(min_value=0, max_value=200))
@settings(max_examples=200, deadline=None)
def test_mutated_headers_never_crash(noise: bytes, where: int) -> None:
    value = header(identity(3))
    cut = where % len(value)
    mutated = value[:cut] + noise.decode("latin-1") + value[cut + 1 :]
    try:
        parse_identity_header(mutated)
    except IdentityHeaderError:
        pass
