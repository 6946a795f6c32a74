"""The user-agent core (RFC 3261 §8, §9.2, §13.3.1.4), sans-IO: default answers, responses
built per §8.2.6, 2xx retransmission, CANCEL, merged requests and the client side.

No sockets, no sleeps: the clock only jumps (``now = core.get_timer(); core.handle_timer(now)``)
and tags come from a seeded ``random.Random``. The RFC 4475 torture messages are the copies in
``tests/conformance/messages/rfc4475/`` (byte for byte from ``/work/shared/conformance/rfc4475/``,
see the ``SOURCE.md`` there); every one of them is fed to the core as a UDP datagram would be.
"""

from __future__ import annotations

import csv
import random
import re
from pathlib import Path

import pytest

from p2psip.endpoint.addresses import TransportAddress
from p2psip.endpoint.headers import parse_via, split_list
from p2psip.endpoint.message import Request, Response, parse_message
from p2psip.endpoint.transaction import ClientTransaction, ServerTransaction, build_cancel
from p2psip.endpoint.useragent import (
    AckReceived,
    AckTimedOut,
    ClientTransactionEnded,
    FinalResponseReceived,
    IncomingRequest,
    ProvisionalResponseReceived,
    RequestCancelled,
    StrayTwoXXReceived,
    UserAgentConfig,
    UserAgentCore,
    UserAgentEvent,
)
from p2psip.errors import SIPParseError
from p2psip.timers import TimerConfig
from tests.helpers import make_request, make_response

MESSAGES = Path(__file__).resolve().parent.parent / "conformance" / "messages" / "rfc4475"

#: where every request in these tests comes from (differs from every Via sent-by)
PEER = TransportAddress("udp", "192.0.2.99", 5099)
PEER_TCP = TransportAddress("tcp", "192.0.2.99", 50123)
LOCAL = TransportAddress("udp", "192.0.2.20", 5060)

Sent = list[tuple[Request | Response, TransportAddress]]


def _manifest() -> dict[str, dict[str, str]]:
    with open(MESSAGES / "MANIFEST.tsv", newline="", encoding="utf-8") as f:
        return {row["name"]: row for row in csv.DictReader(f, delimiter="\t")}


ROWS = _manifest()

APP = "app"  # the request reaches the application as IncomingRequest
DROP = "drop"  # nothing is sent, nothing reaches the application as a request

# What a UA with the default configuration (allow INVITE ACK BYE CANCEL OPTIONS MESSAGE; accept
# application/sdp, text/plain; no extensions) does with each archive message, as an ENDPOINT.
DEFAULT_UA: dict[str, int | str] = {
    # 3.1.1 valid
    "wsinv": APP,
    "intmeth": 501,  # unknown method: 501 with Allow
    "esc01": APP,
    "escnull": 405,  # REGISTER at a UA that is no registrar: 405 with Allow
    "esc02": 501,  # RE%47IST%45R is not REGISTER
    "lwsdisp": APP,
    "longreq": APP,
    "dblreq": 405,  # REGISTER (the trailing INVITE is noise)
    "semiuri": APP,
    "transports": APP,
    # MESSAGE with a multipart/mixed body (a text/plain part and a binary signature part). RFC
    # 4475 §3.1.1.11 asks the *parser* to accept it "even if the application above the parser
    # does not support multipart/signed"; above the parser RFC 3261 §8.2.3 applies: a UAS that
    # does not understand the body type MUST answer 415 with Accept. The default UA accepts only
    # application/sdp and text/plain, so 415; a UA that accepts multipart/mixed gets the request
    # with the body framed exactly (REGISTRAR_UA below, test_mpart01_...).
    "mpart01": 415,
    "unreason": DROP,  # a 200 response matching no transaction
    "noreason": DROP,  # a 100 response matching no transaction
    # 3.1.2 invalid
    "badinv01": 400,  # the Via itself is broken: answered to the source
    "clerr": 400,  # over UDP
    "ncl": 400,
    "scalar02": 400,
    "scalarlg": DROP,  # a response: discarded
    "quotbal": 400,
    "ltgtruri": 400,
    "lwsruri": 400,
    "lwsstart": 400,
    "trws": 400,
    "escruri": 400,
    # Manifest: invalid, but RFC 4475 §3.1.2.12 lets an element ignore a bad Date that does not
    # matter to its processing; the UA keeps Date as opaque text.
    "baddate": APP,
    "regbadct": 400,
    "badaspec": 400,
    "baddn": 400,
    "badvers": 505,
    "mismatch01": 400,
    "mismatch02": 501,  # NEWMETHOD with CSeq INVITE: 501 preferred (400 allowed)
    "bigcode": DROP,  # a response: discarded
    # 3.2 transaction layer: branch=z9hG4bK alone is accepted
    "badbranch": APP,
    # 3.3 application layer
    "insuf": 400,
    "unkscm": 416,
    "novelsc": 416,
    "unksm2": 405,  # REGISTER to a UA that is no registrar
    "bext01": 420,
    "invut": 415,
    "regaut01": 405,  # "a non-registrar endpoint may reply 405"
    "multi01": 400,
    "mcl01": 400,
    "bcast": DROP,  # a response with two Vias: discarded (RFC 3261 §8.1.3.3)
    "zeromf": APP,  # Max-Forwards 0 is fine at an endpoint
    "cparam01": 405,
    "cparam02": 405,
    "regescrt": 405,
    "sdp01": 406,  # Accept without application/sdp: 406 (or 400)
    # 3.4 backward compatibility
    "inv2543": APP,
    # Not in the RFC text: no SIP-Version, no Via (nothing to answer to)
    "test": DROP,
}

