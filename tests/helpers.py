"""Shared test helpers: plain functions, no sockets, no sleeps.

Transaction layer:

* ``make_request(method, branch, ...)`` / ``make_response(request, status, to_tag=...)`` build
  messages the way a UA core would (RFC 3261 §8.1.1, §8.2.6).
* ``drain_events(layer)`` takes every pending event; ``received_transaction(layer)`` takes
  the one pending event, a :class:`RequestReceived`, and returns its server transaction.
* ``run_timers_until_idle(layer)`` jumps the clock from deadline to deadline and logs what was
  sent at each one.
* ``transfer(sender, receiver, source, now)`` carries a layer's queued messages, as bytes
  through the parser, to another layer.
"""

from __future__ import annotations

import math

from p2psip.endpoint.addresses import TransportAddress
from p2psip.endpoint.message import Request, Response, parse_message
from p2psip.endpoint.transaction import (
    RequestReceived,
    ServerTransaction,
    TransactionEvent,
    TransactionLayer,
)

Sent = list[tuple[Request | Response, TransportAddress]]


def make_request(
    method: str,
    branch: str,
    *,
    uri: str = "sip:bob@example.com",
    via: str = "SIP/2.0/UDP 192.0.2.10:5060",
    call_id: str = "call-1@192.0.2.10",
    cseq: int = 1,
    from_tag: str = "alice-tag",
    to_tag: str | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> Request:
    """A minimal valid request; ``via`` is the top Via without its branch parameter."""
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    headers = [
        ("Via", f"{via};branch={branch}"),
        ("Max-Forwards", "70"),
        ("From", f"Alice <sip:alice@example.com>;tag={from_tag}"),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        *extra,
    ]
    return Request(method, uri, headers)


def make_response(
    request: Request, status: int, *, to_tag: str | None = None, reason: str | None = None
) -> Response:
    """A response to ``request`` (RFC 3261 §8.2.6.2): Via, From, Call-ID, CSeq copied; To
    copied with ``to_tag`` added when given."""
    headers = request.headers
    to = headers.get("To") or ""
    if to_tag is not None and ";tag=" not in to:
        to = f"{to};tag={to_tag}"
    items = [("Via", via) for via in headers.get_lines("Via")]
    items += [
        ("From", headers.get("From") or ""),
        ("To", to),
        ("Call-ID", headers.get("Call-ID") or ""),
        ("CSeq", headers.get("CSeq") or ""),
    ]
    return Response(status, reason, items)


def drain_events(layer: TransactionLayer) -> list[TransactionEvent]:
    """Every pending event of ``layer``, in order."""
    events = []
    while (event := layer.next_event()) is not None:
        events.append(event)
    return events


def received_transaction(layer: TransactionLayer) -> ServerTransaction:
    """The server transaction of the single pending event, which must be RequestReceived."""
    events = drain_events(layer)
    assert len(events) == 1, events
    assert isinstance(events[0], RequestReceived), events
    return events[0].transaction


def run_timers_until_idle(
    layer: TransactionLayer, until: float = math.inf
) -> list[tuple[float, Sent]]:
    """Jump the clock to each deadline (up to ``until``) and handle it.

    Returns:
        (time, messages sent at that time) for every deadline handled; events stay queued.
    """
    log: list[tuple[float, Sent]] = []
    while (now := layer.get_timer()) is not None and now <= until:
        layer.handle_timer(now)
        log.append((now, layer.messages_to_send()))
    return log


def send_times(log: list[tuple[float, Sent]]) -> list[float]:
    """The times in a :func:`run_timers_until_idle` log at which something was sent."""
    return [now for now, sent in log if sent]


def transfer(
    sender: TransactionLayer,
    receiver: TransactionLayer,
    source: TransportAddress,
    now: float,
    *,
    drop: int = 0,
) -> Sent:
    """Deliver ``sender``'s queued messages to ``receiver`` as if from ``source``.

    Each message goes through ``to_bytes()`` and ``parse_message()``. The first ``drop``
    messages are lost.

    Returns:
        The messages taken from ``sender`` (delivered or not).
    """
    sent = sender.messages_to_send()
    for i, (message, _destination) in enumerate(sent):
        if i < drop:
            continue
        copy = parse_message(message.to_bytes())
        if isinstance(copy, Request):
            receiver.receive_request(copy, source, now)
        else:
            receiver.receive_response(copy, source, now)
    return sent
