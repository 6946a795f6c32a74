"""INVITE sessions between real user agents on 127.0.0.1 (UDP, and TLS for the peer check).

Each test starts its own user agents with short SIP timers (T1 = 50 ms: Timer B = 3.2 s) and a
fake media handler that records what the session asked of it. Peers that must misbehave (no
ACK, bad SDP, forking, redirects, challenges) are plain :class:`UserAgent` objects scripted by
the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from p2psip.endpoint.addresses import TransportAddress
from p2psip.endpoint.aio.session import NullMedia, Session, SessionManager
from p2psip.endpoint.aio.tls import client_context, server_context
from p2psip.endpoint.aio.useragent import ServerRequest, UserAgent
from p2psip.endpoint.dialog import Dialog
from p2psip.endpoint.digest import DigestServer
from p2psip.endpoint.message import Request, Response
from p2psip.endpoint.session import (
    CallCancelled,
    CallFailed,
    CallTimeout,
    DTMFReceived,
    EarlyMedia,
    Established,
    Held,
    PeerVerificationFailed,
    Reason,
    RemoteHeld,
    RemoteResumed,
    Resumed,
    SessionConfig,
    SessionError,
    SessionEvent,
    SessionRefreshed,
    SessionState,
    SessionTimerConfig,
    StateChanged,
    StreamsChanged,
    Terminated,
    parse_reasons,
)
from p2psip.endpoint.useragent import UserAgentConfig
from p2psip.locator.base import LocatedContact
from p2psip.media.offer_answer import CodecDescription, MediaConfig, OfferAnswer
from p2psip.media.sdp import Direction
from p2psip.overlay.identity import Identity, verify_tls_binding
from p2psip.timers import TimerConfig

HOST = "127.0.0.1"
FAST = TimerConfig(t1=0.05, t2=0.4, t4=0.5)
WAIT = 5.0
T = TypeVar("T")
PCMU = CodecDescription("PCMU", 8000)
DTMF = CodecDescription.telephone_event()


async def within(awaitable: Awaitable[T], timeout: float = WAIT) -> T:
    return await asyncio.wait_for(awaitable, timeout)


async def until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.005)

    await within(poll(), timeout)


class FakeMedia(NullMedia):
    """Records the session's requests; each stream on its own made-up port."""

    _ports = iter(range(40000, 60000, 2))

    def __init__(self, spare: int = 1) -> None:
        super().__init__(
            [MediaConfig(port=next(self._ports), codecs=[PCMU, DTMF])],
            [MediaConfig(port=next(self._ports), codecs=[PCMU, DTMF]) for _ in range(spare)],
        )

    def names(self) -> list[str]:
        return [str(call[0]) for call in self.calls]

    def last_streams(self) -> Any:
        for call in reversed(self.calls):
            if call[0] in ("start", "update"):
                return call[1]
        return None


@dataclass
class Party:
    """A user agent with a session manager and the fake media it handed out."""

    name: str
    ua: UserAgent
    address: TransportAddress
    manager: SessionManager
    media: list[FakeMedia] = field(default_factory=list)
    events: list[tuple[Session, SessionEvent]] = field(default_factory=list)
    wire: list[tuple[str, bytes]] = field(default_factory=list)

    def sent(self, start: str) -> list[bytes]:
        """Messages this party sent whose start line begins with ``start``."""
        return [
            d for direction, d in self.wire if direction == "out" and d.startswith(start.encode())
        ]

    def received(self, start: str) -> list[bytes]:
        return [
            d for direction, d in self.wire if direction == "in" and d.startswith(start.encode())
        ]

    @property
    def uri(self) -> str:
        a = self.address
        return f"sip:{self.name}@{a.host}:{a.port};transport={a.transport}"

    def contact(self, priority: int = 0, **kw: Any) -> LocatedContact:
        a = self.address
        return LocatedContact(self.uri, a.transport, a.host, a.port, priority, **kw)

    async def next_call(self) -> Session:
        return await within(anext(self.manager.incoming()))

    def of(self, session: Session, kind: type) -> list[SessionEvent]:
        return [e for s, e in self.events if s is session and isinstance(e, kind)]


Factory = Callable[..., Awaitable[Party]]


@pytest.fixture
async def party() -> AsyncIterator[Factory]:
    made: list[Party] = []
    seeds = iter(range(100, 10_000))

    async def make(
        name: str,
        *,
        transport: str = "udp",
        ssl_context: Any = None,
        config: SessionConfig | None = None,
        spare: int = 1,
        sip_timers: TimerConfig = FAST,
        **manager_options: Any,
    ) -> Party:
        wire: list[tuple[str, bytes]] = []
        ua = UserAgent(
            UserAgentConfig(timers=sip_timers, trying_delay=0.02),
            rng=random.Random(next(seeds)),
            trace=lambda direction, data, address: wire.append((direction, data)),
        )
        address = await ua.listen(transport, HOST, 0, ssl_context=ssl_context)
        media: list[FakeMedia] = []

        def factory(session: Session) -> FakeMedia:
            m = FakeMedia(spare)
            media.append(m)
            return m

        manager = SessionManager(
            ua,
            config=config or SessionConfig(glare_scale=0.05),
            media_factory=factory,
            local_uri=f"sip:{name}@p2p.test",
            rng=random.Random(next(seeds)),
            **manager_options,
        )
        p = Party(name, ua, address, manager, media, wire=wire)
        manager.add_listener(lambda s, e: p.events.append((s, e)))
        made.append(p)
        return p

    yield make
    for p in made:
        await p.manager.close(timeout=1.0)
        await p.ua.close()


async def raw_ua(transport: str = "udp") -> tuple[UserAgent, TransportAddress]:
    ua = UserAgent(UserAgentConfig(timers=FAST, trying_delay=0.02), rng=random.Random(7))
    address = await ua.listen(transport, HOST, 0)
    return ua, address


def kinds(events: list[SessionEvent]) -> list[str]:
    return [type(e).__name__ for e in events if not isinstance(e, StateChanged)]


# ------------------------------------------------------------------------------------------
# Basic calls
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_call_ring_accept_and_hang_up(party: Factory, transport: str) -> None:
    alice, bob = await party("alice", transport=transport), await party("bob", transport=transport)
    call = alice.manager.start_call(bob.uri)
    incoming = await bob.next_call()
    assert incoming.state is SessionState.INCOMING
    assert incoming.remote_aor == "sip:alice@p2p.test"
    assert incoming.remote_offer is not None
    await incoming.ring()
    await until(lambda: call.state is SessionState.EARLY)
    await incoming.accept()
    await within(call.wait_established())
    await within(incoming.wait_established())
    assert call.state is incoming.state is SessionState.CONFIRMED

    # the caller's media: prepared, started once as ICE controlling; the callee's: controlled
    assert alice.media[0].names() == ["prepare", "start"]
    assert alice.media[0].calls[1][2] is True
    assert bob.media[0].names() == ["prepare", "start"]
    assert bob.media[0].calls[1][2] is False
    stream = call.streams[0]
    assert stream.codec is not None and stream.codec.name == "PCMU"
    assert stream.remote_port == bob.media[0].configs[0].port
    assert incoming.streams[0].remote_port == alice.media[0].configs[0].port

    assert call.time_to_first_provisional is not None and call.time_to_ringing is not None
    assert 0 < call.time_to_first_provisional <= call.time_to_ringing < call.setup_time
    assert incoming.setup_time is not None and incoming.setup_time > 0

    ended = await within(call.terminate())
    assert ended.by == "local" and ended.reason == "hangup"
    remote_end = await within(incoming.wait_terminated())
    assert remote_end.by == "remote"
    assert call.state is incoming.state is SessionState.TERMINATED
    assert alice.media[0].names()[-1] == "stop" and bob.media[0].names()[-1] == "stop"
    seen = [k for k in kinds([e for s, e in alice.events if s is call]) if k != "Progress"]
    assert seen == ["Ringing", "Established", "Terminated"]
    assert [e for e in call.history if isinstance(e, StateChanged)][-1].state is (
        SessionState.TERMINATED
    )
    assert not alice.manager.sessions and not bob.manager.sessions
    bye = alice.sent("BYE")
    assert len(bye) == 1


