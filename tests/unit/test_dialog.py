"""Dialogs (RFC 3261 §12, §13.2.2.4, §14, §15): creation, routing, CSeq rules, forking."""

from __future__ import annotations

import pytest

from p2psip.endpoint.dialog import (
    Dialog,
    DialogError,
    DialogId,
    DialogSet,
    DialogState,
    DialogTable,
)
from p2psip.endpoint.message import Request, Response, parse_message
from p2psip.endpoint.uri import parse_uri

# Alice (UAC) calls Bob (UAS) through proxy P1 (Alice's side) then P2 (Bob's side). Both
# record-route; P2 adds its Record-Route last, so it is on top.
RR_LOOSE = "Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>"
# An RFC 2543 proxy (strict router) next to Alice, a loose router next to Bob.
RR_STRICT = (
    "Record-Route: <sip:p2.example.com;lr>\r\nRecord-Route: <sip:p1.example.com;method=INVITE>"
)


def msg(*lines: str) -> Request | Response:
    """Parse a message given as header lines (no body)."""
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())


def invite(*extra: str, uri: str = "sip:bob@biloxi.example.com", cseq: int = 314159) -> Request:
    req = msg(
        f"INVITE {uri} SIP/2.0",
        "Via: SIP/2.0/UDP p2.example.com;branch=z9hG4bK2",
        "Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK1",
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK0",
        "Max-Forwards: 68",
        'To: "Bob" <sip:bob@biloxi.example.com>',
        'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
        "Call-ID: a84b4c76e66710",
        f"CSeq: {cseq} INVITE",
        "Contact: <sip:alice@pc33.atlanta.example.com>",
        *extra,
    )
    assert isinstance(req, Request)
    return req


def response(
    status: int,
    *extra: str,
    tag: str | None = "a6c85cf",
    contact: str | None = "<sip:bob@192.0.2.4>",
    cseq: str = "314159 INVITE",
) -> Response:
    to = '"Bob" <sip:bob@biloxi.example.com>' + (f";tag={tag}" if tag else "")
    lines = [
        f"SIP/2.0 {status} Whatever",
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK0",
        f"To: {to}",
        'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774',
        "Call-ID: a84b4c76e66710",
        f"CSeq: {cseq}",
    ]
    if contact:
        lines.append(f"Contact: {contact}")
    resp = msg(*lines, *extra)
    assert isinstance(resp, Response)
    return resp


def uac_dialog(*extra: str, status: int = 200) -> tuple[Request, Dialog]:
    req = invite()
    return req, Dialog.from_uac(req, response(status, *extra))


def uas_dialog(*extra: str, status: int = 200) -> tuple[Request, Dialog]:
    req = invite(*extra)
    return req, Dialog.from_uas(req, response(status))


def in_dialog_request(
    method: str,
    cseq: int,
    *extra: str,
    from_tag: str = "1928301774",
    to_tag: str = "a6c85cf",
) -> Request:
    """A request Alice sends to Bob inside the dialog."""
    req = msg(
        f"{method} sip:bob@192.0.2.4 SIP/2.0",
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKnew",
        "Max-Forwards: 70",
        f"To: <sip:bob@biloxi.example.com>;tag={to_tag}",
        f"From: <sip:alice@atlanta.example.com>;tag={from_tag}",
        "Call-ID: a84b4c76e66710",
        f"CSeq: {cseq} {method}",
        *extra,
    )
    assert isinstance(req, Request)
    return req


def route_values(request: Request) -> list[str]:
    return [str(r.uri) for r in request.routes]


# -- creation ---------------------------------------------------------------------------------
def test_uac_dialog_from_2xx_reverses_record_route() -> None:
    _, dialog = uac_dialog(RR_LOOSE)
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.is_uac
    assert dialog.id == DialogId("a84b4c76e66710", "1928301774", "a6c85cf")
    assert dialog.local_uri.tag == "1928301774"
    assert dialog.remote_uri.tag == "a6c85cf"
    assert dialog.local_seq == 314159
    assert dialog.remote_seq is None
    assert str(dialog.remote_target) == "sip:bob@192.0.2.4"
    # RFC 3261 §12.1.2: the UAC's route set is the response's Record-Route reversed.
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
    ]
    assert not dialog.secure
    assert str(dialog.local_contact) == "<sip:alice@pc33.atlanta.example.com>"