# A UA that also serves REGISTER and accepts multipart/mixed bodies: the registrar cases of
# RFC 4475 §3.3 ("REGISTER should succeed") reach the application, which plays the registrar
# (unksm2: a registrar answers 400 because To is not a SIP AOR; the core leaves that to it).
REGISTRAR_CONFIG = UserAgentConfig(
    allow=(*UserAgentConfig().allow, "REGISTER"),
    accept=(*UserAgentConfig().accept, "multipart/mixed"),
)
REGISTRAR_UA: dict[str, int | str] = {
    **DEFAULT_UA,
    **dict.fromkeys(
        ["escnull", "dblreq", "unksm2", "regaut01", "cparam01", "cparam02", "regescrt"], APP
    ),
    "mpart01": APP,
}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def load(name: str) -> bytes:
    return (MESSAGES / ROWS[name]["file"]).read_bytes()


def new_core(config: UserAgentConfig | None = None, seed: int = 4475) -> UserAgentCore:
    core = UserAgentCore(config, random.Random(seed))
    core.set_local_address(LOCAL)
    return core


def feed(core: UserAgentCore, data: bytes, source: TransportAddress, now: float) -> None:
    """What the transport does with a datagram: parse, then receive_message or, when the
    parser refuses it, receive_bad_message."""
    try:
        message = parse_message(data)
    except SIPParseError as error:
        core.receive_bad_message(data, error, source, now)
        return
    core.receive_message(message, source, now)


def events(core: UserAgentCore) -> list[UserAgentEvent]:
    out = []
    while (event := core.next_event()) is not None:
        out.append(event)
    return out


def only_response(sent: Sent) -> tuple[Response, TransportAddress]:
    assert len(sent) == 1, sent
    response, destination = sent[0]
    assert isinstance(response, Response)
    return response, destination


def run_timers(core: UserAgentCore, until: float) -> list[tuple[float, Sent]]:
    """Jump from deadline to deadline up to ``until``; (time, messages sent then) for each."""
    log = []
    while (now := core.get_timer()) is not None and now <= until:
        core.handle_timer(now)
        log.append((now, core.messages_to_send()))
    return log


def sends(log: list[tuple[float, Sent]]) -> list[float]:
    return [now for now, sent in log if sent]


def statuses(sent: Sent) -> list[int]:
    return [m.status if isinstance(m, Response) else 0 for m, _ in sent]


_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length"}


def raw_header(data: bytes, name: str) -> str | None:
    """The first value of a header in raw bytes (compact forms too), independent of the parser."""
    head = re.split(rb"\r?\n\r?\n", data, maxsplit=1)[0].decode("utf-8", "surrogateescape")
    head = re.sub(r"\r?\n[ \t]+", " ", head)
    for line in head.splitlines()[1:]:
        key, sep, value = line.partition(":")
        key = key.strip().lower()
        if sep and _COMPACT.get(key, key) == name.lower():
            return value.strip()
    return None


