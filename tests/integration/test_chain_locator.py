"""The chain locator's policy: static first, overlay locators raced, DNS otherwise, caching.

The overlay and DNS locators here are small in-memory locators with controllable delays:
the chain's own logic is under test; the real DHT, Bonjour and DNS locators have their own
integration tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from p2psip.errors import NotFound, OverlayUnreachable, RecordRefused
from p2psip.locator.aio.chain import ChainLocator
from p2psip.locator.base import LocatedContact
from p2psip.locator.static import StaticLocator


class TableLocator:
    def __init__(
        self,
        name: str,
        table: dict[str, list[LocatedContact]],
        delay: float = 0.0,
        error: Exception | None = None,
    ) -> None:
        self.name = name
        self.table = table
        self.delay = delay
        self.error = error
        self.calls = 0
        self.cancelled = False
        self.published: list[tuple[str, int]] = []

    async def resolve(self, aor: str) -> list[LocatedContact]:
        self.calls += 1
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.error is not None:
            raise self.error
        if aor not in self.table:
            raise NotFound(aor)
        return self.table[aor]

    async def publish(self, aor: str, contacts: Sequence[LocatedContact]) -> None:
        self.published.append((aor, len(contacts)))

    async def withdraw(self, aor: str) -> None:
        self.table.pop(aor, None)

    async def close(self) -> None:
        pass


def contact(source: str, port: int) -> LocatedContact:
    return LocatedContact(f"sip:x@127.0.0.1:{port}", "udp", "127.0.0.1", port, 0, source)


ALICE = "sip:alice@p2p.example"


async def test_overlay_race_takes_the_first_answer_and_cancels_the_other() -> None:
    bonjour = TableLocator("bonjour", {ALICE: [contact("bonjour", 1)]}, delay=0.0)
    dht = TableLocator("dht", {ALICE: [contact("dht", 2)]}, delay=5.0)
    chain = ChainLocator(overlay=[dht, bonjour], overlay_domains=["p2p.example"])
    result = await asyncio.wait_for(chain.resolve("alice@P2P.example"), 2.0)
    assert [c.source for c in result] == ["bonjour"]
    assert dht.cancelled


async def test_overlay_not_found_everywhere_is_cached_negatively() -> None:
    bonjour = TableLocator("bonjour", {})
    dht = TableLocator("dht", {})
    chain = ChainLocator(overlay=[dht, bonjour], overlay_domains=["p2p.example"])
    for _ in range(3):
        with pytest.raises(NotFound):
            await chain.resolve(ALICE)
    assert dht.calls == 1 and bonjour.calls == 1


async def test_refused_record_wins_over_not_found() -> None:
    bonjour = TableLocator("bonjour", {})
    dht = TableLocator("dht", {}, error=RecordRefused("forged signature"))
    chain = ChainLocator(overlay=[dht, bonjour], overlay_domains=["p2p.example"])
    with pytest.raises(RecordRefused):
        await chain.resolve(ALICE)


async def test_unreachable_overlay() -> None:
    dht = TableLocator("dht", {}, error=OverlayUnreachable("no bootstrap"))
    chain = ChainLocator(overlay=[dht], overlay_domains=["p2p.example"])
    with pytest.raises(OverlayUnreachable):
        await chain.resolve(ALICE)


async def test_other_domains_go_to_dns_and_static_comes_first() -> None:
    dns = TableLocator("dns", {"sip:bob@example.net": [contact("dns", 3)]})
    static = StaticLocator({"sip:carol@example.net": ["sip:carol@127.0.0.1:5090"]})
    dht = TableLocator("dht", {})
    chain = ChainLocator(overlay=[dht], dns=dns, static=static, overlay_domains=["p2p.example"])
    assert [c.source for c in await chain.resolve("sip:bob@example.net")] == ["dns"]
    assert [c.port for c in await chain.resolve("sip:carol@example.net")] == [5090]
    assert dht.calls == 0
    # cached: DNS is not asked again
    await chain.resolve("sip:bob@example.net")
    assert dns.calls == 1


async def test_publish_goes_to_every_overlay_locator_and_clears_the_cache() -> None:
    bonjour = TableLocator("bonjour", {ALICE: [contact("bonjour", 1)]})
    dht = TableLocator("dht", {})
    chain = ChainLocator(overlay=[dht, bonjour], overlay_domains=["p2p.example"])
    await chain.resolve(ALICE)
    await chain.publish(ALICE, [contact("me", 9)])
    assert dht.published == [(ALICE, 1)] and bonjour.published == [(ALICE, 1)]
    await chain.resolve(ALICE)
    assert bonjour.calls == 2  # the cached answer was dropped by publish
