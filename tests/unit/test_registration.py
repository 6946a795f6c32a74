"""RegistrationClient (RFC 3261 §10.2), sans-IO: requests built, responses fed, clock jumped."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from p2psip.endpoint.digest import DigestServer, parse_credentials
from p2psip.endpoint.message import Request, Response
from p2psip.endpoint.registration import (
    Registered,
    RegistrationClient,
    RegistrationEvent,
    RegistrationFailed,
    RegistrationState,
    Unregistered,
)

AOR = "sip:alice@example.com"
REGISTRAR = "sip:example.com"
CONTACT = "sip:alice@192.0.2.4:5060"
USERS = {"alice": "secret"}


def make_client(**kwargs: object) -> RegistrationClient:
    kwargs.setdefault("credentials", ("alice", "secret"))
    kwargs.setdefault("rng", random.Random(1))
    return RegistrationClient(AOR, REGISTRAR, CONTACT, **kwargs)  # type: ignore[arg-type]


def make_server(**kwargs: object) -> DigestServer:
    return DigestServer("example.com", USERS.get, random.Random(7), **kwargs)  # type: ignore[arg-type]


def answer(
    request: Request,
    status: int,
    headers: Iterable[tuple[str, str]] = (),
    reason: str | None = None,
) -> Response:
    """The registrar's response to ``request`` (RFC 3261 §8.2.6.2 copies)."""
    rh = request.headers
    items = [
        ("Via", "SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bKtest"),
        ("From", rh.get("From") or ""),
        ("To", f"{rh.get('To')};tag=registrar"),
        ("Call-ID", rh.get("Call-ID") or ""),
        ("CSeq", rh.get("CSeq") or ""),
        *headers,
    ]
    return Response(status, reason, items)


def challenge(
    server: DigestServer, now: float, *, stale: bool = False, proxy: bool = False
) -> list[tuple[str, str]]:
    name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
    return [(name, value) for value in server.challenge(now, stale=stale)]


def ok(request: Request, contacts: Iterable[str] = (), expires: str | None = None) -> Response:
    headers = [("Contact", c) for c in contacts]
    if expires is not None:
        headers.append(("Expires", expires))
    return answer(request, 200, headers)


def events(client: RegistrationClient) -> list[RegistrationEvent]:
    out = []
    while (event := client.next_event()) is not None:
        out.append(event)
    return out


def register_authenticated(
    client: RegistrationClient, server: DigestServer, now: float = 0.0, granted: int = 3600
) -> Request:
    """REGISTER -> 401 -> authenticated REGISTER -> 200; returns the authenticated request."""
    first = client.register(now)
    retry = client.receive_response(answer(first, 401, challenge(server, now)), now)
    assert retry is not None
    assert client.receive_response(ok(retry, [f"<{CONTACT}>;expires={granted}"]), now) is None
    assert events(client) == [Registered(granted, (f"<{CONTACT}>;expires={granted}",))]
    return retry


# -- the first REGISTER ------------------------------------------------------------------------
def test_first_register_fields() -> None:
    client = make_client()
    request = client.register(now=0.0)

    assert request.method == "REGISTER"
    assert str(request.uri) == REGISTRAR
    assert str(request.from_.uri) == AOR and request.from_.tag
    assert str(request.to.uri) == AOR and request.to.tag is None
    assert request.call_id == client.call_id
    assert (request.cseq.seq, request.cseq.method) == (1, "REGISTER")
    [contact] = request.contacts
    assert str(contact.uri) == CONTACT
    assert contact.params["expires"] == "3600"
    assert request.headers.get("Expires") == "3600"
    assert request.max_forwards == 70
    assert "Authorization" not in request.headers
    assert client.state is RegistrationState.REGISTERING
    assert client.get_timer() is None


