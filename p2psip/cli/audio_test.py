"""``p2psip audio-test``: two audio streams on loopback, the way a user checks a codec or device.

Alice and Bob are two :class:`~p2psip.media.aio.stream.AudioStream` s in this process,
negotiated by a real SDP offer/answer (RFC 3264) and connected through ICE on 127.0.0.1 with
SRTP (SDES keys) unless ``--no-srtp``. Alice sends a tone (1 kHz by default) or a WAV file; Bob
receives, optionally records to a WAV file, and the command prints what Bob measured: loss,
jitter, latency, concealed frames, and for a tone the received dominant frequency and level.
``--loss`` drops that share of packets at Bob's receiver (seeded), to hear concealment at work.

No sound card is needed and nothing is read from stdin. Ctrl-C stops the test cleanly: the
recording is closed (a valid WAV) before the command exits with status 130.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from typing import Any

import numpy as np

from p2psip.errors import P2PSIPError
from p2psip.media.aio.stream import AudioStream, AudioStreamConfig, resolve_codecs
from p2psip.media.audio import (
    AudioError,
    AudioSource,
    MemorySink,
    ToneSource,
    WavFileSink,
    WavFileSource,
    dominant_frequency,
    rms_dbfs,
)
from p2psip.media.codecs import PCM
from p2psip.media.offer_answer import OfferAnswer, SRTPMode

__all__ = ["AudioTestError", "TeeSink", "add_arguments", "analyse", "run", "run_test"]

CODECS = ("pcmu", "pcma", "g722", "opus")


class AudioTestError(P2PSIPError):
    """Bad options for ``audio-test``."""


class TeeSink:
    """A sink that writes every frame to several sinks (recording + analysis)."""

    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks
        self.sample_rate = sinks[0].sample_rate

    def write(self, pcm: PCM) -> None:
        """Write ``pcm`` to every sink."""
        for sink in self.sinks:
            sink.write(pcm)

    def close(self) -> None:
        """Close every sink."""
        for sink in self.sinks:
            sink.close()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``p2psip audio-test``."""
    parser.add_argument("--codec", choices=CODECS, default="pcmu", help="codec (default pcmu)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--tone", type=float, metavar="HZ", help="send a tone (default 1000 Hz)")
    source.add_argument("--play", metavar="FILE", help="send a WAV file (looped)")
    parser.add_argument(
        "--duration", type=float, default=3.0, metavar="S", help="seconds (default 3)"
    )
    parser.add_argument("--record", metavar="FILE", help="write the received audio to a WAV file")
    parser.add_argument(
        "--loss", type=float, default=0.0, metavar="PERCENT", help="drop this share at the receiver"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulated loss")
    parser.add_argument("--no-srtp", action="store_true", help="plain RTP instead of SRTP")
    parser.add_argument("--no-ice", action="store_true", help="plain UDP instead of ICE")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def analyse(pcm: PCM, rate: int, frame_ms: int = 20) -> dict[str, Any]:
    """Received audio figures: duration, level, dominant frequency, silent holes.

    The leading silence (before the first packet was played) is not counted. A *hole* is a run
    of 10 ms blocks whose RMS is 40 dB below the signal's median block level.
    """
    block = rate // 100
    blocks = len(pcm) // block
    result: dict[str, Any] = {
        "received_seconds": round(len(pcm) / rate, 3),
        "dominant_hz": None,
        "level_dbfs": None,
        "audible_seconds": 0.0,
        "longest_hole_ms": 0.0,
    }
    if blocks == 0:
        return result
    x = pcm[: blocks * block].astype(np.float64).reshape(blocks, block)
    energy = np.sqrt(np.mean(x * x, axis=1))
    loud = energy > 32768 * 10 ** (-60 / 20)
    if not loud.any():
        return result
    first = int(np.argmax(loud))
    last = blocks - int(np.argmax(loud[::-1]))
    active = energy[first:last]
    reference = float(np.median(active))
    quiet = active < reference * 10 ** (-40 / 20)
    longest = run = 0
    for q in quiet:
        run = run + 1 if q else 0
        longest = max(longest, run)
    signal = pcm[first * block : last * block]
    result.update(
        dominant_hz=round(dominant_frequency(signal, rate), 1) if len(signal) >= 4 else None,
        level_dbfs=round(rms_dbfs(signal), 2),
        audible_seconds=round(float(np.count_nonzero(~quiet)) / 100, 3),
        longest_hole_ms=float(longest * 10),
    )
    return result


def _finite(value: float | None, digits: int = 2) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


async def run_test(args: argparse.Namespace) -> dict[str, Any]:
    """Run the test and return the report (what ``--json`` prints)."""
    if args.duration <= 0:
        raise AudioTestError("--duration must be positive")
    if not 0 <= args.loss < 100:
        raise AudioTestError("--loss must be in [0, 100)")
    (codec,) = resolve_codecs([args.codec])
    rate = codec.sample_rate
    tone = args.tone if args.tone is not None else (None if args.play else 1000.0)
    source: AudioSource
    if args.play:
        source = WavFileSource(args.play, rate, loop=True)
    else:
        assert tone is not None
        if not 0 < tone < rate / 2:
            raise AudioTestError(f"--tone must be between 0 and {rate // 2} Hz for {codec.name}")
        source = ToneSource(tone, rate, 0.5)
    memory = MemorySink(rate)
    recording = WavFileSink(args.record, rate) if args.record else None
    sink = TeeSink(memory, recording) if recording is not None else memory
    common: dict[str, Any] = {
        "codecs": [codec],
        "srtp": SRTPMode.OFF if args.no_srtp else SRTPMode.MANDATORY,
        "ice": not args.no_ice,
        "host_addresses": ["127.0.0.1"],
        "address": "127.0.0.1",
        "rtcp_interval": 0.5,
        "rtp_timeout": None,
    }
    alice = AudioStream(AudioStreamConfig(**common), source=source)
    bob = AudioStream(
        AudioStreamConfig(**common, simulated_loss=args.loss / 100, loss_seed=args.seed),
        sink=sink,
    )
    try:
        alice_sdp = OfferAnswer("127.0.0.1", [await alice.prepare()], username="alice")
        bob_sdp = OfferAnswer("127.0.0.1", [await bob.prepare()], username="bob")
        offer = alice_sdp.create_offer().to_bytes()
        answer = bob_sdp.answer(offer).to_bytes()
        (alice_stream,) = alice_sdp.receive_answer(answer)
        (bob_stream,) = bob_sdp.streams
        await asyncio.gather(
            alice.start(alice_stream, controlling=True),
            bob.start(bob_stream, controlling=False),
        )
        await asyncio.sleep(args.duration)
        sent = alice.statistics()
        received = bob.statistics()
    finally:
        await alice.stop()
        await bob.stop()
        sink.close()
        if isinstance(source, WavFileSource):
            source.close()
    audio = analyse(memory.pcm, rate)
    return {
        "codec": received.codec,
        "srtp": received.srtp,
        "srtp_suite": received.srtp_suite,
        "transport": received.transport,
        "duration_s": args.duration,
        "source": f"wav:{args.play}" if args.play else f"tone:{tone:g}Hz",
        "packets_sent": sent.packets_sent,
        "packets_received": received.packets_received,
        "packets_lost": received.packets_lost,
        "loss_percent": round(received.loss_percent, 2),
        "simulated_loss_percent": args.loss,
        "simulated_drops": received.dropped.simulated_loss,
        "jitter_ms": round(received.jitter_ms, 2),
        "rtt_ms": _finite(received.rtt_ms),
        "latency_ms": round(received.latency_ms, 1),
        "jitter_buffer_ms": round(received.jitter_buffer_delay_ms, 1),
        "concealed_frames": received.concealed_frames,
        "late_packets": received.late_packets,
        "dropped": received.dropped.dropped,
        "recording": args.record,
        **audio,
    }


def _print_report(report: dict[str, Any]) -> None:
    lines = [
        f"codec        {report['codec']}  srtp={'on' if report['srtp'] else 'off'}"
        f"{' (' + report['srtp_suite'] + ')' if report['srtp_suite'] else ''}"
        f"  transport={report['transport']}",
        f"source       {report['source']}  duration={report['duration_s']:g} s",
        f"packets      sent={report['packets_sent']} received={report['packets_received']} "
        f"lost={report['packets_lost']} ({report['loss_percent']:.2f} %)",
        f"jitter       {report['jitter_ms']:.2f} ms   rtt "
        + (f"{report['rtt_ms']:.2f} ms" if report["rtt_ms"] is not None else "n/a"),
        f"latency      ~{report['latency_ms']:.0f} ms "
        f"(jitter buffer {report['jitter_buffer_ms']:.0f} ms)",
        f"concealed    {report['concealed_frames']} frames  late={report['late_packets']}",
    ]
    if report["dominant_hz"] is not None:
        lines.append(
            f"received     {report['dominant_hz']:.1f} Hz at {report['level_dbfs']:.1f} dBFS, "
            f"{report['audible_seconds']:.2f} s audible, longest hole "
            f"{report['longest_hole_ms']:.0f} ms"
        )
    else:
        lines.append("received     silence")
    if report["recording"]:
        lines.append(f"recorded     {report['recording']}")
    print("\n".join(lines))


async def run(args: argparse.Namespace) -> int:
    """Entry point of ``p2psip audio-test``."""
    try:
        report = await run_test(args)
    except AudioError as exc:
        raise AudioTestError(str(exc)) from None
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(report)
    sys.stdout.flush()
    return 0