def test_uas_dialog_keeps_record_route_order() -> None:
    _, dialog = uas_dialog(RR_LOOSE)
    assert dialog.state is DialogState.CONFIRMED
    assert not dialog.is_uac
    # Seen from Bob: the local tag is his To tag, the remote one Alice's From tag.
    assert dialog.id == DialogId("a84b4c76e66710", "a6c85cf", "1928301774")
    assert dialog.local_uri.tag == "a6c85cf"
    assert str(dialog.local_uri.uri) == "sip:bob@biloxi.example.com"
    assert dialog.remote_uri.tag == "1928301774"
    assert dialog.local_seq is None
    assert dialog.remote_seq == 314159
    assert str(dialog.remote_target) == "sip:alice@pc33.atlanta.example.com"
    # RFC 3261 §12.1.1: the UAS's route set is the request's Record-Route in order.
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p2.example.com;lr",
        "sip:p1.example.com;lr",
    ]
    assert str(dialog.local_contact) == "<sip:bob@192.0.2.4>"


def test_uac_dialog_from_provisional_is_early() -> None:
    _, dialog = uac_dialog(RR_LOOSE, status=180)
    assert dialog.state is DialogState.EARLY


def test_uas_dialog_from_provisional_is_early() -> None:
    _, dialog = uas_dialog(status=183)
    assert dialog.state is DialogState.EARLY


def test_secure_when_request_uri_is_sips() -> None:
    req = invite(uri="sips:bob@biloxi.example.com")
    assert Dialog.from_uac(req, response(200)).secure
    assert Dialog.from_uas(req, response(200)).secure
    assert not Dialog.from_uac(req, response(200), secure=False).secure


@pytest.mark.parametrize(
    ("status", "tag"), [(100, "a6c85cf"), (180, None), (486, "a6c85cf"), (302, "a6c85cf")]
)
def test_uac_responses_that_create_no_dialog(status: int, tag: str | None) -> None:
    with pytest.raises(DialogError):
        Dialog.from_uac(invite(), response(status, tag=tag))


def test_uas_response_needs_a_to_tag() -> None:
    with pytest.raises(DialogError):
        Dialog.from_uas(invite(), response(200, tag=None))


def test_uac_2xx_without_to_tag_from_rfc2543_peer() -> None:
    dialog = Dialog.from_uac(invite(), response(200, tag=None))
    assert dialog.id.remote_tag == ""
    bye = dialog.create_request("BYE")
    assert bye.to.tag is None


def test_missing_contact_falls_back() -> None:
    req = invite()
    dialog = Dialog.from_uac(req, response(200, contact=None))
    assert dialog.remote_target == req.uri


# -- building requests ------------------------------------------------------------------------
def test_uac_request_loose_routing() -> None:
    _, dialog = uac_dialog(RR_LOOSE)
    bye = dialog.create_request("BYE")
    # §12.2.1.1: first route has lr -> R-URI is the remote target, Route the route set.
    assert str(bye.uri) == "sip:bob@192.0.2.4"
    assert route_values(bye) == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert str(dialog.next_hop()) == "sip:p1.example.com;lr"
    assert bye.to.tag == "a6c85cf"
    assert bye.from_.tag == "1928301774"
    assert bye.from_.display_name == "Alice"
    assert bye.call_id == "a84b4c76e66710"
    assert (bye.cseq.seq, bye.cseq.method) == (314160, "BYE")
    assert bye.max_forwards == 70
    assert "Contact" not in bye.headers  # BYE is not a target refresh


def test_cseq_increments_per_request() -> None:
    _, dialog = uac_dialog()
    seqs = [dialog.create_request(m).cseq.seq for m in ("INFO", "INVITE", "UPDATE")]
    assert seqs == [314160, 314161, 314162]
    assert dialog.local_seq == 314162


def test_uas_request_starts_local_cseq_and_swaps_roles() -> None:
    _, dialog = uas_dialog(RR_LOOSE)
    bye = dialog.create_request("BYE")
    assert str(bye.uri) == "sip:alice@pc33.atlanta.example.com"
    assert route_values(bye) == ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
    assert bye.from_.tag == "a6c85cf"
    assert str(bye.from_.uri) == "sip:bob@biloxi.example.com"
    assert bye.to.tag == "1928301774"
    assert bye.cseq.seq == 1
    assert dialog.create_request("INFO").cseq.seq == 2


