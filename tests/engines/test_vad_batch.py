"""The batched Silero VAD decides exactly what Pipecat's own Silero analyzer decides, for any
number of calls sharing one model, and really does score them together."""

from __future__ import annotations

import asyncio

import numpy as np
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from pipelines.vad_batch import BatchedSileroVAD, batcher_for, silero_session
from tests.audio_helpers import chunks, noise, silence, speech

PARAMS = VADParams(confidence=0.7, start_secs=0.15, stop_secs=0.2, min_volume=0.2)


def _caller(text: str, seed: int) -> list[bytes]:
    """Hiss, speech, a pause, more speech, hiss: every VAD state is visited."""
    pcm = (
        noise(600, seed=seed)
        + speech(text)
        + silence(700)
        + speech("and one more thing")
        + noise(2500, seed=seed + 1)
    )
    return chunks(pcm)


async def _reference(frames: list[bytes]) -> tuple[list[float], list[VADState]]:
    """Pipecat's analyzer, one window at a time on its own model."""
    vad = SileroVADAnalyzer(sample_rate=16000, params=PARAMS)
    vad.set_sample_rate(16000)
    scores: list[float] = []
    scored = vad.voice_confidence

    def spy(buffer: bytes) -> float:
        score = float(np.asarray(scored(buffer)).reshape(-1)[0])
        scores.append(score)
        return score

    vad.voice_confidence = spy  # type: ignore[method-assign]
    states = [await vad.analyze_audio(frame) for frame in frames]
    await vad.cleanup()
    return scores, states


async def _batched(vad: BatchedSileroVAD, frames: list[bytes]) -> list[VADState]:
    vad.set_sample_rate(16000)
    return [await vad.analyze_audio(frame) for frame in frames]


async def test_same_decisions_as_pipecat_silero_for_concurrent_calls() -> None:
    texts = ["what are your opening hours", "I would like to leave a message", "hello there"]
    callers = [_caller(text, seed) for seed, text in enumerate(texts)]
    expected = [await _reference(frames) for frames in callers]

    batcher = batcher_for(asyncio.get_running_loop())
    runs_before, windows_before = batcher.batches, batcher.windows
    vads = [BatchedSileroVAD(params=PARAMS) for _ in callers]
    states = await asyncio.gather(*(_batched(v, f) for v, f in zip(vads, callers, strict=True)))

    for (_, ref_states), got in zip(expected, states, strict=True):
        assert VADState.SPEAKING in ref_states  # the audio really exercises the VAD
        assert got == ref_states
    windows = batcher.windows - windows_before
    assert windows == sum(len(scores) for scores, _ in expected)
    # Three calls fed in lockstep share model runs instead of paying one each.
    assert batcher.batches - runs_before <= windows / 2.5


async def test_scores_match_pipecat_window_for_window() -> None:
    frames = _caller("please call me back tomorrow", 7)
    ref_scores, _ = await _reference(frames)
    vad = BatchedSileroVAD(params=PARAMS)
    vad.set_sample_rate(16000)
    got: list[float] = []
    original = vad.voice_confidence

    def spy(buffer: bytes) -> float:
        score = original(buffer)
        got.append(score)
        return score

    vad.voice_confidence = spy  # type: ignore[method-assign]
    for frame in frames:
        await vad.analyze_audio(frame)
    assert len(got) == len(ref_scores)
    assert np.allclose(got, ref_scores, atol=1e-4)


def test_one_model_per_process() -> None:
    assert silero_session() is silero_session()