def check_answer(data: bytes, response: Response, destination: TransportAddress) -> None:
    """RFC 3261 §8.2.6.2 and §18.2.2 for an answer to the raw request ``data`` from PEER."""
    for name in ("From", "Call-ID", "CSeq"):
        assert response.headers.get(name) == raw_header(data, name), name
    raw_to = raw_header(data, "To")
    if raw_to is None:  # insuf: what is missing stays missing
        assert "To" not in response.headers
    else:
        assert (response.headers.get("To") or "").startswith(raw_to)
    # §18.2.1/§18.2.2: over UDP the answer goes to the source host (it is `received`), never to
    # a host named in the message; the port is the source's with rport, else the sent-by's.
    assert destination.transport == "udp"
    assert destination.host == PEER.host
    raw_via = raw_header(data, "Via")
    assert raw_via is not None
    try:
        request: Request | Response | None = parse_message(data)
    except SIPParseError:
        request = None  # answered from the raw bytes: the Via lines are copied as they are
        assert response.headers.get_lines("Via")[0] == raw_via
    else:
        assert response.headers.get_lines("Via")[1:] == request.headers.get_lines("Via")[1:]
        try:
            tagless = request.to.tag is None
        except SIPParseError:  # quotbal: the To cannot take a tag; copied as it is
            tagless = False
        if tagless and response.status > 100:
            assert response.to.tag is not None  # §8.2.6.2
    try:
        top = parse_via(split_list(raw_via)[0])
    except SIPParseError:
        assert destination == PEER  # unreadable Via: back to the source
        assert response.headers.get_lines("Via")[0] == raw_via
        return
    if "rport" in top.params:
        assert destination.port == PEER.port
    else:
        assert destination.port == (top.port or 5060)
    answered_top = response.top_via
    assert answered_top.branch == top.branch
    assert answered_top.sent_by == top.sent_by


# --------------------------------------------------------------------------------------------
# RFC 4475: every archive message, as an endpoint
# --------------------------------------------------------------------------------------------
def test_every_manifest_message_has_an_expected_answer() -> None:
    assert set(DEFAULT_UA) == set(ROWS)
    assert set(REGISTRAR_UA) == set(ROWS)


@pytest.mark.parametrize(
    ("config", "table"),
    [(None, DEFAULT_UA), (REGISTRAR_CONFIG, REGISTRAR_UA)],
    ids=["default-ua", "registrar-ua"],
)
@pytest.mark.parametrize("name", sorted(ROWS))
def test_rfc4475_message_gets_the_endpoint_answer(
    name: str, config: UserAgentConfig | None, table: dict[str, int | str]
) -> None:
    core = new_core(config)
    data = load(name)
    feed(core, data, PEER, 0.0)
    sent = core.messages_to_send()
    got = events(core)
    expected = table[name]
    if expected == APP:
        assert sent == []
        assert len(got) == 1, got
        event = got[0]
        assert isinstance(event, IncomingRequest)
        assert event.source == PEER
        assert event.transaction is not None
        assert event.request.method == raw_method(data)
    elif expected == DROP:
        assert sent == []
        # A stray 2xx to INVITE is the application's to re-ACK (RFC 3261 §13.2.2.4); no reply.
        assert [type(e) for e in got] == ([StrayTwoXXReceived] if name == "unreason" else [])
    else:
        assert got == []
        response, destination = only_response(sent)
        assert response.status == expected
        check_answer(data, response, destination)


def raw_method(data: bytes) -> str:
    return data.split(b" ", 1)[0].decode()


def answer_to(name: str, config: UserAgentConfig | None = None) -> Response:
    core = new_core(config)
    feed(core, load(name), PEER, 0.0)
    response, _ = only_response(core.messages_to_send())
    return response


@pytest.mark.parametrize("name", ["intmeth", "esc02", "mismatch02"])
def test_unknown_method_gets_501_with_allow(name: str) -> None:
    response = answer_to(name)
    assert response.status == 501
    assert response.reason == "Not Implemented"
    assert response.tokens("Allow") == [m.lower() for m in UserAgentConfig().allow]


@pytest.mark.parametrize("name", ["regaut01", "unksm2", "escnull", "cparam01"])
def test_register_at_a_non_registrar_gets_405_with_allow(name: str) -> None:
    response = answer_to(name)
    assert response.status == 405
    assert "register" not in response.tokens("Allow")
    assert response.tokens("Allow") == [m.lower() for m in UserAgentConfig().allow]


def test_bext01_gets_420_listing_the_require_tags() -> None:
    response = answer_to("bext01")
    assert response.status == 420
    # Option tags are tokens, compared case-insensitively (RFC 3261 §7.3.1); Proxy-Require is
    # a proxy's business, not listed by an endpoint.
    assert response.tokens("Unsupported") == ["nothingsupportsthis", "nothingsupportsthiseither"]


def test_bext01_is_delivered_when_the_extensions_are_supported() -> None:
    config = UserAgentConfig(supported=("nothingSupportsThis", "nothingSupportsThisEither"))
    core = new_core(config)
    feed(core, load("bext01"), PEER, 0.0)
    assert core.messages_to_send() == []
    assert [type(e) for e in events(core)] == [IncomingRequest]


def test_invut_gets_415_with_accept() -> None:
    response = answer_to("invut")
    assert response.status == 415
    assert sorted(response.tokens("Accept")) == ["application/sdp", "text/plain"]


def test_sdp01_gets_406_with_a_warning() -> None:
    response = answer_to("sdp01")
    assert response.status == 406
    assert (response.headers.get("Warning") or "").startswith("399 ")


