"""The benchmark's callers: N concurrent calls from their own process, one gRPC channel each.

    python -m tests.bench.loadgen --target 127.0.0.1:PORT --key KEY --calls N [--cpu 1]

Every call streams 20 ms chunks of linear16/16 kHz in real time (silence when it has nothing to
say), like a phone. Its script, repeated `--rounds` times:

1. While the agent speaks (first the greeting), wait 0.8-1.6 s, then say a short phrase over it
   (barge-in). Record the acoustic onset of the phrase and when `interruption` arrives; count
   audio of the interrupted utterance that still arrives after it (stale audio).
2. The agent answers the phrase: record its acoustic end and the first audio of the answer.
3. Let the answer play out, wait 0.5 s, ask a question, record its acoustic end and the first
   audio of the next answer; that answer is what the next round barges in on.

Acoustic onset and end come from the samples: the first and last sample louder than 2% of the
phrase's peak (espeak pads its speech with digital silence). A sample's time is when it was
"spoken": its chunk is sent once the chunk's 20 ms have elapsed, as a phone sends what its
microphone captured, so a sample at offset o in a chunk sent at t was spoken at t - 20 ms + o.
Times are `time.monotonic()` (CLOCK_MONOTONIC), the same clock as the gateway process's.

Agent audio is played by a virtual loudspeaker that starts at an utterance's first chunk; a chunk
arriving more than 40 ms after the loudspeaker needed it is an underrun.

Writes one JSON object to stdout: per-call results and the generator's own pacing lateness.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

CHUNK_MS = 20
RATE = 16000
CHUNK_SAMPLES = RATE * CHUNK_MS // 1000
CHUNK_BYTES = CHUNK_SAMPLES * 2
UNDERRUN_TOLERANCE_SECS = 0.04
# Spoken by several espeak voices, so onsets differ as real callers' do.
BARGE_IN_TEXTS = (
    "excuse me I have a question",
    "sorry can I stop you there",
    "hold on a second",
    "wait I need to ask something",
)
QUESTION_TEXTS = (
    "what time do you open on saturday",
    "where is your office",
    "how much does a checkup cost",
)
VOICES = ("en-us", "en-gb-x-rp", "en-us+f3")


@dataclass(frozen=True)
class Phrase:
    label: str
    pcm: bytes  # whole chunks of S16LE 16 kHz
    onset: int  # first speech sample
    end: int  # one past the last speech sample


def render_phrase(text: str, voice: str = "en-us") -> Phrase:
    import numpy as np

    from tests.audio_helpers import speech

    pcm = speech(text, RATE, voice=voice)
    samples = np.abs(np.frombuffer(pcm, dtype=np.int16).astype(np.int32))
    loud = np.flatnonzero(samples > 0.02 * samples.max())
    padding = (-len(pcm)) % CHUNK_BYTES
    return Phrase(f"{voice}: {text}", pcm + bytes(padding), int(loud[0]), int(loud[-1]) + 1)


@dataclass
class Spoken:
    """One phrase being sent: when its acoustic onset and end went out."""

    phrase: Phrase
    onset_t: float | None = None
    end_t: float | None = None


@dataclass
class Utterance:
    first_t: float
    t0: float  # when the virtual loudspeaker started it (moved on by an underrun)
    secs: float = 0.0  # audio received
    last_t: float = 0.0
    stale_chunks: int = 0
    stale_ms: float = 0.0


@dataclass
class CallResult:
    index: int
    call_id: str = ""
    barge_ins: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)
    underruns: int = 0
    underrun_ms: float = 0.0
    utterances: int = 0
    stale_chunks: int = 0
    stale_ms: float = 0.0
    errors: list[str] = field(default_factory=list)
    first_audio_t: float | None = None
    script_end_t: float | None = None
    send_late: list[float] = field(default_factory=list)


class BenchCall:
    def __init__(
        self,
        index: int,
        target: str,
        key: str,
        agent: str,
        rounds: int,
        barge: list[Phrase],
        question: list[Phrase],
        seed: int,
    ) -> None:
        self.result = CallResult(index)
        self._target = target
        self._key = key
        self._agent = agent
        self._rounds = rounds
        self._barge = barge
        self._question = question
        self._rng = random.Random(seed)
        self._utterances: dict[int, Utterance] = {}
        self._interrupted: dict[int, float] = {}
        self._pending: asyncio.Queue[Spoken] = asyncio.Queue()
        self._changed = asyncio.Condition()
        self._ended = False

    async def run(self, start_at: float) -> CallResult:
        from voicegw_client import VoiceClient

        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        result = self.result
        try:
            async with VoiceClient(self._target, self._key) as client:
                conversation = await client.converse(self._agent)
                receiver = asyncio.create_task(self._receive(conversation))
                sender = asyncio.create_task(self._send(conversation))
                try:
                    await self._script()
                except TimeoutError as e:
                    result.errors.append(f"timeout: {e}")
                result.script_end_t = time.monotonic()
                await conversation.hangup()
                try:
                    await asyncio.wait_for(asyncio.shield(receiver), 10)
                except TimeoutError:
                    result.errors.append("no session_ended within 10 s of the hangup")
                sender.cancel()
                receiver.cancel()
                await asyncio.gather(sender, receiver, return_exceptions=True)
        except Exception as e:  # noqa: BLE001 - a failed call is a result, not a crash
            result.errors.append(f"{type(e).__name__}: {e}")
        result.utterances = len(self._utterances)
        result.stale_chunks = sum(u.stale_chunks for u in self._utterances.values())
        result.stale_ms = sum(u.stale_ms for u in self._utterances.values())
        for barge in result.barge_ins:
            utterance = self._utterances.get(barge["utterance"])
            barge["stale_chunks"] = utterance.stale_chunks if utterance else 0
        return result

    # The script -------------------------------------------------------------------------------

    async def _wait(self, what: str, predicate: Any, timeout: float) -> None:
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate() or self._ended)

        try:
            await asyncio.wait_for(check(), timeout)
        except TimeoutError:
            raise TimeoutError(what) from None
        if not predicate():
            raise TimeoutError(f"call ended while waiting for {what}")

    async def _next_utterance(self, after: int, what: str) -> int:
        def newer() -> bool:
            return any(u > after for u in self._utterances)

        await self._wait(what, newer, 15.0)
        return min(u for u in self._utterances if u > after)

    async def _played_out(self, utterance_id: int) -> None:
        """Until the loudspeaker has played all of the utterance and nothing more is coming."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self._ended:
            u = self._utterances[utterance_id]
            now = time.monotonic()
            if now > u.t0 + u.secs + 0.05 and now - u.last_t > 0.3:
                return
            await asyncio.sleep(0.1)

    async def _script(self) -> None:
        result = self.result
        current = await self._next_utterance(0, "the greeting")
        result.first_audio_t = self._utterances[current].first_t
        for _ in range(self._rounds):
            await asyncio.sleep(self._rng.uniform(0.8, 1.6))
            spoken = Spoken(self._rng.choice(self._barge))
            await self._pending.put(spoken)
            await self._wait(
                f"interruption of utterance {current}",
                lambda u=current: u in self._interrupted,  # type: ignore[misc]
                10,
            )
            result.barge_ins.append(
                {
                    "utterance": current,
                    "phrase": spoken.phrase.label,
                    "onset": spoken.onset_t,
                    "interruption": self._interrupted[current],
                }
            )
            answer = await self._next_utterance(current, "the answer to the barge-in")
            self._record_response(spoken, answer, "barge_in")
            await self._played_out(answer)
            await asyncio.sleep(0.5)
            spoken = Spoken(self._rng.choice(self._question))
            await self._pending.put(spoken)
            current = await self._next_utterance(answer, "the answer to the question")
            self._record_response(spoken, current, "question")

    def _record_response(self, spoken: Spoken, utterance_id: int, kind: str) -> None:
        first = self._utterances[utterance_id].first_t
        if spoken.end_t is None or first < spoken.end_t:
            self.result.errors.append(f"{kind}: answered before the end of speech")
            return
        self.result.responses.append(
            {"kind": kind, "utterance": utterance_id, "speech_end": spoken.end_t, "first": first}
        )

    # The wire ---------------------------------------------------------------------------------

    async def _receive(self, conversation: Any) -> None:
        from voicegw_client import AgentAudio, Interruption, SessionStarted

        try:
            async for event in conversation:
                now = time.monotonic()
                if isinstance(event, AgentAudio):
                    if self._on_audio(now, event.utterance_id, len(event.data) / 2 / RATE):
                        async with self._changed:
                            self._changed.notify_all()
                elif isinstance(event, Interruption):
                    self._interrupted.setdefault(event.utterance_id, now)
                    async with self._changed:
                        self._changed.notify_all()
                elif isinstance(event, SessionStarted):
                    self.result.call_id = event.session_id
        except Exception as e:  # noqa: BLE001
            self.result.errors.append(f"stream: {type(e).__name__}: {e}")
        finally:
            self._ended = True
            async with self._changed:
                self._changed.notify_all()

    def _on_audio(self, now: float, utterance_id: int, secs: float) -> bool:
        """Accounts one chunk; True when it starts a new utterance."""
        u = self._utterances.get(utterance_id)
        if u is None:
            self._utterances[utterance_id] = Utterance(now, now, secs, now)
            return True
        if utterance_id in self._interrupted:
            u.stale_chunks += 1
            u.stale_ms += secs * 1000
            return False
        needed = u.t0 + u.secs
        if now > needed + UNDERRUN_TOLERANCE_SECS:
            self.result.underruns += 1
            self.result.underrun_ms += (now - needed) * 1000
            u.t0 = now - u.secs
        u.secs += secs
        u.last_t = now
        return False

    async def _send(self, conversation: Any) -> None:
        silence = bytes(CHUNK_BYTES)
        spoken: Spoken | None = None
        chunk_index = 0
        late = self.result.send_late
        next_at = time.monotonic() + CHUNK_MS / 1000
        try:
            while not self._ended:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                now = time.monotonic()
                late.append(now - next_at)
                if spoken is None and not self._pending.empty():
                    spoken, chunk_index = self._pending.get_nowait(), 0
                if spoken is not None:
                    phrase = spoken.phrase
                    start = chunk_index * CHUNK_BYTES
                    chunk = phrase.pcm[start : start + CHUNK_BYTES]
                    first, last = start // 2, start // 2 + CHUNK_SAMPLES
                    spoken_at = now - CHUNK_MS / 1000  # when the chunk's first sample was said
                    if first <= phrase.onset < last:
                        spoken.onset_t = spoken_at + (phrase.onset - first) / RATE
                    if first < phrase.end <= last:
                        spoken.end_t = spoken_at + (phrase.end - first) / RATE
                    chunk_index += 1
                    if chunk_index * CHUNK_BYTES >= len(phrase.pcm):
                        spoken = None
                else:
                    chunk = silence
                await conversation.send_audio(chunk)
                next_at += CHUNK_MS / 1000
        except Exception:  # noqa: BLE001 - the call ended under us; the receiver records how
            return


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    return {"count": len(ordered), "p50": at(50), "p99": at(99), "max": ordered[-1]}


async def run_load(args: argparse.Namespace) -> dict[str, Any]:
    barge = [render_phrase(t, v) for t in BARGE_IN_TEXTS for v in VOICES]
    question = [render_phrase(t, v) for t in QUESTION_TEXTS for v in VOICES]
    calls = [
        BenchCall(i, args.target, args.key, args.agent, args.rounds, barge, question, args.seed + i)
        for i in range(args.calls)
    ]
    t0 = time.monotonic() + 0.2
    step = args.ramp_secs / max(1, args.calls)
    results = await asyncio.gather(*(c.run(t0 + i * step) for i, c in enumerate(calls)))
    late: list[float] = []
    rows = []
    for r in results:
        late.extend(r.send_late)
        row = {k: v for k, v in vars(r).items() if k != "send_late"}
        rows.append(row)
    return {
        "calls": rows,
        "send_late": _percentiles(late),
        "phrases": {p.label: (p.end - p.onset) / RATE for p in barge + question},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--agent", default="secretary")
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ramp-secs", type=float, default=1.0, help="spread of call starts")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    report = asyncio.run(run_load(args))
    out.write(json.dumps(report) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
