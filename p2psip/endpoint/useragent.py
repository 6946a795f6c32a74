"""The user-agent core (RFC 3261 §8), sans-IO.

It sits on the transaction layer: it validates received requests and gives them the default
answers RFC 3261 prescribes (400, 405 with Allow, 416, 420 with Unsupported, 415 with Accept,
481, 482, 501, 505...), builds responses (§8.2.6), fills in the fields of outgoing requests
(§8.1.1), retransmits 2xx responses to INVITE until the ACK arrives (§13.3.1.4) and hands
everything else to the application as events.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from p2psip.endpoint.addresses import DEFAULT_PORTS, TransportAddress
from p2psip.endpoint.headers import _NAME_CACHE, canonical_name, name_info
from p2psip.endpoint.message import KNOWN_METHODS, Headers, Request, Response, _split_head
from p2psip.endpoint.transaction import (
    CancelReceived,
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    StrayAckReceived,
    StrayResponseReceived,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimedOut,
    TransportFailed,
    new_branch,
    stamp_received,
)
from p2psip.errors import SIPParseError
from p2psip.timers import TimerConfig

__all__ = [
    "AckReceived",
    "AckTimedOut",
    "ClientTransactionEnded",
    "FinalResponseReceived",
    "IncomingRequest",
    "ProvisionalResponseReceived",
    "UserAgentConfig",
    "UserAgentCore",
    "UserAgentEvent",
    "random_token",
]


def random_token(rng: random.Random, length: int = 16) -> str:
    """A random lower-case hex token of ``length`` digits (tags, Call-IDs, branches)."""
    return f"{rng.getrandbits(4 * length):0{length}x}"


@dataclass(frozen=True)
class UserAgentConfig:
    """What a UA supports and how it names itself.

    Attributes:
        allow: methods answered (others known get 405 with this list, unknown ones 501).
        supported: option tags this UA supports (RFC 3261 §8.2.2.3; anything else in
            Require gets 420).
        accept: body types accepted in requests that carry one (others get 415).
        user_agent: the User-Agent / Server header value (empty string: none).
        timers: SIP timer values.
        trying_delay: seconds before a server INVITE transaction sends 100 Trying itself.
    """

    allow: tuple[str, ...] = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "MESSAGE")
    supported: tuple[str, ...] = ()
    accept: tuple[str, ...] = ("application/sdp", "text/plain")
    user_agent: str = "p2psip/0.1"
    timers: TimerConfig = field(default_factory=TimerConfig)
    trying_delay: float = 0.2


# -- events to the application -------------------------------------------------------------
class UserAgentEvent:
    """Base class of the UA core's events."""


@dataclass(frozen=True)
class IncomingRequest(UserAgentEvent):
    """A valid request for the application; answer it with :meth:`UserAgentCore.respond`.

    Attributes:
        transaction: the server transaction (None for an ACK).
        request: the request.
        source: where it came from.
    """

    transaction: ServerTransaction | None
    request: Request
    source: TransportAddress


@dataclass(frozen=True)
class RequestCancelled(UserAgentEvent):
    """A CANCEL matched a pending INVITE; the core already answered 200 to the CANCEL and
    487 to the INVITE (RFC 3261 §9.2)."""

    transaction: ServerTransaction
    request: Request


@dataclass(frozen=True)
class AckReceived(UserAgentEvent):
    """The ACK for a 2xx response arrived (the 2xx retransmissions stopped)."""

    request: Request
    source: TransportAddress


@dataclass(frozen=True)
class AckTimedOut(UserAgentEvent):
    """No ACK came for a 2xx to INVITE within 64*T1 (RFC 3261 §13.3.1.4): the dialog must be
    ended with a BYE."""

    response: Response


@dataclass(frozen=True)
class ProvisionalResponseReceived(UserAgentEvent):
    """A 1xx response to one of our requests."""

    transaction: ClientTransaction
    response: Response


@dataclass(frozen=True)
class FinalResponseReceived(UserAgentEvent):
    """A final response to one of our requests (2xx retransmissions included for INVITE)."""

    transaction: ClientTransaction
    response: Response
    retransmission: bool = False