@pytest.mark.parametrize("name", ["unkscm", "novelsc"])
def test_unknown_request_uri_scheme_gets_416(name: str) -> None:
    assert answer_to(name).status == 416


def test_badvers_gets_505() -> None:
    response = answer_to("badvers")
    assert response.status == 505
    assert response.headers.get("Call-ID") == "badvers.31417@c.example.com"


def test_mpart01_is_rejected_415_when_multipart_is_not_accepted() -> None:
    response = answer_to("mpart01")
    assert response.status == 415
    assert "multipart/mixed" not in response.tokens("Accept")


def test_mpart01_reaches_the_application_framed_by_content_length() -> None:
    core = new_core(REGISTRAR_CONFIG)
    feed(core, load("mpart01"), PEER, 0.0)
    (event,) = events(core)
    assert isinstance(event, IncomingRequest)
    body = event.request.body
    assert len(body) == 553
    assert b"\x00" in body
    assert body.endswith(b"--7a9cbec02ceef655--\r\n")


def test_zeromf_is_processed_as_if_max_forwards_were_positive() -> None:
    core = new_core()
    feed(core, load("zeromf"), PEER, 0.0)
    (event,) = events(core)
    assert isinstance(event, IncomingRequest)
    assert event.request.max_forwards == 0
    assert event.transaction is not None
    core.respond(event.transaction, 200, now=0.0)
    response, _ = only_response(core.messages_to_send())
    assert response.status == 200


def test_dblreq_delivers_the_register_and_ignores_the_trailing_octets() -> None:
    core = new_core(REGISTRAR_CONFIG)
    feed(core, load("dblreq"), PEER, 0.0)
    (event,) = events(core)
    assert isinstance(event, IncomingRequest)
    assert event.request.method == "REGISTER"
    assert event.request.body == b""
    assert core.messages_to_send() == []


def test_cparam01_unknownparam_is_a_contact_param_not_a_uri_param() -> None:
    core = new_core(REGISTRAR_CONFIG)
    feed(core, load("cparam01"), PEER, 0.0)
    (event,) = events(core)
    assert isinstance(event, IncomingRequest)
    (contact,) = event.request.contacts
    assert "unknownparam" in contact.params
    assert "unknownparam" not in contact.uri.params


def test_cparam02_unknownparam_is_a_uri_param() -> None:
    core = new_core(REGISTRAR_CONFIG)
    feed(core, load("cparam02"), PEER, 0.0)
    (event,) = events(core)
    assert isinstance(event, IncomingRequest)
    (contact,) = event.request.contacts
    assert "unknownparam" in contact.uri.params


def test_escnull_registers_two_distinct_contacts() -> None:
    core = new_core(REGISTRAR_CONFIG)
    feed(core, load("escnull"), PEER, 0.0)
    (event,) = events(core)
    assert isinstance(event, IncomingRequest)
    contacts = [str(c.uri) for c in event.request.contacts]
    assert len(contacts) == 2
    assert contacts[0] != contacts[1]


def test_inv2543_body_is_the_rest_of_the_datagram() -> None:
    core = new_core()
    data = load("inv2543")
    feed(core, data, PEER, 0.0)
    (event,) = events(core)
    assert isinstance(event, IncomingRequest)
    assert event.request.body == data.split(b"\r\n\r\n", 1)[1]
    assert event.request.from_.tag is None
    assert event.transaction is not None
    # No From tag: no merged-request check, and the answer still gets a To tag.
    core.respond(event.transaction, 486, now=0.0)
    response, destination = only_response(core.messages_to_send())
    assert response.to.tag is not None
    assert destination == TransportAddress("udp", PEER.host, 5060)


def test_badinv01_answer_goes_back_to_the_source() -> None:
    # The top Via is the defect: the answer cannot follow it, so it goes to the source address.
    core = new_core()
    feed(core, load("badinv01"), PEER, 0.0)
    response, destination = only_response(core.messages_to_send())
    assert response.status == 400
    assert destination == PEER
    assert response.headers.get_lines("Via") == ["SIP/2.0/UDP 192.0.2.15;;,;,,"]
    assert core.stats["bad"] == 1


def test_a_bad_ack_is_never_answered() -> None:
    ack = make_request("ACK", "z9hG4bK-ack")
    ack.headers.set("CSeq", "1 INVITE")  # CSeq method does not match: invalid
    core = new_core()
    core.receive_message(ack, PEER, 0.0)
    assert core.messages_to_send() == []
    assert events(core) == []


