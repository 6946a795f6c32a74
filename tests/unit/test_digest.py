"""Unit tests of p2psip.endpoint.digest: parsing, formatting, digests, client and server."""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2psip.endpoint import digest
from p2psip.endpoint.digest import (
    SUPPORTED_ALGORITHMS,
    Challenge,
    Credentials,
    DigestClient,
    DigestServer,
    VerifyFailure,
    compute_ha2,
    compute_response,
    format_challenge,
    format_challenges,
    format_credentials,
    hash_hex,
    parse_challenge,
    parse_challenges,
    parse_credentials,
    request_digest,
)
from p2psip.errors import AuthenticationError, SIPParseError

HAS_SHA512_256 = "SHA-512-256" in SUPPORTED_ALGORITHMS


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def challenge_value(**params: str) -> str:
    return "Digest " + ", ".join(f'{name}="{value}"' for name, value in params.items())


# ---------------------------------------------------------------------------------------------
# Parsing challenges
# ---------------------------------------------------------------------------------------------


def test_parse_rfc3261_challenge() -> None:
    # RFC 3261 §20.44 example
    challenge = parse_challenge(
        'Digest realm="atlanta.com", domain="sip:boxesbybob.com", qop="auth", '
        'nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", stale=FALSE, algorithm=MD5'
    )
    assert challenge == Challenge(
        realm="atlanta.com",
        domain=("sip:boxesbybob.com",),
        qop=("auth",),
        nonce="f84f1cec41e6cbe5aea9c8e88d359",
        opaque="",
        stale=False,
        algorithm="MD5",
    )
    assert challenge.is_digest
    assert challenge.params["stale"] == "FALSE"


def test_parse_challenge_all_fields() -> None:
    challenge = parse_challenge(
        'Digest realm="atlanta.com", nonce="n1", qop="auth,auth-int", algorithm=SHA-256, '
        'opaque="o1", stale=TRUE, domain="sip:a.example sip:b.example", userhash=true, '
        "charset=UTF-8"
    )
    assert challenge.realm == "atlanta.com"
    assert challenge.nonce == "n1"
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.algorithm == "SHA-256"
    assert challenge.opaque == "o1"
    assert challenge.stale is True
    assert challenge.domain == ("sip:a.example", "sip:b.example")
    assert challenge.userhash is True
    assert challenge.charset == "UTF-8"
    assert set(challenge.params) == {
        "realm",
        "nonce",
        "qop",
        "algorithm",
        "opaque",
        "stale",
        "domain",
        "userhash",
        "charset",
    }


def test_parse_challenge_quoted_pairs() -> None:
    challenge = parse_challenge(r'Digest realm="say \"hi\" \\ o\k", nonce="a\,b"')
    assert challenge.realm == 'say "hi" \\ ok'
    assert challenge.nonce == "a,b"


def test_parse_challenge_commas_and_equals_inside_quotes() -> None:
    challenge = parse_challenge(
        'Digest realm="a, b=c, Digest d", nonce="x,y", qop="auth , auth-int,,"'
    )
    assert challenge.realm == "a, b=c, Digest d"
    assert challenge.nonce == "x,y"
    assert challenge.qop == ("auth", "auth-int")


@pytest.mark.parametrize(
    "value",
    [
        'Digest realm="r",nonce="n",qop="auth"',
        'Digest   realm = "r" ,\tnonce\t=\t"n" , qop= "auth"  ',
        '  Digest realm="r", nonce="n", qop="auth"',
        'Digest realm="r",\r\n nonce="n",\r\n\tqop="auth"',
        'Digest\r\n realm="r",\n nonce="n", qop="auth"',
        'Digest realm="r", , nonce="n",, ,qop="auth",',
        ', Digest realm="r", nonce="n", qop=auth',
        'Digest\trealm="r", nonce=n, qop="auth"',
    ],
)
def test_parse_challenge_whitespace_and_empty_elements(value: str) -> None:
    challenge = parse_challenge(value)
    assert (challenge.realm, challenge.nonce, challenge.qop) == ("r", "n", ("auth",))


def test_parse_challenge_folded_line_inside_quotes_keeps_the_whitespace() -> None:
    assert parse_challenge('Digest realm="a\r\n b"').realm == "a b"


@pytest.mark.parametrize(
    "value",
    [
        'DIGEST REALM="r", NONCE="n", QOP="AUTH", ALGORITHM=sha-256, STALE=True',
        'digest Realm="r", Nonce="n", Qop="Auth", Algorithm=Sha-256, Stale=true',
    ],
)
def test_parse_challenge_is_case_insensitive(value: str) -> None:
    challenge = parse_challenge(value)
    assert challenge.scheme == "Digest"
    assert challenge.realm == "r"
    assert challenge.nonce == "n"
    assert challenge.qop == ("auth",)
    assert challenge.algorithm == "SHA-256"
    assert challenge.stale is True


def test_parse_challenge_keeps_value_case() -> None:
    assert parse_challenge('Digest realm="Atlanta.COM", nonce="AbC"').realm == "Atlanta.COM"


@pytest.mark.parametrize("value", ["false", "FALSE", "no", "1", "truth"])
def test_stale_is_true_only_for_true(value: str) -> None:
    assert parse_challenge(f'Digest realm="r", stale={value}').stale is False


def test_parse_challenge_unknown_algorithm_is_kept() -> None:
    assert parse_challenge('Digest realm="r", algorithm=SHA3-9000').algorithm == "SHA3-9000"


