"""Measure the offline engines: ``python -m tests.engines.bench_engines``.

Prints espeak speed, TTS worker round trips, decoder creation time, pocketsphinx speed per mode,
end() latency after real-time speech, and FAQ recognition on espeak speech. Numbers depend on the
machine and on whatever else runs on it; run it on a quiet one.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from pipelines.engines.espeak import synthesize
from pipelines.engines.stt_decoders import DecoderHost
from pipelines.engines.stt_pool import SttWorkerPool
from pipelines.engines.tts_worker import TtsWorker
from tests.audio_helpers import chunks, silence, speech
from tests.engines.faq import FAQ_JSGF, FAQ_PHRASES

SENTENCES = [
    "Thank you for calling Smith and Partners, how can I help you today?",
    "We are open from nine in the morning to five in the afternoon, Monday to Friday.",
    "Please leave your name and number after the tone and we will call you back.",
]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def bench_espeak() -> None:
    synthesize("warm up")
    audio = cpu = 0.0
    for _ in range(5):
        for text in SENTENCES:
            started = time.perf_counter()
            result = synthesize(text)
            cpu += time.perf_counter() - started
            audio += result.duration_secs
    print(f"espeak in-process: {audio / cpu:.0f}x real time ({audio:.1f}s audio in {cpu:.3f}s)")


async def bench_tts_worker() -> None:
    worker = TtsWorker()
    started = time.perf_counter()
    await worker.start()
    print(f"tts worker start (spawn + espeak init): {(time.perf_counter() - started) * 1e3:.0f} ms")
    try:
        pings = [await worker.ping() for _ in range(500)]
        print(
            f"ipc round trip (empty request): p50 {_pct(pings, 0.5) * 1e6:.0f} us, "
            f"p99 {_pct(pings, 0.99) * 1e6:.0f} us"
        )
        audio = wall = 0.0
        overheads = []
        for _ in range(5):
            for text in SENTENCES:
                local_started = time.perf_counter()
                synthesize(text)
                local = time.perf_counter() - local_started
                started = time.perf_counter()
                result = await worker.synthesize(text)
                elapsed = time.perf_counter() - started
                overheads.append(elapsed - local)
                audio += result.duration_secs
                wall += elapsed
        print(
            f"tts worker synthesize: {audio / wall:.0f}x real time incl. IPC; "
            f"per-sentence overhead vs in-process p50 {_pct(overheads, 0.5) * 1e3:.2f} ms"
        )
    finally:
        await worker.close()


def bench_decoders() -> None:
    host = DecoderHost(spare=3)
    host.prewarm()
    created = host.stats.creation_secs
    print(
        "decoder creation: "
        + ", ".join(f"{s * 1e3:.0f}" for s in created)
        + f" ms (mean {statistics.mean(created) * 1e3:.0f} ms)"
    )
    started = time.perf_counter()
    host.open(1, FAQ_JSGF)
    print(
        f"open with a spare decoder + grammar load: {(time.perf_counter() - started) * 1e3:.1f} ms"
    )
    for mode in ("grammar", "general"):
        host.set_mode(1, mode)  # type: ignore[arg-type]
        audio = cpu = 0.0
        for text in FAQ_PHRASES + SENTENCES:
            pcm = silence(300) + speech(text) + silence(500)
            started = time.perf_counter()
            host.begin(1)
            for frame in chunks(pcm, ms=100):
                host.feed(1, frame)
            host.end(1)
            cpu += time.perf_counter() - started
            audio += len(pcm) / 32000
        print(f"decode speed, {mode} mode: {audio / cpu:.1f}x real time (one core)")
    host.close(1)


async def _end_latency(pool: SttWorkerPool, mode: str, seconds: float) -> float:
    stream = pool.open_stream(FAQ_JSGF)
    try:
        await stream.set_mode(mode)  # type: ignore[arg-type]
        text = "i would like to book an appointment for next week please"
        pcm = (speech(text) + silence(3000))[: int(seconds * 32000) & ~1]
        loop = asyncio.get_running_loop()
        await stream.begin()
        started = loop.time()
        for i, frame in enumerate(chunks(pcm)):
            await asyncio.sleep(max(0.0, started + i * 0.02 - loop.time()))
            await stream.feed(frame)
        t0 = time.perf_counter()
        await stream.end()
        return time.perf_counter() - t0
    finally:
        await stream.close()


async def bench_pool() -> None:
    pool = SttWorkerPool(1, spare_decoders=1)
    await pool.start()
    try:
        for mode in ("grammar", "general"):
            samples = [await _end_latency(pool, mode, 2.0) for _ in range(3)]
            print(
                f"end() latency after 2 s of real-time audio, {mode}: "
                + ", ".join(f"{s * 1e3:.0f}" for s in samples)
                + " ms"
            )
        # Recognition: each phrase on a fresh stream (first utterance of a call), then all
        # phrases in sequence on one stream (the CMN has adapted to the voice).
        fresh = []
        for phrase in FAQ_PHRASES:
            stream = pool.open_stream(FAQ_JSGF)
            await stream.begin()
            await stream.feed(silence(300) + speech(phrase) + silence(500))
            fresh.append(await stream.end())
            await stream.close()
        stream = pool.open_stream(FAQ_JSGF)
        sequence = []
        for phrase in FAQ_PHRASES:
            await stream.begin()
            await stream.feed(silence(300) + speech(phrase) + silence(500))
            sequence.append(await stream.end())
        await stream.close()
        for label, heard in (("fresh stream", fresh), ("one stream", sequence)):
            ok = sum(h == p for h, p in zip(heard, FAQ_PHRASES, strict=True))
            misses = [(p, h) for h, p in zip(heard, FAQ_PHRASES, strict=True) if h != p]
            print(f"FAQ recognition, {label}: {ok}/{len(FAQ_PHRASES)} {misses}")
    finally:
        await pool.close()


async def main() -> None:
    bench_espeak()
    await bench_tts_worker()
    bench_decoders()
    await bench_pool()


if __name__ == "__main__":
    asyncio.run(main())