# --------------------------------------------------------------------------------------------
# Responses: RFC 3261 §8.2.6
# --------------------------------------------------------------------------------------------
def received_invite(
    core: UserAgentCore,
    *,
    branch: str = "z9hG4bK-inv-1",
    via: str = "SIP/2.0/UDP pc33.example.com:5070;rport",
    source: TransportAddress = PEER,
    now: float = 0.0,
    extra: tuple[tuple[str, str], ...] = (),
) -> ServerTransaction:
    invite = make_request(
        "INVITE",
        branch,
        via=via,
        extra=(("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bK-proxy"), *extra),
    )
    core.receive_message(parse_message(invite.to_bytes()), source, now)
    (event,) = events(core)
    assert isinstance(event, IncomingRequest)
    assert event.transaction is not None
    return event.transaction


def test_response_fields_follow_8_2_6() -> None:
    core = new_core()
    tx = received_invite(core, extra=(("Timestamp", "54.2"),))
    core.respond(tx, 486, now=0.0)
    response, destination = only_response(core.messages_to_send())
    request = tx.request
    # Via: every value copied in order, the top one with received and the filled rport.
    vias = response.vias
    assert [v.sent_by for v in vias] == [("pc33.example.com", 5070), ("proxy.example.com", None)]
    assert vias[0].branch == "z9hG4bK-inv-1"
    assert vias[0].received == PEER.host
    assert vias[0].rport == PEER.port
    assert destination == PEER  # RFC 3581: back to the source port
    assert response.headers.get("From") == request.headers.get("From")
    assert response.call_id == request.call_id
    assert response.headers.get("CSeq") == "1 INVITE"
    assert response.to.uri == request.to.uri
    assert response.to.tag is not None  # §8.2.6.2: a tag added above 100
    assert "Timestamp" not in response.headers  # only 100 Trying copies it (§8.2.6.1)


def test_without_rport_the_answer_goes_to_received_and_the_sent_by_port() -> None:
    core = new_core()
    tx = received_invite(core, via="SIP/2.0/UDP pc33.example.com:5070")
    core.respond(tx, 603, now=0.0)
    response, destination = only_response(core.messages_to_send())
    assert response.top_via.received == PEER.host
    assert response.top_via.rport is None
    assert destination == TransportAddress("udp", PEER.host, 5070)


def test_an_existing_to_tag_is_kept_and_provisional_and_final_share_a_given_tag() -> None:
    core = new_core()
    tx = received_invite(core)
    core.respond(tx, 180, to_tag="bob-tag", now=0.0)
    core.respond(tx, 486, to_tag="bob-tag", now=0.05)
    (ringing, _), (busy, _) = core.messages_to_send()
    assert ringing.to.tag == busy.to.tag == "bob-tag"


def test_100_trying_after_the_trying_delay() -> None:
    core = new_core(UserAgentConfig(trying_delay=0.2))
    tx = received_invite(core, now=10.0, extra=(("Timestamp", "54.2"),))
    assert core.messages_to_send() == []
    assert core.get_timer() == pytest.approx(10.2)
    log = run_timers(core, until=10.2)
    assert [t for t, _ in log] == [pytest.approx(10.2)]
    trying, destination = only_response(log[0][1])
    assert trying.status == 100
    assert trying.to.tag is None  # §8.2.6.1: no tag in 100
    assert trying.headers.get("Timestamp") == "54.2"
    assert trying.headers.get("Call-ID") == tx.request.call_id
    assert destination == PEER


def test_no_100_trying_when_the_application_answers_first() -> None:
    core = new_core(UserAgentConfig(trying_delay=0.2))
    tx = received_invite(core)
    core.respond(tx, 180, now=0.1)
    (ringing, _) = only_response(core.messages_to_send())
    assert ringing.status == 180
    later = [status for _, sent in run_timers(core, until=1.0) for status in statuses(sent)]
    assert 100 not in later


# --------------------------------------------------------------------------------------------
# 2xx to INVITE: retransmitted by the core until the ACK (RFC 3261 §13.3.1.4)
# --------------------------------------------------------------------------------------------
def ack_for(ok: Response, branch: str = "z9hG4bK-ack-1") -> Request:
    return make_request(
        "ACK",
        branch,
        via="SIP/2.0/UDP pc33.example.com:5070",
        to_tag=ok.to.tag,
        cseq=ok.cseq.seq,
    )


