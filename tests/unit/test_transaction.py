"""Transaction layer (RFC 3261 §17, RFC 6026): exact timer schedules, matching, outputs.

The clock only jumps: ``now = layer.get_timer(); layer.handle_timer(now)``.
``tests/conformance/messages/inv2543.dat`` is RFC 4475 §3.4.1, copied byte for byte from
``/work/shared/conformance/rfc4475/inv2543.dat`` (the RFC 4475 Appendix A archive).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

import pytest

from p2psip.endpoint.addresses import TransportAddress
from p2psip.endpoint.message import Request, Response, parse_message
from p2psip.endpoint.transaction import (
    MAGIC_COOKIE,
    CancelReceived,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    RequestReceived,
    ResponseReceived,
    StrayAckReceived,
    StrayResponseReceived,
    TransactionError,
    TransactionInput,
    TransactionLayer,
    TransactionState,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    build_ack,
    build_cancel,
    new_branch,
    response_destination,
)
from p2psip.timers import TimerConfig
from tests.helpers import (
    drain_events,
    make_request,
    make_response,
    received_transaction,
    run_timers_until_idle,
    send_times,
    transfer,
)

MESSAGES = Path(__file__).resolve().parent.parent / "conformance" / "messages"

UAC = TransportAddress("udp", "192.0.2.10", 5060)
UAS = TransportAddress("udp", "192.0.2.20", 5060)
UAC_TCP = TransportAddress("tcp", "192.0.2.10", 50123)
UAS_TCP = TransportAddress("tcp", "192.0.2.20", 5060)
TCP_VIA = "SIP/2.0/TCP 192.0.2.10:5060"

B1 = "z9hG4bK-branch-1"
B2 = "z9hG4bK-branch-2"

S = TransactionState


# --------------------------------------------------------------------------------------------
# Branches
# --------------------------------------------------------------------------------------------
def test_new_branch_is_repeatable_with_a_seeded_rng() -> None:
    a = [new_branch(random.Random(7)) for _ in range(2)]
    assert a[0] == a[1]
    assert a[0].startswith(MAGIC_COOKIE)
    assert len(a[0]) == len(MAGIC_COOKIE) + 16
    rng = random.Random(7)
    assert len({new_branch(rng) for _ in range(1000)}) == 1000


def test_layer_new_branch_uses_its_rng() -> None:
    assert TransactionLayer(rng=random.Random(3)).new_branch() == new_branch(random.Random(3))


# --------------------------------------------------------------------------------------------
# Client transactions: retransmissions and timeouts
# --------------------------------------------------------------------------------------------
def test_non_invite_client_retransmits_over_udp_until_timer_f() -> None:
    layer = TransactionLayer()
    request = make_request("OPTIONS", B1)
    tx = layer.send_request(request, UAS, 0.0)
    assert isinstance(tx, NonInviteClientTransaction)
    assert tx.state is S.TRYING
    assert layer.messages_to_send() == [(request, UAS)]
    log = run_timers_until_idle(layer)
    # RFC 3261 §17.1.2.2: T1 doubling, capped at T2; Timer F at 64*T1.
    assert send_times(log) == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(sent == [(request, UAS)] for _, sent in log if sent)
    assert log[-1] == (32.0, [])
    assert drain_events(layer) == [TransactionTimedOut(tx, "F"), TransactionTerminated(tx)]
    assert tx.state is S.TERMINATED
    assert len(layer) == 0


def test_invite_client_retransmits_over_udp_until_timer_b() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", B1)
    tx = layer.send_request(invite, UAS, 0.0)
    assert isinstance(tx, InviteClientTransaction)
    assert tx.state is S.CALLING
    assert layer.messages_to_send() == [(invite, UAS)]
    log = run_timers_until_idle(layer)
    # RFC 3261 §17.1.1.2: Timer A doubles without cap; Timer B at 64*T1.
    assert send_times(log) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert log[-1] == (32.0, [])
    assert drain_events(layer) == [TransactionTimedOut(tx, "B"), TransactionTerminated(tx)]
    assert len(layer) == 0


@pytest.mark.parametrize(("method", "timer"), [("INVITE", "B"), ("OPTIONS", "F")])
def test_client_over_tcp_never_retransmits(method: str, timer: Literal["B", "F"]) -> None:
    layer = TransactionLayer()
    request = make_request(method, B1, via=TCP_VIA)
    tx = layer.send_request(request, UAS_TCP, 0.0)
    assert layer.messages_to_send() == [(request, UAS_TCP)]
    log = run_timers_until_idle(layer)
    assert log == [(32.0, [])]
    assert drain_events(layer) == [TransactionTimedOut(tx, timer), TransactionTerminated(tx)]


def test_timers_follow_the_configured_t1() -> None:
    layer = TransactionLayer(TimerConfig(t1=0.25, t2=1.0))
    layer.send_request(make_request("OPTIONS", B1), UAS, 0.0)
    log = run_timers_until_idle(layer)
    assert send_times(log)[:5] == [0.25, 0.75, 1.75, 2.75, 3.75]
    assert log[-1][0] == 16.0


def test_provisional_switches_timer_e_to_t2() -> None:
    layer = TransactionLayer()
    request = make_request("OPTIONS", B1)
    tx = layer.send_request(request, UAS, 0.0)
    layer.messages_to_send()
    assert layer.get_timer() == 0.5
    layer.handle_timer(0.5)
    ringing = make_response(request, 180, to_tag="bob")
    layer.receive_response(ringing, UAS, 1.0)
    assert tx.state is S.PROCEEDING
    assert drain_events(layer) == [ResponseReceived(tx, ringing)]
    log = run_timers_until_idle(layer)
    # RFC 3261 §17.1.2.2: the pending E fires at 1.5, then every T2; F still at 32.
    assert send_times(log) == [1.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5]
    assert log[-1] == (32.0, [])
    assert drain_events(layer) == [TransactionTimedOut(tx, "F"), TransactionTerminated(tx)]


def test_non_invite_final_response_then_timer_k() -> None:
    layer = TransactionLayer()
    request = make_request("OPTIONS", B1)
    tx = layer.send_request(request, UAS, 0.0)
    layer.messages_to_send()
    ok = make_response(request, 200, to_tag="bob")
    layer.receive_response(ok, UAS, 1.0)
    assert tx.state is S.COMPLETED
    assert tx.last_response is ok
    # Retransmissions of the final response are absorbed.
    layer.receive_response(make_response(request, 200, to_tag="bob"), UAS, 2.0)
    layer.receive_response(make_response(request, 180), UAS, 2.0)
    assert drain_events(layer) == [ResponseReceived(tx, ok)]
    # RFC 3261 §17.1.2.2: Timer K = T4; E and F are gone.
    assert run_timers_until_idle(layer) == [(6.0, [])]
    assert drain_events(layer) == [TransactionTerminated(tx)]


def test_non_invite_final_response_over_tcp_terminates_at_once() -> None:
    layer = TransactionLayer()
    request = make_request("OPTIONS", B1, via=TCP_VIA)
    tx = layer.send_request(request, UAS_TCP, 0.0)
    ok = make_response(request, 200, to_tag="bob")
    layer.receive_response(ok, UAS_TCP, 0.1)
    assert drain_events(layer) == [ResponseReceived(tx, ok), TransactionTerminated(tx)]
    assert len(layer) == 0
    assert layer.get_timer() is None


def test_invite_provisional_stops_retransmissions_and_timer_b() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", B1)
    tx = layer.send_request(invite, UAS, 0.0)
    layer.handle_timer(layer.get_timer() or 0.0)
    trying = make_response(invite, 100)
    layer.receive_response(trying, UAS, 1.0)
    assert tx.state is S.PROCEEDING
    # RFC 3261 §17.1.1.2: no retransmission, and Timer B only runs in Calling.
    assert layer.get_timer() is None
    ringing = make_response(invite, 180, to_tag="bob")
    layer.receive_response(ringing, UAS, 2.0)
    assert drain_events(layer) == [
        ResponseReceived(tx, trying),
        ResponseReceived(tx, ringing),
    ]


def test_invite_2xx_enters_accepted_and_passes_up_retransmissions() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", B1)
    tx = layer.send_request(invite, UAS, 0.0)
    layer.messages_to_send()
    ok = make_response(invite, 200, to_tag="bob")
    layer.receive_response(ok, UAS, 1.0)
    assert tx.state is S.ACCEPTED
    assert layer.messages_to_send() == []  # the ACK for 2xx is the TU's
    again = make_response(invite, 200, to_tag="bob")
    fork = make_response(invite, 200, to_tag="carol")
    layer.receive_response(again, UAS, 1.5)
    layer.receive_response(fork, UAS, 1.6)
    layer.receive_response(make_response(invite, 180, to_tag="dave"), UAS, 1.7)  # ignored
    layer.receive_response(make_response(invite, 486, to_tag="erin"), UAS, 1.8)  # ignored
    assert drain_events(layer) == [
        ResponseReceived(tx, ok, retransmission=False),
        ResponseReceived(tx, again, retransmission=True),
        ResponseReceived(tx, fork, retransmission=False),
    ]
    # RFC 6026 §8.4: Timer M = 64*T1 after entering Accepted.
    assert run_timers_until_idle(layer) == [(33.0, [])]
    assert drain_events(layer) == [TransactionTerminated(tx)]
    late = make_response(invite, 200, to_tag="bob")
    layer.receive_response(late, UAS, 40.0)
    assert drain_events(layer) == [StrayResponseReceived(late, UAS)]


def test_invite_non_2xx_generates_ack_and_resends_it() -> None:
    layer = TransactionLayer()
    invite = make_request(
        "INVITE",
        B1,
        cseq=314,
        extra=(("Route", "<sip:p1.example.com;lr>"), ("Route", "<sip:p2.example.com;lr>")),
    )
    tx = layer.send_request(invite, UAS, 0.0)
    layer.messages_to_send()
    busy = make_response(invite, 486, to_tag="bob")
    layer.receive_response(busy, UAS, 1.0)
    assert tx.state is S.COMPLETED
    assert drain_events(layer) == [ResponseReceived(tx, busy)]
    [(ack, destination)] = layer.messages_to_send()
    assert destination == UAS
    assert isinstance(ack, Request)
    assert isinstance(tx, InviteClientTransaction)
    assert tx.ack is ack
    # RFC 3261 §17.1.1.3
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.call_id == invite.call_id
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.from_.tag == "alice-tag"
    assert ack.to.tag == "bob"
    assert (ack.cseq.seq, ack.cseq.method) == (314, "ACK")
    assert ack.headers.get_all("Via") == [f"SIP/2.0/UDP 192.0.2.10:5060;branch={B1}"]
    assert ack.headers.get_all("Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert ack.max_forwards == 70
    reparsed = parse_message(ack.to_bytes())
    assert isinstance(reparsed, Request)
    reparsed.check()
    # Each retransmitted final response gets the same ACK, and is not passed up.
    for t in (1.5, 2.5):
        layer.receive_response(make_response(invite, 486, to_tag="bob"), UAS, t)
        assert layer.messages_to_send() == [(ack, UAS)]
    assert drain_events(layer) == []
    # Timer D: 32 s over UDP.
    assert run_timers_until_idle(layer) == [(33.0, [])]
    assert drain_events(layer) == [TransactionTerminated(tx)]


def test_invite_non_2xx_over_tcp_acks_and_terminates() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", B1, via=TCP_VIA)
    tx = layer.send_request(invite, UAS_TCP, 0.0)
    layer.messages_to_send()
    busy = make_response(invite, 603, to_tag="bob")
    layer.receive_response(busy, UAS_TCP, 1.0)
    [(ack, destination)] = layer.messages_to_send()
    assert isinstance(ack, Request)
    assert (ack.method, destination) == ("ACK", UAS_TCP)
    assert drain_events(layer) == [ResponseReceived(tx, busy), TransactionTerminated(tx)]
    assert layer.get_timer() is None


def test_build_cancel_copies_the_request_identity() -> None:
    invite = make_request("INVITE", B1, cseq=7, extra=(("Route", "<sip:p1.example.com;lr>"),))
    cancel = build_cancel(invite)
    assert cancel.method == "CANCEL"
    assert cancel.uri == invite.uri
    assert cancel.top_via.branch == B1
    assert len(cancel.vias) == 1
    assert (cancel.cseq.seq, cancel.cseq.method) == (7, "CANCEL")
    for name in ("From", "To", "Call-ID", "Route"):
        assert cancel.headers.get(name) == invite.headers.get(name)
    cancel.check()


def test_cancel_is_a_client_transaction_of_its_own() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", B1)
    invite_tx = layer.send_request(invite, UAS, 0.0)
    cancel = build_cancel(invite)
    cancel_tx = layer.send_request(cancel, UAS, 1.0)
    assert cancel_tx is not invite_tx
    assert cancel_tx.key == (B1, "CANCEL")
    ok = make_response(cancel, 200, to_tag="bob")
    terminated = make_response(invite, 487, to_tag="bob")
    layer.receive_response(ok, UAS, 1.1)
    layer.receive_response(terminated, UAS, 1.2)
    events = drain_events(layer)
    assert events[:2] == [ResponseReceived(cancel_tx, ok), ResponseReceived(invite_tx, terminated)]


# --------------------------------------------------------------------------------------------
# Server transactions
# --------------------------------------------------------------------------------------------
def test_invite_server_sends_100_trying_after_200_ms() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", B1, extra=(("Timestamp", "54.3"),))
    layer.receive_request(invite, UAC, 0.0)
    [event] = drain_events(layer)
    assert isinstance(event, RequestReceived)
    tx = event.transaction
    assert isinstance(tx, InviteServerTransaction)
    assert event.request is invite
    assert tx.state is S.PROCEEDING
    assert layer.messages_to_send() == []
    assert layer.get_timer() == 0.2
    layer.handle_timer(0.2)
    [(trying, destination)] = layer.messages_to_send()
    assert destination == UAC
    assert isinstance(trying, Response)
    assert trying.status == 100
    # RFC 3261 §8.2.6.1
    for name in ("Via", "From", "To", "Call-ID", "CSeq", "Timestamp"):
        assert trying.headers.get(name) == invite.headers.get(name)
    assert trying.to.tag is None
    assert tx.last_response is trying
    assert layer.get_timer() is None


def test_invite_server_trying_delay_zero_sends_at_once() -> None:
    layer = TransactionLayer(trying_delay=0)
    layer.receive_request(make_request("INVITE", B1), UAC, 0.0)
    [(trying, _)] = layer.messages_to_send()
    assert isinstance(trying, Response)
    assert trying.status == 100


def test_invite_server_trying_delay_none_never_sends() -> None:
    layer = TransactionLayer(trying_delay=None)
    layer.receive_request(make_request("INVITE", B1), UAC, 0.0)
    assert layer.messages_to_send() == []
    assert layer.get_timer() is None


def test_no_100_trying_when_the_tu_answers_first() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", B1)
    layer.receive_request(invite, UAC, 0.0)
    tx = received_transaction(layer)
    ringing = make_response(invite, 180, to_tag="bob")
    assert layer.send_response(tx, ringing, 0.1)
    assert layer.messages_to_send() == [(ringing, UAC)]
    assert layer.get_timer() is None


def test_invite_server_absorbs_retransmissions_and_resends_last_provisional() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", B1)
    layer.receive_request(invite, UAC, 0.0)
    tx = received_transaction(layer)
    # Before any provisional response there is nothing to resend.
    layer.receive_request(make_request("INVITE", B1), UAC, 0.1)
    assert layer.messages_to_send() == []
    ringing = make_response(invite, 180, to_tag="bob")
    layer.send_response(tx, ringing, 0.15)
    layer.messages_to_send()
    layer.receive_request(make_request("INVITE", B1), UAC, 0.5)
    assert layer.messages_to_send() == [(ringing, UAC)]
    assert drain_events(layer) == []
    assert len(layer) == 1


def test_invite_server_non_2xx_retransmits_with_timer_g_until_timer_h() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", B1)
    layer.receive_request(invite, UAC, 0.0)
    tx = received_transaction(layer)
    busy = make_response(invite, 486, to_tag="bob")
    assert layer.send_response(tx, busy, 1.0)
    assert tx.state is S.COMPLETED
    assert layer.messages_to_send() == [(busy, UAC)]
    log = run_timers_until_idle(layer)
    # RFC 3261 §17.2.1: Timer G from T1 doubling to T2; Timer H at 64*T1.
    assert send_times(log) == [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    assert all(sent == [(busy, UAC)] for _, sent in log if sent)
    assert log[-1] == (33.0, [])
    assert drain_events(layer) == [TransactionTimedOut(tx, "H"), TransactionTerminated(tx)]


def test_invite_server_resends_final_on_retransmitted_invite() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", B1)
    layer.receive_request(invite, UAC, 0.0)
    tx = received_transaction(layer)
    busy = make_response(invite, 486, to_tag="bob")
    layer.send_response(tx, busy, 0.1)
    layer.messages_to_send()
    layer.receive_request(make_request("INVITE", B1), UAC, 0.3)
    assert layer.messages_to_send() == [(busy, UAC)]
    # A second final response from the TU is discarded.
    assert not layer.send_response(tx, make_response(invite, 500, to_tag="bob"), 0.4)
    assert layer.messages_to_send() == []


def test_invite_server_ack_confirms_then_timer_i() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", B1)
    layer.receive_request(invite, UAC, 0.0)
    tx = received_transaction(layer)
    busy = make_response(invite, 486, to_tag="bob")
    layer.send_response(tx, busy, 1.0)
    layer.handle_timer(layer.get_timer() or 0.0)  # one retransmission at 1.5
    layer.messages_to_send()
    ack = build_ack(make_request("INVITE", B1), busy)
    layer.receive_request(ack, UAC, 2.0)
    assert tx.state is S.CONFIRMED
    layer.receive_request(build_ack(make_request("INVITE", B1), busy), UAC, 2.5)  # absorbed
    layer.receive_request(make_request("INVITE", B1), UAC, 2.6)  # absorbed
    assert layer.messages_to_send() == []
    assert drain_events(layer) == []
    # Timer I = T4; G and H are cancelled.
    assert run_timers_until_idle(layer) == [(7.0, [])]
    assert drain_events(layer) == [TransactionTerminated(tx)]


def test_invite_server_over_tcp_no_timer_g_and_ack_terminates() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", B1, via=TCP_VIA)
    layer.receive_request(invite, UAC_TCP, 0.0)
    tx = received_transaction(layer)
    assert tx.response_destination == UAC_TCP
    busy = make_response(invite, 486, to_tag="bob")
    layer.send_response(tx, busy, 0.1)
    assert layer.messages_to_send() == [(busy, UAC_TCP)]
    assert layer.get_timer() == pytest.approx(32.1)  # Timer H only
    layer.receive_request(build_ack(make_request("INVITE", B1, via=TCP_VIA), busy), UAC_TCP, 0.2)
    assert drain_events(layer) == [TransactionTerminated(tx)]  # Timer I = 0
    assert layer.get_timer() is None


def test_invite_server_over_tcp_timer_h() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", B1, via=TCP_VIA)
    layer.receive_request(invite, UAC_TCP, 0.0)
    tx = received_transaction(layer)
    layer.send_response(tx, make_response(invite, 486, to_tag="bob"), 0.0)
    layer.messages_to_send()
    assert run_timers_until_idle(layer) == [(32.0, [])]
    assert drain_events(layer) == [TransactionTimedOut(tx, "H"), TransactionTerminated(tx)]


def test_invite_server_2xx_enters_accepted_until_timer_l() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", B1)
    layer.receive_request(invite, UAC, 0.0)
    tx = received_transaction(layer)
    ok = make_response(invite, 200, to_tag="bob")
    assert layer.send_response(tx, ok, 1.0)
    assert tx.state is S.ACCEPTED
    assert layer.messages_to_send() == [(ok, UAC)]
    # RFC 6026 §7.1: retransmitted INVITEs are absorbed (the core retransmits the 2xx).
    layer.receive_request(make_request("INVITE", B1), UAC, 1.5)
    assert layer.messages_to_send() == []
    assert layer.send_response(tx, ok, 1.5)  # the UAS core's retransmission
    assert layer.messages_to_send() == [(ok, UAC)]
    assert not layer.send_response(tx, make_response(invite, 486, to_tag="bob"), 1.6)
    # The ACK for a 2xx has a new branch: it matches nothing (§17.2.3).
    ack = build_ack(make_request("INVITE", B2), ok)
    layer.receive_request(ack, UAC, 2.0)
    assert drain_events(layer) == [StrayAckReceived(ack, UAC)]
    # An ACK that does match goes to the TU all the same (RFC 6026 §7.1).
    same_branch_ack = build_ack(make_request("INVITE", B1), ok)
    layer.receive_request(same_branch_ack, UAC, 2.1)
    assert drain_events(layer) == [StrayAckReceived(same_branch_ack, UAC)]
    assert tx.state is S.ACCEPTED
    assert run_timers_until_idle(layer) == [(33.0, [])]  # Timer L = 64*T1
    assert drain_events(layer) == [TransactionTerminated(tx)]
    # After Timer L the core may still send its 2xx; other responses are discarded.
    assert layer.send_response(tx, ok, 34.0)
    assert layer.messages_to_send() == [(ok, UAC)]
    assert not layer.send_response(tx, make_response(invite, 486), 34.0)


def test_non_invite_server_absorbs_then_resends_final_until_timer_j() -> None:
    layer = TransactionLayer()
    request = make_request("OPTIONS", B1)
    layer.receive_request(request, UAC, 0.0)
    tx = received_transaction(layer)
    assert isinstance(tx, NonInviteServerTransaction)
    assert tx.state is S.TRYING
    assert layer.get_timer() is None  # no automatic 100 for non-INVITE
    layer.receive_request(make_request("OPTIONS", B1), UAC, 0.5)  # Trying: discarded
    assert layer.messages_to_send() == []
    ok = make_response(request, 200, to_tag="bob")
    assert layer.send_response(tx, ok, 1.0)
    assert tx.state is S.COMPLETED
    assert layer.messages_to_send() == [(ok, UAC)]
    layer.receive_request(make_request("OPTIONS", B1), UAC, 1.5)
    assert layer.messages_to_send() == [(ok, UAC)]
    assert not layer.send_response(tx, make_response(request, 500), 1.6)
    assert drain_events(layer) == []
    assert run_timers_until_idle(layer) == [(33.0, [])]  # Timer J = 64*T1
    assert drain_events(layer) == [TransactionTerminated(tx)]


def test_non_invite_server_provisional_is_resent() -> None:
    layer = TransactionLayer()
    request = make_request("SUBSCRIBE", B1)
    layer.receive_request(request, UAC, 0.0)
    tx = received_transaction(layer)
    trying = make_response(request, 100)
    layer.send_response(tx, trying, 0.1)
    assert tx.state is S.PROCEEDING
    layer.messages_to_send()
    layer.receive_request(make_request("SUBSCRIBE", B1), UAC, 0.5)
    assert layer.messages_to_send() == [(trying, UAC)]


def test_non_invite_server_over_tcp_timer_j_is_zero() -> None:
    layer = TransactionLayer()
    request = make_request("OPTIONS", B1, via=TCP_VIA)
    layer.receive_request(request, UAC_TCP, 0.0)
    tx = received_transaction(layer)
    layer.send_response(tx, make_response(request, 200, to_tag="bob"), 0.1)
    assert drain_events(layer) == [TransactionTerminated(tx)]
    assert len(layer) == 0


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------
def test_server_matching_uses_branch_sent_by_and_method() -> None:
    layer = TransactionLayer()
    layer.receive_request(make_request("OPTIONS", B1), UAC, 0.0)
    # Same branch, other sent-by / other method / other branch: new transactions.
    layer.receive_request(make_request("OPTIONS", B1, via="SIP/2.0/UDP 192.0.2.11:5060"), UAC, 0)
    layer.receive_request(make_request("INFO", B1), UAC, 0.0)
    layer.receive_request(make_request("OPTIONS", B2), UAC, 0.0)
    events = drain_events(layer)
    assert [type(e) for e in events] == [RequestReceived] * 4
    assert len({e.transaction for e in events if isinstance(e, RequestReceived)}) == 4
    # An exact retransmission matches.
    layer.receive_request(make_request("OPTIONS", B1), UAC, 0.1)
    assert drain_events(layer) == []
    assert len(layer) == 4


def test_client_matching_uses_branch_and_cseq_method() -> None:
    layer = TransactionLayer()
    request = make_request("OPTIONS", B1)
    tx = layer.send_request(request, UAS, 0.0)
    wrong_method = make_response(make_request("INFO", B1), 200)
    wrong_branch = make_response(make_request("OPTIONS", B2), 200)
    layer.receive_response(wrong_method, UAS, 0.1)
    layer.receive_response(wrong_branch, UAS, 0.1)
    assert drain_events(layer) == [
        StrayResponseReceived(wrong_method, UAS),
        StrayResponseReceived(wrong_branch, UAS),
    ]
    assert tx.state is S.TRYING


def test_response_matching_nothing_is_stray() -> None:
    layer = TransactionLayer()
    response = make_response(make_request("INVITE", B1), 200, to_tag="bob")
    layer.receive_response(response, UAS, 0.0)
    assert drain_events(layer) == [StrayResponseReceived(response, UAS)]


def test_malformed_messages_are_dropped_not_raised() -> None:
    layer = TransactionLayer()
    layer.receive_response(Response(200, headers=[("CSeq", "1 OPTIONS")]), UAS, 0.0)
    layer.receive_request(Request("OPTIONS", "sip:bob@example.com", [("CSeq", "1 X")]), UAC, 0)
    assert layer.dropped == 2
    assert drain_events(layer) == []


def test_cancel_matches_the_invite_server_transaction() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", B1)
    layer.receive_request(invite, UAC, 0.0)
    invite_tx = received_transaction(layer)
    ringing = make_response(invite, 180, to_tag="bob")
    layer.send_response(invite_tx, ringing, 0.1)
    layer.messages_to_send()
    cancel = build_cancel(make_request("INVITE", B1))
    layer.receive_request(cancel, UAC, 1.0)
    [event] = drain_events(layer)
    assert isinstance(event, CancelReceived)
    assert event.transaction is invite_tx
    assert event.cancel_request is cancel
    cancel_tx = event.cancel_transaction
    assert isinstance(cancel_tx, NonInviteServerTransaction)
    assert cancel_tx.request is cancel
    # RFC 3261 §9.2: 200 to the CANCEL, 487 to the INVITE.
    ok = make_response(cancel, 200, to_tag="bob")
    terminated = make_response(invite, 487, to_tag="bob")
    layer.send_response(cancel_tx, ok, 1.0)
    layer.send_response(invite_tx, terminated, 1.0)
    assert layer.messages_to_send() == [(ok, UAC), (terminated, UAC)]
    # A retransmitted CANCEL gets the 200 again and no new event.
    layer.receive_request(build_cancel(make_request("INVITE", B1)), UAC, 1.2)
    assert layer.messages_to_send() == [(ok, UAC)]
    assert drain_events(layer) == []
    layer.receive_request(build_ack(make_request("INVITE", B1), terminated), UAC, 1.3)
    assert invite_tx.state is S.CONFIRMED


def test_cancel_matching_nothing_is_a_plain_request() -> None:
    layer = TransactionLayer()
    cancel = build_cancel(make_request("INVITE", B1))
    layer.receive_request(cancel, UAC, 0.0)
    [event] = drain_events(layer)
    assert isinstance(event, RequestReceived)
    assert event.request is cancel  # the UA answers 481 (RFC 3261 §9.2)


def _inv2543_bytes() -> bytes:
    return (MESSAGES / "inv2543.dat").read_bytes()


def _inv2543(data: bytes | None = None) -> Request:
    message = parse_message(_inv2543_bytes() if data is None else data)
    assert isinstance(message, Request)
    return message


def test_rfc2543_invite_matching_by_fallback_rule() -> None:
    layer = TransactionLayer()
    source = TransportAddress("udp", "192.0.2.30", 5070)
    invite = _inv2543()
    assert invite.top_via.branch is None
    layer.receive_request(invite, source, 0.0)
    tx = received_transaction(layer)
    assert isinstance(tx, InviteServerTransaction)
    # The sent-by host is a name: received is added and responses go to the source
    # address, at the sent-by (default) port (RFC 3261 §18.2.1, §18.2.2).
    assert tx.request.top_via.received == "192.0.2.30"
    assert tx.response_destination == TransportAddress("udp", "192.0.2.30", 5060)
    layer.handle_timer(0.2)
    [(trying, _)] = layer.messages_to_send()
    # A retransmission of the same bytes matches (Request-URI, tags, Call-ID, CSeq, Via).
    layer.receive_request(_inv2543(), source, 0.5)
    assert layer.messages_to_send() == [(trying, tx.response_destination)]
    assert drain_events(layer) == []
    # Another CSeq is another transaction.
    other = _inv2543_bytes().replace(b"CSeq: 56 INVITE", b"CSeq: 57 INVITE")
    layer.receive_request(_inv2543(other), source, 0.6)
    [second] = drain_events(layer)
    assert isinstance(second, RequestReceived)
    assert second.transaction is not tx


def test_rfc2543_ack_matches_by_to_tag_of_the_response() -> None:
    layer = TransactionLayer()
    source = TransportAddress("udp", "192.0.2.30", 5060)
    layer.receive_request(_inv2543(), source, 0.0)
    tx = received_transaction(layer)
    busy = make_response(tx.request, 486, to_tag="uas-tag")
    layer.send_response(tx, busy, 0.1)
    layer.messages_to_send()
    # An ACK with another To tag does not match.
    wrong = build_ack(_inv2543(), make_response(tx.request, 486, to_tag="x"))
    layer.receive_request(wrong, source, 0.2)
    assert drain_events(layer) == [StrayAckReceived(wrong, source)]
    assert tx.state is S.COMPLETED
    ack = build_ack(_inv2543(), busy)
    assert ack.top_via.branch is None
    layer.receive_request(ack, source, 0.3)
    assert tx.state is S.CONFIRMED
    assert drain_events(layer) == []


def test_rfc2543_cancel_matches_the_invite() -> None:
    layer = TransactionLayer()
    source = TransportAddress("udp", "192.0.2.30", 5060)
    layer.receive_request(_inv2543(), source, 0.0)
    tx = received_transaction(layer)
    cancel = build_cancel(_inv2543())
    layer.receive_request(cancel, source, 0.1)
    [event] = drain_events(layer)
    assert isinstance(event, CancelReceived)
    assert event.transaction is tx


# --------------------------------------------------------------------------------------------
# Response destination (RFC 3261 §18.2.2, RFC 3581 §4)
# --------------------------------------------------------------------------------------------
def _destination_for(via: str, source: TransportAddress) -> tuple[TransportAddress, Request]:
    layer = TransactionLayer(trying_delay=0)
    layer.receive_request(make_request("INVITE", B1, via=via), source, 0.0)
    tx = received_transaction(layer)
    [(trying, destination)] = layer.messages_to_send()
    assert destination == tx.response_destination
    assert trying.headers.get("Via") == tx.request.headers.get("Via")
    return destination, tx.request


def test_response_goes_to_received_and_rport() -> None:
    nat = TransportAddress("udp", "203.0.113.5", 40000)
    destination, request = _destination_for("SIP/2.0/UDP 10.0.0.1:5060;rport", nat)
    assert destination == nat
    assert request.top_via.params["rport"] == "40000"
    assert request.top_via.received == "203.0.113.5"


def test_client_written_received_and_rport_are_replaced_by_the_packet_source() -> None:
    # RFC 3261 §18.2.1 / RFC 3581 §4: the server writes what the packet says; a client
    # must not steer answers to another host.
    source = TransportAddress("udp", "203.0.113.5", 40000)
    via = "SIP/2.0/UDP 10.0.0.1:5060;received=198.51.100.1;rport=41000"
    destination, request = _destination_for(via, source)
    assert destination == source
    assert request.top_via.received == "203.0.113.5"


def test_client_written_received_without_rport_is_replaced() -> None:
    source = TransportAddress("udp", "203.0.113.5", 40000)
    destination, _ = _destination_for("SIP/2.0/UDP 10.0.0.1:5070;received=198.51.100.1", source)
    assert destination == TransportAddress("udp", "203.0.113.5", 5070)


def test_response_without_rport_goes_to_the_sent_by_port() -> None:
    source = TransportAddress("udp", "203.0.113.5", 40000)
    destination, request = _destination_for("SIP/2.0/UDP 10.0.0.1:5070", source)
    assert destination == TransportAddress("udp", "203.0.113.5", 5070)
    assert request.top_via.received == "203.0.113.5"
    destination, _ = _destination_for("SIP/2.0/UDP 10.0.0.1", source)
    assert destination == TransportAddress("udp", "203.0.113.5", 5060)


def test_no_received_when_sent_by_is_the_source() -> None:
    source = TransportAddress("udp", "192.0.2.10", 5080)
    destination, request = _destination_for("SIP/2.0/UDP 192.0.2.10:5090", source)
    assert destination == TransportAddress("udp", "192.0.2.10", 5090)
    assert "received" not in request.top_via.params


def test_ipv6_sent_by() -> None:
    source = TransportAddress("udp", "2001:db8::1", 5062)
    destination, request = _destination_for("SIP/2.0/UDP [2001:db8::1]:5062", source)
    assert destination == source
    assert "received" not in request.top_via.params


def test_reliable_responses_go_back_over_the_connection() -> None:
    destination, _ = _destination_for("SIP/2.0/TCP 10.0.0.1:5060;rport", UAC_TCP)
    assert destination == UAC_TCP
    request = make_request("OPTIONS", B1, via="SIP/2.0/TCP 10.0.0.1:5060")
    assert response_destination(request, UAC_TCP) == UAC_TCP


# --------------------------------------------------------------------------------------------
# Transport errors
# --------------------------------------------------------------------------------------------
def test_transport_error_terminates_a_client_transaction() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(make_request("INVITE", B1, via=TCP_VIA), UAS_TCP, 0.0)
    layer.report_transport_error(tx, 0.1)
    assert drain_events(layer) == [TransportFailed(tx), TransactionTerminated(tx)]
    assert len(layer) == 0
    assert layer.get_timer() is None
    layer.report_transport_error(tx, 0.2)  # already gone: nothing happens
    assert drain_events(layer) == []


def test_transport_error_by_destination() -> None:
    layer = TransactionLayer()
    here = [
        layer.send_request(make_request("OPTIONS", f"{MAGIC_COOKIE}-{i}"), UAS, 0.0)
        for i in range(3)
    ]
    elsewhere = layer.send_request(make_request("OPTIONS", B2), UAC, 0.0)
    layer.receive_request(make_request("MESSAGE", B1, via="SIP/2.0/UDP 192.0.2.20:5060"), UAS, 0)
    server = received_transaction(layer)
    layer.report_transport_error(UAS, 1.0)
    events = drain_events(layer)
    failed = [e.transaction for e in events if isinstance(e, TransportFailed)]
    assert set(failed) == {*here, server}
    assert elsewhere.state is S.TRYING
    assert len(layer) == 1


def test_transport_error_in_accepted_informs_the_tu_only() -> None:
    layer = TransactionLayer()
    invite = make_request("INVITE", B1)
    layer.receive_request(invite, UAC, 0.0)
    tx = received_transaction(layer)
    layer.send_response(tx, make_response(invite, 200, to_tag="bob"), 0.1)
    layer.report_transport_error(tx, 0.2)
    assert drain_events(layer) == [TransportFailed(tx)]
    assert tx.state is S.ACCEPTED


# --------------------------------------------------------------------------------------------
# API misuse
# --------------------------------------------------------------------------------------------
def test_send_request_refuses_what_is_not_a_transaction() -> None:
    layer = TransactionLayer()
    with pytest.raises(TransactionError, match="ACK"):
        layer.send_request(make_request("ACK", B1), UAS, 0.0)
    with pytest.raises(TransactionError, match="branch"):
        layer.send_request(make_request("OPTIONS", "1234"), UAS, 0.0)
    with pytest.raises(TransactionError, match="branch"):
        layer.send_request(make_request("OPTIONS", MAGIC_COOKIE), UAS, 0.0)
    with pytest.raises(TransactionError, match="Via"):
        layer.send_request(Request("OPTIONS", "sip:bob@example.com"), UAS, 0.0)
    layer.send_request(make_request("OPTIONS", B1), UAS, 0.0)
    with pytest.raises(TransactionError, match="exists"):
        layer.send_request(make_request("OPTIONS", B1), UAS, 0.0)
    assert isinstance(TransactionError("x"), ValueError)


def test_transition_tables_name_only_their_machine_states() -> None:
    tables = {
        InviteClientTransaction: {S.CALLING, S.PROCEEDING, S.COMPLETED, S.ACCEPTED},
        NonInviteClientTransaction: {S.TRYING, S.PROCEEDING, S.COMPLETED},
        InviteServerTransaction: {S.PROCEEDING, S.COMPLETED, S.CONFIRMED, S.ACCEPTED},
        NonInviteServerTransaction: {S.TRYING, S.PROCEEDING, S.COMPLETED},
    }
    for cls, states in tables.items():
        assert set(cls.TRANSITIONS) == states
        targets = {target for row in cls.TRANSITIONS.values() for target, _ in row.values()}
        assert targets <= states | {S.TERMINATED}
    # RFC 6026: Timer L and M exist only in ACCEPTED.
    assert TransactionInput.TIMER_M in InviteClientTransaction.TRANSITIONS[S.ACCEPTED]
    assert TransactionInput.TIMER_L in InviteServerTransaction.TRANSITIONS[S.ACCEPTED]


# --------------------------------------------------------------------------------------------
# Two layers over a lossy fake link, messages as bytes
# --------------------------------------------------------------------------------------------
def test_end_to_end_rejected_call_with_a_lost_final_response() -> None:
    uac, uas = TransactionLayer(), TransactionLayer()
    invite = make_request("INVITE", new_branch(random.Random(1)))
    client = uac.send_request(invite, UAS, 0.0)
    transfer(uac, uas, UAC, 0.0)
    server = received_transaction(uas)
    busy = make_response(server.request, 486, to_tag="bob")
    uas.send_response(server, busy, 0.05)
    transfer(uas, uac, UAS, 0.05, drop=1)  # the 486 is lost
    assert client.state is S.CALLING
    now = uac.get_timer()
    assert now == 0.5
    uac.handle_timer(now)
    transfer(uac, uas, UAC, now)  # retransmitted INVITE -> 486 again
    transfer(uas, uac, UAS, now)  # -> client completes and ACKs
    assert client.state is S.COMPLETED
    [event] = drain_events(uac)
    assert isinstance(event, ResponseReceived)
    assert event.response.status == 486
    transfer(uac, uas, UAC, now)  # the ACK
    assert server.state is S.CONFIRMED
    for layer in (uac, uas):
        run_timers_until_idle(layer)
        assert len(layer) == 0


# --------------------------------------------------------------------------------------------
# Scale: tables and timer heap stay flat
# --------------------------------------------------------------------------------------------
def test_thousands_of_transactions_leave_the_layer_empty() -> None:
    layer = TransactionLayer()
    rng = random.Random(5)
    n = 2000
    responses = 0
    for i in range(n):
        now = i * 0.001
        branch = new_branch(rng)
        invite = make_request("INVITE", branch, call_id=f"c{i}")
        layer.receive_request(invite, UAC, now)
        options = make_request("OPTIONS", branch, call_id=f"o{i}")
        layer.receive_request(options, UAC, now)
        for event in drain_events(layer):
            if isinstance(event, RequestReceived):
                response = make_response(event.request, 200, to_tag="t")
                layer.send_response(event.transaction, response, now)
            else:
                assert isinstance(event, ResponseReceived)
                responses += 1
        client_invite = make_request("INVITE", branch, call_id=f"ci{i}")
        layer.send_request(client_invite, UAS, now)
        layer.receive_response(make_response(client_invite, 486, to_tag="x"), UAS, now)
        client_bye = make_request("BYE", branch, call_id=f"cb{i}")
        layer.send_request(client_bye, UAS, now)
        layer.receive_response(make_response(client_bye, 200, to_tag="x"), UAS, now)
    responses += len(drain_events(layer))
    assert responses == 2 * n
    assert len(layer) == 4 * n
    layer.messages_to_send()
    run_timers_until_idle(layer)
    terminated = [e for e in drain_events(layer) if isinstance(e, TransactionTerminated)]
    assert len(terminated) == 4 * n
    assert len(layer) == 0
    assert layer.get_timer() is None
    assert layer._by_destination == {}  # private: the per-destination index is empty too


def test_cancelled_timers_do_not_accumulate() -> None:
    # Over TCP every answered transaction leaves a cancelled Timer F behind; the heap is
    # compacted so it stays proportional to the live timers (private attribute checked).
    layer = TransactionLayer()
    rng = random.Random(9)
    for i in range(20000):
        request = make_request("OPTIONS", new_branch(rng), via=TCP_VIA)
        layer.send_request(request, UAS_TCP, i * 0.0001)
        layer.receive_response(make_response(request, 200, to_tag="x"), UAS_TCP, i * 0.0001)
        assert len(layer._heap) <= 1030
    assert len(layer) == 0
    assert layer.get_timer() is None
