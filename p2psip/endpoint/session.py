"""INVITE sessions, sans-IO: states, events, session timers, glare, and the arithmetic of calls.

The asyncio session layer (:mod:`p2psip.endpoint.aio.session`) drives dialogs and transactions;
everything here is plain data and pure functions, with ``now`` passed in:

* :class:`SessionState` and the table of allowed transitions (:func:`check_transition`);
* the events a session emits (frozen dataclasses, one base class :class:`SessionEvent`);
* RFC 4028 session timers: header values (:class:`SessionExpires`, :func:`parse_min_se`), the
  negotiation for either role and the refresh/expiry deadlines (:class:`SessionTimer`);
* RFC 3261 §14.1 glare back-off (:func:`glare_backoff`) and the §14.2 ``Retry-After``;
* what a final response means for a call (:func:`failure_reason`,
  :func:`try_next_contact`, :func:`best_response`);
* the order in which contacts are tried, and the targets of a 3xx (:func:`order_contacts`,
  :func:`priority_groups`, :func:`redirect_contacts`);
* Reason (RFC 3326) and Warning (RFC 3261 §20.43) header values;
* remote hold detection (RFC 3264 §8.4) and the ``application/dtmf-relay`` INFO body.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from p2psip.endpoint.addresses import DEFAULT_PORTS
from p2psip.endpoint.headers import parse_params, quote
from p2psip.endpoint.message import REASON_PHRASES, Request, Response
from p2psip.endpoint.uri import parse_uri
from p2psip.errors import P2PSIPError, SIPParseError
from p2psip.locator.base import LocatedContact
from p2psip.media.offer_answer import NegotiatedStream
from p2psip.media.sdp import SDPError, SessionDescription

__all__ = [
    "DTMF_RELAY",
    "CallCancelled",
    "CallFailed",
    "CallTimeout",
    "DTMFReceived",
    "EarlyMedia",
    "Established",
    "Held",
    "InfoReceived",
    "PeerVerificationFailed",
    "Progress",
    "Reason",
    "Refresher",
    "RemoteHeld",
    "RemoteResumed",
    "Resumed",
    "Ringing",
    "SessionConfig",
    "SessionError",
    "SessionEvent",
    "SessionExpires",
    "SessionRefreshed",
    "SessionState",
    "SessionTimer",
    "SessionTimerAction",
    "SessionTimerConfig",
    "StateChanged",
    "StreamsChanged",
    "Terminated",
    "WarningValue",
    "best_response",
    "check_transition",
    "contact_for_uri",
    "contact_key",
    "failure_reason",
    "format_dtmf_relay",
    "glare_backoff",
    "order_contacts",
    "parse_dtmf_relay",
    "parse_min_se",
    "parse_reasons",
    "priority_groups",
    "redirect_contacts",
    "remote_hold",
    "retry_after_for_overlap",
    "stream_changes",
    "try_next_contact",
]

#: The INFO body type of DTMF relay (a de-facto format; RFC 6086 carries it).
DTMF_RELAY = "application/dtmf-relay"


# ------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------
class SessionError(P2PSIPError):
    """A session operation failed or is not allowed in the session's state.

    Attributes:
        response: the final response that made it fail, when there is one.
    """

    def __init__(self, message: str, response: Response | None = None) -> None:
        super().__init__(message)
        self.response = response


class CallFailed(SessionError):
    """An outgoing call was not set up.

    Attributes:
        status: the final status that decided it (the best of all contacts, RFC 3261 §16.7), or
            the status acted upon when nothing came back (408 timeout, 503 transport error).
        reason: its reason phrase or an explanation.
        response: that final response, None when none was received.
        attempts: ``(contact URI, outcome)`` for every contact tried, in order.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        reason: str = "",
        response: Response | None = None,
        attempts: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message, response)
        self.status = status
        self.reason = reason
        self.attempts = list(attempts)


class CallTimeout(CallFailed):
    """No contact answered in time (the call's timeout, or every INVITE timed out)."""


class CallCancelled(CallFailed):
    """The call was cancelled before it was answered (by us: terminate(); or by the caller)."""


class PeerVerificationFailed(CallFailed):
    """The TLS certificate of the peer is not bound to the key its AoR record names (or the
    verification hook refused it for another reason); nothing was sent to that peer."""