def test_parse_challenge_unknown_scheme() -> None:
    challenge = parse_challenge('NoOneKnowsThisScheme realm="atlanta.com", foo=bar')
    assert challenge.scheme == "NoOneKnowsThisScheme"
    assert not challenge.is_digest
    assert challenge.realm == "atlanta.com"
    assert challenge.params == {"realm": "atlanta.com", "foo": "bar"}


def test_parse_challenge_scheme_without_params() -> None:
    assert parse_challenge("NoOneKnowsThisScheme") == Challenge(scheme="NoOneKnowsThisScheme")


@pytest.mark.parametrize("token68", ["abc", "abc==", "a+b/c-d._~=", "YWxhZGRpbjpvcGVuc2VzYW1l"])
def test_parse_challenge_token68(token68: str) -> None:
    challenge = parse_challenge(f"Negotiate {token68}")
    assert challenge.scheme == "Negotiate"
    assert challenge.token68 == token68
    assert challenge.params == {}


def test_parse_challenge_unknown_params_are_kept() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", x-foo=bar, x-bar="a b"')
    assert challenge.params["x-foo"] == "bar"
    assert challenge.params["x-bar"] == "a b"


def test_parse_challenges_several_in_one_value() -> None:
    challenges = parse_challenges(
        'Digest realm="r", nonce="n", algorithm=SHA-256, Basic realm="b", '
        "Negotiate abc==, Digest realm=r2, NoParams"
    )
    assert [c.scheme for c in challenges] == ["Digest", "Basic", "Negotiate", "Digest", "NoParams"]
    assert challenges[0].algorithm == "SHA-256"
    assert challenges[1].realm == "b"
    assert challenges[2].token68 == "abc=="
    assert challenges[3].realm == "r2"


def test_parse_challenge_refuses_several() -> None:
    with pytest.raises(SIPParseError, match="one challenge"):
        parse_challenge('Digest realm="r", Basic realm="b"')


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        ",,",
        "=",
        'realm="r"',
        "Digest realm",
        "Digest realm=",
        'Digest realm="r", nonce',
        'Digest realm="r',
        'Digest realm="r\\',
        'Digest realm="r" nonce="n"',
        'Digest realm="r",realm="s"',
        'Digest realm="r", REALM="s"',
        'Digest realm=="r"',
        'Digest realm=@"r"',
        'Digest realm="r"x',
        'Digest realm="r",\nnonce="n"',
        'Digest realm="r"\r\n',
        'Digest realm="a\r\nb"',
        'Digest realm="a\x00b"',
        'Digest realm="r",\r nonce="n"',
        'Digest realm="a\rb"',
        "Digest\rrealm=r",
        'Digest realm="a\\\nb"',
        'Digëst realm="r"',
        'Digest réalm="r"',
        "Digest realm=r\u00e9",
        'Digest realm="r";nonce="n"',
        '"Digest" realm="r"',
        'Digest, realm="r"',
    ],
)
def test_parse_challenge_malformed(value: str) -> None:
    with pytest.raises(SIPParseError) as info:
        parse_challenge(value)
    assert info.value.status == 400


def test_parse_challenge_refuses_non_str() -> None:
    with pytest.raises(SIPParseError):
        parse_challenge(b'Digest realm="r"')  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Parsing credentials
# ---------------------------------------------------------------------------------------------

