"""Media benchmark: concurrent SRTP streams on one core, per-packet stage costs, PESQ.

Run from the repository root::

    python benchmarks/media.py            # the full run (about 4-5 minutes)
    python benchmarks/media.py --quick    # a few seconds, for a smoke test
    python benchmarks/media.py --json out.json

What it measures (everything in one process, pinned to one CPU core when possible):

1. **Stage costs**: microseconds per 20 ms packet of each step of the media path (encode, RTP
   build, SRTP protect, UDP send, UDP receive, SRTP unprotect, RTP parse, jitter buffer put and
   get, decode) and of the whole pipeline per packet, with ``time.perf_counter`` loops.
2. **Capacity**: N ``AudioStream`` s (N/2 calls, both ends in this process, on 127.0.0.1, plain
   UDP without ICE, SRTP AES_CM_128_HMAC_SHA1_80, a 1 kHz tone source, null sink). Each stream
   sends 50 packets/s and receives 50 packets/s and decodes into its jitter buffer/sink, all
   paced by the shared media clock. A probe runs N streams for ``--probe-seconds`` after a 1 s
   warm-up; *loss* is ``1 - received / (N * frame times in the window)`` - packets lost on the
   way and frames the clock skipped after a stall both count. N doubles until the loss reaches
   0.1 %, then bisects. The same search runs for Opus and, as the baseline in the same run,
   for raw asyncio UDP: N sockets in pairs, each sending one 172-byte datagram per 20 ms (the
   size of an SRTP G.711 packet) to its partner from one shared timer, counting what arrives.
3. **PESQ** (ITU-T P.862 via the ``pesq`` package) of speech sent through two AudioStreams,
   clean and with 5 % loss at the receiver (seeded): PCMU in narrowband mode at 8 kHz, Opus
   in wideband mode at 16 kHz and, to compare with PCMU, in narrowband mode at 8 kHz. The
   speech is a sentence synthesised by ``espeak-ng`` when it is
   installed, else a synthetic speech-like signal (the report says which).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2psip.media.aio.stream import AudioStream, AudioStreamConfig, MediaClock
from p2psip.media.audio import MemorySink, NullSink, WavFileSource
from p2psip.media.codecs import OPUS, PCMU, Codec
from p2psip.media.jitterbuffer import JitterBuffer, JitterBufferConfig
from p2psip.media.offer_answer import OfferAnswer, SRTPMode
from p2psip.media.pipeline import AudioPipeline, StreamParameters
from p2psip.media.rtp import RtpPacket, RtpSender
from p2psip.media.srtp import SrtpSession, generate_key

SUITE = "AES_CM_128_HMAC_SHA1_80"
SENTENCE = (
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
    "It is easy to tell the depth of a well."
)


def pin_to_one_core() -> str:
    """Pin this process to the last CPU core; returns a description."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpus[-1]})
        return f"pinned to CPU {cpus[-1]} (of {len(cpus)})"
    except (AttributeError, OSError):
        return "not pinned (sched_setaffinity unavailable)"


