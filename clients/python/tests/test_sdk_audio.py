"""G.711, resampling, downmix and WAV reading of the SDK (pure Python, no numpy)."""

from __future__ import annotations

import itertools
import math
import struct
import warnings
from array import array
from pathlib import Path

import pytest
from sdk_fake_gateway import dominant_frequency, pcm16, rms, tone, ulaw_to_linear
from voicegw_client import audio

ALL_SAMPLES = pcm16(list(range(-32768, 32768)))
ALL_CODES = bytes(range(256))


def samples(data: bytes) -> list[int]:
    return list(array("h", data))


def goertzel_power(x: list[int], rate: int, freq: float) -> float:
    """Power of one frequency: checks where a tone's energy went without an FFT."""
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for v in x:
        s1, s2 = v + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


# --- G.711 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xFF, 0), (0x7F, 0), (0x00, -32124), (0x80, 32124), (0xFE, 8), (0x7E, -8), (0xEF, 132)],
)
def test_ulaw_known_decodes(code: int, value: int) -> None:
    assert samples(audio.ulaw_decode(bytes([code]))) == [value]


@pytest.mark.parametrize(
    ("code", "value"),
    [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256), (0xD4, 24), (0xC5, 264)],
)
def test_alaw_known_decodes(code: int, value: int) -> None:
    assert samples(audio.alaw_decode(bytes([code]))) == [value]


@pytest.mark.parametrize(
    ("value", "ulaw", "alaw"),
    [(0, 0xFF, 0xD5), (-8, 0x7E, 0x55), (32767, 0x80, 0xAA), (-32768, 0x00, 0x2A), (8, 0xFE, 0xD5)],
)
def test_known_encodes(value: int, ulaw: int, alaw: int) -> None:
    assert audio.ulaw_encode(pcm16([value])) == bytes([ulaw])
    assert audio.alaw_encode(pcm16([value])) == bytes([alaw])


def test_ulaw_round_trip_of_all_codes() -> None:
    back = audio.ulaw_encode(audio.ulaw_decode(ALL_CODES))
    # Negative zero (0x7F) decodes to 0, which encodes as positive zero; all else is exact.
    assert back == bytes(0xFF if c == 0x7F else c for c in ALL_CODES)


def test_alaw_round_trip_of_all_codes() -> None:
    assert audio.alaw_encode(audio.alaw_decode(ALL_CODES)) == ALL_CODES


def test_ulaw_decoding_matches_the_standard_formula() -> None:
    assert samples(audio.ulaw_decode(ALL_CODES)) == [ulaw_to_linear(c) for c in ALL_CODES]


@pytest.mark.parametrize("law", ["pcmu", "pcma"])
def test_quantisation_error_is_logarithmic(law: str) -> None:
    decoded = samples(audio.decode(audio.encode(ALL_SAMPLES, law), law))
    for x, y in zip(range(-32768, 32768), decoded, strict=True):
        if abs(x) <= 32000:
            # Half a step of the sample's segment: about 4% of the magnitude at most, which is
            # what makes G.711 logarithmic; near zero the steps are a few units.
            assert abs(x - y) <= max(20, abs(x) * 0.04), (law, x, y)


@pytest.mark.parametrize("law", ["pcmu", "pcma"])
def test_encoding_is_monotonic(law: str) -> None:
    decoded = samples(audio.decode(audio.encode(ALL_SAMPLES, law), law))
    assert all(a <= b for a, b in itertools.pairwise(decoded))


def test_matches_the_stdlib_reference_when_available() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # removed in Python 3.13
    assert audio.ulaw_encode(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES, 2)
    assert audio.alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES, 2)
    assert audio.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert audio.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_encode_decode_dispatch() -> None:
    pcm = pcm16([0, 1000, -1000])
    assert audio.encode(pcm, "linear16") == pcm
    assert audio.decode(pcm, "linear16") == pcm
    assert audio.encode(pcm, "pcmu") == audio.ulaw_encode(pcm)
    assert audio.decode(b"\xff", "pcmu") == pcm16([0])
    assert audio.bytes_per_sample("pcma") == 1
    with pytest.raises(audio.AudioError):
        audio.encode(pcm, "opus")
    with pytest.raises(audio.AudioError):
        audio.decode(b"\x00\x01\x02", "linear16")


