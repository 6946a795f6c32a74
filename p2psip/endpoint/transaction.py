"""SIP transactions (RFC 3261 §17, updated by RFC 6026), sans-IO.

A :class:`TransactionLayer` holds every client and server transaction of a user agent. It
does no I/O and never reads the clock: messages and the current time go in, and what comes
out is drained by the caller::

    layer.receive_request(request, source, now)     # from the transport
    layer.send_response(event.transaction, response, now)   # from the UA core
    for message, destination in layer.messages_to_send(): ...
    while (event := layer.next_event()) is not None: ...
    deadline = layer.get_timer()                    # absolute; re-arm one loop timer
    layer.handle_timer(now)

Four machines, each with its own transition table (``TRANSITIONS``, state -> input ->
(next state, action)): :class:`InviteClientTransaction`, :class:`NonInviteClientTransaction`,
:class:`InviteServerTransaction`, :class:`NonInviteServerTransaction`. Timers are table
inputs named after the RFC timers; a timer whose input does not appear in the new state's
row is cancelled when the state changes.

Not implemented: the §18.2.2 ``maddr`` case (responses are not multicast) and the fallback
from a broken connection to ``received``/sent-by for responses over reliable transports.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from p2psip.endpoint.addresses import DEFAULT_PORTS, TransportAddress
from p2psip.endpoint.message import Request, Response
from p2psip.errors import P2PSIPError, SIPParseError
from p2psip.timers import TimerConfig

__all__ = [
    "MAGIC_COOKIE",
    "CancelReceived",
    "ClientTransaction",
    "InviteClientTransaction",
    "InviteServerTransaction",
    "NonInviteClientTransaction",
    "NonInviteServerTransaction",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "StrayAckReceived",
    "StrayResponseReceived",
    "Transaction",
    "TransactionError",
    "TransactionEvent",
    "TransactionInput",
    "TransactionLayer",
    "TransactionState",
    "TransactionTerminated",
    "TransactionTimedOut",
    "TransportFailed",
    "build_ack",
    "build_cancel",
    "new_branch",
    "response_destination",
    "stamp_received",
]

#: RFC 3261 §8.1.1.7: branches of RFC 3261 elements start with this.
MAGIC_COOKIE = "z9hG4bK"
_MAX_FORWARDS = "70"
# Rebuild the timer heap when it holds this many more entries than live timers.
_HEAP_SLACK = 1024


class TransactionError(P2PSIPError, ValueError):
    """The UA core asked the transaction layer for something it cannot do."""


def new_branch(rng: random.Random) -> str:
    """A fresh Via branch: the RFC 3261 magic cookie and 64 random bits (§8.1.1.7).

    Args:
        rng: the injected random generator (seeded in tests).

    Returns:
        ``z9hG4bK`` followed by 16 hex digits.
    """
    return f"{MAGIC_COOKIE}{rng.getrandbits(64):016x}"


class TransactionState(enum.Enum):
    """Transaction states, named as in RFC 3261 §17 and RFC 6026 §7."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"

    # Members are singletons: identity hashing spares the table lookups Enum's Python-level
    # __hash__.
    __hash__ = object.__hash__


class TransactionInput(enum.Enum):
    """What drives a transaction machine.

    Responses are received from the network by client transactions and sent by the TU
    through server transactions; ``REQUEST`` is a retransmitted request reaching a server
    transaction. Timer inputs carry the RFC letter as value.
    """

    REQUEST = "request"
    ACK = "ACK"
    RESPONSE_1XX = "1xx"
    RESPONSE_2XX = "2xx"
    RESPONSE_3XX_6XX = "300-699"
    TRANSPORT_ERROR = "transport error"
    TIMER_TRYING = "100 Trying"  # RFC 3261 §17.2.1: the TU has not sent a provisional
    TIMER_A = "A"
    TIMER_B = "B"
    TIMER_D = "D"
    TIMER_E = "E"
    TIMER_F = "F"
    TIMER_G = "G"
    TIMER_H = "H"
    TIMER_I = "I"
    TIMER_J = "J"
    TIMER_K = "K"
    TIMER_L = "L"
    TIMER_M = "M"

    __hash__ = object.__hash__  # see TransactionState


S = TransactionState
I = TransactionInput  # noqa: E741 - short name keeps the tables readable

#: A matching key: (branch, method) for clients, (branch, sent-by host, port, method) for
#: servers, or the RFC 2543 fields (RFC 3261 §17.1.3, §17.2.3).
TransactionKey = tuple[object, ...]
#: An action runs after a transition: ``action(transaction, now, message)``.
Action = Callable[[Any, float, Any], None]
Transitions = dict[TransactionState, dict[TransactionInput, tuple[TransactionState, Action | None]]]


def _response_input(status: int) -> TransactionInput:
    if status < 200:
        return I.RESPONSE_1XX
    if status < 300:
        return I.RESPONSE_2XX
    return I.RESPONSE_3XX_6XX


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TransactionEvent:
    """Base class of the events of the transaction layer."""


@dataclass(frozen=True, slots=True)
class RequestReceived(TransactionEvent):
    """A new request created a server transaction; the TU must answer through it.

    Attributes:
        transaction: the new server transaction (``transaction.request`` is the request).
    """

    transaction: ServerTransaction

    @property
    def request(self) -> Request:
        """The received request."""
        return self.transaction.request