def test_same_call_id_and_from_tag_cseq_increments() -> None:
    client = make_client()
    server = make_server()
    first = client.register(0.0)
    second = client.receive_response(answer(first, 401, challenge(server, 0.0)), 0.0)
    assert second is not None
    client.receive_response(ok(second, [f"<{CONTACT}>;expires=3600"]), 0.0)
    third = client.handle_timer(client.get_timer() or 0.0)
    assert third is not None
    fourth = client.unregister(4000.0)

    requests = [first, second, third, fourth]
    assert {r.call_id for r in requests} == {client.call_id}
    assert {r.from_.tag for r in requests} == {first.from_.tag}
    assert [r.cseq.seq for r in requests] == [1, 2, 3, 4]


def test_call_id_and_tag_come_from_the_injected_rng() -> None:
    a, b = make_client(rng=random.Random(5)), make_client(rng=random.Random(5))
    assert (a.call_id, a.from_tag) == (b.call_id, b.from_tag)
    assert make_client(rng=random.Random(6)).call_id != a.call_id


# -- digest authentication ---------------------------------------------------------------------
def test_401_is_answered_with_authorization_the_server_accepts() -> None:
    client = make_client()
    server = make_server()
    first = client.register(0.0)
    retry = client.receive_response(answer(first, 401, challenge(server, 0.0)), 0.5)

    assert retry is not None
    value = retry.headers.get("Authorization")
    assert value is not None and "Proxy-Authorization" not in retry.headers
    credentials = parse_credentials(value)
    assert credentials.username == "alice"
    assert credentials.uri == str(retry.uri) == REGISTRAR
    assert credentials.algorithm == "SHA-256"  # RFC 8760 §2.4: the strongest offered
    verification = server.verify(value, "REGISTER", now=1.0, request_uri=str(retry.uri))
    assert verification.ok, verification.failure
    assert verification.username == "alice"
    # the retry is the same REGISTER otherwise
    assert retry.headers.get("Contact") == first.headers.get("Contact")
    assert retry.headers.get("Expires") == "3600"
    assert retry.cseq.seq == 2
    assert events(client) == []
    assert client.state is RegistrationState.REGISTERING


def test_407_is_answered_with_proxy_authorization() -> None:
    client = make_client()
    server = make_server(algorithms=("MD5",))
    first = client.register(0.0)
    retry = client.receive_response(answer(first, 407, challenge(server, 0.0, proxy=True)), 0.0)

    assert retry is not None
    assert "Authorization" not in retry.headers
    value = retry.headers.get("Proxy-Authorization")
    assert value is not None
    assert server.verify(value, "REGISTER", now=0.0, request_uri=REGISTRAR).ok


def test_407_then_401_answers_both() -> None:
    client = make_client()
    proxy, registrar = make_server(), make_server(secret=b"k" * 32)
    first = client.register(0.0)
    second = client.receive_response(answer(first, 407, challenge(proxy, 0.0, proxy=True)), 0.0)
    assert second is not None
    third = client.receive_response(answer(second, 401, challenge(registrar, 0.0)), 0.0)
    assert third is not None
    proxy_value = third.headers.get("Proxy-Authorization")
    registrar_value = third.headers.get("Authorization")
    assert proxy_value is not None and registrar_value is not None
    assert proxy.verify(proxy_value, "REGISTER", now=0.0).ok
    assert registrar.verify(registrar_value, "REGISTER", now=0.0).ok


def test_second_401_without_stale_means_credentials_refused() -> None:
    client = make_client(credentials=("alice", "wrong"))
    server = make_server()
    first = client.register(0.0)
    retry = client.receive_response(answer(first, 401, challenge(server, 0.0)), 0.0)
    assert retry is not None
    value = retry.headers.get("Authorization")
    assert value is not None
    assert not server.verify(value, "REGISTER", now=0.0).ok  # wrong password

    assert client.receive_response(answer(retry, 401, challenge(server, 0.0)), 0.0) is None
    [event] = events(client)
    assert isinstance(event, RegistrationFailed)
    assert event.status == 401 and event.authentication_failed
    assert client.state is RegistrationState.FAILED
    assert client.get_timer() is None