async def test_events_async_iterator_replays_and_ends(party: Factory) -> None:
    alice, bob = await party("alice"), await party("bob")
    call = alice.manager.start_call(bob.uri)
    incoming = await bob.next_call()
    await incoming.accept()
    await within(call.wait_established())
    await within(call.terminate("done"))
    collected = [e async for e in call.events()]  # started late: replays everything, ends
    assert isinstance(collected[-1], Terminated)
    assert [type(e).__name__ for e in collected if isinstance(e, Established)] == ["Established"]
    assert collected == call.history
    # the BYE carried our reason (RFC 3326), the callee reports it
    ended = await within(incoming.wait_terminated())
    assert ended.reason == "done" and ended.by == "remote"
    (bye,) = alice.sent("BYE")
    assert b'Reason: Q.850;cause=16;text="done"' in bye


async def test_callee_hangs_up(party: Factory) -> None:
    alice, bob = await party("alice"), await party("bob")
    call = alice.manager.start_call(bob.uri)
    incoming = await bob.next_call()
    await incoming.accept()
    await within(incoming.wait_established())
    await within(call.wait_established())
    await within(incoming.terminate())
    ended = await within(call.wait_terminated())
    assert ended.by == "remote" and ended.reason == "hangup"
    assert bob.sent("BYE") and not alice.sent("BYE")


@pytest.mark.parametrize(
    ("status", "reason"), [(486, "busy"), (603, "declined"), (480, "unavailable")]
)
async def test_reject(party: Factory, status: int, reason: str) -> None:
    alice, bob = await party("alice"), await party("bob")
    call = alice.manager.start_call(bob.uri)
    incoming = await bob.next_call()
    if status == 486:
        await incoming.busy()
    else:
        await incoming.reject(status, "not now")
    with pytest.raises(CallFailed) as info:
        await within(call.wait_established())
    assert info.value.status == status and info.value.reason == reason
    assert info.value.response is not None and info.value.response.status == status
    assert not isinstance(info.value, (CallTimeout, CallCancelled))
    ended = await within(call.wait_terminated())
    assert ended.status == status and ended.by == "remote"
    assert incoming.termination is not None and incoming.termination.status == status
    assert alice.media[0].names() == ["prepare", "stop"]  # never started
    with pytest.raises(SessionError):
        await incoming.accept()  # already answered


async def test_call_api_raises_on_failure(party: Factory) -> None:
    alice, bob = await party("alice"), await party("bob")

    async def refuse() -> None:
        incoming = await bob.next_call()
        await incoming.reject(603)

    task = asyncio.ensure_future(refuse())
    with pytest.raises(CallFailed, match="603"):
        await within(alice.manager.call(bob.uri))
    await task


async def test_caller_cancels_while_ringing(party: Factory) -> None:
    alice, bob = await party("alice"), await party("bob")
    call = alice.manager.start_call(bob.uri)
    incoming = await bob.next_call()
    await incoming.ring()
    await until(lambda: call.state is SessionState.EARLY)
    ended = await within(call.terminate())
    assert ended.status == 487 and ended.reason == "cancelled"
    assert isinstance(ended.error, CallCancelled)
    with pytest.raises(CallCancelled):
        await call.wait_established()
    remote = await within(incoming.wait_terminated())
    assert remote.reason == "cancelled" and remote.status == 487 and remote.by == "remote"
    assert len(alice.sent("CANCEL")) == 1
    assert bob.sent("SIP/2.0 487")
    with pytest.raises(SessionError):
        await incoming.accept()


async def test_cancel_before_any_provisional_waits_for_one(party: Factory) -> None:
    """RFC 3261 §9.1: no CANCEL before a provisional response; it goes when one arrives."""
    alice = await party("alice")
    raw, address = await raw_ua()
    answered: list[ServerRequest] = []
    raw.on("INVITE", answered.append)  # holds the INVITE; the core sends 100 after 20 ms
    call = alice.manager.start_call(f"sip:x@{HOST}:{address.port}")
    await until(lambda: bool(answered))
    ended = await within(call.terminate())
    assert ended.status == 487
    await raw.close()


async def test_overall_timeout_cancels(party: Factory) -> None:
    alice, bob = await party("alice"), await party("bob")
    call = alice.manager.start_call(bob.uri, timeout=0.3)
    incoming = await bob.next_call()
    await incoming.ring()
    with pytest.raises(CallTimeout) as info:
        await within(call.wait_established())
    assert info.value.status == 408
    assert (await within(incoming.wait_terminated())).reason == "cancelled"


async def test_no_answer_timeout_on_the_callee(party: Factory) -> None:
    alice = await party("alice")
    bob = await party("bob", config=SessionConfig(no_answer_timeout=0.2))
    call = alice.manager.start_call(bob.uri)
    incoming = await bob.next_call()
    await incoming.ring()
    with pytest.raises(CallFailed) as info:
        await within(call.wait_established())
    assert info.value.status == 480
    assert (await within(incoming.wait_terminated())).reason == "no answer"


async def test_busy_when_max_sessions(party: Factory) -> None:
    alice = await party("alice")
    bob = await party("bob", config=SessionConfig(max_sessions=1))
    first = alice.manager.start_call(bob.uri)
    await bob.next_call()
    second = alice.manager.start_call(bob.uri)
    with pytest.raises(CallFailed) as info:
        await within(second.wait_established())
    assert info.value.status == 486
    await first.terminate()


# ------------------------------------------------------------------------------------------
# Early media, offerless INVITE
# ------------------------------------------------------------------------------------------
async def test_early_media_then_answer(party: Factory) -> None:
    alice, bob = await party("alice"), await party("bob")
    call = alice.manager.start_call(bob.uri)
    incoming = await bob.next_call()
    streams = await incoming.progress(early_media=True)
    assert streams and streams[0].codec is not None
    await until(lambda: bool(alice.of(call, EarlyMedia)))
    (early,) = alice.of(call, EarlyMedia)
    assert early.streams[0].remote_port == bob.media[0].configs[0].port  # type: ignore[attr-defined]
    await until(lambda: alice.media[0].names() == ["prepare", "start"])
    assert bob.media[0].names() == ["prepare", "start"]  # the callee sends early media too
    await incoming.accept()
    await within(call.wait_established())
    await within(incoming.wait_established())
    # the 200 repeated the 183's answer: media was not restarted or changed
    assert alice.media[0].names() == ["prepare", "start"]
    assert bob.media[0].names() == ["prepare", "start"]
    (ok,) = bob.sent("SIP/2.0 200")
    (progress,) = bob.sent("SIP/2.0 183")
    assert ok.split(b"\r\n\r\n", 1)[1] == progress.split(b"\r\n\r\n", 1)[1]
    await call.terminate()


async def test_invite_without_offer(party: Factory) -> None:
    alice, bob = await party("alice"), await party("bob")
    call = alice.manager.start_call(bob.uri, offer=False)
    incoming = await bob.next_call()
    assert incoming.remote_offer is None
    await incoming.progress()  # no early media without an offer: a plain 183
    await incoming.accept()  # our offer in the 200, the answer in the ACK
    await within(call.wait_established())
    await within(incoming.wait_established())
    assert call.streams[0].codec is not None and incoming.streams[0].codec is not None
    assert call.streams[0].remote_port == bob.media[0].configs[0].port
    assert incoming.streams[0].remote_port == alice.media[0].configs[0].port
    (ack,) = alice.sent("ACK")
    assert b"m=audio" in ack
    # the callee made the offer: it is the ICE controlling side
    assert bob.media[0].calls[-1][2] is True and alice.media[0].calls[-1][2] is False
    await call.terminate()


