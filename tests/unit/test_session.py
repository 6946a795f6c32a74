"""The sans-IO session core: states, RFC 4028 timers (clock jumped), §14.1 back-off, final
response ranking, contact order, 3xx targets, Reason/Warning values, hold detection, DTMF INFO.

No sockets, no sleeps: ``now`` is a number the tests choose.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2psip.endpoint.message import Request, Response
from p2psip.endpoint.session import (
    TRANSITIONS,
    CallCancelled,
    CallFailed,
    CallTimeout,
    PeerVerificationFailed,
    Reason,
    Refresher,
    Ringing,
    SessionError,
    SessionExpires,
    SessionState,
    SessionTimer,
    SessionTimerAction,
    SessionTimerConfig,
    Terminated,
    WarningValue,
    best_response,
    check_transition,
    contact_for_uri,
    failure_reason,
    format_dtmf_relay,
    glare_backoff,
    order_contacts,
    parse_dtmf_relay,
    parse_min_se,
    parse_reasons,
    priority_groups,
    redirect_contacts,
    remote_hold,
    retry_after_for_overlap,
    stream_changes,
    try_next_contact,
)
from p2psip.errors import P2PSIPError, SIPParseError
from p2psip.locator.base import LocatedContact
from p2psip.media.offer_answer import (
    CodecDescription,
    MediaConfig,
    NegotiatedStream,
    OfferAnswer,
)

S = SessionState


def response(status: int, *headers: tuple[str, str]) -> Response:
    return Response(status, None, list(headers))


def request(*headers: tuple[str, str]) -> Request:
    return Request("INVITE", "sip:bob@192.0.2.2", list(headers))


# ------------------------------------------------------------------------------------------
# States and events
# ------------------------------------------------------------------------------------------
def test_every_state_can_end_and_terminated_is_final() -> None:
    for state in S:
        assert check_transition(state, state)
        if state is not S.TERMINATED:
            assert check_transition(state, S.TERMINATED)
    assert TRANSITIONS[S.TERMINATED] == frozenset()
    assert not check_transition(S.TERMINATED, S.CONFIRMED)


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        (S.CALLING, S.PROCEEDING, True),
        (S.CALLING, S.EARLY, True),
        (S.PROCEEDING, S.CONFIRMED, True),
        (S.INCOMING, S.EARLY, True),
        (S.INCOMING, S.CONNECTING, True),
        (S.CONNECTING, S.CONFIRMED, True),
        (S.CONFIRMED, S.EARLY, False),
        (S.CONFIRMED, S.CALLING, False),
        (S.EARLY, S.CALLING, False),
        (S.INCOMING, S.CALLING, False),
        (S.CALLING, S.INCOMING, False),
        (S.CALLING, S.CONNECTING, False),
        (S.TERMINATING, S.CONFIRMED, False),
    ],
)
def test_transitions(current: SessionState, new: SessionState, allowed: bool) -> None:
    assert check_transition(current, new) is allowed


def test_events_are_frozen_and_errors_are_ours() -> None:
    event = Ringing(180, "Ringing")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.status = 181  # type: ignore[misc]
    ended = Terminated("busy", 486, "remote")
    assert ended == Terminated("busy", 486, "remote", error=CallFailed("x"))  # error not compared
    for cls in (CallFailed, CallTimeout, CallCancelled, PeerVerificationFailed):
        assert issubclass(cls, SessionError) and issubclass(cls, P2PSIPError)
    failed = CallFailed("no", 486, "busy", None, [("sip:a@x", "486 Busy Here")])
    assert failed.status == 486 and failed.attempts == [("sip:a@x", "486 Busy Here")]


# ------------------------------------------------------------------------------------------
# RFC 4028 header values
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1800", SessionExpires(1800)),
        ("1800;refresher=uac", SessionExpires(1800, Refresher.UAC)),
        ("90 ; refresher=UAS", SessionExpires(90, Refresher.UAS)),
        ("4000;x=y", SessionExpires(4000)),
    ],
)
def test_session_expires_parse(text: str, value: SessionExpires) -> None:
    assert SessionExpires.parse(text) == value
    assert SessionExpires.parse(str(value)) == value


@pytest.mark.parametrize("text", ["", "abc", "-5", "1.5", "12345678901", "90;refresher=both"])
def test_session_expires_rejects(text: str) -> None:
    with pytest.raises(SIPParseError) as info:
        SessionExpires.parse(text)
    assert info.value.status == 400


@given(st.text(max_size=40))
def test_session_expires_random_text_raises_only_our_error(text: str) -> None:
    try:
        value = SessionExpires.parse(text)
    except SIPParseError:
        return
    assert SessionExpires.parse(str(value)) == value


def test_compact_form_and_min_se() -> None:
    message = request(("x", "120;refresher=uas"), ("Min-SE", "90"))
    assert SessionExpires.of(message) == SessionExpires(120, Refresher.UAS)
    assert parse_min_se(message) == 90
    assert parse_min_se(request()) is None and SessionExpires.of(request()) is None
    with pytest.raises(SIPParseError):
        parse_min_se(request(("Min-SE", "soon")))


# ------------------------------------------------------------------------------------------
# RFC 4028 negotiation and timing, clock jumped
# ------------------------------------------------------------------------------------------
def test_uac_initial_request_and_2xx_makes_us_refresher() -> None:
    timer = SessionTimer(SessionTimerConfig(session_expires=1800, min_se=90))
    assert timer.request_headers() == [("Session-Expires", "1800"), ("Min-SE", "90")]
    assert timer.handle_2xx(response(200, ("Session-Expires", "1800;refresher=uac")), now=100.0)
    assert timer.active and timer.we_refresh and timer.interval == 1800
    # RFC 4028 §10: refresh at half the interval; BYE min(32, SE/3) before expiry
    assert timer.refresh_at() == 100.0 + 900
    assert timer.expires_at() == 100.0 + 1800 - 32
    assert timer.next_timeout() == 1000.0
    assert timer.handle_timer(999.9) is None
    assert timer.handle_timer(1000.0) is SessionTimerAction.REFRESH
    assert timer.handle_timer(1000.5) is None  # one REFRESH per refresh
    assert timer.next_timeout() == 1868.0  # only the expiry is left while refreshing
    # a refresh carries the interval in force and names us (the UAC of it) as refresher
    assert timer.request_headers() == [("Session-Expires", "1800;refresher=uac"), ("Min-SE", "90")]
    timer.handle_2xx(response(200, ("Session-Expires", "1800;refresher=uac")), now=1001.0)
    assert timer.next_timeout() == 1901.0
    assert timer.handle_timer(2900.0) is SessionTimerAction.EXPIRED
    assert not timer.active and timer.next_timeout() is None


def test_expiry_margin_is_a_third_for_short_intervals() -> None:
    timer = SessionTimer(SessionTimerConfig(session_expires=90, min_se=90))
    timer.handle_2xx(response(200, ("Session-Expires", "90;refresher=uas")), now=0.0)
    assert not timer.we_refresh
    assert timer.refresh_at() is None
    assert timer.next_timeout() == timer.expires_at() == 60.0
    assert timer.handle_timer(59.0) is None
    assert timer.handle_timer(60.0) is SessionTimerAction.EXPIRED


def test_2xx_without_session_expires_means_no_timer() -> None:
    timer = SessionTimer(SessionTimerConfig())
    assert not timer.handle_2xx(response(200), now=5.0)
    assert not timer.active and timer.next_timeout() is None
    # a malformed value is not a timer either
    assert not timer.handle_2xx(response(200, ("Session-Expires", "never")), now=5.0)


def test_refresh_failure_retries_halfway_then_expires() -> None:
    timer = SessionTimer(SessionTimerConfig(session_expires=100, min_se=90))
    timer.handle_2xx(response(200, ("Session-Expires", "100;refresher=uac")), now=0.0)
    assert timer.handle_timer(50.0) is SessionTimerAction.REFRESH
    timer.refresh_failed(now=52.0)
    # the next try halfway to the BYE at 100 - 32 = 68, not at once (no request storm)
    assert timer.next_timeout() == 60.0
    assert timer.handle_timer(52.0) is None
    assert timer.handle_timer(60.0) is SessionTimerAction.REFRESH
    timer.refresh_failed(now=61.0)
    assert timer.next_timeout() == 64.5
    assert timer.handle_timer(68.0) is SessionTimerAction.EXPIRED
    # a success resets the schedule
    timer.handle_2xx(response(200, ("Session-Expires", "100;refresher=uac")), now=70.0)
    assert timer.next_timeout() == 120.0


def test_422_raises_the_interval_once() -> None:
    timer = SessionTimer(SessionTimerConfig(session_expires=90, min_se=90))
    assert timer.handle_422(response(422, ("Min-SE", "300")))
    assert timer.min_se == 300
    assert timer.request_headers() == [("Session-Expires", "300"), ("Min-SE", "300")]
    # the same answer again, a smaller one, none or a bad one: no retry (no loop)
    assert not timer.handle_422(response(422, ("Min-SE", "300")))
    assert not timer.handle_422(response(422, ("Min-SE", "120")))
    assert not timer.handle_422(response(422))
    assert not timer.handle_422(response(422, ("Min-SE", "x")))


def test_uas_rejects_too_small_interval_with_our_min_se() -> None:
    timer = SessionTimer(SessionTimerConfig(session_expires=1800, min_se=120))
    assert timer.check_request(request(("Session-Expires", "90"))) == (422, [("Min-SE", "120")])
    assert timer.check_request(request(("Session-Expires", "120"))) is None
    assert timer.check_request(request()) is None
    assert timer.check_request(request(("Session-Expires", "bad")))[0] == 400  # type: ignore[index]


@pytest.mark.parametrize(
    ("headers", "expected", "require", "we_refresh"),
    [
        # the UAC does not know the extension: we refresh, no Require (RFC 4028 §9)
        ((), "1800;refresher=uas", False, True),
        ((("Session-Expires", "600"),), "600;refresher=uas", False, True),
        # it does: its choice, else ours (uac by default)
        ((("Supported", "timer"),), "1800;refresher=uac", True, False),
        (
            (("Supported", "timer"), ("Session-Expires", "600;refresher=uas")),
            "600;refresher=uas",
            True,
            True,
        ),
        (
            (("Supported", "timer"), ("Session-Expires", "600;refresher=uac")),
            "600;refresher=uac",
            True,
            False,
        ),
        # we prefer a shorter interval than asked: lowered, but not below its Min-SE
        (
            (("Supported", "timer"), ("Session-Expires", "7200"), ("Min-SE", "3600")),
            "3600;refresher=uac",
            True,
            False,
        ),
    ],
)
def test_uas_negotiation(
    headers: tuple[tuple[str, str], ...], expected: str, require: bool, we_refresh: bool
) -> None:
    timer = SessionTimer(SessionTimerConfig(session_expires=1800, min_se=90))
    out = timer.response_headers(request(*headers), now=10.0)
    assert out[0] == ("Session-Expires", expected)
    assert (("Require", "timer") in out) is require
    assert timer.we_refresh is we_refresh
    assert timer.last_refresh == 10.0


def test_disabled_timer_does_nothing() -> None:
    timer = SessionTimer(SessionTimerConfig(enabled=False))
    assert timer.request_headers() == []
    assert timer.response_headers(request(("Session-Expires", "90")), now=0.0) == []
    assert timer.check_request(request(("Session-Expires", "1"))) is None
    assert not timer.handle_2xx(response(200, ("Session-Expires", "90")), now=0.0)
    assert not timer.handle_422(response(422, ("Min-SE", "900")))


def test_timer_config_is_checked() -> None:
    with pytest.raises(ValueError):
        SessionTimerConfig(session_expires=60, min_se=90)
    with pytest.raises(ValueError):
        SessionTimerConfig(session_expires=10, min_se=0)


# ------------------------------------------------------------------------------------------
# RFC 3261 §14: glare
# ------------------------------------------------------------------------------------------
def test_glare_backoff_ranges() -> None:
    rng = random.Random(1)
    owner = [glare_backoff(rng, owns_call_id=True) for _ in range(2000)]
    other = [glare_backoff(rng, owns_call_id=False) for _ in range(2000)]
    assert min(owner) >= 2.1 and max(owner) <= 4.0
    assert min(other) >= 0.0 and max(other) <= 2.0
    assert max(other) < min(owner)  # the side that does not own the Call-ID goes first
    # units of 10 ms
    assert all(abs(v * 100 - round(v * 100)) < 1e-9 for v in owner + other)
    assert len(set(owner)) > 100 and len(set(other)) > 100
    assert glare_backoff(random.Random(2), owns_call_id=True, scale=0.1) <= 0.4
    assert {retry_after_for_overlap(rng) for _ in range(500)} == set(range(11))


# ------------------------------------------------------------------------------------------
# Final responses
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "reason", "next_contact"),
    [
        (486, "busy", True),
        (480, "unavailable", True),
        (404, "not found", True),
        (408, "no answer", True),
        (503, "service unavailable", True),
        (502, "server error", True),
        (302, "redirected", True),
        (487, "cancelled", False),
        (603, "declined", False),
        (600, "busy everywhere", False),
        (699, "refused everywhere", False),
        (488, "media not acceptable", True),
    ],
)
def test_status_mapping(status: int, reason: str, next_contact: bool) -> None:
    assert failure_reason(status) == reason
    assert try_next_contact(status) is next_contact


def test_best_response_rfc3261_16_7() -> None:
    def best(*statuses: int) -> int | None:
        chosen = best_response([response(s) for s in statuses])
        return None if chosen is None else chosen.status

    assert best(486, 503, 603, 404) == 603  # any 6xx
    assert best(503, 486, 404) == 486  # lowest class, in order received
    assert best(486, 407, 500) == 407  # 4xx that says how to resubmit
    assert best(503, 302) == 302
    assert best(500, 503) == 500
    assert best(200, 180) is None and best() is None


# ------------------------------------------------------------------------------------------
# Contacts
# ------------------------------------------------------------------------------------------
def contact(uri: str, priority: int = 0, port: int = 5060) -> LocatedContact:
    return LocatedContact(uri, "udp", "192.0.2.1", port, priority)


def test_order_contacts_stable_and_deduplicated() -> None:
    a, b, c = contact("sip:a@x", 10), contact("sip:b@x", 0), contact("sip:c@x", 10)
    again = contact("sip:a@x", 5)  # same place, another priority: a duplicate
    assert order_contacts([a, b, c, again]) == [b, a, c]
    assert priority_groups([a, b, c]) == [[b], [a, c]]
    assert order_contacts([]) == [] and priority_groups([]) == []


def test_redirect_contacts_by_q() -> None:
    redirect = response(
        302,
        ("Contact", "<sip:low@192.0.2.5>;q=0.1, <sips:secure@192.0.2.6>;q=0.9"),
        ("Contact", "<sip:plain@192.0.2.7:5070;transport=tcp>"),
        ("Contact", "<tel:+15551234>, <sip:bad@192.0.2.8>;q=2, <sip:nan@192.0.2.9>;q=x"),
        ("Contact", "<sip:via@example.com;maddr=192.0.2.10>;q=0.5"),
    )
    found = redirect_contacts(redirect)
    assert [c.uri.split("@")[0] for c in found] == [
        "sip:plain",
        "sips:secure",
        "sip:via",
        "sip:low",
    ]
    plain, secure, via, low = found
    assert (plain.transport, plain.port, plain.priority) == ("tcp", 5070, 0)
    assert (secure.transport, secure.port, secure.priority) == ("tls", 5061, 100)
    assert via.host == "192.0.2.10" and via.priority == 500
    assert low.priority == 900 and all(c.source == "redirect" for c in found)
    assert redirect_contacts(redirect, limit=1) == [plain]
    assert redirect_contacts(response(302)) == []
    assert redirect_contacts(response(302, ("Contact", "<<<"))) == []


def test_contact_for_uri() -> None:
    c = contact_for_uri("sip:carol@127.0.0.1:5080")
    assert (c.transport, c.host, c.port, c.source) == ("udp", "127.0.0.1", 5080, "uri")
    assert contact_for_uri("sips:carol@[::1]").port == 5061
    assert contact_for_uri("sips:carol@[::1]").host == "::1"
    with pytest.raises(SIPParseError):
        contact_for_uri("tel:+123")
    with pytest.raises(SIPParseError):
        contact_for_uri("not a uri")


# ------------------------------------------------------------------------------------------
# Reason and Warning
# ------------------------------------------------------------------------------------------
def test_reason_values() -> None:
    elsewhere = Reason.sip(200, "Call completed elsewhere")
    assert str(elsewhere) == 'SIP;cause=200;text="Call completed elsewhere"'
    assert Reason.parse('SIP ;cause=200 ;text="Call completed elsewhere"') == elsewhere
    assert Reason.parse(str(Reason.q850(16, 'a "quoted" \\ text'))) == Reason.q850(
        16, 'a "quoted" \\ text'
    )
    assert str(Reason("SIP")) == "SIP"
    message = request(("Reason", "SIP;cause=487, Q.850;cause=16"), ("Reason", "bad;cause=x"))
    assert parse_reasons(message) == [Reason.sip(487), Reason.q850(16)]
    for bad in ("", ";cause=1", "SIP;cause=abc", 'SIP;text="unterminated'):
        with pytest.raises(SIPParseError):
            Reason.parse(bad)


@given(st.text(max_size=60))
def test_reason_random_text_raises_only_our_error(text: str) -> None:
    try:
        value = Reason.parse(text)
    except SIPParseError:
        return
    assert Reason.parse(str(value)) == value


def test_warning_values() -> None:
    warning = WarningValue(304, "p2p.test", 'Media type "video" not available')
    assert str(warning) == '304 p2p.test "Media type \\"video\\" not available"'
    assert WarningValue.parse(str(warning)) == warning
    for bad in ("", '30 host "x"', "399 host text", "399", 'abc host "x"'):
        with pytest.raises(SIPParseError):
            WarningValue.parse(bad)


@given(st.text(max_size=60))
def test_warning_random_text_raises_only_our_error(text: str) -> None:
    try:
        WarningValue.parse(text)
    except SIPParseError:
        pass


# ------------------------------------------------------------------------------------------
# Hold and streams
# ------------------------------------------------------------------------------------------
PCMU = CodecDescription("PCMU", 8000)


def pair() -> tuple[OfferAnswer, OfferAnswer]:
    rng = random.Random(4)
    a = OfferAnswer("192.0.2.1", [MediaConfig(port=4000, codecs=[PCMU])], rng=rng)
    b = OfferAnswer("192.0.2.2", [MediaConfig(port=5000, codecs=[PCMU])], rng=rng)
    b.answer(a.create_offer())
    a.receive_answer(b.local_description)  # type: ignore[arg-type]
    return a, b


def exchange(offerer: OfferAnswer, answerer: OfferAnswer) -> None:
    answer = answerer.answer(offerer.create_offer())
    offerer.receive_answer(answer)


def held(oa: OfferAnswer, *, remote_is_offer: bool) -> bool:
    return remote_hold(oa.local_description, oa.remote_description, remote_is_offer=remote_is_offer)


def test_remote_hold_detection() -> None:
    a, b = pair()
    assert not held(a, remote_is_offer=False) and not held(b, remote_is_offer=True)
    a.hold()  # sendonly offer
    exchange(a, b)
    assert held(b, remote_is_offer=True)  # b: a's offer does not receive
    assert not held(a, remote_is_offer=False)  # a: b's recvonly answer is a's own doing
    a.hold(inactive=True)
    exchange(a, b)
    assert held(b, remote_is_offer=True)
    assert not held(a, remote_is_offer=False)  # inactive answer to our inactive offer
    a.unhold()
    exchange(a, b)
    assert not held(b, remote_is_offer=True) and not held(a, remote_is_offer=False)
    # b holds and then a re-offers sendrecv: b's answer still does not receive
    b.hold()
    exchange(b, a)
    assert held(a, remote_is_offer=True)
    exchange(a, b)
    assert held(a, remote_is_offer=False)
    assert not remote_hold(None, None, remote_is_offer=True)


def test_stream_changes() -> None:
    def streams(*active: bool) -> tuple[NegotiatedStream, ...]:
        return tuple(NegotiatedStream(i, "audio", not on) for i, on in enumerate(active))

    assert stream_changes(streams(True), streams(True, True)) == ((1,), ())
    assert stream_changes(streams(True, True), streams(True, False)) == ((), (1,))
    assert stream_changes((), streams(True)) == ((0,), ())
    assert stream_changes(streams(True), streams(True)) == ((), ())


# ------------------------------------------------------------------------------------------
# DTMF INFO bodies
# ------------------------------------------------------------------------------------------
def test_dtmf_relay() -> None:
    assert parse_dtmf_relay(b"Signal=5\r\nDuration=160\r\n") == ("5", 160)
    assert parse_dtmf_relay(b"signal= #\nduration=100") == ("#", 100)
    assert parse_dtmf_relay(b"Signal=a") == ("A", 250)
    assert parse_dtmf_relay(format_dtmf_relay("*", 80)) == ("*", 80)
    for bad in (
        b"",
        b"Signal=E",
        b"Signal=12",
        b"Duration=100",
        b"Signal=1\r\nDuration=-1",
        b"\xff",
    ):
        with pytest.raises(SIPParseError):
            parse_dtmf_relay(bad)
    for digit, duration in (("x", 100), ("1", 0), ("", 100), ("12", 100)):
        with pytest.raises(ValueError):
            format_dtmf_relay(digit, duration)


@given(st.binary(max_size=80))
def test_dtmf_relay_random_bytes_raise_only_our_error(data: bytes) -> None:
    try:
        digit, duration = parse_dtmf_relay(data)
    except SIPParseError:
        return
    assert parse_dtmf_relay(format_dtmf_relay(digit, max(duration, 1))) == (digit, max(duration, 1))