@dataclass(frozen=True, slots=True)
class ResponseReceived(TransactionEvent):
    """A response for the TU: each provisional, the first final, and (RFC 6026) every 2xx
    to an INVITE while in ACCEPTED (retransmissions and forks).

    Attributes:
        transaction: the client transaction.
        response: the response.
        retransmission: True for a 2xx to an INVITE whose To tag an earlier 2xx of this
            transaction had (a retransmission, not a new fork: the ACK is sent again).
    """

    transaction: ClientTransaction
    response: Response
    retransmission: bool = False


@dataclass(frozen=True, slots=True)
class StrayAckReceived(TransactionEvent):
    """An ACK outside any transaction, normally the ACK for a 2xx (RFC 3261 §17, §13.3.1.4),
    for the dialog layer: it matched no transaction, or it matched an INVITE server
    transaction in ACCEPTED (RFC 6026 §7.1 passes it to the TU; its ``source`` is then the
    INVITE's).

    Attributes:
        request: the ACK.
        source: where it came from.
    """

    request: Request
    source: TransportAddress


@dataclass(frozen=True, slots=True)
class StrayResponseReceived(TransactionEvent):
    """A response that matched no client transaction (RFC 3261 §17.1.3), e.g. a 2xx
    retransmission after the INVITE client transaction is gone.

    Attributes:
        response: the response.
        source: where it came from.
    """

    response: Response
    source: TransportAddress


@dataclass(frozen=True, slots=True)
class CancelReceived(TransactionEvent):
    """A CANCEL matched an INVITE server transaction (RFC 3261 §9.2).

    The TU answers the CANCEL with 200 through ``cancel_transaction`` and, if
    ``transaction.state`` is still PROCEEDING, the INVITE with 487.

    Attributes:
        transaction: the INVITE server transaction being cancelled.
        cancel_request: the CANCEL.
        cancel_transaction: the server transaction of the CANCEL itself.
    """

    transaction: InviteServerTransaction
    cancel_request: Request
    cancel_transaction: NonInviteServerTransaction


@dataclass(frozen=True, slots=True)
class TransactionTimedOut(TransactionEvent):
    """A transaction timed out: no final response (B, F) or no ACK (H).

    Attributes:
        transaction: the transaction (TERMINATED next).
        timer: the RFC timer that fired.
    """

    transaction: Transaction
    timer: Literal["B", "F", "H"]


@dataclass(frozen=True, slots=True)
class TransportFailed(TransactionEvent):
    """Sending failed (RFC 3261 §17.1.4, §17.2.4); a client transaction treats this as a 503
    (§8.1.3.1) and terminates.

    Attributes:
        transaction: the transaction.
    """

    transaction: Transaction


@dataclass(frozen=True, slots=True)
class TransactionTerminated(TransactionEvent):
    """A transaction reached TERMINATED and was removed from the layer.

    Attributes:
        transaction: the transaction.
    """

    transaction: Transaction