RFC3261_AUTHORIZATION = (
    'Digest username="bob", realm="biloxi.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
    'uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b", '
    'response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def test_parse_credentials_rfc3261_example() -> None:
    # RFC 3261 §22.4 example
    credentials = parse_credentials(RFC3261_AUTHORIZATION)
    assert credentials == Credentials(
        username="bob",
        realm="biloxi.com",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        uri="sip:bob@biloxi.com",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
        response="6629fae49393a05397450978507c4ef1",
        opaque="5ccc069c403ebaf9f0171e9517f40e41",
    )
    assert credentials.is_digest


def test_parse_credentials_tolerates_quoted_qop_and_algorithm() -> None:
    credentials = parse_credentials(
        'Digest username="a", qop="AUTH", algorithm="md5-SESS", nc=0000000A'
    )
    assert credentials.qop == "auth"
    assert credentials.algorithm == "MD5-sess"
    assert credentials.nc == "0000000A"


@pytest.mark.parametrize("nc", ["1", "0000001", "000000001", "0000000g", "-0000001", '" 0000001"'])
def test_parse_credentials_refuses_bad_nc(nc: str) -> None:
    with pytest.raises(SIPParseError, match="nc"):
        parse_credentials(f'Digest username="a", nc={nc}')


def test_parse_credentials_username_star() -> None:
    credentials = parse_credentials("Digest username*=UTF-8''J%C3%A4s%C3%B8n%20Doe, realm=\"r\"")
    assert credentials.username == "Jäsøn Doe"
    assert credentials.username_star
    assert parse_credentials("Digest username*=iso-8859-1'en'%E4").username == "ä"


@pytest.mark.parametrize(
    "value",
    [
        "Digest username*=J%C3%A4s",
        "Digest username*=UTF-16''%00%41",
        "Digest username*=UTF-8''%C3",
        "Digest username*=UTF-8''%G1",
        "Digest username*=UTF-8''%4",
        "Digest username*=\"UTF-8''a b\"",
        "Digest username*=UTF-8''a, username=\"a\"",
    ],
)
def test_parse_credentials_refuses_bad_username_star(value: str) -> None:
    with pytest.raises(SIPParseError):
        parse_credentials(value)


def test_parse_credentials_other_scheme() -> None:
    credentials = parse_credentials("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
    assert credentials.scheme == "Basic"
    assert credentials.token68 == "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    assert not credentials.is_digest


def test_parse_credentials_refuses_several() -> None:
    with pytest.raises(SIPParseError):
        parse_credentials('Digest username="a", Digest username="b"')


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def test_format_challenge_quoting() -> None:
    value = format_challenge(
        Challenge(
            realm="atlanta.com",
            nonce="n1",
            opaque="o1",
            algorithm="SHA-256",
            qop=("auth", "auth-int"),
            stale=True,
            domain=("sip:a", "sip:b"),
            userhash=True,
            charset="UTF-8",
        )
    )
    assert value == (
        'Digest realm="atlanta.com", domain="sip:a sip:b", qop="auth,auth-int", nonce="n1", '
        'opaque="o1", stale=true, algorithm=SHA-256, charset=UTF-8, userhash=true'
    )


def test_format_challenge_minimal() -> None:
    assert format_challenge(Challenge(realm="r", nonce="n")) == 'Digest realm="r", nonce="n"'
    assert format_challenge(Challenge(scheme="Other")) == "Other"
    assert format_challenge(Challenge(scheme="Negotiate", token68="ab==")) == "Negotiate ab=="


def test_format_challenges_one_value_each() -> None:
    values = format_challenges([Challenge(realm="r", algorithm=a) for a in ("SHA-256", "MD5")])
    assert values == ['Digest realm="r", algorithm=SHA-256', 'Digest realm="r", algorithm=MD5']


def test_format_credentials_quoting() -> None:
    # RFC 2617 §3.2.2 / RFC 7616 §3.4: which directives are quoted and which are tokens.
    value = format_credentials(
        Credentials(
            username="bob",
            realm="biloxi.com",
            nonce="n",
            uri="sip:bob@biloxi.com",
            response="abcd",
            algorithm="SHA-256",
            cnonce="c",
            opaque="o",
            qop="auth",
            nc="0000002a",
        )
    )
    for quoted in ("username", "realm", "nonce", "uri", "response", "cnonce", "opaque"):
        assert re.search(rf'(^Digest |, ){quoted}="[^"]*"', value), quoted
    assert ", algorithm=SHA-256," in value
    assert ", qop=auth," in value
    assert ", nc=0000002a," in value
    assert value.startswith('Digest username="bob", realm="biloxi.com", nonce="n", uri=')


def test_format_escapes_quotes_and_backslashes() -> None:
    value = format_challenge(Challenge(realm='a "b" \\c', nonce="n"))
    assert value == r'Digest realm="a \"b\" \\c", nonce="n"'
    assert parse_challenge(value).realm == 'a "b" \\c'


def test_format_extension_params() -> None:
    parsed = parse_challenge('Digest realm="r", x-token=abc, x-quoted="a b"')
    value = format_challenge(parsed)
    assert value == 'Digest realm="r", x-token=abc, x-quoted="a b"'


@pytest.mark.parametrize(
    "challenge",
    [
        Challenge(realm="a\r\nWWW-Authenticate: evil"),
        Challenge(realm="a\x00"),
        Challenge(algorithm="MD5 x"),
        Challenge(scheme="Dig est"),
        Challenge(params={"bad name": "x"}),
    ],
)
def test_format_challenge_refuses_unwritable_values(challenge: Challenge) -> None:
    with pytest.raises(AuthenticationError):
        format_challenge(challenge)


@pytest.mark.parametrize("nc", ["1", "000000001", "0000000x", "0000 001"])
def test_format_credentials_refuses_bad_nc(nc: str) -> None:
    with pytest.raises(AuthenticationError, match="nc"):
        format_credentials(Credentials(username="a", nc=nc))


def test_format_credentials_username_star() -> None:
    value = format_credentials(Credentials(username="Jäsøn Doe", username_star=True))
    assert value == "Digest username*=UTF-8''J%C3%A4s%C3%B8n%20Doe"


def test_parse_format_round_trip_of_examples() -> None:
    for value in (
        'Digest realm="atlanta.com", qop="auth", nonce="n", opaque="", algorithm=MD5',
        'Digest realm="r", domain="sip:a sip:b", nonce="n", stale=true, userhash=true',
    ):
        assert format_challenge(parse_challenge(value)) == value
    assert format_credentials(parse_credentials(RFC3261_AUTHORIZATION)) == RFC3261_AUTHORIZATION


# Values without control characters: what a header can carry.
header_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=20
) | st.sampled_from(['"', "\\", ",", "=", " ", "a,b=c", 'x"y'])
tokens = st.text(alphabet="abcdefXYZ0123456789-.!%*_+`'~", min_size=1, max_size=12)


@st.composite
def challenges(draw: st.DrawFn) -> Challenge:
    return Challenge(
        realm=draw(st.none() | header_text),
        nonce=draw(st.none() | header_text),
        opaque=draw(st.none() | header_text),
        algorithm=draw(st.none() | st.sampled_from([*SUPPORTED_ALGORITHMS, "X-Unknown"])),
        qop=tuple(draw(st.lists(st.sampled_from(["auth", "auth-int", "x-qop"]), max_size=3))),
        stale=draw(st.booleans()),
        domain=tuple(draw(st.lists(tokens, max_size=3))),
        userhash=draw(st.booleans()),
        charset=draw(st.none() | st.just("UTF-8")),
    )


@st.composite
def credentials(draw: st.DrawFn) -> Credentials:
    username = draw(st.none() | header_text)
    return Credentials(
        username=username,
        realm=draw(st.none() | header_text),
        nonce=draw(st.none() | header_text),
        uri=draw(st.none() | header_text),
        response=draw(st.none() | st.text(alphabet="0123456789abcdef", max_size=64)),
        algorithm=draw(st.none() | st.sampled_from(SUPPORTED_ALGORITHMS)),
        cnonce=draw(st.none() | header_text),
        opaque=draw(st.none() | header_text),
        qop=draw(st.none() | st.sampled_from(["auth", "auth-int"])),
        nc=draw(st.none() | st.integers(0, 2**32 - 1).map(lambda n: f"{n:08x}")),
        userhash=draw(st.booleans()),
        username_star=username is not None and draw(st.booleans()),
    )


@given(challenges())
def test_challenge_round_trip(challenge: Challenge) -> None:
    assert parse_challenge(format_challenge(challenge)) == challenge


@given(credentials())
def test_credentials_round_trip(value: Credentials) -> None:
    assert parse_credentials(format_credentials(value)) == value


# Characters that matter to the grammar, so random strings get past the first token.
grammar_text = st.text(alphabet="Digest realm=nonce\"\\,= \t\r\n*%'UTF-8abc\x00é", max_size=60)


@given(st.text(max_size=80) | grammar_text)
def test_parse_challenge_raises_only_parse_errors(value: str) -> None:
    try:
        parse_challenges(value)
        parse_challenge(value)
    except SIPParseError:
        pass


@given(st.text(max_size=80) | grammar_text)
def test_parse_credentials_raises_only_parse_errors(value: str) -> None:
    try:
        parse_credentials(value)
    except SIPParseError:
        pass


@given(grammar_text.map(lambda text: "Digest " + text))
def test_parse_digest_prefixed_raises_only_parse_errors(value: str) -> None:
    try:
        parse_challenge(value)
    except SIPParseError:
        pass
    try:
        parse_credentials(value)
    except SIPParseError:
        pass


# ---------------------------------------------------------------------------------------------
# Digest computation
# ---------------------------------------------------------------------------------------------


def test_rfc2069_response_without_qop() -> None:
    ha1 = md5("Mufasa:testrealm@host.com:Circle Of Life")
    ha2 = md5("GET:/dir/index.html")
    expected = md5(f"{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:{ha2}")
    response = compute_response(
        algorithm=None,
        username="Mufasa",
        realm="testrealm@host.com",
        password="Circle Of Life",
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
    )
    assert response == expected


def test_auth_int_hashes_the_body() -> None:
    body = b"v=0\r\no=bob 2890844526 2890844526 IN IP4 client.biloxi.com\r\n"
    common = {
        "username": "bob",
        "realm": "biloxi.com",
        "password": "zanzibar",
        "method": "INVITE",
        "uri": "sip:bob@biloxi.com",
        "nonce": "n",
        "qop": "auth-int",
        "nc": "00000001",
        "cnonce": "c",
    }
    response = compute_response(algorithm="MD5", body=body, **common)
    ha1 = md5("bob:biloxi.com:zanzibar")
    ha2 = md5(f"INVITE:sip:bob@biloxi.com:{hashlib.md5(body).hexdigest()}")
    assert response == md5(f"{ha1}:n:00000001:c:auth-int:{ha2}")
    assert response != compute_response(algorithm="MD5", body=body + b" ", **common)
    # RFC 3261 §22.4: an empty body hashes the empty string.
    assert compute_ha2("MD5", "INVITE", "sip:x", "auth-int") == md5(f"INVITE:sip:x:{md5('')}")


@pytest.mark.parametrize("algorithm", SUPPORTED_ALGORITHMS)
def test_every_algorithm_against_hashlib(algorithm: str) -> None:
    name = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}[
        algorithm.removesuffix("-sess")
    ]

    def h(text: str) -> str:
        return hashlib.new(name, text.encode()).hexdigest()

    ha1 = h("u:r:p")
    if algorithm.endswith("-sess"):
        ha1 = h(f"{ha1}:n:c")
    expected = h(f"{ha1}:n:00000001:c:auth:{h('REGISTER:sip:r')}")
    response = compute_response(
        algorithm=algorithm.lower(),
        username="u",
        realm="r",
        password="p",
        method="REGISTER",
        uri="sip:r",
        nonce="n",
        qop="auth",
        nc="00000001",
        cnonce="c",
    )
    assert response == expected


