"""asyncio front end of the user-agent core: sockets, the clock and futures.

Example:
    >>> ua = UserAgent()                                             # doctest: +SKIP
    >>> await ua.listen("udp", "127.0.0.1", 5060)                    # doctest: +SKIP
    >>> response = await ua.request("OPTIONS", "sip:bob@127.0.0.1:5080")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from p2psip.endpoint.addresses import DEFAULT_PORTS, TransportAddress
from p2psip.endpoint.aio.transport import TransportManager
from p2psip.endpoint.dialog import Dialog
from p2psip.endpoint.digest import DigestClient, parse_challenge
from p2psip.endpoint.message import Request, Response
from p2psip.endpoint.transaction import ClientTransaction, ServerTransaction
from p2psip.endpoint.uri import URI, parse_uri
from p2psip.endpoint.useragent import (
    AckReceived,
    ClientTransactionEnded,
    FinalResponseReceived,
    IncomingRequest,
    ProvisionalResponseReceived,
    RequestCancelled,
    StrayTwoXXReceived,
    UserAgentConfig,
    UserAgentCore,
)
from p2psip.errors import (
    AuthenticationError,
    P2PSIPError,
    SIPParseError,
    TransactionTimeout,
    TransportError,
)

__all__ = ["CallFailed", "OutgoingCall", "ServerRequest", "UserAgent"]


class CallFailed(P2PSIPError):
    """An INVITE was answered with a final non-2xx response.

    Attributes:
        response: that response.
    """

    def __init__(self, response: Response) -> None:
        super().__init__(f"call failed: {response.status} {response.reason}")
        self.response = response


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


log = logging.getLogger("p2psip.sip")
# RFC 3261 §18.1.1: requests within 200 bytes of the path MTU (1500) go over TCP.
UDP_SIZE_LIMIT = 1300


@dataclass
class ServerRequest:
    """A received request waiting for the application's answer.

    Attributes:
        request: the request.
        source: where it came from.
    """

    request: Request
    source: TransportAddress
    transaction: ServerTransaction
    _ua: UserAgent

    def respond(
        self,
        status: int,
        reason: str | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        to_tag: str | None = None,
    ) -> Response:
        """Send a response (final or provisional)."""
        ua = self._ua
        response = ua.core.respond(
            self.transaction,
            status,
            reason,
            headers=headers,
            body=body,
            content_type=content_type,
            to_tag=to_tag,
            now=ua.now(),
        )
        ua._flush()
        return response


Handler = Callable[[ServerRequest], Awaitable[None] | None]


class OutgoingCall:
    """An INVITE dialog we created (signalling only; media is the session layer's job).

    Attributes:
        request: the INVITE sent.
        response: the final 2xx that established the dialog.
        dialog: the dialog state (route set, remote target, CSeq).
    """

    def __init__(
        self,
        ua: UserAgent,
        request: Request,
        response: Response,
        dialog: Dialog,
        destination: TransportAddress,
    ) -> None:
        self._ua = ua
        self.request = request
        self.response = response
        self.dialog = dialog
        self.destination = destination

    async def request_in_dialog(
        self,
        method: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        """Send a request inside the dialog and wait for its final response."""
        request = self.dialog.create_request(method, headers, body, content_type)
        response = await self._ua.send(
            request, self._ua.route_destination(self.dialog, self.destination)
        )
        self.dialog.receive_response(request, response)
        return response

    async def bye(self) -> Response:
        """Hang up (BYE, RFC 3261 §15.1.1)."""
        return await self.request_in_dialog("BYE")


class UserAgent:
    """A SIP user agent on asyncio: transports, a clock, handlers per method.

    Args:
        config: capabilities and timers of the core.
        rng: random source (seed for repeatable traces).
        trace: optional callable receiving ``(direction, data, address)`` for every message
            sent (``"out"``) or received (``"in"``), e.g. to print a SIP trace.
    """

    def __init__(
        self,
        config: UserAgentConfig | None = None,
        *,
        rng: random.Random | None = None,
        trace: Callable[[str, bytes, TransportAddress], None] | None = None,
    ) -> None:
        self.core = UserAgentCore(config, rng)
        self._handlers: dict[str, Handler] = {}
        self._pending: dict[int, tuple[asyncio.Future[Response], ClientTransaction]] = {}
        self._progress: dict[int, Callable[[Response], None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # set when first used
        self.transports: TransportManager | None = None
        self.trace = trace
        self.on_ack: Callable[[AckReceived], None] | None = None
        #: called when a CANCEL ended a pending INVITE (the core answered 200 and 487).
        self.on_cancel: Callable[[RequestCancelled], None] | None = None
        #: called for a 2xx to an INVITE that no waiting request and no sent ACK accounts
        #: for: a later fork's 2xx (RFC 3261 §13.2.2.4), or one arriving after its transaction.
        self.on_stray_2xx: Callable[[Response, TransportAddress | None], None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # ACKs of answered INVITEs by (Call-ID, CSeq, To tag), re-sent for retransmitted 2xx
        # for 64*T1 (§13.2.2.4); the To tag keeps forks apart. Insertion-ordered, so pruning
        # looks only at the oldest entries.
        self._acks: dict[tuple[str, int, str], tuple[Request, TransportAddress, float]] = {}
        self._last_authenticated: Request | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def now(self) -> float:
        """The loop's monotonic clock, the only clock the core sees."""
        assert self._loop is not None
        return self._loop.time()

    async def _ensure(self) -> TransportManager:
        if self.transports is None:
            self._loop = asyncio.get_running_loop()
            self.transports = await TransportManager.create(
                self._on_message, self._on_bad_message, on_send_error=self._on_send_error
            )
        return self.transports

    async def listen(
        self, transport: str, host: str, port: int = 0, ssl_context: object | None = None
    ) -> TransportAddress:
        """Bind a listener and use it for Via/Contact of that transport."""
        mgr = await self._ensure()
        address = await mgr.listen(transport, host, port, ssl_context=ssl_context)
        self.core.set_local_address(address)
        return address

    async def close(self) -> None:
        """Stop timers and close every transport."""
        if self._timer is not None:
            self._timer.cancel()
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self.transports is not None:
            await self.transports.close()

    async def __aenter__(self) -> UserAgent:
        await self._ensure()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- handlers ---------------------------------------------------------------------------
    def on(self, method: str, handler: Handler) -> None:
        """Route requests of ``method`` to ``handler`` (sync or async). Without a handler,
        OPTIONS gets 200 with Allow/Accept/Supported and everything else 501/405."""
        self._handlers[method.upper()] = handler

    # -- client side ------------------------------------------------------------------------
    def destination_for(self, uri: URI, transport: str | None = None) -> TransportAddress:
        """The transport address for a URI with a numeric or resolvable host (no DNS SRV
        here: the locator layer does RFC 3263)."""
        t = transport or uri.transport or ("tls" if uri.scheme == "sips" else "udp")
        port = uri.port or DEFAULT_PORTS.get(t, 5060)
        host = uri.params.get("maddr") or uri.host_plain
        return TransportAddress(t, host, port)

    async def request(
        self,
        method: str,
        uri: str | URI,
        *,
        from_: str | None = None,
        to: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        destination: TransportAddress | None = None,
        credentials: tuple[str, str] | None = None,
        on_provisional: Callable[[Response], None] | None = None,
    ) -> Response:
        """Send an out-of-dialog request and wait for its final response.

        A 401/407 challenge is answered once with ``credentials`` (user, password).

        Raises:
            TransactionTimeout: no final response (Timer B/F).
            TransportError: the request could not be sent.
            AuthenticationError: the credentials were refused.
        """
        await self._ensure()
        target = uri if isinstance(uri, URI) else parse_uri(uri)
        dest = destination or self.destination_for(target)
        local = self.core.local_address(
            dest.transport if dest.transport in self.core._local else next(iter(self.core._local))
        )
        from_ = from_ or f"<sip:p2psip@{local.host_for_uri}:{local.port}>"
        to = to or f"<{target}>"
        request = self.core.new_request(method, str(target), from_, to, headers, body, content_type)
        if "Contact" not in request.headers and method in ("INVITE", "REGISTER", "SUBSCRIBE"):
            request.headers.add(
                "Contact",
                f"<sip:p2psip@{local.host_for_uri}:{local.port};transport={dest.transport}>",
            )
        response = await self.send(request, dest, on_provisional=on_provisional)
        if response.status in (401, 407) and credentials is not None:
            response = await self._authenticate(
                request, response, dest, credentials, on_provisional
            )
        return response

    def route_destination(self, dialog: Dialog, fallback: TransportAddress) -> TransportAddress:
        """Where an in-dialog request goes: the first route or the remote target (numeric
        hosts; a host name falls back to the address the dialog was set up with)."""
        hop = dialog.next_hop()
        dest = self.destination_for(hop, hop.transport or fallback.transport)
        if not _is_ip(dest.host):
            return fallback
        return dest

    async def invite(
        self,
        uri: str | URI,
        *,
        sdp: bytes,
        from_: str | None = None,
        to: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        destination: TransportAddress | None = None,
        credentials: tuple[str, str] | None = None,
        on_provisional: Callable[[Response], None] | None = None,
    ) -> OutgoingCall:
        """Send an INVITE with an SDP offer; on 2xx send the ACK and return the call.

        Raises:
            CallFailed: a final non-2xx response (``.response`` holds it).
            TransactionTimeout, TransportError: as for :meth:`request`.
        """
        await self._ensure()
        target = uri if isinstance(uri, URI) else parse_uri(uri)
        dest = destination or self.destination_for(target)
        local = self.core.local_address(dest.transport)
        contact = f"<sip:p2psip@{local.host_for_uri}:{local.port};transport={dest.transport}>"
        request = self.core.new_request(
            "INVITE",
            str(target),
            from_ or f"<sip:p2psip@{local.host_for_uri}>",
            to or f"<{target}>",
            [("Contact", contact), *headers],
            sdp,
            "application/sdp",
        )
        response = await self.send(request, dest, on_provisional=on_provisional)
        if response.status in (401, 407) and credentials is not None:
            response = await self._authenticate(
                request, response, dest, credentials, on_provisional
            )
            request = self._last_authenticated or request
        if not 200 <= response.status < 300:
            raise CallFailed(response)
        dialog = Dialog.from_uac(request, response)
        self._ack(dialog, response, dest)
        return OutgoingCall(self, request, response, dialog, dest)

    def _ack(self, dialog: Dialog, response: Response, fallback: TransportAddress) -> None:
        self.send_ack(dialog, response, fallback)

    def send_ack(
        self,
        dialog: Dialog,
        response: Response,
        fallback: TransportAddress,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """ACK a 2xx to an INVITE of ``dialog`` and re-send that ACK for every retransmission
        of the 2xx during 64*T1 (RFC 3261 §13.2.2.4).

        Args:
            dialog: the dialog the 2xx confirmed (one per fork).
            response: the 2xx.
            fallback: where the INVITE went (used when the next hop is a host name).
            headers: extra header lines (the INVITE's credentials).
            body: the answer, when the 2xx carried the offer.
            content_type: the body's type.

        Returns:
            The ACK sent.
        """
        # RFC 3261 §13.2.2.4: the UAC core ACKs every 2xx, retransmissions included.
        ack = dialog.create_ack(response.cseq.seq, headers, body, content_type)
        dest = self.route_destination(dialog, fallback)
        self.core.prepare_request(ack, dest.transport)
        now = self.now()
        horizon = now - 64 * self.core.config.timers.t1
        acks = self._acks
        while acks:
            oldest = next(iter(acks))
            if acks[oldest][2] > horizon:
                break
            del acks[oldest]
        acks[(response.call_id, response.cseq.seq, response.to.tag or "")] = (ack, dest, now)
        self.send_stateless(ack, dest)
        return ack

    async def _authenticate(
        self,
        request: Request,
        response: Response,
        dest: TransportAddress,
        credentials: tuple[str, str],
        on_provisional: Callable[[Response], None] | None,
    ) -> Response:
        """Answer a 401/407 with digest credentials (RFC 3261 §22.2); a challenge marked
        ``stale`` is answered again once (RFC 7616 §3.3), any other second challenge means
        the credentials were refused."""
        client = DigestClient(credentials[0], credentials[1], rng=self.core.rng)
        current = request
        for attempt in range(2):
            header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            answer = "Authorization" if response.status == 401 else "Proxy-Authorization"
            challenges = [parse_challenge(v) for v in response.headers.get_lines(header)]
            if attempt and not any(c.stale for c in challenges):
                break
            challenge = client.choose(challenges)
            retry = Request(current.method, current.uri, current.headers.copy(), current.body)
            retry.headers.remove("Via")
            retry.headers.remove(answer)
            cseq = current.cseq
            retry.headers.set("CSeq", f"{cseq.seq + 1} {cseq.method}")
            retry.headers.add(
                answer, client.authorize(challenge, current.method, str(current.uri), current.body)
            )
            retry.invalidate()
            self._last_authenticated = retry
            current = retry
            response = await self.send(retry, dest, on_provisional=on_provisional)
            if response.status not in (401, 407):
                return response
        raise AuthenticationError(
            f"{request.method} to {request.uri}: credentials for "
            f"{credentials[0]!r} refused ({response.status} {response.reason})"
        )

    async def send(
        self,
        request: Request,
        destination: TransportAddress,
        *,
        on_provisional: Callable[[Response], None] | None = None,
    ) -> Response:
        """Send a prepared request through a client transaction; wait for the final response."""
        await self._ensure()
        if (
            destination.transport == "udp"
            and "udp" in self.core._local
            and "tcp" in self.core._local
            and len(request.to_bytes()) > UDP_SIZE_LIMIT
        ):
            heard: list[Response] = []

            def progress(response: Response) -> None:
                heard.append(response)
                if on_provisional is not None:
                    on_provisional(response)

            tcp = TransportAddress("tcp", destination.host, destination.port)
            try:
                return await self._send_once(request, tcp, progress)
            except TransportError:
                if heard:
                    raise
            # RFC 3261 §18.1.1: the TCP connection failed (refused, reset): retry over UDP.
            # Same request object with a new Via, so that a CANCEL built from it matches.
            log.debug("%s to %s: no TCP, retrying over UDP", request.method, destination)
            request.headers.remove("Via")
            request.invalidate()
        return await self._send_once(request, destination, on_provisional)

    async def _send_once(
        self,
        request: Request,
        destination: TransportAddress,
        on_provisional: Callable[[Response], None] | None,
    ) -> Response:
        assert self._loop is not None
        fut: asyncio.Future[Response] = self._loop.create_future()
        tx = self.core.send_request(request, destination, self.now())
        self._pending[id(tx)] = (fut, tx)
        if on_provisional is not None:
            self._progress[id(tx)] = on_provisional
        self._flush()
        try:
            return await fut
        finally:
            self._pending.pop(id(tx), None)
            self._progress.pop(id(tx), None)

    def send_stateless(self, message: Request | Response, destination: TransportAddress) -> None:
        """Send without a transaction (ACK for a 2xx)."""
        self.core.send_stateless(message, destination)
        self._flush()

    # -- event pump -------------------------------------------------------------------------
    def _on_message(
        self, message: Request | Response, source: TransportAddress, local: TransportAddress
    ) -> None:
        if self.trace is not None:
            self.trace("in", message.head_bytes() + message.body, source)
        self.core.receive_message(message, source, self.now())
        self._flush()

    def _on_bad_message(
        self,
        data: bytes | None,
        error: SIPParseError,
        source: TransportAddress,
        local: TransportAddress,
    ) -> None:
        log.debug("bad message from %s: %s", source, error)
        self.core.receive_bad_message(data, error, source, self.now())
        self._flush()

    def _on_send_error(self, destination: TransportAddress, error: Exception) -> None:
        log.debug("send to %s failed: %s", destination, error)
        self.core.transactions.report_transport_error(destination, self.now())
        self._flush()

    def _flush(self) -> None:
        core = self.core
        mgr = self.transports
        assert mgr is not None
        for message, destination in core.messages_to_send():
            if self.trace is not None:
                self.trace("out", message.to_bytes(), destination)
            mgr.send(message, destination)
        while (event := core.next_event()) is not None:
            self._dispatch(event)
        # one loop timer, re-armed for the core's earliest deadline (aioquic style)
        deadline = core.get_timer()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = deadline
            if deadline is not None:
                assert self._loop is not None
                self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.core.handle_timer(self.now())
        self._flush()

    def _dispatch(self, event: object) -> None:
        if isinstance(event, IncomingRequest):
            tx = event.transaction
            assert tx is not None
            handler = self._handlers.get(event.request.method)
            sreq = ServerRequest(event.request, event.source, tx, self)
            if handler is None:
                self._default_answer(sreq)
                return
            result = handler(sreq)
            if asyncio.iscoroutine(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._task_done)
        elif isinstance(event, StrayTwoXXReceived) or (
            isinstance(event, FinalResponseReceived) and event.retransmission
        ):
            response = event.response
            sent = self._acks.get((response.call_id, response.cseq.seq, response.to.tag or ""))
            if sent is not None:
                self.core.send_stateless(sent[0], sent[1])
            elif self.on_stray_2xx is not None:
                source = event.source if isinstance(event, StrayTwoXXReceived) else None
                self.on_stray_2xx(response, source)
        elif isinstance(event, FinalResponseReceived):
            entry = self._pending.get(id(event.transaction))
            response = event.response
            if entry is not None and not entry[0].done():
                entry[0].set_result(response)
            elif (
                self.on_stray_2xx is not None
                and 200 <= response.status < 300
                and event.transaction.request.method == "INVITE"
            ):
                # RFC 3261 §13.2.2.4: a 2xx from another fork after the first final response.
                self.on_stray_2xx(response, None)
        elif isinstance(event, ProvisionalResponseReceived):
            callback = self._progress.get(id(event.transaction))
            if callback is not None:
                callback(event.response)
        elif isinstance(event, ClientTransactionEnded):
            entry = self._pending.get(id(event.transaction))
            if entry is not None and not entry[0].done():
                tx = event.transaction
                if event.reason == "timeout":
                    entry[0].set_exception(
                        TransactionTimeout(
                            f"{tx.request.method} to {tx.request.uri}: no final response"
                        )
                    )
                else:
                    entry[0].set_exception(
                        TransportError(
                            f"{tx.request.method} to {tx.request.uri}: could not be sent"
                        )
                    )
        elif isinstance(event, AckReceived) and self.on_ack is not None:
            self.on_ack(event)
        elif isinstance(event, RequestCancelled) and self.on_cancel is not None:
            self.on_cancel(event)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("request handler failed", exc_info=task.exception())

    def _default_answer(self, sreq: ServerRequest) -> None:
        cfg = self.core.config
        if sreq.request.method == "OPTIONS":
            # RFC 3261 §11.2: capabilities in the answer.
            headers = [("Allow", ", ".join(cfg.allow)), ("Accept", ", ".join(cfg.accept))]
            if cfg.supported:
                headers.append(("Supported", ", ".join(cfg.supported)))
            sreq.respond(200, headers=headers)
        else:
            sreq.respond(501)
