"""AudioStream end to end: two streams negotiated by SDP offer/answer on 127.0.0.1.

ICE (host candidates on loopback, or a relay through coturn), SRTP with SDES keys, every codec,
hold/unhold by re-negotiation, DTMF both ways, a peer without ICE, a wrong SRTP key, the RTP
timeout, hostile datagrams. The sans-IO :class:`AudioPipeline` is also driven directly with a
jumped clock (no sockets) for exact loss and DTMF figures and for property tests.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import aioice.ice
import aioice.stun
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psip.media.aio.stream import AudioStream, AudioStreamConfig, MediaClock
from p2psip.media.audio import (
    MemorySink,
    NullSink,
    ToneSource,
    WavFileSink,
    WavFileSource,
    dominant_frequency,
    rms_dbfs,
)
from p2psip.media.codecs import PCMU, find_codec
from p2psip.media.offer_answer import OfferAnswer, SRTPMode, SRTPParameters
from p2psip.media.pipeline import (
    AudioPipeline,
    DtmfReceived,
    IceConsentLost,
    MediaEvent,
    MediaStreamError,
    RtpTimedOut,
    StreamParameters,
)
from p2psip.media.rtp import RtpPacket
from p2psip.media.srtp import generate_inline
from tests.conftest import ManagedProcess
from tests.integration.test_ice import TURN_PASSWORD, TURN_USER, coturn  # noqa: F401

LOOPBACK = ["127.0.0.1"]
TONE_HZ = 1000.0


def config(**kw: object) -> AudioStreamConfig:
    base: dict[str, object] = {
        "codecs": ["PCMU"],
        "srtp": SRTPMode.MANDATORY,
        "host_addresses": LOOPBACK,
        "rtcp_interval": 0.5,
        "rtp_timeout": None,
        "ice_timeout": 5.0,
    }
    base.update(kw)
    return AudioStreamConfig(**base)  # type: ignore[arg-type]


@dataclass
class Call:
    alice: AudioStream
    bob: AudioStream
    alice_sdp: OfferAnswer
    bob_sdp: OfferAnswer


async def negotiate(
    alice: AudioStream,
    bob: AudioStream,
    *,
    tamper_answer: Callable[[bytes], bytes] | None = None,
) -> Call:
    """Prepare both, Alice offers, Bob answers, both start (Alice controls ICE)."""
    alice_sdp = OfferAnswer("127.0.0.1", [await alice.prepare()], username="alice")
    bob_sdp = OfferAnswer("127.0.0.1", [await bob.prepare()], username="bob")
    offer = alice_sdp.create_offer().to_bytes()
    answer = bob_sdp.answer(offer).to_bytes()
    if tamper_answer is not None:
        answer = tamper_answer(answer)
    (alice_stream,) = alice_sdp.receive_answer(answer)
    await asyncio.gather(
        alice.start(alice_stream, controlling=True),
        bob.start(bob_sdp.streams[0], controlling=False),
    )
    return Call(alice, bob, alice_sdp, bob_sdp)


async def renegotiate(call: Call) -> None:
    """A re-offer from Alice (RFC 3264 §8) applied to both running streams."""
    offer = call.alice_sdp.create_offer().to_bytes()
    answer = call.bob_sdp.answer(offer).to_bytes()
    (alice_stream,) = call.alice_sdp.receive_answer(answer)
    call.alice.update(alice_stream)
    call.bob.update(call.bob_sdp.streams[0])


@pytest.fixture
async def streams() -> AsyncIterator[list[AudioStream]]:
    """Streams created by a test are stopped at teardown even when it fails."""
    created: list[AudioStream] = []
    yield created
    for stream in created:
        await stream.stop()


def tone_wav(path: Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    """A WAV file holding a 1 kHz tone at half scale (-9 dBFS)."""
    with WavFileSink(path, rate) as sink:
        sink.write(ToneSource(TONE_HZ, rate, 0.5, duration=seconds).read(int(rate * seconds)))
    return path


def audible(pcm: np.ndarray, rate: int) -> np.ndarray:
    """The part of ``pcm`` between the first and the last 10 ms block above -40 dBFS."""
    block = rate // 100
    n = len(pcm) // block
    energy = np.sqrt(np.mean(pcm[: n * block].astype(np.float64).reshape(n, block) ** 2, axis=1))
    loud = np.flatnonzero(energy > 32768 * 0.01)
    if not len(loud):
        return pcm[:0]
    return pcm[loud[0] * block : (loud[-1] + 1) * block]


# ---------------------------------------------------------------------------------------------
# A tone from a WAV file, for each codec, through ICE and SRTP
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["PCMU", "PCMA", "G722", "opus"])
async def test_tone_from_wav_is_received_and_recorded_for_each_codec(
    codec: str, tmp_path: Path, streams: list[AudioStream]
) -> None:
    rate = find_codec(codec, 48000 if codec == "opus" else 8000).sample_rate
    source = WavFileSource(tone_wav(tmp_path / "tone.wav"), rate)  # 1.0 s, resampled
    recording = WavFileSink(tmp_path / "received.wav", 16000)  # playout resampled to 16 kHz
    alice = AudioStream(config(codecs=[codec]), source=source)
    bob = AudioStream(config(codecs=[codec]), sink=recording)
    streams += [alice, bob]
    await negotiate(alice, bob)
    await asyncio.sleep(1.5)
    stats = bob.statistics()
    await alice.stop()
    await bob.stop()
    recording.close()

    assert stats.codec.casefold().startswith(codec.casefold())
    assert stats.srtp and stats.srtp_suite == "AES_CM_128_HMAC_SHA1_80"
    assert stats.transport == "ice" and stats.local_address.startswith("127.0.0.1:")
    assert stats.packets_received >= 60 and stats.packets_lost == 0
    assert stats.dropped.dropped == 0
    with WavFileSource(tmp_path / "received.wav") as received:
        assert received.file_rate == 16000
        pcm = received.read(received.file_frames)
    tone = audible(pcm, 16000)
    assert abs(len(tone) / 16000 - 1.0) <= 0.2  # the 1.0 s of the file, then silence
    middle = tone[1600:-1600]
    assert abs(dominant_frequency(middle, 16000) - TONE_HZ) <= 10
    assert abs(rms_dbfs(middle) - (-9.03)) <= 2.0  # half scale survives the codec


# ---------------------------------------------------------------------------------------------
# Hold / unhold, DTMF, RTP timeout
# ---------------------------------------------------------------------------------------------


async def test_hold_stops_the_packets_and_unhold_resumes_them(streams: list[AudioStream]) -> None:
    alice = AudioStream(config(), source=ToneSource(TONE_HZ, 8000))
    bob = AudioStream(config(), source=ToneSource(500, 8000), sink=NullSink(8000))
    streams += [alice, bob]
    call = await negotiate(alice, bob)
    await asyncio.sleep(0.3)
    assert alice.statistics().packets_received > 5 and bob.statistics().packets_received > 5

    call.alice_sdp.hold(inactive=True)
    await renegotiate(call)
    assert alice.negotiated is not None and alice.negotiated.direction == "inactive"
    await asyncio.sleep(0.1)  # packets in flight land
    before = (alice.statistics(), bob.statistics())
    await asyncio.sleep(0.4)
    after = (alice.statistics(), bob.statistics())
    for b, a in zip(before, after, strict=True):
        assert not a.sending and not a.receiving
        assert a.packets_sent == b.packets_sent  # nothing flows while inactive
        assert a.packets_received == b.packets_received
        assert a.rtcp_sent >= b.rtcp_sent  # RTCP goes on (RFC 3264 §8.4)

    call.alice_sdp.unhold()
    await renegotiate(call)
    await asyncio.sleep(0.4)
    resumed = (alice.statistics(), bob.statistics())
    for a, r in zip(after, resumed, strict=True):
        assert r.sending and r.receiving
        assert r.packets_sent - a.packets_sent >= 12
        assert r.packets_received - a.packets_received >= 12


async def test_sendonly_hold_keeps_one_direction(streams: list[AudioStream]) -> None:
    alice = AudioStream(config(), source=ToneSource(TONE_HZ, 8000))
    bob = AudioStream(config(), source=ToneSource(500, 8000))
    streams += [alice, bob]
    call = await negotiate(alice, bob)
    call.alice_sdp.hold()  # sendonly: Alice still sends (music on hold), Bob does not
    await renegotiate(call)
    await asyncio.sleep(0.1)
    a0, b0 = alice.statistics(), bob.statistics()
    await asyncio.sleep(0.3)
    a1, b1 = alice.statistics(), bob.statistics()
    assert a1.packets_sent - a0.packets_sent >= 10 and b1.packets_received > b0.packets_received
    assert b1.packets_sent == b0.packets_sent and a1.packets_received == a0.packets_received


async def test_dtmf_both_ways(streams: list[AudioStream]) -> None:
    got_alice: list[MediaEvent] = []
    alice = AudioStream(config(), source=ToneSource(TONE_HZ, 8000), on_event=got_alice.append)
    bob = AudioStream(config(), source=ToneSource(500, 8000))
    streams += [alice, bob]
    await negotiate(alice, bob)
    await asyncio.sleep(0.1)
    alice.send_dtmf("123#")
    bob.send_dtmf("*9A", duration_ms=60)
    got_bob: list[DtmfReceived] = []

    async def collect() -> None:
        async for event in bob.events():
            if isinstance(event, DtmfReceived):
                got_bob.append(event)
                if len(got_bob) == 4:
                    return

    await asyncio.wait_for(collect(), 3)
    await asyncio.sleep(0.2)
    assert [e.digit for e in got_bob] == list("123#")
    assert all(e.ended and 80 <= e.duration_ms <= 120 for e in got_bob)
    digits = [e for e in got_alice if isinstance(e, DtmfReceived)]
    assert [e.digit for e in digits] == list("*9A")
    assert all(e.ended and 40 <= e.duration_ms <= 80 for e in digits)
    assert alice.statistics().dtmf_sent == 4 and bob.statistics().dtmf_received == 4
    # RFC 4733 packets share the audio's sequence space: no false loss
    assert bob.statistics().packets_lost == 0 and alice.statistics().packets_lost == 0
    with pytest.raises(MediaStreamError):
        alice.send_dtmf("X")


async def test_dtmf_without_telephone_event_is_refused(streams: list[AudioStream]) -> None:
    alice = AudioStream(config(dtmf=False))
    bob = AudioStream(config())
    streams += [alice, bob]
    await negotiate(alice, bob)
    with pytest.raises(MediaStreamError, match="telephone-event"):
        bob.send_dtmf("1")


async def test_rtp_timeout_event_when_the_peer_stops(streams: list[AudioStream]) -> None:
    alice = AudioStream(config(rtp_timeout=0.3), source=ToneSource(TONE_HZ, 8000))
    bob = AudioStream(config(), source=ToneSource(500, 8000))
    streams += [alice, bob]
    await negotiate(alice, bob)
    await asyncio.sleep(0.3)
    await bob.stop()
    loop = asyncio.get_running_loop()
    stopped = loop.time()

    async def first_timeout() -> RtpTimedOut:
        async for event in alice.events():
            if isinstance(event, RtpTimedOut):
                return event
        raise AssertionError("no timeout event")

    event = await asyncio.wait_for(first_timeout(), 2)
    assert 0.25 <= loop.time() - stopped <= 0.8
    assert event.silent_for >= 0.3


async def test_ice_consent_loss_is_an_event_and_sending_stops(
    streams: list[AudioStream], monkeypatch: pytest.MonkeyPatch
) -> None:
    # RFC 7675 consent checks every ~5 s, six misses: shrunk for this test (see test_ice.py)
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.05)
    monkeypatch.setattr(aioice.stun, "RETRY_RTO", 0.05)
    alice = AudioStream(config(), source=ToneSource(TONE_HZ, 8000))
    bob = AudioStream(config(), source=ToneSource(500, 8000))
    streams += [alice, bob]
    await negotiate(alice, bob)
    await asyncio.sleep(0.2)
    assert bob.pipeline is not None and bob.pipeline.ssrc
    await bob.stop()  # Bob vanishes; Alice's consent checks go unanswered

    async def consent_lost() -> IceConsentLost:
        async for event in alice.events():
            if isinstance(event, IceConsentLost):
                return event
        raise AssertionError("no consent event")

    event = await asyncio.wait_for(consent_lost(), 5)
    assert "consent" in event.reason
    before = alice.statistics()
    await asyncio.sleep(0.2)
    after = alice.statistics()
    assert before.send_errors <= 1  # noticed at the first refused send at the latest
    assert after.packets_sent == before.packets_sent and not after.sending  # sending stopped
    assert after.send_errors == before.send_errors


# ---------------------------------------------------------------------------------------------
# Plain RTP peer, wrong key, hostile datagrams
# ---------------------------------------------------------------------------------------------


async def test_peer_without_ice_gets_plain_rtp_on_the_negotiated_address(
    streams: list[AudioStream],
) -> None:
    sink = MemorySink(8000)
    # Alice offers ICE and best-effort SRTP; Bob, like SIPp, does neither
    alice = AudioStream(config(srtp=SRTPMode.OPTIONAL), source=ToneSource(TONE_HZ, 8000))
    bob = AudioStream(config(ice=False, srtp=SRTPMode.OFF), sink=sink)
    streams += [alice, bob]
    call = await negotiate(alice, bob)
    assert call.alice_sdp.streams[0].remote_ice is False
    await asyncio.sleep(0.8)
    a, b = alice.statistics(), bob.statistics()
    assert a.transport == b.transport == "udp"
    assert not a.srtp and not b.srtp
    assert a.remote_address == b.local_address  # symmetric RTP to the c=/m= address
    assert b.packets_received >= 30 and b.packets_lost == 0
    assert abs(dominant_frequency(audible(sink.pcm, 8000), 8000) - TONE_HZ) <= 10


async def test_plain_udp_without_rtcp_mux_uses_the_rtcp_port(streams: list[AudioStream]) -> None:
    alice = AudioStream(config(ice=False, rtcp_mux=False), source=ToneSource(TONE_HZ, 8000))
    bob = AudioStream(config(ice=False, rtcp_mux=False), source=ToneSource(500, 8000))
    streams += [alice, bob]
    call = await negotiate(alice, bob)
    stream = call.alice_sdp.streams[0]
    assert not stream.rtcp_mux and stream.remote_rtcp_port != stream.remote_port
    await asyncio.sleep(1.3)
    a = alice.statistics()
    assert a.rtcp_received >= 1 and a.rtt_ms is not None and a.rtt_ms < 50


async def test_wrong_srtp_key_drops_and_counts(streams: list[AudioStream]) -> None:
    wrong = generate_inline("AES_CM_128_HMAC_SHA1_80", random.Random(7).randbytes)

    def swap_key(answer: bytes) -> bytes:
        lines = answer.decode().split("\r\n")
        for i, line in enumerate(lines):
            if line.startswith("a=crypto:"):
                tag, suite, _ = line.split(" ", 2)
                lines[i] = f"{tag} {suite} {wrong}"  # Alice now expects Bob to use this key
        return "\r\n".join(lines).encode()

    alice = AudioStream(config(), source=ToneSource(TONE_HZ, 8000))
    bob = AudioStream(config(), source=ToneSource(500, 8000))
    streams += [alice, bob]
    await negotiate(alice, bob, tamper_answer=swap_key)
    await asyncio.sleep(0.6)
    a, b = alice.statistics(), bob.statistics()
    assert a.packets_received == 0 and a.dropped.srtp_rejected >= 20  # counted, no crash
    assert b.packets_received >= 20 and b.dropped.srtp_rejected == 0  # Bob still hears Alice
    assert alice.state == "running"


def _hostile_datagrams(ssrc: int) -> list[bytes]:
    rng = random.Random(3)
    rtp = RtpPacket(0, 1, 160, ssrc, bytes(160)).serialize()
    out = [rng.randbytes(rng.randrange(0, 300)) for _ in range(100)]
    out += [rtp[:n] for n in range(0, 12)]  # truncated RTP headers
    out += [bytes([0x80, 200, 0, 6]) + rng.randbytes(n) for n in range(0, 40, 3)]  # RTCP-ish
    out += [RtpPacket(0, 7, 1, rng.getrandbits(32), bytes(160)).serialize() for _ in range(20)]
    out += [bytes([0x80, 0]) + bytes(n) for n in (1400, 1600, 9000, 60000)]  # huge
    out += [bytes([0, 1, 0, 0]) + bytes(16)]  # STUN-looking
    return out


async def test_hostile_datagrams_are_counted_and_the_stream_keeps_working(
    streams: list[AudioStream],
) -> None:
    sink = MemorySink(8000)
    alice = AudioStream(config(), source=ToneSource(TONE_HZ, 8000))
    bob = AudioStream(config(), sink=sink)
    streams += [alice, bob]
    await negotiate(alice, bob)
    await asyncio.sleep(0.3)
    before = bob.statistics()
    assert bob.media_config is not None
    target = ("127.0.0.1", bob.media_config.port)  # Bob's ICE host candidate
    datagrams = _hostile_datagrams(alice.pipeline.ssrc if alice.pipeline else 0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        attacker.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        for datagram in datagrams:
            attacker.sendto(datagram, target)
            await asyncio.sleep(0)
    await asyncio.sleep(0.6)
    after = bob.statistics()
    assert bob.state == "running"
    dropped = after.dropped.dropped - before.dropped.dropped
    assert dropped >= len(datagrams) - 5  # a few STUN-looking ones are eaten by aioice
    assert after.dropped.srtp_rejected > before.dropped.srtp_rejected
    assert after.dropped.not_rtp > before.dropped.not_rtp
    assert after.packets_received - before.packets_received >= 25  # the real stream goes on
    assert after.packets_lost == 0
    tail = sink.pcm[-4000:]
    assert abs(dominant_frequency(tail, 8000) - TONE_HZ) <= 10


# ---------------------------------------------------------------------------------------------
# Through coturn: one side relay-only
# ---------------------------------------------------------------------------------------------


async def test_tone_through_a_turn_relay(
    coturn: tuple[tuple[str, int], ManagedProcess],  # noqa: F811
    tmp_path: Path,
    streams: list[AudioStream],
) -> None:
    server, proc = coturn
    source = WavFileSource(tone_wav(tmp_path / "tone.wav"), 8000)
    recording = WavFileSink(tmp_path / "received.wav", 8000)
    relayed = config(
        turn_server=server,
        turn_username=TURN_USER,
        turn_password=TURN_PASSWORD,
        relay_only=True,
    )
    alice = AudioStream(relayed, source=source)
    bob = AudioStream(config(), sink=recording)
    streams += [alice, bob]
    call = await negotiate(alice, bob)
    offered = call.bob_sdp.streams[0].remote_candidates
    assert offered and all(" typ relay raddr 0.0.0.0 " in c for c in offered)  # relay only
    await asyncio.sleep(1.5)
    a, b = alice.statistics(), bob.statistics()
    await alice.stop()
    await bob.stop()
    recording.close()
    assert alice.media_config is not None
    relay_port = alice.media_config.port  # our default candidate is the relayed one
    assert b.remote_address == f"127.0.0.1:{relay_port}"  # Bob talks to coturn's relay
    assert a.srtp and b.packets_received >= 60 and b.packets_lost == 0
    proc.wait_for_log(r"(CHANNEL_BIND|CREATE_PERMISSION) processed, success")
    with WavFileSource(tmp_path / "received.wav") as received:
        tone = audible(received.read(received.file_frames), 8000)
    assert abs(len(tone) / 8000 - 1.0) <= 0.2
    assert abs(dominant_frequency(tone[800:-800], 8000) - TONE_HZ) <= 10
    assert abs(rms_dbfs(tone[800:-800]) + 9.03) <= 2.0


# ---------------------------------------------------------------------------------------------
# The media clock
# ---------------------------------------------------------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.skipped = 0

    def clock_tick(self, now: float) -> None:
        self.ticks.append(now)

    def clock_skip(self, frames: int) -> None:
        self.skipped += frames


async def test_media_clock_is_drift_free_and_catches_up_after_a_stall() -> None:
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop, 0.02, max_catch_up=3)
    member = _Recorder()
    clock.add(member)
    await asyncio.sleep(0.2)
    time.sleep(0.2)  # a stalled loop: 10 frames late
    await asyncio.sleep(0.1)
    clock.remove(member)
    offsets = (np.array(member.ticks) - member.ticks[0]) / 0.02
    assert np.allclose(offsets, np.round(offsets), atol=1e-6)  # deadlines: start + n * period
    assert member.skipped >= 5 and clock.statistics().skipped == member.skipped
    assert clock.statistics().max_lateness_ms >= 150
    # every frame time was either run (caught up, at most 3 at once) or skipped
    assert round(offsets[-1]) + 1 == len(member.ticks) + member.skipped
    assert round(max(np.diff(offsets))) == member.skipped + 1
    assert MediaClock.shared(0.02) is MediaClock.shared(0.02)


# ---------------------------------------------------------------------------------------------
# The sans-IO pipeline with a jumped clock (no sockets, no sleeps)
# ---------------------------------------------------------------------------------------------


def _params(**kw: object) -> StreamParameters:
    base: dict[str, object] = {
        "codec": PCMU,
        "send_payload_type": 0,
        "recv_payload_type": 0,
        "telephone_event_send_payload_type": 101,
        "telephone_event_recv_payload_type": 101,
    }
    base.update(kw)
    return StreamParameters(**base)  # type: ignore[arg-type]


def _srtp_pair() -> tuple[SRTPParameters, SRTPParameters]:
    rng = random.Random(5)
    suite = "AES_CM_128_HMAC_SHA1_80"
    a, b = generate_inline(suite, rng.randbytes), generate_inline(suite, rng.randbytes)
    return SRTPParameters(suite, 1, a, b), SRTPParameters(suite, 1, b, a)


def _run_pair(alice: AudioPipeline, bob: AudioPipeline, frames: int, start: float = 0.0) -> float:
    """Tick both every 20 ms and carry each side's datagrams to the other at once."""
    now = start
    for _ in range(frames):
        now += 0.02
        for sender, receiver in ((alice, bob), (bob, alice)):
            sender.tick(now)
            for datagram in sender.take_rtp() + sender.take_rtcp():
                receiver.receive_datagram(datagram, now + 0.001)
    return now


