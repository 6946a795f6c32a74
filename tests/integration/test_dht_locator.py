"""The DHT locator on a real overlay on loopback: signed records, attacks, multi-device."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator

import pytest

from p2psip.errors import NotFound, RecordRefused
from p2psip.locator.aio.dht import DHTLocator, _application_key
from p2psip.locator.base import LocatedContact
from p2psip.overlay.dht import StoreDecision
from p2psip.overlay.identity import Identity
from p2psip.overlay.records import dht_key, parse_record

ALICE = "sip:alice@p2p.example"
N = 12


def contact(port: int, priority: int = 0) -> LocatedContact:
    return LocatedContact(
        f"sip:alice@127.0.0.1:{port};transport=tls", "tls", "127.0.0.1", port, priority
    )


@pytest.fixture
async def overlay() -> AsyncIterator[list[DHTLocator]]:
    first = await DHTLocator.start()
    nodes = [first]
    try:
        for _ in range(N - 1):
            nodes.append(await DHTLocator.start(bootstrap=[first.node.address]))
        yield nodes
    finally:
        await asyncio.gather(*(n.close() for n in nodes))


async def test_publish_and_resolve_with_verified_key(overlay: list[DHTLocator]) -> None:
    alice = Identity.generate()
    overlay[0].identity = alice
    await overlay[0].publish(ALICE, [contact(5061)])
    found = await overlay[-1].resolve("alice@P2P.example")
    assert [(c.host, c.port, c.transport, c.source) for c in found] == [
        ("127.0.0.1", 5061, "tls", "dht")
    ]
    assert found[0].public_key == alice.public_key_bytes
    assert found[0].key_fingerprint == alice.fingerprint
    with pytest.raises(NotFound):
        await overlay[-1].resolve("sip:nobody@p2p.example")


async def test_another_key_cannot_take_a_pinned_aor(overlay: list[DHTLocator]) -> None:
    alice, mallory = Identity.generate(), Identity.generate()
    overlay[0].identity = alice
    await overlay[0].publish(ALICE, [contact(5061)])
    overlay[1].identity = mallory
    overlay[1].device_id = "evil"
    with pytest.raises(RecordRefused):
        await overlay[1].publish(ALICE, [contact(6666)])
    found = await overlay[5].resolve(ALICE)
    assert {c.port for c in found} == {5061}
    assert all(c.public_key == alice.public_key_bytes for c in found)


async def test_replayed_older_seq_is_refused_and_newest_wins(overlay: list[DHTLocator]) -> None:
    alice = Identity.generate()
    publisher = overlay[0]
    publisher.identity = alice
    await publisher.publish(ALICE, [contact(5061)])
    old_value = await publisher.node.get(_application_key(ALICE))
    assert old_value is not None
    await publisher.publish(ALICE, [contact(5071)])
    accepted = await overlay[3].node.set(_application_key(ALICE), old_value)  # replay
    assert accepted == 0
    found = await overlay[7].resolve(ALICE)
    assert {c.port for c in found} == {5071}


async def test_forged_signature_is_refused(overlay: list[DHTLocator]) -> None:
    alice = Identity.generate()
    overlay[0].identity = alice
    await overlay[0].publish(ALICE, [contact(5061)])
    value = await overlay[0].node.get(_application_key(ALICE))
    assert value is not None
    record = parse_record(value)
    forged = record.to_bytes().replace(b"5061", b"6666")  # contact changed, signature kept
    assert parse_record(forged).entries[0].contacts[0].uri.endswith("6666;transport=tls")
    assert await overlay[2].node.set(_application_key(ALICE), forged) == 0
    found = await overlay[9].resolve(ALICE)
    assert {c.port for c in found} == {5061}


async def test_two_devices_of_one_aor_coexist(overlay: list[DHTLocator]) -> None:
    alice = Identity.generate()
    phone, laptop = overlay[0], overlay[1]
    phone.identity = laptop.identity = alice
    phone.device_id, laptop.device_id = "phone", "laptop"
    await phone.publish(ALICE, [contact(5061, priority=0)])
    await laptop.publish(ALICE, [contact(5062, priority=10)])
    found = await overlay[8].resolve(ALICE)
    assert [(c.port, c.device_id) for c in found] == [(5061, "phone"), (5062, "laptop")]
    await laptop.withdraw(ALICE)
    found = await overlay[8].resolve(ALICE)
    assert [(c.port, c.device_id) for c in found] == [(5061, "phone")]


async def test_garbage_datagrams_do_not_disturb_the_overlay(overlay: list[DHTLocator]) -> None:
    alice = Identity.generate()
    overlay[0].identity = alice
    await overlay[0].publish(ALICE, [contact(5061)])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for target in overlay[:6]:
            for junk in (b"", b"\x00" * 40, b"\xff" * 9000, b"\x92\x01\x02", b"hello"):
                sock.sendto(junk, target.node.address)
    found = await overlay[11].resolve(ALICE)
    assert {c.port for c in found} == {5061}


async def test_read_repair_brings_replicas_that_missed_an_update_up_to_date(
    overlay: list[DHTLocator],
) -> None:
    """The three replicas closest to the key miss the second publish; a quorum read may stop
    at them, but its background read of every replica hands them the newer record."""
    alice = Identity.generate()
    publisher = overlay[0]
    publisher.identity = alice
    await publisher.publish(ALICE, [contact(5061)])
    key = dht_key(ALICE)
    target = int.from_bytes(key, "big")
    by_distance = sorted(overlay[1:], key=lambda n: int.from_bytes(n.node.node_id, "big") ^ target)
    stale, reader = by_distance[:3], by_distance[-1]

    def down(*args: object, **kwargs: object) -> StoreDecision:
        return StoreDecision.REFUSED_BY_VALIDATOR

    for node in stale:
        node.node.storage.offer = down  # type: ignore[method-assign]
    await publisher.publish(ALICE, [contact(5071)])
    for node in stale:
        del node.node.storage.offer  # the instance attribute goes: the method is back

    def ports(node: DHTLocator) -> set[int]:
        value = node.node.storage.get(key, time.time())
        assert value is not None
        uris = [c.uri for e in parse_record(value).entries for c in e.contacts]
        return {int(u.split(":")[-1].split(";")[0]) for u in uris}

    assert all(ports(n) == {5061} for n in stale)
    reader.node.config = dataclasses.replace(reader.node.config, read_repair_chance=1.0)
    await reader.resolve(ALICE)  # may answer either record: the quorum can be the stale three
    deadline = asyncio.get_running_loop().time() + 5
    while not all(ports(n) == {5071} for n in stale):
        assert asyncio.get_running_loop().time() < deadline, [ports(n) for n in stale]
        await asyncio.sleep(0.02)
    # from a background read of every replica, or straight from the quorum read when it
    # already saw the replicas disagree
    assert reader.node.stats.repair_stores >= 3
    fresh = await by_distance[-2].resolve(ALICE)
    assert {c.port for c in fresh} == {5071}