def test_strict_routing_first_route_becomes_request_uri() -> None:
    # The response carries Record-Route p2 (loose), then p1 (strict): reversed, p1 is first.
    _, dialog = uac_dialog(RR_STRICT)
    assert "lr" not in dialog.route_set[0].uri.params
    req = dialog.create_request("INFO")
    # §12.2.1.1: R-URI = first route without parameters a Request-URI may not carry...
    assert str(req.uri) == "sip:p1.example.com"
    # ...and the remote target goes last in Route.
    assert route_values(req) == ["sip:p2.example.com;lr", "sip:bob@192.0.2.4"]
    assert str(dialog.next_hop()) == "sip:p1.example.com;method=INVITE"


def test_no_route_set_sends_to_remote_target() -> None:
    _, dialog = uac_dialog()
    req = dialog.create_request("INFO")
    assert str(req.uri) == "sip:bob@192.0.2.4"
    assert "Route" not in req.headers
    assert dialog.next_hop() == dialog.remote_target


def test_target_refresh_request_carries_local_contact() -> None:
    _, dialog = uac_dialog()
    reinvite = dialog.create_request("INVITE", body=b"v=0\r\n", content_type="application/sdp")
    assert [str(c) for c in reinvite.contacts] == ["<sip:alice@pc33.atlanta.example.com>"]
    assert reinvite.content_type == "application/sdp"
    assert reinvite.body == b"v=0\r\n"
    custom = dialog.create_request("UPDATE", headers=[("Contact", "<sip:alice@192.0.2.9>")])
    assert [str(c.uri) for c in custom.contacts] == ["sip:alice@192.0.2.9"]


def test_created_request_round_trips_through_the_parser() -> None:
    _, dialog = uac_dialog(RR_LOOSE)
    req = dialog.create_request("INFO", headers=[("Info-Package", "dtmf")])
    req.headers.prepend("Via", "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKx")
    parsed = parse_message(req.to_bytes())
    assert isinstance(parsed, Request)
    parsed.check()
    assert route_values(parsed) == route_values(req)
    assert parsed.headers.get("Info-Package") == "dtmf"


def test_ack_for_2xx_keeps_invite_cseq() -> None:
    _, dialog = uac_dialog(RR_LOOSE)
    ack = dialog.create_ack(314159)
    assert (ack.cseq.seq, ack.cseq.method) == (314159, "ACK")
    assert ack.method == "ACK"
    assert str(ack.uri) == "sip:bob@192.0.2.4"
    assert route_values(ack) == ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
    assert "Contact" not in ack.headers
    assert dialog.local_seq == 314159  # unchanged
    reinvite = dialog.create_request("INVITE")
    ack2 = dialog.create_ack(reinvite.cseq.seq)
    assert ack2.cseq.seq == 314160
    assert dialog.create_request("BYE").cseq.seq == 314161


@pytest.mark.parametrize("method", ["ACK", "CANCEL"])
def test_create_request_refuses_ack_and_cancel(method: str) -> None:
    _, dialog = uac_dialog()
    with pytest.raises(DialogError):
        dialog.create_request(method)


def test_callee_cannot_bye_an_early_dialog() -> None:
    _, dialog = uas_dialog(status=180)
    with pytest.raises(DialogError):
        dialog.create_request("BYE")
    _, caller = uac_dialog(status=180)
    assert caller.create_request("BYE").method == "BYE"  # §15: the caller may


# -- incoming in-dialog requests --------------------------------------------------------------
def test_cseq_lower_or_equal_is_rejected_with_500() -> None:
    _, dialog = uas_dialog()
    lower = dialog.receive_request(in_dialog_request("INFO", 314158))
    assert (lower.status, lower.accepted) == (500, False)
    equal = dialog.receive_request(in_dialog_request("INFO", 314159))
    assert equal.status == 500
    assert dialog.remote_seq == 314159
    higher = dialog.receive_request(in_dialog_request("INFO", 314160))
    assert higher.accepted
    assert dialog.remote_seq == 314160
    assert dialog.receive_request(in_dialog_request("INFO", 314160)).status == 500


