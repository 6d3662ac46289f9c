"""Agent config → the Pipecat pipeline of one call.

`transport.input() → STT → user aggregator (Silero VAD + turn strategies) → drop input audio →
agent (LLM) → TTS → transport.output() → assistant aggregator`, in its own `PipelineWorker`. The
pipeline's output rate is the caller's rate, so TTS audio is resampled exactly once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.observers.base_observer import BaseObserver
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMAssistantAggregator,
    LLMContextAggregatorPair,
    LLMUserAggregator,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import LLMService
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.empty_user_turn import EmptyUserTurnConfig
from pipecat.turns.user_start import (
    TranscriptionUserTurnStartStrategy,
    VADUserTurnStartStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from pipelines.agent_config import AgentConfig
from pipelines.engines.stt_pool import SttWorkerPool
from pipelines.engines.tts_worker import TtsWorker
from pipelines.grammar import build_jsgf
from pipelines.heard_context import HeardTextEditor
from pipelines.services.offline_stt import PocketsphinxSTTService
from pipelines.services.offline_tts import EspeakTTSService
from pipelines.services.scripted_llm import UNRECOGNISED_MARKER, ScriptedLLMService
from pipelines.turns import FinalTranscriptUserTurnStopStrategy
from pipelines.utterances import UtteranceRegistry
from pipelines.vad import SharedSileroVADAnalyzer, shared_silero_session

PIPELINE_IN_RATE = 16000


class Engines(Protocol):
    """Makes each call's STT, LLM and TTS services; owns whatever they share across calls.

    The gateway takes an `Engines`, so the benchmark can run the real transport, VAD and pipeline
    with instant fake engines, and cloud engines can plug in without touching the Session.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def make_stt(self, agent: AgentConfig) -> FrameProcessor: ...

    def make_llm(self, agent: AgentConfig) -> LLMService: ...

    def make_tts(self, agent: AgentConfig) -> FrameProcessor: ...


class OfflineEngines:
    """pocketsphinx in a pool of worker processes, espeak-ng in one, the scripted agent in-loop."""

    def __init__(self, stt_workers: int) -> None:
        self.stt_pool = SttWorkerPool(stt_workers)
        self.tts_worker = TtsWorker()

    async def start(self) -> None:
        # The shared VAD session loads here, not inside the first call's set-up.
        await asyncio.gather(
            self.stt_pool.start(),
            self.tts_worker.start(),
            asyncio.to_thread(shared_silero_session),
        )

    async def close(self) -> None:
        await asyncio.gather(self.stt_pool.close(), self.tts_worker.close(), return_exceptions=True)

    def make_stt(self, agent: AgentConfig) -> FrameProcessor:
        return PocketsphinxSTTService(self.stt_pool, grammar_jsgf=build_jsgf(agent))

    def make_llm(self, agent: AgentConfig) -> LLMService:
        return ScriptedLLMService(agent)

    def make_tts(self, agent: AgentConfig) -> FrameProcessor:
        return EspeakTTSService(self.tts_worker, voice=agent.voice)


@dataclass(slots=True)
class CallPipeline:
    worker: PipelineWorker
    stt: FrameProcessor
    llm: LLMService
    tts: FrameProcessor
    user_aggregator: LLMUserAggregator
    assistant_aggregator: LLMAssistantAggregator
    context: LLMContext


class DropInputAudio(FrameProcessor):
    """Stops caller audio once the VAD and STT have seen it.

    Every audio frame costs a hop through each processor it passes; nothing after the user
    aggregator needs caller audio, so it ends here (measured by Pipecat users: ~10% of a core).
    """

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, InputAudioRawFrame):
            await self.push_frame(frame, direction)


def build_call_pipeline(
    agent: AgentConfig,
    engines: Engines,
    transport: BaseTransport,
    *,
    output_rate: int,
    utterances: UtteranceRegistry,
    observers: list[BaseObserver] | None = None,
    conversation_id: str | None = None,
) -> CallPipeline:
    turn = agent.turn
    stt = engines.make_stt(agent)
    llm = engines.make_llm(agent)
    tts = engines.make_tts(agent)
    # One ONNX session per process, its recurrent state per call (pipelines/vad.py).
    vad = SharedSileroVADAnalyzer(
        sample_rate=PIPELINE_IN_RATE,
        params=VADParams(
            confidence=turn.vad_confidence,
            start_secs=turn.vad_start_secs,
            stop_secs=turn.vad_stop_secs,
            min_volume=turn.vad_min_volume,
        ),
    )
    context = LLMContext()
    aggregators = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=vad,
            user_turn_strategies=UserTurnStrategies(
                # Barge-in is the VAD's call: coughs and line noise never reach Silero's
                # speech confidence, and waiting for words would make it feel slow. An agent
                # that must not be cut off (a disclaimer) turns interruptions off.
                start=[
                    VADUserTurnStartStrategy(enable_interruptions=turn.interruptions),
                    TranscriptionUserTurnStartStrategy(enable_interruptions=turn.interruptions),
                ],
                # Smart-Turn v3 waited its 3 s fallback on telephone/synthetic speech; a short
                # fixed wait after the VAD stop is predictable (DESIGN §5).
                stop=[
                    FinalTranscriptUserTurnStopStrategy(
                        user_speech_timeout=turn.user_speech_timeout
                    )
                ],
            ),
            # Our STT finalizes an empty transcript when it heard nothing; the agent gets the
            # marker and re-prompts instead of leaving the caller in silence.
            empty_user_turn=EmptyUserTurnConfig(
                interrupted_prompt=UNRECOGNISED_MARKER,
                idle_prompt=UNRECOGNISED_MARKER,
                max_consecutive_recoveries=1_000_000,
            ),
        ),
    )
    user, assistant = aggregators.user(), aggregators.assistant()
    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            user,
            DropInputAudio(),
            HeardTextEditor(utterances),
            llm,
            tts,
            transport.output(),
            assistant,
        ]
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=PIPELINE_IN_RATE,
            audio_out_sample_rate=output_rate,
            enable_metrics=True,
        ),
        observers=observers or [],
        enable_rtvi=False,
        idle_timeout_secs=None,
        cancel_on_idle_timeout=False,
        cancel_runner_on_idle_timeout=False,
        cancel_timeout_secs=5,
        conversation_id=conversation_id,
    )
    return CallPipeline(worker, stt, llm, tts, user, assistant, context)