# ------------------------------------------------------------------------------------------
# Scripted peers
# ------------------------------------------------------------------------------------------
def answer_sdp(offer: bytes, port: int = 30000) -> bytes:
    return OfferAnswer(HOST, [MediaConfig(port=port, codecs=[PCMU])]).answer(offer).to_bytes()


@dataclass
class Scripted:
    """A raw user agent whose INVITE handler is the test's; it records ACKs and BYEs."""

    ua: UserAgent
    address: TransportAddress
    acks: list[Request] = field(default_factory=list)
    byes: list[Request] = field(default_factory=list)
    wire: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"sip:raw@{HOST}:{self.address.port};transport={self.address.transport}"

    def contact(self) -> list[tuple[str, str]]:
        return [("Contact", f"<{self.uri}>")]


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[[], Awaitable[Scripted]]]:
    made: list[Scripted] = []

    async def make(transport: str = "udp") -> Scripted:
        wire: list[tuple[str, bytes]] = []
        ua = UserAgent(
            UserAgentConfig(timers=FAST, trying_delay=0.02, supported=("timer",)),
            rng=random.Random(len(made) + 1),
            trace=lambda d, data, a: wire.append((d, data)),
        )
        address = await ua.listen(transport, HOST, 0)
        peer = Scripted(ua, address, wire=wire)
        ua.on_ack = lambda event: peer.acks.append(event.request)

        def bye(sreq: ServerRequest) -> None:
            peer.byes.append(sreq.request)
            sreq.respond(200)

        ua.on("BYE", bye)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        await peer.ua.close()


async def test_forked_answers_first_2xx_wins_other_gets_ack_and_bye(party, scripted) -> None:
    alice, fork = await party("alice"), await scripted()

    def on_invite(sreq: ServerRequest) -> None:
        body = sreq.request.body
        contact = fork.contact()
        sreq.respond(180, headers=contact, to_tag="fork-a")
        sreq.respond(183, headers=contact, to_tag="fork-b", body=answer_sdp(body, 30002))
        sreq.respond(200, headers=contact, to_tag="fork-a", body=answer_sdp(body, 30000))
        sreq.respond(200, headers=contact, to_tag="fork-b", body=answer_sdp(body, 30002))

    fork.ua.on("INVITE", on_invite)
    call = alice.manager.start_call(fork.uri)
    await within(call.wait_established())
    assert call.dialog is not None and call.dialog.id.remote_tag == "fork-a"
    assert call.streams[0].remote_port == 30000
    await until(lambda: len(fork.acks) == 2 and len(fork.byes) == 1)
    assert {a.to.tag for a in fork.acks} == {"fork-a", "fork-b"}
    assert fork.byes[0].to.tag == "fork-b"
    assert parse_reasons(fork.byes[0]) == [Reason.sip(200, "Call completed elsewhere")]
    assert call.state is SessionState.CONFIRMED
    await call.terminate()
    await until(lambda: len(fork.byes) == 2)
    assert fork.byes[1].to.tag == "fork-a"


async def test_requests_in_the_callees_early_dialog_reach_the_call(party, scripted) -> None:
    """INFO in an early dialog (RFC 6086 §4.2) finds the call; once a final response has
    ended that early dialog (RFC 3261 §12.3) it is unknown: 481."""
    alice, peer = await party("alice"), await scripted()
    early: list[Dialog] = []
    pending: list[ServerRequest] = []

    def on_invite(sreq: ServerRequest) -> None:
        body = answer_sdp(sreq.request.body)
        response = sreq.respond(183, headers=peer.contact(), to_tag="early", body=body)
        early.append(Dialog.from_uas(sreq.request, response))
        pending.append(sreq)

    peer.ua.on("INVITE", on_invite)
    call = alice.manager.start_call(peer.uri)
    await until(lambda: call.state is SessionState.EARLY and bool(early))
    info = early[0].create_request(
        "INFO", body=b"Signal=7\r\nDuration=160\r\n", content_type="application/dtmf-relay"
    )
    answer = await within(peer.ua.send(info, alice.address))
    assert answer.status == 200
    await until(lambda: len(alice.of(call, DTMFReceived)) == 1)
    pending[0].respond(486, to_tag="early")
    with pytest.raises(CallFailed):
        await within(call.wait_established())
    late = early[0].create_request(
        "INFO", body=b"Signal=8\r\nDuration=160\r\n", content_type="application/dtmf-relay"
    )
    assert (await within(peer.ua.send(late, alice.address))).status == 481


async def test_reliable_provisionals_are_pracked_once_in_order(party, scripted) -> None:
    """RFC 3262: the INVITE offers 100rel; a reliable 183 (Require: 100rel, RSeq) gets one PRACK
    with RAck in its early dialog; its retransmission and a provisional out of order do not."""
    alice, peer = await party("alice"), await scripted()
    pracks: list[Request] = []
    pending: list[ServerRequest] = []

    def on_invite(sreq: ServerRequest) -> None:
        body = answer_sdp(sreq.request.body)
        reliable = [*peer.contact(), ("Require", "100rel")]
        sreq.respond(183, headers=[*reliable, ("RSeq", "7")], to_tag="r", body=body)
        sreq.respond(183, headers=[*reliable, ("RSeq", "7")], to_tag="r", body=body)  # again
        sreq.respond(180, headers=[*reliable, ("RSeq", "9")], to_tag="r")  # 8 is missing
        pending.append(sreq)

    def on_prack(sreq: ServerRequest) -> None:
        pracks.append(sreq.request)
        sreq.respond(200)
        pending[0].respond(
            200, headers=peer.contact(), to_tag="r", body=answer_sdp(pending[0].request.body)
        )

    peer.ua.core.extend_capabilities(allow=("PRACK",), supported=("100rel",))
    peer.ua.on("INVITE", on_invite)
    peer.ua.on("PRACK", on_prack)
    call = alice.manager.start_call(peer.uri)
    await within(call.wait_established())
    invite = pending[0].request
    assert "100rel" in invite.tokens("Supported")
    # a wrong second PRACK would have been sent before our BYE, which follows it on the wire
    await call.terminate()
    await until(lambda: len(peer.byes) == 1)
    assert len(pracks) == 1
    prack = pracks[0]
    assert prack.headers.get("RAck") == f"7 {invite.cseq.seq} INVITE"
    assert prack.to.tag == "r" and prack.call_id == invite.call_id
    assert prack.cseq.seq > invite.cseq.seq
    assert len(alice.of(call, EarlyMedia)) == 1


async def test_no_100rel_without_an_offer_or_when_switched_off(party, scripted) -> None:
    peer = await scripted()
    invites: list[Request] = []

    def on_invite(sreq: ServerRequest) -> None:
        invites.append(sreq.request)
        sreq.respond(486)

    peer.ua.on("INVITE", on_invite)
    off = await party("alice", config=SessionConfig(reliable_provisional=False))
    with pytest.raises(CallFailed):
        await within(off.manager.call(peer.uri))
    on = await party("bob")
    with pytest.raises(CallFailed):
        await within(on.manager.call(peer.uri, offer=False))
    assert [("100rel" in i.tokens("Supported")) for i in invites] == [False, False]


async def test_2xx_racing_the_cancel_is_acked_and_hung_up(party, scripted) -> None:
    alice, peer = await party("alice"), await scripted()
    pending: list[ServerRequest] = []

    def on_invite(sreq: ServerRequest) -> None:
        sreq.respond(180, headers=peer.contact(), to_tag="t1")
        pending.append(sreq)

    peer.ua.on("INVITE", on_invite)
    peer.ua.on("CANCEL", lambda sreq: None)
    call = alice.manager.start_call(peer.uri)
    await until(lambda: call.state is SessionState.EARLY)
    # answer in the same instant the caller cancels: the 200 goes out before the CANCEL lands
    pending[0].respond(
        200, headers=peer.contact(), to_tag="t1", body=answer_sdp(pending[0].request.body)
    )
    ended = await within(call.terminate())
    assert ended.status == 487
    await until(lambda: len(peer.acks) == 1 and len(peer.byes) == 1)
    assert call.state is SessionState.TERMINATED