def test_ack_with_invite_cseq_is_accepted() -> None:
    _, dialog = uas_dialog()
    check = dialog.receive_request(in_dialog_request("ACK", 314159))
    assert check.accepted
    assert dialog.remote_seq == 314159


def test_first_request_from_callee_sets_remote_seq() -> None:
    _, dialog = uac_dialog()
    req = in_dialog_request("BYE", 7, from_tag="a6c85cf", to_tag="1928301774")
    check = dialog.receive_request(req)
    assert check.accepted and check.ends_dialog
    assert dialog.remote_seq == 7


def test_request_of_another_dialog_gets_481() -> None:
    _, dialog = uas_dialog()
    check = dialog.receive_request(in_dialog_request("INFO", 314160, to_tag="other"))
    assert check.status == 481
    assert dialog.remote_seq == 314159


def test_reinvite_refreshes_remote_target() -> None:
    _, dialog = uas_dialog(RR_LOOSE)
    route_set = list(dialog.route_set)
    check = dialog.receive_request(
        in_dialog_request("INVITE", 314160, "Contact: <sip:alice@192.0.2.77:5062>")
    )
    assert check.accepted and check.target_refreshed
    assert str(dialog.remote_target) == "sip:alice@192.0.2.77:5062"
    assert dialog.route_set == route_set
    assert str(dialog.create_request("BYE").uri) == "sip:alice@192.0.2.77:5062"


def test_non_refresh_request_keeps_remote_target() -> None:
    _, dialog = uas_dialog()
    check = dialog.receive_request(
        in_dialog_request("INFO", 314160, "Contact: <sip:alice@192.0.2.77>")
    )
    assert check.accepted and not check.target_refreshed
    assert str(dialog.remote_target) == "sip:alice@pc33.atlanta.example.com"


def test_rejected_reinvite_does_not_refresh() -> None:
    _, dialog = uas_dialog()
    check = dialog.receive_request(
        in_dialog_request("INVITE", 314100, "Contact: <sip:alice@192.0.2.77>")
    )
    assert check.status == 500
    assert str(dialog.remote_target) == "sip:alice@pc33.atlanta.example.com"


def test_bye_terminates_after_2xx_answer() -> None:
    _, dialog = uas_dialog()
    bye = in_dialog_request("BYE", 314160)
    check = dialog.receive_request(bye)
    assert check.ends_dialog
    assert dialog.state is DialogState.CONFIRMED
    dialog.send_response(bye, Response(200))
    assert dialog.state is DialogState.TERMINATED
    assert dialog.receive_request(in_dialog_request("INFO", 314161)).status == 481
    with pytest.raises(DialogError):
        dialog.create_request("INFO")


def test_uas_send_response_confirms_or_ends_early_dialog() -> None:
    req, dialog = uas_dialog(status=180)
    dialog.send_response(req, response(200, contact="<sip:bob@192.0.2.5>"))
    assert dialog.state is DialogState.CONFIRMED
    assert str(dialog.local_contact) == "<sip:bob@192.0.2.5>"
    req, dialog = uas_dialog(status=180)
    dialog.send_response(req, response(486))
    assert dialog.state is DialogState.TERMINATED


# -- responses to our requests ----------------------------------------------------------------
def test_early_to_confirmed_recomputes_route_set_and_target() -> None:
    req = invite()
    dialog = Dialog.from_uac(
        req,
        response(180, "Record-Route: <sip:p1.example.com;lr>", contact="<sip:bob@192.0.2.4>"),
    )
    assert dialog.state is DialogState.EARLY
    assert [str(r.uri) for r in dialog.route_set] == ["sip:p1.example.com;lr"]
    dialog.receive_response(req, response(183, contact="<sip:bob@192.0.2.5>"))
    assert dialog.state is DialogState.EARLY
    assert str(dialog.remote_target) == "sip:bob@192.0.2.5"
    dialog.receive_response(req, response(200, RR_LOOSE, contact="<sip:bob@192.0.2.6>"))
    assert dialog.state is DialogState.CONFIRMED
    assert str(dialog.remote_target) == "sip:bob@192.0.2.6"
    # §13.2.2.4: the route set is recomputed from the 2xx.
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
    ]