# ------------------------------------------------------------------------------------------
# States
# ------------------------------------------------------------------------------------------
class SessionState(enum.Enum):
    """Where a session stands.

    CALLING: our INVITE is out, no response yet. PROCEEDING: a provisional response without a
    dialog (100, or 1xx without To tag). EARLY: an early dialog exists (a 1xx with To tag came
    or was sent, RFC 3261 §12). INCOMING: an INVITE arrived and was not answered yet.
    CONNECTING: we sent the 2xx to an incoming INVITE, its ACK is awaited (§13.3.1.4).
    CONFIRMED: the call is up. TERMINATING: BYE or CANCEL sent, waiting for the outcome.
    TERMINATED: over.
    """

    CALLING = "calling"
    INCOMING = "incoming"
    PROCEEDING = "proceeding"
    EARLY = "early"
    CONNECTING = "connecting"
    CONFIRMED = "confirmed"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


_S = SessionState
#: state -> the states it may move to.
TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    _S.CALLING: frozenset({_S.PROCEEDING, _S.EARLY, _S.CONFIRMED, _S.TERMINATING, _S.TERMINATED}),
    _S.PROCEEDING: frozenset({_S.EARLY, _S.CONFIRMED, _S.TERMINATING, _S.TERMINATED}),
    _S.INCOMING: frozenset({_S.EARLY, _S.CONNECTING, _S.TERMINATING, _S.TERMINATED}),
    _S.EARLY: frozenset({_S.CONNECTING, _S.CONFIRMED, _S.TERMINATING, _S.TERMINATED}),
    _S.CONNECTING: frozenset({_S.CONFIRMED, _S.TERMINATING, _S.TERMINATED}),
    _S.CONFIRMED: frozenset({_S.TERMINATING, _S.TERMINATED}),
    _S.TERMINATING: frozenset({_S.TERMINATED}),
    _S.TERMINATED: frozenset(),
}


def check_transition(current: SessionState, new: SessionState) -> bool:
    """Whether a session may go from ``current`` to ``new`` (staying put is allowed)."""
    return new is current or new in TRANSITIONS[current]


# ------------------------------------------------------------------------------------------
# Events
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SessionEvent:
    """Base class of the events a session emits."""


@dataclass(frozen=True)
class StateChanged(SessionEvent):
    """The session moved from ``previous`` to ``state``."""

    previous: SessionState
    state: SessionState


@dataclass(frozen=True)
class Ringing(SessionEvent):
    """The callee is alerting (180, 181, 182).

    Attributes:
        status: the status code.
        reason: the reason phrase.
    """

    status: int
    reason: str


@dataclass(frozen=True)
class Progress(SessionEvent):
    """A provisional response other than ringing (100, 183 without media...)."""

    status: int
    reason: str


@dataclass(frozen=True)
class EarlyMedia(SessionEvent):
    """Media flows before the answer: the streams negotiated from a 1xx's SDP answer (or, for an
    incoming call, from our 183).

    Attributes:
        streams: the negotiated streams, one per m-line.
    """

    streams: tuple[NegotiatedStream, ...]


@dataclass(frozen=True)
class Established(SessionEvent):
    """The call is up: 2xx received and ACKed (caller), or ACK received (callee).

    Attributes:
        streams: the negotiated streams.
        setup_time: seconds from the INVITE (sent or received) to this moment.
    """

    streams: tuple[NegotiatedStream, ...]
    setup_time: float


@dataclass(frozen=True)
class Held(SessionEvent):
    """We put the call on hold (our re-INVITE was accepted)."""


@dataclass(frozen=True)
class Resumed(SessionEvent):
    """We took the call off hold."""


@dataclass(frozen=True)
class RemoteHeld(SessionEvent):
    """The peer put us on hold (its offer stopped receiving from us, RFC 3264 §8.4)."""


@dataclass(frozen=True)
class RemoteResumed(SessionEvent):
    """The peer took us off hold."""


@dataclass(frozen=True)
class StreamsChanged(SessionEvent):
    """A new offer/answer exchange changed the streams (added, removed, moved, re-keyed).

    Attributes:
        streams: the streams now.
        added: indexes of streams that became active.
        removed: indexes of streams that were disabled.
    """

    streams: tuple[NegotiatedStream, ...]
    added: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()


@dataclass(frozen=True)
class SessionRefreshed(SessionEvent):
    """A session refresh (RFC 4028) succeeded, sent or received.

    Attributes:
        interval: the session interval now in force (seconds).
        we_refresh: whether we are the refresher.
    """

    interval: int
    we_refresh: bool


@dataclass(frozen=True)
class DTMFReceived(SessionEvent):
    """A DTMF digit came in an INFO (``application/dtmf-relay``).

    Attributes:
        digit: ``0``-``9``, ``*``, ``#``, ``A``-``D``.
        duration: the duration in milliseconds.
    """

    digit: str
    duration: int


