"""The Bonjour locator: AoRs published and found over mDNS/DNS-SD, with python-zeroconf.

The TXT format, instance names and the cache live in :mod:`p2psip.locator.bonjour` (sans-IO);
this module runs zeroconf: one :class:`~zeroconf.asyncio.AsyncZeroconf`, one browser kept
running from :meth:`BonjourLocator.start` so that the cache is warm, and the registrations.

Example::

    locator = await BonjourLocator.start(interfaces=["127.0.0.1"], device_id="laptop")
    await locator.publish("sip:alice@p2p.example", [contact])
    contacts = await locator.resolve("sip:bob@p2p.example")
    await locator.close()
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from zeroconf import (
    BadTypeInNameException,
    DNSOutgoing,
    DNSQuestion,
    InterfaceChoice,
    IPVersion,
    NonUniqueNameException,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf import Error as ZeroconfError
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from p2psip.errors import LocatorError, NotFound, RecordRefused
from p2psip.locator.base import LocatedContact, normalize_aor_text
from p2psip.locator.bonjour import (
    DEFAULT_SERVICE_TYPE,
    BonjourDirectory,
    ServicePlan,
    plan_services,
    service_type_is_valid,
)

__all__ = ["BonjourLocator", "Verifier"]

log = logging.getLogger(__name__)

#: ``verifier(aor, contact) -> bool``: anything but ``True`` (or an exception) drops the contact
Verifier = Callable[[str, LocatedContact], bool]

_TYPE_PTR = 12  # RFC 1035 §3.2.2
_CLASS_IN = 1
_FLAGS_QUERY = 0x0000
_IP_VERSIONS = {"v4": IPVersion.V4Only, "v6": IPVersion.V6Only, "all": IPVersion.All}


class BonjourLocator:
    """Publishes AoRs as DNS-SD services and resolves them from the link's announcements.

    Create it with :meth:`start`. Answers are unauthenticated: every contact carries the
    ``key_fingerprint``/``public_key`` its publisher claims, and ``verifier`` (when given)
    decides which ones :meth:`resolve` returns.

    Attributes:
        service_type: the DNS-SD service type browsed and published.
        device_id: this device's id, used in instance names and for contacts without one.
        timeout: how long :meth:`resolve` waits for an answer on a miss, seconds.
        verifier: the key check applied by :meth:`resolve`, or None.
        probe: probe for name conflicts before announcing (RFC 6762 §8.1, ~1.2 s per publish).
        directory: the cache of discovered services.
    """

    name = "bonjour"

    def __init__(
        self,
        aiozc: AsyncZeroconf,
        *,
        service_type: str,
        device_id: str,
        timeout: float,
        verifier: Verifier | None,
        probe: bool,
        directory: BonjourDirectory,
        requery_interval: float,
        max_lookups: int,
    ) -> None:
        """Use :meth:`start`; this only wires the parts together."""
        self._aiozc = aiozc
        self._zc: Zeroconf = aiozc.zeroconf
        self.service_type = service_type
        self.device_id = device_id
        self.timeout = timeout
        self.verifier = verifier
        self.probe = probe
        self.directory = directory
        self.requery_interval = requery_interval
        self.max_lookups = max_lookups
        self._loop = asyncio.get_running_loop()
        self._browser: AsyncServiceBrowser | None = None
        # lower-cased instance name -> name, for services the browser currently reports
        self._browsed: dict[str, str] = {}
        self._lookups: dict[str, asyncio.Task[None]] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._published: dict[str, dict[str, ServiceInfo]] = {}
        # lower-cased instance name -> the announcements of its registration or update
        self._announcing: dict[str, asyncio.Future[object]] = {}
        self._publish_lock = asyncio.Lock()
        self._last_query = float("-inf")
        self._closed = False

    @classmethod
    async def start(
        cls,
        *,
        interfaces: Sequence[str | int] | None = None,
        service_type: str = DEFAULT_SERVICE_TYPE,
        device_id: str | None = None,
        timeout: float = 1.5,
        verifier: Verifier | None = None,
        probe: bool = True,
        ip_version: Literal["v4", "v6", "all"] | None = None,
        max_entries: int = 512,
        max_per_aor: int = 32,
        entry_ttl: float = 120.0,
        requery_interval: float = 1.0,
        max_lookups: int = 32,
    ) -> BonjourLocator:
        """Open the mDNS sockets and start browsing ``service_type``.

        Args:
            interfaces: addresses (or IPv6 interface indexes) to use; None for every interface.
                ``["127.0.0.1"]`` keeps everything on loopback.
            service_type: the DNS-SD type (``_p2psip._udp.local.``; see
                :mod:`p2psip.locator.bonjour` for why not ``_sip._udp``).
            device_id: this device's id (random when None); must be unique on the link.
            timeout: how long :meth:`resolve` waits on a miss, seconds (1.5: zeroconf holds back
                an answer multicast less than 1 s ago, RFC 6762 §14).
            verifier: ``verifier(aor, contact) -> bool``; contacts failing it are dropped.
            probe: probe before announcing (RFC 6762 §8.1). False announces at once, for
                names known to be unique (the device id is part of every name).
            ip_version: ``"v4"``, ``"v6"`` or ``"all"``; None lets zeroconf decide from
                ``interfaces``.
            max_entries: bound on cached services.
            max_per_aor: bound on cached services per AoR.
            entry_ttl: seconds a cached service is used before it is looked up again.
            requery_interval: minimum seconds between the queries a miss sends.
            max_lookups: bound on concurrent SRV/TXT/address lookups.

        Raises:
            LocatorError: bad service type, or the sockets could not be opened.
        """
        if not service_type_is_valid(service_type):
            raise LocatorError(f"not a DNS-SD service type: {service_type!r}")
        if ip_version is not None and ip_version not in _IP_VERSIONS:
            raise LocatorError(f"ip_version must be v4, v6 or all, not {ip_version!r}")
        try:
            aiozc = AsyncZeroconf(
                interfaces=list(interfaces) if interfaces is not None else InterfaceChoice.All,
                ip_version=_IP_VERSIONS[ip_version] if ip_version else None,
            )
        except (OSError, ValueError, ZeroconfError) as error:
            raise LocatorError(f"cannot start Bonjour on {interfaces}: {error!r}") from error
        try:
            await aiozc.zeroconf.async_wait_for_start()
        except (OSError, ZeroconfError) as error:
            await aiozc.async_close()
            raise LocatorError(f"cannot start Bonjour on {interfaces}: {error!r}") from error
        locator = cls(
            aiozc,
            service_type=service_type,
            device_id=device_id or secrets.token_hex(4),
            timeout=timeout,
            verifier=verifier,
            probe=probe,
            directory=BonjourDirectory(max_entries, max_per_aor, entry_ttl),
            requery_interval=requery_interval,
            max_lookups=max_lookups,
        )
        locator._browser = AsyncServiceBrowser(
            locator._zc, service_type, handlers=[locator._on_service_state_change]
        )
        return locator

    async def __aenter__(self) -> BonjourLocator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- resolve ------------------------------------------------------------------------------

    async def resolve(self, aor: str) -> list[LocatedContact]:
        """Contacts of ``aor`` announced on the link, best priority first.

        On a miss, sends a query and waits up to :attr:`timeout` for an acceptable answer.

        Raises:
            NotFound: no service for ``aor`` answered in time.
            RecordRefused: services answered but the verifier rejected every contact.
            LocatorError: ``aor`` is not an address-of-record, or the locator is closed.
        """
        self._check_open()
        try:
            key = normalize_aor_text(aor)
        except ValueError as error:
            raise LocatorError(str(error)) from error
        deadline = self._loop.time() + self.timeout
        refused = 0
        while True:
            self._expire()
            accepted, refused = self._verified(key, self.directory.contacts(key, self._loop.time()))
            if accepted:
                return accepted
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                break
            self._query()
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._waiters.setdefault(key, set()).add(waiter)
            try:
                await asyncio.wait({waiter}, timeout=remaining)
            finally:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiters[key]
                waiter.cancel()
            self._check_open()
        if refused:
            raise RecordRefused(f"{key}: every Bonjour contact ({refused}) failed verification")
        raise NotFound(f"{key}: no Bonjour answer within {self.timeout:g} s")

    def _verified(
        self, aor: str, contacts: list[LocatedContact]
    ) -> tuple[list[LocatedContact], int]:
        if self.verifier is None:
            return contacts, 0
        accepted = []
        for contact in contacts:
            try:
                ok = self.verifier(aor, contact) is True
            except Exception:  # the hook is the caller's code: a crash is a rejection
                log.warning("Bonjour verifier raised for %s; contact dropped", aor, exc_info=True)
                ok = False
            if ok:
                accepted.append(contact)
        return accepted, len(contacts) - len(accepted)

    def _query(self) -> None:
        """Ask the link for every instance of the type (at most once per requery_interval)."""
        now = self._loop.time()
        if now - self._last_query < self.requery_interval:
            return
        self._last_query = now
        out = DNSOutgoing(_FLAGS_QUERY, True)
        out.add_question(DNSQuestion(self.service_type, _TYPE_PTR, _CLASS_IN))
        self._zc.async_send(out)

    def _expire(self) -> None:
        """Drop stale entries; look again at those whose service is still announced."""
        for entry in self.directory.expire(self._loop.time()):
            name = self._browsed.get(entry.name.lower())
            if name is not None:
                self._load(name)

    # -- browser events -----------------------------------------------------------------------

    def _on_service_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        # Called by zeroconf inside the loop; whatever the network sent must not break it.
        try:
            key = name.lower()
            if state_change is ServiceStateChange.Removed:
                self._browsed.pop(key, None)
                self.directory.remove(name)
                lookup = self._lookups.pop(key, None)
                if lookup is not None:
                    lookup.cancel()
                return
            if key not in self._browsed and len(self._browsed) >= 4 * self.directory.max_entries:
                return  # a flood of names: let the ones known so far live
            self._browsed[key] = name
            self._load(name)
        except Exception:
            log.warning("Bonjour: ignoring bad service %r", name, exc_info=True)

    def _load(self, name: str) -> None:
        """Decode ``name`` from zeroconf's cache, or look it up in the background."""
        if self._closed:
            return
        info = AsyncServiceInfo(self.service_type, name)
        if info.load_from_cache(self._zc):
            self._store(info)
            return
        key = name.lower()
        if key in self._lookups or len(self._lookups) >= self.max_lookups:
            return
        self._lookups[key] = asyncio.ensure_future(self._lookup(info))

    async def _lookup(self, info: AsyncServiceInfo) -> None:
        key = info.name.lower()
        try:
            found = await info.async_request(self._zc, self.timeout * 1000 * 3)
            if found and key in self._browsed:
                self._store(info)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("Bonjour: lookup of %r failed", info.name, exc_info=True)
        finally:
            if self._lookups.get(key) is asyncio.current_task():
                del self._lookups[key]

    def _store(self, info: ServiceInfo) -> None:
        entry = self.directory.update(
            info.name,
            info.text,
            info.parsed_scoped_addresses(),
            info.port,
            self._loop.time(),
        )
        if entry is None:
            log.debug("Bonjour: ignoring unusable service %r", info.name)
            return
        for waiter in self._waiters.get(entry.advert.aor, ()):
            if not waiter.done():
                waiter.set_result(None)

    # -- publish ------------------------------------------------------------------------------

    async def publish(self, aor: str, contacts: Sequence[LocatedContact]) -> None:
        """Announce ``contacts`` for ``aor``: one service instance per contact.

        Publishing again replaces the previous set (changed services are updated in place,
        dropped ones withdrawn). Returns once every service is registered (after probing when
        :attr:`probe` is set) and its first announcement is sent.

        Raises:
            LocatorError: a contact cannot be published (see
                :func:`~p2psip.locator.bonjour.plan_services`), a name is taken on the link,
                or the locator is closed.
        """
        self._check_open()
        try:
            key = normalize_aor_text(aor)
        except ValueError as error:
            raise LocatorError(str(error)) from error
        plans = plan_services(
            key, contacts, device_id=self.device_id, service_type=self.service_type
        )
        async with self._publish_lock:
            self._check_open()
            old = dict(self._published.get(key, {}))
            new: dict[str, ServiceInfo] = {}
            register: list[ServiceInfo] = []
            update: list[ServiceInfo] = []
            for plan in plans:
                info = self._service_info(plan)
                current = old.pop(info.key, None)
                if current is not None and not _changed(current, info):
                    new[info.key] = current  # republishing the same: nothing to send
                    continue
                new[info.key] = info
                (register if current is None else update).append(info)
            results = await asyncio.gather(
                *(self._register(info) for info in register), return_exceptions=True
            )
            for info in update:
                self._stop_announcing([info])
                self._track(info, await self._aiozc.async_update_service(info))
            failed = [
                (info, result)
                for info, result in zip(register, results, strict=True)
                if isinstance(result, BaseException)
            ]
            for info, _ in failed:
                new.pop(info.key, None)
            goodbyes = await self._goodbyes(list(old.values()))
            if new:
                self._published[key] = new
            else:
                self._published.pop(key, None)
            await asyncio.gather(*goodbyes)
        if failed:
            info, error = failed[0]
            if isinstance(error, LocatorError):
                raise error
            if isinstance(error, NonUniqueNameException):
                raise LocatorError(f"{key}: the Bonjour name {info.name!r} is taken on the link")
            raise LocatorError(f"{key}: Bonjour registration failed: {error!r}") from error

    async def _register(self, info: ServiceInfo) -> None:
        try:
            announced = await self._aiozc.async_register_service(
                info, cooperating_responders=not self.probe
            )
        except BadTypeInNameException as error:
            raise LocatorError(f"zeroconf refused the name {info.name!r}") from error
        self._track(info, announced)

    def _service_info(self, plan: ServicePlan) -> ServiceInfo:
        return ServiceInfo(
            self.service_type,
            plan.name,
            port=plan.port,
            properties=plan.txt,
            server=plan.server,
            parsed_addresses=[plan.address],
        )

    def _track(self, info: ServiceInfo, awaitable: Awaitable[object]) -> None:
        """Keep the remaining announcements of a registration (three, RFC 6762 §8.3)."""
        future = asyncio.ensure_future(awaitable)
        self._announcing[info.key] = future
        future.add_done_callback(lambda done: self._announced(info.key, done))

    def _announced(self, key: str, done: asyncio.Future[object]) -> None:
        if self._announcing.get(key) is done:
            del self._announcing[key]

    def _stop_announcing(self, infos: Sequence[ServiceInfo]) -> None:
        """Cancel pending announcements and queued answers that still carry ``infos``.

        python-zeroconf keeps answering from its outgoing queues for up to ~1.6 s (RFC 6762
        §6 aggregation, §14 once-per-second rule) and does not purge them on unregister: an
        answer queued before a goodbye would announce the service again after it.
        """
        names = {info.key for info in infos}
        for key in names:
            future = self._announcing.pop(key, None)
            if future is not None:
                future.cancel()
        try:
            for queue in (self._zc.out_queue, self._zc.out_delay_queue):
                for group in queue.queue:
                    for record in list(group.answers):
                        alias = getattr(record, "alias", None)
                        if record.key in names or (alias is not None and alias.lower() in names):
                            del group.answers[record]
        except AttributeError:  # another zeroconf version: the goodbyes still go out
            log.debug("Bonjour: cannot purge zeroconf's answer queues", exc_info=True)

    async def _goodbyes(self, infos: Sequence[ServiceInfo]) -> list[Awaitable[object]]:
        """Unregister ``infos``; returns the goodbye broadcasts to await."""
        if not infos:
            return []
        self._stop_announcing(infos)
        # RFC 6762 §10.1: goodbye = the records again with TTL 0
        return [await self._aiozc.async_unregister_service(info) for info in infos]

    async def withdraw(self, aor: str) -> None:
        """Stop announcing ``aor``; returns once the goodbye packets (TTL 0) are sent.

        Raises:
            LocatorError: ``aor`` is not an address-of-record.
        """
        try:
            key = normalize_aor_text(aor)
        except ValueError as error:
            raise LocatorError(str(error)) from error
        async with self._publish_lock:
            infos = self._published.pop(key, {})
            if self._zc.done:
                return
            await asyncio.gather(*await self._goodbyes(list(infos.values())))

    @property
    def published(self) -> dict[str, list[str]]:
        """AoR -> the service instance names announced for it."""
        return {aor: [i.name for i in infos.values()] for aor, infos in self._published.items()}

    # -- close --------------------------------------------------------------------------------

    async def close(self) -> None:
        """Withdraw every AoR (goodbyes), stop browsing and close the sockets. Idempotent."""
        if self._closed:
            return
        for aor in list(self._published):
            try:
                await self.withdraw(aor)
            except Exception:
                log.warning("Bonjour: withdrawing %s at close failed", aor, exc_info=True)
        self._closed = True
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        lookups = list(self._lookups.values())
        for task in lookups:
            task.cancel()
        await asyncio.gather(*lookups, return_exceptions=True)
        self._lookups.clear()
        if self._browser is not None:
            await self._browser.async_cancel()
            self._browser = None
        announcing = list(self._announcing.values())
        for future in announcing:
            future.cancel()
        await asyncio.gather(*announcing, return_exceptions=True)
        await self._aiozc.async_close()

    def _check_open(self) -> None:
        if self._closed:
            raise LocatorError("the Bonjour locator is closed")


def _changed(old: ServiceInfo, new: ServiceInfo) -> bool:
    return (
        old.text != new.text
        or old.port != new.port
        or old.server != new.server
        or old.parsed_addresses() != new.parsed_addresses()
    )
