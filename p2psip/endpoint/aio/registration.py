"""asyncio front end of the REGISTER client: sends through a UserAgent, refreshes on a timer.

The protocol logic lives in :class:`~p2psip.endpoint.registration.RegistrationClient`; this
module only sends its requests with :meth:`UserAgent.send`, feeds the responses back and keeps
one ``loop.call_at`` armed on the client's refresh time (aioquic style).

Example:
    >>> ua = UserAgent()                                                  # doctest: +SKIP
    >>> await ua.listen("udp", "127.0.0.1")                               # doctest: +SKIP
    >>> reg = await Registration.start(                                   # doctest: +SKIP
    ...     ua, "sip:alice@example.com", "sip:example.com",
    ...     credentials=("alice", "secret"))
    >>> reg.state, reg.expires                                            # doctest: +SKIP
    (<RegistrationState.REGISTERED: 'registered'>, 3600)
    >>> await reg.stop()                                                  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from p2psip.endpoint.addresses import TransportAddress
from p2psip.endpoint.aio.useragent import UserAgent
from p2psip.endpoint.message import Request
from p2psip.endpoint.registration import (
    Registered,
    RegistrationClient,
    RegistrationEvent,
    RegistrationFailed,
    RegistrationState,
)
from p2psip.endpoint.uri import parse_uri
from p2psip.errors import (
    AuthenticationError,
    P2PSIPError,
    RegistrationError,
    TransactionTimeout,
    TransportError,
)

__all__ = ["Registration"]

log = logging.getLogger("p2psip.registration")


class Registration:
    """One contact kept bound to an AoR at a registrar, refreshed before it expires.

    Create it with :meth:`start`. A refresh that fails (error response, timeout, transport
    error) is retried with exponential backoff (RFC 5626 §4.5 style: the wait doubles from
    ``retry_min`` up to ``retry_max``, then a random 50-100 % of it is used) until it succeeds
    or :meth:`stop` is called; meanwhile :attr:`state` is ``FAILED`` and
    :attr:`last_failure` says why.

    Args:
        ua: the user agent that sends the requests.
        client: the sans-IO client.
        destination: where the REGISTERs go.
        on_event: called with every :class:`RegistrationEvent` (sync).
        retry_min: the first wait after a failed refresh, in seconds.
        retry_max: the longest wait between retries, in seconds.

    Attributes:
        client: the :class:`RegistrationClient` (Call-ID, CSeq, refresh time).
        last_failure: the last :class:`RegistrationFailed` event, or None.
        failures: consecutive failed refreshes (0 once a refresh succeeds).
    """

    def __init__(
        self,
        ua: UserAgent,
        client: RegistrationClient,
        destination: TransportAddress,
        *,
        on_event: Callable[[RegistrationEvent], None] | None = None,
        retry_min: float = 2.0,
        retry_max: float = 300.0,
    ) -> None:
        self.ua = ua
        self.client = client
        self.destination = destination
        self.on_event = on_event
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.last_failure: RegistrationFailed | None = None
        self.failures = 0  # consecutive failed refreshes
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    # -- creation ---------------------------------------------------------------------------
    @classmethod
    async def start(
        cls,
        ua: UserAgent,
        aor: str,
        registrar: str,
        contact: str | None = None,
        expires: int = 3600,
        credentials: tuple[str, str] | None = None,
        destination: TransportAddress | None = None,
        transport: str = "udp",
        *,
        refresh_margin: float = 30.0,
        on_event: Callable[[RegistrationEvent], None] | None = None,
        retry_min: float = 2.0,
        retry_max: float = 300.0,
        rng: random.Random | None = None,
    ) -> Registration:
        """Register and return once the registrar accepted the binding.

        Args:
            ua: a user agent listening on ``transport`` (see :meth:`UserAgent.listen`).
            aor: the address-of-record, e.g. ``sip:alice@example.com`` (To and From).
            registrar: the Request-URI, e.g. ``sip:example.com``.
            contact: our contact URI; by default ``sip:<aor user>@<ua's address>`` for
                ``transport`` (with ``;transport=`` unless UDP).
            expires: the lifetime to ask for, in seconds.
            credentials: (username, password) for digest challenges.
            destination: where to send the REGISTERs; by default the registrar URI's host and
                port over ``transport`` (no DNS SRV here).
            transport: ``udp``, ``tcp`` or ``tls`` (ignored when ``destination`` is given).
            refresh_margin: refresh this many seconds before expiry (never before half of
                the granted lifetime).
            on_event: called with every :class:`RegistrationEvent`, this first one included.
            retry_min: the first wait after a failed refresh, in seconds.
            retry_max: the longest wait between refresh retries, in seconds.
            rng: random source for Call-ID, tags and cnonces (default: the UA's).

        Returns:
            The running registration.

        Raises:
            AuthenticationError: the credentials were refused (401/407 again, or 403, after
                answering a challenge) or a challenge could not be answered.
            RegistrationError: any other failure (``.status``: 403, 404, 423, 5xx...).
            TransactionTimeout: the registrar never answered.
            TransportError: the REGISTER could not be sent.
            ValueError: ``ua`` has no listener for the transport.
        """
        registrar_uri = parse_uri(registrar)
        if destination is None:
            destination = ua.destination_for(registrar_uri, transport)
        if contact is None:
            local = ua.core.local_address(destination.transport)
            user = parse_uri(aor).user
            contact = f"sip:{user + '@' if user else ''}{local.host_for_uri}:{local.port}"
            if destination.transport != "udp":
                contact += f";transport={destination.transport}"
        client = RegistrationClient(
            aor,
            registrar,
            contact,
            expires=expires,
            credentials=credentials,
            rng=rng or ua.core.rng,
            refresh_margin=refresh_margin,
        )
        self = cls(
            ua,
            client,
            destination,
            on_event=on_event,
            retry_min=retry_min,
            retry_max=retry_max,
        )
        event = await self._exchange(client.register(ua.now()))
        if not isinstance(event, Registered):
            raise self._error(event)
        self._arm(client.get_timer())
        return self

    # -- public state -----------------------------------------------------------------------
    @property
    def state(self) -> RegistrationState:
        """Where the registration stands (``FAILED`` while a failed refresh is retried)."""
        return self.client.state

    @property
    def expires(self) -> int | None:
        """Seconds the registrar granted to our contact at the last success (None if unbound)."""
        return self.client.granted

    @property
    def bindings(self) -> tuple[str, ...]:
        """The Contact values of the last 2xx: every binding of the AoR, ours included."""
        return self.client.bindings

    @property
    def contact(self) -> str:
        """Our contact URI."""
        return str(self.client.contact)

    # -- stopping ---------------------------------------------------------------------------
    async def stop(self) -> None:
        """Cancel the refresh and remove our binding (REGISTER with ``expires=0``).

        Calling it again does nothing.

        Raises:
            AuthenticationError, RegistrationError, TransactionTimeout, TransportError: as
                for :meth:`start`; the refresh is cancelled in any case.
        """
        if self._stopped:
            return
        await self._halt()
        event = await self._exchange(self.client.unregister(self.ua.now()))
        if isinstance(event, RegistrationFailed) or event is None:
            raise self._error(event)

    async def cancel(self) -> None:
        """Stop refreshing without un-registering (the binding expires on its own)."""
        if not self._stopped:
            await self._halt()

    async def _halt(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # not `await task`: that would swallow our own cancel

    # -- one REGISTER exchange (retries for auth / 423 included) ----------------------------
    async def _exchange(self, request: Request | None) -> RegistrationEvent | None:
        client = self.client
        try:
            while request is not None:
                response = await self.ua.send(request, self.destination)
                request = client.receive_response(response, self.ua.now())
        except TransactionTimeout as error:
            client.transaction_failed(408, str(error))  # RFC 3261 §8.1.3.1: as if 408
            self._deliver()
            raise
        except TransportError as error:
            client.transaction_failed(503, str(error))  # RFC 3261 §8.1.3.1: as if 503
            self._deliver()
            raise
        return self._deliver()

    def _deliver(self) -> RegistrationEvent | None:
        last = None
        while (event := self.client.next_event()) is not None:
            last = event
            if isinstance(event, RegistrationFailed):
                self.last_failure = event
            if self.on_event is not None:
                try:
                    self.on_event(event)
                except Exception:
                    log.exception("registration on_event callback failed")
        return last

    def _error(self, event: RegistrationEvent | None) -> P2PSIPError:
        what = f"REGISTER {self.client.aor} at {self.client.registrar}"
        if not isinstance(event, RegistrationFailed):
            return RegistrationError(f"{what}: no final answer", 500, "no final answer")
        if event.authentication_failed:
            return AuthenticationError(f"{what}: {event.reason} ({event.status})")
        return RegistrationError(
            f"{what}: {event.status} {event.reason}", event.status, event.reason
        )

    # -- refresh ----------------------------------------------------------------------------
    def _arm(self, deadline: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None and not self._stopped:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(deadline, self._on_timer, deadline)

    def _on_timer(self, deadline: float) -> None:
        self._timer = None
        if self._stopped:
            return
        # asyncio may run a timer a clock tick early; never hand the core a time before it.
        now = max(deadline, self.ua.now())
        if self.client.state is RegistrationState.FAILED:
            request: Request | None = self.client.register(now)
        else:
            request = self.client.handle_timer(now)
        if request is not None:
            self._task = asyncio.ensure_future(self._refresh(request))

    async def _refresh(self, request: Request) -> None:
        try:
            await self._exchange(request)
        except (TransactionTimeout, TransportError):
            pass  # already a RegistrationFailed event; retried below
        except P2PSIPError:
            log.exception("REGISTER refresh failed")
            self.client.transaction_failed(503, "could not send the REGISTER")
            self._deliver()
        if self._stopped:
            return
        if self.client.state is RegistrationState.REGISTERED:
            self.failures = 0
            self._arm(self.client.get_timer())
            return
        # RFC 5626 §4.5: wait min(max, base * 2^failures), a random 50-100 % of it.
        delay = min(self.retry_max, self.retry_min * 2**self.failures)
        self.failures += 1
        delay *= 0.5 + 0.5 * self.client.rng.random()
        log.info("REGISTER refresh failed (%s); retrying in %.1f s", self.last_failure, delay)
        self._arm(self.ua.now() + delay)
