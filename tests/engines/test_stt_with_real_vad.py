"""The STT service with Pipecat's real user aggregator and Silero VAD downstream of it.

Checks the assumptions the service is built on: the VAD frames come back upstream after the
audio passed, the pre-roll covers the VAD's start lag, and an empty transcript ends the turn
promptly with the turn-stop configuration voicegw needs (``wait_for_transcript=False``: with
the default, a turn whose transcript is "" waits for ``user_turn_stop_timeout``, 5 s).
"""

from __future__ import annotations

import asyncio
import time

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    LLMContextFrame,
    TranscriptionFrame,
    UserStoppedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.turns.empty_user_turn import EmptyUserTurnConfig
from pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy import (
    SpeechTimeoutUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

from pipelines.engines.stt_pool import SttWorkerPool
from pipelines.services.offline_stt import PocketsphinxSTTService
from tests.audio_helpers import chunks, silence, speech
from tests.engines.faq import FAQ_JSGF
from tests.engines.stt_harness import Recorder


class _Stamped(Recorder):
    """A recorder that also notes when each frame passed."""

    def __init__(self, direction: FrameDirection) -> None:
        super().__init__(direction)
        self.at: dict[int, float] = {}

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        self.at[id(frame)] = time.monotonic()
        await super().process_frame(frame, direction)


async def test_real_vad_recognised_and_unrecognised_turns(stt_pool: SttWorkerPool) -> None:
    stt = PocketsphinxSTTService(stt_pool, FAQ_JSGF)
    user = LLMContextAggregatorPair(
        LLMContext(),
        user_params=LLMUserAggregatorParams(
            vad_analyzer=SileroVADAnalyzer(),
            user_turn_strategies=UserTurnStrategies(
                stop=[
                    SpeechTimeoutUserTurnStopStrategy(
                        user_speech_timeout=0.3, wait_for_transcript=False
                    )
                ]
            ),
            empty_user_turn=EmptyUserTurnConfig(idle_prompt="(nothing understood)"),
        ),
    ).user()
    up = _Stamped(FrameDirection.UPSTREAM)
    between = Recorder(FrameDirection.DOWNSTREAM)
    sink = _Stamped(FrameDirection.DOWNSTREAM)
    worker = PipelineWorker(
        Pipeline([up, stt, between, user, sink]),
        params=PipelineParams(audio_in_sample_rate=16000),
        enable_rtvi=False,
        cancel_on_idle_timeout=False,
        cancel_runner_on_idle_timeout=False,
    )
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker: PipelineWorker, frame: Frame) -> None:
        started.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    try:
        async with asyncio.timeout(30):
            await started.wait()
        pcm = (
            silence(800)
            + speech("where are you located")
            + silence(1200)
            + speech("can I speak to a human being please")
            + silence(1200)
        )
        # A caller's audio arrives in real time; the VAD's timing depends on it.
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i, frame in enumerate(chunks(pcm)):
            await asyncio.sleep(max(0.0, t0 + i * 0.02 - loop.time()))
            await worker.queue_frame(InputAudioRawFrame(frame, 16000, 1))
        transcripts = await between.wait_for(TranscriptionFrame, 2)
        await sink.wait_for(UserStoppedSpeakingFrame, 2)
        await sink.wait_for(LLMContextFrame, 2)
        await worker.queue_frame(EndFrame())
        async with asyncio.timeout(30):
            await run
    finally:
        if not run.done():
            await worker.cancel()
            await run

    assert [t.text for t in transcripts if isinstance(t, TranscriptionFrame)] == [
        "where are you located",
        "",
    ]
    vad_stops = up.of_type(VADUserStoppedSpeakingFrame)
    turn_stops = sink.of_type(UserStoppedSpeakingFrame)
    assert len(vad_stops) == 2
    # The unrecognised turn ends about user_speech_timeout after the VAD stop, not 5 s later.
    assert sink.at[id(turn_stops[1])] - up.at[id(vad_stops[1])] < 1.5