async def test_bad_sdp_in_2xx_gets_ack_and_bye_with_reason(party, scripted) -> None:
    alice, peer = await party("alice"), await scripted()
    peer.ua.on(
        "INVITE",
        lambda sreq: sreq.respond(200, headers=peer.contact(), body=b"v=0\r\nthis is not sdp\r\n"),
    )
    call = alice.manager.start_call(peer.uri)
    with pytest.raises(CallFailed) as info:
        await within(call.wait_established())
    assert info.value.status in (400, 488)
    await until(lambda: len(peer.acks) == 1 and len(peer.byes) == 1)
    (reason,) = parse_reasons(peer.byes[0])
    assert reason.protocol == "SIP" and reason.cause in (400, 488)


async def test_redirect_is_followed(party, scripted) -> None:
    alice, bob, redirector = await party("alice"), await party("bob"), await scripted()
    redirector.ua.on(
        "INVITE",
        lambda sreq: sreq.respond(302, headers=[("Contact", f"<{bob.uri}>;q=0.5")]),
    )
    call = alice.manager.start_call(redirector.uri)
    incoming = await bob.next_call()
    await incoming.accept()
    await within(call.wait_established())
    assert call.contact is not None and call.contact.source == "redirect"
    assert [outcome for _, outcome in call.attempts][:1] == ["302 Moved Temporarily"]
    await call.terminate()


async def test_redirect_loop_and_limit(party, scripted) -> None:
    alice = await party("alice", config=SessionConfig(max_redirects=1))
    looping, first, second = await scripted(), await scripted(), await scripted()
    looping.ua.on("INVITE", lambda sreq: sreq.respond(302, headers=looping.contact()))
    with pytest.raises(CallFailed) as info:
        await within(alice.manager.call(looping.uri))
    assert info.value.status == 302
    assert "redirect loop" in info.value.attempts[0][1]
    # a chain longer than max_redirects stops at the limit
    first.ua.on("INVITE", lambda sreq: sreq.respond(302, headers=second.contact()))
    second.ua.on("INVITE", lambda sreq: sreq.respond(302, headers=looping.contact()))
    with pytest.raises(CallFailed) as info:
        await within(alice.manager.call(first.uri))
    assert len(info.value.attempts) == 2 and "redirect limit" in info.value.attempts[1][1]


async def test_redirect_to_a_host_name_is_resolved_through_dns(party, scripted) -> None:
    """RFC 3261 §8.1.3.4 + RFC 3263: a 3xx target named by host goes through the resolver
    (a real DNS server on loopback: SRV then A), keeps its URI as Request-URI, and a name
    that does not resolve is reported, not called."""
    from p2psip.locator.aio.dns import DNSLocator, DNSResolver
    from tests.conftest import free_port
    from tests.dnsserver import DNSServer

    bob = await party("bob")
    zone = {
        "bob.example.test": {},
        "_sip._udp.bob.example.test": {"SRV": [f"10 100 {bob.address.port} host.example.test"]},
        "host.example.test": {"A": [HOST]},
    }
    async with DNSServer(zone, port=free_port("udp")) as server:
        locator = DNSLocator(
            DNSResolver(nameservers=[server.address], timeout=2.0, supported_transports=["udp"])
        )
        alice = await party("alice", resolve_target=locator.resolve)
        redirector = await scripted()
        targets = ["sip:bob@nowhere.example.test", "sip:bob@bob.example.test"]
        redirector.ua.on(
            "INVITE",
            lambda sreq: sreq.respond(
                302,
                headers=[
                    ("Contact", f"<{targets[0]}>;q=0.9"),
                    ("Contact", f"<{targets[1]}>;q=0.5"),
                ],
            ),
        )
        call = alice.manager.start_call(redirector.uri)
        incoming = await within(bob.next_call())
        assert bob.received(f"INVITE {targets[1]} SIP/2.0")  # Request-URI: the 3xx target
        await incoming.accept()
        await within(call.wait_established())
        assert call.contact is not None and call.contact.source == "dns"
        assert call.contact.port == bob.address.port
        outcomes = dict(call.attempts)
        assert outcomes[targets[0]].startswith("not called:")
        assert any(t == "SRV" and "_udp.bob.example.test" in n for n, t in server.queries)
        await call.terminate()


async def test_redirect_to_a_host_name_without_resolver_is_skipped(party, scripted) -> None:
    alice, redirector = await party("alice"), await scripted()
    redirector.ua.on(
        "INVITE",
        lambda sreq: sreq.respond(302, headers=[("Contact", "<sip:bob@bob.example.test>")]),
    )
    with pytest.raises(CallFailed) as info:
        await within(alice.manager.call(redirector.uri))
    assert info.value.status == 302
    assert ("sip:bob@bob.example.test", "not called: host is not an IP address") in (
        info.value.attempts
    )


async def test_digest_challenge_is_answered(party, scripted) -> None:
    alice = await party("alice", credentials=("alice", "secret"))
    peer = await scripted()
    digest = DigestServer("p2p.test", {"alice": "secret"}.get, rng=random.Random(3))

    def on_invite(sreq: ServerRequest) -> None:
        value = sreq.request.headers.get("Authorization")
        now = peer.ua.now()
        if value is None or not digest.verify(
            value, "INVITE", now=now, request_uri=str(sreq.request.uri)
        ):
            sreq.respond(401, headers=[("WWW-Authenticate", v) for v in digest.challenge(now)])
            return
        sreq.respond(200, headers=peer.contact(), body=answer_sdp(sreq.request.body))

    peer.ua.on("INVITE", on_invite)
    call = await within(alice.manager.call(peer.uri))
    await until(lambda: len(peer.acks) == 1)
    # RFC 3261 §13.2.2.4: the ACK carries the INVITE's credentials
    assert peer.acks[0].headers.get("Authorization") is not None
    assert peer.acks[0].cseq.seq == 2
    await call.terminate()
    # wrong credentials: the second challenge is the final answer
    mallory = await party("mallory", credentials=("alice", "wrong"))
    with pytest.raises(CallFailed) as info:
        await within(mallory.manager.call(peer.uri))
    assert info.value.status == 401 and info.value.reason == "authentication required"


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_incoming_without_ack_is_ended_with_bye(party, scripted, transport: str) -> None:
    # RFC 3261 §13.3.1.4: 64*T1 (here 0.64 s) without ACK; over TCP too (no retransmissions)
    quick = TimerConfig(t1=0.01, t2=0.08, t4=0.1)
    bob = await party("bob", transport=transport, sip_timers=quick)
    caller = await scripted(transport)
    call_id = "no-ack-call"
    invite = Request(
        "INVITE",
        f"sip:bob@{HOST}:{bob.address.port}",
        [
            ("From", f"<{caller.uri}>;tag=c1"),
            ("To", f"<sip:bob@{HOST}>"),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<{caller.uri}>"),
            ("Content-Type", "application/sdp"),
        ],
        OfferAnswer(HOST, [MediaConfig(port=30010, codecs=[PCMU])]).create_offer().to_bytes(),
    )
    sending = asyncio.ensure_future(caller.ua.send(invite, bob.address))
    incoming = await bob.next_call()
    await incoming.accept()
    assert (await within(sending)).status == 200  # ... and never ACKed
    started = bob.ua.now()
    ended = await within(incoming.wait_terminated())
    assert 0.6 <= bob.ua.now() - started < 1.5
    assert ended.reason == "no ACK" and ended.status == 408 and ended.by == "remote"
    await until(lambda: len(caller.byes) == 1)
    assert parse_reasons(caller.byes[0])[0].cause == 408
    with pytest.raises(SessionError):
        await incoming.wait_established()


