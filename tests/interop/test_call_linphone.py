"""Calls between a p2psip node and linphonec 5.1 (Debian ``linphone-cli``), both directions,
PCMU in plain RTP and with SDES SRTP mandatory on both sides.

linphonec runs headless with its commands on stdin (a FIFO): ``soundcard use files``, ``play``
a 440 Hz WAV into the call, ``record`` what it receives (notes §4.2). linphone offers opus,
speex, PCMU, PCMA, G729...; our node offers/accepts PCMU only. With ``media_encryption=srtp``
and ``media_encryption_mandatory=1`` linphone offers ``RTP/SAVP`` with four crypto suites
(AES_CM_128/AES_256_CM, HMAC_SHA1_80/32) and refuses plain RTP.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from p2psip.media.aio.stream import AudioStreamConfig
from p2psip.media.audio import ToneSource, WavFileSink
from p2psip.media.offer_answer import SRTPMode
from tests.interop.callpeers import (
    OUR_TONE_HZ,
    PEER_TONE_HZ,
    SETUP_TIMEOUT,
    TALK_SECONDS,
    IncomingCalls,
    Linphonec,
    assert_media,
    assert_wav_tone,
    node_uri,
    p2psip_node,
    talk,
    write_tone_wav,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

SRTP = [pytest.param(False, id="pcmu"), pytest.param(True, id="pcmu-srtp")]
MIN_AUDIO = TALK_SECONDS - 0.8


def _audio(srtp: bool) -> AudioStreamConfig:
    return AudioStreamConfig(
        codecs=("PCMU",), srtp=SRTPMode.MANDATORY if srtp else SRTPMode.OFF, rtp_timeout=None
    )


def _linphonec(tmp_path: Path, process_factory, free_port, srtp: bool) -> Linphonec:  # type: ignore[no-untyped-def]
    tone = write_tone_wav(tmp_path / "tone440-8k.wav", PEER_TONE_HZ, 8000, 10)
    return Linphonec(process_factory, free_port, tmp_path, tone, user="lina", srtp=srtp)


@pytest.mark.parametrize("srtp", SRTP)
async def test_p2psip_calls_linphonec(
    tmp_path: Path, process_factory, free_port, srtp: bool
) -> None:  # type: ignore[no-untyped-def]
    lin = _linphonec(tmp_path, process_factory, free_port, srtp).start(auto_answer=True)
    heard = tmp_path / "p2psip-heard.wav"
    async with p2psip_node("alice", audio=_audio(srtp)) as node:
        sink = WavFileSink(heard, 8000)
        call = await node.call(
            lin.uri, source=ToneSource(OUR_TONE_HZ, 8000, 0.5), sink=sink, timeout=SETUP_TIMEOUT
        )
        await lin.wait_log(r"Media streams established with sip:alice@p2p\.test")
        stats = await talk(call)
        await call.hangup()
        sink.close()
        await lin.wait_log(r"Call \d+ with sip:alice@p2p\.test ended")
    await lin.quit()
    assert_media(stats, codec="PCMU", srtp=srtp)
    assert_wav_tone(heard, PEER_TONE_HZ, min_seconds=MIN_AUDIO, what="p2psip heard")
    assert_wav_tone(lin.record_wav, OUR_TONE_HZ, min_seconds=MIN_AUDIO, what="linphonec heard")


@pytest.mark.parametrize("srtp", SRTP)
async def test_linphonec_calls_p2psip(
    tmp_path: Path, process_factory, free_port, srtp: bool
) -> None:  # type: ignore[no-untyped-def]
    lin = _linphonec(tmp_path, process_factory, free_port, srtp).start(auto_answer=False)
    heard = tmp_path / "p2psip-heard.wav"
    sinks: list[WavFileSink] = []

    def make_sink() -> WavFileSink:
        sinks.append(WavFileSink(heard, 8000))
        return sinks[-1]

    async with p2psip_node(
        "carol",
        audio=_audio(srtp),
        auto_answer=True,
        answer_source=lambda: ToneSource(OUR_TONE_HZ, 8000, 0.5),
        answer_sink=make_sink,
    ) as node:
        incoming = IncomingCalls(node)
        target = node_uri(node, "carol")
        lin.send(f"call {target}")
        call = await incoming.next()
        await lin.wait_log(r"Call \d+ with .*carol@.* connected")
        stats = await talk(call)
        lin.send("terminate")
        ended = await asyncio.wait_for(call.wait_ended(), SETUP_TIMEOUT)
        await lin.wait_log(r"Call \d+ with .*carol@.* ended")
    await lin.quit()
    assert ended.by == "remote", ended  # linphonec's BYE
    assert len(sinks) == 1
    sinks[0].close()
    assert_media(stats, codec="PCMU", srtp=srtp)
    assert_wav_tone(heard, PEER_TONE_HZ, min_seconds=MIN_AUDIO, what="p2psip heard")
    assert_wav_tone(lin.record_wav, OUR_TONE_HZ, min_seconds=MIN_AUDIO, what="linphonec heard")