class LoopSource:
    """A precomputed tone, read in a loop without computing anything (the source is not what
    the benchmark measures)."""

    def __init__(self, rate: int, freq: float = 1000.0) -> None:
        self.sample_rate = rate
        n = rate  # one second: a whole number of periods for 1 kHz
        t = np.arange(2 * n) / rate
        self._pcm = np.rint(0.5 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
        self._n = n
        self._pos = 0

    def read(self, samples: int) -> np.ndarray:
        start = self._pos
        self._pos = (start + samples) % self._n
        return self._pcm[start : start + samples]


# ---------------------------------------------------------------------------------------------
# 1. Stage costs
# ---------------------------------------------------------------------------------------------


def _per_call_us(func: Callable[[], object], loops: int) -> float:
    func()
    start = time.perf_counter()
    for _ in range(loops):
        func()
    return (time.perf_counter() - start) / loops * 1e6


def stage_costs(loops: int) -> list[tuple[str, float]]:
    """Microseconds per 20 ms packet of each stage."""
    rng = random.Random(1)
    results: list[tuple[str, float]] = []
    key_a, key_b = generate_key(SUITE, rng.randbytes), generate_key(SUITE, rng.randbytes)
    tx = SrtpSession(SUITE, key_a, key_b)
    for codec in (PCMU, OPUS):
        n = codec.frame_samples
        pcm = LoopSource(codec.sample_rate).read(n).copy()
        encoder = codec.encoder()
        decoder = codec.decoder()
        payload = encoder.encode(pcm)
        count = loops if codec is PCMU else max(200, loops // 10)
        encode = lambda e=encoder, x=pcm: e.encode(x)  # noqa: E731
        decode = lambda d=decoder, p=payload: d.decode(p)  # noqa: E731
        conceal = lambda d=decoder: d.conceal()  # noqa: E731
        results.append((f"encode {codec.name}", _per_call_us(encode, count)))
        results.append((f"decode {codec.name}", _per_call_us(decode, count)))
        results.append((f"conceal {codec.name}", _per_call_us(conceal, count)))
    payload = PCMU.encoder().encode(LoopSource(8000).read(160))
    sender = RtpSender(0, 8000, rng)
    results.append(("RTP build", _per_call_us(lambda: sender.next_datagram(payload), loops)))
    packets = [sender.next_datagram(payload) for _ in range(loops + 1)]
    it = iter(packets)
    results.append(("SRTP protect", _per_call_us(lambda: tx.protect_rtp(next(it)), loops)))
    # a fresh session pair and sequence numbers from 0: no rollover during the loop
    tx2, rx2 = SrtpSession(SUITE, key_a, key_b), SrtpSession(SUITE, key_b, key_a)
    sender2 = RtpSender(0, 8000, rng)
    sender2.sequence_number = 0
    protected = [tx2.protect_rtp(sender2.next_datagram(payload)) for _ in range(loops + 1)]
    it2 = iter(protected)
    unprotect = lambda: rx2.unprotect_rtp(next(it2))  # noqa: E731
    results.append(("SRTP unprotect", _per_call_us(unprotect, loops)))
    results.append(("RTP parse", _per_call_us(lambda: RtpPacket.parse(packets[0]), loops)))
    # UDP on loopback, non-blocking sockets, batches of 100 so the receive buffer never fills
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    b.setblocking(False)
    dest = b.getsockname()
    datagram = protected[0]
    send_time = recv_time = 0.0
    batches = max(1, loops // 100)
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(100):
            a.sendto(datagram, dest)
        t1 = time.perf_counter()
        for _ in range(100):
            b.recv(2048)
        t2 = time.perf_counter()
        send_time += t1 - t0
        recv_time += t2 - t1
    a.close()
    b.close()
    results.append(("UDP send (sendto)", send_time / (batches * 100) * 1e6))
    results.append(("UDP receive (recv)", recv_time / (batches * 100) * 1e6))
    # jitter buffer: put one packet, get one frame
    jb = JitterBuffer(JitterBufferConfig())
    state = {"seq": 0, "now": 0.0}

    def jitter_cycle() -> None:
        seq = state["seq"]
        now = state["now"]
        jb.put(payload, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, now)
        jb.get(now + 0.06)
        state["seq"] = seq + 1
        state["now"] = now + 0.02

    results.append(("jitter put + get", _per_call_us(jitter_cycle, loops)))
    # the whole pipeline: one send tick + one receive + one playout per packet (PCMU, SRTP)
    for codec in (PCMU, OPUS):
        results.append((f"whole path {codec.name} SRTP, 1 packet", _pipeline_cost(codec, loops)))
    return results


def _pipeline_cost(codec: Codec, loops: int) -> float:
    from p2psip.media.offer_answer import SRTPParameters
    from p2psip.media.srtp import generate_inline

    rng = random.Random(2)
    ka, kb = generate_inline(SUITE, rng.randbytes), generate_inline(SUITE, rng.randbytes)
    pt = codec.payload_type

    def params(local: str, remote: str, *, send: bool) -> StreamParameters:
        keys = SRTPParameters(SUITE, 1, local, remote)
        return StreamParameters(codec, pt, pt, send=send, receive=not send, srtp=keys)

    # one direction: a sends (read, encode, RTP, SRTP), b receives and plays (SRTP, RTP,
    # statistics, jitter buffer, decode, sink)
    a = AudioPipeline(
        params(ka, kb, send=True),
        source=LoopSource(codec.sample_rate),
        rng=random.Random(3),
        now=0.0,
    )
    b = AudioPipeline(
        params(kb, ka, send=False),
        sink=NullSink(codec.sample_rate),
        rng=random.Random(4),
        now=0.0,
    )
    count = loops if codec is PCMU else max(200, loops // 10)
    state = {"now": 0.0}

    def cycle() -> None:
        now = state["now"] = state["now"] + 0.02
        a.tick(now)
        for datagram in a.take_rtp():
            b.receive_datagram(datagram, now)
        b.tick(now)
        a.take_rtcp()
        b.take_rtcp()

    return _per_call_us(cycle, count)


# ---------------------------------------------------------------------------------------------
# 2. Capacity probes
# ---------------------------------------------------------------------------------------------


@dataclass
class Probe:
    kind: str
    streams: int
    seconds: float
    expected: int
    received: int
    cpu_percent: float
    p99_lateness_ms: float

    @property
    def loss_percent(self) -> float:
        return 100.0 * max(0, self.expected - self.received) / self.expected if self.expected else 0


async def _audio_pairs(codec: Codec, n: int) -> list[AudioStream]:
    cfg = AudioStreamConfig(
        codecs=[codec],
        srtp=SRTPMode.MANDATORY,
        ice=False,
        rtcp_interval=5.0,
        rtp_timeout=None,
        dtmf=False,
    )
    streams: list[AudioStream] = []
    for _ in range(n // 2):
        alice = AudioStream(cfg, source=LoopSource(codec.sample_rate))
        bob = AudioStream(cfg, source=LoopSource(codec.sample_rate))
        alice.sink = NullSink(codec.sample_rate)
        bob.sink = NullSink(codec.sample_rate)
        a_sdp = OfferAnswer("127.0.0.1", [await alice.prepare()])
        b_sdp = OfferAnswer("127.0.0.1", [await bob.prepare()])
        answer = b_sdp.answer(a_sdp.create_offer().to_bytes()).to_bytes()
        (a_stream,) = a_sdp.receive_answer(answer)
        await alice.start(a_stream, controlling=True)
        await bob.start(b_sdp.streams[0], controlling=False)
        streams += [alice, bob]
    return streams


async def probe_audio(codec: Codec, n: int, seconds: float) -> Probe:
    streams = await _audio_pairs(codec, n)
    clock = MediaClock.shared(0.02)
    try:
        await asyncio.sleep(1.0)  # warm-up: jitter buffers fill, caches warm
        gc.collect()
        received0 = sum(s.statistics().packets_received for s in streams)
        clock._lateness.clear()
        frames0 = clock.ticks + clock.skipped
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        frames = clock.ticks + clock.skipped - frames0  # frame times in the window
        received1 = sum(s.statistics().packets_received for s in streams)
        p99 = clock.statistics().p99_lateness_ms
    finally:
        for s in streams:
            await s.stop()
    elapsed = wall1 - wall0
    return Probe(
        f"{codec.name} SRTP",
        n,
        elapsed,
        n * frames,
        received1 - received0,
        100 * (cpu1 - cpu0) / elapsed,
        p99,
    )


class _RawPeer(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += 1


class _RawSender:
    """A clock member that sends one 172-byte datagram per frame from every socket."""

    def __init__(self, peers: list[tuple[_RawPeer, tuple[str, int]]]) -> None:
        self.peers = peers
        self.payload = bytes(172)

    def clock_tick(self, now: float) -> None:
        payload = self.payload
        for peer, dest in self.peers:
            assert peer.transport is not None
            peer.transport.sendto(payload, dest)

    def clock_skip(self, frames: int) -> None:
        pass


async def probe_raw(n: int, seconds: float) -> Probe:
    loop = asyncio.get_running_loop()
    peers: list[_RawPeer] = []
    for _ in range(n):
        _, proto = await loop.create_datagram_endpoint(_RawPeer, local_addr=("127.0.0.1", 0))
        peers.append(proto)
    pairs = []
    for i in range(0, n - 1, 2):
        a, b = peers[i], peers[i + 1]
        assert a.transport is not None and b.transport is not None
        pairs.append((a, b.transport.get_extra_info("sockname")))
        pairs.append((b, a.transport.get_extra_info("sockname")))
    sender = _RawSender(pairs)
    clock = MediaClock.shared(0.02)
    clock.add(sender)
    try:
        await asyncio.sleep(1.0)
        received0 = sum(p.received for p in peers)
        clock._lateness.clear()
        frames0 = clock.ticks + clock.skipped
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        frames = clock.ticks + clock.skipped - frames0  # frame times in the window
        received1 = sum(p.received for p in peers)
        p99 = clock.statistics().p99_lateness_ms
    finally:
        clock.remove(sender)
        for p in peers:
            if p.transport is not None:
                p.transport.close()
        await asyncio.sleep(0)
    elapsed = wall1 - wall0
    return Probe(
        "raw asyncio UDP",
        len(pairs),
        elapsed,
        len(pairs) * frames,
        received1 - received0,
        100 * (cpu1 - cpu0) / elapsed,
        p99,
    )


async def find_capacity(
    run: Callable[[int], Any],
    start: int,
    limit: int,
    bisect_steps: int,
    log: Callable[[Probe], None],
) -> tuple[int, list[Probe]]:
    """Largest N (even) with loss < 0.1 %: double from ``start``, then bisect."""
    probes: list[Probe] = []
    good, bad = 0, None
    n = start
    while n <= limit:
        probe = await run(n)
        probes.append(probe)
        log(probe)
        if probe.loss_percent < 0.1:
            good = n
            n *= 2
        else:
            bad = n
            break
    if bad is None:
        return good, probes
    low, high = good, bad
    for _ in range(bisect_steps):
        mid = (low + high) // 4 * 2
        if mid <= low or mid >= high:
            break
        probe = await run(mid)
        probes.append(probe)
        log(probe)
        if probe.loss_percent < 0.1:
            low = mid
        else:
            high = mid
    return low, probes


# ---------------------------------------------------------------------------------------------
# 3. PESQ
# ---------------------------------------------------------------------------------------------


def speech_signal(rate: int, seconds: float) -> tuple[np.ndarray, str]:
    """A spoken sentence at ``rate`` (espeak-ng), or a synthetic speech-like signal."""
    espeak = shutil.which("espeak-ng")
    if espeak:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "speech.wav"
            try:
                subprocess.run(
                    [espeak, "-s", "150", "-w", str(path), SENTENCE],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
                with WavFileSource(path, rate) as source:
                    pcm = source.read(source.file_frames * rate // source.file_rate + rate)
                peak = max(1, int(np.max(np.abs(pcm.astype(np.int32)))))
                pcm = np.clip(pcm.astype(np.float64) * (0.5 * 32767 / peak), -32768, 32767)
                return pcm.astype(np.int16)[: int(seconds * rate)], "espeak-ng sentence"
            except (OSError, subprocess.SubprocessError):
                pass
    # synthetic: a voiced source (120-220 Hz glottal pulses) through moving formants, in
    # syllable-long bursts with pauses
    rng = np.random.default_rng(7)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = 160 + 50 * np.sin(2 * np.pi * 0.7 * t)
    phase = np.cumsum(f0 / rate)
    pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float64)
    voiced = np.convolve(pulses, np.exp(-np.arange(80) / 10.0))[:n]
    signal = np.zeros(n)
    for f1 in (500, 1500, 2500):
        freq = f1 * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        signal += np.sin(2 * np.pi * np.cumsum(freq) / rate) * voiced
    envelope = (np.sin(2 * np.pi * 3.0 * t) > -0.2).astype(np.float64)
    signal *= np.convolve(envelope, np.ones(rate // 50) / (rate // 50), mode="same")
    signal = signal / np.max(np.abs(signal)) * 0.5 * 32767
    return signal.astype(np.int16), "synthetic speech-like signal (espeak-ng not installed)"


class _ArraySource:
    def __init__(self, pcm: np.ndarray, rate: int) -> None:
        self.sample_rate = rate
        self._pcm = pcm
        self._pos = 0

    def read(self, samples: int) -> np.ndarray:
        out = self._pcm[self._pos : self._pos + samples]
        self._pos += len(out)
        return out


def _align(reference: np.ndarray, received: np.ndarray, rate: int) -> np.ndarray:
    """``received`` shifted by the delay that best matches ``reference`` (cross-correlation)."""
    ref = reference.astype(np.float64)
    rec = received.astype(np.float64)
    size = 1 << math.ceil(math.log2(len(ref) + len(rec)))
    corr = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(ref, size)), size)
    lag = int(np.argmax(corr[: len(rec)]))
    out = received[lag : lag + len(reference)]
    if len(out) < len(reference):
        out = np.concatenate((out, np.zeros(len(reference) - len(out), dtype=np.int16)))
    return out


async def pesq_scores(seconds: float) -> tuple[list[dict[str, Any]], str]:
    from pesq import pesq

    cases = [(PCMU, 8000, "nb"), (OPUS, 16000, "wb"), (OPUS, 8000, "nb")]
    speech: dict[int, np.ndarray] = {}
    what = ""
    for _, rate, _ in cases:
        speech[rate], what = speech_signal(rate, seconds)
    runs = []
    for codec, rate, mode in cases:
        for loss in (0.0, 0.05):
            sink = MemorySink(rate)
            base = dict(codecs=[codec], srtp=SRTPMode.MANDATORY, ice=False, rtp_timeout=None)
            alice = AudioStream(AudioStreamConfig(**base), source=_ArraySource(speech[rate], rate))
            bob = AudioStream(
                AudioStreamConfig(**base, simulated_loss=loss, loss_seed=11), sink=sink
            )
            a_sdp = OfferAnswer("127.0.0.1", [await alice.prepare()])
            b_sdp = OfferAnswer("127.0.0.1", [await bob.prepare()])
            answer = b_sdp.answer(a_sdp.create_offer().to_bytes()).to_bytes()
            (a_stream,) = a_sdp.receive_answer(answer)
            runs.append((codec, rate, mode, loss, alice, bob, sink, a_stream, b_sdp.streams[0]))
    await asyncio.gather(
        *(s for run in runs for s in (run[4].start(run[7], controlling=True), run[5].start(run[8])))
    )
    await asyncio.sleep(len(speech[8000]) / 8000 + 0.6)
    results = []
    for codec, rate, mode, _loss, alice, bob, sink, _, _ in runs:
        stats = bob.statistics()
        await alice.stop()
        await bob.stop()
        reference = speech[rate]
        degraded = _align(reference, sink.pcm, rate)
        score = float(pesq(rate, reference, degraded, mode))
        results.append(
            {
                "codec": codec.name,
                "mode": f"{mode} {rate // 1000} kHz",
                "loss_percent": round(stats.loss_percent, 1),
                "pesq_mos_lqo": round(score, 2),
            }
        )
    return results, what


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"pinning": pin_to_one_core(), "python": sys.version.split()[0]}
    print(f"# p2psip media benchmark ({report['pinning']}, Python {report['python']})\n")

    loops = 2000 if args.quick else 20000
    stages = stage_costs(loops)
    report["stages_us"] = {name: round(us, 2) for name, us in stages}
    print("## Per-packet cost of each stage (µs per 20 ms packet)\n")
    print(_table(["stage", "µs"], [[name, f"{us:.2f}"] for name, us in stages]))
    print()

    seconds = args.probe_seconds
    probes_all: list[Probe] = []

    def log(probe: Probe) -> None:
        probes_all.append(probe)
        print(
            f"  probe {probe.kind:<16} N={probe.streams:<5} loss={probe.loss_percent:6.3f} %  "
            f"cpu={probe.cpu_percent:5.1f} %  p99 clock lateness={probe.p99_lateness_ms:5.1f} ms",
            flush=True,
        )

    print("## Capacity: largest N with < 0.1 % loss on one core\n")
    if args.quick:
        plans = [
            ("raw asyncio UDP", lambda n: probe_raw(n, seconds), 40, 40, 0),
            ("PCMU SRTP", lambda n: probe_audio(PCMU, n, seconds), 20, 20, 0),
            ("opus SRTP", lambda n: probe_audio(OPUS, n, seconds), 10, 10, 0),
        ]
    else:
        plans = [
            ("raw asyncio UDP", lambda n: probe_raw(n, seconds), 200, 3200, 2),
            ("PCMU SRTP", lambda n: probe_audio(PCMU, n, seconds), 150, 2400, 2),
            ("opus SRTP", lambda n: probe_audio(OPUS, n, seconds), 50, 800, 2),
        ]
    capacity = {}
    for name, run, start, limit, steps in plans:
        best, probes = await find_capacity(run, start, limit, steps, log)
        at_best = [p for p in probes if p.streams == best]
        capacity[name] = {
            "streams": best,
            "cpu_percent": round(at_best[0].cpu_percent, 1) if at_best else None,
            "probes": [
                {
                    "streams": p.streams,
                    "loss_percent": round(p.loss_percent, 4),
                    "cpu_percent": round(p.cpu_percent, 1),
                    "p99_lateness_ms": round(p.p99_lateness_ms, 2),
                }
                for p in probes
            ],
        }
    report["capacity"] = capacity
    print()
    rows = []
    for name, value in capacity.items():
        cpu = value["cpu_percent"]
        rows.append(
            [
                name,
                str(value["streams"]),
                f"{cpu:.0f} %" if cpu is not None else "-",
                str(value["streams"] * 50),
            ]
        )
    print(_table(["kind", "streams (< 0.1 % loss)", "CPU at that N", "packets/s each way"], rows))
    print(
        "\n(a stream sends 50 and receives 50 packets/s; N streams = N/2 calls with both ends "
        f"in this process; probes of {seconds:g} s)\n"
    )

    print("## PESQ of speech through two AudioStreams (SRTP, plain UDP on loopback)\n")
    try:
        pesq_results, what = await pesq_scores(3.0 if args.quick else 8.0)
    except ImportError:
        pesq_results, what = [], "pesq package not installed"
    report["pesq"] = {"signal": what, "results": pesq_results}
    if pesq_results:
        print(
            _table(
                ["codec", "mode", "loss %", "PESQ MOS-LQO"],
                [
                    [r["codec"], r["mode"], f"{r['loss_percent']:.1f}", f"{r['pesq_mos_lqo']:.2f}"]
                    for r in pesq_results
                ],
            )
        )
    print(f"\nsignal: {what}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="seconds, for a smoke test")
    parser.add_argument("--probe-seconds", type=float, default=None, help="length of a probe")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.probe_seconds is None:
        args.probe_seconds = 1.0 if args.quick else 10.0
    report = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
