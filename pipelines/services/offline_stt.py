"""Pocketsphinx speech recognition as a Pipecat STT service, decoding in worker processes.

The VAD lives downstream (in the user aggregator), which sends ``VADUserStarted/Stopped
SpeakingFrame`` back upstream, so this service learns that speech started only after the audio
of its first ~0.3 s has already passed through. It therefore keeps a short pre-roll of recent
audio and feeds it first when an utterance begins.

Nothing here waits on the decoder while audio flows: audio frames only append to a queue, and one
task per service drives the :class:`~pipelines.engines.stt_pool.SttStream` in order (begin, feed,
end), so input audio keeps reaching the VAD while the worker decodes.

Every ``VADUserStoppedSpeakingFrame`` yields exactly one finalized ``TranscriptionFrame`` - with
empty text when nothing was recognised or the worker failed - because a turn-stop strategy that
waits for a transcript would otherwise leave the caller in silence.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    StartFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings
from pipecat.services.stt_service import STTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from pipelines.engines.stt_pool import SAMPLE_RATE, SttStream, SttWorkerPool
from pipelines.frames import RecognitionMode, RecognitionModeFrame, RecordedUtteranceFrame

__all__ = ["PocketsphinxSTTService"]


@dataclass
class _Open:
    """Claim the decoder at call start, so the first utterance does not wait for it."""


@dataclass
class _Begin:
    preroll: bytes
    mode: RecognitionMode


@dataclass
class _Feed:
    audio: bytes


@dataclass
class _End:
    capture: bytes | None  # the utterance's audio when capture was on at its start


_Op = _Open | _Begin | _Feed | _End | None  # None: finish (graceful stop)


class PocketsphinxSTTService(STTService):
    """Streams each utterance to a pocketsphinx decoder hosted by an :class:`SttWorkerPool`.

    Args:
        pool: A started pool; the service opens one stream on it and reopens it if its worker
            dies.
        grammar_jsgf: The agent's phrase grammar, or None for the general language model only.
        preroll_secs: Audio kept from before the VAD's start decision; must cover the VAD's
            ``start_secs`` plus its confidence ramp (~0.33 s with defaults).
        trailing_silence_secs: Silence decoded after the VAD stop. pocketsphinx often drops or
            garbles the last word of an utterance that ends abruptly; the VAD's own ``stop_secs``
            of real trailing audio plus this padding gives it ~0.5 s.
        ttfs_p99_latency: Safety-net wait of the turn-stop strategy for a final transcript; the
            finalized transcript short-circuits it, so a generous value costs nothing.
    """

    def __init__(
        self,
        pool: SttWorkerPool,
        grammar_jsgf: str | None,
        preroll_secs: float = 0.5,
        *,
        trailing_silence_secs: float = 0.3,
        ttfs_p99_latency: float = 2.0,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("sample_rate") not in (None, SAMPLE_RATE):
            raise ValueError(f"PocketsphinxSTTService decodes {SAMPLE_RATE} Hz audio only")
        kwargs.setdefault(
            "settings", STTSettings(model="pocketsphinx-en-us", language=Language.EN_US)
        )
        super().__init__(audio_passthrough=True, ttfs_p99_latency=ttfs_p99_latency, **kwargs)
        self._pool = pool
        self._grammar = grammar_jsgf
        self._preroll_bytes = int(preroll_secs * SAMPLE_RATE) * 2
        self._trailing_silence = bytes(int(trailing_silence_secs * SAMPLE_RATE) * 2)
        self._mode: RecognitionMode = "grammar" if grammar_jsgf is not None else "general"
        self._capture_audio = False
        self._preroll = bytearray()
        self._in_utterance = False
        self._captured: bytearray | None = None
        self._ops: asyncio.Queue[_Op] = asyncio.Queue()
        self._op_task: asyncio.Task[None] | None = None
        self._stream: SttStream | None = None
        self._stream_mode: RecognitionMode | None = None

    def can_generate_metrics(self) -> bool:
        return True

    @property
    def mode(self) -> RecognitionMode:
        return self._mode

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        self._op_task = self.create_task(self._run_ops(), name="pocketsphinx-stt-ops")
        if self.sample_rate != SAMPLE_RATE:
            # Fail loudly but keep answering VAD stops (with ""), so the call is not left mute.
            await self.push_error(
                f"{self}: pocketsphinx needs {SAMPLE_RATE} Hz input; this pipeline's input "
                f"rate is {self.sample_rate} Hz (set PipelineParams.audio_in_sample_rate)",
                force_treat_as_permanent=True,
            )
            return
        self._ops.put_nowait(_Open())

    async def stop(self, frame: EndFrame) -> None:
        """Answer the VAD stops already seen (before the EndFrame goes on), then close.

        An utterance still open has no VAD stop and gets no transcript; closing the stream
        discards it.
        """
        if self._op_task is not None:
            self._in_utterance = False
            await self._ops.put(None)
            await self._op_task
            self._op_task = None
        await self._close_stream()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._stop_ops()

    async def cleanup(self) -> None:
        await super().cleanup()
        await self._stop_ops()

    async def _stop_ops(self) -> None:
        if self._op_task is not None:
            await self.cancel_task(self._op_task)
            self._op_task = None
        await self._close_stream()

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()

    # --- frames (input task: must never wait on the decoder) ------------------------------------

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._on_speech_started()
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._on_speech_stopped()
        elif isinstance(frame, RecognitionModeFrame):
            self._mode = frame.mode if self._grammar is not None else "general"
            self._capture_audio = frame.capture_audio

    def _on_speech_started(self) -> None:
        if self._in_utterance:
            return
        self._in_utterance = True
        preroll = bytes(self._preroll)
        self._preroll.clear()
        self._captured = bytearray(preroll) if self._capture_audio else None
        self._ops.put_nowait(_Begin(preroll=preroll, mode=self._mode))

    def _on_speech_stopped(self) -> None:
        captured = bytes(self._captured) if self._captured is not None else None
        self._captured = None
        self._in_utterance = False
        self._ops.put_nowait(_End(capture=captured))

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        """Route one input chunk to the pre-roll or the open utterance; yields nothing."""
        if self._in_utterance:
            self._ops.put_nowait(_Feed(audio))
            if self._captured is not None:
                self._captured += audio
        else:
            self._preroll += audio
            excess = len(self._preroll) - self._preroll_bytes
            if excess > 0:
                del self._preroll[:excess]
        return
        yield  # an async generator that never produces a frame

    # --- decoder driver (one task, strictly in order) -----------------------------------------

    async def _ensure_stream(self) -> SttStream:
        if self._stream is not None and not self._stream.lost:
            return self._stream
        if self._stream is not None:
            await self._stream.close()
        self._stream, self._stream_mode = None, None
        stream = self._pool.open_stream(self._grammar)
        await stream.open()
        self._stream = stream
        return stream

    async def _run_ops(self) -> None:
        failed = True  # no utterance is open until a _Begin succeeds
        while True:
            op = await self._ops.get()
            if op is None:
                return
            try:
                if isinstance(op, _Open):
                    await self._ensure_stream()
                elif isinstance(op, _Begin):
                    failed = True
                    await self._begin(op)
                    failed = False
                elif isinstance(op, _Feed):
                    if not failed and self._stream is not None:
                        await self._stream.feed(op.audio)
                else:
                    text = "" if failed else await self._end()
                    failed = True
                    await self._push_result(text, op.capture)
            except Exception as exc:  # noqa: BLE001 - a VAD stop still gets its transcript
                failed = True
                logger.warning(f"{self}: recognition failed: {exc}")
                await self.push_error(f"{self}: recognition failed: {exc}", exception=exc)
                if isinstance(op, _End):
                    await self._push_result("", op.capture)

    async def _begin(self, op: _Begin) -> None:
        stream = await self._ensure_stream()
        if op.mode != self._stream_mode:
            await stream.set_mode(op.mode)
            self._stream_mode = op.mode
        await stream.begin()
        if op.preroll:
            await stream.feed(op.preroll)

    async def _end(self) -> str:
        assert self._stream is not None
        if self._trailing_silence:
            await self._stream.feed(self._trailing_silence)
        return await self._stream.end()

    async def _push_result(self, text: str, captured: bytes | None) -> None:
        logger.debug(f"{self}: final transcript [{text}]")
        await self.emit_stt_usage_metrics()
        await self.push_frame(
            TranscriptionFrame(
                text,
                self._user_id,
                time_now_iso8601(),
                language=Language.EN_US,
                finalized=True,
            )
        )
        if captured is not None:
            await self.push_frame(
                RecordedUtteranceFrame(text=text, audio=captured, sample_rate=SAMPLE_RATE)
            )
