"""The gateway's vectorised G.711 agrees with the stdlib reference on every sample and code."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from transports.codecs import g711
from transports.codecs.formats import AudioSpec, Encoding, FormatError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # deprecated, but the exact reference on Python 3.11/3.12

ALL_SAMPLES = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))


def test_ulaw_matches_reference_exhaustively() -> None:
    assert g711.ulaw_encode(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES, 2)
    assert g711.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


def test_alaw_matches_reference_exhaustively() -> None:
    assert g711.alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES, 2)
    assert g711.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


@pytest.mark.parametrize(
    ("encoding", "rate"),
    [(Encoding.LINEAR16, 44100), (Encoding.PCMU, 16000), (Encoding.PCMA, 48000)],
)
def test_format_table_refuses_unsupported(encoding: Encoding, rate: int) -> None:
    with pytest.raises(FormatError, match="supported: LINEAR16 at 8000, 16000, 24000, 48000 Hz"):
        AudioSpec(encoding, rate)


def test_chunk_bounds() -> None:
    spec = AudioSpec(Encoding.PCMU, 8000)
    spec.check_chunk(bytes(80))  # 10 ms
    spec.check_chunk(bytes(800))  # 100 ms
    for size in (79, 801):
        with pytest.raises(FormatError, match="outside the accepted"):
            spec.check_chunk(bytes(size))
    with pytest.raises(FormatError, match="whole number"):
        AudioSpec(Encoding.LINEAR16, 16000).check_chunk(bytes(641))