@dataclass(frozen=True)
class ClientTransactionEnded(UserAgentEvent):
    """A client transaction ended without a final response.

    Attributes:
        transaction: the transaction.
        reason: ``"timeout"`` (Timer B/F) or ``"transport"`` (could not send).
        status: the status the RFC says to act as if received (408 or 503, §8.1.3.1).
    """

    transaction: ClientTransaction
    reason: str
    status: int


@dataclass
class _PendingTwoXX:
    response: Response
    destination: TransportAddress
    interval: float
    next_at: float
    give_up_at: float
    done: bool = False


class UserAgentCore:
    """The sans-IO UA core.

    Inputs: :meth:`receive_message`, :meth:`receive_bad_message`, :meth:`send_request`,
    :meth:`respond`, :meth:`handle_timer`. Outputs: :meth:`messages_to_send`,
    :meth:`next_event`, :meth:`get_timer`.

    Args:
        config: capabilities and timers.
        rng: source of tags, branches and Call-IDs (seed it in tests).
    """

    def __init__(
        self, config: UserAgentConfig | None = None, rng: random.Random | None = None
    ) -> None:
        self.config = config or UserAgentConfig()
        self.rng = rng or random.Random()
        self.transactions = TransactionLayer(
            self.config.timers, self.rng, trying_delay=self.config.trying_delay
        )
        self._events: deque[UserAgentEvent] = deque()
        self._out: list[tuple[Request | Response, TransportAddress]] = []
        self._local: dict[str, TransportAddress] = {}
        self._twoxx: dict[tuple[str, int], _PendingTwoXX] = {}
        self._twoxx_heap: list[tuple[float, tuple[str, int]]] = []
        self.known_dialog = lambda request: True  # replaced by the dialog-aware layer above
        # RFC 3261 §8.2.2.2: (From tag, Call-ID, CSeq) of the server transactions in progress.
        self._ongoing: dict[tuple[str, str, int, str], ServerTransaction] = {}
        allow = self.config.allow
        self._allow_header = ", ".join(allow)
        self._allowed = frozenset(allow)
        self._supported = frozenset(t.lower() for t in self.config.supported)
        self._accept = frozenset(a.lower() for a in self.config.accept)
        self.stats = {"received": 0, "rejected": 0, "bad": 0}

    # -- configuration --------------------------------------------------------------------
    def extend_capabilities(
        self,
        *,
        allow: Iterable[str] = (),
        supported: Iterable[str] = (),
        accept: Iterable[str] = (),
    ) -> None:
        """Add methods to Allow, option tags to Supported and body types to Accept.

        For a layer above the core (e.g. INVITE sessions) that handles more than the
        configuration says: UPDATE and INFO, the ``timer`` option tag (RFC 4028)...
        Values already present are kept once, in their place.
        """
        cfg = self.config
        self.config = replace(
            cfg,
            allow=tuple(dict.fromkeys([*cfg.allow, *(m.upper() for m in allow)])),
            supported=tuple(dict.fromkeys([*cfg.supported, *(t.lower() for t in supported)])),
            accept=tuple(dict.fromkeys([*cfg.accept, *(a.lower() for a in accept)])),
        )
        self._allow_header = ", ".join(self.config.allow)
        self._allowed = frozenset(self.config.allow)
        self._supported = frozenset(t.lower() for t in self.config.supported)
        self._accept = frozenset(a.lower() for a in self.config.accept)

    def set_local_address(self, address: TransportAddress) -> None:
        """Tell the core what to put in Via/Contact for a transport (after binding)."""
        self._local[address.transport] = address

    def local_address(self, transport: str) -> TransportAddress:
        """The bound address used for ``transport``."""
        try:
            return self._local[transport]
        except KeyError:
            raise ValueError(f"no {transport} listener") from None

    # -- outputs ----------------------------------------------------------------------------
    def messages_to_send(self) -> list[tuple[Request | Response, TransportAddress]]:
        """Drain the messages to transmit, with their destinations."""
        self._collect()
        out, self._out = self._out, []
        return out

    def next_event(self) -> UserAgentEvent | None:
        """The next event for the application, or None."""
        if not self._events:
            self._collect()
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The earliest absolute time at which :meth:`handle_timer` must be called."""
        t = self.transactions.get_timer()
        heap = self._twoxx_heap
        while heap and (heap[0][1] not in self._twoxx or self._twoxx[heap[0][1]].done):
            heapq.heappop(heap)
        if heap and (t is None or heap[0][0] < t):
            return heap[0][0]
        return t

    def handle_timer(self, now: float) -> None:
        """Run what is due at ``now``."""
        self.transactions.handle_timer(now)
        heap = self._twoxx_heap
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            pending = self._twoxx.get(key)
            if pending is None or pending.done:
                continue
            if now >= pending.give_up_at:
                # RFC 3261 §13.3.1.4: no ACK within 64*T1 -> the session ends; the
                # application is told so that it sends the BYE.
                pending.done = True
                del self._twoxx[key]
                self._events.append(AckTimedOut(pending.response))
                continue
            self._out.append((pending.response, pending.destination))
            pending.interval = min(2 * pending.interval, self.config.timers.t2)
            pending.next_at = min(now + pending.interval, pending.give_up_at)
            heapq.heappush(heap, (pending.next_at, key))
        self._collect()

    # -- receiving --------------------------------------------------------------------------
    def receive_message(
        self, message: Request | Response, source: TransportAddress, now: float
    ) -> None:
        """Process a parsed message from the transport."""
        self.stats["received"] += 1
        if isinstance(message, Response):
            try:
                message.check()
            except SIPParseError:
                self.stats["bad"] += 1
                return  # RFC 4475 §3.1.2.5: a malformed response is discarded
            if len(message.vias) > 1:
                self.stats["bad"] += 1
                return  # RFC 3261 §8.1.3.3: more than one Via, not for us (RFC 4475 bcast)
            self.transactions.receive_response(message, source, now)
            self._collect()
            return
        try:
            message.check()
        except SIPParseError as error:
            self.stats["bad"] += 1
            status, reason, headers = error.status, error.reason, []
            if status == 400 and message.method not in KNOWN_METHODS and self._cseq_only(message):
                # RFC 4475 §3.1.2.18 (mismatch02): 501 preferred, with Allow as in §8.2.1.
                status, reason, headers = 501, None, [("Allow", self._allow_header)]
            if message.method != "ACK":
                self._reply_stateless(message, source, status, reason, headers)
            return
        self.transactions.receive_request(message, source, now)
        self._collect()

    def receive_bad_message(
        self, data: bytes | None, error: SIPParseError, source: TransportAddress, now: float
    ) -> None:
        """A message the transport could not parse: answer it statelessly when possible."""
        self.stats["bad"] += 1
        if not data:
            return
        response = error_response_for(data, error.status, error.reason, self.config.user_agent)
        if response is not None:
            self._out.append((response, _stateless_destination(response, source)))

    @staticmethod
    def _cseq_only(request: Request) -> bool:
        try:
            return request.cseq.method != request.method
        except SIPParseError:
            return False

    # -- answering --------------------------------------------------------------------------
    def _validate(self, request: Request) -> tuple[int, str | None, list[tuple[str, str]]] | None:
        """The default rejection for a request, or None when the application should see it."""
        method = request.method
        if method not in self._allowed:
            allow = [("Allow", self._allow_header)]
            if method in KNOWN_METHODS:
                return 405, None, allow
            return 501, None, allow  # RFC 3261 §8.2.1: unknown method
        uri = request.uri
        if uri.scheme not in ("sip", "sips", "tel"):
            return 416, None, []  # §8.2.2.1
        if method == "CANCEL":
            # §9.2: it matched no INVITE transaction (a match arrives as CancelReceived).
            return 481, None, []
        if method not in ("ACK", "CANCEL"):
            required = request.tokens("Require")
            unsupported = [t for t in required if t not in self._supported]
            if unsupported:
                return 420, None, [("Unsupported", ", ".join(unsupported))]  # §8.2.2.3
        if request.body and method not in ("ACK",):
            ctype = request.content_type or "application/sdp"
            if ctype not in self._accept:
                accept = ", ".join(sorted(self._accept))
                return 415, None, [("Accept", accept)]  # §8.2.3
        if method == "INVITE":
            accepts = request.headers.get_all("Accept")
            if accepts:
                types = {a.split(";", 1)[0].strip().lower() for a in accepts}
                if not types & {"application/sdp", "application/*", "*/*"}:
                    # RFC 4475 §3.3.15: 406 with a Warning (or 400).
                    return 406, None, [("Warning", '399 - "application/sdp is required"')]
        if request.to.tag is not None and method != "ACK" and not self.known_dialog(request):
            return 481, None, []  # §12.2.2
        return None

    def _handle_request(self, tx: ServerTransaction, source: TransportAddress, now: float) -> None:
        request = tx.request
        rejection = self._validate(request) or self._merged(tx)
        if rejection is not None:
            status, reason, headers = rejection
            self.stats["rejected"] += 1
            self.respond(tx, status, reason, headers=headers, now=now)
            return
        self._events.append(IncomingRequest(tx, request, source))

    @staticmethod
    def _merge_key(request: Request) -> tuple[str, str, int, str] | None:
        tag = request.from_.tag
        if request.to.tag is not None or tag is None:
            return None
        cseq = request.cseq
        return tag, request.call_id, cseq.seq, cseq.method

    def _merged(
        self, tx: ServerTransaction
    ) -> tuple[int, str | None, list[tuple[str, str]]] | None:
        """RFC 3261 §8.2.2.2: a request without To tag whose From tag, Call-ID and CSeq are
        those of a server transaction in progress that it did not match (a forked copy that
        came back by another path) gets 482."""
        key = self._merge_key(tx.request)
        if key is not None and self._ongoing.setdefault(key, tx) is not tx:
            return 482, None, []
        return None

    def build_response(
        self,
        request: Request,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        to_tag: str | None = None,
    ) -> Response:
        """Build a response per RFC 3261 §8.2.6.2 (Via, From, To, Call-ID, CSeq copied; a To
        tag added when absent and the status is above 100)."""
        rh = request.headers
        items: list[tuple[str, str]] = [("Via", v) for v in rh.get_lines("Via")]
        items.append(("From", rh.get("From") or ""))
        to = rh.get("To") or ""
        if status > 100 and request.to.tag is None:
            to = f"{to};tag={to_tag or random_token(self.rng, 10)}"
        items.append(("To", to))
        items.append(("Call-ID", rh.get("Call-ID") or ""))
        items.append(("CSeq", rh.get("CSeq") or ""))
        if status == 100 and "Timestamp" in rh:
            items.append(("Timestamp", rh.get("Timestamp") or ""))  # §8.2.6.1
        if self.config.user_agent:
            items.append(("Server", self.config.user_agent))
        items.extend((canonical_name(n), str(v)) for n, v in headers)
        if body:
            items.append(("Content-Type", content_type or "application/sdp"))
        return Response(status, reason, Headers.from_canonical(items), body)

    def respond(
        self,
        transaction: ServerTransaction,
        status: int,
        reason: str | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        to_tag: str | None = None,
        now: float,
    ) -> Response:
        """Answer a request through its server transaction.

        A 2xx to INVITE is retransmitted by the core until the ACK arrives (§13.3.1.4).

        Returns:
            The response sent.
        """
        request = transaction.request
        response = self.build_response(request, status, reason, headers, body, content_type, to_tag)
        self.send_response(transaction, response, now)
        return response

    def send_response(self, transaction: ServerTransaction, response: Response, now: float) -> None:
        """Send a response built by the caller through its server transaction."""
        sent = self.transactions.send_response(transaction, response, now)
        # Not sent (e.g. a 200 after the 487 to a CANCEL): nothing to retransmit.
        if sent and transaction.request.method == "INVITE" and 200 <= response.status < 300:
            key = (response.call_id, response.cseq.seq)
            t1 = self.config.timers.t1
            destination = transaction.response_destination
            if not destination.reliable:
                pending = _PendingTwoXX(response, destination, t1, now + t1, now + 64 * t1)
                self._twoxx[key] = pending
                heapq.heappush(self._twoxx_heap, (pending.next_at, key))
        self._collect()

    def _reply_stateless(
        self,
        request: Request,
        source: TransportAddress,
        status: int,
        reason: str | None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        try:
            stamp_received(request, source)  # RFC 3261 §18.2.1, RFC 3581 §4
        except SIPParseError:
            pass  # the top Via is unreadable: the answer goes back to the source
        try:
            response = self.build_response(request, status, reason, headers)
        except SIPParseError:
            data = request.head_bytes()
            fallback = error_response_for(data, status, reason, self.config.user_agent)
            if fallback is None:
                return
            response = fallback
        self._out.append((response, _stateless_destination(response, source)))

    # -- sending requests -------------------------------------------------------------------
    def new_call_id(self) -> str:
        """A fresh Call-ID."""
        return random_token(self.rng, 20)

    def new_tag(self) -> str:
        """A fresh From/To tag."""
        return random_token(self.rng, 10)

    def prepare_request(self, request: Request, transport: str) -> Request:
        """Add the top Via (with rport, RFC 3581) and the defaults a request needs."""
        local = self.local_address(transport)
        branch = new_branch(self.rng)
        if request.method == "CANCEL" or request.method == "ACK":
            existing = request.headers.get_lines("Via")
            if existing:
                return request
        request.headers.prepend(
            "Via",
            f"SIP/2.0/{transport.upper()} {local.host_for_uri}:{local.port};rport;branch={branch}",
        )
        if "Max-Forwards" not in request.headers:
            request.headers.add("Max-Forwards", "70")
        if self.config.user_agent and "User-Agent" not in request.headers:
            request.headers.add("User-Agent", self.config.user_agent)
        request.invalidate()
        return request

    def send_request(
        self, request: Request, destination: TransportAddress, now: float
    ) -> ClientTransaction:
        """Send a request statefully (a client transaction). ACK goes out stateless."""
        if not request.headers.get_lines("Via"):
            self.prepare_request(request, destination.transport)
        tx = self.transactions.send_request(request, destination, now)
        self._collect()
        return tx

    def send_stateless(self, message: Request | Response, destination: TransportAddress) -> None:
        """Queue a message with no transaction (ACK for 2xx, stateless answers)."""
        self._out.append((message, destination))

    def new_request(
        self,
        method: str,
        uri: str,
        from_: str,
        to: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        call_id: str | None = None,
        cseq: int = 1,
    ) -> Request:
        """Build an out-of-dialog request (RFC 3261 §8.1.1)."""
        items = [
            ("From", f"{from_};tag={self.new_tag()}"),
            ("To", to),
            ("Call-ID", call_id or self.new_call_id()),
            ("CSeq", f"{cseq} {method}"),
            ("Max-Forwards", "70"),
        ]
        items.extend(headers)
        if body:
            items.append(("Content-Type", content_type or "application/sdp"))
        return Request(method, uri, Headers(items), body)

    # -- plumbing ---------------------------------------------------------------------------
    def _collect(self) -> None:
        tl = self.transactions
        self._out.extend(tl.messages_to_send())
        while (event := tl.next_event()) is not None:
            if isinstance(event, RequestReceived):
                tx = event.transaction
                if tx.request.method == "ACK":  # pragma: no cover - ACKs arrive as stray
                    continue
                self._handle_request(tx, tx.source, tl.now)
            elif isinstance(event, ResponseReceived):
                response = event.response
                if response.status < 200:
                    self._events.append(ProvisionalResponseReceived(event.transaction, response))
                else:
                    self._events.append(
                        FinalResponseReceived(event.transaction, response, event.retransmission)
                    )
            elif isinstance(event, StrayAckReceived):
                request = event.request
                try:
                    key = (request.call_id, request.cseq.seq)
                except SIPParseError:
                    continue
                pending = self._twoxx.pop(key, None)
                if pending is not None:
                    pending.done = True
                self._events.append(AckReceived(request, event.source))
            elif isinstance(event, CancelReceived):
                # RFC 3261 §9.2: 200 to the CANCEL, 487 to the INVITE if still pending; both
                # SHOULD carry the To tag of the INVITE's response.
                invite_tx = event.transaction
                last = invite_tx.last_response if invite_tx is not None else None
                to_tag = (last.to.tag if last is not None else None) or self.new_tag()
                self.transactions.send_response(
                    event.cancel_transaction,
                    self.build_response(event.cancel_transaction.request, 200, to_tag=to_tag),
                    tl.now,
                )
                if invite_tx is not None and (last is None or last.status < 200):
                    self.transactions.send_response(
                        invite_tx,
                        self.build_response(invite_tx.request, 487, to_tag=to_tag),
                        tl.now,
                    )
                    self._events.append(RequestCancelled(invite_tx, invite_tx.request))
                self._out.extend(tl.messages_to_send())
            elif isinstance(event, StrayResponseReceived):
                response = event.response
                if response.cseq.method == "INVITE" and 200 <= response.status < 300:
                    self._events.append(StrayTwoXXReceived(response, event.source))
            elif isinstance(event, TransactionTimedOut):
                tx = event.transaction
                if isinstance(tx, ClientTransaction):
                    self._events.append(ClientTransactionEnded(tx, "timeout", 408))
            elif isinstance(event, TransportFailed):
                tx = event.transaction
                if isinstance(tx, ClientTransaction):
                    self._events.append(ClientTransactionEnded(tx, "transport", 503))
            elif isinstance(event, TransactionTerminated):
                ended = event.transaction
                if isinstance(ended, ServerTransaction):
                    key = self._merge_key(ended.request)
                    if key is not None and self._ongoing.get(key) is ended:
                        del self._ongoing[key]


@dataclass(frozen=True)
class StrayTwoXXReceived(UserAgentEvent):
    """A 2xx to INVITE that matched no transaction (retransmission or forked answer)."""

    response: Response
    source: TransportAddress


def error_response_for(
    data: bytes, status: int, reason: str | None, server: str = ""
) -> Response | None:
    """Build an error response to raw request bytes that did not parse, copying the raw
    Via, From, To, Call-ID and CSeq lines (RFC 3261 §8.2.6). None when the bytes are a
    response or have no Via line (nothing can be sent back); a Via that does not parse is
    copied as it is and the answer goes to the source (:func:`_stateless_destination`)."""
    head, _, _ = _split_head(data.lstrip(b"\r\n"))
    text = head.decode("utf-8", "surrogateescape")
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].startswith("SIP/"):
        return None
    wanted = {"via", "from", "to", "call-id", "cseq"}
    items: list[tuple[str, str]] = []
    current: list[str] | None = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and current is not None:
            current[1] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep:
            current = None
            continue
        try:
            key, canon = _NAME_CACHE.get(name) or name_info(name)
        except SIPParseError:
            current = None
            continue
        if key in wanted:
            current = [canon, value.strip()]
            items.append(current)  # type: ignore[arg-type]
        else:
            current = None
    pairs = [(n, v) for n, v in items]  # type: ignore[misc]
    if not any(n == "Via" for n, _ in pairs):
        return None
    if server:
        pairs.append(("Server", server))
    return Response(status, reason, Headers(pairs))


def _stateless_destination(
    message: Request | Response, source: TransportAddress
) -> TransportAddress:
    """Where a stateless answer goes (RFC 3261 §18.2.2): the source host (§18.2.1: it is
    ``received``), the source port with ``rport`` (RFC 3581 §4), else the sent-by port; the
    source itself over a stream or when the top Via cannot be read."""
    if source.reliable:
        return source
    try:
        via = message.top_via
    except SIPParseError:
        return source
    if "rport" in via.params:
        return source
    port = via.port or DEFAULT_PORTS.get(source.transport, 5060)
    return TransportAddress(source.transport, source.host, port)