def test_utf8_credentials() -> None:
    response = compute_response(
        algorithm="SHA-256",
        username="Jäsøn",
        realm="r",
        password="pässword",
        method="GET",
        uri="/",
        nonce="n",
    )
    ha1 = hashlib.sha256("Jäsøn:r:pässword".encode()).hexdigest()
    ha2 = hashlib.sha256(b"GET:/").hexdigest()
    assert response == hashlib.sha256(f"{ha1}:n:{ha2}".encode()).hexdigest()


def test_unsupported_algorithm_and_qop() -> None:
    with pytest.raises(AuthenticationError, match="unsupported digest algorithm 'SHA3'"):
        hash_hex("SHA3", b"")
    with pytest.raises(AuthenticationError, match="qop"):
        compute_ha2("MD5", "GET", "/", qop="auth-conf")
    with pytest.raises(AuthenticationError, match="nc and cnonce"):
        request_digest("MD5", "a", "b", "n", qop="auth")


# ---------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------


def make_client(seed: int = 1, **kwargs: object) -> DigestClient:
    return DigestClient("bob", "zanzibar", random.Random(seed), **kwargs)  # type: ignore[arg-type]


BILOXI = Challenge(realm="biloxi.com", nonce="n1", qop=("auth",), opaque="o")


def expected_response(credentials: Credentials, password: str = "zanzibar", **kw: object) -> str:
    return compute_response(
        algorithm=credentials.algorithm,
        username="bob",
        realm=credentials.realm or "",
        password=password,
        method=str(kw.get("method", "INVITE")),
        uri=credentials.uri or "",
        nonce=credentials.nonce or "",
        qop=credentials.qop,
        nc=credentials.nc,
        cnonce=credentials.cnonce,
        body=kw.get("body", b""),  # type: ignore[arg-type]
    )