async def test_bad_sdp_in_invite_is_refused(party, scripted) -> None:
    bob, caller = await party("bob"), await scripted()

    def invite(body: bytes, call_id: str) -> Request:
        return Request(
            "INVITE",
            f"sip:bob@{HOST}:{bob.address.port}",
            [
                ("From", f"<{caller.uri}>;tag=c1"),
                ("To", f"<sip:bob@{HOST}>"),
                ("Call-ID", call_id),
                ("CSeq", "1 INVITE"),
                ("Contact", f"<{caller.uri}>"),
                ("Content-Type", "application/sdp"),
            ],
            body,
        )

    garbage = await within(caller.ua.send(invite(b"v=0\r\nnonsense\r\n", "bad-1"), bob.address))
    assert garbage.status == 400 and garbage.headers.get("Warning")
    # well-formed, but nothing in common: refused with 488 when answered
    g729 = OfferAnswer(HOST, [MediaConfig(port=30012, codecs=[CodecDescription("G729", 8000)])])
    sending = asyncio.ensure_future(
        caller.ua.send(invite(g729.create_offer().to_bytes(), "bad-2"), bob.address)
    )
    incoming = await bob.next_call()
    with pytest.raises(SessionError, match="not acceptable"):
        await incoming.accept()
    assert (await within(sending)).status == 488
    assert incoming.state is SessionState.TERMINATED


async def test_bad_sdp_in_ack_ends_the_call_with_bye(party, scripted) -> None:
    bob, caller = await party("bob"), await scripted()
    invite = Request(
        "INVITE",
        f"sip:bob@{HOST}:{bob.address.port}",
        [
            ("From", f"<{caller.uri}>;tag=c1"),
            ("To", f"<sip:bob@{HOST}>"),
            ("Call-ID", "offer-in-200"),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<{caller.uri}>"),
        ],
    )
    sending = asyncio.ensure_future(caller.ua.send(invite, bob.address))
    incoming = await bob.next_call()
    await incoming.accept()
    ok = await within(sending)
    assert ok.status == 200 and b"m=audio" in ok.body
    dialog = Dialog.from_uac(invite, ok)
    caller.ua.send_ack(dialog, ok, bob.address, body=b"garbage", content_type="application/sdp")
    ended = await within(incoming.wait_terminated())
    assert ended.reason.startswith("bad answer")
    await until(lambda: len(caller.byes) == 1)
    (reason,) = parse_reasons(caller.byes[0])
    assert reason.cause in (400, 488) and "bad SDP in ACK" in (reason.text or "")


async def test_caller_bye_on_early_dialog(party, scripted) -> None:
    """RFC 3261 §15: the caller may BYE an early dialog; the INVITE then gets 487."""
    bob, caller = await party("bob"), await scripted()
    invite = Request(
        "INVITE",
        f"sip:bob@{HOST}:{bob.address.port}",
        [
            ("From", f"<{caller.uri}>;tag=c1"),
            ("To", f"<sip:bob@{HOST}>"),
            ("Call-ID", "early-bye"),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<{caller.uri}>"),
        ],
    )
    ringing: list[Response] = []
    sending = asyncio.ensure_future(
        caller.ua.send(invite, bob.address, on_provisional=ringing.append)
    )
    incoming = await bob.next_call()
    await incoming.ring()
    await until(lambda: any(r.status == 180 for r in ringing))
    early = Dialog.from_uac(invite, next(r for r in ringing if r.status == 180))
    bye = await within(caller.ua.send(early.create_request("BYE"), bob.address))
    assert bye.status == 200
    assert (await within(sending)).status == 487
    assert (await within(incoming.wait_terminated())).by == "remote"


# ------------------------------------------------------------------------------------------
# Several contacts
# ------------------------------------------------------------------------------------------
async def test_contacts_in_priority_order_next_on_failure(party: Factory) -> None:
    alice, busy, free = await party("alice"), await party("busy"), await party("free")

    async def answer_busy() -> None:
        await (await busy.next_call()).busy()

    task = asyncio.ensure_future(answer_busy())
    call = alice.manager.start_call(
        [free.contact(priority=20), busy.contact(priority=10)], to="sip:bob@p2p.test"
    )
    incoming = await free.next_call()
    await incoming.accept()
    await within(call.wait_established())
    await task
    assert [outcome for _, outcome in call.attempts] == ["486 Busy Here", "200 OK"]
    assert incoming.remote_aor == "sip:alice@p2p.test"
    assert call.remote_aor == "sip:bob@p2p.test"
    await call.terminate()


async def test_global_failure_stops_the_search(party: Factory) -> None:
    alice, decline, other = await party("alice"), await party("decline"), await party("other")

    async def refuse() -> None:
        await (await decline.next_call()).reject(603)

    task = asyncio.ensure_future(refuse())
    with pytest.raises(CallFailed) as info:
        await within(alice.manager.call([decline.contact(0), other.contact(1)]))
    await task
    assert info.value.status == 603 and len(info.value.attempts) == 1


async def test_contact_timeout_moves_on(party, scripted) -> None:
    alice, silent, bob = await party("alice"), await scripted(), await party("bob")
    silent.ua.on("INVITE", lambda sreq: None)  # only the automatic 100 Trying
    call = alice.manager.start_call(
        [LocatedContact(silent.uri, "udp", HOST, silent.address.port, 0), bob.contact(1)],
        contact_timeout=0.3,
    )
    incoming = await bob.next_call()
    await incoming.accept()
    await within(call.wait_established())
    assert call.attempts[0][1].startswith("487")
    await call.terminate()
    # nobody else to call: a contact that never answers is a timeout, not a cancellation
    with pytest.raises(CallTimeout):
        await within(alice.manager.call(silent.uri, contact_timeout=0.2))


async def test_unreachable_and_unusable_contacts(party: Factory) -> None:
    alice, bob = await party("alice"), await party("bob")
    contacts = [
        LocatedContact("sip:x@example.invalid", "udp", "example.invalid", 5060, 0),
        LocatedContact(f"sip:x@{HOST}:5061;transport=tls", "tls", HOST, 5061, 1),
        bob.contact(2),
    ]
    call = alice.manager.start_call(contacts)
    incoming = await bob.next_call()
    await incoming.accept()
    await within(call.wait_established())
    outcomes = [o for _, o in call.attempts]
    assert outcomes[0] == "not called: host is not an IP address"
    assert outcomes[1] == "not called: no tls listener"
    await call.terminate()
    with pytest.raises(CallFailed) as info:
        await within(alice.manager.call(contacts[:2]))
    assert "no contact reachable" in str(info.value)


async def test_parallel_first_answer_wins_others_cancelled(party: Factory) -> None:
    alice, one, two = await party("alice"), await party("one"), await party("two")
    call = alice.manager.start_call([one.contact(0), two.contact(0)], parallel=True)
    ring_one, ring_two = await one.next_call(), await two.next_call()
    await ring_one.ring()
    await ring_two.ring()
    await until(lambda: call.state is SessionState.EARLY)
    await ring_two.accept()
    await within(call.wait_established())
    assert call.contact is not None and call.contact.port == two.address.port
    ended = await within(ring_one.wait_terminated())
    assert ended.status == 487
    (cancel,) = one.received("CANCEL")
    assert b'Reason: SIP;cause=200;text="Call completed elsewhere"' in cancel
    await call.terminate()


# ------------------------------------------------------------------------------------------
# In the dialog
# ------------------------------------------------------------------------------------------
async def established(alice: Party, bob: Party, **options: Any) -> tuple[Session, Session]:
    call = alice.manager.start_call(bob.uri, **options)
    incoming = await bob.next_call()
    await incoming.accept()
    await within(call.wait_established())
    await within(incoming.wait_established())
    return call, incoming


@pytest.mark.parametrize("who", ["caller", "callee"])
async def test_hold_and_unhold(party: Factory, who: str) -> None:
    alice, bob = await party("alice"), await party("bob")
    call, incoming = await established(alice, bob)
    holder, held = (call, incoming) if who == "caller" else (incoming, call)
    holder_party, held_party = (alice, bob) if who == "caller" else (bob, alice)
    await within(holder.hold())
    assert holder.local_held and held.remote_held
    assert holder.streams[0].direction is Direction.SENDONLY
    await until(lambda: held.streams[0].direction is Direction.RECVONLY)
    assert holder_party.of(holder, Held) and held_party.of(held, RemoteHeld)
    assert held_party.media[0].last_streams()[0].direction is Direction.RECVONLY
    await within(holder.unhold())
    assert not holder.local_held
    await until(lambda: not held.remote_held)
    assert holder.streams[0].direction is Direction.SENDRECV
    assert holder_party.of(holder, Resumed) and held_party.of(held, RemoteResumed)
    assert held_party.media[0].names() == ["prepare", "start", "update", "update"]
    await call.terminate()


