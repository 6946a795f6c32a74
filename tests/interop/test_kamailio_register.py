"""REGISTER with digest authentication against a real Kamailio registrar (UDP and TCP)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

from p2psip.endpoint.aio.registration import Registration
from p2psip.endpoint.aio.useragent import UserAgent
from p2psip.endpoint.registration import RegistrationState
from p2psip.errors import AuthenticationError

pytestmark = pytest.mark.interop

TIMEOUT = 10.0
TRANSPORTS = ["udp", "tcp"]


@pytest.fixture
async def ua() -> AsyncIterator[UserAgent]:
    agent = UserAgent(rng=random.Random(11))
    yield agent
    await agent.close()


def usrloc_has(kamailio, contact: str) -> bool:  # type: ignore[no-untyped-def]
    """Whether ``kamcmd ul.dump`` lists ``contact`` as a binding address."""
    return f"Address: {contact}\n" in kamailio.kamcmd("ul.dump")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_register_and_unregister(kamailio, ua: UserAgent, transport: str) -> None:  # type: ignore[no-untyped-def]
    await ua.listen(transport, kamailio.host, 0)
    user = "alice"

    reg = await asyncio.wait_for(
        Registration.start(
            ua,
            kamailio.aor(user),
            kamailio.uri,
            expires=600,
            credentials=(user, kamailio.users[user]),
            transport=transport,
        ),
        TIMEOUT,
    )
    try:
        assert reg.state is RegistrationState.REGISTERED
        assert 0 < (reg.expires or 0) <= 600
        assert any(b.startswith(f"<{reg.contact}>") for b in reg.bindings), reg.bindings
        dump = await asyncio.to_thread(kamailio.kamcmd, "ul.dump")
        assert f"AoR: {user}\n" in dump, dump
        assert f"Address: {reg.contact}\n" in dump, dump
    finally:
        await asyncio.wait_for(reg.stop(), TIMEOUT)

    assert reg.state is RegistrationState.UNREGISTERED
    assert not await asyncio.to_thread(usrloc_has, kamailio, reg.contact)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_wrong_password_is_refused(kamailio, ua: UserAgent, transport: str) -> None:  # type: ignore[no-untyped-def]
    await ua.listen(transport, kamailio.host, 0)

    with pytest.raises(AuthenticationError, match="credentials refused"):
        await asyncio.wait_for(
            Registration.start(
                ua,
                kamailio.aor("alice"),
                kamailio.uri,
                credentials=("alice", "not-the-password"),
                transport=transport,
            ),
            TIMEOUT,
        )
    dump = await asyncio.to_thread(kamailio.kamcmd, "ul.dump")
    assert "AoR: alice" not in dump, dump