@pytest.mark.parametrize(
    ("timers", "expected"),
    [
        # T1 = 0.5, T2 = 4: 0.5, 1.5, 3.5, 7.5 then every 4 s; the last before 64*T1 = 32
        (TimerConfig(), [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]),
        # T1 = 0.25, T2 = 1: 64*T1 = 16
        (
            TimerConfig(t1=0.25, t2=1.0),
            [0.25, 0.75, 1.75, *[2.75 + i for i in range(14)]],
        ),
    ],
    ids=["t1=0.5,t2=4", "t1=0.25,t2=1"],
)
def test_2xx_is_retransmitted_doubling_from_t1_capped_at_t2_until_64_t1(
    timers: TimerConfig, expected: list[float]
) -> None:
    core = new_core(UserAgentConfig(timers=timers))
    tx = received_invite(core)
    ok = core.respond(tx, 200, body=b"v=0\r\n", now=0.0)
    first = only_response(core.messages_to_send())
    assert first == (ok, PEER)
    log = run_timers(core, until=1000.0)
    times = sends(log)
    assert times == pytest.approx(expected)
    assert all(t < 64 * timers.t1 for t in times)
    for _, sent in log:
        for message, destination in sent:
            assert message is ok  # the same response, again and again
            assert destination == PEER
    assert core.get_timer() is None  # gave up: nothing left to do
    # RFC 3261 §13.3.1.4: the application learns that no ACK came, so that it sends a BYE
    assert events(core) == [AckTimedOut(ok)]
    assert max(t for t, _ in log) == pytest.approx(64 * timers.t1)  # given up at 64*T1


def test_2xx_retransmission_stops_on_the_ack() -> None:
    core = new_core()
    tx = received_invite(core)
    ok = core.respond(tx, 200, now=0.0)
    core.messages_to_send()
    assert sends(run_timers(core, until=2.0)) == [0.5, 1.5]
    core.receive_message(parse_message(ack_for(ok).to_bytes()), PEER, 2.0)
    (event,) = events(core)
    assert isinstance(event, AckReceived)
    assert event.request.cseq.seq == ok.cseq.seq
    assert core.messages_to_send() == []
    assert sends(run_timers(core, until=1000.0)) == []


def test_2xx_is_not_retransmitted_over_tcp() -> None:
    core = new_core()
    tx = received_invite(core, via="SIP/2.0/TCP pc33.example.com:5070", source=PEER_TCP)
    ok = core.respond(tx, 200, now=0.0)
    assert only_response(core.messages_to_send()) == (ok, PEER_TCP)
    assert sends(run_timers(core, until=1000.0)) == []


def test_non_2xx_final_to_invite_is_retransmitted_by_the_transaction_not_the_core() -> None:
    core = new_core()
    tx = received_invite(core)
    core.respond(tx, 486, now=0.0)
    core.messages_to_send()
    # Timer G (RFC 3261 §17.2.1) until Timer H = 64*T1; the core adds nothing of its own.
    times = sends(run_timers(core, until=1000.0))
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]


# --------------------------------------------------------------------------------------------
# CANCEL (RFC 3261 §9.2)
# --------------------------------------------------------------------------------------------
def test_cancel_of_a_pending_invite() -> None:
    core = new_core(UserAgentConfig(trying_delay=0.2))
    tx = received_invite(core)
    run_timers(core, until=0.2)  # 100 Trying
    cancel = build_cancel(tx.request)
    core.receive_message(parse_message(cancel.to_bytes()), PEER, 1.0)
    (ok, to_cancel), (terminated, to_invite) = core.messages_to_send()
    assert isinstance(ok, Response) and isinstance(terminated, Response)
    assert (ok.status, ok.cseq.method) == (200, "CANCEL")
    assert (terminated.status, terminated.cseq.method) == (487, "INVITE")
    assert to_cancel == to_invite == PEER
    assert ok.to.tag is not None
    assert ok.to.tag == terminated.to.tag  # §9.2: SHOULD be the same
    (event,) = events(core)
    assert isinstance(event, RequestCancelled)
    assert event.transaction is tx
    # A late answer from the application is discarded by the transaction: nothing is sent
    # and nothing retransmitted.
    core.respond(tx, 200, now=1.5)
    assert core.messages_to_send() == []
    log = run_timers(core, until=100.0)
    assert {status for _, sent in log for status in statuses(sent)} == {487}  # Timer G


def test_cancel_keeps_the_to_tag_of_a_provisional_response() -> None:
    core = new_core()
    tx = received_invite(core)
    core.respond(tx, 180, to_tag="ringing-tag", now=0.0)
    core.messages_to_send()
    core.receive_message(parse_message(build_cancel(tx.request).to_bytes()), PEER, 1.0)
    sent = core.messages_to_send()
    assert statuses(sent) == [200, 487]
    assert [m.to.tag for m, _ in sent] == ["ringing-tag", "ringing-tag"]


def test_cancel_after_the_final_response_gets_200_only() -> None:
    core = new_core()
    tx = received_invite(core)
    core.respond(tx, 200, to_tag="answered", now=0.0)
    core.messages_to_send()
    core.receive_message(parse_message(build_cancel(tx.request).to_bytes()), PEER, 0.1)
    ok, _ = only_response(core.messages_to_send())
    assert (ok.status, ok.cseq.method, ok.to.tag) == (200, "CANCEL", "answered")
    assert events(core) == []


