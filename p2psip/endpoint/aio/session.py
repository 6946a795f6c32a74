"""INVITE sessions on asyncio: calls out and in, early media, re-INVITE, UPDATE, BYE, timers.

A :class:`SessionManager` attaches to a :class:`~p2psip.endpoint.aio.useragent.UserAgent` and
handles everything INVITE-shaped that reaches it; each call is a :class:`Session`::

    manager = SessionManager(ua, media_factory=lambda session: NullMedia())
    session = await manager.call("sip:bob@192.0.2.20:5060")      # raises CallFailed...
    await session.hold()
    await session.terminate()

    async for session in manager.incoming():                      # the callee's side
        await session.ring()
        await session.accept()

The SIP rules (RFC 3261 §9, §13, §14, §15; RFC 3311; RFC 4028; RFC 3326) are applied here with
the sans-IO arithmetic of :mod:`p2psip.endpoint.session`; SDP goes through
:class:`~p2psip.media.offer_answer.OfferAnswer`; media itself is a :class:`MediaHandler`'s job.
Every wait is bounded by a SIP timer: Timer B/F for requests, 64*T1 for an ACK or for the
final response after a CANCEL, the configured no-answer time for incoming calls.

Not supported: reliable provisional responses (RFC 3262, ``100rel``), so no offer in a 1xx and
no PRACK; an incoming INVITE is always answered by this layer (no proxying, no REFER).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import itertools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from p2psip.endpoint.addresses import TransportAddress
from p2psip.endpoint.aio.useragent import ServerRequest, UserAgent
from p2psip.endpoint.dialog import Dialog, DialogError, DialogId, DialogSet, DialogState
from p2psip.endpoint.digest import DigestClient, parse_challenge
from p2psip.endpoint.headers import NameAddress
from p2psip.endpoint.message import Request, Response
from p2psip.endpoint.session import (
    DTMF_RELAY,
    CallCancelled,
    CallFailed,
    CallTimeout,
    DTMFReceived,
    EarlyMedia,
    Established,
    Held,
    InfoReceived,
    PeerVerificationFailed,
    Progress,
    Reason,
    RemoteHeld,
    RemoteResumed,
    Resumed,
    Ringing,
    SessionConfig,
    SessionError,
    SessionEvent,
    SessionRefreshed,
    SessionState,
    SessionTimer,
    SessionTimerAction,
    StateChanged,
    StreamsChanged,
    Terminated,
    WarningValue,
    best_response,
    check_transition,
    contact_for_uri,
    contact_key,
    failure_reason,
    format_dtmf_relay,
    glare_backoff,
    order_contacts,
    parse_dtmf_relay,
    parse_reasons,
    redirect_contacts,
    remote_hold,
    retry_after_for_overlap,
    stream_changes,
    try_next_contact,
)
from p2psip.endpoint.transaction import build_cancel
from p2psip.endpoint.useragent import AckReceived, RequestCancelled
from p2psip.errors import P2PSIPError, SIPParseError, TransactionTimeout, TransportError
from p2psip.locator.base import LocatedContact
from p2psip.media.offer_answer import CodecDescription, MediaConfig, NegotiatedStream, OfferAnswer
from p2psip.media.sdp import SDPError, SessionDescription, parse_sdp

__all__ = [
    "MediaHandler",
    "NullMedia",
    "Refusal",
    "ResolveTarget",
    "ScreenIncoming",
    "Session",
    "SessionManager",
    "VerifyPeer",
    "default_audio_config",
]

log = logging.getLogger("p2psip.session")

#: ``verify_peer(certificate_der, contact, aor)``: True when the TLS peer is who it should be.
#: ``contact`` is the contact called (outgoing) or one describing the caller's connection
#: (incoming, ``source="incoming"``); ``aor`` is the callee's (To) or the caller's (From) AoR.
#: The certificate is None when the peer sent none (a server asks clients only if configured).
VerifyPeer = Callable[[bytes | None, LocatedContact, str], bool | Awaitable[bool]]

_OUTGOING = "outgoing"
_INCOMING = "incoming"
_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "UPDATE", "INFO", "PRACK")


@runtime_checkable
class MediaHandler(Protocol):
    """What a session asks of its media (an AudioStream adapter, or :class:`NullMedia`).

    Call order: :meth:`prepare` once (before our offer or answer), :meth:`start` once with the
    first negotiated streams (early media or the answer), :meth:`update` after every later
    exchange (hold, streams added/removed, a new early dialog), :meth:`stop` once at the end.
    A handler that detects a dead peer (RTP timeout, ICE consent lost) calls
    :meth:`Session.media_failed`.
    """

    async def prepare(self) -> Sequence[MediaConfig]:
        """Our stream configurations: the initial offer has one m-line per entry."""
        ...

    def spare_streams(self) -> Sequence[MediaConfig]:
        """Configurations for streams the peer may add later (RFC 3264 §8.1)."""
        ...

    async def start(self, streams: tuple[NegotiatedStream, ...], *, controlling: bool) -> None:
        """Start media on the negotiated streams (``controlling``: ICE role, RFC 8445 §6.1.1:
        the side that sent the initial offer)."""
        ...

    async def update(self, streams: tuple[NegotiatedStream, ...]) -> None:
        """Apply a new negotiation result."""
        ...

    async def stop(self) -> None:
        """Stop and release everything."""
        ...


class NullMedia:
    """A media handler that negotiates fixed configurations and sends nothing.

    For signalling-only calls (tests, SIP interop checks). It records what it was asked in
    :attr:`calls` (``("prepare",)``, ``("start", streams, controlling)``, ``("update",
    streams)``, ``("stop",)``).

    Args:
        configs: the streams to offer; default one audio stream, PCMU/PCMA/telephone-event on
            the discard port 9.
        spare: configurations for streams the peer adds later.
    """

    def __init__(
        self, configs: Sequence[MediaConfig] | None = None, spare: Sequence[MediaConfig] = ()
    ) -> None:
        self.configs = list(configs) if configs is not None else [default_audio_config()]
        self.spare = list(spare)
        self.calls: list[tuple[object, ...]] = []

    async def prepare(self) -> Sequence[MediaConfig]:
        """The configured streams."""
        self.calls.append(("prepare",))
        return self.configs

    def spare_streams(self) -> Sequence[MediaConfig]:
        """The spare configurations."""
        return self.spare

    async def start(self, streams: tuple[NegotiatedStream, ...], *, controlling: bool) -> None:
        """Record the call."""
        self.calls.append(("start", streams, controlling))

    async def update(self, streams: tuple[NegotiatedStream, ...]) -> None:
        """Record the call."""
        self.calls.append(("update", streams))

    async def stop(self) -> None:
        """Record the call."""
        self.calls.append(("stop",))


def default_audio_config(port: int = 9) -> MediaConfig:
    """One audio stream with PCMU, PCMA and telephone-event."""
    return MediaConfig(
        port=port,
        codecs=[
            CodecDescription("PCMU", 8000),
            CodecDescription("PCMA", 8000),
            CodecDescription.telephone_event(),
        ],
    )


#: Resolves a redirect target URI with a host name into contacts (see :class:`SessionManager`).
ResolveTarget = Callable[[str], Awaitable[Sequence[LocatedContact]]]


@dataclass(frozen=True)
class Refusal:
    """How :data:`ScreenIncoming` refuses an incoming INVITE.

    Attributes:
        status: a 4xx-6xx status.
        phrase: the reason phrase (default: the standard one).
        warning: text for a ``Warning: 399`` header (RFC 3261 §20.43), if any.
    """

    status: int
    phrase: str | None = None
    warning: str | None = None


#: Looks at an incoming INVITE before the application sees it (after the TLS check): None lets
#: it through, a :class:`Refusal` answers it.
ScreenIncoming = Callable[["Session", Request], Awaitable[Refusal | None]]

#: Seconds a redirect target's name resolution may take before the target is given up.
RESOLVE_TIMEOUT = 8.0


def _reliable_rseq(response: Response) -> int | None:
    """The RSeq of a reliable provisional response (RFC 3262 §3, §7.1), else None."""
    if not 100 < response.status < 200 or "100rel" not in response.tokens("Require"):
        return None
    text = (response.headers.get("RSeq") or "").strip()
    if not text.isdigit() or not 1 <= int(text) <= 2**31 - 1:
        return None  # §7.1: 1 to 2**31 - 1
    return int(text)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _angle(uri: str) -> str:
    """A From/To value: ``<uri>`` unless it already is a name-addr."""
    text = uri.strip()
    return text if "<" in text else f"<{text}>"


def _without_tag(address: NameAddress) -> str:
    """A From/To value without its tag parameter."""
    params = {k: v for k, v in address.params.items() if k != "tag"}
    return str(NameAddress(address.uri, address.display_name, params))


def _aor_of(value: str) -> str:
    """The URI of a name-addr text (``"Bob" <sip:bob@x>`` -> ``sip:bob@x``)."""
    text = value.strip()
    if "<" in text:
        return text[text.index("<") + 1 : text.index(">")] if ">" in text else text
    return text.split(";", 1)[0]


class _ReliableProvisional:
    """A reliable provisional response we sent and whose PRACK we wait for (RFC 3262 §3)."""

    __slots__ = ("acked", "handle", "rseq")

    def __init__(self, rseq: int, acked: asyncio.Future[None]) -> None:
        self.rseq = rseq
        self.acked = acked
        self.handle: asyncio.TimerHandle | None = None


class _Attempt:
    """One INVITE to one contact (with its digest retry), and the forks it created."""

    def __init__(self, contact: LocatedContact, dest: TransportAddress, request: Request) -> None:
        self.contact = contact
        self.dest = dest
        self.request = request
        self.dialogs = DialogSet(request)
        self.provisional = False
        self.final: Response | None = None
        self.outcome = "not tried"
        self.status: int | None = None
        self.redirect: list[LocatedContact] = []
        self.cancel_reason: str | None = None
        self.cancel_header: Reason | None = None
        self.cancel_sent = False
        self.abandoned = False
        self.verify_failed = False
        self.send_task: asyncio.Future[Response] | None = None
        self.answers: dict[str, OfferAnswer] = {}
        self.acked: set[str] = set()
        self.late: list[Response] = []  # 2xx that came before the first final was handled
        self.handles: list[asyncio.TimerHandle] = []
        self.rseq: dict[str, int] = {}  # RFC 3262: last reliable provisional per To tag

    def credentials_headers(self) -> list[tuple[str, str]]:
        """The INVITE's credentials, repeated in the ACK for a 2xx (RFC 3261 §13.2.2.4)."""
        h = self.request.headers
        return [(n, v) for n in ("Authorization", "Proxy-Authorization") for v in h.get_lines(n)]

    @property
    def cancel_destination(self) -> TransportAddress:
        """Where the CANCEL goes: where the INVITE went, on the transport its Via names."""
        try:
            transport = self.request.top_via.transport.lower()
        except SIPParseError:
            return self.dest
        if transport == self.dest.transport:
            return self.dest
        return TransportAddress(transport, self.dest.host, self.dest.port)


