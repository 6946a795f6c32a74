"""The chain locator: overlay domains through Bonjour and the DHT at once, the rest by DNS.

For an AoR in an overlay domain the overlay locators (Bonjour, DHT) are asked concurrently
and the first verified answer wins; other AoRs go to DNS (RFC 3263). A static table, when
given, is consulted first. Answers are cached (positive with a TTL, negative briefly).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence

from p2psip.errors import (
    LocatorError,
    NotFound,
    OverlayUnreachable,
    P2PSIPError,
    RecordRefused,
)
from p2psip.locator.base import (
    LocatedContact,
    Locator,
    LocatorCache,
    aor_domain,
    normalize_aor_text,
)

__all__ = ["ChainLocator"]


class ChainLocator:
    """Resolve through several locators.

    Args:
        overlay: locators for overlay domains, asked concurrently (e.g. Bonjour and DHT).
        dns: the locator for every other domain (RFC 3263), or None.
        static: a table consulted before anything else, or None.
        overlay_domains: domains served by the overlay (``p2p.example``), or a predicate.
        cache: the answer cache (a default one when None).
        ttl: lifetime of a cached positive answer, seconds.
        clock: the time source (the running loop's clock by default).
    """

    name = "chain"

    def __init__(
        self,
        *,
        overlay: Sequence[Locator] = (),
        dns: Locator | None = None,
        static: Locator | None = None,
        overlay_domains: Iterable[str] | Callable[[str], bool] = (),
        cache: LocatorCache | None = None,
        ttl: float = 30.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.overlay = list(overlay)
        self.dns = dns
        self.static = static
        if callable(overlay_domains):
            self._is_overlay = overlay_domains
        else:
            domains = {d.lower() for d in overlay_domains}
            self._is_overlay = lambda domain: (
                domain in domains or any(domain.endswith("." + d) for d in domains)
            )
        self.cache = cache or LocatorCache()
        self.ttl = ttl
        self._clock = clock

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def is_overlay_aor(self, aor: str) -> bool:
        """Whether ``aor`` belongs to an overlay domain (resolved by the overlay locators)."""
        try:
            return bool(self.overlay) and self._is_overlay(aor_domain(normalize_aor_text(aor)))
        except P2PSIPError:
            return False

    async def resolve(self, aor: str) -> list[LocatedContact]:
        """Contacts for ``aor``, best first.

        Raises:
            NotFound: nobody knows the AoR (cached briefly).
            RecordRefused: only records that failed verification were found.
            OverlayUnreachable / LocatorError: no locator could answer.
        """
        key = normalize_aor_text(aor)
        now = self._now()
        cached = self.cache.get(key, now)
        if cached is False:
            raise NotFound(f"{aor}: not found (cached)")
        if cached:
            return cached  # type: ignore[return-value]
        try:
            contacts = await self._resolve(key)
        except NotFound:
            self.cache.put_negative(key, self._now())
            raise
        self.cache.put(key, contacts, self.ttl, self._now())
        return contacts

    async def _resolve(self, aor: str) -> list[LocatedContact]:
        if self.static is not None:
            try:
                return await self.static.resolve(aor)
            except NotFound:
                pass
        if self._is_overlay(aor_domain(aor)) and self.overlay:
            return await self._first_answer(aor, self.overlay)
        if self.dns is None:
            raise NotFound(f"{aor}: not an overlay domain and no DNS locator")
        return await self.dns.resolve(aor)

    async def _first_answer(self, aor: str, locators: Sequence[Locator]) -> list[LocatedContact]:
        tasks = {asyncio.ensure_future(loc.resolve(aor)): loc for loc in locators}
        errors: list[BaseException] = []
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    error = task.exception()
                    if error is None and task.result():
                        return task.result()
                    errors.append(error or NotFound(f"{aor}: empty answer"))
        finally:
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        refused = [e for e in errors if isinstance(e, RecordRefused)]
        if refused:
            raise refused[0]
        if errors and all(isinstance(e, NotFound) for e in errors):
            raise NotFound(f"{aor}: not found in the overlay")
        unreachable = [e for e in errors if isinstance(e, OverlayUnreachable)]
        if unreachable and len(unreachable) == len(errors):
            raise unreachable[0]
        for e in errors:
            if isinstance(e, NotFound):
                raise NotFound(f"{aor}: not found ({e})")
        raise LocatorError(f"{aor}: every overlay locator failed: {errors[0]}")

    async def publish(self, aor: str, contacts: Sequence[LocatedContact]) -> None:
        """Publish through every overlay locator that can (concurrently)."""
        self.cache.invalidate(normalize_aor_text(aor))
        await asyncio.gather(*(loc.publish(aor, contacts) for loc in self.overlay))

    async def withdraw(self, aor: str) -> None:
        """Withdraw from every overlay locator."""
        self.cache.invalidate(normalize_aor_text(aor))
        await asyncio.gather(*(loc.withdraw(aor) for loc in self.overlay), return_exceptions=True)

    async def close(self) -> None:
        """Close every locator of the chain."""
        locators = [*self.overlay, self.dns, self.static]
        await asyncio.gather(
            *(loc.close() for loc in locators if loc is not None), return_exceptions=True
        )
