"""G.711 mu-law and A-law against the ITU-T G.191 STL reference vectors, bit for bit.

``sweep.src`` holds every 16-bit value once, so encoding it checks all 65536 inputs of each
law; decoding the reference codes checks all 256 codes. Origins: ``vectors/g711/SOURCE.md``.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from p2psip.media.codecs import (
    PCMA,
    PCMU,
    alaw_decode,
    alaw_encode,
    ulaw_decode,
    ulaw_encode,
)

VECTORS = Path(__file__).parent / "vectors" / "g711"
STL = VECTORS / "itu-t-stl-g191"

# the "CRC32-LE" column of the STL README (zlib CRC-32 of each little-endian file)
CRC32_LE = {
    "sweep-r.a": 0x74719FE4,
    "sweep-r.a-a": 0xABCEAA69,
    "sweep-r.rea": 0xABCEAA69,
    "sweep-r.reu": 0x63641C01,
    "sweep-r.u": 0xCD170E15,
    "sweep-r.u-u": 0x63641C01,
    "sweep.src": 0xC8BA7682,
}

LAWS = {
    # law: (encode, decode, codec, encoded file, decoded-codes file, encoded+decoded file)
    "mu": (ulaw_encode, ulaw_decode, PCMU, "sweep-r.u", "sweep-r.u-u", "sweep-r.reu"),
    "A": (alaw_encode, alaw_decode, PCMA, "sweep-r.a", "sweep-r.a-a", "sweep-r.rea"),
}


def _read(name: str) -> np.ndarray:
    return np.frombuffer((STL / name).read_bytes(), dtype="<i2").astype(np.int16)


@pytest.mark.parametrize("name", sorted(CRC32_LE))
def test_vector_files_are_the_published_ones(name: str) -> None:
    data = (STL / name).read_bytes()
    assert len(data) == 131072
    assert zlib.crc32(data) == CRC32_LE[name]
    assert f"{CRC32_LE[name]:08X}" in (STL / "README.md").read_text(encoding="latin-1")


def test_the_input_sweep_covers_every_16_bit_value() -> None:
    source = _read("sweep.src")
    assert np.array_equal(np.sort(source), np.arange(-32768, 32768, dtype=np.int16))


@pytest.mark.parametrize("law", LAWS)
def test_encoder_is_bit_exact(law: str) -> None:
    encode, _, _, encoded_file, _, _ = LAWS[law]
    reference = _read(encoded_file)
    assert reference.min() >= 0 and reference.max() <= 255  # one code per 16-bit word
    codes = np.frombuffer(encode(_read("sweep.src")), dtype=np.uint8)
    mismatches = np.flatnonzero(codes != reference.astype(np.uint8))
    assert mismatches.size == 0, f"first mismatches at samples {mismatches[:5]}"


@pytest.mark.parametrize("law", LAWS)
def test_decoder_is_bit_exact(law: str) -> None:
    _, decode, _, encoded_file, decoded_file, _ = LAWS[law]
    codes = _read(encoded_file).astype(np.uint8).tobytes()
    assert np.array_equal(decode(codes), _read(decoded_file))


@pytest.mark.parametrize("law", LAWS)
def test_encode_then_decode_is_bit_exact(law: str) -> None:
    encode, decode, _, _, _, both_file = LAWS[law]
    assert np.array_equal(decode(encode(_read("sweep.src"))), _read(both_file))


@pytest.mark.parametrize("law", LAWS)
def test_codec_objects_match_the_reference_frame_by_frame(law: str) -> None:
    """The RTP-facing Encoder/Decoder give the same bits in 20 ms frames."""
    _, _, codec, encoded_file, decoded_file, _ = LAWS[law]
    encoder, decoder = codec.encoder(), codec.decoder()
    source = _read("sweep.src")
    reference_codes = _read(encoded_file).astype(np.uint8)
    reference_pcm = _read(decoded_file)
    for start in range(0, len(source), 160):
        payload = encoder.encode(source[start : start + 160])
        assert payload == reference_codes[start : start + 160].tobytes()
        assert np.array_equal(decoder.decode(payload), reference_pcm[start : start + 160])


@pytest.mark.parametrize(
    ("law", "table"), [("mu", "g711_ulaw_table.tsv"), ("A", "g711_alaw_table.tsv")]
)
def test_all_256_codes_decode_as_in_the_derived_table(law: str, table: str) -> None:
    _, decode, _, _, _, _ = LAWS[law]
    rows = [
        line.split("\t")
        for line in (VECTORS / table).read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#") and not line.startswith("code_hex")
    ]
    assert len(rows) == 256
    codes = bytes(int(row[1]) for row in rows)
    expected = np.array([int(row[2]) for row in rows], dtype=np.int16)
    assert np.array_equal(decode(codes), expected)
    encode = LAWS[law][0]
    for row in rows:  # the observed input range of each code encodes to that code
        low, high = int(row[3]), int(row[4])
        pcm = np.array([low, high], dtype=np.int16)
        assert encode(pcm) == bytes([int(row[1])] * 2)