class Session:
    """One call: its state, dialog, negotiation, media and events.

    Sessions are made by :class:`SessionManager` (:meth:`SessionManager.call`, incoming
    INVITEs). Events go to the callbacks added with :meth:`add_listener` and to every
    :meth:`events` iterator (which replays the events emitted before it started).

    Attributes:
        direction: ``"outgoing"`` or ``"incoming"``.
        state: the :class:`~p2psip.endpoint.session.SessionState`.
        call_id: the Call-ID.
        local_uri / remote_uri: the From/To values (without tags) as seen by us.
        remote_aor: the peer's address-of-record (To of our call, From of theirs).
        dialog: the confirmed (or, for an incoming call, early) dialog, None before.
        offer_answer: the SDP negotiation, None before media was prepared.
        streams: the negotiated streams (empty before the answer).
        media: the media handler.
        remote_offer: the SDP offer of an incoming INVITE (None: it had none, the offer goes in
            our 200 and the answer comes in the ACK).
        contact: the contact the call went to (outgoing) or came from (incoming).
        local_held / remote_held: who holds the call.
        attempts: ``(contact URI, outcome)`` per contact tried (outgoing).
        started_at / first_provisional_at / ringing_at / established_at: loop times.
        termination: the :class:`Terminated` event once over.
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        manager: SessionManager,
        direction: str,
        *,
        call_id: str,
        local_uri: str,
        remote_uri: str,
        local_tag: str,
        media: MediaHandler,
    ) -> None:
        self.manager = manager
        self.id = next(self._ids)
        self.direction = direction
        self.state = SessionState.CALLING if direction == _OUTGOING else SessionState.INCOMING
        self.call_id = call_id
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.remote_aor = _aor_of(remote_uri)
        self.local_tag = local_tag
        self.media = media
        self.dialog: Dialog | None = None
        self.destination: TransportAddress | None = None
        self.contact: LocatedContact | None = None
        self.offer_answer: OfferAnswer | None = None
        self.streams: tuple[NegotiatedStream, ...] = ()
        self.remote_offer: SessionDescription | None = None
        self.local_held = False
        self.remote_held = False
        self.peer_allow: set[str] = set()
        self.timer = SessionTimer(manager.config.session_timer)
        self.termination: Terminated | None = None
        loop = manager.loop
        self._loop = loop
        self.started_at = loop.time()
        self.first_provisional_at: float | None = None
        self.ringing_at: float | None = None
        self.established_at: float | None = None
        self._history: list[SessionEvent] = []
        self._listeners: list[Callable[[Session, SessionEvent], None]] = []
        self._changed: asyncio.Future[None] = loop.create_future()
        self._established: asyncio.Future[None] = loop.create_future()
        self._established.add_done_callback(_retrieve)
        self._terminated: asyncio.Future[Terminated] = loop.create_future()
        self._tasks: set[asyncio.Task[object]] = set()
        self._media_prepared = False
        self._media_started = False
        self._media_streams: tuple[NegotiatedStream, ...] | None = None
        self._controlling = False
        self._timer_handle: asyncio.TimerHandle | None = None
        self._verified: dict[TransportAddress, bytes | None] = {}
        # outgoing
        self.attempts: list[tuple[str, str]] = []
        self._all_attempts: list[_Attempt] = []
        self._resolving: asyncio.Future[list[list[LocatedContact] | str]] | None = None
        self._cseq = 0
        self._live: set[_Attempt] = set()
        self._winner: _Attempt | None = None
        self._abort_reason: str | None = None
        self._abort_header: Reason | None = None
        self._pristine: OfferAnswer | None = None
        self._offer_sent = False
        self._offer_body = b""
        self._extra_headers: list[tuple[str, str]] = []
        self._credentials: tuple[str, str] | None = None
        # incoming
        self._invite: ServerRequest | None = None
        self._final_sent = False
        self._answer_body: bytes | None = None
        self._offer_in_2xx = False
        self._ack_handle: asyncio.TimerHandle | None = None
        # RFC 3262, callee side: provisionals are sent reliably when the INVITE requires it
        self._reliable = False
        self._rseq = 0
        self._unacked: _ReliableProvisional | None = None
        self._no_answer_handle: asyncio.TimerHandle | None = None
        self._bye_after_ack: tuple[Reason | None, str] | None = None
        # in-dialog offer/answer
        self._offer_lock = asyncio.Lock()
        self._client_invite_pending = False
        self._server_invite: tuple[ServerRequest, bool] | None = None
        self._server_invite_done = asyncio.Event()
        self._server_invite_done.set()
        self._server_ack_handle: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return (
            f"<Session #{self.id} {self.direction} {self.state.name} "
            f"{self.remote_aor} call_id={self.call_id!r}>"
        )

    # -- figures ----------------------------------------------------------------------------
    @property
    def time_to_first_provisional(self) -> float | None:
        """Seconds from our INVITE to the first 1xx (outgoing calls), or None."""
        if self.first_provisional_at is None:
            return None
        return self.first_provisional_at - self.started_at

    @property
    def time_to_ringing(self) -> float | None:
        """Seconds from our INVITE to the first 180-182, or None."""
        return None if self.ringing_at is None else self.ringing_at - self.started_at

    @property
    def setup_time(self) -> float | None:
        """Seconds from the INVITE (sent or received) to establishment, or None."""
        return None if self.established_at is None else self.established_at - self.started_at

    @property
    def ua(self) -> UserAgent:
        """The user agent carrying the session."""
        return self.manager.ua

    @property
    def invite(self) -> Request | None:
        """The INVITE that opened an incoming call (its headers: Identity, Subject...);
        None for a call we made."""
        return self._invite.request if self._invite is not None else None

    # -- events -----------------------------------------------------------------------------
    def add_listener(self, callback: Callable[[Session, SessionEvent], None]) -> None:
        """Call ``callback(session, event)`` for every later event (exceptions are logged)."""
        self._listeners.append(callback)

    @property
    def history(self) -> list[SessionEvent]:
        """Every event emitted so far, in order."""
        return list(self._history)

    async def events(self) -> AsyncIterator[SessionEvent]:
        """Every event of the session from its start, ending after :class:`Terminated`."""
        index = 0
        while True:
            while index < len(self._history):
                event = self._history[index]
                index += 1
                yield event
                if isinstance(event, Terminated):
                    return
            await asyncio.shield(self._changed)

    async def wait_established(self) -> None:
        """Wait until the call is up.

        Raises:
            CallFailed: (and its subclasses CallTimeout, CallCancelled,
                PeerVerificationFailed) the call was not set up.
            SessionError: the call ended before being established for another reason.
        """
        await asyncio.shield(self._established)

    async def wait_terminated(self) -> Terminated:
        """Wait until the session is over; returns the :class:`Terminated` event."""
        return await asyncio.shield(self._terminated)

    def _emit(self, event: SessionEvent) -> None:
        if self.termination is not None:
            return  # Terminated is the last event
        self._history.append(event)
        changed, self._changed = self._changed, self._loop.create_future()
        changed.set_result(None)
        for callback in [*self._listeners, *self.manager._listeners]:
            try:
                callback(self, event)
            except Exception:
                log.exception("session listener failed on %r", event)

    def _set_state(self, state: SessionState) -> None:
        previous = self.state
        if state is previous:
            return
        if not check_transition(previous, state):
            log.debug("%r: ignored transition to %s", self, state.name)
            return
        self.state = state
        self._emit(StateChanged(previous, state))

    def _spawn(self, coro: Awaitable[object], name: str = "") -> asyncio.Task[object]:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        self.manager._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        self.manager._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%r: task failed", self, exc_info=task.exception())

    def _finish(
        self,
        reason: str,
        status: int | None = None,
        by: str = "local",
        error: P2PSIPError | None = None,
        *,
        keep_dialog: bool = False,
    ) -> None:
        """Move to TERMINATED once: stop timers and media, emit Terminated, wake waiters.

        ``keep_dialog``: a BYE is on its way and ends the dialog itself.
        """
        if self.state is SessionState.TERMINATED:
            return
        for handle in (self._timer_handle, self._ack_handle, self._no_answer_handle):
            if handle is not None:
                handle.cancel()
        self._stop_reliable()
        if self._server_ack_handle is not None:
            self._server_ack_handle.cancel()
        self._server_invite_done.set()
        self.timer.stop()
        if (
            not keep_dialog
            and self.dialog is not None
            and self.dialog.state is not DialogState.TERMINATED
        ):
            self.dialog.terminate()
        self.manager._forget(self)
        if self._media_prepared:
            self._spawn(self._stop_media())
        self._set_state(SessionState.TERMINATED)
        event = Terminated(reason, status, by, error)
        self._emit(event)
        self.termination = event
        if not self._established.done():
            self._established.set_exception(
                error or SessionError(f"call ended before it was established: {reason}")
            )
        if not self._terminated.done():
            self._terminated.set_result(event)

    async def _stop_media(self) -> None:
        try:
            await self.media.stop()
        except Exception:
            log.exception("%r: media stop failed", self)

    # -- media ------------------------------------------------------------------------------
    async def _prepare_media(self) -> OfferAnswer:
        if self.offer_answer is not None:
            return self.offer_answer
        configs = list(await self.media.prepare())
        self._media_prepared = True
        if not configs:
            raise SessionError("the media handler offered no stream")
        spare = list(self.media.spare_streams())
        address = next((c.address for c in configs if c.address), None) or (
            self.manager._local_host(self.destination.transport if self.destination else "udp")
        )
        self.offer_answer = OfferAnswer(address, configs, spare_streams=spare, rng=self.manager.rng)
        return self.offer_answer

    async def _run_media(self, streams: tuple[NegotiatedStream, ...]) -> None:
        """Start media the first time, update it afterwards."""
        if self.state is SessionState.TERMINATED or streams == self._media_streams:
            return
        self._media_streams = streams
        try:
            if not self._media_started:
                self._media_started = True
                await self.media.start(streams, controlling=self._controlling)
            else:
                await self.media.update(streams)
        except Exception as exc:
            log.warning("%r: media failed: %s", self, exc)
            self.media_failed(f"media error: {exc}")

    def media_failed(self, reason: str) -> None:
        """The media side saw the peer vanish (RTP timeout, ICE consent lost...): end the call
        with BYE (or CANCEL / an error response before it is up), with ``reason`` in a Reason
        header (``SIP;cause=408``) and in the :class:`Terminated` event."""
        if self.state in (SessionState.TERMINATED, SessionState.TERMINATING):
            return
        header = Reason.sip(408, f"media failure: {reason}")
        self._spawn(self._end(header, f"media failure: {reason}", reject_status=500))

    def _apply_streams(
        self, streams: tuple[NegotiatedStream, ...], *, remote_offered: bool
    ) -> asyncio.Task[object]:
        """A completed in-dialog exchange: media update (in a task, returned) and the events
        it implies."""
        old = self.streams
        self.streams = streams
        if streams != old:
            added, removed = stream_changes(old, streams)
            self._emit(StreamsChanged(streams, added, removed))
        oa = self.offer_answer
        if oa is not None:
            held = remote_hold(
                oa.local_description, oa.remote_description, remote_is_offer=remote_offered
            )
            if held != self.remote_held:
                self.remote_held = held
                self._emit(RemoteHeld() if held else RemoteResumed())
        return self._spawn(self._run_media(streams))

    # ======================================================================================
    # Outgoing calls
    # ======================================================================================
    async def _run_outgoing(
        self,
        contacts: list[LocatedContact],
        *,
        offer: bool,
        parallel: bool,
        contact_timeout: float | None,
        timeout: float | None,
    ) -> None:
        loop = self._loop
        # without a timeout of its own, a call rings at most Timer C (RFC 3261 §16.6: > 3 min)
        limit = timeout if timeout else self.ua.core.config.timers.timer_c
        handle = loop.call_later(limit, self._abort, "timeout")
        try:
            try:
                oa = await self._prepare_media()
            except Exception as exc:
                raise SessionError(f"media could not be prepared: {exc}") from exc
            if offer:
                self._offer_body = oa.create_offer().to_bytes()
                self._offer_sent = True
                self._controlling = True
            self._pristine = copy.deepcopy(oa)
            error = await self._try_contacts(contacts, parallel, contact_timeout)
        except asyncio.CancelledError:
            self._abort("cancelled")
            if self._winner is None:
                self._finish("cancelled", 487, "local", CallCancelled("the call was stopped", 487))
            raise
        except P2PSIPError as exc:
            error = exc
        finally:
            handle.cancel()
        if self._winner is None:
            status = getattr(error, "status", None)
            reason = getattr(error, "reason", "") or str(error)
            self._finish(reason, status, "local" if self._abort_reason else "remote", error)

    def _abort(self, why: str, header: Reason | None = None) -> None:
        """Stop setting the call up: no more contacts, CANCEL what is pending."""
        if self._winner is not None or self._abort_reason is not None:
            return
        self._abort_reason = why
        self._abort_header = header
        if self._resolving is not None:
            self._resolving.cancel()
        if self.state in (SessionState.CALLING, SessionState.PROCEEDING, SessionState.EARLY):
            self._set_state(SessionState.TERMINATING)
        for attempt in list(self._live):
            self._cancel_attempt(attempt, header, why)

    async def _try_contacts(
        self, contacts: list[LocatedContact], parallel: bool, contact_timeout: float | None
    ) -> P2PSIPError:
        """Call the contacts until one answers; the error to raise when none did."""
        config = self.manager.config
        queue = order_contacts(contacts)
        tried: set[tuple[str, str, int, str]] = set()
        finals: list[Response] = []
        attempts: list[_Attempt] = []
        redirects = 0
        stop = False
        while queue and not stop and self._winner is None and self._abort_reason is None:
            batch = queue if parallel else queue[:1]
            queue = [] if parallel else queue[1:]
            round_attempts = []
            for contact in batch:
                key = contact_key(contact)
                if key in tried:
                    continue
                tried.add(key)
                attempt = self._new_attempt(contact)
                if attempt is not None:
                    round_attempts.append(attempt)
            if not round_attempts:
                continue
            await asyncio.gather(*(self._run_attempt(a, contact_timeout) for a in round_attempts))
            for attempt in round_attempts:
                attempts.append(attempt)
                final = attempt.final
                if attempt.cancel_reason == "contact timeout" and self._winner is None:
                    attempt.status, final = 408, None  # we gave up on it: a timeout
                if final is not None and final.status >= 300:
                    finals.append(final)
                    if not try_next_contact(final.status):
                        stop = True
                if attempt.redirect:
                    fresh = [c for c in attempt.redirect if contact_key(c) not in tried]
                    if redirects >= config.max_redirects:
                        attempt.outcome += " (redirect limit reached)"
                    elif not fresh:
                        attempt.outcome += " (redirect loop)"
                    else:
                        redirects += 1
                        fresh = await self._resolve_names(fresh, tried)
                        queue = order_contacts([*queue, *fresh])
                self.attempts.append((attempt.contact.uri, attempt.outcome))
        if self._winner is not None:
            return SessionError("answered")
        outcomes = list(self.attempts)
        if self._abort_reason == "timeout":
            return CallTimeout(
                f"call to {self.remote_aor} timed out", 408, "no answer in time", None, outcomes
            )
        if self._abort_reason is not None:
            header = self._abort_header
            text = header.text if header is not None and header.text else "cancelled"
            return CallCancelled(f"call to {self.remote_aor} cancelled", 487, text, None, outcomes)
        best = best_response(finals)
        if best is not None:
            return CallFailed(
                f"call to {self.remote_aor} failed: {best.status} {best.reason}",
                best.status,
                failure_reason(best.status),
                best,
                outcomes,
            )
        if any(a.verify_failed for a in attempts):
            return PeerVerificationFailed(
                f"call to {self.remote_aor} refused: the TLS certificate of the peer does not "
                "match its identity",
                None,
                "peer verification failed",
                None,
                outcomes,
            )
        if attempts and all(a.status == 408 for a in attempts):
            return CallTimeout(
                f"call to {self.remote_aor}: no answer from any contact",
                408,
                "no answer",
                None,
                outcomes,
            )
        if not outcomes:
            return CallFailed(f"call to {self.remote_aor}: no contact to call", None, "no contact")
        return CallFailed(
            f"call to {self.remote_aor} failed: no contact reachable ({outcomes})",
            503,
            "unreachable",
            None,
            outcomes,
        )

    async def _resolve_names(
        self, contacts: list[LocatedContact], tried: set[tuple[str, str, int, str]]
    ) -> list[LocatedContact]:
        """Redirect targets with IP hosts as they are; named hosts through ``resolve_target``.

        The resolved contacts take the target's place in the order (its priority; the
        resolver's order among them); one found through DNS keeps the target URI as its
        Request-URI. Names are resolved concurrently, each within :data:`RESOLVE_TIMEOUT`.
        """
        resolver = self.manager.resolve_target
        named = [c for c in contacts if not _is_ip(c.host)]
        if not named or resolver is None:
            return contacts

        async def one(contact: LocatedContact) -> list[LocatedContact] | str:
            try:
                async with asyncio.timeout(RESOLVE_TIMEOUT):
                    found = list(await resolver(contact.uri))
            except TimeoutError:
                return "not called: name resolution timed out"
            except P2PSIPError as exc:
                return f"not called: {exc}"
            if not found:
                return "not called: the name resolved to no contact"
            return found

        self._resolving = asyncio.gather(*(one(c) for c in named))
        try:
            results = await self._resolving
        except asyncio.CancelledError:
            if self._abort_reason is None:
                raise  # the task itself was cancelled
            return []  # the call was stopped meanwhile
        finally:
            self._resolving = None
        answers = iter(results)  # in the order of `named`
        out: list[LocatedContact] = []
        for contact in contacts:
            if _is_ip(contact.host):
                out.append(contact)
                continue
            result = next(answers)
            if isinstance(result, str):
                tried.add(contact_key(contact))
                self.attempts.append((contact.uri, result))
            else:
                tried.add(contact_key(contact))
                for found in result:
                    if found.source == "dns":
                        found = replace(found, uri=contact.uri)
                    out.append(replace(found, priority=contact.priority))
        return out

    def _new_attempt(self, contact: LocatedContact) -> _Attempt | None:
        transport = contact.transport.lower()
        if not _is_ip(contact.host):
            self.attempts.append((contact.uri, "not called: host is not an IP address"))
            return None
        try:
            local = self.ua.core.local_address(transport)
        except ValueError:
            self.attempts.append((contact.uri, f"not called: no {transport} listener"))
            return None
        dest = TransportAddress(transport, contact.host.strip("[]"), contact.port)
        try:
            request = self._build_invite(contact.uri, local, transport)
        except SIPParseError as exc:
            self.attempts.append((contact.uri, f"not called: {exc}"))
            return None
        attempt = _Attempt(contact, dest, request)
        self._all_attempts.append(attempt)
        return attempt

    def _build_invite(self, uri: str, local: TransportAddress, transport: str) -> Request:
        self._cseq += 1
        manager = self.manager
        body = self._offer_body if self._offer_sent else b""
        supported = [t for t in (manager._supported,) if t]
        if body and manager.config.reliable_provisional:
            # RFC 3262 §4; only with our offer in the INVITE, so that no reliable provisional
            # brings an offer that the PRACK would have to answer
            supported.append("100rel")
        headers: list[tuple[str, str]] = [
            ("Max-Forwards", "70"),
            ("From", f"{self.local_uri};tag={self.local_tag}"),
            ("To", self.remote_uri),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self._cseq} INVITE"),
            ("Contact", manager._contact(local, transport)),
            ("Allow", manager._allow),
            *([("Supported", ", ".join(supported))] if supported else []),
            *self.timer.request_headers(),
            *self._extra_headers,
        ]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        return Request("INVITE", uri, headers, body)

    async def _verify_outgoing(self, attempt: _Attempt) -> bool:
        """TLS: open the connection and check the peer before the INVITE (and its SRTP keys)
        is sent; on refusal the connection is closed and nothing was sent."""
        manager = self.manager
        if manager.verify_peer is None or attempt.dest.transport != "tls":
            return True
        try:
            certificate = await manager._peer_certificate(attempt.dest)
        except TransportError as exc:
            attempt.outcome = f"transport error: {exc}"
            attempt.status = 503
            return False
        ok = await manager._verify(certificate, attempt.contact, self.remote_aor)
        if not ok:
            attempt.verify_failed = True
            attempt.outcome = "refused: TLS certificate does not match the contact's key"
            manager.stats["verify_refused"] += 1
            assert manager.ua.transports is not None
            manager.ua.transports.close_connection(attempt.dest)
            return False
        self._verified[attempt.dest] = certificate
        return True

    async def _run_attempt(self, attempt: _Attempt, contact_timeout: float | None) -> None:
        loop = self._loop
        try:
            if not await self._verify_outgoing(attempt):
                return
            if self._abort_reason is not None or self._winner is not None:
                return
            self._live.add(attempt)
            if contact_timeout:
                attempt.handles.append(
                    loop.call_later(
                        contact_timeout, self._cancel_attempt, attempt, None, "contact timeout"
                    )
                )
            authenticated = False
            interval_retries = 0
            while True:
                attempt.outcome = "sent"
                try:
                    response = await self._send_invite(attempt)
                except TransactionTimeout:
                    attempt.outcome, attempt.status = "no response (timeout)", 408
                    return
                except TransportError as exc:
                    attempt.outcome, attempt.status = f"transport error: {exc}", 503
                    return
                except asyncio.CancelledError:
                    if attempt.abandoned:
                        attempt.outcome, attempt.status = "cancelled, no final response", 487
                        return
                    raise
                credentials = self._credentials or self.manager.credentials
                going = attempt.cancel_reason is None and self._abort_reason is None
                retry = None
                if response.status in (401, 407) and credentials and not authenticated and going:
                    retry = self._authorized(attempt.request, response, credentials)
                    authenticated = retry is not None
                elif (
                    response.status == 422
                    and interval_retries < 2
                    and going
                    and self.timer.handle_422(response)
                ):
                    # RFC 4028 §7.4: again with the Min-SE of the 422.
                    interval_retries += 1
                    retry = self._retry_copy(attempt.request, self.timer.request_headers())
                if retry is None:
                    break
                attempt.request = retry
                attempt.dialogs = DialogSet(retry)
                attempt.provisional = False
            attempt.final = response
            attempt.status = response.status
            if 200 <= response.status < 300:
                self._on_2xx(attempt, response)
                for late in attempt.late:
                    self._on_2xx(attempt, late)
                return
            with contextlib.suppress(SIPParseError):
                attempt.dialogs.receive_response(response)
            attempt.outcome = f"{response.status} {response.reason}"
            if 300 <= response.status < 400:
                attempt.redirect = redirect_contacts(response)
        finally:
            for handle in attempt.handles:
                handle.cancel()
            self._live.discard(attempt)

    async def _send_invite(self, attempt: _Attempt) -> Response:
        self._cseq = max(self._cseq, attempt.request.cseq.seq)
        task = asyncio.ensure_future(
            self.ua.send(
                attempt.request,
                attempt.dest,
                on_provisional=lambda response: self._on_provisional(attempt, response),
            )
        )
        attempt.send_task = task
        try:
            return await task
        finally:
            attempt.send_task = None

    def _authorized(
        self, request: Request, response: Response, credentials: tuple[str, str]
    ) -> Request | None:
        """The request again with digest credentials (RFC 3261 §22.2), CSeq + 1."""
        try:
            header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            answer = "Authorization" if response.status == 401 else "Proxy-Authorization"
            challenges = [parse_challenge(v) for v in response.headers.get_lines(header)]
            client = DigestClient(credentials[0], credentials[1], rng=self.manager.rng)
            challenge = client.choose(challenges)
            value = client.authorize(challenge, request.method, str(request.uri), request.body)
            return self._retry_copy(request, [(answer, value)])
        except P2PSIPError as exc:
            log.info("%r: cannot answer the challenge: %s", self, exc)
            return None

    def _retry_copy(self, request: Request, replace: Iterable[tuple[str, str]]) -> Request:
        """``request`` again as a new transaction: no Via, the next CSeq, headers replaced."""
        retry = Request(request.method, request.uri, request.headers.copy(), request.body)
        retry.headers.remove("Via")
        self._cseq = max(self._cseq, request.cseq.seq) + 1
        retry.headers.set("CSeq", f"{self._cseq} {request.method}")
        for name, value in replace:
            retry.headers.set(name, value)
        retry.invalidate()
        return retry

    def _on_provisional(self, attempt: _Attempt, response: Response) -> None:
        now = self._loop.time()
        attempt.provisional = True
        if self.first_provisional_at is None:
            self.first_provisional_at = now
        if attempt.cancel_reason is not None:
            self._send_cancel(attempt)
            return
        if self._winner is not None or self.state is SessionState.TERMINATED:
            return
        rseq = _reliable_rseq(response)
        if rseq is not None:
            tag = response.to.tag or ""
            last = attempt.rseq.get(tag)
            if last is not None and rseq != last + 1:
                # RFC 3262 §4: a retransmission (already PRACKed) or one out of order
                return
            attempt.rseq[tag] = rseq
        try:
            dialog = attempt.dialogs.receive_response(response)
        except SIPParseError:
            dialog = None
        if rseq is not None and dialog is not None:
            self._spawn(self._send_prack(attempt, dialog, rseq), "prack")
        status = response.status
        if dialog is None:
            self._set_state(SessionState.PROCEEDING)
        else:
            # requests the callee sends in its early dialog (INFO, UPDATE: RFC 3311 §5.1,
            # RFC 6086 §4.2) find the session; a dialog a final response ends stops matching
            self.manager._register_dialog(self, dialog)
            self._set_state(SessionState.EARLY)
        if 180 <= status <= 182:
            if self.ringing_at is None:
                self.ringing_at = now
            self._emit(Ringing(status, response.reason))
        if dialog is not None and response.body and self._offer_sent:
            self._early_answer(attempt, dialog, response)
        elif not 180 <= status <= 182:
            self._emit(Progress(status, response.reason))

    async def _send_prack(self, attempt: _Attempt, dialog: Dialog, rseq: int) -> None:
        """RFC 3262 §7.2: PRACK a reliable provisional response in its early dialog."""
        cseq = attempt.request.cseq
        # in-dialog requests number on from every INVITE of the call (see _early_answer)
        dialog.local_seq = max(dialog.local_seq or 0, self._cseq)
        try:
            request = dialog.create_request("PRACK", [("RAck", f"{rseq} {cseq.seq} {cseq.method}")])
        except DialogError:
            return
        try:
            response = await self.ua.send(request, self.ua.route_destination(dialog, attempt.dest))
        except P2PSIPError as exc:
            log.info("%r: PRACK for RSeq %d: %s", self, rseq, exc)
            return
        if response.status >= 300:
            log.info("%r: PRACK for RSeq %d: %d", self, rseq, response.status)

    def _early_answer(self, attempt: _Attempt, dialog: Dialog, response: Response) -> None:
        """RFC 3261 §13.2.1: the first SDP in a 1xx of a dialog is the answer (early media)."""
        tag = dialog.id.remote_tag
        if tag in attempt.answers or self._pristine is None:
            return
        oa = copy.deepcopy(self._pristine)
        try:
            streams = oa.receive_answer(response.body)
        except SDPError as exc:
            log.info("%r: unusable SDP in %d: %s", self, response.status, exc)
            return
        attempt.answers[tag] = oa
        self.offer_answer = oa
        self.streams = streams
        self._emit(EarlyMedia(streams))
        self._spawn(self._run_media(streams))

    def _cancel_attempt(self, attempt: _Attempt, header: Reason | None, why: str) -> None:
        """CANCEL one INVITE (RFC 3261 §9.1): at once after a provisional response, else when
        the first one arrives; the final response is awaited for at most the cancel timeout."""
        if attempt.final is not None or attempt.cancel_reason is not None:
            return
        attempt.cancel_reason = why
        attempt.cancel_header = header
        if attempt.provisional:
            self._send_cancel(attempt)
        wait = self.manager.config.cancel_timeout or self.ua.core.config.timers.timer_b
        attempt.handles.append(self._loop.call_later(wait, self._abandon, attempt))

    def _send_cancel(self, attempt: _Attempt) -> None:
        if attempt.cancel_sent or attempt.final is not None:
            return
        attempt.cancel_sent = True
        try:
            cancel = build_cancel(attempt.request)
        except SIPParseError:
            return
        if attempt.cancel_header is not None:
            cancel.headers.add("Reason", str(attempt.cancel_header))
        self._spawn(self.manager._send_quietly(cancel, attempt.cancel_destination))

    def _abandon(self, attempt: _Attempt) -> None:
        """No final response after the CANCEL: stop waiting (the INVITE is given up)."""
        attempt.abandoned = True
        if attempt.send_task is not None and not attempt.send_task.done():
            attempt.send_task.cancel()

    def _on_late_2xx(self, response: Response) -> None:
        """A 2xx that no waiting request took: another fork, or a retransmission not yet
        ACKed."""
        try:
            seq = response.cseq.seq
        except SIPParseError:
            return
        if self.dialog is not None and response.cseq.seq > self._cseq:
            return  # a 2xx to one of our re-INVITEs, not yet ACKed: the re-INVITE handles it
        for attempt in self._all_attempts:
            if attempt.request.cseq.seq == seq:
                if attempt.final is None:
                    attempt.late.append(response)  # the first 2xx is handled first
                else:
                    self._on_2xx(attempt, response)
                return

    def _on_2xx(self, attempt: _Attempt, response: Response) -> None:
        """Every 2xx is ACKed (RFC 3261 §13.2.2.4); the first acceptable one sets the call up,
        any other (a later fork, one racing our CANCEL) is hung up with BYE."""
        try:
            dialog = attempt.dialogs.receive_response(response)
        except SIPParseError:
            dialog = None
        if dialog is None:
            try:
                dialog = Dialog.from_uac(attempt.request, response)
            except (DialogError, SIPParseError):
                log.info("%r: a 2xx that cannot make a dialog", self)
                return
        tag = dialog.id.remote_tag
        if tag in attempt.acked:
            return  # a retransmission: the user agent re-sends the ACK
        attempt.acked.add(tag)
        if self._winner is not None or self._abort_reason is not None or attempt.cancel_reason:
            reason = Reason.sip(200, "Call completed elsewhere") if self._winner else None
            self._ack_and_bye(attempt, dialog, response, reason)
            if attempt.final is response or attempt.outcome == "sent":
                attempt.outcome = f"{response.status} after the call was settled: hung up"
            return
        ack_body = b""
        failure: SDPError | None = None
        oa = attempt.answers.get(tag)
        streams: tuple[NegotiatedStream, ...] = ()
        if self._offer_sent:
            if oa is not None:
                streams = oa.streams  # §13.2.1: later SDP for the same dialog is ignored
            elif not response.body:
                failure = SDPError("the 2xx has no SDP answer", status=488)
            else:
                oa = copy.deepcopy(self._pristine)
                assert oa is not None
                try:
                    streams = oa.receive_answer(response.body)
                except SDPError as exc:
                    failure = exc
        else:
            if not response.body:
                failure = SDPError("the 2xx to an INVITE without offer has no offer", status=488)
            else:
                oa = copy.deepcopy(self._pristine)
                assert oa is not None
                try:
                    oa.receive_offer(response.body)
                    ack_body = oa.create_answer().to_bytes()
                    streams = oa.streams
                except SDPError as exc:
                    failure = exc
        if failure is not None or oa is None:
            failure = failure or SDPError("no negotiation", status=488)
            status = failure.status if failure.status in (400, 488) else 488
            self._ack_and_bye(attempt, dialog, response, Reason.sip(status, str(failure)))
            attempt.outcome = f"{response.status} with unusable SDP ({failure}): hung up"
            attempt.status = status
            attempt.final = Response(status, None, response.headers.copy())
            return
        self.ua.send_ack(
            dialog,
            response,
            attempt.dest,
            headers=attempt.credentials_headers(),
            body=ack_body,
            content_type="application/sdp" if ack_body else None,
        )
        now = self._loop.time()
        attempt.outcome = f"{response.status} {response.reason}"
        self._winner = attempt
        # in-dialog requests number on from every INVITE of the call (parallel and retried
        # ones included), so that a CSeq never names two transactions of this Call-ID
        dialog.local_seq = max(dialog.local_seq or 0, self._cseq)
        self.dialog = dialog
        self.destination = attempt.dest
        self.contact = attempt.contact
        self.offer_answer = oa
        self.streams = streams
        self.established_at = now
        self.peer_allow = {m.upper() for m in response.tokens("Allow")}
        self.manager._register_dialog(self, dialog)
        for other in list(self._live):
            if other is not attempt:
                self._cancel_attempt(
                    other, Reason.sip(200, "Call completed elsewhere"), "answered elsewhere"
                )
        self.timer.handle_2xx(response, now)
        self._arm_timer()
        self._set_state(SessionState.CONFIRMED)
        self.remote_held = remote_hold(
            oa.local_description, oa.remote_description, remote_is_offer=not self._offer_sent
        )
        self._spawn(self._establish(streams))

    async def _establish(self, streams: tuple[NegotiatedStream, ...]) -> None:
        await self._run_media(streams)
        if self.state is not SessionState.CONFIRMED:
            return
        established = self.established_at or self._loop.time()
        self._emit(Established(streams, established - self.started_at))
        if not self._established.done():
            self._established.set_result(None)

    def _ack_and_bye(
        self, attempt: _Attempt, dialog: Dialog, response: Response, reason: Reason | None
    ) -> None:
        self.ua.send_ack(dialog, response, attempt.dest, headers=attempt.credentials_headers())
        headers = [("Reason", str(reason))] if reason is not None else []
        self._spawn(self.manager._bye_dialog(dialog, attempt.dest, headers))

    # ======================================================================================
    # Incoming calls
    # ======================================================================================
    def _require_unanswered(self) -> ServerRequest:
        if self.direction != _INCOMING or self._invite is None:
            raise SessionError("only an incoming call can be answered")
        if self.state is SessionState.TERMINATED:
            error = self.termination.error if self.termination else None
            raise SessionError(
                f"the call is over ({self.termination.reason if self.termination else ''})"
            ) from error
        if self._final_sent:
            raise SessionError("the call was already answered")
        return self._invite

    def _respond_invite(
        self,
        status: int,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        reason: str | None = None,
    ) -> Response:
        sreq = self._require_unanswered()
        request = sreq.request
        items = list(headers)
        if 101 <= status < 300:
            local = self.manager._local_for(sreq.source.transport)
            items.append(("Contact", self.manager._contact(local, sreq.source.transport)))
            # RFC 3261 §12.1.1: the Record-Route of the request is copied into the response.
            items.extend(("Record-Route", v) for v in request.headers.get_lines("Record-Route"))
        if status >= 200:
            self._final_sent = True
            if self._no_answer_handle is not None:
                self._no_answer_handle.cancel()
            self._stop_reliable()
        response = sreq.respond(
            status,
            reason,
            headers=items,
            body=body,
            content_type="application/sdp" if body else None,
            to_tag=self.local_tag,
        )
        if 101 <= status < 300:
            if self.dialog is None:
                self.dialog = Dialog.from_uas(request, response)
                self.manager._register_dialog(self, self.dialog)
            else:
                self.dialog.send_response(request, response)
        elif status >= 300 and self.dialog is not None:
            self.dialog.send_response(request, response)
        return response

    async def _provisional(self, status: int, body: bytes = b"") -> None:
        """Send a 101-199, reliably (RFC 3262 §3) when the INVITE required 100rel: after the
        previous reliable one was PRACKed, with Require/RSeq, retransmitted from T1 doubling
        until its PRACK; 64*T1 without one rejects the call with 504."""
        if not self._reliable:
            self._respond_invite(status, body=body)
            return
        await self._wait_prack()
        self._require_unanswered()
        if self._rseq == 0:
            self._rseq = self.manager.rng.randint(1, 2**31 - 2**16)  # §3: random start
        else:
            self._rseq += 1
        headers = [("Require", "100rel"), ("RSeq", str(self._rseq))]
        pending = _ReliableProvisional(self._rseq, self._loop.create_future())
        self._unacked = pending
        timers = self.ua.core.config.timers
        deadline = self._loop.time() + 64 * timers.t1

        def send(interval: float) -> None:
            if pending.acked.done() or self._final_sent:
                return
            if self._loop.time() >= deadline:
                pending.acked.set_exception(SessionError("no PRACK for the reliable provisional"))
                pending.acked.exception()  # retrieved: nobody may be waiting
                self._reject_quietly(504, Reason.sip(504, "no PRACK"))
                self._finish("no PRACK for a reliable provisional response", 504, "local")
                return
            self._respond_invite(status, headers=headers, body=body)
            pending.handle = self._loop.call_later(interval, send, interval * 2)

        send(timers.t1)

    async def _wait_prack(self) -> None:
        """Wait for the PRACK of the reliable provisional in flight, if any."""
        pending = self._unacked
        if pending is None:
            return
        try:
            await asyncio.shield(pending.acked)
        except SessionError as exc:
            raise SessionError(f"the call is over: {exc}") from exc

    def _stop_reliable(self) -> None:
        pending = self._unacked
        if pending is None:
            return
        self._unacked = None
        if pending.handle is not None:
            pending.handle.cancel()
        if not pending.acked.done():
            pending.acked.set_exception(SessionError("the call was answered or ended"))
            pending.acked.exception()  # retrieved: nobody may be waiting

    async def _on_prack(self, sreq: ServerRequest, dialog: Dialog) -> None:
        """RFC 3262 §3: a PRACK matching the reliable provisional in flight gets 200; any
        other PRACK 481."""
        request = sreq.request
        pending = self._unacked
        invite = self._invite
        rack = request.headers.get("RAck", "").split()
        if (
            pending is None
            or invite is None
            or dialog is not self.dialog
            or len(rack) != 3
            or rack[0] != str(pending.rseq)
            or rack[1] != str(invite.request.cseq.seq)
            or rack[2].upper() != "INVITE"
        ):
            sreq.respond(481)
            return
        if not self._check_in_dialog(sreq, dialog):
            return
        response = sreq.respond(200)
        dialog.send_response(request, response)
        if pending.handle is not None:
            pending.handle.cancel()
        self._unacked = None
        if not pending.acked.done():
            pending.acked.set_result(None)

    async def ring(self) -> None:
        """Send 180 Ringing (an early dialog, state EARLY).

        Raises:
            SessionError: not an unanswered incoming call.
        """
        await self._provisional(180)
        self._set_state(SessionState.EARLY)

    async def progress(self, *, early_media: bool = True) -> tuple[NegotiatedStream, ...]:
        """Send 183 Session Progress; with ``early_media`` and an offer in the INVITE, with our
        answer, and start media (early media). The 200 will repeat that answer.

        Returns:
            The negotiated streams (empty without early media).

        Raises:
            SessionError: not an unanswered incoming call, or the offer is not acceptable (the
                call is then refused with 488).
        """
        self._require_unanswered()
        if not early_media or self.remote_offer is None:
            await self._provisional(183)
            self._set_state(SessionState.EARLY)
            return ()
        await self._answer_remote_offer()
        await self._provisional(183, body=self._answer_body or b"")
        self._set_state(SessionState.EARLY)
        self._emit(EarlyMedia(self.streams))
        self._spawn(self._run_media(self.streams))
        return self.streams

    async def _answer_remote_offer(self) -> None:
        if self._answer_body is not None:
            return
        try:
            oa = await self._prepare_media()
        except Exception as exc:
            self._reject_quietly(500, Reason.sip(500, "media unavailable"))
            self._finish("media could not be prepared", 500, "local")
            raise SessionError(f"media could not be prepared: {exc}") from exc
        if self.state is SessionState.TERMINATED:
            raise SessionError("the call is over")
        assert self.remote_offer is not None
        try:
            answer = oa.answer(self.remote_offer)
        except SDPError as exc:
            status = exc.status if exc.status in (400, 488) else 488
            warning = WarningValue(304 if status == 488 else 399, "-", str(exc)[:120])
            self._reject_quietly(status, None, [("Warning", str(warning))])
            self._finish(f"offer not acceptable: {exc}", status, "local")
            raise SessionError(f"the offer is not acceptable: {exc}") from exc
        self._answer_body = answer.to_bytes()
        self.streams = oa.streams

    def _reject_quietly(
        self,
        status: int,
        header: Reason | None = None,
        extra: Iterable[tuple[str, str]] = (),
        phrase: str | None = None,
    ) -> None:
        if self._final_sent or self._invite is None:
            return
        headers = list(extra)
        if header is not None:
            headers.append(("Reason", str(header)))
        with contextlib.suppress(SessionError):
            self._respond_invite(status, headers=headers, reason=phrase)

    async def accept(self) -> None:
        """Answer 200 OK with our SDP (the answer, or our offer when the INVITE had none);
        the call is established when the ACK arrives (:meth:`wait_established`).

        Raises:
            SessionError: not an unanswered incoming call (CANCELled meanwhile, already
                answered), or the offer is not acceptable (refused with 488).
        """
        self._require_unanswered()
        if self.remote_offer is not None:
            await self._answer_remote_offer()
            body = self._answer_body or b""
        else:
            try:
                oa = await self._prepare_media()
            except Exception as exc:
                self._reject_quietly(500, Reason.sip(500, "media unavailable"))
                self._finish("media could not be prepared", 500, "local")
                raise SessionError(f"media could not be prepared: {exc}") from exc
            if self.state is SessionState.TERMINATED:
                raise SessionError("the call is over")
            body = oa.create_offer().to_bytes()
            self._offer_in_2xx = True
            self._controlling = True
        if self._unacked is not None:
            # RFC 3262 §3: no 2xx while a reliable provisional with SDP is unacknowledged;
            # without SDP it is allowed, but a PRACK crossing our 2xx would then get 481:
            # wait for it either way (bounded by the provisional's 64*T1)
            await self._wait_prack()
        sreq = self._require_unanswered()
        now = self._loop.time()
        headers = [
            ("Allow", self.manager._allow),
            ("Supported", self.manager._supported),
            *self.timer.response_headers(sreq.request, now),
        ]
        self._respond_invite(200, headers=headers, body=body)
        self._set_state(SessionState.CONNECTING)
        self._arm_timer()
        # RFC 3261 §13.3.1.4: no ACK within 64*T1 -> the session ends with BYE.
        self._ack_handle = self._loop.call_later(
            self.ua.core.config.timers.timer_h, self._on_ack_timeout
        )
        if not self._offer_in_2xx:
            self._spawn(self._run_media(self.streams))

    async def reject(
        self, status: int = 486, reason: str | None = None, *, phrase: str | None = None
    ) -> None:
        """Refuse the call: 486 Busy Here, 603 Decline, 480 Temporarily Unavailable...

        Args:
            status: a 3xx-6xx status.
            reason: an explanation, sent as ``Reason: SIP;cause=<status>;text=...``.
            phrase: the reason phrase of the status line (the standard one by default).

        Raises:
            SessionError: not an unanswered incoming call, or a status below 300.
        """
        if not 300 <= status < 700:
            raise SessionError(f"cannot reject with {status}")
        headers = [("Reason", str(Reason.sip(status, reason)))] if reason else []
        self._respond_invite(status, headers=headers, reason=phrase)
        self._finish(reason or failure_reason(status), status, "local")

    async def busy(self) -> None:
        """Refuse with 486 Busy Here."""
        await self.reject(486)

    def _on_cancelled(self) -> None:
        """The caller CANCELled (the core answered 200 and 487, RFC 3261 §9.2)."""
        self._final_sent = True
        self._finish(
            "cancelled",
            487,
            "remote",
            CallCancelled("the caller cancelled the call", 487, "cancelled"),
        )

    def _on_ack(self, ack: Request) -> None:
        try:
            seq = ack.cseq.seq
        except SIPParseError:
            return
        invite = self._invite
        if (
            self.state is SessionState.CONNECTING
            and invite is not None
            and seq == invite.request.cseq.seq
        ):
            if self._ack_handle is not None:
                self._ack_handle.cancel()
            self._on_initial_ack(ack)
            return
        pending = self._server_invite
        if pending is not None and seq == pending[0].request.cseq.seq:
            self._server_invite = None
            if self._server_ack_handle is not None:
                self._server_ack_handle.cancel()
            self._server_invite_done.set()
            if pending[1]:  # our offer was in the 2xx: the answer is in this ACK
                self._take_answer_from_ack(ack, initial=False)

    def _on_initial_ack(self, ack: Request) -> None:
        if self._offer_in_2xx and not self._take_answer_from_ack(ack, initial=True):
            return
        self.established_at = self._loop.time()
        self._set_state(SessionState.CONFIRMED)
        if self._bye_after_ack is not None:
            header, why = self._bye_after_ack
            self._spawn(self._send_bye(header, why))
            return
        self._spawn(self._establish(self.streams))

    def _take_answer_from_ack(self, ack: Request, *, initial: bool) -> bool:
        """RFC 3264 §4: the answer to the offer of our 2xx is in the ACK; a missing or bad one
        ends the call with BYE and a Reason (RFC 3261 §13.3.1.4 leaves no other way)."""
        oa = self.offer_answer
        assert oa is not None
        try:
            if not ack.body:
                raise SDPError("the ACK has no SDP answer", status=488)
            streams = oa.receive_answer(ack.body)
        except SDPError as exc:
            status = exc.status if exc.status in (400, 488) else 488
            if initial:
                self._set_state(SessionState.CONFIRMED)
            self._spawn(
                self._send_bye(Reason.sip(status, f"bad SDP in ACK: {exc}"), f"bad answer: {exc}")
            )
            return False
        if initial:
            self.streams = streams
        else:
            self._apply_streams(streams, remote_offered=False)
        return True

    def _on_ack_timeout(self) -> None:
        if self.state is not SessionState.CONNECTING:
            return
        self._set_state(SessionState.CONFIRMED)
        self._spawn(
            self._send_bye(Reason.sip(408, "no ACK received"), "no ACK", status=408, by="remote")
        )

    def _on_no_answer(self) -> None:
        if self._final_sent or self.state is SessionState.TERMINATED:
            return
        self._reject_quietly(480, Reason.sip(480, "no answer"))
        self._finish("no answer", 480, "local")

    # ======================================================================================
    # In the dialog: requests we receive
    # ======================================================================================
    def _check_in_dialog(self, sreq: ServerRequest, dialog: Dialog) -> bool:
        check = dialog.receive_request(sreq.request)
        if not check.accepted:
            sreq.respond(check.status or 500, check.reason)
            return False
        return True

    def _refresh_answer_headers(self, request: Request) -> list[tuple[str, str]]:
        headers = self.timer.response_headers(request, self._loop.time())
        if self.timer.active:
            self._emit(SessionRefreshed(self.timer.interval or 0, self.timer.we_refresh))
        self._arm_timer()
        return headers

    async def _on_reinvite(self, sreq: ServerRequest, dialog: Dialog) -> None:
        request = sreq.request
        if dialog is not self.dialog or self.state in (
            SessionState.TERMINATING,
            SessionState.TERMINATED,
        ):
            sreq.respond(481)
            return
        if not self._check_in_dialog(sreq, dialog):
            return
        rng = self.manager.rng
        if self._client_invite_pending:
            self.manager.stats["glare_491_sent"] += 1
            sreq.respond(491)  # RFC 3261 §14.2: our re-INVITE is pending
            return
        if self._server_invite is not None or self.state is not SessionState.CONFIRMED:
            # §14.2: the previous INVITE we answered is not finished (no ACK yet).
            sreq.respond(500, headers=[("Retry-After", str(retry_after_for_overlap(rng)))])
            return
        rejection = self.timer.check_request(request)
        if rejection is not None:
            sreq.respond(rejection[0], headers=rejection[1])
            return
        oa = self.offer_answer
        assert oa is not None
        offered = not request.body
        try:
            if offered:
                body = oa.create_offer().to_bytes()  # RFC 3261 §14.2: offer in the 2xx
            else:
                oa.receive_offer(request.body)
                try:
                    body = oa.create_answer().to_bytes()
                except SDPError:
                    oa.rollback()
                    raise
        except SDPError as exc:
            if exc.status == 491:
                self.manager.stats["glare_491_sent"] += 1
            warning = WarningValue(399, "-", str(exc)[:120])
            sreq.respond(exc.status, headers=[("Warning", str(warning))])
            return
        local = self.manager._local_for(sreq.source.transport)
        headers = [
            ("Contact", self.manager._contact(local, sreq.source.transport)),
            ("Allow", self.manager._allow),
            ("Supported", self.manager._supported),
            *self._refresh_answer_headers(request),
        ]
        self.peer_allow = {m.upper() for m in request.tokens("Allow")} or self.peer_allow
        response = sreq.respond(200, headers=headers, body=body, content_type="application/sdp")
        dialog.send_response(request, response)
        self._server_invite = (sreq, offered)
        self._server_invite_done.clear()
        self._server_ack_handle = self._loop.call_later(
            self.ua.core.config.timers.timer_h, self._on_reinvite_ack_timeout
        )
        if not offered:
            self._apply_streams(oa.streams, remote_offered=True)

    def _on_reinvite_ack_timeout(self) -> None:
        if self._server_invite is None:
            return
        self._server_invite = None
        self._server_invite_done.set()
        self._spawn(
            self._send_bye(Reason.sip(408, "no ACK received"), "no ACK", status=408, by="remote")
        )

    def _in_current_dialog(self, dialog: Dialog) -> bool:
        """Whether a request in ``dialog`` is for this call: its dialog, or, before a call we
        made has one, any of its callee's early dialogs."""
        if self.state is SessionState.TERMINATED:
            return False
        return dialog is self.dialog or (
            self.dialog is None
            and self.direction == _OUTGOING
            and dialog.state is DialogState.EARLY
        )

    async def _on_update(self, sreq: ServerRequest, dialog: Dialog) -> None:
        request = sreq.request
        if not self._in_current_dialog(dialog):
            sreq.respond(481)
            return
        if not self._check_in_dialog(sreq, dialog):
            return
        rejection = self.timer.check_request(request)
        if rejection is not None:
            sreq.respond(rejection[0], headers=rejection[1])
            return
        body = b""
        oa = self.offer_answer
        if request.body:
            if oa is None or not self.streams:
                # RFC 3311 §5.2: an offer before the first exchange completed gets 500.
                sreq.respond(500, headers=[("Retry-After", "1")])
                return
            if self._client_invite_pending:
                sreq.respond(491)  # RFC 3311 §5.2: our offer is outstanding
                return
            try:
                oa.receive_offer(request.body)
                try:
                    body = oa.create_answer().to_bytes()
                except SDPError:
                    oa.rollback()
                    raise
            except SDPError as exc:
                sreq.respond(exc.status)
                return
        local = self.manager._local_for(sreq.source.transport)
        headers = [
            ("Contact", self.manager._contact(local, sreq.source.transport)),
            *self._refresh_answer_headers(request),
        ]
        response = sreq.respond(
            200, headers=headers, body=body, content_type="application/sdp" if body else None
        )
        dialog.send_response(request, response)
        if body and oa is not None:
            self._apply_streams(oa.streams, remote_offered=True)

    async def _on_bye(self, sreq: ServerRequest, dialog: Dialog) -> None:
        if not self._check_in_dialog(sreq, dialog):
            return
        response = sreq.respond(200)
        dialog.send_response(sreq.request, response)
        if dialog is not self.dialog:
            return
        if self.direction == _INCOMING and not self._final_sent and self._invite is not None:
            # RFC 3261 §15.1.2: the pending INVITE gets 487.
            self._reject_quietly(487)
        reasons = parse_reasons(sreq.request)
        text = reasons[0].text if reasons and reasons[0].text else "hangup"
        self._finish(text, None, "remote")

    async def _on_info(self, sreq: ServerRequest, dialog: Dialog) -> None:
        request = sreq.request
        if not self._in_current_dialog(dialog):
            sreq.respond(481)
            return
        if not self._check_in_dialog(sreq, dialog):
            return
        if request.content_type == DTMF_RELAY and self.manager.config.user_agent_accepts_dtmf_info:
            try:
                digit, duration = parse_dtmf_relay(request.body)
            except SIPParseError as exc:
                sreq.respond(400, str(exc)[:80])
                return
            sreq.respond(200)
            self._emit(DTMFReceived(digit, duration))
            return
        sreq.respond(200)
        self._emit(InfoReceived(request.content_type, request.body))

    # ======================================================================================
    # In the dialog: requests we send
    # ======================================================================================
    def _require_confirmed(self) -> Dialog:
        if self.state is not SessionState.CONFIRMED or self.dialog is None:
            raise SessionError(f"the call is not established (state {self.state.name})")
        return self.dialog

    async def _verify_dialog_peer(self, dest: TransportAddress) -> None:
        """TLS in the dialog: the peer at ``dest`` must pass the verification hook once, and
        keep presenting the same certificate."""
        manager = self.manager
        if manager.verify_peer is None or dest.transport != "tls":
            return
        certificate = await manager._peer_certificate(dest)
        if dest in self._verified:
            if self._verified[dest] == certificate:
                return
            raise PeerVerificationFailed(
                f"the TLS certificate at {dest} changed during the call", None, "changed"
            )
        contact = self.contact or LocatedContact(
            uri=str(self.dialog.remote_target) if self.dialog else dest.host,
            transport="tls",
            host=dest.host,
            port=dest.port,
            source="dialog",
        )
        if not await manager._verify(certificate, contact, self.remote_aor):
            manager.stats["verify_refused"] += 1
            assert manager.ua.transports is not None
            manager.ua.transports.close_connection(dest)
            raise PeerVerificationFailed(
                f"the TLS certificate at {dest} does not match {self.remote_aor}",
                None,
                "peer verification failed",
            )
        self._verified[dest] = certificate

    async def _request_in_dialog(
        self,
        method: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        dialog: Dialog | None = None,
    ) -> tuple[Request, Response]:
        """Send a request in the dialog and wait for its final response (bounded by Timer
        B/F); a 401/407 is answered once with the credentials. Timeouts and transport errors
        come back as 408/503 responses, as RFC 3261 §8.1.3.1 says to treat them."""
        dialog = dialog or self.dialog
        if dialog is None or self.destination is None:
            raise SessionError("no dialog")
        dest = self.ua.route_destination(dialog, self.destination)
        await self._verify_dialog_peer(dest)
        extra = list(headers)
        request = dialog.create_request(method, extra, body, content_type)
        response = await self._send_or_status(request, dest)
        credentials = self._credentials or self.manager.credentials
        if response.status in (401, 407) and credentials is not None:
            header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            answer = "Authorization" if response.status == 401 else "Proxy-Authorization"
            try:
                client = DigestClient(credentials[0], credentials[1], rng=self.manager.rng)
                challenge = client.choose(
                    [parse_challenge(v) for v in response.headers.get_lines(header)]
                )
                request = dialog.create_request(method, extra, body, content_type)
                request.headers.add(
                    answer, client.authorize(challenge, method, str(request.uri), body)
                )
                request.invalidate()
                response = await self._send_or_status(request, dest)
            except P2PSIPError as exc:
                log.info("%r: cannot answer the challenge: %s", self, exc)
        dialog.receive_response(request, response)
        return request, response

    async def _send_or_status(self, request: Request, dest: TransportAddress) -> Response:
        try:
            return await self.ua.send(request, dest)
        except TransactionTimeout:
            return Response(408, None, request.headers.copy())
        except TransportError:
            return Response(503, None, request.headers.copy())

    async def _reoffer(
        self,
        change: Callable[[OfferAnswer], None] | None = None,
        undo: Callable[[OfferAnswer], None] | None = None,
    ) -> tuple[NegotiatedStream, ...]:
        """A re-INVITE with a new offer (RFC 3261 §14.1, RFC 3264 §8), retried after 491 with
        the §14.1 back-off and after 422 with the larger interval."""
        config = self.manager.config
        async with self._offer_lock:
            self._require_confirmed()
            # §14.1: no new INVITE while one we answered is unfinished (ACK bounded by 64*T1).
            await self._server_invite_done.wait()
            dialog = self._require_confirmed()
            oa = self.offer_answer
            assert oa is not None
            if change is not None:
                change(oa)
            glare = 0
            while True:
                offer = oa.create_offer().to_bytes()
                self._client_invite_pending = True
                try:
                    request, response = await self._request_in_dialog(
                        "INVITE",
                        headers=[
                            ("Allow", self.manager._allow),
                            ("Supported", self.manager._supported),
                            *self.timer.request_headers(),
                        ],
                        body=offer,
                        content_type="application/sdp",
                        dialog=dialog,
                    )
                finally:
                    self._client_invite_pending = False
                status = response.status
                if self.state is not SessionState.CONFIRMED:
                    oa.rollback()
                    raise SessionError("the call ended during the re-INVITE", response)
                if 200 <= status < 300:
                    ack_headers = [
                        (n, v)
                        for n in ("Authorization", "Proxy-Authorization")
                        for v in request.headers.get_lines(n)
                    ]
                    assert self.destination is not None
                    self.ua.send_ack(dialog, response, self.destination, headers=ack_headers)
                    self.peer_allow = {m.upper() for m in response.tokens("Allow")} or (
                        self.peer_allow
                    )
                    try:
                        streams = oa.receive_answer(response.body)
                    except SDPError as exc:
                        await self._send_bye(
                            Reason.sip(488, f"bad SDP answer: {exc}"), f"bad answer: {exc}"
                        )
                        raise SessionError(f"the re-INVITE's answer is unusable: {exc}") from exc
                    if self.timer.handle_2xx(response, self._loop.time()):
                        self._emit(
                            SessionRefreshed(self.timer.interval or 0, self.timer.we_refresh)
                        )
                    self._arm_timer()
                    # our own re-offer (hold, streams...) returns once the media follows it
                    await asyncio.shield(self._apply_streams(streams, remote_offered=False))
                    return streams
                oa.rollback()
                if status == 491 and glare < config.max_glare_retries:
                    glare += 1
                    self.manager.stats["glare_491_received"] += 1
                    await asyncio.sleep(
                        glare_backoff(
                            self.manager.rng, owns_call_id=dialog.is_uac, scale=config.glare_scale
                        )
                    )
                    if self.state is not SessionState.CONFIRMED:
                        raise SessionError("the call ended during the re-INVITE back-off")
                    continue
                if status == 422 and self.timer.handle_422(response):
                    continue
                if status in (408, 481):
                    # RFC 3261 §12.2.1.2, §14.1: the dialog is gone.
                    await self._send_bye(
                        Reason.sip(status, "re-INVITE failed"), failure_reason(status), status
                    )
                    raise SessionError(f"re-INVITE failed: {status}; call ended", response)
                if undo is not None:
                    undo(oa)
                raise SessionError(f"re-INVITE refused: {status} {response.reason}", response)

    async def hold(self, *, inactive: bool = False) -> None:
        """Put the call on hold with a re-INVITE (RFC 3264 §8.4: sendonly, or inactive).

        Raises:
            SessionError: not established, or the peer refused (the call stays as it was).
        """
        await self._reoffer(lambda oa: oa.hold(inactive=inactive), lambda oa: oa.unhold())
        self.local_held = True
        self._emit(Held())

    async def unhold(self) -> None:
        """Take the call off hold with a re-INVITE.

        Raises:
            SessionError: not established, or the peer refused.
        """
        await self._reoffer(lambda oa: oa.unhold(), lambda oa: oa.hold())
        self.local_held = False
        self._emit(Resumed())

    async def add_stream(self, config: MediaConfig) -> int:
        """Add a stream with a re-INVITE (RFC 3264 §8.1, §8.3).

        Returns:
            The stream's m-line index.

        Raises:
            SessionError: not established, or the peer refused (the addition then stays
                queued in :attr:`offer_answer` for the next offer).
        """
        index: list[int] = []
        await self._reoffer(lambda oa: index.append(oa.add_stream(config)))
        return index[0]

    async def remove_stream(self, index: int) -> None:
        """Disable a stream with a re-INVITE: port 0, the m-line stays (RFC 3264 §8.2).

        Raises:
            SessionError: not established, no such stream, or the peer refused.
        """

        def change(oa: OfferAnswer) -> None:
            try:
                oa.remove_stream(index)
            except IndexError as exc:
                raise SessionError(str(exc)) from exc

        await self._reoffer(change)

    async def reinvite(self) -> tuple[NegotiatedStream, ...]:
        """Send a re-INVITE with the current session (a refresh or a connectivity check)."""
        return await self._reoffer()

    async def refresh(self) -> None:
        """Refresh the session now (RFC 4028 §7.4): UPDATE without SDP when the peer allows
        UPDATE (RFC 3311), else a re-INVITE with the unchanged offer.

        Raises:
            SessionError: not established; or the refresh failed with 408/481 (call ended).
        """
        dialog = self._require_confirmed()
        if "UPDATE" not in self.peer_allow:
            await self._reoffer()
            return
        while True:
            _, response = await self._request_in_dialog(
                "UPDATE",
                headers=[("Supported", self.manager._supported), *self.timer.request_headers()],
                dialog=dialog,
            )
            status = response.status
            if 200 <= status < 300:
                if self.timer.handle_2xx(response, self._loop.time()):
                    self._emit(SessionRefreshed(self.timer.interval or 0, self.timer.we_refresh))
                self._arm_timer()
                return
            if status == 422 and self.timer.handle_422(response):
                continue
            if status in (408, 481):
                await self._send_bye(
                    Reason.sip(status, "session refresh failed"), failure_reason(status), status
                )
                raise SessionError(f"session refresh failed: {status}; call ended", response)
            self.timer.refresh_failed(self._loop.time())
            self._arm_timer()
            raise SessionError(f"session refresh refused: {status} {response.reason}", response)

    async def send_dtmf(self, digits: str, duration: int = 160) -> None:
        """Send digits as INFO ``application/dtmf-relay`` requests, one per digit.

        Raises:
            ValueError: a character that is not a DTMF digit.
            SessionError: not established, or the peer refused an INFO.
        """
        bodies = [format_dtmf_relay(d, duration) for d in digits]
        for body in bodies:
            _, response = await self._request_in_dialog(
                "INFO", body=body, content_type=DTMF_RELAY, dialog=self._require_confirmed()
            )
            if not 200 <= response.status < 300:
                raise SessionError(f"INFO refused: {response.status} {response.reason}", response)

    async def options(self) -> Response:
        """Send OPTIONS in the dialog (a liveness check) and return the answer."""
        _, response = await self._request_in_dialog("OPTIONS", dialog=self._require_confirmed())
        return response

    # -- session timer --------------------------------------------------------------------------
    def _arm_timer(self) -> None:
        if self._timer_handle is not None:
            self._timer_handle.cancel()
            self._timer_handle = None
        deadline = self.timer.next_timeout()
        if deadline is None or self.state is SessionState.TERMINATED:
            return
        self._timer_handle = self._loop.call_at(deadline, self._on_timer, deadline)

    def _on_timer(self, deadline: float) -> None:
        self._timer_handle = None
        action = self.timer.handle_timer(max(self._loop.time(), deadline))
        if action is SessionTimerAction.REFRESH:
            self._spawn(self._refresh_quietly())
        elif action is SessionTimerAction.EXPIRED:
            self._spawn(
                self._send_bye(
                    Reason.sip(408, "session timer expired"),
                    "session expired",
                    status=408,
                    by="remote",
                )
            )
        self._arm_timer()

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except SessionError as exc:
            log.info("%r: session refresh failed: %s", self, exc)
            self.timer.refresh_failed(self._loop.time())
            self._arm_timer()

    # -- ending -----------------------------------------------------------------------------
    async def terminate(self, reason: str | None = None) -> Terminated:
        """End the call whatever its state: CANCEL while ringing out, a 603 to an unanswered
        incoming call, BYE once up (after the ACK, for a call we just answered).

        Args:
            reason: sent as ``Reason: Q.850;cause=16;text=...`` and kept in the event.

        Returns:
            The :class:`Terminated` event.
        """
        header = Reason.q850(16, reason) if reason else None
        await self._end(header, reason or "hangup", reject_status=603)
        return await self.wait_terminated()

    async def _end(self, header: Reason | None, why: str, reject_status: int = 603) -> None:
        state = self.state
        if state is SessionState.TERMINATED:
            return
        if self.direction == _OUTGOING and self._winner is None:
            self._abort("cancelled" if reject_status == 603 else why, header)
            return
        if self.direction == _INCOMING and not self._final_sent:
            self._reject_quietly(reject_status, header)
            self._finish(why, reject_status, "local")
            return
        if state is SessionState.CONNECTING:
            # RFC 3261 §15: the callee sends BYE only after the ACK (or its timeout).
            self._bye_after_ack = (header, why)
            return
        if state is SessionState.TERMINATING:
            return
        await self._send_bye(header, why)

    async def _send_bye(
        self,
        header: Reason | None,
        why: str,
        status: int | None = None,
        by: str = "local",
    ) -> None:
        """BYE (RFC 3261 §15.1.1): the session is over once it is sent; the answer is awaited
        in the background only to let the transaction finish."""
        if self.state in (SessionState.TERMINATING, SessionState.TERMINATED):
            return
        dialog = self.dialog
        self._set_state(SessionState.TERMINATING)
        sending = dialog is not None and dialog.state is not DialogState.TERMINATED
        if sending:
            assert dialog is not None
            headers = [("Reason", str(header))] if header is not None else []
            self._spawn(self._bye_request(dialog, headers))
            await asyncio.sleep(0)  # let the BYE go out before media stops
        self._finish(why, status, by, keep_dialog=sending)

    async def _bye_request(self, dialog: Dialog, headers: list[tuple[str, str]]) -> None:
        try:
            await self._request_in_dialog("BYE", headers=headers, dialog=dialog)
        except P2PSIPError as exc:
            log.info("%r: BYE not sent: %s", self, exc)
        with contextlib.suppress(DialogError):
            dialog.terminate()


