"""Calls between a p2psip node and baresip 1.0 (Debian ``baresip-core``), both directions.

Matrix: PCMU, G.722 and Opus in plain RTP; PCMU and Opus with SDES SRTP mandatory on both
sides (baresip ``mediaenc=srtp-mand``: ``RTP/SAVP``, AES_CM_128_HMAC_SHA1_80). Our side offers
or accepts only the codec under test; baresip offers all four it has (PCMU, PCMA, G722, opus).

Audio: baresip plays a 440 Hz WAV (``aufile``) and records what it decodes (``sndfile``:
``dump-*-dec.wav``); p2psip sends 1000 Hz and records into a :class:`WavFileSink`. Each
recording must hold the other side's tone. ICE: our node offers ICE candidates (loopback host
candidate); baresip runs without the ICE module (its ICE ignores loopback addresses, notes §3.3),
so our side must fall back to the plain ``c=``/``m=`` address: the stream's transport is
``udp``.
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
    Baresip,
    IncomingCalls,
    assert_media,
    assert_wav_tone,
    node_uri,
    p2psip_node,
    talk,
    write_tone_wav,
)

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

# (our codec name, baresip's decoder line, SRTP)
CASES = [
    pytest.param("PCMU", "PCMU 8000Hz 1ch", False, id="pcmu"),
    pytest.param("G722", "G722 16000Hz 1ch", False, id="g722"),
    pytest.param("opus", "opus 48000Hz 2ch", False, id="opus"),
    pytest.param("PCMU", "PCMU 8000Hz 1ch", True, id="pcmu-srtp"),
    pytest.param("opus", "opus 48000Hz 2ch", True, id="opus-srtp"),
]
MIN_AUDIO = TALK_SECONDS - 0.8  # seconds of the far end's tone each recording must hold


def _audio(codec: str, srtp: bool) -> AudioStreamConfig:
    return AudioStreamConfig(
        codecs=(codec,),
        srtp=SRTPMode.MANDATORY if srtp else SRTPMode.OFF,
        rtp_timeout=None,
    )


def _baresip(tmp_path: Path, process_factory, free_port, srtp: bool) -> Baresip:  # type: ignore[no-untyped-def]
    tone = write_tone_wav(tmp_path / "tone440-48k.wav", PEER_TONE_HZ, 48000, 10)
    params = ";answermode=auto" + (";mediaenc=srtp-mand" if srtp else "")
    return Baresip(process_factory, free_port, tmp_path, tone, user="bob", params=params).start()


def _check_baresip_side(baresip: Baresip, decoder: str, srtp: bool) -> None:
    log = baresip.log()
    assert f"Set audio decoder: {decoder}" in log, log[-3000:]
    if srtp:
        assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in log, log[-3000:]
    else:
        assert "SRTP is Enabled" not in log
    assert_wav_tone(
        baresip.received_wav(), OUR_TONE_HZ, min_seconds=MIN_AUDIO, what="baresip heard"
    )


@pytest.mark.parametrize(("codec", "decoder", "srtp"), CASES)
async def test_p2psip_calls_baresip(
    tmp_path: Path, process_factory, free_port, codec: str, decoder: str, srtp: bool
) -> None:  # type: ignore[no-untyped-def]
    baresip = _baresip(tmp_path, process_factory, free_port, srtp)
    heard = tmp_path / "p2psip-heard.wav"
    async with p2psip_node("alice", audio=_audio(codec, srtp)) as node:
        sink = WavFileSink(heard, 16000)
        call = await node.call(
            baresip.uri,
            source=ToneSource(OUR_TONE_HZ, 48000, 0.5),
            sink=sink,
            timeout=SETUP_TIMEOUT,
        )
        stats = await talk(call)
        await call.hangup()
        sink.close()
        await baresip.wait_closed()
    assert stats.transport == "udp", stats  # ICE offered, the peer has none: plain RTP
    assert_media(stats, codec=codec, srtp=srtp)
    assert_wav_tone(heard, PEER_TONE_HZ, min_seconds=MIN_AUDIO, what="p2psip heard")
    _check_baresip_side(baresip, decoder, srtp)


@pytest.mark.parametrize(("codec", "decoder", "srtp"), CASES)
async def test_baresip_calls_p2psip(
    tmp_path: Path, process_factory, free_port, codec: str, decoder: str, srtp: bool
) -> None:  # type: ignore[no-untyped-def]
    baresip = _baresip(tmp_path, process_factory, free_port, srtp)
    heard = tmp_path / "p2psip-heard.wav"
    sinks: list[WavFileSink] = []

    def make_sink() -> WavFileSink:
        sinks.append(WavFileSink(heard, 16000))
        return sinks[-1]

    async with p2psip_node(
        "carol",
        audio=_audio(codec, srtp),
        auto_answer=True,
        answer_source=lambda: ToneSource(OUR_TONE_HZ, 48000, 0.5),
        answer_sink=make_sink,
    ) as node:
        incoming = IncomingCalls(node)
        await baresip.acommand("dial", node_uri(node, "carol"))
        call = await incoming.next()
        stats = await talk(call)
        await baresip.acommand("hangup")
        ended = await asyncio.wait_for(call.wait_ended(), SETUP_TIMEOUT)
        await baresip.wait_closed()
    assert ended.by == "remote", ended  # baresip's BYE
    assert len(sinks) == 1
    sinks[0].close()
    assert "sip:bob@" in call.session.remote_uri, call.session.remote_uri
    assert_media(stats, codec=codec, srtp=srtp)
    assert_wav_tone(heard, PEER_TONE_HZ, min_seconds=MIN_AUDIO, what="p2psip heard")
    _check_baresip_side(baresip, decoder, srtp)