def test_stale_challenge_is_answered_again() -> None:
    client = make_client()
    server = make_server(nonce_lifetime=10.0)
    first = client.register(0.0)
    retry = client.receive_response(answer(first, 401, challenge(server, 0.0)), 0.0)
    assert retry is not None
    value = retry.headers.get("Authorization")
    assert value is not None
    assert server.verify(value, "REGISTER", now=20.0).stale  # right password, old nonce

    again = client.receive_response(answer(retry, 401, challenge(server, 20.0, stale=True)), 20.0)
    assert again is not None
    new_value = again.headers.get("Authorization")
    assert new_value is not None
    assert parse_credentials(new_value).nonce != parse_credentials(value).nonce
    assert server.verify(new_value, "REGISTER", now=20.5).ok
    assert events(client) == []


def test_endless_stale_challenges_give_up() -> None:
    client = make_client()
    server = make_server()
    request = client.register(0.0)
    request = client.receive_response(answer(request, 401, challenge(server, 0.0)), 0.0)
    tries = 1
    while request is not None:
        request = client.receive_response(
            answer(request, 401, challenge(server, 0.0, stale=True)), 0.0
        )
        tries += 1
        assert tries < 10
    [event] = events(client)
    assert isinstance(event, RegistrationFailed) and event.authentication_failed


def test_401_without_credentials_fails() -> None:
    client = make_client(credentials=None)
    request = client.register(0.0)
    assert client.receive_response(answer(request, 401, challenge(make_server(), 0.0)), 0.0) is None
    [event] = events(client)
    assert isinstance(event, RegistrationFailed)
    assert event.status == 401 and event.authentication_failed


def test_unanswerable_challenge_fails() -> None:
    client = make_client()
    request = client.register(0.0)
    response = answer(request, 401, [("WWW-Authenticate", 'Basic realm="example.com"')])
    assert client.receive_response(response, 0.0) is None
    [event] = events(client)
    assert isinstance(event, RegistrationFailed) and event.authentication_failed
    assert "cannot answer" in event.reason


def test_refresh_reuses_the_challenge_preemptively() -> None:
    # RFC 3261 §22.3 / RFC 7616 §3.4: the same nonce with the next nonce count.
    client = make_client()
    server = make_server()
    register_authenticated(client, server)
    refresh = client.handle_timer(3570.0)
    assert refresh is not None
    value = refresh.headers.get("Authorization")
    assert value is not None
    assert parse_credentials(value).nc == "00000002"
    assert server.verify(value, "REGISTER", now=200.0).ok


def test_refresh_rechallenged_without_stale_is_answered_once() -> None:
    # The registrar forgot its nonce (restart): the preemptive credentials do not count.
    client = make_client()
    server = make_server()
    register_authenticated(client, server)
    refresh = client.handle_timer(3570.0)
    assert refresh is not None
    fresh = make_server(secret=b"s" * 32)
    retry = client.receive_response(answer(refresh, 401, challenge(fresh, 3570.0)), 3570.0)
    assert retry is not None
    value = retry.headers.get("Authorization")
    assert value is not None
    assert fresh.verify(value, "REGISTER", now=3570.0).ok


# -- 423 Interval Too Brief --------------------------------------------------------------------
def test_423_retries_with_min_expires() -> None:
    client = make_client(expires=30)
    first = client.register(0.0)
    retry = client.receive_response(answer(first, 423, [("Min-Expires", "60")]), 0.0)

    assert retry is not None
    assert retry.headers.get("Expires") == "60"
    assert retry.contacts[0].params["expires"] == "60"
    assert retry.cseq.seq == 2 and retry.call_id == first.call_id
    assert client.receive_response(ok(retry, [f"<{CONTACT}>;expires=60"]), 0.0) is None
    assert events(client) == [Registered(60, (f"<{CONTACT}>;expires=60",))]
    assert client.expires == 60  # later refreshes ask for it too
    refresh = client.handle_timer(client.get_timer() or 0.0)
    assert refresh is not None and refresh.headers.get("Expires") == "60"


