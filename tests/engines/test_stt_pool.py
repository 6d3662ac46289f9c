"""Streaming recognition through the worker pool, on espeak-ng speech."""

from __future__ import annotations

import asyncio

import pytest

from pipelines.engines.ipc import WorkerError
from pipelines.engines.stt_pool import SttStream, SttStreamLost, SttWorkerPool
from tests.audio_helpers import chunks, noise, silence, speech
from tests.engines.faq import FAQ_JSGF, FAQ_PHRASES


async def _utterance(stream: SttStream, pcm: bytes) -> str:
    """One utterance, fed in 20 ms frames as a transport delivers them (lead and tail silence
    as a VAD with pre-roll would give)."""
    await stream.begin()
    for frame in chunks(silence(300) + pcm + silence(500)):
        await stream.feed(frame)
    return await stream.end()


async def test_grammar_mode_recognises_faq_phrases(stt_pool: SttWorkerPool) -> None:
    stream = stt_pool.open_stream(FAQ_JSGF)
    try:
        heard = [await _utterance(stream, speech(p)) for p in FAQ_PHRASES]
    finally:
        await stream.close()
    print("grammar mode:", list(zip(FAQ_PHRASES, heard, strict=True)))
    correct = sum(h == p for h, p in zip(heard, FAQ_PHRASES, strict=True))
    assert correct >= len(FAQ_PHRASES) - 1, heard
    # A miss is "" or a prefix of the phrase (the grammar's best partial path), never another
    # phrase: the agent then re-prompts instead of answering the wrong question.
    for h, p in zip(heard, FAQ_PHRASES, strict=True):
        assert h == "" or p.startswith(h), (p, h)


async def test_out_of_grammar_speech_is_not_forced_into_a_phrase(stt_pool: SttWorkerPool) -> None:
    stream = stt_pool.open_stream(FAQ_JSGF)
    try:
        heard = await _utterance(stream, speech("can I speak to a human please"))
    finally:
        await stream.close()
    assert heard not in FAQ_PHRASES


async def test_general_mode_transcribes_free_speech(stt_pool: SttWorkerPool) -> None:
    stream = stt_pool.open_stream(FAQ_JSGF)
    try:
        await stream.set_mode("general")
        heard = await _utterance(stream, speech("please call me back tomorrow morning"))
        await stream.set_mode("grammar")
        back = await _utterance(stream, speech("where are you located"))
    finally:
        await stream.close()
    assert heard.strip() != ""
    assert back == "where are you located"


async def test_grammarless_stream_uses_the_general_model(stt_pool: SttWorkerPool) -> None:
    stream = stt_pool.open_stream(None)
    try:
        await stream.set_mode("grammar")  # nothing to switch to: stays general
        heard = await _utterance(stream, speech("i would like to book an appointment"))
    finally:
        await stream.close()
    assert heard.strip() != ""
    assert heard not in FAQ_PHRASES  # a general-model guess, not a grammar phrase


@pytest.mark.parametrize("mode", ["grammar", "general"])
async def test_silence_gives_nothing(stt_pool: SttWorkerPool, mode: str) -> None:
    stream = stt_pool.open_stream(FAQ_JSGF)
    try:
        await stream.set_mode(mode)  # type: ignore[arg-type]
        assert await _utterance(stream, silence(1500)) == ""
    finally:
        await stream.close()


async def test_noise_gives_nothing_in_grammar_mode(stt_pool: SttWorkerPool) -> None:
    # The general model is not tested on noise: it reliably hears "if" in quiet hiss. Silero
    # VAD upstream does not open an utterance on hiss, and grammar mode (the default) is clean.
    stream = stt_pool.open_stream(FAQ_JSGF)
    try:
        assert await _utterance(stream, noise(1500, rms=300)) == ""
        assert await _utterance(stream, noise(1500, rms=3000, seed=1)) == ""
    finally:
        await stream.close()


async def test_empty_utterance(stt_pool: SttWorkerPool) -> None:
    stream = stt_pool.open_stream(FAQ_JSGF)
    try:
        await stream.begin()
        assert await stream.end() == ""
    finally:
        await stream.close()


async def test_concurrent_streams_do_not_mix(stt_pool: SttWorkerPool) -> None:
    phrases = ["what are your opening hours", "how much does it cost", "where are you located"]
    streams = [stt_pool.open_stream(FAQ_JSGF) for _ in phrases]
    assert sorted(stt_pool.loads)[-1] - sorted(stt_pool.loads)[0] <= 1, "least loaded first"
    try:
        for stream in streams:
            await stream.begin()
        frames = [chunks(silence(300) + speech(p) + silence(500)) for p in phrases]
        # Interleave the streams frame by frame, as concurrent calls do.
        for i in range(max(len(f) for f in frames)):
            for stream, stream_frames in zip(streams, frames, strict=True):
                if i < len(stream_frames):
                    await stream.feed(stream_frames[i])
        heard = await asyncio.gather(*(s.end() for s in streams))
    finally:
        for stream in streams:
            await stream.close()
    assert heard == phrases


async def test_closed_streams_return_decoders_for_reuse(stt_pool: SttWorkerPool) -> None:
    before = await stt_pool.stats()
    for _ in range(3):
        stream = stt_pool.open_stream(FAQ_JSGF)
        await stream.open()
        await stream.close()
    after = await stt_pool.stats()
    assert sum(s["reused"] for s in after) - sum(s["reused"] for s in before) == 3
    assert sum(s["created"] for s in after) == sum(s["created"] for s in before)


async def test_bad_grammar_fails_at_open(stt_pool: SttWorkerPool) -> None:
    stream = stt_pool.open_stream("this is not JSGF")
    with pytest.raises(WorkerError):
        await stream.open()
    with pytest.raises(RuntimeError, match="closed"):
        await stream.begin()
    good = stt_pool.open_stream(FAQ_JSGF)  # the worker is fine
    try:
        assert await _utterance(good, speech("goodbye")) in ("goodbye", "")
    finally:
        await good.close()


async def test_worker_death_loses_its_streams_and_the_pool_recovers() -> None:
    pool = SttWorkerPool(1, spare_decoders=1)
    await pool.start()
    try:
        stream = pool.open_stream(FAQ_JSGF)
        await stream.begin()
        await stream.feed(speech("where are you located"))
        pool.kill_worker(0)
        with pytest.raises(SttStreamLost, match=r"stt-0 worker .*SIGKILL"):
            await asyncio.wait_for(stream.end(), 10)
        with pytest.raises(SttStreamLost):
            await stream.begin()  # a lost stream stays lost, never silently re-attaches
        await stream.close()

        fresh = pool.open_stream(FAQ_JSGF)
        try:
            assert await asyncio.wait_for(_utterance(fresh, speech("goodbye")), 30) in (
                "goodbye",
                "",
            )
        finally:
            await fresh.close()
        assert pool.loads == [0]
    finally:
        await pool.close()