def test_2xx_to_reinvite_refreshes_target_not_route_set() -> None:
    _, dialog = uac_dialog(RR_LOOSE)
    reinvite = dialog.create_request("INVITE")
    dialog.receive_response(
        reinvite,
        response(
            200,
            "Record-Route: <sip:p9.example.com;lr>",
            contact="<sip:bob@192.0.2.99>",
            cseq="314160 INVITE",
        ),
    )
    assert str(dialog.remote_target) == "sip:bob@192.0.2.99"
    # §12.2.1.2: target refreshes do not touch the route set.
    assert [str(r.uri) for r in dialog.route_set] == [
        "sip:p1.example.com;lr",
        "sip:p2.example.com;lr",
    ]


def test_failed_reinvite_keeps_target() -> None:
    _, dialog = uac_dialog()
    reinvite = dialog.create_request("INVITE")
    dialog.receive_response(
        reinvite, response(488, contact="<sip:bob@192.0.2.99>", cseq="314160 INVITE")
    )
    assert dialog.state is DialogState.CONFIRMED
    assert str(dialog.remote_target) == "sip:bob@192.0.2.4"


@pytest.mark.parametrize("status", [481, 408])
def test_481_and_408_terminate(status: int) -> None:
    _, dialog = uac_dialog()
    info = dialog.create_request("INFO")
    dialog.receive_response(info, response(status, contact=None, cseq="314160 INFO"))
    assert dialog.state is DialogState.TERMINATED
    with pytest.raises(DialogError):
        dialog.create_request("BYE")


def test_response_to_bye_terminates_unless_challenged() -> None:
    _, dialog = uac_dialog()
    bye = dialog.create_request("BYE")
    dialog.receive_response(bye, response(407, contact=None, cseq="314160 BYE"))
    assert dialog.state is DialogState.CONFIRMED
    bye = dialog.create_request("BYE", headers=[("Proxy-Authorization", "Digest x")])
    dialog.receive_response(bye, response(200, contact=None, cseq="314161 BYE"))
    assert dialog.state is DialogState.TERMINATED


def test_terminated_dialog_ignores_late_2xx() -> None:
    req, dialog = uac_dialog(status=180)
    dialog.receive_response(req, response(487))
    assert dialog.state is DialogState.TERMINATED
    dialog.receive_response(req, response(200))
    assert dialog.state is DialogState.TERMINATED


# -- forking and lookup -----------------------------------------------------------------------
def test_forked_provisional_responses_create_two_early_dialogs() -> None:
    req = invite()
    table = DialogTable()
    dialog_set = table.start_dialog_set(req)
    a = table.receive_response(req, response(180, tag="fork-a", contact="<sip:bob@192.0.2.4>"))
    b = table.receive_response(req, response(183, tag="fork-b", contact="<sip:bob@[2001:db8::10]>"))
    assert a is not None and b is not None and a is not b
    assert {a.state, b.state} == {DialogState.EARLY}
    assert (a.id.remote_tag, b.id.remote_tag) == ("fork-a", "fork-b")
    assert dialog_set.dialogs == [a, b]
    assert len(table) == 2
    assert table.receive_response(req, response(100, tag=None)) is None
    # The 2xx from fork B confirms B only.
    confirmed = table.receive_response(req, response(200, tag="fork-b"))
    assert confirmed is b
    assert b.state is DialogState.CONFIRMED
    assert a.state is DialogState.EARLY
    # §13.2.2.4: when the INVITE transaction is over, the other early dialogs end.
    assert table.end_dialog_set(req.call_id, "1928301774") == [a]
    assert a.state is DialogState.TERMINATED
    assert table.purge_terminated() == [a]
    assert list(table) == [b]


def test_second_2xx_from_another_fork_creates_a_confirmed_dialog() -> None:
    req = invite()
    dialog_set = DialogSet(req)
    first = dialog_set.receive_response(response(200, tag="fork-a"))
    second = dialog_set.receive_response(response(200, tag="fork-b"))
    assert first is not None and second is not None
    assert first.state is second.state is DialogState.CONFIRMED
    assert second.create_ack(314159).to.tag == "fork-b"
    assert second.create_request("BYE").to.tag == "fork-b"


def test_final_error_ends_every_early_fork() -> None:
    req = invite()
    dialog_set = DialogSet(req)
    dialog_set.receive_response(response(180, tag="fork-a"))
    dialog_set.receive_response(response(180, tag="fork-b"))
    assert dialog_set.receive_response(response(486, tag="fork-c")) is None
    assert [d.state for d in dialog_set.dialogs] == [DialogState.TERMINATED] * 2