def test_423_after_authentication_keeps_the_credentials() -> None:
    client = make_client(expires=30)
    server = make_server()
    first = client.register(0.0)
    authed = client.receive_response(answer(first, 401, challenge(server, 0.0)), 0.0)
    assert authed is not None
    retry = client.receive_response(answer(authed, 423, [("Min-Expires", "120")]), 0.0)
    assert retry is not None
    value = retry.headers.get("Authorization")
    assert value is not None
    assert server.verify(value, "REGISTER", now=0.0).ok  # nc 2 on the same nonce


@pytest.mark.parametrize("min_expires", [None, "20", "30", "soon"])
def test_423_without_usable_min_expires_fails(min_expires: str | None) -> None:
    client = make_client(expires=30)
    request = client.register(0.0)
    headers = [] if min_expires is None else [("Min-Expires", min_expires)]
    assert client.receive_response(answer(request, 423, headers), 0.0) is None
    [event] = events(client)
    assert isinstance(event, RegistrationFailed) and event.status == 423


# -- 2xx: the granted lifetime -----------------------------------------------------------------
def test_granted_expires_is_read_from_our_contact_among_several() -> None:
    client = make_client()
    request = client.register(0.0)
    others = "<sip:alice@192.0.2.99:5060>;expires=1800"
    ours = f'<{CONTACT}>;expires=120;received="sip:192.0.2.4:5070"'
    client.receive_response(ok(request, [others, ours], expires="3600"), 0.0)

    [event] = events(client)
    assert event == Registered(120, (others, ours))
    assert client.granted == 120
    assert client.bindings == (others, ours)
    assert client.state is RegistrationState.REGISTERED


def test_granted_expires_from_a_comma_separated_contact_list() -> None:
    client = make_client()
    request = client.register(0.0)
    line = "<sip:alice@192.0.2.99>;expires=1800, <sip:alice@192.0.2.4>;expires=90"
    client.receive_response(ok(request, [line]), 0.0)
    # CONTACT has port 5060: the default port of a sip: URI, so the second binding is ours
    [event] = events(client)
    assert isinstance(event, Registered) and event.expires == 90
    assert len(event.contacts) == 2


def test_granted_expires_falls_back_to_the_expires_header() -> None:
    client = make_client()
    request = client.register(0.0)
    client.receive_response(ok(request, ["<sip:bob@192.0.2.7>;expires=50"], expires="600"), 0.0)
    [event] = events(client)
    assert isinstance(event, Registered) and event.expires == 600


def test_granted_expires_falls_back_to_what_we_asked() -> None:
    client = make_client(expires=900)
    request = client.register(0.0)
    client.receive_response(ok(request), 0.0)
    assert events(client) == [Registered(900, ())]


def test_zero_lifetime_granted_is_a_failure() -> None:
    client = make_client()
    request = client.register(0.0)
    client.receive_response(ok(request, [f"<{CONTACT}>;expires=0"]), 0.0)
    [event] = events(client)
    assert isinstance(event, RegistrationFailed) and event.status == 200


# -- refresh timing ----------------------------------------------------------------------------
def test_refresh_is_due_margin_seconds_before_expiry() -> None:
    client = make_client(refresh_margin=30.0)
    request = client.register(10.0)
    client.receive_response(ok(request, [f"<{CONTACT}>;expires=3600"]), 10.0)
    assert client.get_timer() == 3580.0

    assert client.handle_timer(3579.999) is None
    assert client.state is RegistrationState.REGISTERED
    refresh = client.handle_timer(3580.0)
    assert refresh is not None
    assert refresh.method == "REGISTER" and refresh.headers.get("Expires") == "3600"
    assert client.state is RegistrationState.REGISTERING
    assert client.get_timer() is None
    assert client.handle_timer(3600.0) is None  # one refresh, not one per timer call

    client.receive_response(ok(refresh, [f"<{CONTACT}>;expires=3600"]), 3581.0)
    assert client.get_timer() == 3581.0 + 3570.0


def test_short_lifetime_refreshes_half_way() -> None:
    client = make_client(refresh_margin=30.0)
    request = client.register(0.0)
    client.receive_response(ok(request, [f"<{CONTACT}>;expires=40"]), 0.0)
    assert client.get_timer() == 20.0
    assert client.handle_timer(19.9) is None
    assert client.handle_timer(20.0) is not None