def test_pipeline_pair_with_simulated_loss_reports_the_loss_and_conceals() -> None:
    ka, kb = _srtp_pair()
    sink = MemorySink(16000)  # the playout path resamples 8 -> 16 kHz
    alice = AudioPipeline(
        _params(srtp=ka), source=ToneSource(TONE_HZ, 8000), rng=random.Random(1), now=0.0
    )
    bob = AudioPipeline(
        _params(srtp=kb),
        sink=sink,
        rng=random.Random(2),
        now=0.0,
        simulated_loss=0.05,
        loss_rng=random.Random(9),
    )
    _run_pair(alice, bob, 500)
    stats = bob.statistics()
    assert stats.srtp and stats.packets_received + stats.dropped.simulated_loss == 500
    assert stats.packets_lost == stats.dropped.simulated_loss  # what we dropped is what is lost
    assert 3.0 <= stats.loss_percent <= 7.0
    assert stats.concealed_frames >= stats.packets_lost - 2
    pcm = audible(sink.pcm, 16000)
    assert abs(len(pcm) / 16000 - 9.9) <= 0.2  # continuous: concealment filled every loss
    assert abs(dominant_frequency(pcm, 16000) - TONE_HZ) <= 5
    assert alice.statistics().rtt_ms is not None  # RTCP went both ways


