"""Codecs (G.711, G.722, Opus), the registry, concealment and the resampler.

G.711 bit-exactness against the ITU vectors is in tests/conformance/test_g711_vectors.py.
G.722 and Opus are lossy: their tests check frequency and level, not bits.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psip.media import codecs
from p2psip.media.audio import dominant_frequency, rms_dbfs
from p2psip.media.codecs import (
    G722,
    OPUS,
    PCMA,
    PCMU,
    Codec,
    CodecError,
    OpusOptions,
    PitchConcealer,
    Resampler,
    UnknownCodecError,
    alaw_decode,
    alaw_encode,
    codec_for_payload_type,
    find_codec,
    opus_packet_samples,
    register_codec,
    registered_codecs,
    resample,
    ulaw_decode,
    ulaw_encode,
)

ALL = [PCMU, PCMA, G722, OPUS]
PITCH_CONCEALED = [PCMU, PCMA, G722]


def tone(freq: float, rate: int, samples: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(samples)
    return np.rint(amplitude * 32767 * np.sin(2 * np.pi * freq * t / rate)).astype(np.int16)


def frames_of(pcm: np.ndarray, n: int) -> list[np.ndarray]:
    return [pcm[i : i + n] for i in range(0, len(pcm) - n + 1, n)]


# --- import and registry ----------------------------------------------------------------------


def test_importing_codecs_does_not_import_pyav() -> None:
    code = (
        "import sys, p2psip.media.codecs as c, p2psip.media.audio;"
        "assert 'av' not in sys.modules, 'av imported';"
        "c.PCMU.encoder(); c.PCMU.decoder();"
        "assert 'av' not in sys.modules, 'av imported by G.711';"
        "c.OPUS.decoder(); assert 'av' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("name", "rate", "channels", "expected"),
    [
        ("PCMU", 8000, None, PCMU),
        ("pcmu", 8000, 1, PCMU),
        ("PcMa", 8000, None, PCMA),
        ("g722", 8000, None, G722),  # RFC 3551 §4.5.2: clock 8000 although audio is 16 kHz
        ("OPUS", 48000, 2, OPUS),
        ("opus", 48000, None, OPUS),  # only one opus registered: the rtpmap's /2 may be absent
    ],
)
def test_find_codec_by_sdp_name_any_case(
    name: str, rate: int, channels: int | None, expected: Codec
) -> None:
    assert find_codec(name, rate, channels) is expected


@pytest.mark.parametrize(
    ("name", "rate", "channels"),
    [("G722", 16000, None), ("PCMU", 16000, None), ("opus", 48000, 1), ("iLBC", 8000, None)],
)
def test_find_codec_unknown(name: str, rate: int, channels: int | None) -> None:
    with pytest.raises(UnknownCodecError, match=name):
        find_codec(name, rate, channels)


def test_codec_descriptions() -> None:
    assert [c.payload_type for c in (PCMU, PCMA, G722)] == [0, 8, 9]
    assert all(c.static for c in (PCMU, PCMA, G722)) and not OPUS.static
    assert (G722.clock_rate, G722.sample_rate) == (8000, 16000)
    assert G722.frame_samples == 320 and G722.rtp_timestamp_step(320) == 160
    assert PCMU.frame_samples == 160 and PCMU.rtp_timestamp_step(160) == 160
    assert OPUS.frame_samples == 960 and OPUS.rtp_timestamp_step(960) == 960
    assert [c.rtpmap for c in ALL] == ["PCMU/8000", "PCMA/8000", "G722/8000", "opus/48000/2"]
    assert codec_for_payload_type(9) is G722 and codec_for_payload_type(111) is None
    assert set(ALL) <= set(registered_codecs())
    assert PCMU.available and G722.available


def test_register_codec_refuses_duplicates_unless_replacing() -> None:
    with pytest.raises(CodecError, match="already registered"):
        register_codec(PCMU)
    register_codec(PCMU, replace=True)
    assert find_codec("PCMU", 8000) is PCMU


@pytest.mark.parametrize("codec", ALL, ids=lambda c: c.name)
@pytest.mark.parametrize(
    "bad",
    [
        [0, 1, 2],
        np.zeros(960, dtype=np.float32),
        np.zeros((960, 3), dtype=np.int16),
        np.zeros(960, dtype=np.int32),
    ],
    ids=["list", "float32", "2-D", "int32"],
)
def test_encoders_refuse_what_is_not_int16_mono(codec: Codec, bad: object) -> None:
    with pytest.raises(CodecError):
        codec.encoder().encode(bad)  # type: ignore[arg-type]


# --- G.711 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encode", "decode"), [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)]
)
def test_g711_error_is_bounded_and_monotone_for_every_input(encode, decode) -> None:  # type: ignore[no-untyped-def]
    x = np.arange(-32768, 32768).astype(np.int16)
    y = decode(encode(x)).astype(np.int64)
    assert np.all(np.diff(y) >= 0)  # companding keeps the order
    # about 6 significant bits: |error| <= |x|/8 + 8 (includes mu-law's clipping at 32124)
    assert np.all(np.abs(y - x) <= np.abs(x.astype(np.int64)) / 8 + 8)


@pytest.mark.parametrize(
    ("encode", "decode", "negative_zero"),
    [(ulaw_encode, ulaw_decode, 0x7F), (alaw_encode, alaw_decode, None)],
)
def test_g711_every_code_survives_decode_then_encode(encode, decode, negative_zero) -> None:  # type: ignore[no-untyped-def]
    codes = bytes(c for c in range(256) if c != negative_zero)
    assert encode(decode(codes)) == codes
    if negative_zero is not None:  # mu-law -0 decodes to 0, which encodes as +0
        assert encode(decode(bytes([negative_zero]))) == b"\xff"


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=400))
def test_g711_decoders_take_any_bytes(payload: bytes) -> None:
    for codec in (PCMU, PCMA):
        pcm = codec.decoder().decode(payload)
        assert pcm.dtype == np.int16 and pcm.shape == (len(payload),)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-32768, 32767), max_size=300))
def test_g711_encode_decode_round_trip_property(values: list[int]) -> None:
    pcm = np.array(values, dtype=np.int16)
    for codec, decode in ((PCMU, ulaw_decode), (PCMA, alaw_decode)):
        payload = codec.encoder().encode(pcm)
        assert len(payload) == len(pcm)
        back = decode(payload).astype(np.int64)
        assert np.all(np.abs(back - pcm) <= np.abs(pcm.astype(np.int64)) / 8 + 8)


# --- every codec: a 1 kHz tone survives --------------------------------------------------------

# stated tolerances: frequency +-10 Hz (the brief); level within 0.5 dB (G.711: quantisation
# only) or 1.5 dB (G.722/Opus: lossy, measured ~0.05 dB at these settings)
LEVEL_TOLERANCE_DB = {"PCMU": 0.5, "PCMA": 0.5, "G722": 1.5, "opus": 1.5}


@pytest.mark.parametrize("codec", ALL, ids=lambda c: c.name)
def test_codec_round_trips_a_1khz_tone(codec: Codec) -> None:
    encoder, decoder = codec.encoder(), codec.decoder()
    n = codec.frame_samples
    signal = tone(1000, codec.sample_rate, 25 * n)
    payloads = [encoder.encode(f) for f in frames_of(signal, n)]
    out = np.concatenate([decoder.decode(p) for p in payloads])
    assert out.dtype == np.int16 and out.ndim == 1 and len(out) == len(signal)
    steady = out[5 * n :]  # after the codec's start-up
    assert abs(dominant_frequency(steady, codec.sample_rate) - 1000) <= 10
    assert abs(rms_dbfs(steady) - rms_dbfs(signal)) <= LEVEL_TOLERANCE_DB[codec.name]
    expected_size = {"PCMU": 160, "PCMA": 160, "G722": 160}.get(codec.name)
    if expected_size:  # constant-rate codecs: 64 kbit/s
        assert {len(p) for p in payloads} == {expected_size}


# --- G.722 ------------------------------------------------------------------------------------


def test_g722_frame_lengths() -> None:
    encoder = G722.encoder(frame_ms=10)
    assert len(encoder.encode(np.zeros(160, np.int16))) == 80
    assert len(encoder.encode(np.zeros(480, np.int16))) == 240  # several frames at once
    with pytest.raises(CodecError, match="160"):
        encoder.encode(np.zeros(100, np.int16))
    with pytest.raises(CodecError):
        G722.encoder(frame_ms=0)


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_g722_decoder_takes_any_bytes(payload: bytes) -> None:
    pcm = G722.decoder().decode(payload)
    assert pcm.dtype == np.int16 and len(pcm) == 2 * len(payload)  # 2 samples per octet


def test_g722_empty_payload_is_refused_and_the_decoder_survives() -> None:
    decoder = G722.decoder()
    with pytest.raises(CodecError, match="empty"):
        decoder.decode(b"")
    assert len(decoder.decode(bytes(160))) == 320


# --- Opus -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packet", "samples"),
    [
        (bytes([0x78]), 960),  # config 15: hybrid FB 20 ms, code 0
        (bytes([0x78 | 1, 0, 0]), 1920),  # code 1: two frames
        (bytes([0xF8 | 3, 3]), 2880),  # config 31 (CELT 20 ms), code 3, 3 frames
        (bytes([0x18]), 2880),  # config 3: SILK NB 60 ms
        (bytes([0x80 | 3, 48]), 5760),  # 48 x 2.5 ms = 120 ms, the maximum
    ],
)
def test_opus_packet_samples_from_toc(packet: bytes, samples: int) -> None:
    assert opus_packet_samples(packet) == samples


@pytest.mark.parametrize(
    "packet", [b"", bytes([0x03]), bytes([0x78 | 3, 0]), bytes([0x18 | 3, 3])], ids=str
)
def test_opus_packet_samples_refuses_malformed(packet: bytes) -> None:
    with pytest.raises(CodecError):
        opus_packet_samples(packet)


def test_opus_stereo_and_bitrate_options() -> None:
    signal = tone(440, 48000, 960 * 30)
    sizes = {}
    for bitrate in (12000, 64000):
        encoder = OPUS.encoder(options=OpusOptions(bitrate=bitrate))
        sizes[bitrate] = np.mean([len(encoder.encode(f)) for f in frames_of(signal, 960)])
    assert sizes[12000] * 8 * 50 < 20000 < sizes[64000] * 8 * 50  # measured bit rates
    stereo = OPUS.encoder(options=OpusOptions(stereo=True))
    decoder = OPUS.decoder()
    packets = [stereo.encode(f) for f in frames_of(signal, 960)]
    assert all(p[0] & 0x04 for p in packets[3:])  # TOC stereo flag (RFC 6716 §3.1)
    out = np.concatenate([decoder.decode(p) for p in packets])
    assert out.ndim == 1 and len(out) == len(signal)  # down-mixed to mono
    assert abs(dominant_frequency(out[4800:], 48000) - 440) <= 10
    left_right = np.stack([signal[:960], np.zeros(960, np.int16)], axis=1)
    assert stereo.encode(left_right)[0] & 0x04  # a real (n, 2) stereo frame


def test_opus_encoder_takes_one_frame_only() -> None:
    encoder = OPUS.encoder()
    for n in (480, 1920, 0):
        with pytest.raises(CodecError, match="960"):
            encoder.encode(np.zeros(n, np.int16))
    ten_ms = OPUS.encoder(options=OpusOptions(frame_ms=10))
    assert opus_packet_samples(ten_ms.encode(np.zeros(480, np.int16))) == 480


def test_opus_options_from_and_to_fmtp() -> None:
    options = OpusOptions.from_fmtp(
        {
            "stereo": "1",
            "useinbandfec": "1",
            "usedtx": "1",
            "maxaveragebitrate": "20000",
            "maxplaybackrate": "16000",
            "ptime": "30",
            "unknown": "x",
        },
        bitrate=64000,
    )
    assert options == OpusOptions(
        stereo=True, bitrate=20000, fec=True, dtx=True, max_playback_rate=16000, frame_ms=20
    )
    assert options.libopus_options()["cutoff"] == "8000"
    assert options.libopus_options()["fec"] == "1" and options.libopus_options()["dtx"] == "1"
    # malformed values are ignored, defaults apply
    lenient = OpusOptions.from_fmtp({"maxaveragebitrate": "lots", "ptime": "-1", "stereo": "yes"})
    assert lenient == OpusOptions()
    fmtp = OpusOptions(stereo=True, fec=True, bitrate=40000).to_fmtp()
    assert fmtp["stereo"] == "1" and fmtp["sprop-stereo"] == "1"
    assert fmtp["useinbandfec"] == "1" and fmtp["maxaveragebitrate"] == "40000"
    # the encoder takes them (FEC/DTX are libopus flags; the stream still decodes)
    encoder = OPUS.encoder(options=OpusOptions(fec=True, dtx=True, packet_loss_percent=10))
    decoder = OPUS.decoder()
    signal = tone(440, 48000, 960 * 10)
    out = np.concatenate([decoder.decode(encoder.encode(f)) for f in frames_of(signal, 960)])
    assert abs(dominant_frequency(out[2880:], 48000) - 440) <= 10


@pytest.mark.parametrize(
    "kwargs",
    [{"bitrate": 1000}, {"frame_ms": 30}, {"packet_loss_percent": 101}, {"application": "x"}],
)
def test_opus_options_refuse_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(CodecError):
        OpusOptions(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_opus_decoder_malformed_packets_raise_only_codec_error(payload: bytes) -> None:
    decoder = OPUS.decoder()
    try:
        pcm = decoder.decode(payload)
    except CodecError:
        pass
    else:
        assert pcm.dtype == np.int16 and pcm.ndim == 1
    # still usable afterwards
    good = OPUS.encoder().encode(tone(440, 48000, 960))
    assert len(decoder.decode(good)) == 960


# --- concealment ------------------------------------------------------------------------------


def _decoder_after_tone(codec: Codec, freq: float = 1000, frames: int = 10):  # type: ignore[no-untyped-def]
    encoder, decoder = codec.encoder(), codec.decoder()
    n = codec.frame_samples
    signal = tone(freq, codec.sample_rate, (frames + 20) * n)
    for f in frames_of(signal, n)[:frames]:
        decoder.decode(encoder.encode(f))
    return encoder, decoder, signal


@pytest.mark.parametrize("codec", PITCH_CONCEALED, ids=lambda c: c.name)
@pytest.mark.parametrize("lost", [1, 2, 3])
def test_pitch_concealment_continues_the_signal(codec: Codec, lost: int) -> None:
    encoder, decoder, signal = _decoder_after_tone(codec)
    n, rate = codec.frame_samples, codec.sample_rate
    concealed = [decoder.conceal() for _ in range(lost)]
    for frame in concealed:
        assert len(frame) == n and rms_dbfs(frame) > -30  # not silent
        assert abs(dominant_frequency(frame, rate) - 1000) <= 10
    # the first 10 ms continue the waveform the decoder would have produced (a second
    # decoder fed the same frames plus the one we lost; the pitch period of 1 kHz is exact)
    twin = codec.decoder()
    twin_encoder = codec.encoder()
    for f in frames_of(signal, n)[:10]:
        twin.decode(twin_encoder.encode(f))
    next_frame = twin.decode(twin_encoder.encode(signal[10 * n : 11 * n]))
    truth = next_frame[: rate // 100].astype(np.float64)
    error = concealed[0][: rate // 100] - truth
    assert 10 * math.log10(np.sum(truth**2) / max(np.sum(error**2), 1e-9)) > 20
    # level: full for 10 ms, then -20 % per 10 ms (G.711 Appendix I)
    levels = [rms_dbfs(f) for f in concealed]
    assert levels == sorted(levels, reverse=True)
    assert abs(levels[0] - rms_dbfs(signal)) < 1.5
    # recovery: the next good frame is cross-faded, no click bigger than the tone's own steps
    recovered = decoder.decode(encoder.encode(signal[(10 + lost) * n : (11 + lost) * n]))
    seam = np.concatenate((concealed[-1][-4:], recovered[:4])).astype(np.int64)
    natural_step = 2 * 0.5 * 32767 * math.sin(math.pi * 1000 / rate)
    assert np.max(np.abs(np.diff(seam))) <= natural_step * 1.1


@pytest.mark.parametrize("codec", PITCH_CONCEALED, ids=lambda c: c.name)
def test_pitch_concealment_fades_to_silence_after_60ms(codec: Codec) -> None:
    _, decoder, _ = _decoder_after_tone(codec, freq=440)
    concealed = [decoder.conceal() for _ in range(6)]  # 120 ms
    levels = [rms_dbfs(f) for f in concealed]
    assert levels[0] > -15 and levels == sorted(levels, reverse=True)
    assert levels[3:] == [-math.inf] * 3  # silent from 60 ms on
    ten_ms = codec.sample_rate // 100
    assert np.all(concealed[2][ten_ms * 2 :] == 0)  # 60 ms reached inside the third frame


def test_concealment_before_anything_was_decoded_is_silence() -> None:
    for codec in ALL:
        out = codec.decoder().conceal()
        assert len(out) == codec.frame_samples and not np.any(out)
    assert len(PCMU.decoder().conceal(80)) == 80


def test_pitch_concealer_custom_lengths_and_errors() -> None:
    concealer = PitchConcealer(8000)
    concealer.good(tone(200, 8000, 400))
    assert len(concealer.conceal(37)) == 37 and concealer.concealing
    assert concealer.conceal(0).shape == (0,)
    with pytest.raises(CodecError):
        concealer.conceal(-1)
    with pytest.raises(CodecError):
        PitchConcealer(0)


def test_opus_uses_the_decoders_own_concealment() -> None:
    _, decoder, _ = _decoder_after_tone(OPUS, freq=1000)
    levels = [rms_dbfs(decoder.conceal()) for _ in range(10)]
    assert all(level > -60 for level in levels[:3])  # lost frames 1-3 are not silent
    assert levels[0] > -20  # first concealed frame close to the tone (-9 dBFS)
    assert levels[9] < levels[0] - 15  # fades over a long burst
    assert len(decoder.conceal(480)) == 480 and len(decoder.conceal(2 * 960)) == 1920


# --- resampling -------------------------------------------------------------------------------

RATE_PAIRS = [
    (8000, 48000),
    (48000, 8000),
    (16000, 48000),
    (48000, 16000),
    (8000, 16000),
    (44100, 16000),
    (16000, 44100),
]


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_resampler_preserves_frequency_and_level(src: int, dst: int) -> None:
    signal = tone(1000, src, src // 2)
    out = resample(signal, src, dst)
    assert len(out) == dst // 2
    assert abs(dominant_frequency(out[100:-100], dst) - 1000) <= 2
    assert abs(rms_dbfs(out[100:-100]) - rms_dbfs(signal)) < 0.1
    # aligned: compensates the filter delay
    expected = tone(1000, dst, dst // 2).astype(np.int64)
    assert np.max(np.abs(out[100:-100] - expected[100:-100])) < 0.01 * 32767


@pytest.mark.parametrize(("src", "dst"), [(48000, 8000), (44100, 16000), (48000, 16000)])
def test_resampler_rejects_what_would_alias(src: int, dst: int) -> None:
    above_nyquist = 0.7 * dst  # between dst/2 and src/2
    out = resample(tone(above_nyquist, src, src // 4), src, dst)
    assert rms_dbfs(out[50:-50]) < rms_dbfs(tone(1000, dst, dst // 4)) - 60


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 700), min_size=1, max_size=12), st.sampled_from(RATE_PAIRS))
def test_resampler_streaming_is_independent_of_chunking(
    sizes: list[int], rates: tuple[int, int]
) -> None:
    signal = tone(700, rates[0], sum(sizes))
    whole = Resampler(*rates).process(signal)
    chunked, pos, r = [], 0, Resampler(*rates)
    for size in sizes:
        chunked.append(r.process(signal[pos : pos + size]))
        pos += size
    assert np.array_equal(np.concatenate(chunked), whole)


def test_resampler_same_rate_and_errors() -> None:
    signal = tone(440, 16000, 320)
    assert np.array_equal(Resampler(16000, 16000).process(signal), signal)
    assert Resampler(16000, 16000).delay == 0
    with pytest.raises(CodecError):
        Resampler(0, 8000)
    with pytest.raises(CodecError):
        Resampler(8000, 16000).process(signal.astype(np.float64))  # type: ignore[arg-type]


def test_codecs_module_exports() -> None:
    assert set(codecs.__all__) <= set(dir(codecs))
