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


def cough(ms: int = 300, sample_rate: int = 16000, peak: float = 0.8, seed: int = 0) -> bytes:
    """A cough-like burst: loud broadband noise (200 Hz-4 kHz) with a 10 ms attack and a fast
    decay. Not speech, so it must not cut the agent off."""
    rng = np.random.default_rng(seed)
    n = sample_rate * ms // 1000
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sample_rate)
    spectrum[(freqs < 200) | (freqs > 4000)] = 0
    burst = np.fft.irfft(spectrum, n)
    t = np.arange(n) / sample_rate
    envelope = np.minimum(1.0, t / 0.01) * np.exp(-t / 0.08)
    samples = burst / np.abs(burst).max() * envelope * peak * 32767
    return samples.astype(np.int16).tobytes()
