"""Zero-latency engines for the call benchmark: everything real except STT, LLM and TTS.

`InstantEngines` implements the `Engines` protocol, so the benchmark runs the real gRPC door,
Silero VAD, turn strategies, aggregators, recorder and Session, and only the engines cost nothing:

- STT: a finalized transcript the moment the VAD reports the end of speech (what a streaming
  cloud STT does at best). It also logs every VAD decision with the call's id and
  `time.monotonic()`, which the benchmark compares with the load generator's clock (both are
  CLOCK_MONOTONIC of the same machine).
- LLM: answers at once with a fixed text (the agent's greeting first, then one fixed answer), as
  response start / word chunks / response end, like a streaming LLM.
- TTS: the real `EspeakTTSService` (TTSStarted/Stopped frames, word timestamps, utterance
  tracking), fed by a worker stand-in that returns speech rendered once with espeak and cached,
  already at the pipeline's output rate, so no synthesis, IPC or resampling happens per call.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import STTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from gateway.logs import call_id_var
from pipelines.agent_config import AgentConfig
from pipelines.engines.espeak import Synthesis, WordMark, resample_pcm16, synthesize
from pipelines.services.offline_tts import EspeakTTSService
from pipelines.services.scripted_llm import LocalLLMService, classify_context, text_chunks

USER_TEXT = "what are your opening hours"


class VadLog:
    """VAD decisions seen by each call's STT: (call id, "start"|"stop", monotonic seconds)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, float]] = []

    def record(self, kind: str) -> None:
        self.events.append((call_id_var.get() or "", kind, time.monotonic()))

    def take(self) -> list[tuple[str, str, float]]:
        taken, self.events = self.events, []
        return taken


class InstantSTT(STTService):
    """A final transcript of fixed text at every VAD stop; no audio is looked at."""

    def __init__(self, log: VadLog, text: str = USER_TEXT, **kwargs: Any) -> None:
        super().__init__(
            audio_passthrough=True,
            ttfs_p99_latency=0.5,  # never waited for: the transcript is final at once
            settings=STTSettings(model="instant", language=Language.EN_US),
            **kwargs,
        )
        self._log = log
        self._text = text

    def can_generate_metrics(self) -> bool:
        return True

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        return
        yield  # an async generator that never produces a frame

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._log.record("start")
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._log.record("stop")
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            await self.push_frame(
                TranscriptionFrame(
                    self._text,
                    self._user_id,
                    time_now_iso8601(),
                    language=Language.EN_US,
                    finalized=True,
                )
            )


class InstantLLM(LocalLLMService):
    """The greeting at the start of the call, then the same answer to every caller turn."""

    def __init__(self, greeting: str, answer: str, **kwargs: Any) -> None:
        super().__init__("instant", **kwargs)
        self._greeting = greeting
        self._answer = answer

    async def _respond(self, frame: LLMContextFrame) -> None:
        kind, _ = classify_context(frame.context.get_messages())
        if kind == "none":
            return
        text = self._greeting if kind == "greet" else self._answer
        await self.push_frame(LLMFullResponseStartFrame())
        await self.start_processing_metrics()
        await self.start_ttfb_metrics()
        await self.stop_ttfb_metrics()
        for chunk in text_chunks(text):
            await self._push_llm_text(chunk)
        await self.stop_processing_metrics()
        await self.push_frame(LLMFullResponseEndFrame())


class InstantTtsWorker:
    """Stands in for `TtsWorker`: espeak speech rendered once per sentence, then served from a
    cache at `sample_rate` (the pipeline's output rate), like a TTS that streams at the
    requested rate."""

    def __init__(self, sample_rate: int = 16000) -> None:
        self.sample_rate = sample_rate
        self.misses = 0
        self._cache: dict[tuple[str, str, int | None], Synthesis] = {}

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def synthesize(
        self, text: str, voice: str = "en-us", rate_wpm: int | None = None
    ) -> Synthesis:
        key = (text, voice, rate_wpm)
        cached = self._cache.get(key)
        if cached is None:
            self.misses += 1
            raw = synthesize(text, voice=voice, rate_wpm=rate_wpm)
            pcm = resample_pcm16(raw.pcm, raw.sample_rate, self.sample_rate)
            words = [WordMark(w.word, w.start_ms, w.text_offset) for w in raw.words]
            cached = Synthesis(pcm, self.sample_rate, words)
            self._cache[key] = cached
        return cached


def answer_text(agent: AgentConfig) -> str:
    """The fixed answer: the first FAQ answer and the agent's follow-up (about 6 s of speech)."""
    return f"{agent.faq[0].answer} {agent.anything_else}"


class InstantEngines:
    """The `Engines` of the benchmark gateway; `vad_log` collects every call's VAD decisions."""

    def __init__(self, vad_log: VadLog | None = None, sample_rate: int = 16000) -> None:
        self.vad_log = vad_log or VadLog()
        self.tts_worker = InstantTtsWorker(sample_rate)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def make_stt(self, agent: AgentConfig) -> FrameProcessor:
        return InstantSTT(self.vad_log)

    def make_llm(self, agent: AgentConfig) -> LLMService:
        return InstantLLM(agent.greeting, answer_text(agent))

    def make_tts(self, agent: AgentConfig) -> FrameProcessor:
        return EspeakTTSService(self.tts_worker, voice=agent.voice)  # type: ignore[arg-type]