@dataclass(frozen=True)
class InfoReceived(SessionEvent):
    """An INFO with another body type came in the dialog (answered 200)."""

    content_type: str | None
    body: bytes


@dataclass(frozen=True)
class Terminated(SessionEvent):
    """The session is over; the last event a session emits.

    Attributes:
        reason: a short explanation (``"hangup"``, ``"busy"``, ``"cancelled"``,
            ``"session expired"``, ``"media failure: RTP timeout"``...).
        status: the SIP status that ended it when there is one (486, 487, 408...).
        by: ``"local"`` (we ended it) or ``"remote"`` (the peer did, or did not answer).
        error: the exception a waiting caller gets, when the call failed to set up.
    """

    reason: str
    status: int | None = None
    by: str = "local"
    error: P2PSIPError | None = field(default=None, compare=False)


# ------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------
class Refresher(enum.Enum):
    """The ``refresher`` parameter of Session-Expires (RFC 4028 §4): which side of the
    transaction that carries it refreshes the session."""

    UAC = "uac"
    UAS = "uas"


@dataclass(frozen=True)
class SessionTimerConfig:
    """Our RFC 4028 session-timer preferences.

    Attributes:
        enabled: use session timers (offer them, accept them, enforce them).
        session_expires: the interval we ask for, seconds (§4 recommends 1800).
        min_se: the smallest interval we accept, seconds (§5: at least 90 on the Internet;
            smaller values are for tests on loopback).
        refresher: who we ask to refresh in our requests; None leaves it to the answerer.
        uas_refresher: who refreshes when we answer a request that leaves it to us.
    """

    enabled: bool = True
    session_expires: int = 1800
    min_se: int = 90
    refresher: Refresher | None = None
    uas_refresher: Refresher = Refresher.UAC

    def __post_init__(self) -> None:
        if self.min_se < 1 or self.session_expires < self.min_se:
            raise ValueError("session_expires must be at least min_se, which must be >= 1")


@dataclass(frozen=True)
class SessionConfig:
    """How the session layer behaves.

    Attributes:
        session_timer: RFC 4028 settings.
        no_answer_timeout: seconds an incoming call may stay unanswered before it is refused
            with 480 (no consumer, or nobody picked up).
        cancel_timeout: seconds to wait for the final response after a CANCEL before giving
            up on the INVITE (RFC 3261 §9.1); None means 64*T1.
        glare_scale: factor applied to the RFC 3261 §14.1 back-off (1.0; tests use less).
        max_glare_retries: re-INVITE retries after 491 before the operation fails.
        max_redirects: how many 3xx responses a call follows.
        max_sessions: concurrent sessions beyond which incoming calls get 486.
        contact_user: the user part of our Contact URI.
        user_agent_accepts_dtmf_info: answer INFO ``application/dtmf-relay`` with DTMF events.
        reliable_provisional: offer ``100rel`` (RFC 3262) in INVITEs that carry an offer and
            PRACK the reliable provisional responses that come back (some gateways send early
            media only reliably, some insist on it).
    """

    session_timer: SessionTimerConfig = field(default_factory=SessionTimerConfig)
    no_answer_timeout: float = 120.0
    cancel_timeout: float | None = None
    glare_scale: float = 1.0
    max_glare_retries: int = 5
    max_redirects: int = 5
    max_sessions: int | None = None
    contact_user: str = "p2psip"
    user_agent_accepts_dtmf_info: bool = True
    reliable_provisional: bool = True


# ------------------------------------------------------------------------------------------
# RFC 4028 session timers
# ------------------------------------------------------------------------------------------
def _delta_seconds(text: str, what: str) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise SIPParseError(f"invalid {what}: {text[:20]!r}")
    return int(text)


@dataclass(frozen=True)
class SessionExpires:
    """A Session-Expires value (RFC 4028 §4): ``1800;refresher=uac``.

    Attributes:
        interval: the session interval in seconds.
        refresher: the refresher parameter, None when absent.
    """

    interval: int
    refresher: Refresher | None = None

    @classmethod
    def parse(cls, value: str) -> SessionExpires:
        """Parse a header value.

        Raises:
            SIPParseError: (400) not delta-seconds, or a refresher other than uac/uas.
        """
        head, _, rest = value.partition(";")
        interval = _delta_seconds(head, "Session-Expires")
        params = parse_params(rest) if rest else {}
        refresher = params.get("refresher")
        if refresher is None:
            return cls(interval)
        try:
            return cls(interval, Refresher(refresher.lower()))
        except ValueError:
            raise SIPParseError(f"invalid refresher {refresher[:20]!r}") from None

    @classmethod
    def of(cls, message: Request | Response) -> SessionExpires | None:
        """The Session-Expires of a message (the compact form ``x`` included), or None.

        Raises:
            SIPParseError: for a malformed value.
        """
        value = message.headers.get("Session-Expires")
        return None if value is None else cls.parse(value)

    def __str__(self) -> str:
        if self.refresher is None:
            return str(self.interval)
        return f"{self.interval};refresher={self.refresher.value}"