# -- un-REGISTER -------------------------------------------------------------------------------
def test_unregister_sends_expires_zero_and_ends_unregistered() -> None:
    client = make_client()
    server = make_server()
    register_authenticated(client, server)

    request = client.unregister(100.0)
    assert client.state is RegistrationState.UNREGISTERING
    assert client.get_timer() is None
    [contact] = request.contacts
    assert str(contact.uri) == CONTACT and contact.params["expires"] == "0"
    assert request.headers.get("Expires") == "0"
    value = request.headers.get("Authorization")
    assert value is not None and server.verify(value, "REGISTER", now=100.0).ok

    assert client.receive_response(ok(request), 100.0) is None
    assert events(client) == [Unregistered()]
    assert client.state is RegistrationState.UNREGISTERED
    assert client.granted is None
    assert client.handle_timer(10_000.0) is None


def test_unregister_challenged_is_answered() -> None:
    client = make_client()
    request = client.register(0.0)
    client.receive_response(ok(request, [f"<{CONTACT}>;expires=60"]), 0.0)
    events(client)
    request = client.unregister(5.0)
    retry = client.receive_response(answer(request, 401, challenge(make_server(), 5.0)), 5.0)
    assert retry is not None and retry.headers.get("Expires") == "0"
    assert "Authorization" in retry.headers
    client.receive_response(ok(retry), 5.0)
    assert events(client) == [Unregistered()]


# -- failures ----------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [403, 404, 480, 500, 503, 603])
def test_error_responses_fail(status: int) -> None:
    client = make_client()
    request = client.register(0.0)
    assert client.receive_response(answer(request, status, reason="Nope"), 0.0) is None
    assert events(client) == [RegistrationFailed(status, "Nope", False)]
    assert client.state is RegistrationState.FAILED
    assert client.get_timer() is None


def test_403_after_answering_a_challenge_is_an_authentication_failure() -> None:
    # Kamailio answers 403 when the authentication user differs from the To user.
    client = make_client()
    first = client.register(0.0)
    retry = client.receive_response(answer(first, 401, challenge(make_server(), 0.0)), 0.0)
    assert retry is not None
    client.receive_response(answer(retry, 403, reason="Forbidden auth ID"), 0.0)
    assert events(client) == [RegistrationFailed(403, "Forbidden auth ID", True)]


def test_transaction_timeout_fails() -> None:
    client = make_client()
    request = client.register(0.0)
    client.receive_response(ok(request, [f"<{CONTACT}>;expires=60"]), 0.0)
    events(client)
    refresh = client.handle_timer(client.get_timer() or 0.0)
    assert refresh is not None
    client.transaction_failed(408, "no final response")
    assert events(client) == [RegistrationFailed(408, "no final response")]
    assert client.state is RegistrationState.FAILED
    assert client.get_timer() is None
    # the adapter retries with a new REGISTER
    again = client.register(100.0)
    assert again.cseq.seq == refresh.cseq.seq + 1


def test_provisional_and_stale_responses_are_ignored() -> None:
    client = make_client()
    server = make_server()
    first = client.register(0.0)
    assert client.receive_response(answer(first, 100), 0.0) is None
    retry = client.receive_response(answer(first, 401, challenge(server, 0.0)), 0.0)
    assert retry is not None
    # a late answer to the first REGISTER (CSeq 1) does not complete the second
    assert client.receive_response(ok(first, [f"<{CONTACT}>;expires=60"]), 0.0) is None
    assert events(client) == []
    assert client.state is RegistrationState.REGISTERING
    client.receive_response(ok(retry, [f"<{CONTACT}>;expires=60"]), 0.0)
    assert [type(e) for e in events(client)] == [Registered]
    # once registered, a repeated final response changes nothing
    assert client.receive_response(ok(retry, [f"<{CONTACT}>;expires=5"]), 1.0) is None
    assert events(client) == [] and client.granted == 60
