"""Deterministic test audio: espeak-ng speech, silence and noise as 16-bit mono PCM.

Speech comes from the espeak-ng library in-process (no files, no network), resampled with soxr
to whatever rate a test needs, so tests at 8/16/24/48 kHz all hear the same words.
"""

from __future__ import annotations

import functools

import numpy as np

from pipelines.engines.espeak import resample_pcm16, synthesize


@functools.lru_cache(maxsize=256)
def speech(
    text: str, sample_rate: int = 16000, voice: str = "en-us", rate_wpm: int | None = None
) -> bytes:
    """``text`` spoken by an espeak-ng voice, as S16LE mono PCM at ``sample_rate``."""
    synthesis = synthesize(text, voice=voice, rate_wpm=rate_wpm)
    return resample_pcm16(synthesis.pcm, synthesis.sample_rate, sample_rate)


def silence(ms: int, sample_rate: int = 16000) -> bytes:
    return bytes(sample_rate * ms // 1000 * 2)


def noise(ms: int, sample_rate: int = 16000, rms: float = 300.0, seed: int = 0) -> bytes:
    """Gaussian noise; ``rms`` 300 is about -40 dBFS, a quiet line's hiss."""
    rng = np.random.default_rng(seed)
    samples = rng.normal(0.0, rms, sample_rate * ms // 1000)
    return np.clip(samples, -32768, 32767).astype(np.int16).tobytes()


def chunks(pcm: bytes, sample_rate: int = 16000, ms: int = 20) -> list[bytes]:
    """``pcm`` cut into ``ms`` frames (the last one may be shorter), as transports deliver it."""
    step = sample_rate * ms // 1000 * 2
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]


def duration_secs(pcm: bytes, sample_rate: int) -> float:
    return len(pcm) / 2 / sample_rate
