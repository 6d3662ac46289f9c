"""A Pipecat pipeline around an STT service, with the VAD's upstream frames scripted.

In voicegw the VAD sits in the user aggregator, downstream of the STT, and announces speech by
pushing ``VADUserStarted/StoppedSpeakingFrame`` upstream *after* the audio that decided it has
passed through the STT. :class:`ScriptedVad` reproduces exactly that from a script (which audio
frame triggers which VAD frame), and the feeder runs in lockstep with it - the next audio frame is
queued only once the previous one has passed the VAD - so runs are deterministic without sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from tests.audio_helpers import chunks

FRAME_MS = 20
VAD_START_LAG_FRAMES = 15  # 300 ms: start_secs 0.2 plus the confidence ramp
VAD_STOP_SECS = 0.2
VAD_STOP_FRAMES = int(VAD_STOP_SECS * 1000) // FRAME_MS


@dataclass
class Segment:
    """Audio of a script, and whether the scripted VAD calls it speech."""

    pcm: bytes
    speech: bool = False


@dataclass
class Script:
    frames: list[bytes] = field(default_factory=list)
    events: dict[int, list[Frame]] = field(default_factory=dict)  # after frame n: push these

    def add(self, segment: Segment) -> None:
        start = len(self.frames)
        self.frames += chunks(segment.pcm, 16000, FRAME_MS)
        if segment.speech:
            self.at(start + VAD_START_LAG_FRAMES, VADUserStartedSpeakingFrame(start_secs=0.2))
            self.at(
                len(self.frames) + VAD_STOP_FRAMES,
                VADUserStoppedSpeakingFrame(stop_secs=VAD_STOP_SECS),
            )

    def at(self, frame_index: int, frame: Frame) -> None:
        self.events.setdefault(frame_index, []).append(frame)


def build_script(segments: Sequence[Segment]) -> Script:
    script = Script()
    for segment in segments:
        script.add(segment)
    return script


class ScriptedVad(FrameProcessor):
    """Passes everything on; after scripted audio frames, pushes VAD frames upstream."""

    def __init__(self) -> None:
        super().__init__()
        self.events: dict[int, list[Frame]] = {}
        self.audio_seen = 0
        self.passed = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            self.audio_seen += 1
            for vad_frame in self.events.pop(self.audio_seen, []):
                await self.push_frame(vad_frame, FrameDirection.UPSTREAM)
            self.passed.set()


class Recorder(FrameProcessor):
    """Records the frames passing in one direction."""

    def __init__(self, direction: FrameDirection) -> None:
        super().__init__()
        self._direction = direction
        self.frames: list[Frame] = []
        self._changed = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == self._direction:
            self.frames.append(frame)
            self._changed.set()
        await self.push_frame(frame, direction)

    def of_type(self, cls: type[Frame]) -> list[Frame]:
        return [f for f in self.frames if isinstance(f, cls)]

    async def wait_for(self, cls: type[Frame], count: int, within: float = 30.0) -> list[Frame]:
        async with asyncio.timeout(within):
            while len(self.of_type(cls)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.of_type(cls)


class SttHarness:
    """``upstream recorder -> stt -> scripted VAD -> downstream recorder`` in a running worker."""

    def __init__(self, stt: FrameProcessor, params: PipelineParams | None = None) -> None:
        self.up = Recorder(FrameDirection.UPSTREAM)
        self.down = Recorder(FrameDirection.DOWNSTREAM)
        self.vad = ScriptedVad()
        self.worker = PipelineWorker(
            Pipeline([self.up, stt, self.vad, self.down]),
            params=params or PipelineParams(audio_in_sample_rate=16000, enable_metrics=True),
            enable_rtvi=False,
            cancel_on_idle_timeout=False,
            cancel_runner_on_idle_timeout=False,
        )
        self._runner = WorkerRunner(handle_sigint=False)
        self._run_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SttHarness:
        started = asyncio.Event()

        @self.worker.event_handler("on_pipeline_started")
        async def _started(worker: PipelineWorker, frame: Frame) -> None:
            started.set()

        await self._runner.add_workers(self.worker)
        self._run_task = asyncio.create_task(self._runner.run())
        async with asyncio.timeout(30):
            await started.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._run_task is not None
        if exc[0] is None:
            await self.worker.queue_frame(EndFrame())
            async with asyncio.timeout(30):
                await self._run_task
        else:
            await self.worker.cancel()
            await self._run_task

    async def play(self, segments: Sequence[Segment]) -> None:
        """Send the audio frame by frame, each only after the previous one passed the VAD."""
        script = build_script(segments)
        offset = self.vad.audio_seen
        self.vad.events = {offset + k: v for k, v in script.events.items()}
        for pcm in script.frames:
            self.vad.passed.clear()
            await self.worker.queue_frame(
                InputAudioRawFrame(audio=pcm, sample_rate=16000, num_channels=1)
            )
            async with asyncio.timeout(10):
                await self.vad.passed.wait()
        # A stop scheduled past the last frame (speech at the very end) is sent now.
        for index in sorted(self.vad.events):
            for vad_frame in self.vad.events.pop(index):
                await self.worker.queue_frame(vad_frame, FrameDirection.UPSTREAM)

    async def send_upstream(self, frame: Frame) -> None:
        """Queue a frame at the sink end and wait until it has passed the STT upstream."""
        seen = len(self.up.of_type(type(frame)))
        await self.worker.queue_frame(frame, FrameDirection.UPSTREAM)
        await self.up.wait_for(type(frame), seen + 1)

    async def transcripts(self, count: int, within: float = 30.0) -> list[TranscriptionFrame]:
        frames = await self.down.wait_for(TranscriptionFrame, count, within)
        return [f for f in frames if isinstance(f, TranscriptionFrame)]
