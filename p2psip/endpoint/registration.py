"""REGISTER client (RFC 3261 §10.2), sans-IO: bind, refresh before expiry, un-register.

The client produces REGISTER requests and consumes their final responses; the caller sends
each request through a client transaction and passes the final response back. Digest
challenges (401/407) are answered with :class:`~p2psip.endpoint.digest.DigestClient`;
423 Interval Too Brief is retried with the registrar's Min-Expires (§10.2.8).

Example:
    >>> client = RegistrationClient("sip:alice@example.com", "sip:example.com",
    ...                             "sip:alice@192.0.2.4:5060")
    >>> request = client.register(now=0.0)     # send it; feed the final response back:
    >>> # retry = client.receive_response(response, now)   -> a REGISTER to send, or None
    >>> # event = client.next_event()                      -> Registered(expires, contacts)
"""

from __future__ import annotations

import enum
import random
from collections import deque
from dataclasses import dataclass

from p2psip.endpoint.digest import Challenge, DigestClient, parse_challenge
from p2psip.endpoint.headers import parse_address
from p2psip.endpoint.message import Headers, Request, Response
from p2psip.endpoint.uri import URI, parse_uri
from p2psip.errors import P2PSIPError

__all__ = [
    "Registered",
    "RegistrationClient",
    "RegistrationEvent",
    "RegistrationFailed",
    "RegistrationState",
    "Unregistered",
]

# How many challenges one REGISTER exchange answers per header: the first one, then only
# stale ones (RFC 7616 §3.3), so a registrar cannot keep us looping.
_MAX_CHALLENGES = 3


class RegistrationState(enum.Enum):
    """Where a registration stands."""

    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    UNREGISTERING = "unregistering"
    FAILED = "failed"


class RegistrationEvent:
    """Base class of registration events."""


@dataclass(frozen=True)
class Registered(RegistrationEvent):
    """The registrar accepted the binding.

    Attributes:
        expires: seconds granted for our contact.
        contacts: every binding the registrar returned for the AoR (ours and others).
    """

    expires: int
    contacts: tuple[str, ...]


@dataclass(frozen=True)
class Unregistered(RegistrationEvent):
    """Our binding was removed (un-REGISTER answered 2xx)."""


@dataclass(frozen=True)
class RegistrationFailed(RegistrationEvent):
    """The registrar refused (or never answered).

    Attributes:
        status: the final status (408 for a timeout, 503 for a transport error).
        reason: a human-readable explanation.
        authentication_failed: the failure is about authentication: our credentials were
            refused (challenged again without ``stale``, or 403 after answering a
            challenge), or a challenge could not be answered (no credentials, unsupported
            algorithm).
    """

    status: int
    reason: str
    authentication_failed: bool = False


