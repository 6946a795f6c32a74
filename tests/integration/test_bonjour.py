"""BonjourLocator over real mDNS multicast on loopback (zeroconf pinned to 127.0.0.1).

Every test browses its own random service type, so concurrent runs on the machine do not see
each other. When multicast on loopback does not work here the tests skip, naming the reason,
and fail instead under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from zeroconf import ServiceInfo
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from p2psip.errors import LocatorError, NotFound, RecordRefused
from p2psip.locator.aio.bonjour import BonjourLocator
from p2psip.locator.base import LocatedContact, Locator

LOOPBACK = ["127.0.0.1"]
KEY_A = bytes(range(32))
KEY_OTHER = bytes(range(1, 33))

Start = Callable[..., Awaitable[BonjourLocator]]
_multicast_problem: list[str | None] = []  # computed once per session


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"mDNS multicast unavailable under CI: {reason}")
    pytest.skip(f"mDNS multicast unavailable: {reason}")


async def _check_loopback_multicast() -> str | None:
    """Whether plain zeroconf (not our code) can announce and look up a service on loopback."""
    service_type = f"_p2pc-{secrets.token_hex(4)}._udp.local."
    name = f"check.{service_type}"
    try:
        one = AsyncZeroconf(interfaces=LOOPBACK)
        two = AsyncZeroconf(interfaces=LOOPBACK)
    except OSError as error:
        return f"cannot open mDNS sockets on 127.0.0.1: {error}"
    try:
        info = ServiceInfo(
            service_type,
            name,
            port=9,
            properties={b"x": b"1"},
            server="p2psip-check.local.",
            parsed_addresses=["127.0.0.1"],
        )
        await (await one.async_register_service(info, cooperating_responders=True))
        found = AsyncServiceInfo(service_type, name)
        if not await found.async_request(two.zeroconf, 2000):
            return (
                "a service announced by zeroconf on 127.0.0.1 was not seen by a second zeroconf"
                " on 127.0.0.1 within 2 s (is multicast routed on lo?)"
            )
        return None
    except OSError as error:
        return f"mDNS on 127.0.0.1 failed: {error}"
    finally:
        await one.async_close()
        await two.async_close()


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """``await start(**options)``: a BonjourLocator on 127.0.0.1, closed at teardown."""
    if not _multicast_problem:
        _multicast_problem.append(await _check_loopback_multicast())
    if _multicast_problem[0] is not None:
        unavailable(_multicast_problem[0])
    service_type = f"_p2pt-{secrets.token_hex(4)}._udp.local."
    started: list[BonjourLocator] = []

    async def _start(**options: object) -> BonjourLocator:
        options.setdefault("interfaces", LOOPBACK)
        options.setdefault("probe", False)
        options.setdefault("timeout", 2.0)
        locator = await BonjourLocator.start(service_type=service_type, **options)  # type: ignore[arg-type]
        started.append(locator)
        return locator

    yield _start
    await asyncio.gather(*(locator.close() for locator in started))


def contact(
    aor_user: str,
    port: int,
    transport: str = "tls",
    key: bytes | None = KEY_A,
    device_id: str | None = None,
) -> LocatedContact:
    return LocatedContact(
        uri=f"sip:{aor_user}@127.0.0.1:{port};transport={transport}",
        transport=transport,
        host="127.0.0.1",
        port=port,
        key_fingerprint="sha256:" + key.hex()[:16] if key else None,
        public_key=key,
        device_id=device_id,
    )


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 3.0) -> float:
    """Poll ``check`` until it is true; returns the seconds it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            pytest.fail(f"condition not met within {within} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def ports_of(locator: BonjourLocator, aor: str) -> set[int]:
    try:
        return {c.port for c in await locator.resolve(aor)}
    except NotFound:
        return set()


async def test_two_locators_discover_each_others_aors(start: Start) -> None:
    a = await start(device_id="dev-a")
    b = await start(device_id="dev-b")
    assert isinstance(a, Locator)
    began = time.monotonic()
    await a.publish("sip:alice@p2p.example", [contact("alice", 5071)])
    await b.publish("sip:bob@p2p.example", [contact("bob", 5072, "udp", key=None)])
    [found] = await b.resolve("sip:alice@p2p.example")
    latency = time.monotonic() - began
    assert found == LocatedContact(
        uri="sip:alice@127.0.0.1:5071;transport=tls",
        transport="tls",
        host="127.0.0.1",
        port=5071,
        source="bonjour",
        key_fingerprint="sha256:" + KEY_A.hex()[:16],
        public_key=KEY_A,
        device_id="dev-a",
    )
    assert found.public_key == KEY_A
    [bob] = await a.resolve("bob@P2P.example")  # AoRs are normalised
    assert (bob.port, bob.transport, bob.public_key, bob.key_fingerprint) == (
        5072,
        "udp",
        None,
        None,
    )
    print(f"\npublish -> resolve on another locator: {latency * 1000:.1f} ms")


async def test_late_joiner_finds_what_was_published_before_it_started(start: Start) -> None:
    a = await start(device_id="dev-a")
    await a.publish("sip:alice@p2p.example", [contact("alice", 5071)])
    # the announcements are over before b exists; after 1 s a's answers are not held back by
    # RFC 6762 §14 (no record multicast twice within a second)
    await asyncio.sleep(1.1)
    b = await start(device_id="dev-b")
    began = time.monotonic()
    [found] = await b.resolve("sip:alice@p2p.example")
    print(f"\ncold start -> resolve: {(time.monotonic() - began) * 1000:.1f} ms")
    assert found.port == 5071


async def test_two_devices_of_one_aor_resolve_to_both(start: Start) -> None:
    laptop = await start(device_id="laptop")
    phone = await start(device_id="phone")
    b = await start(device_id="dev-b")
    await laptop.publish("sip:alice@p2p.example", [contact("alice", 5071)])
    await phone.publish("sip:alice@p2p.example", [contact("alice", 5081, "udp")])

    async def both() -> bool:
        return len(await b.resolve("sip:alice@p2p.example")) == 2

    await eventually(both)
    contacts = await b.resolve("sip:alice@p2p.example")
    assert {(c.device_id, c.port, c.transport) for c in contacts} == {
        ("laptop", 5071, "tls"),
        ("phone", 5081, "udp"),
    }


async def test_one_device_with_several_contacts(start: Start) -> None:
    a = await start(device_id="dev-a")
    b = await start(device_id="dev-b")
    await a.publish(
        "sip:alice@p2p.example", [contact("alice", 5071), contact("alice", 5070, "udp")]
    )
    assert len(a.published["sip:alice@p2p.example"]) == 2

    async def both() -> bool:
        return await ports_of(b, "sip:alice@p2p.example") == {5070, 5071}

    await eventually(both)


async def test_republish_replaces_the_contacts(start: Start) -> None:
    a = await start(device_id="dev-a")
    b = await start(device_id="dev-b")
    await a.publish(
        "sip:alice@p2p.example", [contact("alice", 5071), contact("alice", 5070, "udp")]
    )
    await eventually(lambda: _equals(ports_of(b, "sip:alice@p2p.example"), {5070, 5071}))
    # the tls service changes port (an update in place), the udp one is withdrawn
    await a.publish("sip:alice@p2p.example", [contact("alice", 5075)])
    await eventually(lambda: _equals(ports_of(b, "sip:alice@p2p.example"), {5075}))


async def _equals(value: Awaitable[set[int]], expected: set[int]) -> bool:
    return await value == expected


async def test_withdraw_sends_goodbyes_and_resolve_stops(start: Start) -> None:
    a = await start(device_id="dev-a")
    b = await start(device_id="dev-b", timeout=0.3)
    await a.publish("sip:alice@p2p.example", [contact("alice", 5071)])
    await a.publish("sip:carol@p2p.example", [contact("carol", 5073)])
    await eventually(lambda: _equals(ports_of(b, "sip:alice@p2p.example"), {5071}))
    assert await ports_of(b, "sip:carol@p2p.example") == {5073}
    began = time.monotonic()
    await a.withdraw("sip:alice@p2p.example")
    withdrawn = time.monotonic() - began
    with pytest.raises(NotFound):
        await b.resolve("sip:alice@p2p.example")
    print(f"\nwithdraw (goodbyes sent) {withdrawn * 1000:.0f} ms; NotFound right after")
    assert "sip:alice@p2p.example" not in a.published
    # nothing announces the service again later (zeroconf's queued answers were purged)
    await asyncio.sleep(1.6)
    with pytest.raises(NotFound):
        await b.resolve("sip:alice@p2p.example")
    assert await ports_of(b, "sip:carol@p2p.example") == {5073}  # other AoRs untouched


async def test_close_withdraws_everything(start: Start) -> None:
    a = await start(device_id="dev-a")
    b = await start(device_id="dev-b", timeout=0.3)
    await a.publish("sip:alice@p2p.example", [contact("alice", 5071)])
    await a.publish("sip:carol@p2p.example", [contact("carol", 5073)])
    await eventually(lambda: _equals(ports_of(b, "sip:carol@p2p.example"), {5073}))
    await a.close()
    await a.close()  # idempotent
    for aor in ("sip:alice@p2p.example", "sip:carol@p2p.example"):
        with pytest.raises(NotFound):
            await b.resolve(aor)
    with pytest.raises(LocatorError):
        await a.resolve("sip:alice@p2p.example")
    with pytest.raises(LocatorError):
        await a.publish("sip:alice@p2p.example", [contact("alice", 5071)])


async def test_expired_entries_are_refreshed_while_the_service_lives(start: Start) -> None:
    a = await start(device_id="dev-a")
    b = await start(device_id="dev-b", entry_ttl=0.2, timeout=0.5)
    await a.publish("sip:alice@p2p.example", [contact("alice", 5071)])
    await eventually(lambda: _equals(ports_of(b, "sip:alice@p2p.example"), {5071}))
    await asyncio.sleep(0.4)  # past the entry's lifetime: dropped, then looked up again
    assert await ports_of(b, "sip:alice@p2p.example") == {5071}
    await a.withdraw("sip:alice@p2p.example")
    with pytest.raises(NotFound):
        await b.resolve("sip:alice@p2p.example")


async def test_unknown_aor_is_not_found_after_the_timeout(start: Start) -> None:
    b = await start(device_id="dev-b", timeout=0.3)
    began = time.monotonic()
    with pytest.raises(NotFound):
        await b.resolve("sip:nobody@p2p.example")
    assert 0.3 <= time.monotonic() - began < 1.0


async def test_a_miss_waits_for_an_answer_that_arrives_in_time(start: Start) -> None:
    a = await start(device_id="dev-a")
    b = await start(device_id="dev-b", timeout=2.0)
    resolving = asyncio.ensure_future(b.resolve("sip:alice@p2p.example"))
    await asyncio.sleep(0.2)
    assert not resolving.done()
    await a.publish("sip:alice@p2p.example", [contact("alice", 5071)])
    [found] = await asyncio.wait_for(resolving, 2.0)
    assert found.port == 5071


async def test_verifier_rejecting_the_key_refuses_the_record(start: Start) -> None:
    seen: list[tuple[str, bytes | None]] = []

    def pinned(aor: str, found: LocatedContact) -> bool:
        seen.append((aor, found.public_key))
        return found.public_key == KEY_A

    a = await start(device_id="dev-a")
    mallory = await start(device_id="dev-m")
    b = await start(device_id="dev-b", verifier=pinned, timeout=0.5)
    await mallory.publish("sip:alice@p2p.example", [contact("alice", 6666, key=KEY_OTHER)])
    with pytest.raises(RecordRefused):
        await b.resolve("sip:alice@p2p.example")
    assert ("sip:alice@p2p.example", KEY_OTHER) in seen
    # the genuine device's contact passes, the impostor's is dropped
    await a.publish("sip:alice@p2p.example", [contact("alice", 5071, key=KEY_A)])
    await eventually(lambda: _equals(ports_of(b, "sip:alice@p2p.example"), {5071}))


async def test_a_verifier_that_raises_rejects(start: Start) -> None:
    def broken(aor: str, found: LocatedContact) -> bool:
        raise RuntimeError("boom")

    a = await start(device_id="dev-a")
    b = await start(device_id="dev-b", verifier=broken, timeout=0.5)
    await a.publish("sip:alice@p2p.example", [contact("alice", 5071)])
    with pytest.raises(RecordRefused):
        await b.resolve("sip:alice@p2p.example")


async def test_hostile_services_on_the_link_are_ignored(start: Start) -> None:
    b = await start(device_id="dev-b", timeout=0.5)
    hostile = AsyncZeroconf(interfaces=LOOPBACK)
    try:
        garbage = {
            "bad-utf8": b"\x09txtvers=1\x09aor=\xff\xfe\xfd\xfc\x0eaor=sip:alice@p2p.example",
            "truncated": b"\x09txtvers=1\x30aor=sip:alice@p2p.example",
            "no-uri": b"\x09txtvers=1\x19aor=sip:alice@p2p.example\x06tp=udp\x05pri=0",
            "huge": b"\x09txtvers=1" + (b"\xff" + b"x" * 255) * 12,
        }
        for label, text in garbage.items():
            info = ServiceInfo(
                b.service_type,
                f"{label}.{b.service_type}",
                port=5060,
                properties=text,
                server="p2psip-hostile.local.",
                parsed_addresses=["127.0.0.1"],
            )
            await hostile.async_register_service(info, cooperating_responders=True)
        await asyncio.sleep(0.3)
        with pytest.raises(NotFound):
            await b.resolve("sip:alice@p2p.example")
        assert len(b.directory) == 0
        # the locator still works
        a = await start(device_id="dev-a")
        await a.publish("sip:alice@p2p.example", [contact("alice", 5071)])
        await eventually(lambda: _equals(ports_of(b, "sip:alice@p2p.example"), {5071}))
    finally:
        await hostile.async_close()


async def test_publish_refuses_contacts_without_a_numeric_address(start: Start) -> None:
    a = await start(device_id="dev-a")
    named = LocatedContact("sip:alice@alice.example", "udp", "alice.example", 5060)
    with pytest.raises(LocatorError):
        await a.publish("sip:alice@p2p.example", [named])
    assert a.published == {}


async def test_publish_with_probing(start: Start) -> None:
    a = await start(device_id="dev-a", probe=True)
    b = await start(device_id="dev-b")
    began = time.monotonic()
    await a.publish("sip:alice@p2p.example", [contact("alice", 5071)])
    registered = time.monotonic() - began
    [found] = await b.resolve("sip:alice@p2p.example")
    discovered = time.monotonic() - began
    print(f"\nwith probing: registered {registered:.3f} s, resolved {discovered:.3f} s")
    assert found.port == 5071 and registered > 0.5  # RFC 6762 §8.1: three probes, 250 ms apart
