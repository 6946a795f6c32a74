"""SIPp's built-in ``uac_pcap`` scenario calls a p2psip node: G.711 A-law audio and an RFC 4733
DTMF digit replayed from the pcaps that ship with SIPp (Debian ``sip-tester``).

The scenario (``sipp -sd uac_pcap``, unchanged except that its ``pcap/...`` paths are made
absolute) offers ``RTP/AVP 8 101`` (PCMA, telephone-event), plays ``g711a.pcap`` (236 packets
of **30 ms**, 7.08 s of speech), pauses 8 s, plays ``dtmf_2833_1.pcap`` (digit 1, from another
SSRC) and hangs up. The node answers (auto-answer), records into a :class:`MemorySink`, and:

* the recording holds the pcap's audio: the A-law payloads of the pcap, decoded here, are
  found in the recording by cross-correlation (normalised peak > 0.95), and the audio part
  lasts as long as the pcap;
* the DTMF digit arrives as a :class:`~p2psip.media.pipeline.DtmfReceived` event and in the
  stream's ``dtmf_received`` count.

SIPp sends 30 ms packets while we frame 20 ms: the receive path re-frames sample-based payloads
(RFC 3551 §4.2); without that, a third of the frames were concealed and the audio stretched.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from p2psip.endpoint.session import SessionState
from p2psip.media.aio.stream import AudioStreamConfig, AudioStreamStatistics
from p2psip.media.audio import MemorySink
from p2psip.media.codecs import alaw_decode
from p2psip.media.offer_answer import SRTPMode
from p2psip.media.pipeline import DtmfReceived
from p2psip.node import Call
from tests.interop.callpeers import (
    HOST,
    IncomingCalls,
    analyse,
    missing,
    node_uri,
    p2psip_node,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(90)]

RATE = 8000


def sipp_pcap_dir() -> Path:
    """The directory of SIPp's shipped pcaps (``g711a.pcap``)."""
    candidates: list[Path] = []
    if shutil.which("dpkg"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            listing = subprocess.run(
                ["dpkg", "-L", "sip-tester"], capture_output=True, text=True, timeout=30
            ).stdout
            candidates += [
                Path(x).parent for x in listing.splitlines() if x.endswith("/g711a.pcap")
            ]
    candidates += [Path("/usr/share/sip-tester"), Path("/usr/local/share/sipp/pcap")]
    for candidate in candidates:
        if (candidate / "g711a.pcap").is_file() and (candidate / "dtmf_2833_1.pcap").is_file():
            return candidate
    missing("SIPp's pcaps (g711a.pcap) not found (apt-get install sip-tester)")
    raise AssertionError("unreachable")


def rtp_payloads(pcap: Path) -> list[tuple[int, bytes]]:
    """``(payload type, payload)`` of the RTP packets in a classic pcap of Ethernet/IPv4/UDP."""
    data = pcap.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    assert linktype == 1, f"{pcap}: link type {linktype}, expected Ethernet"
    out: list[tuple[int, bytes]] = []
    offset = 24
    while offset + 16 <= len(data):
        incl = struct.unpack(endian + "IIII", data[offset : offset + 16])[2]
        frame = data[offset + 16 : offset + 16 + incl]
        offset += 16 + incl
        if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
            continue  # not IPv4/UDP
        ip_header = (frame[14] & 0x0F) * 4
        rtp = frame[14 + ip_header + 8 :]
        if len(rtp) < 12 or rtp[0] >> 6 != 2:
            continue
        header = 12 + 4 * (rtp[0] & 0x0F)
        out.append((rtp[1] & 0x7F, rtp[header:]))
    return out


def best_match(recording: np.ndarray, reference: np.ndarray) -> tuple[int, float]:
    """Where ``reference`` sits in ``recording`` (lag in samples) and the normalised
    correlation there (1.0 = identical up to gain), by FFT cross-correlation."""
    rec = recording.astype(np.float64)
    ref = reference.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(rec) + len(ref))))
    corr = np.fft.irfft(np.fft.rfft(rec, n) * np.conj(np.fft.rfft(ref, n)), n)
    corr = corr[: max(1, len(rec) - len(ref) + 1)]  # lags where all of ``reference`` fits
    lag = int(np.argmax(corr))
    segment = rec[lag : lag + len(ref)]
    ref = ref[: len(segment)]
    denominator = np.sqrt(np.dot(segment, segment) * np.dot(ref, ref))
    return lag, float(np.dot(segment, ref) / denominator) if denominator else 0.0


def uac_pcap_scenario(sipp_binary: str, pcap_dir: Path, path: Path) -> Path:
    """SIPp's built-in ``uac_pcap`` with its ``pcap/`` paths pointing at ``pcap_dir``."""
    dump = subprocess.run(
        [sipp_binary, "-sd", "uac_pcap"], capture_output=True, text=True, timeout=30
    )
    text = dump.stdout
    assert 'play_pcap_audio="pcap/g711a.pcap"' in text, text[-1500:]
    path.write_text(text.replace('play_pcap_audio="pcap/', f'play_pcap_audio="{pcap_dir}/'))
    return path