def test_client_answers_a_challenge() -> None:
    client = make_client()
    value = client.authorize(BILOXI, "INVITE", "sip:bob@biloxi.com")
    credentials = parse_credentials(value)
    assert credentials.username == "bob"
    assert credentials.realm == "biloxi.com"
    assert credentials.nonce == "n1"
    assert credentials.uri == "sip:bob@biloxi.com"
    assert credentials.qop == "auth"
    assert credentials.nc == "00000001"
    assert credentials.opaque == "o"
    assert credentials.algorithm is None  # not named by the challenge, so not echoed
    assert re.fullmatch(r"[0-9a-f]{16}", credentials.cnonce or "")
    assert credentials.response == expected_response(credentials)


def test_client_is_deterministic_with_a_seeded_rng() -> None:
    first = make_client(seed=7).authorize(BILOXI, "INVITE", "sip:bob@biloxi.com")
    second = make_client(seed=7).authorize(BILOXI, "INVITE", "sip:bob@biloxi.com")
    other = make_client(seed=8).authorize(BILOXI, "INVITE", "sip:bob@biloxi.com")
    assert first == second != other


def test_nonce_count_increments_per_nonce() -> None:
    client = make_client()
    sent = [
        client.credentials(BILOXI, "INVITE", "sip:bob@biloxi.com"),
        client.credentials(BILOXI, "ACK", "sip:bob@biloxi.com"),
        client.credentials(BILOXI, "BYE", "sip:bob@biloxi.com"),
    ]
    assert [c.nc for c in sent] == ["00000001", "00000002", "00000003"]
    assert len({c.cnonce for c in sent}) == 1
    for credentials, method in zip(sent, ["INVITE", "ACK", "BYE"], strict=True):
        assert credentials.response == expected_response(credentials, method=method)

    fresh = client.credentials(Challenge(realm="biloxi.com", nonce="n2", qop=("auth",)), "BYE", "u")
    assert fresh.nc == "00000001"
    assert fresh.cnonce != sent[0].cnonce
    assert client.credentials(BILOXI, "BYE", "u").nc == "00000004"


def test_nonce_count_is_hex() -> None:
    client = make_client()
    for _ in range(9):
        client.credentials(BILOXI, "INVITE", "u")
    assert client.credentials(BILOXI, "INVITE", "u").nc == "0000000a"


def test_client_forgets_the_oldest_nonce() -> None:
    client = make_client(max_nonces=2)
    for nonce in ("a", "b", "c"):
        client.credentials(Challenge(realm="r", nonce=nonce, qop=("auth",)), "M", "u")
    again = client.credentials(Challenge(realm="r", nonce="a", qop=("auth",)), "M", "u")
    assert again.nc == "00000001"


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (("auth",), "auth"),
        (("auth-int", "auth"), "auth"),
        (("auth", "auth-int"), "auth"),
        (("x-future", "auth"), "auth"),
        (("auth-int",), "auth-int"),
        ((), None),
    ],
)
def test_qop_choice(offered: tuple[str, ...], chosen: str | None) -> None:
    challenge = Challenge(realm="biloxi.com", nonce="n", qop=offered)
    body = b"v=0\r\n"
    credentials = make_client().credentials(challenge, "INVITE", "sip:bob@biloxi.com", body)
    assert credentials.qop == chosen
    assert credentials.response == expected_response(credentials, body=body)
    if chosen is None:
        # RFC 2069 compatibility: no cnonce, no nc.
        assert credentials.cnonce is None
        assert credentials.nc is None
        value = format_credentials(credentials)
        assert "nc=" not in value
        assert "cnonce" not in value
        assert "qop" not in value


def test_unsupported_qop() -> None:
    challenge = Challenge(realm="r", nonce="n", qop=("auth-conf",))
    with pytest.raises(AuthenticationError, match="qop"):
        make_client().authorize(challenge, "INVITE", "sip:x")


def test_algorithm_is_echoed_in_canonical_spelling() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth", algorithm=sha-256')
    credentials = make_client().credentials(challenge, "REGISTER", "sip:r")
    assert credentials.algorithm == "SHA-256"
    assert credentials.response == expected_response(credentials, method="REGISTER")
    assert len(credentials.response or "") == 64