async def test_add_and_remove_stream_both_directions(party: Factory) -> None:
    alice, bob = await party("alice"), await party("bob")
    call, incoming = await established(alice, bob)
    extra = MediaConfig(port=41000, codecs=[PCMU])
    index = await within(call.add_stream(extra))
    assert index == 1
    assert [s.rejected for s in call.streams] == [False, False]
    await until(lambda: len(incoming.streams) == 2)
    changed = alice.of(call, StreamsChanged)[-1]
    assert changed.added == (1,)  # type: ignore[attr-defined]
    assert bob.of(incoming, StreamsChanged)[-1].added == (1,)  # type: ignore[attr-defined]
    # the callee removes it again
    await within(incoming.remove_stream(1))
    assert incoming.streams[1].rejected
    await until(lambda: call.streams[1].rejected)
    assert alice.of(call, StreamsChanged)[-1].removed == (1,)  # type: ignore[attr-defined]
    # and adds one back (RFC 3264 §8.3: it takes the disabled m-line)
    again = await within(incoming.add_stream(MediaConfig(port=41002, codecs=[PCMU])))
    assert again == 1 and not incoming.streams[1].rejected
    await call.terminate()


async def test_glare_both_reinvite_at_once(party: Factory) -> None:
    alice, bob = await party("alice"), await party("bob")
    call, incoming = await established(alice, bob)
    await within(asyncio.gather(call.hold(), incoming.hold()))
    # both offered at once: each answered the other's with 491 and retried after §14.1
    assert alice.manager.stats["glare_491_sent"] + bob.manager.stats["glare_491_sent"] >= 2
    assert alice.manager.stats["glare_491_received"] >= 1
    assert bob.manager.stats["glare_491_received"] >= 1
    assert call.local_held and incoming.local_held
    assert call.streams[0].direction is incoming.streams[0].direction is Direction.INACTIVE
    await call.terminate()


async def test_in_dialog_options_and_dtmf_info(party: Factory) -> None:
    alice, bob = await party("alice"), await party("bob")
    call, incoming = await established(alice, bob)
    response = await within(call.options())
    assert response.status == 200 and "UPDATE" in response.headers.get("Allow", "")
    await within(call.send_dtmf("1#"))
    await until(lambda: len(bob.of(incoming, DTMFReceived)) == 2)
    assert [e.digit for e in bob.of(incoming, DTMFReceived)] == ["1", "#"]  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        await call.send_dtmf("x")
    await call.terminate()
    with pytest.raises(SessionError):
        await call.hold()


async def test_media_failure_ends_the_call(party: Factory) -> None:
    alice, bob = await party("alice"), await party("bob")
    call, incoming = await established(alice, bob)
    call.media_failed("RTP timeout")
    ended = await within(call.wait_terminated())
    assert ended.reason == "media failure: RTP timeout"
    remote = await within(incoming.wait_terminated())
    assert remote.reason == "media failure: RTP timeout" and remote.by == "remote"
    (bye,) = alice.sent("BYE")
    assert b"Reason: SIP;cause=408" in bye


async def test_terminate_while_connecting_waits_for_the_ack(party, scripted) -> None:
    """RFC 3261 §15: the callee sends BYE only after the ACK of its 2xx."""
    bob, caller = await party("bob"), await scripted()
    invite = Request(
        "INVITE",
        f"sip:bob@{HOST}:{bob.address.port}",
        [
            ("From", f"<{caller.uri}>;tag=c1"),
            ("To", f"<sip:bob@{HOST}>"),
            ("Call-ID", "late-ack"),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<{caller.uri}>"),
            ("Content-Type", "application/sdp"),
        ],
        OfferAnswer(HOST, [MediaConfig(port=30020, codecs=[PCMU])]).create_offer().to_bytes(),
    )
    sending = asyncio.ensure_future(caller.ua.send(invite, bob.address))
    incoming = await bob.next_call()
    await incoming.accept()
    ok = await within(sending)
    hangup = asyncio.ensure_future(incoming.terminate())
    await asyncio.sleep(0.1)
    assert not caller.byes and incoming.state is SessionState.CONNECTING
    caller.ua.send_ack(Dialog.from_uac(invite, ok), ok, bob.address)
    await within(hangup)
    await until(lambda: len(caller.byes) == 1)


# ------------------------------------------------------------------------------------------
# Session timers (RFC 4028)
# ------------------------------------------------------------------------------------------
def timers(expires: int, min_se: int) -> SessionConfig:
    return SessionConfig(
        glare_scale=0.05, session_timer=SessionTimerConfig(session_expires=expires, min_se=min_se)
    )


async def test_session_refresh_with_update(party: Factory) -> None:
    alice, bob = await party("alice", config=timers(1, 1)), await party("bob", config=timers(1, 1))
    call, incoming = await established(alice, bob)
    assert call.timer.interval == incoming.timer.interval == 1
    assert call.timer.we_refresh and not incoming.timer.we_refresh
    await asyncio.sleep(1.2)  # refresh at 0.5 s intervals; without it the callee BYEs at 0.67 s
    assert call.state is incoming.state is SessionState.CONFIRMED
    assert len(alice.sent("UPDATE")) >= 2
    assert len(bob.of(incoming, SessionRefreshed)) >= 2
    await call.terminate()


async def test_session_refresh_with_reinvite_when_update_is_not_allowed(party, scripted) -> None:
    alice = await party("alice", config=timers(1, 1))
    peer = await scripted()
    invites: list[Request] = []

    def on_invite(sreq: ServerRequest) -> None:
        invites.append(sreq.request)
        sreq.respond(
            200,
            headers=[
                *peer.contact(),
                ("Allow", "INVITE, ACK, BYE"),
                ("Session-Expires", "1;refresher=uac"),
                ("Require", "timer"),
            ],
            body=answer_sdp(sreq.request.body),
        )

    peer.ua.on("INVITE", on_invite)
    call = await within(alice.manager.call(peer.uri))
    await asyncio.sleep(0.6)
    assert len(invites) >= 2 and invites[1].to.tag is not None  # a re-INVITE
    assert call.state is SessionState.CONFIRMED
    await call.terminate()


async def test_session_expires_without_refresh(party, scripted) -> None:
    bob, caller = await party("bob", config=timers(1, 1)), await scripted()
    invite = Request(
        "INVITE",
        f"sip:bob@{HOST}:{bob.address.port}",
        [
            ("From", f"<{caller.uri}>;tag=c1"),
            ("To", f"<sip:bob@{HOST}>"),
            ("Call-ID", "expiring"),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<{caller.uri}>"),
            ("Supported", "timer"),
            ("Session-Expires", "1;refresher=uac"),
            ("Content-Type", "application/sdp"),
        ],
        OfferAnswer(HOST, [MediaConfig(port=30030, codecs=[PCMU])]).create_offer().to_bytes(),
    )
    sending = asyncio.ensure_future(caller.ua.send(invite, bob.address))
    incoming = await bob.next_call()
    await incoming.accept()
    ok = await within(sending)
    assert ok.headers.get("Session-Expires") == "1;refresher=uac"
    assert "timer" in ok.tokens("Require")
    caller.ua.send_ack(Dialog.from_uac(invite, ok), ok, bob.address)
    await within(incoming.wait_established())
    started = bob.ua.now()
    ended = await within(incoming.wait_terminated())  # the caller never refreshes
    elapsed = bob.ua.now() - started
    assert ended.reason == "session expired"
    assert 0.55 < elapsed < 0.9  # 1 - min(32, 1/3) s after the 2xx (RFC 4028 §10)
    await until(lambda: len(caller.byes) == 1)
    assert parse_reasons(caller.byes[0])[0].text == "session timer expired"


