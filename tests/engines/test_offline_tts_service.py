"""EspeakTTSService in a Pipecat pipeline: output rate, frame flow and word timestamps."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import (
    ErrorFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    TTSUpdateSettingsFrame,
)
from pipecat.pipeline.worker import PipelineParams
from pipecat.services.settings import TTSSettings
from pipecat.tests.utils import run_test

from pipelines.engines.espeak import synthesize
from pipelines.engines.tts_worker import TtsWorker
from pipelines.services.offline_tts import EspeakTTSService

SENTENCE = "Thank you for calling. I am the assistant of the office."


def _audio_secs(frames: list[TTSAudioRawFrame]) -> float:
    return sum(len(f.audio) / 2 / f.sample_rate for f in frames)


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
async def test_speaks_at_the_pipeline_output_rate(tts_worker: TtsWorker, rate: int) -> None:
    down, _ = await run_test(
        EspeakTTSService(tts_worker),
        frames_to_send=[TTSSpeakFrame(SENTENCE)],
        pipeline_params=PipelineParams(audio_out_sample_rate=rate),
    )
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert audio and all(f.sample_rate == rate and f.num_channels == 1 for f in audio)
    # Resampling keeps the duration (the stream resampler holds back only a few ms).
    expected = synthesize(SENTENCE).duration_secs
    assert _audio_secs(audio) == pytest.approx(expected, abs=0.06)
    kinds = [type(f) for f in down if isinstance(f, (TTSStartedFrame, TTSStoppedFrame))]
    assert kinds == [TTSStartedFrame, TTSStoppedFrame]


async def test_word_frames_follow_the_audio_timeline(tts_worker: TtsWorker) -> None:
    # Two sentences of one LLM reply share an audio context: the second sentence's word times
    # must continue after the first sentence's audio, not restart at zero.
    first, second = "Hello there. ", "I am the assistant of the office."
    down, _ = await run_test(
        EspeakTTSService(tts_worker),
        frames_to_send=[
            LLMFullResponseStartFrame(),
            LLMTextFrame(first),
            LLMTextFrame(second),
            LLMFullResponseEndFrame(),
        ],
        pipeline_params=PipelineParams(audio_out_sample_rate=24000),
    )
    words = [f for f in down if isinstance(f, TTSTextFrame)]
    assert [w.text for w in words] == (first + second).split()
    pts = [w.pts for w in words]
    assert all(p is not None for p in pts)
    assert pts == sorted(pts)  # type: ignore[type-var]
    first_audio_secs = synthesize(first).duration_secs
    second_start_ns = pts[2] - pts[0]  # type: ignore[operator]
    assert second_start_ns / 1e9 == pytest.approx(first_audio_secs, abs=0.05)
    # Every word frame carries the context of the audio it belongs to.
    audio_contexts = {f.context_id for f in down if isinstance(f, TTSAudioRawFrame)}
    assert {w.context_id for w in words} == audio_contexts


async def test_voice_switch_at_runtime(tts_worker: TtsWorker) -> None:
    tts = EspeakTTSService(tts_worker, voice="en-us")
    down, _ = await run_test(
        tts,
        frames_to_send=[
            TTSUpdateSettingsFrame(delta=TTSSettings(voice="ru")),
            TTSSpeakFrame("Добрый день."),
        ],
    )
    words = [f.text for f in down if isinstance(f, TTSTextFrame)]
    assert words == ["Добрый", "день."]


async def test_unknown_voice_reports_an_error_and_no_audio(tts_worker: TtsWorker) -> None:
    down, up = await run_test(
        EspeakTTSService(tts_worker, voice="no-such-voice", max_consecutive_zero_audio_contexts=0),
        frames_to_send=[TTSSpeakFrame("hello")],
    )
    assert not [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert any("no voice named" in f.error for f in up if isinstance(f, ErrorFrame))
