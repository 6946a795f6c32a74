"""REGISTER client (RFC 3261 §10.2), sans-IO: bind, refresh before expiry, un-register.

The client produces REGISTER requests and consumes their final responses; the caller sends
each request through a client transaction and passes the final response back. Digest
challenges (401/407) are answered with :class:`~p2psip.endpoint.digest.DigestClient`;
423 Interval Too Brief is retried with the registrar's Min-Expires (§10.2.8).
"""

from __future__ import annotations

import enum
import random
from collections import deque
from dataclasses import dataclass

from p2psip.endpoint.digest import DigestClient, parse_challenge
from p2psip.endpoint.headers import parse_address
from p2psip.endpoint.message import Headers, Request, Response
from p2psip.endpoint.uri import URI, parse_uri
from p2psip.errors import P2PSIPError, SIPParseError

__all__ = [
    "Registered",
    "RegistrationClient",
    "RegistrationEvent",
    "RegistrationFailed",
    "RegistrationState",
    "Unregistered",
]


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
    """

    status: int
    reason: str


class RegistrationClient:
    """Keeps one contact bound to an AoR at a registrar.

    Args:
        aor: the address-of-record (To and From), e.g. ``sip:alice@example.com``.
        registrar: the Request-URI, e.g. ``sip:example.com``.
        contact: our contact URI (``sip:alice@192.0.2.4:5060``).
        expires: the lifetime asked for, in seconds.
        credentials: (username, password) for digest challenges, or None.
        rng: random source for Call-ID, tags and cnonces.
        refresh_margin: refresh this many seconds before expiry (at least half-way).
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
        self.refresh_at: float | None = None
        self._digest = DigestClient(*credentials, rng=self.rng) if credentials else None
        self._auth_tries = 0
        self._asked: int = expires
        self._last: Request | None = None
        self._events: deque[RegistrationEvent] = deque()

    # -- requests ---------------------------------------------------------------------------
    def _request(self, expires: int, authorization: tuple[str, str] | None = None) -> Request:
        # RFC 3261 §10.2: same Call-ID for every REGISTER of this binding, CSeq incremented.
        self.cseq += 1
        contact = f"<{self.contact}>;expires={expires}"
        headers = Headers(
            [
                ("From", f"<{self.aor}>;tag={self.from_tag}"),
                ("To", f"<{self.aor}>"),
                ("Call-ID", self.call_id),
                ("CSeq", f"{self.cseq} REGISTER"),
                ("Contact", contact),
                ("Expires", str(expires)),
                ("Max-Forwards", "70"),
            ]
        )
        if authorization is not None:
            headers.add(*authorization)
        request = Request("REGISTER", self.registrar, headers)
        self._last = request
        self._asked = expires
        return request

    def register(self, now: float) -> Request:
        """The REGISTER that creates (or refreshes) the binding."""
        self.state = RegistrationState.REGISTERING
        self._auth_tries = 0
        return self._request(self.expires)

    def unregister(self, now: float) -> Request:
        """The REGISTER with ``expires=0`` that removes our binding (§10.2.2)."""
        self.state = RegistrationState.UNREGISTERING
        self.refresh_at = None
        self._auth_tries = 0
        return self._request(0)

    # -- responses --------------------------------------------------------------------------
    def receive_response(self, response: Response, now: float) -> Request | None:
        """Handle the final response to the last REGISTER.

        Returns:
            A new REGISTER to send (authentication or 423 retry), or None.
        """
        last = self._last
        if last is None or response.status < 200:
            return None
        status = response.status
        if status in (401, 407) and self._digest is not None and self._auth_tries < 2:
            header = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            answer = "Authorization" if status == 401 else "Proxy-Authorization"
            try:
                challenges = [parse_challenge(v) for v in response.headers.get_lines(header)]
                challenge = self._digest.choose(challenges)
                # A second challenge is only worth answering when the nonce was stale.
                if self._auth_tries == 1 and not challenge.stale:
                    return self._fail(status, "credentials refused")
                value = self._digest.authorize(challenge, "REGISTER", str(self.registrar), b"")
            except (P2PSIPError, SIPParseError) as error:
                return self._fail(status, f"cannot answer the challenge: {error}")
            self._auth_tries += 1
            return self._request(self._asked, (answer, value))
        if status == 423:
            min_expires = response.headers.get("Min-Expires")
            if min_expires and min_expires.isdigit() and int(min_expires) > self._asked:
                self.expires = int(min_expires)
                return self._request(int(min_expires))
            return self._fail(status, "interval too brief")
        if 200 <= status < 300:
            if self.state is RegistrationState.UNREGISTERING:
                self.state = RegistrationState.UNREGISTERED
                self.granted = None
                self._events.append(Unregistered())
                return None
            granted = self._granted_expires(response)
            bindings = tuple(response.headers.get_all("Contact"))
            if granted == 0:
                return self._fail(status, "registrar granted no lifetime")
            self.granted = granted
            self.state = RegistrationState.REGISTERED
            # refresh before expiry: margin seconds early, but never later than half-way
            self.refresh_at = now + max(granted / 2, granted - self.refresh_margin)
            self._auth_tries = 0
            self._events.append(Registered(granted, bindings))
            return None
        return self._fail(status, response.reason or "refused")

    def transaction_failed(self, status: int, reason: str) -> None:
        """The REGISTER got no response (timeout 408) or could not be sent (503)."""
        self._fail(status, reason)

    def _fail(self, status: int, reason: str) -> None:
        self.state = RegistrationState.FAILED
        self.refresh_at = None
        self._events.append(RegistrationFailed(status, reason))
        return None

    def _granted_expires(self, response: Response) -> int:
        # RFC 3261 §10.2.4: the expires param of our binding, else the Expires header.
        for value in response.headers.get_all("Contact"):
            try:
                binding = parse_address(value)
            except SIPParseError:
                continue
            if _same_binding(binding.uri, self.contact):
                exp = binding.params.get("expires")
                if exp and exp.isdigit():
                    return int(exp)
        header = response.headers.get("Expires")
        if header and header.isdigit():
            return int(header)
        return self._asked

    # -- timers and events ------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """When the binding must be refreshed (absolute), or None."""
        return self.refresh_at

    def handle_timer(self, now: float) -> Request | None:
        """The refresh REGISTER when it is due."""
        if self.refresh_at is not None and now >= self.refresh_at:
            self.refresh_at = None
            return self.register(now)
        return None

    def next_event(self) -> RegistrationEvent | None:
        """The next registration event, or None."""
        return self._events.popleft() if self._events else None


def _same_binding(a: URI, b: URI) -> bool:
    return (a.user, a.host.lower(), a.port) == (b.user, b.host.lower(), b.port)