async def test_session_interval_too_small_is_retried(party: Factory) -> None:
    alice, bob = await party("alice", config=timers(1, 1)), await party("bob", config=timers(2, 2))
    call, incoming = await established(alice, bob)
    assert alice.received("SIP/2.0 422")
    assert call.timer.interval == incoming.timer.interval == 2
    invites = alice.sent("INVITE")
    assert b"Session-Expires: 2" in invites[-1] and b"Min-SE: 2" in invites[-1]
    await call.terminate()


# ------------------------------------------------------------------------------------------
# TLS: the peer's certificate against the key of its AoR record
# ------------------------------------------------------------------------------------------
NOW = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


async def test_tls_peer_verification(party: Factory) -> None:
    alice_id, bob_id, mallory_id = (Identity.generate(random.Random(i)) for i in (1, 2, 3))
    alice_creds = alice_id.tls_certificate("alice", NOW, days=1)
    bob_creds = bob_id.tls_certificate("bob", NOW, days=1)
    checked: list[tuple[str, str, bool]] = []

    def keyring(expected: dict[str, bytes]) -> Callable[[bytes | None, LocatedContact, str], bool]:
        def verify(cert: bytes | None, contact: LocatedContact, aor: str) -> bool:
            key = contact.public_key or expected.get(aor)
            ok = cert is not None and key is not None and verify_tls_binding(cert, key)
            checked.append((contact.source, aor, ok))
            return ok

        return verify

    alice = await party(
        "alice",
        transport="tls",
        ssl_context=server_context(alice_creds.certificate_pem, alice_creds.private_key_pem),
        verify_peer=keyring({}),
    )
    bob = await party(
        "bob",
        transport="tls",
        ssl_context=server_context(
            bob_creds.certificate_pem,
            bob_creds.private_key_pem,
            client_cadata=alice_creds.certificate_pem,
        ),
        verify_peer=keyring({"sip:alice@p2p.test": alice_id.public_key_bytes}),
    )
    assert alice.ua.transports is not None and bob.ua.transports is not None
    alice.ua.transports.tls_client_context = client_context(
        verify=False, cert_pem=alice_creds.certificate_pem, key_pem=alice_creds.private_key_pem
    )
    bob.ua.transports.tls_client_context = client_context(verify=False)

    # the right key: the call goes through, the callee checked the caller too
    good = bob.contact(public_key=bob_id.public_key_bytes, source="dht")
    call = alice.manager.start_call([good], to="sip:bob@p2p.test")
    incoming = await bob.next_call()
    await incoming.accept()
    await within(call.wait_established())
    assert ("dht", "sip:bob@p2p.test", True) in checked
    assert ("incoming", "sip:alice@p2p.test", True) in checked
    await within(incoming.terminate())  # the callee's BYE goes to the caller's TLS contact
    await within(call.wait_terminated())
    # ... over a new connection, whose certificate was checked as well before the BYE went
    assert checked.count(("incoming", "sip:alice@p2p.test", True)) == 2
    assert checked.count(("dht", "sip:bob@p2p.test", True)) == 1  # the caller's reused it

    # a record naming another key: refused before anything is sent
    invites_before = len(bob.received("INVITE"))
    wrong = bob.contact(public_key=mallory_id.public_key_bytes, source="dht")
    with pytest.raises(PeerVerificationFailed, match="certificate"):
        await within(alice.manager.call([wrong], to="sip:bob@p2p.test"))
    assert ("dht", "sip:bob@p2p.test", False) in checked
    await asyncio.sleep(0.05)
    assert len(bob.received("INVITE")) == invites_before
    assert alice.manager.stats["verify_refused"] == 1


async def test_tls_callee_refuses_a_caller_with_the_wrong_key(party: Factory) -> None:
    alice_id, bob_id, other_id = (Identity.generate(random.Random(i)) for i in (4, 5, 6))
    alice_creds = alice_id.tls_certificate("alice", NOW, days=1)
    bob_creds = bob_id.tls_certificate("bob", NOW, days=1)

    def expect(key: bytes) -> Callable[[bytes | None, LocatedContact, str], bool]:
        return lambda cert, contact, aor: cert is not None and verify_tls_binding(cert, key)

    alice = await party(
        "alice",
        transport="tls",
        ssl_context=server_context(alice_creds.certificate_pem, alice_creds.private_key_pem),
    )
    bob = await party(
        "bob",
        transport="tls",
        ssl_context=server_context(
            bob_creds.certificate_pem,
            bob_creds.private_key_pem,
            client_cadata=alice_creds.certificate_pem,
        ),
        verify_peer=expect(other_id.public_key_bytes),  # bob's record of alice names another key
    )
    assert alice.ua.transports is not None
    alice.ua.transports.tls_client_context = client_context(
        verify=False, cert_pem=alice_creds.certificate_pem, key_pem=alice_creds.private_key_pem
    )
    with pytest.raises(CallFailed) as info:
        await within(alice.manager.call(bob.uri))
    assert info.value.status == 403
    assert bob.manager.stats["verify_refused"] == 1
    refused = [e for s, e in bob.events if isinstance(e, Terminated)]
    assert len(refused) == 1 and isinstance(refused[0].error, PeerVerificationFailed)
    assert not bob.media[0].calls  # no media was prepared for an unverified caller


async def test_terminate_an_unanswered_incoming_call(party: Factory) -> None:
    alice, bob = await party("alice"), await party("bob")
    call = alice.manager.start_call(bob.uri)
    incoming = await bob.next_call()
    await incoming.ring()
    ended = await within(incoming.terminate())
    assert ended.status == 603 and ended.by == "local"
    with pytest.raises(CallFailed) as info:
        await within(call.wait_established())
    assert info.value.status == 603


async def test_on_incoming_callback_and_close(party: Factory) -> None:
    async def answer(session: Session) -> None:
        await session.ring()
        await session.accept()

    alice = await party("alice")
    bob = await party("bob", on_incoming=answer)
    call = await within(alice.manager.call(bob.uri))
    assert call.state is SessionState.CONFIRMED
    (incoming,) = bob.manager.sessions
    await within(bob.manager.close(timeout=2))
    assert incoming.state is SessionState.TERMINATED
    ended = await within(call.wait_terminated())
    assert ended.by == "remote" and ended.reason == "shutting down"
    with pytest.raises(SessionError):
        bob.manager.start_call(alice.uri)


async def test_update_with_an_offer_is_answered(party: Factory) -> None:
    """RFC 3311: an UPDATE carrying an offer changes the session without a re-INVITE."""
    alice, bob = await party("alice"), await party("bob")
    call, incoming = await established(alice, bob)
    assert call.offer_answer is not None and call.dialog is not None
    call.offer_answer.hold()
    offer = call.offer_answer.create_offer().to_bytes()
    update = call.dialog.create_request("UPDATE", body=offer, content_type="application/sdp")
    response = await within(alice.ua.send(update, bob.address))
    assert response.status == 200 and b"a=recvonly" in response.body
    call.offer_answer.receive_answer(response.body)
    await until(lambda: incoming.remote_held)
    assert bob.of(incoming, RemoteHeld)
    await call.terminate()


async def test_refused_reinvite_leaves_the_call_as_it_was(party, scripted) -> None:
    alice, peer = await party("alice"), await scripted()

    def on_invite(sreq: ServerRequest) -> None:
        if sreq.request.to.tag is None:
            sreq.respond(200, headers=peer.contact(), body=answer_sdp(sreq.request.body))
        else:
            sreq.respond(488)

    peer.ua.on("INVITE", on_invite)
    call = await within(alice.manager.call(peer.uri))
    before = call.streams
    with pytest.raises(SessionError, match="488") as info:
        await within(call.hold())
    assert info.value.response is not None and info.value.response.status == 488
    assert call.state is SessionState.CONFIRMED and call.streams == before
    assert call.offer_answer is not None and not call.offer_answer.is_held(0)
    assert not call.local_held and not alice.of(call, Held)
    await call.terminate()


