"""Caller identity between nodes (RFC 8224 Identity header, PASSporT signed by the AoR's key):
a genuine caller is verified against its overlay record; a caller claiming someone else's AoR,
a stale or replayed token, and (when required) an unsigned call are refused with the RFC 8224
§6.2.2 responses; legacy callers without the header still ring, flagged unverified."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from p2psip.endpoint.passport import create_identity_header
from p2psip.endpoint.session import CallFailed
from p2psip.node import IncomingCall, Node
from tests.integration.conftest import DOMAIN, Factory

ALICE = f"sip:alice@{DOMAIN}"
BOB = f"sip:bob@{DOMAIN}"


def answering(node: Node) -> list[IncomingCall]:
    """Accept every call of ``node``; the IncomingCall events, in order."""
    seen: list[IncomingCall] = []

    async def on_event(event: object) -> None:
        if isinstance(event, IncomingCall):
            seen.append(event)
            await event.call.accept()

    node.on(on_event)
    return seen


async def crafted_call(caller: Node, callee_aor: str, *, from_: str, identity: str | None) -> Any:
    """An INVITE from ``caller``'s session manager with a chosen From and Identity header."""
    assert caller.sessions is not None
    contacts = [c for c in await caller.resolve(callee_aor) if c.transport == "tls"]
    headers = [("Identity", identity)] if identity is not None else []
    session = caller.sessions.start_call(
        contacts, to=callee_aor, from_=from_, headers=headers, timeout=10
    )
    return session


async def test_genuine_caller_is_verified_with_its_overlay_record(nodes: Factory) -> None:
    alice = await nodes("alice")
    bob = await nodes("bob")
    seen = answering(bob)
    call = await alice.call(BOB, timeout=10)
    assert len(seen) == 1
    incoming = seen[0].call
    caller = incoming.caller_identity
    assert caller is not None and caller.verified, caller
    assert caller.key_fingerprint == alice.identity.fingerprint and caller.source == "dht"
    assert incoming.verified_key == alice.identity.fingerprint
    invite = incoming.session.invite
    assert invite is not None and invite.headers.get("Identity")
    await call.hangup()


async def test_someone_else_claiming_the_aor_is_refused_438(nodes: Factory) -> None:
    await nodes("alice")  # owns the AoR: its record names its key
    bob = await nodes("bob")
    seen = answering(bob)
    # mallory says she is alice and signs with her own key
    mallory = await nodes("mallory", publish=False)
    forged = create_identity_header(
        mallory.identity.sign,
        orig=ALICE,
        dest=[BOB],
        iat=int(time.time()),
        kid=mallory.identity.fingerprint,
    )
    session = await crafted_call(mallory, BOB, from_=ALICE, identity=forged)
    with pytest.raises(CallFailed) as info:
        await asyncio.wait_for(session.wait_established(), 10)
    assert info.value.status == 438
    # without a kid the signature itself fails against alice's key: 438 too
    forged = create_identity_header(
        mallory.identity.sign, orig=ALICE, dest=[BOB], iat=int(time.time())
    )
    session = await crafted_call(mallory, BOB, from_=ALICE, identity=forged)
    with pytest.raises(CallFailed) as info:
        await asyncio.wait_for(session.wait_established(), 10)
    assert info.value.status == 438
    assert seen == []  # the application never saw them


