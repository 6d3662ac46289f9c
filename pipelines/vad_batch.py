"""Silero VAD for many calls at once: one model, scored in batches on the event loop.

Pipecat's `SileroVADAnalyzer` gives every call its own ONNX session and its own thread, and
scores each 32 ms window alone. Measured on the benchmark machine, that made the VAD the largest
cost of a call (about 2.2 % of a core per call, most of it per-inference overhead and thread
hand-offs) and each session held several MiB. Here every call keeps only what is really its own
(the model's recurrent state and 64-sample context, and Pipecat's VAD state machine), while the
windows of all calls that are ready in the same event-loop iteration are scored in one
`session.run`: at 10+ calls that costs well under half per window, with no thread hops and no
added wait beyond the current loop iteration.

Pipecat's own state machine (`VADAnalyzer._run_analyzer`) still decides QUIET/STARTING/SPEAKING/
STOPPING, so start/stop seconds, confidence and minimum volume mean exactly what they mean in
Pipecat; only where the confidence comes from changes.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from importlib import resources
from typing import Any

import numpy as np
import onnxruntime
from pipecat.audio.vad.silero import (
    _MODEL_RESET_INTERVAL_SECS,
    _MODEL_RESET_LOW_CONFIDENCE_WINDOWS,
    _MODEL_RESET_MAX_CONFIDENCE,
)
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState

SAMPLE_RATE = 16000
WINDOW = 512  # samples Silero scores at 16 kHz
CONTEXT = 64  # samples of the previous window the model sees before each one
_SR = np.array(SAMPLE_RATE, dtype=np.int64)

_session: onnxruntime.InferenceSession | None = None


def silero_session() -> onnxruntime.InferenceSession:
    """The process's one Silero session (`run` is thread-safe; its state is an input)."""
    global _session
    if _session is None:
        options = onnxruntime.SessionOptions()
        # One thread: calls run concurrently, so intra-op threads would only fight each other.
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = 1
        model = resources.files("pipecat.audio.vad.data").joinpath("silero_vad.onnx")
        _session = onnxruntime.InferenceSession(
            model.read_bytes(), providers=["CPUExecutionProvider"], sess_options=options
        )
    return _session


class SileroStream:
    """One audio stream's model memory."""

    __slots__ = ("context", "state")

    def __init__(self) -> None:
        self.state = np.zeros((2, 1, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT, dtype=np.float32)

    def reset(self) -> None:
        self.state = np.zeros((2, 1, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT, dtype=np.float32)


class SileroBatcher:
    """Scores the windows submitted during one loop iteration in a single model run."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[tuple[SileroStream, np.ndarray, asyncio.Future[float]]] = []
        # For tests and the benchmark: model runs, windows scored, seconds inside the model.
        self.batches = 0
        self.windows = 0
        self.model_secs = 0.0

    def score(self, stream: SileroStream, window: np.ndarray) -> asyncio.Future[float]:
        """Speech confidence of `window` (float32, WINDOW samples) given the stream's past.

        A stream must await each window before submitting its next: its state is an input.
        """
        future: asyncio.Future[float] = self._loop.create_future()
        if not self._pending:
            self._loop.call_soon(self._run)
        self._pending.append((stream, window, future))
        return future

    def _run(self) -> None:
        batch, self._pending = self._pending, []
        try:
            inputs = np.stack([np.concatenate((s.context, w)) for s, w, _ in batch])
            state = np.concatenate([s.state for s, _, _ in batch], axis=1)
            started = time.perf_counter()
            scores, new_state = silero_session().run(
                None, {"input": inputs, "state": state, "sr": _SR}
            )
            self.model_secs += time.perf_counter() - started
        except Exception as e:  # noqa: BLE001 - every waiting call hears of it, none hangs
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        self.batches += 1
        self.windows += len(batch)
        for i, (stream, _, future) in enumerate(batch):
            stream.state = new_state[:, i : i + 1, :].copy()
            stream.context = inputs[i, -CONTEXT:].copy()
            if not future.done():
                future.set_result(float(scores[i, 0]))


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SileroBatcher] = (
    weakref.WeakKeyDictionary()
)


def batcher_for(loop: asyncio.AbstractEventLoop) -> SileroBatcher:
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = SileroBatcher(loop)
    return batcher


class BatchedSileroVAD(VADAnalyzer):
    """A Pipecat VAD analyzer whose Silero scores come from the shared batcher."""

    def __init__(self, *, params: VADParams | None = None) -> None:
        super().__init__(sample_rate=SAMPLE_RATE, params=params)
        self._stream = SileroStream()
        self._scores: deque[float] = deque()
        self._windows_since_reset = 0
        self._low_confidence_windows = 0

    def set_sample_rate(self, sample_rate: int) -> None:
        if (self._init_sample_rate or sample_rate) != SAMPLE_RATE:
            raise ValueError(f"the batched Silero VAD runs at {SAMPLE_RATE} Hz, not {sample_rate}")
        super().set_sample_rate(sample_rate)

    def num_frames_required(self) -> int:
        return WINDOW

    async def analyze_audio(self, buffer: bytes) -> VADState:
        """Scores the whole windows `buffer` completes, then runs Pipecat's state machine."""
        pending = self._vad_buffer + buffer
        step = self._vad_frames_num_bytes
        batcher = batcher_for(asyncio.get_running_loop())
        for start in range(0, len(pending) - step + 1, step):
            window = np.frombuffer(pending[start : start + step], np.int16)
            score = await batcher.score(self._stream, window.astype(np.float32) / 32768.0)
            self._scores.append(score)
            self._maybe_reset(score)
        return self._run_analyzer(buffer)

    def voice_confidence(self, buffer: Any) -> float:
        """The score `analyze_audio` computed for this window, in order."""
        return self._scores.popleft()

    def _maybe_reset(self, confidence: float) -> None:
        """Pipecat's Silero reset rule: clear the model's memory every ~2 s of clear
        non-speech, never mid-speech (a stale state stops detecting speech after music or
        long silence)."""
        self._windows_since_reset += 1
        if confidence < _MODEL_RESET_MAX_CONFIDENCE:
            self._low_confidence_windows += 1
        else:
            self._low_confidence_windows = 0
        if (
            self._windows_since_reset * WINDOW >= _MODEL_RESET_INTERVAL_SECS * SAMPLE_RATE
            and self._vad_state == VADState.QUIET
            and self._low_confidence_windows >= _MODEL_RESET_LOW_CONFIDENCE_WINDOWS
        ):
            self._stream.reset()
            self._windows_since_reset = 0