def test_pipeline_dtmf_and_hold_with_a_jumped_clock() -> None:
    alice = AudioPipeline(_params(), source=ToneSource(TONE_HZ, 8000), rng=random.Random(1), now=0)
    bob = AudioPipeline(_params(), sink=NullSink(8000), rng=random.Random(2), now=0)
    now = _run_pair(alice, bob, 10)
    alice.send_dtmf("5#", duration_ms=100)
    now = _run_pair(alice, bob, 40, now)
    events = []
    while (event := bob.next_event()) is not None:
        events.append(event)
    assert events == [DtmfReceived("5", 100.0, True), DtmfReceived("#", 100.0, True)]
    assert bob.statistics().packets_lost == 0
    sent = alice.statistics().packets_sent
    alice.update(replace(alice.params, send=False, receive=False), now)
    now = _run_pair(alice, bob, 20, now)
    assert alice.statistics().packets_sent == sent
    alice.update(replace(alice.params, send=True, receive=True), now)
    _run_pair(alice, bob, 20, now)
    assert alice.statistics().packets_sent == sent + 20


def test_pipeline_switches_ssrc_only_after_the_current_source_went_silent() -> None:
    bob = AudioPipeline(_params(), sink=NullSink(8000), rng=random.Random(2), now=0)

    def packet(ssrc: int, seq: int) -> bytes:
        return RtpPacket(0, seq, seq * 160, ssrc, bytes(160)).serialize()

    for i in range(10):
        bob.receive_datagram(packet(1, i), i * 0.02)
    bob.receive_datagram(packet(2, 0), 0.2)  # an intruder while 1 is active
    assert bob.remote_ssrc == 1 and bob.counters.foreign_ssrc == 1
    bob.receive_datagram(packet(3, 0), 2.0)  # 1 went silent: a new source takes over
    assert bob.remote_ssrc == 3


