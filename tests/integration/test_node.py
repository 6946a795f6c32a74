"""The Node on loopback: calls by AoR through a small overlay (TLS, SRTP, ICE), audio checked
by recording; hold/unhold, add/remove stream, reject/busy/cancel, callee gone, a wrong key on
the TLS contact, withdraw on stop, and LAN-only nodes calling each other through Bonjour."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import Any

import numpy as np
import pytest

from p2psip.endpoint.session import CallFailed, PeerVerificationFailed, SessionState
from p2psip.errors import NotFound
from p2psip.media.audio import MemorySink, ToneSource, dominant_frequency
from p2psip.node import CallEnded, IncomingCall, Node, NodeConfig, NodeError
from p2psip.overlay.identity import Identity
from tests.integration.conftest import DOMAIN, Factory


def recorder(node: Node, tone: float | None = None) -> MemorySink:
    """Answer every incoming call of ``node`` recording into a MemorySink (and sending a tone)."""
    sink = MemorySink(8000)

    def on_event(event: object) -> None:
        if isinstance(event, IncomingCall):
            event.call.set_audio(sink=sink, source=ToneSource(tone, 8000) if tone else None)

    node.on(on_event)
    return sink


def received(sink: MemorySink) -> np.ndarray:
    return np.asarray(sink.pcm, dtype=np.int16)


async def test_call_by_aor_over_tls_with_srtp_and_audio_both_ways(nodes: Factory) -> None:
    alice = await nodes("alice")
    bob = await nodes("bob", auto_answer=True)
    bob_hears = recorder(bob, tone=600.0)
    alice_hears = MemorySink(8000)
    call = await alice.call(
        f"sip:bob@{DOMAIN}", source=ToneSource(1000.0, 8000, amplitude=0.5), sink=alice_hears
    )
    summary = call.summary()
    assert summary["srtp"] is True
    assert summary["verified_key"] == bob.identity.fingerprint
    assert [c.transport for c in call.contacts] == ["tls"]  # a p2psip peer: TLS only
    assert call.resolve_time is not None and call.setup_time is not None
    await asyncio.sleep(1.2)
    stats = call.statistics()
    assert stats is not None and stats.packets_received > 30 and stats.packets_sent > 30
    await call.hangup()
    ended = await asyncio.wait_for(call.wait_ended(), 5)
    assert ended.reason
    heard_by_bob, heard_by_alice = received(bob_hears), received(alice_hears)
    assert len(heard_by_bob) > 8000 * 0.8 and len(heard_by_alice) > 8000 * 0.8
    assert abs(dominant_frequency(heard_by_bob, 8000) - 1000) < 10
    assert abs(dominant_frequency(heard_by_alice, 8000) - 600) < 10
    # the callee saw the same call end
    bob_call = bob.calls[-1]
    await asyncio.wait_for(bob_call.wait_ended(), 5)
    assert bob_call.state is SessionState.TERMINATED


async def test_hold_unhold_and_add_remove_stream(nodes: Factory) -> None:
    alice = await nodes("carol")
    bob = await nodes("dave", auto_answer=True)
    recorder(bob)
    call = await alice.call(f"sip:dave@{DOMAIN}", source=ToneSource(800.0, 8000))
    await asyncio.sleep(0.3)
    await call.hold()
    assert call.session.local_held
    primary = call.media.primary
    assert primary is not None and not primary.negotiated.can_receive  # sendonly while held
    bob_stream = bob.calls[-1].media.primary
    assert bob_stream is not None and not bob_stream.negotiated.can_send
    before = bob_stream.statistics().packets_sent
    await asyncio.sleep(0.4)
    assert bob_stream.statistics().packets_sent == before  # the held side sends nothing
    await call.unhold()
    await asyncio.sleep(0.4)
    assert bob_stream.statistics().packets_sent > before + 10
    index = await call.add_stream(source=ToneSource(300.0, 8000))
    assert index == 1 and len(call.media.streams) == 2
    await asyncio.sleep(0.3)
    assert len(bob.calls[-1].media.streams) == 2
    assert call.media.streams[1].statistics().packets_received > 0
    await call.remove_stream(1)
    assert len(call.media.streams) == 1 and len(bob.calls[-1].media.streams) == 1
    await call.hangup()


async def test_reject_busy_and_cancel(nodes: Factory) -> None:
    alice = await nodes("erin")
    bob = await nodes("frank")
    decisions = iter([("reject", 603), ("reject", 486), ("ring", None)])

    async def answer(event: object) -> None:
        if isinstance(event, IncomingCall):
            action, status = next(decisions)
            if action == "reject":
                await event.call.reject(status)
            else:
                await event.call.ring()

    bob.on(answer)
    for expected in (603, 486):
        with pytest.raises(CallFailed) as failure:
            await alice.call(f"sip:frank@{DOMAIN}", timeout=10)
        assert failure.value.status == expected
    ringing = await alice.call(f"sip:frank@{DOMAIN}", wait=False)
    for _ in range(100):
        if ringing.state is SessionState.EARLY or ringing.state is SessionState.PROCEEDING:
            break
        await asyncio.sleep(0.02)
    await ringing.hangup("changed my mind")  # CANCEL
    callee = bob.calls[-1]
    await asyncio.wait_for(callee.wait_ended(), 5)
    assert callee.ended is not None and callee.ended.status in (487, None)


async def test_callee_gone_and_withdrawn(nodes: Factory) -> None:
    alice = await nodes("gina")
    bob = await nodes("hank", auto_answer=True)
    assert (await alice.resolve(f"sip:hank@{DOMAIN}"))[0].key_fingerprint == (
        bob.identity.fingerprint
    )
    await bob.stop()  # withdraws: a signed tombstone replaces the record
    with pytest.raises(NotFound, match="withdrawn"):
        await alice.dht.resolve(f"sip:hank@{DOMAIN}")
    # a callee whose record is still there but whose process is gone: bounded failure
    ghost = await nodes("ivan")
    contacts = await alice.resolve(f"sip:ivan@{DOMAIN}")
    assert ghost.ua is not None
    await ghost.ua.close()  # the transports vanish, the record stays
    with pytest.raises((CallFailed, PeerVerificationFailed)):
        await asyncio.wait_for(alice.call(f"sip:ivan@{DOMAIN}", timeout=5), 15)
    assert contacts


async def test_wrong_key_on_the_tls_contact_is_refused(nodes: Factory) -> None:
    alice = await nodes("judy")
    bob = await nodes("karl", auto_answer=True)
    real = await alice.resolve(f"sip:karl@{DOMAIN}")
    mallory = Identity.generate()
    forged = [
        dataclasses.replace(
            c, public_key=mallory.public_key_bytes, key_fingerprint=mallory.fingerprint
        )
        for c in real
    ]

    async def lying_resolve(aor: str) -> list[Any]:
        return forged  # the record names Mallory's key, the address hosts Karl's certificate

    alice.locator.resolve = lying_resolve  # type: ignore[method-assign]
    with pytest.raises(PeerVerificationFailed):
        await alice.call(f"sip:karl@{DOMAIN}", timeout=5)
    assert not bob.calls  # nothing reached the callee: the INVITE was never sent


async def test_lan_only_nodes_call_each_other_through_bonjour(nodes: Factory) -> None:
    alice = await nodes("lena", lan_only=True, bonjour=True)
    bob = await nodes("mike", lan_only=True, bonjour=True, auto_answer=True)
    assert alice.dht is None and bob.dht is None
    sink = recorder(bob)
    call = await alice.call(f"sip:mike@{DOMAIN}", source=ToneSource(1000.0, 8000), timeout=10)
    assert call.contacts[0].source == "bonjour" and call.summary()["srtp"] is True
    await asyncio.sleep(0.8)
    await call.hangup()
    assert abs(dominant_frequency(received(sink), 8000) - 1000) < 10


async def test_plain_sip_uri_with_numeric_host_is_called_directly(nodes: Factory) -> None:
    alice = await nodes("nina")
    bob = await nodes("otto", auto_answer=True)
    assert bob.ua is not None
    udp = bob.ua.core.local_address("udp")
    events: list[object] = []
    alice.on(events.append)
    call = await alice.call(f"sip:otto@127.0.0.1:{udp.port}", timeout=10)
    assert call.resolve_time is not None and call.resolve_time < 0.05
    assert call.verified_key is None  # no record: a legacy-style call
    await call.hangup()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(call.wait_ended(), 5)
    assert any(isinstance(e, CallEnded) for e in events)


async def test_ecdsa_tls_certificate_for_stacks_without_ed25519(nodes: Factory) -> None:
    alice = await nodes("lena")
    bob = await nodes("mike", auto_answer=True, tls_key_type="ecdsa-p256")
    call = await alice.call(f"sip:mike@{DOMAIN}", timeout=10)
    assert call.summary()["verified_key"] == bob.identity.fingerprint  # binding checked
    await call.hangup()
    with pytest.raises(NodeError, match="tls_key_type"):
        NodeConfig(aor="sip:x@p2p.test", tls_key_type="rsa")  # type: ignore[arg-type]