async def test_hang_up_when_the_peer_vanished_returns_at_once(party: Factory) -> None:
    alice, bob = await party("alice"), await party("bob")
    call, _ = await established(alice, bob)
    await bob.ua.close()  # gone without a word
    started = alice.ua.now()
    ended = await within(call.terminate())
    assert alice.ua.now() - started < 0.5  # the BYE's transaction goes on in the background
    assert ended.by == "local" and call.state is SessionState.TERMINATED
    assert alice.sent("BYE")


async def test_media_that_cannot_be_prepared(party: Factory) -> None:
    alice, bob = await party("alice"), await party("bob")

    class Broken(FakeMedia):
        async def prepare(self) -> Any:
            raise RuntimeError("no sound card")

    call = alice.manager.start_call(bob.uri)
    incoming = await bob.next_call()
    incoming.media = Broken()
    with pytest.raises(SessionError, match="media could not be prepared"):
        await incoming.accept()
    with pytest.raises(CallFailed) as info:
        await within(call.wait_established())
    assert info.value.status == 500
    # on the caller's side: the call fails before any INVITE is sent
    with pytest.raises(SessionError, match="media could not be prepared"):
        await within(alice.manager.call(bob.uri, media=Broken()))


async def test_a_call_never_rings_longer_than_timer_c(party: Factory) -> None:
    alice = await party("alice", sip_timers=TimerConfig(t1=0.05, t2=0.4, t4=0.5, timer_c=0.3))
    bob = await party("bob")
    call = alice.manager.start_call(bob.uri)  # no timeout given
    incoming = await bob.next_call()
    await incoming.ring()  # ... and never answers
    with pytest.raises(CallTimeout):
        await within(call.wait_established())
    assert (await within(incoming.wait_terminated())).status == 487


@pytest.mark.parametrize("peer_has_tcp", [True, False])
async def test_large_request_goes_over_tcp_else_falls_back_to_udp(peer_has_tcp: bool) -> None:
    """RFC 3261 §18.1.1: a request over 1300 bytes to a UDP destination goes over TCP; when
    the TCP connection is refused, it is retried over UDP."""
    sender = UserAgent(UserAgentConfig(timers=FAST))
    peer = UserAgent(UserAgentConfig(timers=FAST))
    try:
        await sender.listen("udp", HOST, 0)
        await sender.listen("tcp", HOST, 0)
        address = await peer.listen("udp", HOST, 0)
        if peer_has_tcp:
            await peer.listen("tcp", HOST, address.port)
        arrived: list[str] = []

        def on_options(sreq: ServerRequest) -> None:
            arrived.append(sreq.source.transport)
            sreq.respond(200)

        peer.on("OPTIONS", on_options)
        uri = f"sip:peer@{HOST}:{address.port}"
        headers = [
            ("Max-Forwards", "70"),
            ("From", f"<sip:sender@{HOST}>;tag=t1"),
            ("To", f"<{uri}>"),
            ("Call-ID", f"large-{peer_has_tcp}"),
            ("CSeq", "1 OPTIONS"),
            ("X-Padding", "x" * 1400),
        ]
        response = await within(sender.send(Request("OPTIONS", uri, headers), address))
        assert response.status == 200
        assert arrived == (["tcp"] if peer_has_tcp else ["udp"])
    finally:
        await sender.close()
        await peer.close()


async def _invite_requiring_100rel(
    caller: UserAgent, callee: Party, provisionals: list[Response]
) -> asyncio.Task[Response]:
    """Send an INVITE with an offer and ``Require: 100rel`` from a bare user agent."""
    offer = OfferAnswer(HOST, [MediaConfig(port=40000, codecs=[PCMU])]).create_offer()
    uri = callee.uri
    invite = Request(
        "INVITE",
        uri,
        [
            ("Max-Forwards", "70"),
            ("From", f"<sip:caller@{HOST}>;tag=c1"),
            ("To", f"<{uri}>"),
            ("Call-ID", f"rel-{random.random()}"),
            ("CSeq", "10 INVITE"),
            ("Contact", f"<sip:caller@{HOST}:{caller.core.local_address('udp').port}>"),
            ("Require", "100rel"),
            ("Supported", "100rel"),
            ("Content-Type", "application/sdp"),
        ],
        offer.to_bytes(),
    )
    return asyncio.ensure_future(
        caller.send(invite, callee.address, on_provisional=provisionals.append)
    )


@contextlib.asynccontextmanager
async def _caller_requiring_100rel(
    callee: Party,
) -> AsyncIterator[tuple[UserAgent, list[Response], asyncio.Task[Response], Session]]:
    """A bare caller whose INVITE requires 100rel: (its UA, the provisionals it got, its
    final response to come, the callee's session)."""
    caller = UserAgent(UserAgentConfig(timers=FAST))
    await caller.listen("udp", HOST, 0)
    try:
        provisionals: list[Response] = []
        final = await _invite_requiring_100rel(caller, callee, provisionals)
        yield caller, provisionals, final, await within(callee.next_call())
    finally:
        await caller.close()


async def test_callee_sends_provisionals_reliably_when_the_invite_requires_100rel(party) -> None:
    """RFC 3262 §3 on the callee side: 180 with Require/RSeq, retransmitted from T1 until the
    PRACK (a PRACK with the wrong RAck gets 481), the next provisional only after the PRACK,
    RSeq + 1; the call then completes."""
    bob = await party("bob")
    async with _caller_requiring_100rel(bob) as (caller, provisionals, final, incoming):
        ring = asyncio.ensure_future(incoming.ring())
        await until(lambda: len([p for p in provisionals if p.status == 180]) >= 3)
        ringing = [p for p in provisionals if p.status == 180]
        assert {p.headers.get("RSeq") for p in ringing} == {ringing[0].headers.get("RSeq")}
        assert "100rel" in ringing[0].tokens("Require")
        rseq = int(ringing[0].headers.get("RSeq") or 0)
        invite = incoming.invite
        assert invite is not None
        early = Dialog.from_uac(invite, ringing[0])
        wrong = early.create_request("PRACK", [("RAck", f"{rseq + 5} 10 INVITE")])
        assert (await within(caller.send(wrong, bob.address))).status == 481
        progress = asyncio.ensure_future(incoming.progress())  # waits for the 180's PRACK
        sent = len(provisionals)
        await until(lambda: len(provisionals) > sent)  # the 180 is retransmitted meanwhile
        assert not any(p.status == 183 for p in provisionals)
        prack = early.create_request("PRACK", [("RAck", f"{rseq} 10 INVITE")])
        assert (await within(caller.send(prack, bob.address))).status == 200
        await within(ring)
        await until(lambda: any(p.status == 183 for p in provisionals))
        (session_progress, *_) = [p for p in provisionals if p.status == 183]
        assert session_progress.headers.get("RSeq") == str(rseq + 1)
        count = len(provisionals)
        prack = early.create_request("PRACK", [("RAck", f"{rseq + 1} 10 INVITE")])
        assert (await within(caller.send(prack, bob.address))).status == 200
        await within(progress)
        await asyncio.sleep(0.2)
        assert len(provisionals) <= count + 1  # the retransmissions stopped
        await incoming.accept()
        response = await within(final)
        assert response.status == 200
        caller.send_ack(Dialog.from_uac(invite, response), response, bob.address)
        await within(incoming.wait_established())
        await incoming.terminate()


async def test_callee_without_prack_gives_up_with_504(party) -> None:
    bob = await party("bob")
    async with _caller_requiring_100rel(bob) as (_caller, provisionals, final, incoming):
        await incoming.ring()
        response = await within(final, 10)  # 64*T1 = 3.2 s with these timers
        assert response.status == 504
        assert len([p for p in provisionals if p.status == 180]) >= 5
        assert incoming.state is SessionState.TERMINATED