def test_client_userhash() -> None:
    challenge = Challenge(realm="r", nonce="n", qop=("auth",), algorithm="SHA-256", userhash=True)
    credentials = make_client().credentials(challenge, "REGISTER", "sip:r")
    assert credentials.userhash
    assert credentials.username == hashlib.sha256(b"bob:r").hexdigest()
    assert credentials.response == expected_response(credentials, method="REGISTER")
    assert "userhash=true" in format_credentials(credentials)


def challenge_with(algorithm: str | None, scheme: str = "Digest") -> Challenge:
    return Challenge(scheme=scheme, realm="r", nonce=f"n-{algorithm}", algorithm=algorithm)


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["MD5", "SHA-256"], "SHA-256"),
        (["SHA-256", "MD5"], "SHA-256"),
        ([None, "SHA-256"], "SHA-256"),
        (["MD5-sess", "SHA-256-sess"], "SHA-256-sess"),
        (["SHA-256-sess", "SHA-256"], "SHA-256"),
        (["X-Unknown", "MD5"], "MD5"),
        ([None], None),
        (["md5"], "md5"),
    ],
)
def test_choose_prefers_the_strongest_algorithm(
    offered: list[str | None], chosen: str | None
) -> None:
    picked = make_client().choose([challenge_with(algorithm) for algorithm in offered])
    assert picked.algorithm == chosen


@pytest.mark.skipif(not HAS_SHA512_256, reason="hashlib lacks sha512_256")
def test_choose_prefers_sha512_256() -> None:
    offered = [challenge_with(a) for a in ("MD5", "SHA-512-256", "SHA-256")]
    assert make_client().choose(offered).algorithm == "SHA-512-256"


def test_choose_skips_other_schemes() -> None:
    offered = [challenge_with(None, "Basic"), challenge_with("MD5"), challenge_with(None, "Other")]
    assert make_client().choose(offered).scheme == "Digest"


def test_choose_respects_the_client_algorithms() -> None:
    client = make_client(algorithms=["sha-256"])
    assert client.algorithms == ("SHA-256",)
    with pytest.raises(AuthenticationError, match=r"Digest MD5.*supported: Digest SHA-256"):
        client.choose([challenge_with("MD5")])
    with pytest.raises(AuthenticationError, match="not allowed"):
        client.credentials(challenge_with("MD5"), "M", "u")


def test_choose_with_nothing_usable() -> None:
    with pytest.raises(AuthenticationError, match="NoOneKnowsThisScheme"):
        make_client().choose([Challenge(scheme="NoOneKnowsThisScheme")])
    with pytest.raises(AuthenticationError, match="offered: none"):
        make_client().choose([])


def test_client_rejects_unknown_algorithm_in_constructor() -> None:
    with pytest.raises(AuthenticationError, match="unsupported digest algorithm"):
        make_client(algorithms=["SHA-1"])


@pytest.mark.parametrize(
    ("challenge", "message"),
    [
        (Challenge(scheme="Basic", realm="r"), "only Digest"),
        (Challenge(scheme="NoOneKnowsThisScheme"), "NoOneKnowsThisScheme"),
        (Challenge(nonce="n"), "no realm"),
        (Challenge(realm="r"), "no nonce"),
        (Challenge(realm="r", nonce="n", algorithm="SHA3-256"), "unsupported digest algorithm"),
        (Challenge(realm="r", nonce="n", algorithm="MD5-sess"), "cnonce"),
    ],
)
def test_client_errors(challenge: Challenge, message: str) -> None:
    with pytest.raises(AuthenticationError, match=message):
        make_client().authorize(challenge, "INVITE", "sip:x")


# ---------------------------------------------------------------------------------------------
# Server, and client against server
# ---------------------------------------------------------------------------------------------

USERS = {"bob": "zanzibar", "alice": "wonderland"}
URI = "sip:biloxi.com"


def make_server(seed: int = 99, **kwargs: object) -> DigestServer:
    return DigestServer("biloxi.com", USERS.get, random.Random(seed), **kwargs)  # type: ignore[arg-type]


def answer(client: DigestClient, server: DigestServer, now: float, method: str = "REGISTER") -> str:
    challenges = [parse_challenge(value) for value in server.challenge(now)]
    return client.authorize(client.choose(challenges), method, URI)


def test_server_challenge() -> None:
    values = make_server().challenge(now=10.0)
    challenges = [parse_challenge(value) for value in values]
    # RFC 8760 §2.4: one challenge per algorithm, strongest first.
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert {c.nonce for c in challenges} == {challenges[0].nonce}
    for challenge in challenges:
        assert challenge.realm == "biloxi.com"
        assert challenge.qop == ("auth",)
        assert not challenge.stale


def test_server_nonces_are_fresh_and_deterministic() -> None:
    server = make_server()
    first = parse_challenge(server.challenge(0.0)[0]).nonce
    second = parse_challenge(server.challenge(0.0)[0]).nonce
    assert first != second
    assert parse_challenge(make_server().challenge(0.0)[0]).nonce == first


def test_right_password_verifies() -> None:
    server = make_server()
    value = answer(make_client(), server, now=0.0)
    result = server.verify(value, "REGISTER", now=1.0, request_uri=URI)
    assert result
    assert result.ok
    assert result.username == "bob"
    assert result.failure is None
    assert parse_credentials(value).algorithm == "SHA-256"


