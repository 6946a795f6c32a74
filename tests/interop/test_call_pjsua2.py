"""Calls between a p2psip node and PJSIP 2.15 (``pjsua2-python`` wheel), both directions, with
SDES SRTP mandatory on both sides (``PJMEDIA_SRTP_MANDATORY``: ``RTP/SAVP``).

pjsua2 runs in a child process (``pjsua2_peer.py``: null sound device, a 440 Hz WAV played
into the call, the received audio recorded by ``AudioMediaRecorder``). PJSIP offers speex,
iLBC, GSM, PCMU, PCMA, G722... (no opus); our node offers/accepts PCMU.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from p2psip.media.aio.stream import AudioStreamConfig
from p2psip.media.audio import ToneSource, WavFileSink
from p2psip.media.offer_answer import SRTPMode
from tests.interop.callpeers import (
    HOST,
    OUR_TONE_HZ,
    PEER_TONE_HZ,
    PJSUA2_PEER,
    SETUP_TIMEOUT,
    TALK_SECONDS,
    IncomingCalls,
    assert_media,
    assert_wav_tone,
    node_uri,
    p2psip_node,
    require_pjsua2,
    talk,
    write_tone_wav,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

AUDIO = AudioStreamConfig(codecs=("PCMU",), srtp=SRTPMode.MANDATORY, rtp_timeout=None)
MIN_AUDIO = TALK_SECONDS - 0.8


def _peer(tmp_path: Path, process_factory, free_port, mode: str, *args: str):  # type: ignore[no-untyped-def]
    python = require_pjsua2()
    tone = write_tone_wav(tmp_path / "tone440-8k.wav", PEER_TONE_HZ, 8000, 10)
    port = free_port("udp")
    record = tmp_path / "pjsua2-heard.wav"
    argv = [python, str(PJSUA2_PEER), mode, "--ip", HOST, "--port", str(port)]
    argv += ["--play", str(tone), "--record", str(record), "--srtp", *args]
    peer = process_factory(argv, name=f"pjsua2-{mode}", cwd=tmp_path)
    peer.wait_for_log(r"^READY", timeout=20)
    return peer, port, record


async def test_p2psip_calls_pjsua2(tmp_path: Path, process_factory, free_port) -> None:  # type: ignore[no-untyped-def]
    peer, port, record = _peer(tmp_path, process_factory, free_port, "uas", "--secs", "30")
    heard = tmp_path / "p2psip-heard.wav"
    async with p2psip_node("alice", audio=AUDIO) as node:
        sink = WavFileSink(heard, 16000)
        call = await node.call(
            f"sip:pj@{HOST}:{port}",
            source=ToneSource(OUR_TONE_HZ, 16000, 0.5),
            sink=sink,
            timeout=SETUP_TIMEOUT,
        )
        stats = await talk(call)
        await call.hangup()
        sink.close()
        await asyncio.to_thread(peer.wait, 15)  # the uas exits once the call is over
    log = peer.log_text()
    assert peer.returncode == 0 and "DONE" in log, log[-2000:]
    assert "MEDIA codec=PCMU/8000 srtp=1" in log, log[-2000:]
    assert_media(stats, codec="PCMU", srtp=True)
    assert_wav_tone(heard, PEER_TONE_HZ, min_seconds=MIN_AUDIO, what="p2psip heard")
    assert_wav_tone(record, OUR_TONE_HZ, min_seconds=MIN_AUDIO, what="pjsua2 heard")


async def test_pjsua2_calls_p2psip(tmp_path: Path, process_factory, free_port) -> None:  # type: ignore[no-untyped-def]
    heard = tmp_path / "p2psip-heard.wav"
    sinks: list[WavFileSink] = []

    def make_sink() -> WavFileSink:
        sinks.append(WavFileSink(heard, 16000))
        return sinks[-1]

    async with p2psip_node(
        "carol",
        audio=AUDIO,
        auto_answer=True,
        answer_source=lambda: ToneSource(OUR_TONE_HZ, 16000, 0.5),
        answer_sink=make_sink,
    ) as node:
        incoming = IncomingCalls(node)
        target = node_uri(node, "carol")
        # the uac hangs up TALK_SECONDS + 0.5 s after the call is confirmed
        secs = str(TALK_SECONDS + 0.5)
        peer, _, record = await asyncio.to_thread(
            _peer, tmp_path, process_factory, free_port, "uac", "--call", target, "--secs", secs
        )
        call = await incoming.next()
        stats = await talk(call)
        ended = await asyncio.wait_for(call.wait_ended(), SETUP_TIMEOUT)
        await asyncio.to_thread(peer.wait, 15)
    log = peer.log_text()
    assert peer.returncode == 0 and "DONE" in log, log[-2000:]
    assert "MEDIA codec=PCMU/8000 srtp=1" in log, log[-2000:]
    assert ended.by == "remote", ended  # pjsua2's BYE
    assert len(sinks) == 1
    sinks[0].close()
    assert_media(stats, codec="PCMU", srtp=True)
    assert_wav_tone(heard, PEER_TONE_HZ, min_seconds=MIN_AUDIO, what="p2psip heard")
    assert_wav_tone(record, OUR_TONE_HZ, min_seconds=MIN_AUDIO, what="pjsua2 heard")