# --------------------------------------------------------------------------------------------
# Message helpers
# --------------------------------------------------------------------------------------------
def build_ack(request: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response to ``request`` (RFC 3261 §17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number as the INVITE, To from the response, a
    single Via equal to the INVITE's top Via and the INVITE's Route headers.
    """
    headers = request.headers
    items = [("Via", headers.get_all("Via")[0])]
    items.extend(("Route", route) for route in headers.get_lines("Route"))
    items += [
        ("Max-Forwards", _MAX_FORWARDS),
        ("From", headers.get("From") or ""),
        ("To", response.headers.get("To") or ""),
        ("Call-ID", headers.get("Call-ID") or ""),
        ("CSeq", f"{request.cseq.seq} ACK"),
    ]
    return Request("ACK", request.uri, items)


def build_cancel(request: Request) -> Request:
    """A CANCEL for ``request`` (RFC 3261 §9.1).

    Same Request-URI, Call-ID, To, From and CSeq number, a single Via equal to the request's
    top Via (so it shares the branch) and the request's Route headers.
    """
    headers = request.headers
    items = [("Via", headers.get_all("Via")[0])]
    items.extend(("Route", route) for route in headers.get_lines("Route"))
    items += [
        ("Max-Forwards", _MAX_FORWARDS),
        ("From", headers.get("From") or ""),
        ("To", headers.get("To") or ""),
        ("Call-ID", headers.get("Call-ID") or ""),
        ("CSeq", f"{request.cseq.seq} CANCEL"),
    ]
    return Request("CANCEL", request.uri, items)


def _build_trying(request: Request) -> Response:
    # RFC 3261 §8.2.6.1: Via, From, To, Call-ID, CSeq and Timestamp are copied; no To tag.
    headers = request.headers
    items = [("Via", via) for via in headers.get_lines("Via")]
    items += [
        ("From", headers.get("From") or ""),
        ("To", headers.get("To") or ""),
        ("Call-ID", headers.get("Call-ID") or ""),
        ("CSeq", headers.get("CSeq") or ""),
    ]
    timestamp = headers.get("Timestamp")
    if timestamp is not None:
        items.append(("Timestamp", timestamp))
    return Response(100, None, items)


def _unbracket(host: str) -> str:
    return host[1:-1] if host[:1] == "[" else host


def stamp_received(request: Request, source: TransportAddress) -> None:
    """Add ``received`` and fill ``rport`` in the top Via of a received request.

    RFC 3261 §18.2.1: ``received`` when the sent-by host differs from the source address;
    RFC 3581 §4: ``rport`` gets the source port, and ``received`` is then added even when
    equal to sent-by. Values the client put there are replaced. Calling it again changes
    nothing.

    Raises:
        SIPParseError: when the request has no valid Via.
    """
    via = request.top_via
    params = via.params
    before = (params.get("rport"), params.get("received"), "received" in params)
    # Whatever the client wrote into received/rport is overwritten with what the packet
    # says: a client must not be able to steer answers to another host (§18.2.1).
    if "rport" in params:
        params["rport"] = str(source.port)
        params["received"] = source.host
    elif _unbracket(via.host).lower() != source.host.lower():
        params["received"] = source.host
    else:
        params.pop("received", None)
    if before != (params.get("rport"), params.get("received"), "received" in params):
        # The cached Via object was edited in place; rewrite its text to match.
        request.headers.remove_first_value("Via")
        request.headers.prepend("Via", str(via))


def response_destination(request: Request, source: TransportAddress) -> TransportAddress:
    """Where responses to ``request`` go (RFC 3261 §18.2.2, RFC 3581 §4).

    Reliable transports: back over the connection the request came on (``source``).
    Unreliable: ``received`` (else the sent-by host) and ``rport`` (else the sent-by port,
    else the transport's default port). ``maddr`` is not supported.

    Raises:
        SIPParseError: when the request has no valid Via.
    """
    if source.reliable:
        return source
    via = request.top_via
    host = _unbracket(via.received or via.host)
    port = via.rport or via.port or DEFAULT_PORTS.get(source.transport, 5060)
    return TransportAddress(source.transport, host, port)


# --------------------------------------------------------------------------------------------
# Transactions
# --------------------------------------------------------------------------------------------
class Transaction:
    """What the four machines share. Created by :class:`TransactionLayer` only.

    Attributes:
        key: the matching key in the layer's table (RFC 3261 §17.1.3, §17.2.3).
        state: the current :class:`TransactionState`.
        request: the request that created the transaction.
        last_response: the last response sent (server) or passed to the TU (client).
        reliable: True over a reliable transport (no retransmissions, zero D/I/J/K).
    """

    TRANSITIONS: ClassVar[Transitions] = {}
    #: The timer whose expiry is reported as :class:`TransactionTimedOut`.
    TIMEOUT_TIMER: ClassVar[Literal["B", "F", "H"]]

    __slots__ = (
        "_alive",
        "_interval",
        "_layer",
        "_timers",
        "key",
        "last_response",
        "reliable",
        "request",
        "state",
    )

    def __init__(
        self,
        layer: TransactionLayer,
        key: TransactionKey,
        request: Request,
        state: TransactionState,
    ) -> None:
        self._layer = layer
        self.key = key
        self.request = request
        self.state = state
        self.last_response: Response | None = None
        self.reliable = False
        self._timers: dict[TransactionInput, int] = {}  # running timer -> heap entry id
        self._interval = 0.0  # current A, E or G retransmission interval
        self._alive = True

    @property
    def method(self) -> str:
        """The request method."""
        return self.request.method

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.state.name} {self.key!r}>"

    # -- machine ------------------------------------------------------------------------------
    def _fire(self, trigger: TransactionInput, now: float, message: Any = None) -> bool:
        """Apply ``trigger``; False when the current state ignores it."""
        row = self.TRANSITIONS.get(self.state)
        entry = row.get(trigger) if row is not None else None
        if entry is None:
            return False
        target, action = entry
        if target is not self.state:
            self.state = target
            if self._timers:
                self._layer._cancel_timers_outside(self, self.TRANSITIONS.get(target, {}))
        if action is not None:
            action(self, now, message)
        if target is S.TERMINATED:
            self._layer._remove(self)
        return True

    def _start_timer(self, timer: TransactionInput, delay: float, now: float) -> None:
        if delay <= 0:
            # Zero timers (reliable transports) fire at once (RFC 3261 §17.1.1.2, §17.2.2).
            self._fire(timer, now)
        else:
            self._layer._schedule(self, timer, now + delay)

    # -- shared actions -----------------------------------------------------------------------
    def _time_out(self, now: float, message: Any) -> None:
        self._layer._events.append(TransactionTimedOut(self, self.TIMEOUT_TIMER))

    def _transport_failed(self, now: float, message: Any) -> None:
        self._layer._events.append(TransportFailed(self))


class ClientTransaction(Transaction):
    """A client transaction (RFC 3261 §17.1).

    Attributes:
        destination: where the request (and any ACK it generates) is sent.
    """

    __slots__ = ("destination",)

    def __init__(
        self,
        layer: TransactionLayer,
        key: TransactionKey,
        request: Request,
        destination: TransportAddress,
        state: TransactionState,
    ) -> None:
        super().__init__(layer, key, request, state)
        self.destination = destination
        self.reliable = destination.reliable

    def _start(self, now: float) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _send_request(self, now: float, message: Any = None) -> None:
        self._layer._output.append((self.request, self.destination))

    def _pass_response(self, now: float, response: Response) -> None:
        self.last_response = response
        self._layer._events.append(ResponseReceived(self, response))


class InviteClientTransaction(ClientTransaction):
    """INVITE client transaction: RFC 3261 §17.1.1, RFC 6026 §7.2 (ACCEPTED, Timer M).

    Attributes:
        ack: the ACK generated for a non-2xx final response, once there is one.
    """

    TIMEOUT_TIMER = "B"
    __slots__ = ("_tags_2xx", "ack")

    def __init__(
        self,
        layer: TransactionLayer,
        key: TransactionKey,
        request: Request,
        destination: TransportAddress,
    ) -> None:
        super().__init__(layer, key, request, destination, S.CALLING)
        self.ack: Request | None = None
        self._tags_2xx: set[str | None] = set()

    def _start(self, now: float) -> None:
        timers = self._layer.timers
        self._send_request(now)
        if not self.reliable:
            # RFC 3261 §17.1.1.2: Timer A starts at T1 for unreliable transports.
            self._interval = timers.timer_a
            self._start_timer(I.TIMER_A, self._interval, now)
        self._start_timer(I.TIMER_B, timers.timer_b, now)

    def _retransmit(self, now: float, message: Any) -> None:
        # RFC 3261 §17.1.1.2: retransmit and double Timer A (no cap for INVITE).
        self._send_request(now)
        self._interval *= 2
        self._start_timer(I.TIMER_A, self._interval, now)

    def _accept(self, now: float, response: Response) -> None:
        # RFC 6026 §8.4: 2xx goes to the TU; Timer M keeps passing up its retransmissions.
        self._pass_2xx(now, response)
        self._start_timer(I.TIMER_M, self._layer.timers.timer_m, now)

    def _pass_2xx(self, now: float, response: Response) -> None:
        try:
            tag = response.to.tag
        except SIPParseError:
            tag = None
        retransmission = tag in self._tags_2xx
        self._tags_2xx.add(tag)
        self.last_response = response
        self._layer._events.append(ResponseReceived(self, response, retransmission))

    def _complete(self, now: float, response: Response) -> None:
        # RFC 3261 §17.1.1.2: pass up, ACK, Timer D (zero over reliable transports).
        self._pass_response(now, response)
        self.ack = build_ack(self.request, response)
        self._send_ack(now, response)
        self._start_timer(I.TIMER_D, 0.0 if self.reliable else self._layer.timers.timer_d, now)

    def _send_ack(self, now: float, response: Response) -> None:
        # RFC 3261 §17.1.1.2: each retransmitted final response is answered with the ACK.
        if self.ack is not None:
            self._layer._output.append((self.ack, self.destination))

    TRANSITIONS: ClassVar[Transitions] = {
        S.CALLING: {
            I.TIMER_A: (S.CALLING, _retransmit),
            I.TIMER_B: (S.TERMINATED, Transaction._time_out),
            I.RESPONSE_1XX: (S.PROCEEDING, ClientTransaction._pass_response),
            I.RESPONSE_2XX: (S.ACCEPTED, _accept),
            I.RESPONSE_3XX_6XX: (S.COMPLETED, _complete),
            I.TRANSPORT_ERROR: (S.TERMINATED, Transaction._transport_failed),
        },
        S.PROCEEDING: {
            I.RESPONSE_1XX: (S.PROCEEDING, ClientTransaction._pass_response),
            I.RESPONSE_2XX: (S.ACCEPTED, _accept),
            I.RESPONSE_3XX_6XX: (S.COMPLETED, _complete),
            # Not in Figure 5: a broken connection can no longer carry the final response.
            I.TRANSPORT_ERROR: (S.TERMINATED, Transaction._transport_failed),
        },
        S.COMPLETED: {
            I.RESPONSE_3XX_6XX: (S.COMPLETED, _send_ack),
            I.TIMER_D: (S.TERMINATED, None),
            I.TRANSPORT_ERROR: (S.TERMINATED, Transaction._transport_failed),
        },
        S.ACCEPTED: {
            I.RESPONSE_2XX: (S.ACCEPTED, _pass_2xx),
            I.TIMER_M: (S.TERMINATED, None),
        },
    }


class NonInviteClientTransaction(ClientTransaction):
    """Non-INVITE client transaction (RFC 3261 §17.1.2)."""

    TIMEOUT_TIMER = "F"
    __slots__ = ()

    def __init__(
        self,
        layer: TransactionLayer,
        key: TransactionKey,
        request: Request,
        destination: TransportAddress,
    ) -> None:
        super().__init__(layer, key, request, destination, S.TRYING)

    def _start(self, now: float) -> None:
        timers = self._layer.timers
        self._send_request(now)
        if not self.reliable:
            self._interval = timers.timer_e
            self._start_timer(I.TIMER_E, self._interval, now)
        self._start_timer(I.TIMER_F, timers.timer_f, now)

    def _retransmit_trying(self, now: float, message: Any) -> None:
        # RFC 3261 §17.1.2.2: retransmit at min(2*T, T2).
        self._send_request(now)
        self._interval = min(2 * self._interval, self._layer.timers.t2)
        self._start_timer(I.TIMER_E, self._interval, now)

    def _retransmit_proceeding(self, now: float, message: Any) -> None:
        # RFC 3261 §17.1.2.2: in Proceeding, Timer E is reset to T2.
        self._send_request(now)
        self._start_timer(I.TIMER_E, self._layer.timers.t2, now)

    def _complete(self, now: float, response: Response) -> None:
        # RFC 3261 §17.1.2.2: Timer K is T4 for unreliable transports, zero otherwise.
        self._pass_response(now, response)
        self._start_timer(I.TIMER_K, 0.0 if self.reliable else self._layer.timers.timer_k, now)

    TRANSITIONS: ClassVar[Transitions] = {
        S.TRYING: {
            I.TIMER_E: (S.TRYING, _retransmit_trying),
            I.TIMER_F: (S.TERMINATED, Transaction._time_out),
            I.RESPONSE_1XX: (S.PROCEEDING, ClientTransaction._pass_response),
            I.RESPONSE_2XX: (S.COMPLETED, _complete),
            I.RESPONSE_3XX_6XX: (S.COMPLETED, _complete),
            I.TRANSPORT_ERROR: (S.TERMINATED, Transaction._transport_failed),
        },
        S.PROCEEDING: {
            I.TIMER_E: (S.PROCEEDING, _retransmit_proceeding),
            I.TIMER_F: (S.TERMINATED, Transaction._time_out),
            I.RESPONSE_1XX: (S.PROCEEDING, ClientTransaction._pass_response),
            I.RESPONSE_2XX: (S.COMPLETED, _complete),
            I.RESPONSE_3XX_6XX: (S.COMPLETED, _complete),
            I.TRANSPORT_ERROR: (S.TERMINATED, Transaction._transport_failed),
        },
        S.COMPLETED: {
            I.TIMER_K: (S.TERMINATED, None),
        },
    }


class ServerTransaction(Transaction):
    """A server transaction (RFC 3261 §17.2).

    Attributes:
        source: where the request came from (the connection, for reliable transports).
        response_destination: where responses go (:func:`response_destination`).
    """

    __slots__ = ("response_destination", "source")

    def __init__(
        self,
        layer: TransactionLayer,
        key: TransactionKey,
        request: Request,
        source: TransportAddress,
        state: TransactionState,
    ) -> None:
        super().__init__(layer, key, request, state)
        self.source = source
        self.reliable = source.reliable
        self.response_destination = response_destination(request, source)

    @property
    def destination(self) -> TransportAddress:
        """Same as :attr:`response_destination`."""
        return self.response_destination

    def _start(self, now: float) -> None:
        pass

    def _send(self, now: float, response: Response) -> None:
        self.last_response = response
        self._layer._output.append((response, self.response_destination))

    def _resend_last(self, now: float, message: Any) -> None:
        # RFC 3261 §17.2.1, §17.2.2: a retransmitted request gets the last response again.
        if self.last_response is not None:
            self._layer._output.append((self.last_response, self.response_destination))


class InviteServerTransaction(ServerTransaction):
    """INVITE server transaction: RFC 3261 §17.2.1, RFC 6026 §7.1 (ACCEPTED, Timer L).

    The 2xx is sent once through the transaction; retransmitting it until the ACK is the UAS
    core's job (RFC 3261 §13.3.1.4), which sends each retransmission with
    :meth:`TransactionLayer.send_response` as well.
    """

    TIMEOUT_TIMER = "H"
    __slots__ = ()

    def __init__(
        self,
        layer: TransactionLayer,
        key: TransactionKey,
        request: Request,
        source: TransportAddress,
    ) -> None:
        super().__init__(layer, key, request, source, S.PROCEEDING)

    def _start(self, now: float) -> None:
        # RFC 3261 §17.2.1: send 100 Trying unless the TU answers within 200 ms.
        delay = self._layer.trying_delay
        if delay is not None:
            self._start_timer(I.TIMER_TRYING, delay, now)

    def _send_trying(self, now: float, message: Any) -> None:
        self._send(now, _build_trying(self.request))

    def _send_provisional(self, now: float, response: Response) -> None:
        self._layer._cancel_timer(self, I.TIMER_TRYING)
        self._send(now, response)

    def _send_accepted(self, now: float, response: Response) -> None:
        # RFC 6026 §8.5: ACCEPTED absorbs INVITE retransmissions until Timer L.
        self._send(now, response)
        self._start_timer(I.TIMER_L, self._layer.timers.timer_l, now)

    def _send_final(self, now: float, response: Response) -> None:
        # RFC 3261 §17.2.1: Timer G (unreliable only) and Timer H.
        timers = self._layer.timers
        self._send(now, response)
        if not self.reliable:
            self._interval = timers.timer_g
            self._start_timer(I.TIMER_G, self._interval, now)
        self._start_timer(I.TIMER_H, timers.timer_h, now)

    def _retransmit(self, now: float, message: Any) -> None:
        # RFC 3261 §17.2.1: retransmit, then Timer G = min(2*T, T2).
        self._resend_last(now, message)
        self._interval = min(2 * self._interval, self._layer.timers.t2)
        self._start_timer(I.TIMER_G, self._interval, now)

    def _confirm(self, now: float, ack: Request) -> None:
        # RFC 3261 §17.2.1: Timer I is T4 for unreliable transports, zero otherwise.
        self._start_timer(I.TIMER_I, 0.0 if self.reliable else self._layer.timers.timer_i, now)

    def _pass_ack(self, now: float, ack: Request) -> None:
        self._layer._events.append(StrayAckReceived(ack, self.source))

    TRANSITIONS: ClassVar[Transitions] = {
        S.PROCEEDING: {
            I.REQUEST: (S.PROCEEDING, ServerTransaction._resend_last),
            I.TIMER_TRYING: (S.PROCEEDING, _send_trying),
            I.RESPONSE_1XX: (S.PROCEEDING, _send_provisional),
            I.RESPONSE_2XX: (S.ACCEPTED, _send_accepted),
            I.RESPONSE_3XX_6XX: (S.COMPLETED, _send_final),
            I.TRANSPORT_ERROR: (S.TERMINATED, Transaction._transport_failed),
        },
        S.COMPLETED: {
            I.REQUEST: (S.COMPLETED, ServerTransaction._resend_last),
            I.ACK: (S.CONFIRMED, _confirm),
            I.TIMER_G: (S.COMPLETED, _retransmit),
            I.TIMER_H: (S.TERMINATED, Transaction._time_out),
            I.TRANSPORT_ERROR: (S.TERMINATED, Transaction._transport_failed),
        },
        S.CONFIRMED: {
            I.REQUEST: (S.CONFIRMED, None),
            I.ACK: (S.CONFIRMED, None),
            I.TIMER_I: (S.TERMINATED, None),
        },
        S.ACCEPTED: {
            I.REQUEST: (S.ACCEPTED, None),  # RFC 6026 §7.1: absorbed
            I.ACK: (S.ACCEPTED, _pass_ack),
            I.RESPONSE_2XX: (S.ACCEPTED, ServerTransaction._send),
            # The UAS core gives up on its 2xx retransmissions itself (RFC 3261 §13.3.1.4).
            I.TRANSPORT_ERROR: (S.ACCEPTED, Transaction._transport_failed),
            I.TIMER_L: (S.TERMINATED, None),
        },
    }


class NonInviteServerTransaction(ServerTransaction):
    """Non-INVITE server transaction (RFC 3261 §17.2.2)."""

    __slots__ = ()

    def __init__(
        self,
        layer: TransactionLayer,
        key: TransactionKey,
        request: Request,
        source: TransportAddress,
    ) -> None:
        super().__init__(layer, key, request, source, S.TRYING)

    def _send_final(self, now: float, response: Response) -> None:
        # RFC 3261 §17.2.2: Timer J is 64*T1 for unreliable transports, zero otherwise.
        self._send(now, response)
        self._start_timer(I.TIMER_J, 0.0 if self.reliable else self._layer.timers.timer_j, now)

    TRANSITIONS: ClassVar[Transitions] = {
        S.TRYING: {
            I.REQUEST: (S.TRYING, None),  # RFC 3261 §17.2.2: discarded
            I.RESPONSE_1XX: (S.PROCEEDING, ServerTransaction._send),
            I.RESPONSE_2XX: (S.COMPLETED, _send_final),
            I.RESPONSE_3XX_6XX: (S.COMPLETED, _send_final),
            I.TRANSPORT_ERROR: (S.TERMINATED, Transaction._transport_failed),
        },
        S.PROCEEDING: {
            I.REQUEST: (S.PROCEEDING, ServerTransaction._resend_last),
            I.RESPONSE_1XX: (S.PROCEEDING, ServerTransaction._send),
            I.RESPONSE_2XX: (S.COMPLETED, _send_final),
            I.RESPONSE_3XX_6XX: (S.COMPLETED, _send_final),
            I.TRANSPORT_ERROR: (S.TERMINATED, Transaction._transport_failed),
        },
        S.COMPLETED: {
            I.REQUEST: (S.COMPLETED, ServerTransaction._resend_last),
            I.TIMER_J: (S.TERMINATED, None),
            I.TRANSPORT_ERROR: (S.TERMINATED, Transaction._transport_failed),
        },
    }


# --------------------------------------------------------------------------------------------
# The layer
# --------------------------------------------------------------------------------------------
def _rfc2543_key(request: Request, method: str, to_tag: str | None) -> TransactionKey:
    # RFC 3261 §17.2.3: Request-URI, To tag, From tag, Call-ID, CSeq and top Via.
    return (
        str(request.uri),
        to_tag,
        request.from_.tag,
        request.call_id,
        request.cseq.seq,
        str(request.top_via),
        method,
    )


class TransactionLayer:
    """Every transaction of one user agent, driven by messages, time and the UA core.

    Args:
        timers: timer values (T1, T2, T4); RFC 3261 defaults when omitted.
        rng: random source for :meth:`new_branch` (seed it in tests).
        trying_delay: seconds an INVITE server transaction waits for a provisional response
            from the TU before sending 100 Trying itself (RFC 3261 §17.2.1: 200 ms); 0 sends it
            at once, None never.

    Attributes:
        timers: the timer configuration.
        trying_delay: see above.
        rng: the random source.
        now: the ``now`` of the latest call that passed one in.
        dropped: received messages dropped because their Via or CSeq could not be parsed.
    """

    def __init__(
        self,
        timers: TimerConfig | None = None,
        rng: random.Random | None = None,
        *,
        trying_delay: float | None = 0.2,
    ) -> None:
        self.timers = timers if timers is not None else TimerConfig()
        self.rng = rng if rng is not None else random.Random()
        self.trying_delay = trying_delay
        self.now = 0.0
        self.dropped = 0
        self._clients: dict[TransactionKey, ClientTransaction] = {}
        self._servers: dict[TransactionKey, ServerTransaction] = {}
        self._by_destination: dict[TransportAddress, dict[Transaction, None]] = {}
        self._events: deque[TransactionEvent] = deque()
        self._output: list[tuple[Request | Response, TransportAddress]] = []
        # Heap of (deadline, entry id, transaction, timer); an entry is live while
        # transaction._timers[timer] == entry id (lazy deletion).
        self._heap: list[tuple[float, int, Transaction, TransactionInput]] = []
        self._ids = itertools.count()
        self._live_timers = 0

    def __len__(self) -> int:
        """The number of live transactions."""
        return len(self._clients) + len(self._servers)

    def new_branch(self) -> str:
        """A fresh Via branch from :attr:`rng` (see :func:`new_branch`)."""
        return new_branch(self.rng)

    # -- inputs from the UA core ---------------------------------------------------------------
    def send_request(
        self, request: Request, destination: TransportAddress, now: float
    ) -> ClientTransaction:
        """Start a client transaction and send ``request``.

        Args:
            request: the request, with a top Via whose branch starts with ``z9hG4bK``
                (:func:`new_branch`). A CANCEL carries the branch of the request it cancels
                (:func:`build_cancel`) and is a transaction of its own.
            destination: where to send it (resolved by RFC 3263).
            now: the current time.

        Returns:
            The new :class:`InviteClientTransaction` or :class:`NonInviteClientTransaction`.

        Raises:
            TransactionError: for an ACK (sent with :meth:`send_stateless`), a missing or
                pre-RFC 3261 branch, or a branch already used for this method.
        """
        self.now = now
        method = request.method
        if method == "ACK":
            raise TransactionError(
                "ACK is not sent in a transaction (RFC 3261 §17.1.1.3); use send_stateless()"
            )
        try:
            branch = request.top_via.branch
        except SIPParseError as exc:
            raise TransactionError(f"request has no valid Via: {exc}") from exc
        if not branch or not branch.startswith(MAGIC_COOKIE) or branch == MAGIC_COOKIE:
            raise TransactionError(f"Via branch must start with {MAGIC_COOKIE}: {branch!r}")
        key = (branch, method)
        if key in self._clients:
            raise TransactionError(f"a {method} transaction with branch {branch} exists")
        tx: ClientTransaction
        if method == "INVITE":
            tx = InviteClientTransaction(self, key, request, destination)
        else:
            tx = NonInviteClientTransaction(self, key, request, destination)
        self._clients[key] = tx
        self._index(tx, destination)
        tx._start(now)
        return tx

    def send_response(self, transaction: ServerTransaction, response: Response, now: float) -> bool:
        """Send a response through a server transaction.

        Args:
            transaction: the server transaction (from :class:`RequestReceived`).
            response: the response, its Via headers copied from the request.
            now: the current time.

        Returns:
            True when the response was queued; False when the transaction's state discards
            it (RFC 3261 §17.2.2: e.g. a second final response). A 2xx to an INVITE whose
            transaction has terminated is still sent: its retransmissions are the UAS core's.
        """
        self.now = now
        if transaction.state is S.TERMINATED:
            if isinstance(transaction, InviteServerTransaction) and 200 <= response.status < 300:
                self._output.append((response, transaction.response_destination))
                return True
            return False
        return transaction._fire(_response_input(response.status), now, response)

    def send_stateless(self, message: Request | Response, destination: TransportAddress) -> None:
        """Queue a message outside any transaction (ACK for 2xx, stateless responses)."""
        self._output.append((message, destination))

    def report_transport_error(self, target: Transaction | TransportAddress, now: float) -> None:
        """Tell the layer that sending failed (RFC 3261 §17.1.4, §17.2.4).

        Args:
            target: the transaction whose message could not be sent, or a destination: every
                transaction sending there (requests or responses) is told.
            now: the current time.
        """
        self.now = now
        if isinstance(target, Transaction):
            target._fire(I.TRANSPORT_ERROR, now)
            return
        for tx in list(self._by_destination.get(target, ())):
            tx._fire(I.TRANSPORT_ERROR, now)

    # -- inputs from the transport --------------------------------------------------------------
    def receive_response(self, response: Response, source: TransportAddress, now: float) -> None:
        """Match a received response to its client transaction (RFC 3261 §17.1.3).

        Unmatched responses become :class:`StrayResponseReceived`; responses without a
        parsable Via or CSeq are dropped.
        """
        self.now = now
        try:
            key = (response.top_via.branch, response.cseq.method)
        except SIPParseError:
            self.dropped += 1
            return
        tx = self._clients.get(key)
        if tx is None:
            self._events.append(StrayResponseReceived(response, source))
            return
        tx._fire(_response_input(response.status), now, response)

    def receive_request(self, request: Request, source: TransportAddress, now: float) -> None:
        """Match a received request to a server transaction or create one (RFC 3261 §17.2.3).

        Retransmissions are absorbed by their transaction; an ACK that matches nothing
        becomes :class:`StrayAckReceived`; a CANCEL gets a transaction of its own and, when
        it matches an INVITE server transaction, is reported as :class:`CancelReceived`.
        The caller should have validated the request (``request.check()``, answering 400
        statelessly); requests without a parsable Via, CSeq, From, To or Call-ID are dropped.
        ``received``/``rport`` are added to the top Via of new requests (:func:`stamp_received`).
        """
        self.now = now
        method = request.method
        try:
            via = request.top_via
            branch = via.branch
            rfc3261 = branch is not None and branch.startswith(MAGIC_COOKIE)
            if rfc3261:
                host, port = via.sent_by
                key: TransactionKey = (branch, host, port, "INVITE" if method == "ACK" else method)
                tx = self._servers.get(key)
            elif method == "ACK":
                tx = self._match_rfc2543_ack(request)
            else:
                key = _rfc2543_key(request, method, request.to.tag)
                tx = self._servers.get(key)
        except SIPParseError:
            self.dropped += 1
            return
        if method == "ACK":
            if tx is None:
                self._events.append(StrayAckReceived(request, source))
            else:
                tx._fire(I.ACK, now, request)
            return
        if tx is not None:
            tx._fire(I.REQUEST, now, request)
            return
        invite: ServerTransaction | None = None
        try:
            stamp_received(request, source)
            if method == "INVITE":
                new: ServerTransaction = InviteServerTransaction(self, key, request, source)
            else:
                new = NonInviteServerTransaction(self, key, request, source)
            if method == "CANCEL":
                # RFC 3261 §9.2: match as in §17.2.3 but with the INVITE method.
                invite_key = (*key[:-1], "INVITE")
                invite = self._servers.get(invite_key)
        except SIPParseError:
            self.dropped += 1
            return
        self._servers[key] = new
        self._index(new, new.response_destination)
        if method == "CANCEL" and isinstance(invite, InviteServerTransaction):
            assert isinstance(new, NonInviteServerTransaction)
            self._events.append(CancelReceived(invite, request, new))
        else:
            self._events.append(RequestReceived(new))
        new._start(now)

    def _match_rfc2543_ack(self, ack: Request) -> ServerTransaction | None:
        # RFC 3261 §17.2.3: as the INVITE, except that the To tag equals the one of the
        # response. The INVITE had that tag (re-INVITE) or none (initial INVITE).
        to_tag = ack.to.tag
        tx = self._servers.get(_rfc2543_key(ack, "INVITE", to_tag))
        if tx is None and to_tag is not None:
            tx = self._servers.get(_rfc2543_key(ack, "INVITE", None))
        if tx is None or tx.last_response is None or tx.last_response.to.tag != to_tag:
            return None
        return tx

    # -- outputs ------------------------------------------------------------------------------
    def messages_to_send(self) -> list[tuple[Request | Response, TransportAddress]]:
        """Take the queued messages, each with its destination, in order."""
        output = self._output
        self._output = []
        return output

    def next_event(self) -> TransactionEvent | None:
        """Take the next event for the UA core, or None."""
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest timer deadline (absolute, same clock as ``now``), or None."""
        heap = self._heap
        while heap:
            _, entry_id, tx, timer = heap[0]
            if tx._timers.get(timer) == entry_id:
                return heap[0][0]
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        self.now = now
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, entry_id, tx, timer = heapq.heappop(heap)
            if tx._timers.get(timer) != entry_id:
                continue
            del tx._timers[timer]
            self._live_timers -= 1
            tx._fire(timer, now)

    # -- bookkeeping (called by the transactions) ------------------------------------------------
    def _schedule(self, tx: Transaction, timer: TransactionInput, deadline: float) -> None:
        entry_id = next(self._ids)
        if timer not in tx._timers:
            self._live_timers += 1
        tx._timers[timer] = entry_id
        heap = self._heap
        heapq.heappush(heap, (deadline, entry_id, tx, timer))
        if len(heap) > 2 * self._live_timers + _HEAP_SLACK:
            # Drop cancelled entries so the heap stays proportional to the live timers.
            # In place: handle_timer() may be iterating over this list.
            heap[:] = [e for e in heap if e[2]._timers.get(e[3]) == e[1]]
            heapq.heapify(heap)

    def _cancel_timer(self, tx: Transaction, timer: TransactionInput) -> None:
        if tx._timers.pop(timer, None) is not None:
            self._live_timers -= 1

    def _cancel_timers_outside(self, tx: Transaction, row: dict[TransactionInput, Any]) -> None:
        for timer in [t for t in tx._timers if t not in row]:
            del tx._timers[timer]
            self._live_timers -= 1

    def _index(self, tx: Transaction, destination: TransportAddress) -> None:
        bucket = self._by_destination.get(destination)
        if bucket is None:
            self._by_destination[destination] = {tx: None}
        else:
            bucket[tx] = None

    def _remove(self, tx: Transaction) -> None:
        if not tx._alive:
            return
        tx._alive = False
        self._live_timers -= len(tx._timers)
        tx._timers.clear()
        if isinstance(tx, ClientTransaction):
            self._clients.pop(tx.key, None)
            destination = tx.destination
        else:
            assert isinstance(tx, ServerTransaction)
            self._servers.pop(tx.key, None)
            destination = tx.response_destination
        bucket = self._by_destination.get(destination)
        if bucket is not None:
            bucket.pop(tx, None)
            if not bucket:
                del self._by_destination[destination]
        self._events.append(TransactionTerminated(tx))
