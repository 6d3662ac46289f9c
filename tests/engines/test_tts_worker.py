"""The synthesis worker process: round trips, concurrency, crashes and restarts."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from pipelines.engines.espeak import synthesize
from pipelines.engines.ipc import WorkerDiedError, WorkerError
from pipelines.engines.tts_worker import TtsWorker


async def test_round_trip_matches_in_process_synthesis(tts_worker: TtsWorker) -> None:
    text = "Thank you for calling, how can I help?"
    remote = await tts_worker.synthesize(text)
    local = synthesize(text)
    assert remote.sample_rate == local.sample_rate == 22050
    assert remote.duration_secs == pytest.approx(local.duration_secs, abs=0.05)
    assert [(w.word, w.text_offset) for w in remote.words] == [
        (w.word, w.text_offset) for w in local.words
    ]


async def test_concurrent_requests_get_their_own_answers(tts_worker: TtsWorker) -> None:
    texts = [f"This is sentence number {n}." for n in range(12)]
    results = await asyncio.gather(*(tts_worker.synthesize(t) for t in texts))
    for text, result in zip(texts, results, strict=True):
        assert [w.word for w in result.words] == text.split()


async def test_voice_and_rate_reach_the_worker(tts_worker: TtsWorker) -> None:
    russian = await tts_worker.synthesize("Добрый день", voice="ru")
    assert [w.word for w in russian.words] == ["Добрый", "день"]
    slow = await tts_worker.synthesize("one two three four", rate_wpm=100)
    fast = await tts_worker.synthesize("one two three four", rate_wpm=300)
    assert fast.duration_secs < slow.duration_secs * 0.6


async def test_worker_errors_are_reported_and_the_worker_survives(tts_worker: TtsWorker) -> None:
    pid = tts_worker.pid
    with pytest.raises(WorkerError, match="no voice named 'no-such-voice'"):
        await tts_worker.synthesize("hello", voice="no-such-voice")
    assert tts_worker.pid == pid
    assert (await tts_worker.synthesize("still here")).pcm


async def test_death_fails_pending_requests_then_the_worker_restarts() -> None:
    worker = TtsWorker()
    await worker.start()
    try:
        first_pid = worker.pid
        assert first_pid is not None
        # Long enough that the kill lands while the request is in flight.
        pending = asyncio.create_task(worker.synthesize("a very long sentence " * 400))
        await asyncio.sleep(0)  # let the request reach the pipe
        os.kill(first_pid, signal.SIGKILL)
        with pytest.raises(WorkerDiedError, match=r"tts worker .*SIGKILL"):
            await asyncio.wait_for(pending, 10)

        result = await asyncio.wait_for(worker.synthesize("back again"), 30)
        assert [w.word for w in result.words] == ["back", "again"]
        assert worker.pid not in (None, first_pid)
        assert worker.restarts == 1
    finally:
        await worker.close()
    assert not worker.alive


async def test_closed_worker_refuses_requests() -> None:
    worker = TtsWorker()
    await worker.start()
    await worker.close()
    with pytest.raises(WorkerDiedError, match="closed"):
        await worker.synthesize("hello")


async def test_ipc_round_trip_is_sub_millisecond_ish(tts_worker: TtsWorker) -> None:
    samples = sorted([await tts_worker.ping() for _ in range(100)])
    # A loose bound: the point is that IPC is not where latency goes.
    assert samples[50] < 0.005