def test_cancel_matching_no_transaction_gets_481() -> None:
    core = new_core()
    cancel = make_request("CANCEL", "z9hG4bK-nothing")
    core.receive_message(parse_message(cancel.to_bytes()), PEER, 0.0)
    response, _ = only_response(core.messages_to_send())
    assert response.status == 481
    assert events(core) == []


# --------------------------------------------------------------------------------------------
# Other default answers
# --------------------------------------------------------------------------------------------
def test_merged_request_gets_482() -> None:
    # RFC 3261 §8.2.2.2: same From tag, Call-ID and CSeq as a transaction in progress, another
    # branch (the request forked and came back by another path), no To tag.
    core = new_core()
    first = make_request("OPTIONS", "z9hG4bK-path-a", via="SIP/2.0/UDP proxy-a.example.com")
    fork = make_request("OPTIONS", "z9hG4bK-path-b", via="SIP/2.0/UDP proxy-b.example.com")
    core.receive_message(first, PEER, 0.0)
    (event,) = events(core)
    assert isinstance(event, IncomingRequest)
    assert event.transaction is not None
    core.receive_message(fork, PEER, 0.1)
    response, _ = only_response(core.messages_to_send())
    assert response.status == 482
    assert response.top_via.branch == "z9hG4bK-path-b"
    assert events(core) == []
    # A retransmission of the first is absorbed by its transaction, not called a loop.
    core.receive_message(parse_message(first.to_bytes()), PEER, 0.2)
    assert core.messages_to_send() == []
    assert events(core) == []
    # Another CSeq, or a request inside a dialog (To tag), is not merged.
    core.receive_message(make_request("OPTIONS", "z9hG4bK-c", cseq=2), PEER, 0.3)
    core.receive_message(make_request("OPTIONS", "z9hG4bK-d", to_tag="dlg"), PEER, 0.3)
    assert [type(e) for e in events(core)] == [IncomingRequest, IncomingRequest]
    # Once the first transaction is over (Timer J), the same request is new again.
    core.respond(event.transaction, 200, now=1.0)
    core.messages_to_send()
    run_timers(core, until=1.0 + 64 * 0.5)
    core.receive_message(make_request("OPTIONS", "z9hG4bK-path-e"), PEER, 40.0)
    assert [type(e) for e in events(core)] == [IncomingRequest]


def test_merged_invite_gets_482_while_the_first_is_ringing() -> None:
    core = new_core()
    received_invite(core, branch="z9hG4bK-a", via="SIP/2.0/UDP proxy-a.example.com")
    fork = make_request("INVITE", "z9hG4bK-b", via="SIP/2.0/UDP proxy-b.example.com")
    core.receive_message(fork, PEER, 0.1)
    response, _ = only_response(core.messages_to_send())
    assert (response.status, response.cseq.method) == (482, "INVITE")


def test_request_for_an_unknown_dialog_gets_481() -> None:
    core = new_core()
    core.known_dialog = lambda request: False
    core.receive_message(make_request("BYE", "z9hG4bK-bye", to_tag="gone"), PEER, 0.0)
    response, _ = only_response(core.messages_to_send())
    assert response.status == 481
    assert response.to.tag == "gone"


def test_known_method_not_allowed_gets_405_and_unknown_gets_501() -> None:
    core = new_core(UserAgentConfig(allow=("INVITE", "ACK", "BYE", "CANCEL")))
    core.receive_message(make_request("OPTIONS", "z9hG4bK-1"), PEER, 0.0)
    core.receive_message(make_request("FROBNICATE", "z9hG4bK-2"), PEER, 0.0)
    sent = core.messages_to_send()
    assert statuses(sent) == [405, 501]
    assert [m.headers.get("Allow") for m, _ in sent] == ["INVITE, ACK, BYE, CANCEL"] * 2


# --------------------------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------------------------
SERVER = TransportAddress("udp", "192.0.2.30", 5060)


def sent_request(core: UserAgentCore, method: str = "OPTIONS") -> tuple[ClientTransaction, Request]:
    request = core.new_request(
        method, "sip:bob@example.com", "<sip:alice@example.com>", "<sip:bob@example.com>"
    )
    tx = core.send_request(request, SERVER, 0.0)
    ((message, destination),) = core.messages_to_send()
    assert isinstance(message, Request)
    assert destination == SERVER
    return tx, message


