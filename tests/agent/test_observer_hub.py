"""Observers see every frame they read, and none of the audio that would cost a core."""

from __future__ import annotations

import pytest
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from pipelines.observers import CallWorker

SILENCE = b"\x00\x00" * 320


class PassThrough(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)


class Seen(BaseObserver):
    """Told about each frame once (its first push), so counts are exact."""

    def __init__(self) -> None:
        super().__init__(observe_every_push=False)
        self.pushed: list[str] = []

    async def on_push_frame(self, data: FramePushed) -> None:
        self.pushed.append(type(data.frame).__name__)


class SeenProcessed(Seen):
    def __init__(self) -> None:
        super().__init__()
        self.processed = 0

    async def on_process_frame(self, data: FrameProcessed) -> None:
        self.processed += 1


def _frames() -> list[Frame]:
    frames: list[Frame] = [InputAudioRawFrame(SILENCE, 16000, 1) for _ in range(5)]
    for text in ("one", "two"):
        frames.append(TTSStartedFrame())
        frames += [TTSAudioRawFrame(SILENCE, 16000, 1) for _ in range(4)]
        frames += [TextFrame(text), TTSStoppedFrame()]
    return frames


async def _run(worker_cls: type[PipelineWorker], observer: BaseObserver) -> None:
    worker = worker_cls(
        Pipeline([PassThrough(), PassThrough()]),
        params=PipelineParams(),
        observers=[observer],
        enable_rtvi=False,
        enable_turn_tracking=False,
        idle_timeout_secs=None,
    )
    await worker.queue_frames([*_frames(), EndFrame()])
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def _of_interest(names: list[str]) -> list[str]:
    wanted = {"InputAudioRawFrame", "TTSAudioRawFrame", "TTSStartedFrame", "TextFrame"}
    return [name for name in names if name in wanted]


async def test_stock_worker_feeds_observers_every_audio_frame() -> None:
    """The cost the hub removes is real: Pipecat's own worker queues every audio frame."""
    seen = Seen()
    await _run(PipelineWorker, seen)
    assert seen.pushed.count("InputAudioRawFrame") == 5
    assert seen.pushed.count("TTSAudioRawFrame") == 8


async def test_hub_drops_caller_audio_and_keeps_first_agent_audio_per_utterance() -> None:
    seen = Seen()
    await _run(CallWorker, seen)
    assert _of_interest(seen.pushed) == [
        "TTSStartedFrame",
        "TTSAudioRawFrame",
        "TextFrame",
        "TTSStartedFrame",
        "TTSAudioRawFrame",
        "TextFrame",
    ]
    assert "EndFrame" in seen.pushed


@pytest.mark.parametrize("worker_cls", [CallWorker, PipelineWorker])
async def test_process_events_still_reach_an_observer_that_reads_them(
    worker_cls: type[PipelineWorker],
) -> None:
    seen = SeenProcessed()
    await _run(worker_cls, seen)
    assert seen.processed > 0
