"""Registration (asyncio) against a registrar written here on a second UserAgent, loopback."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from p2psip.endpoint.aio.registration import Registration
from p2psip.endpoint.aio.useragent import ServerRequest, UserAgent
from p2psip.endpoint.digest import DigestServer
from p2psip.endpoint.message import Request
from p2psip.endpoint.registration import (
    Registered,
    RegistrationEvent,
    RegistrationFailed,
    RegistrationState,
    Unregistered,
)
from p2psip.endpoint.useragent import UserAgentConfig
from p2psip.errors import AuthenticationError, RegistrationError, TransactionTimeout
from p2psip.timers import TimerConfig

TIMEOUT = 5.0
DOMAIN = "example.test"
AOR = f"sip:alice@{DOMAIN}"
USERS = {"alice": "alicepass", "bob": "bobpass"}
TRANSPORTS = ["udp", "tcp"]


@dataclass
class Registrar:
    """A minimal RFC 3261 §10.3 registrar: digest auth, bindings with expiry, 423."""

    ua: UserAgent
    digest: DigestServer
    min_expires: int = 0
    refuse_with: int | None = None  # answer every REGISTER with this status (after auth)
    bindings: dict[str, dict[str, float]] = field(default_factory=dict)  # AoR -> URI -> expiry
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ua.on("REGISTER", self.handle)

    def contacts(self, aor: str = AOR) -> list[str]:
        now = self.ua.now()
        return [uri for uri, until in self.bindings.get(aor, {}).items() if until > now]

    def handle(self, sreq: ServerRequest) -> None:
        request = sreq.request
        self.requests.append(request)
        now = self.ua.now()
        value = request.headers.get("Authorization")
        if value is None:
            self._challenge(sreq, now)
            return
        verification = self.digest.verify(value, "REGISTER", now=now, request_uri=str(request.uri))
        if not verification:
            self._challenge(sreq, now, stale=verification.stale)
            return
        if verification.username != request.to.uri.user:
            sreq.respond(403, "Forbidden auth ID")
            return
        if self.refuse_with is not None:
            sreq.respond(self.refuse_with)
            return
        aor = request.to.uri.aor
        default = request.expires if request.expires is not None else 3600
        table = self.bindings.setdefault(aor, {})
        if request.contact_star:
            table.clear()
        for contact in request.contacts:
            param = contact.params.get("expires")
            expires = int(param) if param is not None else default
            if 0 < expires < self.min_expires:
                # RFC 3261 §10.3 step 7
                sreq.respond(423, headers=[("Min-Expires", str(self.min_expires))])
                return
            if expires == 0:
                table.pop(str(contact.uri), None)
            else:
                table[str(contact.uri)] = now + expires
        # RFC 3261 §10.3 step 8: every current binding with its remaining lifetime
        headers = [
            ("Contact", f"<{uri}>;expires={max(1, round(until - now))}")
            for uri, until in table.items()
            if until > now
        ]
        sreq.respond(200, headers=headers)

    def _challenge(self, sreq: ServerRequest, now: float, stale: bool = False) -> None:
        values = self.digest.challenge(now, stale=stale)
        sreq.respond(401, headers=[("WWW-Authenticate", v) for v in values])


@pytest.fixture
async def registrar_ua() -> AsyncIterator[UserAgent]:
    ua = UserAgent(UserAgentConfig(allow=("REGISTER", "OPTIONS")), rng=random.Random(2))
    yield ua
    await ua.close()


@pytest.fixture
async def client_ua() -> AsyncIterator[UserAgent]:
    ua = UserAgent(rng=random.Random(3))
    yield ua
    await ua.close()


async def listening(ua: UserAgent, transport: str) -> tuple[UserAgent, str]:
    address = await ua.listen(transport, "127.0.0.1", 0)
    return ua, f"sip:{address.host_for_uri}:{address.port}"


def make_registrar(ua: UserAgent, **kwargs: object) -> Registrar:
    digest = DigestServer(DOMAIN, USERS.get, random.Random(4))
    return Registrar(ua, digest, **kwargs)  # type: ignore[arg-type]


async def next_event(queue: asyncio.Queue[RegistrationEvent]) -> RegistrationEvent:
    return await asyncio.wait_for(queue.get(), TIMEOUT)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_register_refresh_unregister(
    registrar_ua: UserAgent, client_ua: UserAgent, transport: str
) -> None:
    _, registrar_uri = await listening(registrar_ua, transport)
    await client_ua.listen(transport, "127.0.0.1", 0)
    registrar = make_registrar(registrar_ua)
    queue: asyncio.Queue[RegistrationEvent] = asyncio.Queue()

    reg = await asyncio.wait_for(
        Registration.start(
            client_ua,
            AOR,
            registrar_uri,
            expires=2,
            refresh_margin=1.0,  # refresh at max(2/2, 2-1) = 1 s
            credentials=("alice", "alicepass"),
            transport=transport,
            on_event=queue.put_nowait,
        ),
        TIMEOUT,
    )
    registered_at = client_ua.now()
    assert reg.state is RegistrationState.REGISTERED
    assert reg.expires == 2
    assert registrar.contacts() == [reg.contact]
    assert reg.bindings == (f"<{reg.contact}>;expires=2",)
    assert (transport == "tcp") == reg.contact.endswith(";transport=tcp")
    first = await next_event(queue)
    assert first == Registered(2, reg.bindings)
    # REGISTER -> 401 -> REGISTER with Authorization -> 200
    assert [("Authorization" in r.headers) for r in registrar.requests] == [False, True]

    refreshed = await next_event(queue)  # the refresh, about 1 s later
    assert isinstance(refreshed, Registered) and refreshed.expires == 2
    assert client_ua.now() - registered_at >= 0.9
    assert registrar.contacts() == [reg.contact]
    # the refresh carried the credentials preemptively: no second challenge
    assert len(registrar.requests) == 3 and "Authorization" in registrar.requests[2].headers
    assert {r.call_id for r in registrar.requests} == {registrar.requests[0].call_id}
    assert [r.cseq.seq for r in registrar.requests] == [1, 2, 3]

    await asyncio.wait_for(reg.stop(), TIMEOUT)
    assert await next_event(queue) == Unregistered()
    assert reg.state is RegistrationState.UNREGISTERED
    assert registrar.bindings[AOR] == {}
    assert registrar.requests[-1].headers.get("Expires") == "0"
    await reg.stop()  # a second stop does nothing
    assert queue.empty()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_wrong_password_raises_authentication_error(
    registrar_ua: UserAgent, client_ua: UserAgent, transport: str
) -> None:
    _, registrar_uri = await listening(registrar_ua, transport)
    await client_ua.listen(transport, "127.0.0.1", 0)
    registrar = make_registrar(registrar_ua)
    events: list[RegistrationEvent] = []

    with pytest.raises(AuthenticationError, match="credentials refused"):
        await asyncio.wait_for(
            Registration.start(
                client_ua,
                AOR,
                registrar_uri,
                credentials=("alice", "wrong"),
                transport=transport,
                on_event=events.append,
            ),
            TIMEOUT,
        )
    assert registrar.contacts() == []
    assert len(registrar.requests) == 2
    assert events == [RegistrationFailed(401, "credentials refused", True)]


async def test_min_expires_is_honoured(registrar_ua: UserAgent, client_ua: UserAgent) -> None:
    _, registrar_uri = await listening(registrar_ua, "udp")
    await client_ua.listen("udp", "127.0.0.1", 0)
    registrar = make_registrar(registrar_ua, min_expires=120)

    reg = await asyncio.wait_for(
        Registration.start(
            client_ua, AOR, registrar_uri, expires=30, credentials=("alice", "alicepass")
        ),
        TIMEOUT,
    )
    assert reg.expires == 120
    # 401, authenticated 423, authenticated retry with 120 -> 200
    assert [r.headers.get("Expires") for r in registrar.requests] == ["30", "30", "120"]
    await asyncio.wait_for(reg.stop(), TIMEOUT)
    assert registrar.contacts() == []


async def test_refused_registration_raises_with_the_status(
    registrar_ua: UserAgent, client_ua: UserAgent
) -> None:
    _, registrar_uri = await listening(registrar_ua, "udp")
    await client_ua.listen("udp", "127.0.0.1", 0)
    make_registrar(registrar_ua, refuse_with=404)

    with pytest.raises(RegistrationError) as info:
        await asyncio.wait_for(
            Registration.start(client_ua, AOR, registrar_uri, credentials=("alice", "alicepass")),
            TIMEOUT,
        )
    assert info.value.status == 404


async def test_other_users_credentials_are_refused(
    registrar_ua: UserAgent, client_ua: UserAgent
) -> None:
    _, registrar_uri = await listening(registrar_ua, "udp")
    await client_ua.listen("udp", "127.0.0.1", 0)
    make_registrar(registrar_ua)

    with pytest.raises(AuthenticationError, match="403"):
        await asyncio.wait_for(
            Registration.start(client_ua, AOR, registrar_uri, credentials=("bob", "bobpass")),
            TIMEOUT,
        )


async def test_failed_refresh_is_retried_with_backoff(
    registrar_ua: UserAgent, client_ua: UserAgent
) -> None:
    _, registrar_uri = await listening(registrar_ua, "udp")
    await client_ua.listen("udp", "127.0.0.1", 0)
    registrar = make_registrar(registrar_ua)
    queue: asyncio.Queue[RegistrationEvent] = asyncio.Queue()

    reg = await asyncio.wait_for(
        Registration.start(
            client_ua,
            AOR,
            registrar_uri,
            expires=2,
            refresh_margin=1.0,
            credentials=("alice", "alicepass"),
            on_event=queue.put_nowait,
            retry_min=0.2,
        ),
        TIMEOUT,
    )
    assert isinstance(await next_event(queue), Registered)
    registrar.refuse_with = 500

    failed = await next_event(queue)  # the refresh at ~1 s
    assert failed == RegistrationFailed(500, "Server Internal Error", False)
    assert reg.state is RegistrationState.FAILED
    assert reg.last_failure == failed
    assert reg.failures == 1

    registrar.refuse_with = None
    recovered = await next_event(queue)  # the retry, 0.1-0.2 s later
    assert isinstance(recovered, Registered)
    assert reg.state is RegistrationState.REGISTERED
    assert reg.failures == 0
    assert registrar.contacts() == [reg.contact]
    await asyncio.wait_for(reg.stop(), TIMEOUT)


async def test_silent_registrar_times_out(registrar_ua: UserAgent) -> None:
    _, registrar_uri = await listening(registrar_ua, "udp")
    registrar_ua.on("REGISTER", lambda sreq: None)  # never answers
    fast = UserAgent(UserAgentConfig(timers=TimerConfig(t1=0.01)), rng=random.Random(5))
    try:
        await fast.listen("udp", "127.0.0.1", 0)
        events: list[RegistrationEvent] = []
        with pytest.raises(TransactionTimeout):
            await asyncio.wait_for(
                Registration.start(fast, AOR, registrar_uri, on_event=events.append), TIMEOUT
            )
        assert [(type(e), getattr(e, "status", None)) for e in events] == [
            (RegistrationFailed, 408)
        ]
    finally:
        await fast.close()
