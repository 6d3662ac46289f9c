"""G.711 mu-law and A-law (ITU-T G.711), vectorised with lookup tables.

The bit-level reference lives once, in the SDK's pure-Python codec (`voicegw_client.audio`, which
clients use without numpy). The gateway builds its tables from it at import: decoding is a
256-entry table and encoding a 65536-entry table indexed by the 16-bit sample, so a 20 ms frame
costs two numpy fancy-indexing operations and no Python loop.
"""

from __future__ import annotations

import numpy as np
from voicegw_client import audio as reference

# Every 16-bit sample in uint16 order (0..32767, then -32768..-1), so a sample reinterpreted as
# uint16 indexes its own code.
_ALL_SAMPLES = np.arange(65536, dtype=np.uint16).view("<i2").tobytes()
_ALL_CODES = bytes(range(256))

_ULAW_ENCODE = np.frombuffer(reference.ulaw_encode(_ALL_SAMPLES), dtype=np.uint8)
_ALAW_ENCODE = np.frombuffer(reference.alaw_encode(_ALL_SAMPLES), dtype=np.uint8)
_ULAW_DECODE = np.frombuffer(reference.ulaw_decode(_ALL_CODES), dtype="<i2")
_ALAW_DECODE = np.frombuffer(reference.alaw_decode(_ALL_CODES), dtype="<i2")


def ulaw_decode(payload: bytes) -> bytes:
    """mu-law bytes → S16LE PCM."""
    return _ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)].tobytes()


def alaw_decode(payload: bytes) -> bytes:
    """A-law bytes → S16LE PCM."""
    return _ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)].tobytes()


def ulaw_encode(pcm: bytes) -> bytes:
    """S16LE PCM → mu-law bytes."""
    return _ULAW_ENCODE[np.frombuffer(pcm, dtype="<u2")].tobytes()


def alaw_encode(pcm: bytes) -> bytes:
    """S16LE PCM → A-law bytes."""
    return _ALAW_ENCODE[np.frombuffer(pcm, dtype="<u2")].tobytes()
