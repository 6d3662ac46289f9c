"""Audio helpers for the SDK and `voicegw talk`, in pure Python (stdlib only).

The SDK must install with nothing but grpcio and protobuf, so there is no numpy here: G.711 uses
lookup tables walked by C-level `map`, and resampling uses a precomputed polyphase windowed-sinc
filter. All PCM is signed 16-bit little-endian mono ("pcm16"), the gateway's LINEAR16.

G.711 follows the ITU-T reference behaviour (as in Sun's g711.c, which the gateway also uses):
mu-law encodes the top 14 bits with a bias of 0x84, A-law the top 13 bits with even bits
inverted. Every one of the 256 codes decodes to a value that encodes back to the same code,
except mu-law's negative zero (0x7F), which decodes to 0 and encodes as positive zero (0xFF).
"""

from __future__ import annotations

import math
import struct
import sys
import wave
from array import array
from functools import cache
from pathlib import Path

ENCODINGS = ("linear16", "pcmu", "pcma")

_BIG_ENDIAN = sys.byteorder == "big"
_ULAW_BIAS = 0x84
_ULAW_CLIP = 8159  # largest 14-bit magnitude before the bias is added
_ULAW_SEGMENT_ENDS = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


class AudioError(ValueError):
    """Audio the helpers cannot handle (unknown encoding, unsupported WAV)."""


def _to_array(pcm16: bytes) -> array[int]:
    if len(pcm16) % 2:
        raise AudioError(f"pcm16 data has an odd length ({len(pcm16)} bytes)")
    samples = array("h", pcm16)
    if _BIG_ENDIAN:
        samples.byteswap()
    return samples


def _to_bytes(samples: array[int]) -> bytes:
    if _BIG_ENDIAN:
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def _clip16(value: float) -> int:
    return max(-32768, min(32767, round(value)))


# --- G.711 -------------------------------------------------------------------------------------