class RegistrationClient:
    """Keeps one contact bound to an AoR at a registrar.

    Once a challenge has been answered, its credentials are sent with every later REGISTER
    of this binding (refreshes, 423 retries, the un-REGISTER), with ``nc`` counting up
    (RFC 3261 §22.3, RFC 7616 §3.4: preemptive authorization), which saves a round trip.

    Args:
        aor: the address-of-record (To and From), e.g. ``sip:alice@example.com``.
        registrar: the Request-URI, e.g. ``sip:example.com``.
        contact: our contact URI (``sip:alice@192.0.2.4:5060``).
        expires: the lifetime asked for, in seconds.
        credentials: (username, password) for digest challenges, or None.
        rng: random source for Call-ID, tags and cnonces.
        refresh_margin: refresh this many seconds before expiry, but never before half
            of the granted lifetime has passed.

    Attributes:
        state: the :class:`RegistrationState`.
        granted: the lifetime the registrar granted to our contact (None when unbound).
        bindings: the Contact values of the last 2xx (every binding of the AoR).
        refresh_at: when the refresh REGISTER is due (absolute), or None.
    """

    def __init__(
        self,
        aor: str,
        registrar: str,
        contact: str,
        *,
        expires: int = 3600,
        credentials: tuple[str, str] | None = None,
        rng: random.Random | None = None,
        refresh_margin: float = 30.0,
    ) -> None:
        self.aor = parse_uri(aor)
        self.registrar = parse_uri(registrar)
        self.contact = parse_uri(contact)
        self.expires = expires
        self.rng = rng or random.Random()
        self.refresh_margin = refresh_margin
        self.state = RegistrationState.UNREGISTERED
        self.call_id = "".join(self.rng.choice("0123456789abcdef") for _ in range(20))
        self.from_tag = "".join(self.rng.choice("0123456789abcdef") for _ in range(10))
        self.cseq = 0
        self.granted: int | None = None
        self.bindings: tuple[str, ...] = ()
        self.refresh_at: float | None = None
        self._digest = DigestClient(*credentials, rng=self.rng) if credentials else None
        # answer header (Authorization / Proxy-Authorization) -> the challenge answered
        self._challenges: dict[str, Challenge] = {}
        # answer header -> challenges answered in the current exchange
        self._auth_tries: dict[str, int] = {}
        self._asked: int = expires
        self._last: Request | None = None
        self._events: deque[RegistrationEvent] = deque()

    # -- requests ---------------------------------------------------------------------------
    def _authorizations(self) -> list[tuple[str, str]]:
        # RFC 3261 §22.4: the digest uri is the Request-URI as sent
        digest, uri = self._digest, str(self.registrar)
        if digest is None:
            return []
        return [
            (answer, digest.authorize(challenge, "REGISTER", uri, b""))
            for answer, challenge in self._challenges.items()
        ]

    def _request(self, expires: int, authorizations: list[tuple[str, str]]) -> Request:
        # RFC 3261 §10.2: same Call-ID for every REGISTER of this binding, CSeq incremented.
        self.cseq += 1
        headers = Headers(
            [
                ("From", f"<{self.aor}>;tag={self.from_tag}"),
                ("To", f"<{self.aor}>"),
                ("Call-ID", self.call_id),
                ("CSeq", f"{self.cseq} REGISTER"),
                ("Contact", f"<{self.contact}>;expires={expires}"),
                ("Expires", str(expires)),
                ("Max-Forwards", "70"),
                *authorizations,
            ]
        )
        request = Request("REGISTER", self.registrar, headers)
        self._last = request
        self._asked = expires
        return request

    def register(self, now: float) -> Request:
        """The REGISTER that creates (or refreshes) the binding.

        Args:
            now: the current time (unused; kept for the uniform sans-IO signature).

        Returns:
            The request to send.
        """
        self.state = RegistrationState.REGISTERING
        self.refresh_at = None
        self._auth_tries = {}
        return self._request(self.expires, self._authorizations())

    def unregister(self, now: float) -> Request:
        """The REGISTER with ``expires=0`` that removes our binding (§10.2.2).

        Args:
            now: the current time (unused; kept for the uniform sans-IO signature).

        Returns:
            The request to send.
        """
        self.state = RegistrationState.UNREGISTERING
        self.refresh_at = None
        self._auth_tries = {}
        return self._request(0, self._authorizations())

    # -- responses --------------------------------------------------------------------------
    def receive_response(self, response: Response, now: float) -> Request | None:
        """Handle the final response to the last REGISTER.

        Responses to an earlier REGISTER (another CSeq) and provisional responses are
        ignored.

        Args:
            response: the final response.
            now: the current time; refreshes are scheduled from it.

        Returns:
            A new REGISTER to send (authentication or 423 retry), or None.
        """
        last = self._last
        if last is None or response.status < 200:
            return None
        if self.state not in (RegistrationState.REGISTERING, RegistrationState.UNREGISTERING):
            return None
        try:
            if response.call_id != self.call_id or response.cseq.seq != self.cseq:
                return None
        except P2PSIPError:
            return None
        status = response.status
        if status in (401, 407):
            return self._answer_challenge(response)
        if status == 423 and self.state is RegistrationState.REGISTERING:
            # RFC 3261 §10.2.8: retry with at least the registrar's Min-Expires.
            min_expires = (response.headers.get("Min-Expires") or "").strip()
            if min_expires.isdigit() and int(min_expires) > self._asked:
                self.expires = int(min_expires)
                return self._request(self.expires, self._authorizations())
            return self._fail(status, "interval too brief (no usable Min-Expires)")
        if 200 <= status < 300:
            self._auth_tries = {}
            self.bindings = tuple(response.headers.get_all("Contact"))
            if self.state is RegistrationState.UNREGISTERING:
                self.state = RegistrationState.UNREGISTERED
                self.granted = None
                self._events.append(Unregistered())
                return None
            granted = self._granted_expires(response)
            if granted == 0:
                return self._fail(status, "registrar granted no lifetime")
            self.granted = granted
            self.state = RegistrationState.REGISTERED
            # Refresh margin seconds before expiry, but not before half of the lifetime.
            self.refresh_at = now + max(granted / 2, granted - self.refresh_margin)
            self._events.append(Registered(granted, self.bindings))
            return None
        # RFC 3261 §21.4.4: 403 after we answered a challenge means these credentials.
        refused = status == 403 and bool(self._auth_tries or self._challenges)
        return self._fail(status, response.reason or "refused", refused)

    def _answer_challenge(self, response: Response) -> Request | None:
        status = response.status
        header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
        answer = "Authorization" if status == 401 else "Proxy-Authorization"
        if self._digest is None:
            return self._fail(status, "authentication required but no credentials given", True)
        try:
            challenges = [parse_challenge(v) for v in response.headers.get_lines(header)]
            challenge = self._digest.choose(challenges)
        except P2PSIPError as error:
            return self._fail(status, f"cannot answer the challenge: {error}", True)
        tries = self._auth_tries.get(answer, 0)
        # RFC 3261 §22.2: a new challenge to credentials computed for this exchange means
        # they were refused, unless the nonce was merely stale (RFC 7616 §3.3).
        if tries and not challenge.stale:
            return self._fail(status, "credentials refused", True)
        if tries >= _MAX_CHALLENGES:
            return self._fail(status, "too many stale challenges", True)
        self._auth_tries[answer] = tries + 1
        self._challenges[answer] = challenge
        try:
            authorizations = self._authorizations()
        except P2PSIPError as error:
            del self._challenges[answer]
            return self._fail(status, f"cannot answer the challenge: {error}", True)
        return self._request(self._asked, authorizations)

    def transaction_failed(self, status: int, reason: str) -> None:
        """The REGISTER got no response (timeout, 408) or could not be sent (503).

        Args:
            status: the status to act as if received (RFC 3261 §8.1.3.1).
            reason: a human-readable explanation.
        """
        self._fail(status, reason)

    def _fail(self, status: int, reason: str, authentication: bool = False) -> None:
        self.state = RegistrationState.FAILED
        self.refresh_at = None
        self._auth_tries = {}
        self._events.append(RegistrationFailed(status, reason, authentication))
        return None

    def _granted_expires(self, response: Response) -> int:
        # RFC 3261 §10.2.4: the expires param of our binding, else the Expires header.
        for value in response.headers.get_all("Contact"):
            try:
                binding = parse_address(value)
            except P2PSIPError:
                continue
            if _same_binding(binding.uri, self.contact):
                exp = (binding.params.get("expires") or "").strip()
                if exp.isdigit():
                    return int(exp)
        header = (response.headers.get("Expires") or "").strip()
        if header.isdigit():
            return int(header)
        return self._asked

    # -- timers and events ------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """When the binding must be refreshed (absolute), or None."""
        return self.refresh_at

    def handle_timer(self, now: float) -> Request | None:
        """The refresh REGISTER when it is due.

        Args:
            now: the current time.

        Returns:
            The refresh REGISTER, or None when nothing is due.
        """
        if self.refresh_at is not None and now >= self.refresh_at:
            return self.register(now)
        return None

    def next_event(self) -> RegistrationEvent | None:
        """The next registration event, or None."""
        return self._events.popleft() if self._events else None


def _same_binding(a: URI, b: URI) -> bool:
    # RFC 3261 §10.3 step 6 compares URIs by §19.1.4; user, host and port identify ours.
    return (a.user, a.host.lower(), _port(a)) == (b.user, b.host.lower(), _port(b))


def _port(uri: URI) -> int:
    if uri.port is not None:
        return uri.port
    return 5061 if uri.scheme == "sips" or uri.transport == "tls" else 5060