def test_parsed_credentials_are_accepted() -> None:
    server = make_server()
    value = answer(make_client(), server, now=0.0)
    assert server.verify(parse_credentials(value), "REGISTER", now=0.0).username == "bob"


def test_wrong_password_fails() -> None:
    server = make_server()
    client = DigestClient("bob", "wrong", random.Random(1))
    result = server.verify(answer(client, server, 0.0), "REGISTER", now=1.0)
    assert not result
    assert result.failure is VerifyFailure.WRONG_RESPONSE
    assert result.username == "bob"
    assert not result.stale


def test_unknown_user_fails() -> None:
    server = make_server()
    client = DigestClient("mallory", "zanzibar", random.Random(1))
    assert server.verify(answer(client, server, 0.0), "REGISTER", now=0.0).failure is (
        VerifyFailure.UNKNOWN_USER
    )


def test_other_method_fails() -> None:
    server = make_server()
    value = answer(make_client(), server, 0.0, method="REGISTER")
    assert server.verify(value, "INVITE", now=0.0).failure is VerifyFailure.WRONG_RESPONSE


def test_replayed_nonce_count_fails() -> None:
    server = make_server()
    client = make_client()
    challenge = client.choose(parse_challenge(v) for v in server.challenge(0.0))
    first = client.authorize(challenge, "REGISTER", URI)
    assert server.verify(first, "REGISTER", now=1.0)
    replay = server.verify(first, "REGISTER", now=2.0)
    assert replay.failure is VerifyFailure.REPLAYED_NONCE_COUNT
    # The next request with the same nonce counts on and is accepted.
    second = client.authorize(challenge, "REGISTER", URI)
    assert parse_credentials(second).nc == "00000002"
    assert server.verify(second, "REGISTER", now=3.0)
    assert not server.verify(second, "REGISTER", now=3.0)
    assert server.verify(first, "REGISTER", now=3.0).failure is VerifyFailure.REPLAYED_NONCE_COUNT


def test_stale_nonce_is_reported_then_retried() -> None:
    server = make_server(nonce_lifetime=30.0)
    client = make_client()
    value = answer(client, server, now=0.0)
    assert server.verify(value, "REGISTER", now=30.0)  # still fresh at exactly the lifetime
    late = client.authorize(
        client.choose(parse_challenge(v) for v in server.challenge(0.0)), "REGISTER", URI
    )
    result = server.verify(late, "REGISTER", now=30.5)
    assert result.failure is VerifyFailure.STALE_NONCE
    assert result.stale
    assert result.username == "bob"

    # RFC 7616 §3.3: challenge again with stale=true; the client retries without the user.
    values = server.challenge(30.5, stale=True)
    challenges = [parse_challenge(v) for v in values]
    assert all(c.stale for c in challenges)
    retry = client.authorize(client.choose(challenges), "REGISTER", URI)
    assert server.verify(retry, "REGISTER", now=31.0).username == "bob"


def test_stale_nonce_with_wrong_password_is_not_reported_stale() -> None:
    server = make_server(nonce_lifetime=30.0)
    client = DigestClient("bob", "wrong", random.Random(1))
    result = server.verify(answer(client, server, 0.0), "REGISTER", now=100.0)
    assert result.failure is VerifyFailure.WRONG_RESPONSE
    assert not result.stale


def test_nonce_of_another_server_is_unknown() -> None:
    value = answer(make_client(), make_server(seed=1), now=0.0)
    result = make_server(seed=2).verify(value, "REGISTER", now=0.0)
    assert result.failure is VerifyFailure.UNKNOWN_NONCE


def test_explicit_secret_is_shared_between_servers() -> None:
    value = answer(make_client(), make_server(seed=1, secret=b"k" * 32), now=0.0)
    assert make_server(seed=2, secret=b"k" * 32).verify(value, "REGISTER", now=0.0)


@pytest.mark.parametrize("nonce", ["", "forged", "é", "AAAA", "=" * 8, "A" * 43])
def test_forged_nonce_is_unknown(nonce: str) -> None:
    server = make_server()
    client = make_client()
    value = client.authorize(
        Challenge(realm="biloxi.com", nonce=nonce, qop=("auth",), algorithm="SHA-256"),
        "REGISTER",
        URI,
    )
    assert server.verify(value, "REGISTER", now=0.0).failure is VerifyFailure.UNKNOWN_NONCE


def test_tampered_nonce_is_unknown() -> None:
    server = make_server()
    challenge = parse_challenge(server.challenge(0.0)[0])
    nonce = challenge.nonce or ""
    tampered = ("B" if nonce[0] == "A" else "A") + nonce[1:]
    value = make_client().authorize(
        Challenge(realm="biloxi.com", nonce=tampered, qop=("auth",), algorithm="SHA-256"),
        "REGISTER",
        URI,
    )
    assert server.verify(value, "REGISTER", now=0.0).failure is VerifyFailure.UNKNOWN_NONCE


def test_nonce_from_the_future_is_unknown() -> None:
    server = make_server()
    value = answer(make_client(), server, now=100.0)
    assert server.verify(value, "REGISTER", now=50.0).failure is VerifyFailure.UNKNOWN_NONCE