def _ulaw_encode_sample(sample: int) -> int:
    value = sample >> 2
    mask = 0xFF
    if value < 0:
        value = -value
        mask = 0x7F
    value = min(value, _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    for segment, end in enumerate(_ULAW_SEGMENT_ENDS):
        if value <= end:
            return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask
    return 0x7F ^ mask


def _ulaw_decode_code(code: int) -> int:
    code = ~code & 0xFF
    exponent = (code >> 4) & 0x07
    magnitude = ((((code & 0x0F) << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return -magnitude if code & 0x80 else magnitude


def _alaw_encode_sample(sample: int) -> int:
    sign = 0x80 if sample >= 0 else 0x00
    magnitude = (sample if sample >= 0 else -sample - 1) >> 3
    if magnitude < 32:
        code = magnitude >> 1
    else:
        exponent = magnitude.bit_length() - 5
        code = (exponent << 4) | ((magnitude >> exponent) & 0x0F)
    return (sign | code) ^ 0x55


def _alaw_decode_code(code: int) -> int:
    code ^= 0x55
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    if exponent == 0:
        magnitude = (mantissa << 4) + 8
    else:
        magnitude = ((mantissa << 4) + 0x108) << (exponent - 1)
    return magnitude if code & 0x80 else -magnitude


@cache
def _encode_table(law: str) -> bytes:
    # Indexed by the sample read as unsigned 16-bit, so negative samples live in the upper half.
    # Built on first use: 65536 calls cost ~50 ms, which a linear16-only client never pays.
    one = _ulaw_encode_sample if law == "pcmu" else _alaw_encode_sample
    return bytes(one(u - 65536 if u >= 32768 else u) for u in range(65536))


@cache
def _decode_table(law: str) -> tuple[int, ...]:
    one = _ulaw_decode_code if law == "pcmu" else _alaw_decode_code
    return tuple(one(code) for code in range(256))


def _g711_encode(pcm16: bytes, law: str) -> bytes:
    if len(pcm16) % 2:
        raise AudioError(f"pcm16 data has an odd length ({len(pcm16)} bytes)")
    samples = array("H", pcm16)
    if _BIG_ENDIAN:
        samples.byteswap()
    return bytes(map(_encode_table(law).__getitem__, samples))


def _g711_decode(payload: bytes, law: str) -> bytes:
    return _to_bytes(array("h", map(_decode_table(law).__getitem__, payload)))


def ulaw_encode(pcm16: bytes) -> bytes:
    """pcm16 → G.711 mu-law, one byte per sample."""
    return _g711_encode(pcm16, "pcmu")


def ulaw_decode(payload: bytes) -> bytes:
    """G.711 mu-law → pcm16."""
    return _g711_decode(payload, "pcmu")


def alaw_encode(pcm16: bytes) -> bytes:
    """pcm16 → G.711 A-law, one byte per sample."""
    return _g711_encode(pcm16, "pcma")


def alaw_decode(payload: bytes) -> bytes:
    """G.711 A-law → pcm16."""
    return _g711_decode(payload, "pcma")


def _check_encoding(encoding: str) -> str:
    if encoding not in ENCODINGS:
        raise AudioError(f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")
    return encoding


def bytes_per_sample(encoding: str) -> int:
    """Wire bytes per sample: 2 for linear16, 1 for the G.711 laws."""
    return 2 if _check_encoding(encoding) == "linear16" else 1


def encode(pcm16: bytes, encoding: str) -> bytes:
    """pcm16 → the wire encoding (`linear16` passes through)."""
    if _check_encoding(encoding) == "linear16":
        if len(pcm16) % 2:
            raise AudioError(f"pcm16 data has an odd length ({len(pcm16)} bytes)")
        return bytes(pcm16)
    return _g711_encode(pcm16, encoding)


def decode(payload: bytes, encoding: str) -> bytes:
    """Wire encoding → pcm16 (`linear16` passes through)."""
    if _check_encoding(encoding) == "linear16":
        if len(payload) % 2:
            raise AudioError(f"linear16 payload has an odd length ({len(payload)} bytes)")
        return bytes(payload)
    return _g711_decode(payload, encoding)


# --- Channels and resampling -------------------------------------------------------------------


def downmix(pcm16: bytes, channels: int) -> bytes:
    """Interleaved multi-channel pcm16 → mono by averaging, so neither side is lost."""
    if channels == 1:
        return bytes(pcm16)
    if channels < 1:
        raise AudioError(f"invalid channel count {channels}")
    samples = _to_array(pcm16)
    if len(samples) % channels:
        raise AudioError(f"{len(samples)} samples do not split into {channels} channels")
    planes = [samples[c::channels] for c in range(channels)]
    if channels == 2:
        mono = array("h", [(a + b) >> 1 for a, b in zip(planes[0], planes[1], strict=True)])
    else:
        mono = array("h", [round(sum(frame) / channels) for frame in zip(*planes, strict=True)])
    return _to_bytes(mono)


# Filter design: a Kaiser-windowed sinc (beta 8.6, ~80 dB stop band) spanning 24 zero crossings
# each side, cut off at 90% of the lower Nyquist. Going 22050 → 8000 Hz that keeps the telephone
# band (-1 dB at 3.4 kHz) and attenuates anything at or above the new Nyquist by more than 80 dB,
# so a 5 kHz tone does not fold back to 3 kHz.
_ZERO_CROSSINGS = 24
_CUTOFF = 0.9
_KAISER_BETA = 8.6
_MAX_PHASES = 2048


def _bessel_i0(x: float) -> float:
    total, term, k = 1.0, 1.0, 1
    while term > 1e-12 * total:
        term *= (x / (2 * k)) ** 2
        total += term
        k += 1
    return total


@cache
def _polyphase_table(
    in_rate: int, out_rate: int
) -> tuple[int, int, int, tuple[tuple[float, ...], ...]]:
    """(up, down, half, taps per phase) for resampling in_rate → out_rate.

    Output sample n sits at input position n*down/up; its phase (n*down mod up) selects one
    precomputed row of 2*half weights, so the inner loop is a dot product with no trigonometry.
    Rows are normalised to unit sum so DC (and hence silence) passes exactly.
    """
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    phases = min(up, _MAX_PHASES)
    # Cutoff in cycles per input sample, below the Nyquist of the lower of the two rates.
    fc = _CUTOFF * 0.5 * min(1.0, out_rate / in_rate)
    # Kernel half-width in input samples: more taps when downsampling (narrower passband).
    half = math.ceil(_ZERO_CROSSINGS * max(1.0, in_rate / out_rate))
    i0_beta = _bessel_i0(_KAISER_BETA)
    rows: list[tuple[float, ...]] = []
    for p in range(phases):
        frac = p / phases
        row: list[float] = []
        for j in range(2 * half):
            x = (j - half + 1) - frac  # distance from the output position, in input samples
            ratio = x / half
            if abs(ratio) >= 1.0:
                row.append(0.0)
                continue
            window = _bessel_i0(_KAISER_BETA * math.sqrt(1.0 - ratio * ratio)) / i0_beta
            arg = 2.0 * fc * x
            sinc = 1.0 if arg == 0 else math.sin(math.pi * arg) / (math.pi * arg)
            row.append(2.0 * fc * sinc * window)
        total = sum(row)
        rows.append(tuple(w / total for w in row))
    return up, down, half, tuple(rows)


def resample(pcm16: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resamples mono pcm16 with a windowed-sinc low-pass (no aliasing on downsampling).

    Meant for whole short clips (the CLI's WAV files), not for low-latency streaming: it is a
    pure-Python dot product per output sample, roughly 0.3 s per second of 44.1 kHz audio.
    """
    if in_rate <= 0 or out_rate <= 0:
        raise AudioError(f"invalid sample rates {in_rate} → {out_rate}")
    if in_rate == out_rate:
        return bytes(pcm16)
    samples = _to_array(pcm16)
    if not samples:
        return b""
    up, down, half, rows = _polyphase_table(in_rate, out_rate)
    phases = len(rows)
    width = 2 * half
    # Zero padding on both sides keeps the inner loop free of bounds checks.
    padded = [0] * half + samples.tolist() + [0] * (half + 1)
    n_out = (len(samples) * up + down - 1) // down
    out = array("h", bytes(2 * n_out))
    for n in range(n_out):
        base, rem = divmod(n * down, up)
        phase = rem if phases == up else (rem * phases) // up
        start = base + 1  # padded index of input sample (base - half + 1)
        acc = sum(map(float.__mul__, rows[phase], padded[start : start + width]))
        out[n] = _clip16(acc)
    return _to_bytes(out)


# --- WAV files ---------------------------------------------------------------------------------

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_ALAW = 0x0006
_WAVE_FORMAT_MULAW = 0x0007
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_FLIP_SIGN = bytes(b ^ 0x80 for b in range(256))


def _parse_riff(data: bytes) -> tuple[tuple[int, int, int, int], bytes]:
    """((format tag, channels, rate, bits), sample data) from a RIFF/WAVE file.

    A small parser rather than `wave`, which on Python 3.11 rejects WAVE_FORMAT_EXTENSIBLE
    (what most tools write for 24-bit and multichannel files) and float samples.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioError("not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = data[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise AudioError("truncated fmt chunk")
            tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                # The sub-format GUID starts with the real format tag.
                (tag,) = struct.unpack_from("<H", body, 24)
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise AudioError("data chunk before fmt chunk")
            return fmt, body
        pos += 8 + size + (size & 1)  # chunks are word aligned
    raise AudioError("no data chunk" if fmt else "no fmt chunk")


def _samples_to_pcm16(tag: int, bits: int, raw: bytes) -> bytes:
    if tag == _WAVE_FORMAT_PCM:
        if bits == 16:
            return raw[: len(raw) - len(raw) % 2]
        if bits == 8:  # unsigned; flipping the top bit makes it signed, which is the high byte
            out = bytearray(2 * len(raw))
            out[1::2] = raw.translate(_FLIP_SIGN)
            return bytes(out)
        if bits in (24, 32):
            width = bits // 8
            raw = raw[: len(raw) - len(raw) % width]
            count = len(raw) // width
            out = bytearray(2 * count)
            # Keep the two most significant bytes of each little-endian sample.
            out[0::2] = raw[width - 2 :: width]
            out[1::2] = raw[width - 1 :: width]
            return bytes(out)
        raise AudioError(f"unsupported PCM sample size: {bits} bits")
    if tag == _WAVE_FORMAT_IEEE_FLOAT and bits in (32, 64):
        code = "f" if bits == 32 else "d"
        width = bits // 8
        values = array(code, raw[: len(raw) - len(raw) % width])
        if _BIG_ENDIAN:
            values.byteswap()
        return _to_bytes(array("h", [_clip16(v * 32768.0) for v in values]))
    if tag == _WAVE_FORMAT_MULAW and bits == 8:
        return ulaw_decode(raw)
    if tag == _WAVE_FORMAT_ALAW and bits == 8:
        return alaw_decode(raw)
    raise AudioError(f"unsupported WAV format tag 0x{tag:04x} with {bits}-bit samples")


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """(pcm16 mono, sample rate) from a WAV file.

    Accepts integer PCM of 8/16/24/32 bits, 32/64-bit float, and G.711 WAVs, any channel count
    (downmixed), plain or WAVE_FORMAT_EXTENSIBLE. Deeper samples are truncated to 16 bits,
    which is far below telephone-band noise.
    """
    (tag, channels, rate, bits), raw = _parse_riff(Path(path).read_bytes())
    if channels < 1 or rate < 1:
        raise AudioError(f"invalid WAV header: {channels} channels at {rate} Hz")
    pcm = _samples_to_pcm16(tag, bits, raw)
    frame_bytes = 2 * channels
    pcm = pcm[: len(pcm) - len(pcm) % frame_bytes]
    return downmix(pcm, channels), rate


def write_wav(path: str | Path, pcm16: bytes, rate: int) -> None:
    """Writes mono pcm16 as a plain 16-bit PCM WAV."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm16)
