"""Streaming speech recognition for many calls on a few pocketsphinx worker processes.

pocketsphinx holds the GIL while it decodes (about 3x real time with the general language model
on this hardware, ~20x with a phrase grammar and every senone scored for out-of-grammar
rejection), so decoding in the server process - even in a thread - stalls every call's audio
pacing. Each worker process hosts the decoders of the streams assigned to it and decodes audio
as it arrives, so when the caller stops talking only the last fraction of a second is left to
decode. (In grammar mode the first second of each utterance is buffered to measure its cepstral
mean, then caught up; see :mod:`.stt_decoders`.)

Streaming is write-only: ``begin``, ``feed`` and ``set_mode`` only queue frames on the pipe
(batched to ~100 ms of audio), and only ``open``, ``end`` and ``close`` wait for the worker. A
failure of a write-only op is reported by the next ``end()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from typing import Any, Literal

from pipelines.engines import stt_protocol as proto
from pipelines.engines.ipc import WorkerDiedError, WorkerError
from pipelines.engines.worker_process import WorkerProcess

Mode = Literal["grammar", "general"]
SAMPLE_RATE = 16000
# Decoding is throughput work; the server's event loop paces audio. Without this, workers that
# sleep and wake with every audio batch win CPU from the loop under load (measured: ticker
# lateness p99 21 ms with two real-time general-mode streams on 2 vCPUs, vs <10 ms niced).
_WORKER_NICE = 10

__all__ = ["SAMPLE_RATE", "SttStream", "SttStreamLost", "SttWorkerPool"]


class SttStreamLost(WorkerDiedError):
    """The stream's worker process died, and the stream's decoder state with it; open a new one."""


class _PoolWorker:
    def __init__(
        self, index: int, spare_decoders: int, decoder_options: dict[str, Any] | None
    ) -> None:
        args = ["--spare", str(spare_decoders)]
        if decoder_options:
            args += ["--options", json.dumps(decoder_options)]
        self.process = WorkerProcess(
            "pipelines.engines.stt_worker_main",
            name=f"stt-{index}",
            args=tuple(args),
            nice=_WORKER_NICE,
        )
        self.streams: dict[int, SttStream] = {}
        self.process.add_exit_callback(self._on_exit)

    def _on_exit(self, generation: int, why: str) -> None:
        for stream in self.streams.values():
            stream._mark_lost(generation, why)
        self.streams.clear()

    @property
    def load(self) -> tuple[int, int]:
        """Sort key: running workers first, then fewest open streams."""
        return (0 if self.process.alive else 1, len(self.streams))


class SttWorkerPool:
    """``size`` worker processes; each stream lives on the least loaded one.

    ``spare_decoders`` is how many ready-made decoders each worker keeps, so opening a stream
    does not cost a decoder creation (~0.5-0.8 s); set it to the calls you expect to start at
    once per worker. ``decoder_options`` are pocketsphinx ``Config`` settings for every decoder,
    over :class:`~pipelines.engines.stt_decoders.DecoderHost`'s defaults (which turn the
    ``fwdflat`` pass off: it made general-mode ``end()`` take ~7% of the utterance's length; and
    ``compallsen`` on: grammar-mode rejection needs every senone's score).
    """

    def __init__(
        self,
        size: int = 1,
        *,
        spare_decoders: int = 1,
        request_timeout_secs: float = 30.0,
        batch_ms: int = 100,
        decoder_options: dict[str, Any] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("an STT pool needs at least one worker")
        self._workers = [_PoolWorker(i, spare_decoders, decoder_options) for i in range(size)]
        self._timeout = request_timeout_secs
        self._batch_bytes = SAMPLE_RATE * 2 * batch_ms // 1000
        self._ids = itertools.count(1)

    @property
    def size(self) -> int:
        return len(self._workers)

    @property
    def loads(self) -> list[int]:
        return [len(w.streams) for w in self._workers]

    @property
    def pids(self) -> list[int | None]:
        return [w.process.pid for w in self._workers]

    async def start(self) -> None:
        """Start every worker; they load their first decoders in parallel."""
        await asyncio.gather(*(w.process.start() for w in self._workers))

    async def close(self) -> None:
        await asyncio.gather(*(w.process.close() for w in self._workers))

    def open_stream(self, grammar_jsgf: str | None = None) -> SttStream:
        """A stream on the least loaded worker; its decoder is claimed by its first operation.

        Call ``await stream.open()`` early (at call start) to claim the decoder and surface a
        bad grammar before the caller speaks.
        """
        worker = min(self._workers, key=lambda w: w.load)
        stream = SttStream(self, worker, next(self._ids), grammar_jsgf)
        worker.streams[stream.stream_id] = stream
        return stream

    def kill_worker(self, index: int) -> None:
        """Kill a worker process (to exercise crash handling)."""
        self._workers[index].process.kill()

    def worker_index(self, stream: SttStream) -> int:
        return self._workers.index(stream._worker)

    async def stats(self) -> list[dict[str, Any]]:
        """Per-worker decoder statistics: creations, their durations, reuses, free decoders."""
        replies = await asyncio.gather(
            *(w.process.request(proto.OP_STATS, proto.payload(0)) for w in self._workers)
        )
        return [json.loads(r) for r in replies]


class SttStream:
    """One caller's recognition state on one worker. Audio is 16 kHz S16LE mono.

    Not for concurrent use: one task drives a stream, awaiting each call in turn, which is what
    keeps ``begin``/``feed``/``end`` in order on the pipe.
    """

    def __init__(
        self, pool: SttWorkerPool, worker: _PoolWorker, stream_id: int, grammar: str | None
    ) -> None:
        self._pool = pool
        self._worker = worker
        self.stream_id = stream_id
        self.grammar = grammar
        self._generation: int | None = None
        self._lost_reason: str | None = None
        self._closed = False
        self._buffer = bytearray()

    @property
    def lost(self) -> bool:
        return self._lost_reason is not None

    def _mark_lost(self, generation: int, why: str) -> None:
        if self._generation is None or self._generation == generation:
            self._lost_reason = self._lost_reason or why

    def _check(self) -> None:
        if self._closed:
            raise RuntimeError(f"STT stream {self.stream_id} is closed")
        if self._lost_reason is not None:
            raise SttStreamLost(f"STT stream {self.stream_id} lost: {self._lost_reason}")

    async def open(self) -> None:
        """Claim a decoder and load the grammar; idempotent. Later ops call it implicitly."""
        self._check()
        if self._generation is not None:
            return
        process = self._worker.process
        body = self.grammar.encode() if self.grammar is not None else b""
        try:
            await process.request(proto.OP_OPEN, proto.payload(self.stream_id, body))
        except WorkerDiedError as exc:
            self._lost_reason = str(exc)
            self._worker.streams.pop(self.stream_id, None)
            raise SttStreamLost(f"STT stream {self.stream_id} lost: {exc}") from exc
        except WorkerError:
            self._worker.streams.pop(self.stream_id, None)
            self._closed = True
            raise
        self._generation = process.generation
        self._check()  # the worker may have died right after answering

    async def set_mode(self, mode: Mode) -> None:
        """Grammar or general language model, from the next ``begin()`` on."""
        if mode not in ("grammar", "general"):
            raise ValueError(f"unknown recognition mode {mode!r}")
        await self._send(proto.OP_MODE, mode.encode())

    async def begin(self) -> None:
        """Start an utterance."""
        self._buffer.clear()
        await self._send(proto.OP_BEGIN)

    async def feed(self, pcm16_16k: bytes) -> None:
        """Queue audio for decoding; returns without waiting for the decoder."""
        self._check()
        self._buffer += pcm16_16k
        if len(self._buffer) >= self._pool._batch_bytes:
            await self._flush()

    async def _flush(self) -> None:
        size = len(self._buffer) & ~1
        if size:
            chunk = bytes(self._buffer[:size])
            del self._buffer[:size]
            await self._send(proto.OP_AUDIO, chunk)

    async def _send(self, op: int, body: bytes = b"") -> None:
        await self.open()
        try:
            await self._worker.process.send(op, proto.payload(self.stream_id, body))
        except WorkerDiedError as exc:
            self._lost_reason = self._lost_reason or str(exc)
            raise SttStreamLost(f"STT stream {self.stream_id} lost: {exc}") from exc

    async def end(self) -> str:
        """End the utterance: the final hypothesis, "" if nothing was recognised."""
        await self.open()
        await self._flush()
        try:
            reply = await self._worker.process.request(
                proto.OP_END, proto.payload(self.stream_id), timeout_secs=self._pool._timeout
            )
        except WorkerDiedError as exc:
            self._lost_reason = self._lost_reason or str(exc)
            raise SttStreamLost(f"STT stream {self.stream_id} lost: {exc}") from exc
        self._check()
        return reply.decode()

    async def close(self) -> None:
        """Return the decoder to the worker's free list; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._worker.streams.pop(self.stream_id, None)
        if self._generation is None or self._lost_reason is not None:
            return
        process = self._worker.process
        if process.alive and process.generation == self._generation:
            with contextlib.suppress(WorkerError):
                await process.request(
                    proto.OP_CLOSE, proto.payload(self.stream_id), timeout_secs=5.0
                )
