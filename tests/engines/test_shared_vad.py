"""Analyzers over one shared ONNX session behave exactly like Pipecat's own, one per stream.

Two callers' audio (espeak speech with silences long enough for Silero's periodic model reset,
and noise) is fed interleaved, 20 ms at a time, through two shared analyzers; each must produce
the very confidences and VAD states that a stock `SileroVADAnalyzer` produces on that stream
alone. Any state leaking between calls through the shared session would change them.
"""

from __future__ import annotations

import asyncio

import numpy as np
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState

from pipelines.vad import SharedSileroVADAnalyzer, shared_silero_session
from tests.audio_helpers import chunks, noise, silence, speech

PARAMS = VADParams(confidence=0.7, start_secs=0.15, stop_secs=0.2, min_volume=0.2)


def stream_a() -> bytes:
    return (
        silence(300)
        + speech("what are your opening hours")
        + silence(2600)  # past the 2 s model-reset interval, in clear non-speech
        + speech("I would like to leave a message please")
        + silence(500)
    )


def stream_b() -> bytes:
    return (
        noise(700, seed=3)
        + speech("where is your office", voice="en-gb-x-rp")
        + noise(3000, rms=200, seed=4)
        + speech("thank you goodbye", voice="en-gb-x-rp")
        + silence(300)
    )


class Recorded:
    """Keeps every window's confidence an analyzer computed (instrumentation, no stand-in)."""

    confidences: list[float]

    def voice_confidence(self, buffer: bytes) -> float:
        confidence = super().voice_confidence(buffer)  # type: ignore[misc]
        self.confidences.append(float(np.asarray(confidence).reshape(-1)[0]))
        return confidence  # unchanged, so the analyzer decides exactly as it would


class RecordedStock(Recorded, SileroVADAnalyzer):
    def __init__(self) -> None:
        super().__init__(sample_rate=16000, params=PARAMS)
        self.confidences = []
        self.set_sample_rate(16000)


class RecordedShared(Recorded, SharedSileroVADAnalyzer):
    def __init__(self) -> None:
        super().__init__(sample_rate=16000, params=PARAMS)
        self.confidences = []
        self.set_sample_rate(16000)


def run_alone(audio: bytes) -> tuple[list[float], list[VADState]]:
    analyzer = RecordedStock()
    states = [analyzer._run_analyzer(chunk) for chunk in chunks(audio)]
    # Silero's periodic reset of its recurrent state happened: the streams exercise it.
    assert analyzer._windows_since_reset < len(analyzer.confidences)
    return analyzer.confidences, states


def test_analyzers_share_one_session_and_nothing_else() -> None:
    first, second = SharedSileroVADAnalyzer(), SharedSileroVADAnalyzer()
    assert first._model.session is second._model.session is shared_silero_session()
    assert first._model is not second._model
    assert first._model._state is not second._model._state
    assert first._executor is not second._executor


def test_interleaved_streams_score_as_if_each_were_alone() -> None:
    audio_a, audio_b = stream_a(), stream_b()
    expected_a, expected_states_a = run_alone(audio_a)
    expected_b, expected_states_b = run_alone(audio_b)
    # The streams really exercise the state: speech is detected.
    assert VADState.SPEAKING in expected_states_a and VADState.SPEAKING in expected_states_b
    assert max(expected_a) > 0.9 and max(expected_b) > 0.9

    a, b = RecordedShared(), RecordedShared()
    chunks_a, chunks_b = chunks(audio_a), chunks(audio_b)
    states_a: list[VADState] = []
    states_b: list[VADState] = []
    for i in range(max(len(chunks_a), len(chunks_b))):
        if i < len(chunks_a):
            states_a.append(a._run_analyzer(chunks_a[i]))
        if i < len(chunks_b):
            states_b.append(b._run_analyzer(chunks_b[i]))

    assert a.confidences == expected_a
    assert b.confidences == expected_b
    assert states_a == expected_states_a and states_b == expected_states_b


async def test_concurrent_calls_on_their_own_threads_keep_their_own_state() -> None:
    """As in the gateway: each analyzer runs the model on its own executor thread, at once."""
    audio_a, audio_b = stream_a(), stream_b()
    expected_a, _ = run_alone(audio_a)
    expected_b, _ = run_alone(audio_b)

    async def feed(analyzer: VADAnalyzer, audio: bytes) -> None:
        for chunk in chunks(audio):
            await analyzer.analyze_audio(chunk)

    a, b = RecordedShared(), RecordedShared()
    await asyncio.gather(feed(a, audio_a), feed(b, audio_b))
    await asyncio.gather(a.cleanup(), b.cleanup())
    assert a.confidences == expected_a
    assert b.confidences == expected_b
