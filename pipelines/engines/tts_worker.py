"""All speech synthesis for the server, in one long-lived worker process.

espeak-ng is not thread-safe and keeps its voice in global state, and a synthesis holds the CPU
for milliseconds to tens of milliseconds - too long for the event loop that paces every call's
audio. One worker process does every synthesis serially; calls queue on its pipe. At ~300x real
time that one process serves far more concurrent speech than the rest of the server can.
"""

from __future__ import annotations

import time

from pipelines.engines import ipc
from pipelines.engines.espeak import Synthesis, WordMark
from pipelines.engines.worker_process import WorkerProcess

OP_SYNTHESIZE = ipc.FIRST_USER_OP

__all__ = ["TtsWorker", "decode_synthesis", "encode_synthesis"]


def encode_synthesis(synthesis: Synthesis) -> bytes:
    words = [[w.word, w.start_ms, w.text_offset] for w in synthesis.words]
    return ipc.pack_meta({"rate": synthesis.sample_rate, "words": words}, synthesis.pcm)


def decode_synthesis(payload: bytes) -> Synthesis:
    meta, pcm = ipc.unpack_meta(payload)
    words = [WordMark(word=w, start_ms=ms, text_offset=off) for w, ms, off in meta["words"]]
    return Synthesis(pcm=pcm, sample_rate=int(meta["rate"]), words=words)


class TtsWorker:
    """Async handle on the synthesis process (``pipelines.engines.tts_worker_main``).

    If the process dies, in-flight requests raise :class:`~pipelines.engines.ipc.WorkerDiedError`
    and a new process starts; later requests go to it.
    """

    def __init__(
        self, *, request_timeout_secs: float = 30.0, start_timeout_secs: float = 60.0
    ) -> None:
        self._process = WorkerProcess(
            "pipelines.engines.tts_worker_main",
            name="tts",
            start_timeout_secs=start_timeout_secs,
        )
        self._timeout = request_timeout_secs

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def alive(self) -> bool:
        return self._process.alive

    @property
    def restarts(self) -> int:
        return max(0, self._process.generation - 1)

    async def start(self) -> None:
        await self._process.start()

    async def close(self) -> None:
        await self._process.close()

    async def synthesize(
        self, text: str, voice: str = "en-us", rate_wpm: int | None = None
    ) -> Synthesis:
        """Synthesise ``text``; raises ``WorkerError`` (e.g. unknown voice) or its subclasses."""
        payload = ipc.pack_meta({"text": text, "voice": voice, "rate_wpm": rate_wpm})
        reply = await self._process.request(OP_SYNTHESIZE, payload, timeout_secs=self._timeout)
        return decode_synthesis(reply)

    async def ping(self) -> float:
        """Round trip of an empty request through the worker, in seconds (IPC overhead)."""
        started = time.perf_counter()
        await self._process.request(ipc.OP_PING, b"", timeout_secs=self._timeout)
        return time.perf_counter() - started