def test_dialog_set_ignores_responses_to_other_requests() -> None:
    dialog_set = DialogSet(invite())
    assert dialog_set.receive_response(response(180, cseq="314160 INVITE")) is None
    assert dialog_set.dialogs == []


def test_table_lookup_swaps_tags_for_requests() -> None:
    table = DialogTable()
    _, uac = uac_dialog()
    table.add(uac)
    # Bob's BYE to Alice: To tag is Alice's (our local tag), From tag is Bob's.
    bye = in_dialog_request("BYE", 1, from_tag="a6c85cf", to_tag="1928301774")
    assert table.find_for_request(bye) is uac
    assert table.find_for_response(response(200, cseq="314160 INFO")) is uac
    assert table.find_for_request(in_dialog_request("BYE", 1, to_tag="unknown")) is None
    assert table.find_for_request(invite()) is None  # no To tag: not in a dialog
    assert uac in table and uac.id in table
    with pytest.raises(DialogError):
        table.add(Dialog.from_uac(invite(), response(200)))
    assert table.remove(uac.id) is uac
    assert len(table) == 0


def test_table_routes_in_dialog_responses() -> None:
    table = DialogTable()
    _, uac = uac_dialog()
    table.add(uac)
    info = uac.create_request("INFO")
    assert table.receive_response(info, response(481, cseq="314160 INFO")) is uac
    assert uac.state is DialogState.TERMINATED


def test_uas_dialog_with_rfc2543_peer_without_from_tag() -> None:
    req = msg(
        "INVITE sip:bob@biloxi.example.com SIP/2.0",
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=1",
        "To: <sip:bob@biloxi.example.com>",
        "From: <sip:alice@atlanta.example.com>",
        "Call-ID: old-style",
        "CSeq: 1 INVITE",
        "Contact: <sip:alice@pc33.atlanta.example.com>",
    )
    assert isinstance(req, Request)
    dialog = Dialog.from_uas(req, Response(200, headers=[("To", "<sip:bob@b.example>;tag=x")]))
    assert dialog.id == DialogId("old-style", "x", "")
    table = DialogTable()
    table.add(dialog)
    bye = msg(
        "BYE sip:bob@192.0.2.4 SIP/2.0",
        "Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=2",
        "To: <sip:bob@biloxi.example.com>;tag=x",
        "From: <sip:alice@atlanta.example.com>",
        "Call-ID: old-style",
        "CSeq: 2 BYE",
    )
    assert isinstance(bye, Request)
    assert table.find_for_request(bye) is dialog
    assert dialog.create_request("BYE").to.tag is None


# -- IPv6 (RFC 5118) --------------------------------------------------------------------------
def test_ipv6_contacts_and_routes() -> None:
    req = invite()
    dialog = Dialog.from_uac(
        req,
        response(
            200,
            "Record-Route: <sip:[2001:db8::2]:5070;lr>, <sip:[2001:db8::1];lr;transport=tcp>",
            contact="<sip:bob@[2001:db8::10]:5062;transport=tcp>",
        ),
    )
    assert dialog.remote_target == parse_uri("sip:bob@[2001:db8::10]:5062;transport=tcp")
    hop = dialog.next_hop()
    assert (hop.host_plain, hop.port, hop.transport) == ("2001:db8::1", None, "tcp")
    bye = dialog.create_request("BYE")
    assert str(bye.uri) == "sip:bob@[2001:db8::10]:5062;transport=tcp"
    assert route_values(bye) == [
        "sip:[2001:db8::1];lr;transport=tcp",
        "sip:[2001:db8::2]:5070;lr",
    ]
    reparsed = parse_message(bye.to_bytes())
    assert isinstance(reparsed, Request)
    assert reparsed.uri.host == "[2001:db8::10]"


def test_ipv6_target_refresh() -> None:
    _, dialog = uas_dialog()
    dialog.receive_request(
        in_dialog_request("UPDATE", 314160, "Contact: <sip:alice@[2001:db8::20]:5080>")
    )
    assert dialog.remote_target.host == "[2001:db8::20]"
    assert dialog.next_hop().port == 5080