def test_request_fields_from_new_request_and_prepare_request() -> None:
    core = new_core()
    _, request = sent_request(core)
    assert request.from_.tag is not None
    assert request.to.tag is None
    assert request.cseq.method == "OPTIONS"
    assert request.max_forwards == 70
    via = request.top_via
    assert via.sent_by == (LOCAL.host, LOCAL.port)
    assert via.branch is not None and via.branch.startswith("z9hG4bK")
    assert "rport" in via.params
    # The seeded rng makes the trace repeatable.
    _, again = sent_request(new_core())
    assert again.to_bytes() == request.to_bytes()


def test_a_401_reaches_the_application_as_final_response() -> None:
    core = new_core()
    tx, request = sent_request(core)
    challenge = make_response(request, 401, to_tag="srv")
    challenge.headers.add("WWW-Authenticate", 'Digest realm="example.com", nonce="abc"')
    core.receive_message(parse_message(challenge.to_bytes()), SERVER, 0.1)
    (event,) = events(core)
    assert isinstance(event, FinalResponseReceived)
    assert event.transaction is tx
    assert event.response.status == 401
    assert event.response.headers.get("WWW-Authenticate") is not None


def test_invite_provisional_then_final_and_the_ack_of_the_transaction() -> None:
    core = new_core()
    tx, invite = sent_request(core, "INVITE")
    core.receive_message(
        parse_message(make_response(invite, 180, to_tag="b").to_bytes()), SERVER, 0.1
    )
    core.receive_message(
        parse_message(make_response(invite, 486, to_tag="b").to_bytes()), SERVER, 0.2
    )
    first, second = events(core)
    assert isinstance(first, ProvisionalResponseReceived)
    assert first.transaction is tx
    assert first.response.status == 180
    assert isinstance(second, FinalResponseReceived)
    assert second.response.status == 486
    ((ack, destination),) = core.messages_to_send()  # RFC 3261 §17.1.1.3
    assert isinstance(ack, Request)
    assert ack.method == "ACK"
    assert destination == SERVER


def test_a_response_with_a_bad_cseq_is_dropped() -> None:
    core = new_core()
    tx, request = sent_request(core)
    bad = make_response(request, 200, to_tag="srv")
    bad.headers.set("CSeq", "one OPTIONS")
    core.receive_message(parse_message(bad.to_bytes()), SERVER, 0.1)
    assert events(core) == []
    assert core.messages_to_send() == []
    assert core.stats["bad"] == 1
    # The transaction did not see it: it keeps retransmitting (Timer E) and takes the good one.
    assert sends(run_timers(core, until=0.5)) == [0.5]
    good = make_response(request, 200, to_tag="srv")
    core.receive_message(parse_message(good.to_bytes()), SERVER, 0.6)
    (event,) = events(core)
    assert isinstance(event, FinalResponseReceived)
    assert event.transaction is tx


def test_a_response_with_two_vias_is_dropped() -> None:
    core = new_core()
    _, request = sent_request(core)
    response = make_response(request, 200, to_tag="srv")
    response.headers.add("Via", "SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK-x")
    core.receive_message(parse_message(response.to_bytes()), SERVER, 0.1)
    assert events(core) == []
    assert core.stats["bad"] == 1


def test_timer_f_ends_the_transaction_with_408() -> None:
    core = new_core()
    tx, _ = sent_request(core)
    log = run_timers(core, until=1000.0)
    # Timer E (RFC 3261 §17.1.2.2): 0.5, 1.5, 3.5, 7.5 then every T2 = 4 s, until Timer F.
    assert sends(log) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    ended = [e for e in events(core) if isinstance(e, ClientTransactionEnded)]
    assert len(ended) == 1
    assert (ended[0].transaction, ended[0].reason, ended[0].status) == (tx, "timeout", 408)
    assert log[-1][0] == 32.0


def test_timer_b_ends_an_unanswered_invite_with_408() -> None:
    core = new_core()
    tx, _ = sent_request(core, "INVITE")
    run_timers(core, until=1000.0)
    (ended,) = [e for e in events(core) if isinstance(e, ClientTransactionEnded)]
    assert (ended.transaction, ended.reason, ended.status) == (tx, "timeout", 408)


def test_transport_failure_ends_the_transaction_with_503() -> None:
    core = new_core()
    tx, _ = sent_request(core)
    core.transactions.report_transport_error(SERVER, 0.1)
    (ended,) = [e for e in events(core) if isinstance(e, ClientTransactionEnded)]
    assert (ended.transaction, ended.reason, ended.status) == (tx, "transport", 503)


def test_a_stray_2xx_to_invite_is_reported_for_re_acking() -> None:
    core = new_core()
    core.receive_message(parse_message(load("unreason")), SERVER, 0.0)
    (event,) = events(core)
    assert isinstance(event, StrayTwoXXReceived)
    assert event.response.status == 200
    assert core.messages_to_send() == []