@given(st.lists(st.binary(max_size=200), max_size=30))
@settings(max_examples=200, deadline=None)
def test_pipeline_random_datagrams_are_only_counted(datagrams: list[bytes]) -> None:
    pipeline = AudioPipeline(_params(), sink=NullSink(8000), rng=random.Random(1), now=0)
    for i, data in enumerate(datagrams):
        pipeline.receive_datagram(data, i * 0.01)
        pipeline.tick(i * 0.01)
    # every datagram ends in exactly one place: accepted RTP, accepted RTCP, or a drop counter
    accepted = pipeline.packets_received + pipeline.statistics().rtcp_received
    assert accepted + pipeline.counters.dropped == len(datagrams)


@given(
    st.integers(0, 127),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=1600),
    st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_pipeline_any_rtp_header_is_handled(
    pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool
) -> None:
    pipeline = AudioPipeline(_params(), sink=NullSink(8000), rng=random.Random(1), now=0)
    data = struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq, ts, ssrc) + payload
    pipeline.receive_datagram(data, 0.0)
    pipeline.tick(0.02)
    # RFC 5761 §4: payload types 64-95 with the marker bit read as RTCP on a muxed port
    accepted = pipeline.packets_received + pipeline.statistics().rtcp_received
    assert accepted + pipeline.counters.dropped == 1


def test_pipeline_refuses_bad_keys_and_unrunnable_parameters() -> None:
    bad = SRTPParameters("AES_CM_128_HMAC_SHA1_80", 1, "inline:AAAA", "inline:AAAA")
    with pytest.raises(MediaStreamError):
        AudioPipeline(_params(srtp=bad), rng=random.Random(1), now=0)
    with pytest.raises(MediaStreamError):
        _params(ptime=0)
    pipeline = AudioPipeline(
        _params(telephone_event_send_payload_type=None), rng=random.Random(1), now=0
    )
    with pytest.raises(MediaStreamError):
        pipeline.send_dtmf("1")