async def test_stale_replayed_and_misaddressed_tokens_are_refused(nodes: Factory) -> None:
    alice = await nodes("alice")
    bob = await nodes("bob")
    await nodes("carol")
    seen = answering(bob)
    # a token alice signed ten minutes ago: 403 Stale Date
    stale = create_identity_header(
        alice.identity.sign, orig=ALICE, dest=[BOB], iat=int(time.time()) - 600
    )
    session = await crafted_call(alice, BOB, from_=ALICE, identity=stale)
    with pytest.raises(CallFailed) as info:
        await asyncio.wait_for(session.wait_established(), 10)
    assert info.value.response is not None
    assert (info.value.status, info.value.response.reason) == (403, "Stale Date")
    # a genuine call, then its token copied into another call: 438
    call = await alice.call(BOB, timeout=10)
    token = seen[-1].call.session.invite.headers.get("Identity")  # type: ignore[union-attr]
    await call.hangup()
    session = await crafted_call(alice, BOB, from_=ALICE, identity=token)
    with pytest.raises(CallFailed) as info:
        await asyncio.wait_for(session.wait_established(), 10)
    assert info.value.status == 438
    # a token for carol presented to bob (cut and paste, RFC 8224 §12.1): 438
    for_carol = create_identity_header(
        alice.identity.sign, orig=ALICE, dest=[f"sip:carol@{DOMAIN}"], iat=int(time.time())
    )
    session = await crafted_call(alice, BOB, from_=ALICE, identity=for_carol)
    with pytest.raises(CallFailed) as info:
        await asyncio.wait_for(session.wait_established(), 10)
    assert info.value.status == 438
    assert len(seen) == 1


async def test_unsigned_calls_ring_unverified_or_get_428_when_required(nodes: Factory) -> None:
    alice = await nodes("alice", sign_calls=False)
    bob = await nodes("bob")
    strict = await nodes("dave", caller_identity="require")
    seen = answering(bob)
    call = await alice.call(BOB, timeout=10)
    caller = seen[0].call.caller_identity
    assert caller is not None and caller.status == "absent" and not caller.verified
    await call.hangup()
    with pytest.raises(CallFailed) as info:
        await alice.call(f"sip:dave@{DOMAIN}", timeout=10)
    assert info.value.response is not None
    assert (info.value.status, info.value.response.reason) == (428, "Use Identity Header")
    # a signed call whose caller has no record anywhere: unverifiable, refused when required
    ghost = await nodes("ghost", publish=False)
    with pytest.raises(CallFailed) as info:
        await ghost.call(f"sip:dave@{DOMAIN}", timeout=10)
    assert info.value.status == 436
    assert strict.calls == []
    call = await ghost.call(BOB, timeout=10)
    caller = seen[-1].call.caller_identity
    assert caller is not None and caller.status == "unverifiable", caller
    await call.hangup()


async def test_plain_udp_targets_get_no_identity_header(nodes: Factory) -> None:
    """A call to a SIP URI over UDP is not signed (the header would push the INVITE over the
    RFC 3261 §18.1.1 size limit towards TCP, which UDP-only phones do not answer)."""
    alice = await nodes("alice")
    bob = await nodes("bob")
    seen = answering(bob)
    assert bob.ua is not None
    udp = bob.ua.core.local_address("udp")
    call = await alice.call(f"sip:bob@{udp.host}:{udp.port}", timeout=10)
    caller = seen[0].call.caller_identity
    assert caller is not None and caller.status == "absent"
    invite = seen[0].call.session.invite
    assert invite is not None and len(invite.to_bytes()) < 1300
    await call.hangup()


async def test_caller_lookups_are_bounded(nodes: Factory) -> None:
    alice = await nodes("alice")
    carol = await nodes("carol")
    bob = await nodes("bob", max_caller_lookups=1)
    seen = answering(bob)
    real = bob.resolve

    async def slow(aor: str) -> Any:
        await asyncio.sleep(0.5)
        return await real(aor)

    bob.resolve = slow  # type: ignore[method-assign]
    calls = await asyncio.gather(alice.call(BOB, timeout=10), carol.call(BOB, timeout=10))
    statuses = sorted(
        (e.call.caller_identity.status, e.call.caller_identity.detail)  # type: ignore[union-attr]
        for e in seen
    )
    assert statuses == [("unverifiable", "too many caller checks at once"), ("verified", "")]
    await asyncio.gather(*(c.hangup() for c in calls))