# --- resampling and channels -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(22050, 8000), (8000, 16000), (44100, 16000), (48000, 24000)]
)
def test_resampling_keeps_a_440_hz_tone(in_rate: int, out_rate: int) -> None:
    out = samples(audio.resample(pcm16(tone(440, 500, in_rate)), in_rate, out_rate))
    assert abs(len(out) - out_rate // 2) <= 1
    middle = out[len(out) // 5 : -len(out) // 5]  # skip the filter's edges
    assert dominant_frequency(middle, out_rate) == pytest.approx(440, abs=10)
    assert rms(middle) == pytest.approx(8000 / math.sqrt(2), rel=0.02)  # passband is flat


@pytest.mark.parametrize("freq", [4200, 5000, 7000])
def test_downsampling_rejects_tones_above_the_new_nyquist(freq: int) -> None:
    out = samples(audio.resample(pcm16(tone(freq, 500, 22050)), 22050, 8000))
    middle = out[len(out) // 5 : -len(out) // 5]
    # Without a low-pass, 5 kHz would fold back to 3 kHz at full strength.
    assert rms(middle) < 8000 / math.sqrt(2) / 100  # at least 40 dB down
    alias = 8000 - freq
    in_band = samples(audio.resample(pcm16(tone(alias, 500, 22050)), 22050, 8000))
    assert goertzel_power(middle, 8000, alias) < goertzel_power(in_band, 8000, alias) * 1e-4


def test_resampling_passes_silence_and_same_rate() -> None:
    assert audio.resample(bytes(2000), 22050, 8000) == bytes(2 * 363)
    pcm = pcm16(tone(440, 20, 16000))
    assert audio.resample(pcm, 16000, 16000) == pcm
    assert audio.resample(b"", 44100, 8000) == b""


def test_stereo_downmix_averages_channels() -> None:
    stereo = pcm16([1000, 3000, -2000, 0, 32767, 32767])
    assert samples(audio.downmix(stereo, 2)) == [2000, -1000, 32767]
    assert samples(audio.downmix(pcm16([3, 6, 9]), 3)) == [6]


# --- WAV ---------------------------------------------------------------------------------------


def riff(
    fmt_tag: int, channels: int, rate: int, bits: int, data: bytes, ext: bool = False
) -> bytes:
    align = channels * bits // 8
    if ext:  # WAVE_FORMAT_EXTENSIBLE with the real tag at the start of the sub-format GUID
        fmt = struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * align, align, bits)
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", fmt_tag) + bytes(14)
    else:
        fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * align, align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # an odd-sized chunk to skip
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_wav_round_trip(tmp_path: Path) -> None:
    pcm = pcm16(tone(440, 100, 16000))
    audio.write_wav(tmp_path / "a.wav", pcm, 16000)
    assert audio.read_wav(tmp_path / "a.wav") == (pcm, 16000)


@pytest.mark.parametrize(
    ("tag", "bits", "ext", "data", "expected"),
    [
        (1, 8, False, bytes([0x80, 0x80, 0xC0, 0xA0]), 12288),  # unsigned 8-bit
        (1, 16, True, struct.pack("<4h", 0, 0, 16384, 8192), 12288),
        (1, 24, True, bytes(6) + b"\x00\x00\x40\x00\x00\x20", 12288),
        (1, 32, False, struct.pack("<4i", 0, 0, 0x40000000, 0x20000000), 12288),
        (3, 32, True, struct.pack("<4f", 0.0, 0.0, 0.5, 0.25), 12288),
        (7, 8, False, bytes([0xFF, 0xFF, 0x80, 0xFF]), 32124 // 2),  # mu-law
    ],
)
def test_reads_other_sample_formats_as_pcm16_mono(
    tmp_path: Path, tag: int, bits: int, ext: bool, data: bytes, expected: int
) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(riff(tag, 2, 11025, bits, data, ext))
    pcm, rate = audio.read_wav(path)
    assert rate == 11025
    assert samples(pcm) == [0, expected]


def test_reads_24_bit_values(tmp_path: Path) -> None:
    frames = b"".join(v.to_bytes(3, "little", signed=True) for v in (0x123456, -0x123456))
    path = tmp_path / "x.wav"
    path.write_bytes(riff(1, 1, 8000, 24, frames))
    assert samples(audio.read_wav(path)[0]) == [0x1234, -0x1235]


def test_rejects_non_wav(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(b"ID3 not a wav file")
    with pytest.raises(audio.AudioError):
        audio.read_wav(path)