def _answer_error(sreq: ServerRequest) -> None:
    """500 to a request whose handling failed, unless a final answer went out already."""
    last = sreq.transaction.last_response
    if last is None or last.status < 200:
        with contextlib.suppress(Exception):
            sreq.respond(500)


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a future's exception as seen (nobody may wait for an incoming call's setup)."""
    if not future.cancelled():
        future.exception()


class SessionManager:
    """The INVITE session layer of one user agent.

    It registers handlers for INVITE, BYE, UPDATE and INFO and the user agent's ACK, CANCEL
    and stray-2xx hooks; adds UPDATE and INFO to Allow, ``timer`` to Supported and
    ``application/dtmf-relay`` to Accept; and routes requests with a To tag to their dialog
    (others get 481, RFC 3261 §12.2.2).

    Args:
        ua: the user agent (listening before calls are made).
        config: session behaviour (timers, limits).
        media_factory: makes the :class:`MediaHandler` of each session; default
            :class:`NullMedia` (signalling only).
        verify_peer: the TLS check (:data:`VerifyPeer`), run before an INVITE is sent over
            TLS, on an incoming INVITE over TLS, and on each new TLS connection of a dialog.
        local_uri: our identity in From (``sip:alice@p2p.example``); default
            ``sip:<contact_user>@<our host>``.
        credentials: ``(user, password)`` for digest challenges.
        on_incoming: called with each incoming :class:`Session` (sync or async); without it,
            sessions are queued for :meth:`incoming`.
        screen_incoming: looks at each incoming INVITE before ``on_incoming`` (e.g. checks the
            caller's identity); a :class:`Refusal` answers it. Exceptions refuse with 500.
        resolve_target: resolves a redirect target whose host is a name (RFC 3261 §8.1.3.4
            with RFC 3263): given the target URI, returns the contacts to try, best first,
            or raises :class:`~p2psip.errors.P2PSIPError`. A contact found through DNS keeps
            the target URI as its Request-URI. Without it such targets are skipped.
        rng: random source (tags, Call-IDs, back-off); seed it in tests.

    Attributes:
        stats: counters (calls, refusals, glare).
    """

    def __init__(
        self,
        ua: UserAgent,
        *,
        config: SessionConfig | None = None,
        media_factory: Callable[[Session], MediaHandler] | None = None,
        verify_peer: VerifyPeer | None = None,
        local_uri: str | None = None,
        credentials: tuple[str, str] | None = None,
        on_incoming: Callable[[Session], Awaitable[None] | None] | None = None,
        resolve_target: ResolveTarget | None = None,
        screen_incoming: ScreenIncoming | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.ua = ua
        self.resolve_target = resolve_target
        self.screen_incoming = screen_incoming
        self.config = config or SessionConfig()
        self.media_factory = media_factory or (lambda session: NullMedia())
        self.verify_peer = verify_peer
        self.local_uri = local_uri
        self.credentials = credentials
        self.on_incoming = on_incoming
        self.rng = rng or ua.core.rng
        self.loop = asyncio.get_running_loop()
        self.stats = {
            "calls_out": 0,
            "calls_in": 0,
            "verify_refused": 0,
            "glare_491_sent": 0,
            "glare_491_received": 0,
        }
        self._sessions: dict[int, Session] = {}
        self._dialogs: dict[DialogId, tuple[Session, Dialog]] = {}
        self._outgoing: dict[tuple[str, str], Session] = {}
        self._by_invite: dict[int, Session] = {}
        self._listeners: list[Callable[[Session, SessionEvent], None]] = []
        self._incoming: asyncio.Queue[Session] = asyncio.Queue()
        self._tasks: set[asyncio.Task[object]] = set()
        self._closed = False
        core = ua.core
        supported = ("timer",) if self.config.session_timer.enabled else ()
        if self.config.reliable_provisional:
            supported += ("100rel",)  # RFC 3262: an INVITE may Require it
        core.extend_capabilities(
            allow=_METHODS, supported=supported, accept=("application/sdp", DTMF_RELAY)
        )
        self._allow = ", ".join(core.config.allow)
        self._supported = "timer" if self.config.session_timer.enabled else ""
        core.known_dialog = self._known_dialog
        ua.on("INVITE", self._on_invite)
        ua.on("BYE", self._on_in_dialog)
        ua.on("UPDATE", self._on_in_dialog)
        ua.on("INFO", self._on_in_dialog)
        ua.on("PRACK", self._on_in_dialog)
        self._previous_on_ack = ua.on_ack
        ua.on_ack = self._on_ack
        ua.on_cancel = self._on_cancel
        ua.on_stray_2xx = self._on_stray_2xx

    # -- public -----------------------------------------------------------------------------
    @property
    def sessions(self) -> list[Session]:
        """The sessions not terminated yet."""
        return list(self._sessions.values())

    def add_listener(self, callback: Callable[[Session, SessionEvent], None]) -> None:
        """Call ``callback(session, event)`` for every event of every session."""
        self._listeners.append(callback)

    async def incoming(self) -> AsyncIterator[Session]:
        """Incoming calls, as they arrive (when no ``on_incoming`` callback is set)."""
        while True:
            session = await self._incoming.get()
            if session.state is not SessionState.TERMINATED:
                yield session

    def start_call(
        self,
        target: str | Sequence[LocatedContact],
        *,
        to: str | None = None,
        from_: str | None = None,
        media: MediaHandler | None = None,
        offer: bool = True,
        parallel: bool = False,
        contact_timeout: float | None = None,
        timeout: float | None = None,
        credentials: tuple[str, str] | None = None,
        headers: Iterable[tuple[str, str]] = (),
        on_event: Callable[[Session, SessionEvent], None] | None = None,
    ) -> Session:
        """Start a call and return its session at once (state CALLING); the arguments are those
        of :meth:`call`; follow it with events or :meth:`Session.wait_established`.

        Raises:
            SessionError: a target that is neither a SIP URI with an IP host nor contacts.
        """
        if self._closed:
            raise SessionError("the session manager is closed")
        if isinstance(target, str):
            try:
                contacts = [contact_for_uri(target)]
            except SIPParseError as exc:
                raise SessionError(f"cannot call {target!r}: {exc}") from exc
            to = to or target
        else:
            contacts = list(target)
            if not contacts:
                raise SessionError("no contact to call")
            to = to or contacts[0].uri
        first = contacts[0]
        local = self._local_host(first.transport.lower())
        local_uri = _angle(from_ or self.local_uri or f"sip:{self.config.contact_user}@{local}")
        session = Session(
            self,
            _OUTGOING,
            call_id=self.ua.core.new_call_id(),
            local_uri=local_uri,
            remote_uri=_angle(to),
            local_tag=self.ua.core.new_tag(),
            media=_Placeholder(),
        )
        session.media = media if media is not None else self.media_factory(session)
        session._extra_headers = list(headers)
        session._credentials = credentials
        if on_event is not None:
            session.add_listener(on_event)
        self._sessions[session.id] = session
        self._outgoing[(session.call_id, session.local_tag)] = session
        self.stats["calls_out"] += 1
        session._spawn(
            session._run_outgoing(
                contacts,
                offer=offer,
                parallel=parallel,
                contact_timeout=contact_timeout,
                timeout=timeout,
            )
        )
        return session

    async def call(
        self,
        target: str | Sequence[LocatedContact],
        *,
        to: str | None = None,
        from_: str | None = None,
        media: MediaHandler | None = None,
        offer: bool = True,
        parallel: bool = False,
        contact_timeout: float | None = None,
        timeout: float | None = None,
        credentials: tuple[str, str] | None = None,
        headers: Iterable[tuple[str, str]] = (),
        on_event: Callable[[Session, SessionEvent], None] | None = None,
    ) -> Session:
        """Call a SIP URI (``sip:carol@127.0.0.1:5080``, host must be an IP address) or
        contacts already resolved by a locator, and return once the call is up.

        Args:
            target: the URI, or the contacts (their priority orders them).
            to: the To AoR; default the URI or the first contact's.
            from_: our From identity; default the manager's ``local_uri``.
            media: the session's media handler; default one from the factory.
            offer: False sends the INVITE without SDP: the offer comes in the 2xx and our
                answer goes in the ACK.
            parallel: INVITE every contact at once; the first 2xx wins, the others are
                CANCELled (``Reason: SIP;cause=200;text="Call completed elsewhere"``).
            contact_timeout: seconds per contact before CANCEL and the next one.
            timeout: seconds for the whole call (CANCEL, then CallTimeout); default Timer C
                of the user agent's timers (180 s), so that no call rings forever.
            credentials: ``(user, password)`` for 401/407; default the manager's.
            headers: extra INVITE header lines.
            on_event: a listener added to the session before anything happens.

        Contacts are tried in priority order; a 3xx adds its Contacts (up to
        ``max_redirects``, never the same contact twice); 401/407 are answered once with the
        credentials; a 6xx ends the search.

        Raises:
            CallFailed: every contact failed (``.status``/``.response``: the best answer).
            CallTimeout: ``timeout`` passed, or no contact answered at all.
            CallCancelled: the call was cancelled (terminate(), task cancelled).
            PeerVerificationFailed: the TLS peer failed ``verify_peer``.
        """
        session = self.start_call(
            target,
            to=to,
            from_=from_,
            media=media,
            offer=offer,
            parallel=parallel,
            contact_timeout=contact_timeout,
            timeout=timeout,
            credentials=credentials,
            headers=headers,
            on_event=on_event,
        )
        try:
            await session.wait_established()
        except asyncio.CancelledError:
            session._abort("cancelled")
            raise
        return session

    async def close(self, timeout: float = 5.0) -> None:
        """End every session (BYE, CANCEL or 480) and detach from the user agent."""
        self._closed = True
        deadline = self.loop.time() + timeout
        sessions = self.sessions
        if sessions:
            await asyncio.wait(
                [asyncio.ensure_future(s.terminate("shutting down")) for s in sessions],
                timeout=timeout,
            )
        # let the BYEs and CANCELs finish their transactions, within the same time
        pending = [t for t in self._tasks if not t.done()]
        remaining = deadline - self.loop.time()
        if pending and remaining > 0:
            await asyncio.wait(pending, timeout=remaining)
        for task in list(self._tasks):
            task.cancel()
        for session in self.sessions:
            session._finish("shutting down")
        ua = self.ua
        if ua.on_ack == self._on_ack:
            ua.on_ack = self._previous_on_ack
        ua.on_cancel = None
        ua.on_stray_2xx = None

    # -- helpers used by sessions -------------------------------------------------------------
    def _local_for(self, transport: str) -> TransportAddress:
        try:
            return self.ua.core.local_address(transport)
        except ValueError:
            return next(iter(self.ua.core._local.values()))

    def _local_host(self, transport: str) -> str:
        try:
            return self._local_for(transport).host
        except StopIteration:
            return "127.0.0.1"

    def _contact(self, local: TransportAddress, transport: str) -> str:
        user = self.config.contact_user
        return f"<sip:{user}@{local.host_for_uri}:{local.port};transport={transport}>"

    def _register_dialog(self, session: Session, dialog: Dialog) -> None:
        self._dialogs[dialog.id] = (session, dialog)

    def _forget(self, session: Session) -> None:
        self._sessions.pop(session.id, None)
        for key in [k for k, (s, _) in self._dialogs.items() if s is session]:
            del self._dialogs[key]
        for key in [k for k, s in self._by_invite.items() if s is session]:
            del self._by_invite[key]
        key = (session.call_id, session.local_tag)
        if self._outgoing.get(key) is session:
            # late 2xx from forks are still ACKed and hung up for 64*T1 (§13.2.2.4)
            self.loop.call_later(self.ua.core.config.timers.timer_b, self._outgoing.pop, key, None)

    async def _peer_certificate(self, dest: TransportAddress) -> bytes | None:
        transports = self.ua.transports
        assert transports is not None
        certificate = transports.peer_certificate(dest)
        if certificate is None:
            # RFC 5626 §3.5.1 keep-alive: opens (or reuses) the connection, no SIP message.
            await transports.send_async(b"\r\n\r\n", dest)
            certificate = transports.peer_certificate(dest)
        return certificate

    async def _verify(self, certificate: bytes | None, contact: LocatedContact, aor: str) -> bool:
        hook = self.verify_peer
        if hook is None:
            return True
        try:
            result = hook(certificate, contact, aor)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
            return bool(result)
        except Exception:
            log.exception("verify_peer failed for %s", contact.uri)
            return False

    async def _send_quietly(self, request: Request, dest: TransportAddress) -> None:
        try:
            await self.ua.send(request, dest)
        except P2PSIPError as exc:
            log.debug("%s to %s: %s", request.method, dest, exc)

    async def _bye_dialog(
        self, dialog: Dialog, fallback: TransportAddress, headers: list[tuple[str, str]]
    ) -> None:
        try:
            request = dialog.create_request("BYE", headers)
        except DialogError:
            return
        await self._send_quietly(request, self.ua.route_destination(dialog, fallback))
        with contextlib.suppress(DialogError):
            dialog.terminate()

    # -- user agent hooks ---------------------------------------------------------------------
    def _known_dialog(self, request: Request) -> bool:
        return self._find(request) is not None

    def _find(self, request: Request) -> tuple[Session, Dialog] | None:
        try:
            found = self._dialogs.get(DialogId.of_request(request))
        except SIPParseError:
            return None
        if found is None or found[1].state is DialogState.TERMINATED:
            return None
        return found

    async def _on_in_dialog(self, sreq: ServerRequest) -> None:
        try:
            await self._route_in_dialog(sreq)
        except Exception:
            log.exception("%s handling failed", sreq.request.method)
            _answer_error(sreq)

    async def _route_in_dialog(self, sreq: ServerRequest) -> None:
        found = self._find(sreq.request)
        if found is None:
            sreq.respond(481)
            return
        session, dialog = found
        method = sreq.request.method
        if method == "BYE":
            await session._on_bye(sreq, dialog)
        elif method == "UPDATE":
            await session._on_update(sreq, dialog)
        elif method == "PRACK":
            await session._on_prack(sreq, dialog)
        else:
            await session._on_info(sreq, dialog)

    def _on_ack(self, event: AckReceived) -> None:
        found = self._find(event.request)
        if found is not None:
            found[0]._on_ack(event.request)
        elif self._previous_on_ack is not None:
            self._previous_on_ack(event)

    def _on_cancel(self, event: RequestCancelled) -> None:
        session = self._by_invite.get(id(event.transaction))
        if session is not None:
            session._on_cancelled()

    def _on_stray_2xx(self, response: Response, source: TransportAddress | None) -> None:
        try:
            key = (response.call_id, response.from_.tag or "")
        except SIPParseError:
            return
        session = self._outgoing.get(key)
        if session is not None:
            session._on_late_2xx(response)

    async def _on_invite(self, sreq: ServerRequest) -> None:
        try:
            await self._handle_invite(sreq)
        except Exception:
            log.exception("INVITE handling failed")
            _answer_error(sreq)
            session = self._by_invite.get(id(sreq.transaction))
            if session is not None:
                session._final_sent = True
                session._finish("internal error", 500)

    async def _handle_invite(self, sreq: ServerRequest) -> None:
        request = sreq.request
        if request.to.tag is not None:
            found = self._find(request)
            if found is None:
                sreq.respond(481)
                return
            await found[0]._on_reinvite(sreq, found[1])
            return
        if self._closed:
            sreq.respond(480)
            return
        limit = self.config.max_sessions
        if limit is not None and len(self._sessions) >= limit:
            sreq.respond(486)
            return
        timer = SessionTimer(self.config.session_timer)
        rejection = timer.check_request(request)
        if rejection is not None:
            sreq.respond(rejection[0], headers=rejection[1])  # RFC 4028 §9
            return
        offer = None
        if request.body:
            try:
                offer = parse_sdp(request.body)
            except SDPError as exc:
                warning = WarningValue(399, "-", f"bad SDP: {exc}"[:120])
                sreq.respond(exc.status, headers=[("Warning", str(warning))])
                return
        session = Session(
            self,
            _INCOMING,
            call_id=request.call_id,
            local_uri="",
            remote_uri="",
            local_tag=self.ua.core.new_tag(),
            media=_Placeholder(),
        )
        session.timer = timer
        session._invite = sreq
        session._reliable = self.config.reliable_provisional and "100rel" in request.tokens(
            "Require"
        )
        session.remote_offer = offer
        session.destination = sreq.source
        session.peer_allow = {m.upper() for m in request.tokens("Allow")}
        session.remote_uri = _without_tag(request.from_)
        session.remote_aor = str(request.from_.uri.with_(params={}, headers=()))
        session.local_uri = _without_tag(request.to)
        contact_uri = str(request.contacts[0].uri) if request.contacts else session.remote_aor
        session.contact = LocatedContact(
            uri=contact_uri,
            transport=sreq.source.transport,
            host=sreq.source.host,
            port=sreq.source.port,
            source="incoming",
        )
        self._sessions[session.id] = session
        self._by_invite[id(sreq.transaction)] = session
        self.stats["calls_in"] += 1
        try:
            session.media = self.media_factory(session)
        except Exception:
            log.exception("media factory failed")
            session._reject_quietly(500)
            session._finish("media unavailable", 500)
            return
        if sreq.source.transport == "tls" and self.verify_peer is not None:
            transports = self.ua.transports
            assert transports is not None
            certificate = transports.peer_certificate(sreq.source)
            ok = await self._verify(certificate, session.contact, session.remote_aor)
            if session.state is SessionState.TERMINATED:
                return  # cancelled meanwhile
            if not ok:
                self.stats["verify_refused"] += 1
                warning = WarningValue(399, "-", "TLS certificate does not match the caller")
                session._reject_quietly(403, None, [("Warning", str(warning))])
                session._finish(
                    "peer verification failed",
                    403,
                    "local",
                    PeerVerificationFailed(
                        f"incoming call from {session.remote_aor}: TLS certificate refused",
                        403,
                        "peer verification failed",
                    ),
                )
                return
            session._verified[sreq.source] = certificate
        if self.screen_incoming is not None:
            try:
                refusal = await self.screen_incoming(session, request)
            except Exception:
                log.exception("screen_incoming failed")
                refusal = Refusal(500, warning="screening failed")
            if session.state is SessionState.TERMINATED:
                return  # cancelled meanwhile
            if refusal is not None:
                headers = []
                if refusal.warning:
                    headers.append(("Warning", str(WarningValue(399, "-", refusal.warning[:120]))))
                session._reject_quietly(refusal.status, None, headers, refusal.phrase)
                session._finish(
                    refusal.phrase or refusal.warning or "refused",
                    refusal.status,
                    "local",
                    CallFailed(
                        f"incoming call from {session.remote_aor} refused",
                        refusal.status,
                        refusal.phrase or "",
                        None,
                        [],
                    ),
                )
                return
        session._no_answer_handle = self.loop.call_later(
            self.config.no_answer_timeout, session._on_no_answer
        )
        callback = self.on_incoming
        if callback is None:
            self._incoming.put_nowait(session)
            return
        try:
            result = callback(session)
            if asyncio.iscoroutine(result):
                session._spawn(result)
        except Exception:
            log.exception("on_incoming failed")


class _Placeholder:
    """Stands for the media handler until the factory has made it."""

    async def prepare(self) -> Sequence[MediaConfig]:
        raise SessionError("no media handler")

    def spare_streams(self) -> Sequence[MediaConfig]:
        return ()

    async def start(self, streams: tuple[NegotiatedStream, ...], *, controlling: bool) -> None:
        return None

    async def update(self, streams: tuple[NegotiatedStream, ...]) -> None:
        return None

    async def stop(self) -> None:
        return None