def parse_min_se(message: Request | Response) -> int | None:
    """The Min-SE of a message (RFC 4028 §5), None when absent.

    Raises:
        SIPParseError: for a malformed value.
    """
    value = message.headers.get("Min-SE")
    if value is None:
        return None
    return _delta_seconds(value.partition(";")[0], "Min-SE")


def _supports_timer(message: Request | Response) -> bool:
    return "timer" in message.tokens("Supported") or "timer" in message.tokens("Require")


class SessionTimerAction(enum.Enum):
    """What :meth:`SessionTimer.handle_timer` asks for."""

    #: send a session refresh (re-INVITE or UPDATE) now
    REFRESH = "refresh"
    #: the session expired without refresh: send BYE (RFC 4028 §10)
    EXPIRED = "expired"


class SessionTimer:
    """RFC 4028 for one dialog: negotiation in either role, then refresh and expiry times.

    The refresher sends a refresh when half the interval has passed since the last one
    (§10); either side ends the session ``min(32, interval / 3)`` seconds before it expires
    when no refresh succeeded (§10).

    Args:
        config: our preferences.
    """

    def __init__(self, config: SessionTimerConfig) -> None:
        self.config = config
        #: the negotiated session interval, None while no timer runs
        self.interval: int | None = None
        #: whether we send the refreshes
        self.we_refresh = False
        #: when the last refresh (or the dialog's 2xx) happened
        self.last_refresh: float | None = None
        self._requested = config.session_expires
        self._min_se = config.min_se
        self._refreshing = False
        self._retry_at: float | None = None

    @property
    def active(self) -> bool:
        """Whether a session timer runs."""
        return self.interval is not None

    @property
    def min_se(self) -> int:
        """The Min-SE we send: ours, raised by any 422 received (§7.4)."""
        return self._min_se

    # -- we are the UAC of the INVITE / UPDATE --------------------------------------------------
    def request_headers(self) -> list[tuple[str, str]]:
        """Session-Expires and Min-SE for a request we send (RFC 4028 §7.1, §7.4).

        A refresh keeps the interval in force and names the current refresher; an initial
        request asks for our configured interval (raised by any 422).
        """
        if not self.config.enabled:
            return []
        if self.interval is not None:
            refresher: Refresher | None = Refresher.UAC if self.we_refresh else Refresher.UAS
            value = SessionExpires(max(self.interval, self._min_se), refresher)
        else:
            value = SessionExpires(max(self._requested, self._min_se), self.config.refresher)
        return [("Session-Expires", str(value)), ("Min-SE", str(self._min_se))]

    def handle_422(self, response: Response) -> bool:
        """Take a 422 (Session Interval Too Small); True when the request should be retried.

        §7.4: the new request carries the 422's Min-SE as its Session-Expires and Min-SE. A
        422 without a usable Min-SE, or one not above what we asked, is not retried (no loop).
        """
        if not self.config.enabled:
            return False
        try:
            value = parse_min_se(response)
        except SIPParseError:
            return False
        current = self.interval if self.interval is not None else self._requested
        if value is None or value <= current:
            return False
        self._min_se = max(self._min_se, value)
        self._requested = max(self._requested, value)
        if self.interval is not None:
            self.interval = max(self.interval, value)
        return True

    def handle_2xx(self, response: Response, now: float) -> bool:
        """Take the 2xx to our INVITE or UPDATE (RFC 4028 §7.2).

        With a Session-Expires in the 2xx the timer runs with that interval and
        ``refresher=uac`` means we refresh; without one there is no session expiration.

        Returns:
            True when a timer runs afterwards.
        """
        self._refreshing = False
        self._retry_at = None
        if not self.config.enabled:
            return False
        try:
            value = SessionExpires.of(response)
        except SIPParseError:
            value = None
        if value is None:
            self.interval = None
            self.last_refresh = None
            return False
        self.interval = value.interval
        # §7.2: a 2xx without refresher (a UAS that does not know the extension never sends
        # one with Require) leaves the refresh to us.
        self.we_refresh = value.refresher is not Refresher.UAS
        self.last_refresh = now
        return True

    def refresh_failed(self, now: float) -> None:
        """Our refresh got a non-2xx (other than 408/481, which end the dialog): the old
        timer keeps running, so the session expires unless a later refresh succeeds. The next
        attempt is halfway between ``now`` and the expiry (so a peer that keeps refusing gets
        a few retries, not a storm)."""
        self._refreshing = False
        expiry = self.expires_at()
        if expiry is not None:
            self._retry_at = now + max(expiry - now, 0.0) / 2

    # -- we are the UAS -----------------------------------------------------------------------
    def check_request(self, request: Request) -> tuple[int, list[tuple[str, str]]] | None:
        """The 422 to answer when a request's Session-Expires is below our Min-SE (§9).

        Returns:
            ``(422, headers)`` or None when the request is acceptable.
        """
        if not self.config.enabled:
            return None
        try:
            value = SessionExpires.of(request)
        except SIPParseError:
            return 400, []
        if value is not None and value.interval < self.config.min_se:
            return 422, [("Min-SE", str(self.config.min_se))]
        return None

    def response_headers(self, request: Request, now: float) -> list[tuple[str, str]]:
        """Negotiate as UAS of an INVITE/UPDATE and return the 2xx's headers (RFC 4028 §9).

        The interval is the request's, lowered to ours when ours is smaller (never below the
        request's Min-SE nor ours); the refresher is the request's choice, else ours, and
        ``uas`` when the UAC does not support the extension. ``Require: timer`` goes with it
        when the UAC supports it.
        """
        self._refreshing = False
        self._retry_at = None
        if not self.config.enabled:
            return []
        try:
            asked = SessionExpires.of(request)
            their_min = parse_min_se(request) or 0
        except SIPParseError:
            asked, their_min = None, 0
        supports = _supports_timer(request)
        ours = self.config.session_expires
        if asked is None:
            interval = max(ours, their_min, self.config.min_se)
        elif ours >= asked.interval:
            interval = asked.interval
        else:
            interval = max(ours, their_min, self.config.min_se)
        if not supports:
            refresher = Refresher.UAS
        elif asked is not None and asked.refresher is not None:
            refresher = asked.refresher
        else:
            refresher = self.config.uas_refresher
        self.interval = interval
        self.we_refresh = refresher is Refresher.UAS
        self.last_refresh = now
        headers = [("Session-Expires", str(SessionExpires(interval, refresher)))]
        if supports:
            headers.append(("Require", "timer"))
        return headers

    # -- deadlines ------------------------------------------------------------------------------
    def refresh_at(self) -> float | None:
        """When we must refresh (half the interval after the last refresh), or None."""
        if self.interval is None or self.last_refresh is None or not self.we_refresh:
            return None
        if self._retry_at is not None:
            return self._retry_at
        return self.last_refresh + self.interval / 2

    def expires_at(self) -> float | None:
        """When we send the BYE if no refresh succeeded: ``min(32, interval / 3)`` before the
        session expires (RFC 4028 §10), or None."""
        if self.interval is None or self.last_refresh is None:
            return None
        return self.last_refresh + self.interval - min(32.0, self.interval / 3)

    def next_timeout(self) -> float | None:
        """The earliest time :meth:`handle_timer` has something to do, or None."""
        expiry = self.expires_at()
        refresh = None if self._refreshing else self.refresh_at()
        times = [t for t in (refresh, expiry) if t is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> SessionTimerAction | None:
        """What is due at ``now``: EXPIRED first, then REFRESH (given once per refresh)."""
        expiry = self.expires_at()
        if expiry is not None and now >= expiry:
            self.stop()
            return SessionTimerAction.EXPIRED
        refresh = self.refresh_at()
        if refresh is not None and not self._refreshing and now >= refresh:
            self._refreshing = True
            return SessionTimerAction.REFRESH
        return None

    def stop(self) -> None:
        """No more timers (the session ended)."""
        self.interval = None
        self.last_refresh = None
        self._refreshing = False
        self._retry_at = None


# ------------------------------------------------------------------------------------------
# RFC 3261 §14: overlapping INVITEs
# ------------------------------------------------------------------------------------------
def glare_backoff(rng: random.Random, *, owns_call_id: bool, scale: float = 1.0) -> float:
    """How long to wait before retrying a re-INVITE that got 491 (RFC 3261 §14.1).

    The owner of the Call-ID (the side that sent the dialog's initial INVITE) waits 2.1 to 4 s,
    the other side 0 to 2 s, both in units of 10 ms; so the other side retries first.

    Args:
        rng: the random source.
        owns_call_id: whether we generated the dialog's Call-ID.
        scale: a factor for tests (1.0 is the RFC).
    """
    ticks = rng.randint(210, 400) if owns_call_id else rng.randint(0, 200)
    return ticks / 100 * scale


def retry_after_for_overlap(rng: random.Random) -> int:
    """The Retry-After of the 500 answering an INVITE that arrives while we have not answered
    an earlier one (RFC 3261 §14.2: random, 0 to 10 s)."""
    return rng.randint(0, 10)


# ------------------------------------------------------------------------------------------
# Final responses of a call
# ------------------------------------------------------------------------------------------
_FAILURE_REASONS = {
    401: "authentication required",
    403: "forbidden",
    404: "not found",
    407: "authentication required",
    408: "no answer",
    410: "gone",
    415: "unsupported media type",
    420: "unsupported extension",
    422: "session interval too small",
    480: "unavailable",
    481: "no such call",
    482: "loop detected",
    483: "too many hops",
    484: "address incomplete",
    486: "busy",
    487: "cancelled",
    488: "media not acceptable",
    491: "request pending",
    500: "server error",
    503: "service unavailable",
    504: "server timeout",
    600: "busy everywhere",
    603: "declined",
    604: "does not exist anywhere",
    606: "media not acceptable",
}


def failure_reason(status: int) -> str:
    """A short explanation of a failure status, for people and for :class:`Terminated`."""
    reason = _FAILURE_REASONS.get(status)
    if reason is not None:
        return reason
    if 300 <= status < 400:
        return "redirected"
    if 500 <= status < 600:
        return "server error"
    if status >= 600:
        return "refused everywhere"
    return REASON_PHRASES.get(status, "failed").lower()


def try_next_contact(status: int) -> bool:
    """Whether a failure at one contact lets the call go on to the next one.

    A 6xx is a global answer (RFC 3261 §21.6: the user will not answer anywhere) and a 487
    means we cancelled; anything else (busy device, stale contact, server error, timeout) is
    the answer of that contact only.
    """
    return status < 600 and status != 487


#: 4xx responses that tell how to resubmit: preferred among 4xx (RFC 3261 §16.7 step 6).
_INFORMATIVE_4XX = frozenset({401, 407, 415, 420, 484})


def best_response(responses: Iterable[Response]) -> Response | None:
    """The final response that best describes a failed call (RFC 3261 §16.7 step 6).

    Any 6xx wins; otherwise the lowest class, preferring in 4xx those that say how to
    resubmit (401, 407, 415, 420, 484); ties keep the order received.
    """

    def rank(item: tuple[int, Response]) -> tuple[int, int, int, int]:
        index, response = item
        status = response.status
        if status >= 600:
            return (0, 0, 0, index)
        klass = status // 100
        preferred = 0 if status in _INFORMATIVE_4XX else 1
        return (1, klass, preferred, index)

    ranked = sorted(enumerate(r for r in responses if r.status >= 300), key=rank)
    return ranked[0][1] if ranked else None


# ------------------------------------------------------------------------------------------
# Contacts
# ------------------------------------------------------------------------------------------
def contact_key(contact: LocatedContact) -> tuple[str, str, int, str]:
    """What makes two contacts the same target: transport, host, port and URI."""
    return (contact.transport.lower(), contact.host.lower(), contact.port, contact.uri)


def order_contacts(contacts: Iterable[LocatedContact]) -> list[LocatedContact]:
    """The contacts in the order they are tried: lower priority first, ties in the locator's
    order, duplicates (same transport, host, port and URI) dropped."""
    seen: set[tuple[str, str, int, str]] = set()
    unique = []
    for contact in contacts:
        key = contact_key(contact)
        if key not in seen:
            seen.add(key)
            unique.append(contact)
    return sorted(unique, key=lambda c: c.priority)


def priority_groups(contacts: Iterable[LocatedContact]) -> list[list[LocatedContact]]:
    """:func:`order_contacts` split into groups of equal priority (tried together when
    calling in parallel)."""
    groups: list[list[LocatedContact]] = []
    for contact in order_contacts(contacts):
        if groups and groups[-1][0].priority == contact.priority:
            groups[-1].append(contact)
        else:
            groups.append([contact])
    return groups


def redirect_contacts(response: Response, *, limit: int = 16) -> list[LocatedContact]:
    """The targets of a 3xx response, best first (RFC 3261 §8.1.3.4).

    Contacts are ordered by their ``q`` value, highest first (absent means 1.0); ties keep the
    response's order. Each becomes a :class:`LocatedContact` with ``source="redirect"`` and a
    priority of ``round(1000 * (1 - q))``; the transport comes from the URI (``transport``
    parameter, ``tls`` for SIPS, else UDP) and the port from the URI or the transport default.
    Non-SIP URIs and malformed entries are skipped; the host may be a name (resolving it is the
    locator's job).

    Args:
        response: the 3xx.
        limit: the most contacts returned.
    """
    try:
        contacts = response.contacts
    except SIPParseError:
        return []
    found: list[tuple[float, int, LocatedContact]] = []
    for index, address in enumerate(contacts):
        uri = address.uri
        if not uri.is_sip or not uri.host:
            continue
        q_text = address.params.get("q")
        try:
            q = 1.0 if q_text is None else float(q_text)
        except ValueError:
            continue
        if not 0.0 <= q <= 1.0:
            continue
        transport = (uri.transport or ("tls" if uri.scheme == "sips" else "udp")).lower()
        port = uri.port or DEFAULT_PORTS.get(transport, 5060)
        contact = LocatedContact(
            uri=str(uri.with_(headers=())),
            transport=transport,
            host=uri.params.get("maddr") or uri.host_plain,
            port=port,
            priority=round(1000 * (1 - q)),
            source="redirect",
        )
        found.append((-q, index, contact))
    found.sort(key=lambda item: (item[0], item[1]))
    return [contact for _, _, contact in found[:limit]]


def contact_for_uri(uri_text: str) -> LocatedContact:
    """A :class:`LocatedContact` for a SIP URI called directly (its host, port, transport).

    Raises:
        SIPParseError: not a SIP URI, or no host.
    """
    uri = parse_uri(uri_text)
    if not uri.is_sip or not uri.host:
        raise SIPParseError(f"not a SIP URI with a host: {uri_text!r}")
    transport = (uri.transport or ("tls" if uri.scheme == "sips" else "udp")).lower()
    return LocatedContact(
        uri=str(uri.with_(headers=())),
        transport=transport,
        host=uri.params.get("maddr") or uri.host_plain,
        port=uri.port or DEFAULT_PORTS.get(transport, 5060),
        source="uri",
    )


# ------------------------------------------------------------------------------------------
# Reason (RFC 3326) and Warning (RFC 3261 §20.43)
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Reason:
    """A Reason header value (RFC 3326): why a CANCEL, BYE or response happened.

    Attributes:
        protocol: ``SIP`` (cause is a status code) or ``Q.850`` (cause is an ISDN cause).
        cause: the cause number, None when absent.
        text: the reason text, None when absent.
    """

    protocol: str
    cause: int | None = None
    text: str | None = None

    @classmethod
    def sip(cls, status: int, text: str | None = None) -> Reason:
        """A ``SIP`` reason with a status code."""
        return cls("SIP", status, text)

    @classmethod
    def q850(cls, cause: int, text: str | None = None) -> Reason:
        """A ``Q.850`` reason (16 is normal call clearing)."""
        return cls("Q.850", cause, text)

    @classmethod
    def parse(cls, value: str) -> Reason:
        """Parse one Reason value.

        Raises:
            SIPParseError: (400) no protocol token, a non-numeric cause, bad parameters.
        """
        head, _, rest = value.strip().partition(";")
        protocol = head.strip()
        if not protocol or any(c in protocol for c in ' \t"<>,=;'):
            raise SIPParseError(f"invalid Reason protocol {protocol[:20]!r}")
        params = parse_params(rest) if rest else {}
        cause_text = params.get("cause")
        cause = None
        if cause_text is not None:
            if not cause_text.isascii() or not cause_text.isdigit() or len(cause_text) > 6:
                raise SIPParseError(f"invalid Reason cause {cause_text[:20]!r}")
            cause = int(cause_text)
        return cls(protocol, cause, params.get("text"))

    def __str__(self) -> str:
        out = self.protocol
        if self.cause is not None:
            out += f";cause={self.cause}"
        if self.text is not None:
            out += f";text={quote(self.text)}"
        return out


def parse_reasons(message: Request | Response) -> list[Reason]:
    """Every well-formed Reason value of a message (malformed ones are skipped)."""
    out = []
    for value in message.headers.get_all("Reason"):
        try:
            out.append(Reason.parse(value))
        except SIPParseError:
            continue
    return out


@dataclass(frozen=True)
class WarningValue:
    """A Warning header value (RFC 3261 §20.43): ``399 host "text"``.

    Attributes:
        code: the three-digit warn-code (300-399).
        agent: the warn-agent (our host, or ``-``).
        text: the warn-text.
    """

    code: int
    agent: str
    text: str

    @classmethod
    def parse(cls, value: str) -> WarningValue:
        """Parse one Warning value.

        Raises:
            SIPParseError: (400) not ``code SP agent SP quoted-text``.
        """
        text = value.strip()
        code_text, _, rest = text.partition(" ")
        agent, _, quoted = rest.strip().partition(" ")
        quoted = quoted.strip()
        if len(code_text) != 3 or not code_text.isascii() or not code_text.isdigit():
            raise SIPParseError(f"invalid warn-code {code_text[:10]!r}")
        if not agent or not quoted.startswith('"') or len(quoted) < 2:
            raise SIPParseError("invalid Warning value")
        params = parse_params(f"t={quoted}")  # reuse the quoted-string reader
        return cls(int(code_text), agent, params.get("t") or "")

    def __str__(self) -> str:
        return f"{self.code} {self.agent} {quote(self.text)}"


# ------------------------------------------------------------------------------------------
# Media helpers
# ------------------------------------------------------------------------------------------
def remote_hold(
    local: SessionDescription | None,
    remote: SessionDescription | None,
    *,
    remote_is_offer: bool,
) -> bool:
    """Whether the peer holds us (RFC 3264 §8.4) after an exchange.

    The peer holds us when its description does not receive in any active stream (sendonly or
    inactive), counting only what it chose: every stream of an offer it made, and in an answer
    to our offer only the streams where we offered to send (an answer to our own recvonly or
    inactive offer cannot receive). With no such stream it is False.

    Args:
        local: our description of the exchange (offer or answer).
        remote: the peer's.
        remote_is_offer: whether the peer's description was the offer.
    """
    if local is None or remote is None:
        return False
    held = considered = 0
    for ours, theirs in zip(local.media, remote.media, strict=False):
        if ours.port == 0 or theirs.port == 0:
            continue
        try:
            mine = local.effective_direction(ours)
            peer = remote.effective_direction(theirs)
        except SDPError:
            continue
        if not remote_is_offer and not mine.can_send:
            continue
        considered += 1
        if not peer.can_receive:
            held += 1
    return considered > 0 and held == considered


def stream_changes(
    old: Sequence[NegotiatedStream], new: Sequence[NegotiatedStream]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(added, removed)``: indexes of streams that became active / were disabled."""

    def active(streams: Sequence[NegotiatedStream]) -> set[int]:
        return {s.index for s in streams if not s.rejected}

    before, after = active(old), active(new)
    return tuple(sorted(after - before)), tuple(sorted(before - after))


_DTMF_DIGITS = frozenset("0123456789*#ABCD")


def parse_dtmf_relay(body: bytes) -> tuple[str, int]:
    """Parse an ``application/dtmf-relay`` INFO body (``Signal=5`` / ``Duration=160`` lines).

    Returns:
        ``(digit, duration in ms)``; the duration defaults to 250 when absent.

    Raises:
        SIPParseError: (400) no or an unknown signal, a bad duration, a body that is not text.
    """
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise SIPParseError("dtmf-relay body is not ASCII") from None
    values: dict[str, str] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise SIPParseError(f"bad dtmf-relay line {line[:20]!r}")
        values[name.strip().lower()] = value.strip()
    signal = values.get("signal", "").upper()
    if signal not in _DTMF_DIGITS or len(signal) != 1:
        raise SIPParseError(f"bad dtmf-relay signal {signal[:10]!r}")
    duration_text = values.get("duration", "250")
    if not duration_text.isdigit() or len(duration_text) > 6:
        raise SIPParseError(f"bad dtmf-relay duration {duration_text[:10]!r}")
    return signal, int(duration_text)


def format_dtmf_relay(digit: str, duration: int = 160) -> bytes:
    """An ``application/dtmf-relay`` body for one digit.

    Raises:
        ValueError: not a DTMF digit, or a duration outside 1..65535 ms.
    """
    digit = digit.upper()
    if len(digit) != 1 or digit not in _DTMF_DIGITS:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    if not 0 < duration < 65536:
        raise ValueError("duration must be 1..65535 ms")
    return f"Signal={digit}\r\nDuration={duration}\r\n".encode("ascii")