def test_md5_client_and_sha256_only_server() -> None:
    md5_client = make_client(algorithms=["MD5"])
    server = make_server()
    value = answer(md5_client, server, 0.0)
    assert parse_credentials(value).algorithm == "MD5"
    assert server.verify(value, "REGISTER", now=0.0).username == "bob"

    strict = make_server(algorithms=["SHA-256"])
    challenge = Challenge(realm="biloxi.com", nonce="n", qop=("auth",), algorithm="MD5")
    refused = strict.verify(md5_client.authorize(challenge, "REGISTER", URI), "REGISTER", now=0.0)
    assert refused.failure is VerifyFailure.UNSUPPORTED_ALGORITHM


@pytest.mark.parametrize("algorithm", SUPPORTED_ALGORITHMS)
def test_every_algorithm_end_to_end(algorithm: str) -> None:
    server = make_server(algorithms=[algorithm])
    assert server.verify(answer(make_client(), server, 0.0), "REGISTER", now=0.0)


def test_auth_int_end_to_end() -> None:
    server = make_server(qop=["auth-int"])
    client = make_client()
    body = b"v=0\r\ns=-\r\n"
    challenge = client.choose(parse_challenge(v) for v in server.challenge(0.0))
    value = client.authorize(challenge, "INVITE", URI, body)
    assert parse_credentials(value).qop == "auth-int"
    assert server.verify(value, "INVITE", body, now=0.0).username == "bob"
    second = client.authorize(challenge, "INVITE", URI, body)
    tampered = server.verify(second, "INVITE", body + b"a=evil\r\n", now=0.0)
    assert tampered.failure is VerifyFailure.WRONG_RESPONSE


def test_uri_mismatch() -> None:
    server = make_server()
    value = answer(make_client(), server, 0.0)
    result = server.verify(value, "REGISTER", now=0.0, request_uri="sip:other.com")
    assert result.failure is VerifyFailure.URI_MISMATCH


def test_response_is_compared_case_insensitively() -> None:
    server = make_server()
    credentials = parse_credentials(answer(make_client(), server, 0.0))
    upper = Credentials(**{**credentials.__dict__, "response": credentials.response.upper()})  # type: ignore[union-attr]
    assert server.verify(upper, "REGISTER", now=0.0)


def digest_fields(server: DigestServer, **changes: str | None) -> str:
    credentials = parse_credentials(answer(make_client(), server, 0.0))
    fields = {
        "username": credentials.username,
        "realm": credentials.realm,
        "nonce": credentials.nonce,
        "uri": credentials.uri,
        "response": credentials.response,
        "algorithm": credentials.algorithm,
        "cnonce": credentials.cnonce,
        "qop": credentials.qop,
        "nc": credentials.nc,
        **changes,
    }
    return format_credentials(Credentials(**fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "failure"),
    [
        ({"realm": "atlanta.com"}, VerifyFailure.WRONG_REALM),
        ({"username": None}, VerifyFailure.MALFORMED),
        ({"realm": None}, VerifyFailure.MALFORMED),
        ({"nonce": None}, VerifyFailure.MALFORMED),
        ({"uri": None}, VerifyFailure.MALFORMED),
        ({"response": None}, VerifyFailure.MALFORMED),
        ({"cnonce": None}, VerifyFailure.MALFORMED),
        ({"nc": None}, VerifyFailure.MALFORMED),
        ({"qop": None}, VerifyFailure.UNSUPPORTED_QOP),
        ({"qop": "auth-int"}, VerifyFailure.UNSUPPORTED_QOP),
        ({"algorithm": "SHA-512-256"}, VerifyFailure.UNSUPPORTED_ALGORITHM),
        ({"algorithm": "X-Unknown"}, VerifyFailure.UNSUPPORTED_ALGORITHM),
    ],
)
def test_server_refuses_incomplete_or_foreign_credentials(
    changes: dict[str, str | None], failure: VerifyFailure
) -> None:
    server = make_server()
    assert server.verify(digest_fields(server, **changes), "REGISTER", now=0.0).failure is failure


def test_server_refuses_userhash() -> None:
    server = make_server()
    credentials = parse_credentials(answer(make_client(), server, 0.0))
    hashed = Credentials(**{**credentials.__dict__, "userhash": True})
    result = server.verify(hashed, "REGISTER", now=0.0)
    assert result.failure is VerifyFailure.USERHASH_UNSUPPORTED


@pytest.mark.parametrize(
    ("value", "failure"),
    [
        ("Basic Ym9iOnphbnppYmFy", VerifyFailure.WRONG_SCHEME),
        ('NoOneKnowsThisScheme username="bob"', VerifyFailure.WRONG_SCHEME),
        ('Digest username="bob", realm="biloxi.com', VerifyFailure.MALFORMED),
        ("", VerifyFailure.MALFORMED),
    ],
)
def test_server_refuses_bad_headers(value: str, failure: VerifyFailure) -> None:
    assert make_server().verify(value, "REGISTER", now=0.0).failure is failure


@given(st.text(max_size=80) | grammar_text.map(lambda text: "Digest " + text))
def test_server_verify_never_raises(value: str) -> None:
    assert not make_server().verify(value, "REGISTER", now=0.0)


@pytest.mark.parametrize(
    "kwargs",
    [{"algorithms": ["SHA-1"]}, {"algorithms": []}, {"qop": ["auth-conf"]}, {"qop": []}],
)
def test_server_configuration_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(AuthenticationError):
        make_server(**kwargs)


def test_module_is_sans_io() -> None:
    source = Path(digest.__file__).read_text(encoding="utf-8")
    for forbidden in ("import asyncio", "import socket", "import time", "datetime"):
        assert forbidden not in source