async def _watch(call: Call, digits: list[DtmfReceived]) -> AudioStreamStatistics | None:
    """Collect the call's DTMF events and its last media figures until it ends."""
    await call.wait_established()
    stream = call.media.primary
    assert stream is not None

    async def collect() -> None:
        async for event in stream.events():
            if isinstance(event, DtmfReceived):
                digits.append(event)

    collector = asyncio.ensure_future(collect())
    last = None
    try:
        while call.state is not SessionState.TERMINATED:
            last = call.statistics() or last
            await asyncio.sleep(0.1)
    finally:
        await asyncio.sleep(0)
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
    return last


async def test_sipp_uac_pcap_calls_p2psip(sipp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pcap_dir = sipp_pcap_dir()
    scenario = uac_pcap_scenario(sipp.binary, pcap_dir, tmp_path / "uac_pcap.xml")
    sink = MemorySink(RATE)
    audio = AudioStreamConfig(codecs=("PCMU", "PCMA"), srtp=SRTPMode.OFF, rtp_timeout=None)
    async with p2psip_node("p2p", audio=audio, auto_answer=True, answer_sink=lambda: sink) as node:
        incoming = IncomingCalls(node)
        target = node_uri(node, "p2p").removeprefix("sip:p2p@")
        run = asyncio.ensure_future(
            asyncio.to_thread(sipp.run, scenario, target, "-s", "p2p", "-m", "1", timeout=40)
        )
        call = await incoming.next(timeout=15)
        digits: list[DtmfReceived] = []
        stats = await asyncio.wait_for(_watch(call, digits), 40)
        result = await run
    assert result.returncode == 0, (result.returncode, result.stats, result.errors_text()[-2000:])
    assert result.successful_calls == 1, result.stats
    assert call.ended is not None and call.ended.status is None, call.ended  # SIPp's BYE
    assert stats is not None
    assert stats.codec == "PCMA/8000", stats.codec
    assert stats.srtp is False

    reference_packets = [p for pt, p in rtp_payloads(pcap_dir / "g711a.pcap") if pt == 8]
    assert len(reference_packets) == 236  # the shipped pcap: 30 ms packets
    reference = alaw_decode(b"".join(reference_packets))
    recording = sink.pcm
    report = analyse(recording, RATE)
    expected = analyse(reference, RATE)  # 7.08 s, of which ~6 s above the "loud" threshold
    assert abs(report.audio_seconds - expected.audio_seconds) <= 0.3, (report, expected)
    assert abs(report.level_dbfs - expected.level_dbfs) <= 2.0, (report, expected)
    lag, similarity = best_match(recording, reference)
    assert similarity > 0.95, (
        f"the pcap's audio is not in the recording: {similarity:.3f} ({report})"
    )
    assert lag < 2 * RATE, lag  # played from the start of the call (jitter buffer delay)
    assert stats.packets_received >= 236, stats
    assert stats.concealed_frames < 40, stats  # a few at the end of the talkspurt

    assert [d.digit for d in digits] == ["1"], digits
    assert all(d.ended for d in digits)
    assert 200 <= digits[0].duration_ms <= 400, digits  # the pcap's event: 280 ms
    assert stats.dtmf_received == 1, stats
    assert HOST in target


# -- the re-framing behind it, without SIPp (sans-IO, no sockets, no sleeping) -----------------


@pytest.mark.parametrize("packet_ms", [10, 20, 30, 60])
def test_pipeline_plays_any_g711_packet_duration(packet_ms: int) -> None:
    """RFC 3551 §4.2: 10/20/30/60 ms PCMU packets against our 20 ms frames play back as the
    continuous signal that was sent: as long as it, with no frame concealed."""
    import random

    from p2psip.media.codecs import PCMU, ulaw_encode
    from p2psip.media.pipeline import AudioPipeline, StreamParameters

    seconds = 2.0
    t = np.arange(int(RATE * seconds)) / RATE
    signal = np.rint(12000 * np.sin(2 * np.pi * (200 + 700 * t) * t))  # a chirp: one alignment
    payload = ulaw_encode(signal.astype(np.int16))
    sink = MemorySink(RATE)
    params = StreamParameters(codec=PCMU, send_payload_type=0, recv_payload_type=0, ptime=20)
    pipeline = AudioPipeline(params, sink=sink, rng=random.Random(1), now=0.0)
    step = RATE * packet_ms // 1000
    packets = [
        (i * step / RATE, bytes([0x80, 0, *struct.pack(">HII", 100 + i, 5000 + i * step, 77)]))
        for i in range(len(payload) // step)
    ]
    now, p = 0.0, 0
    for frame in range(int((seconds + 0.3) / 0.02)):
        now = frame * 0.02
        while p < len(packets) and packets[p][0] + step / RATE <= now:  # sent once recorded
            arrival, header = packets[p]
            chunk = payload[p * step : (p + 1) * step]
            pipeline.receive_datagram(header + chunk, arrival + step / RATE)
            p += 1
        pipeline.tick(now)
    stats = pipeline.statistics()
    assert stats.packets_received == len(packets)
    assert stats.late_packets == 0, stats
    # the only concealment is the tail after the last packet (0.3 s: before the fix, 30 ms
    # packets left a third of the 20 ms slots empty, 10 ms packets half of them)
    assert stats.concealed_frames <= 15, stats
    played = analyse(sink.pcm, RATE)
    # as long as what was sent (the adaptive buffer may insert or drop a frame or two)
    assert abs(played.audio_seconds - seconds) <= 0.08, (packet_ms, played)
