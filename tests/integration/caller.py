"""A scripted caller for end-to-end tests, built on the public SDK.

It behaves like a phone: from the moment the call starts it streams audio in real time (20 ms
chunks, silence when it has nothing to say) and records every event with its arrival time. Tests
queue utterances and wait for events; the waits are on events, never on sleeps.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voicegw_client import (
    AgentAudio,
    AudioFormat,
    Conversation,
    Event,
    Interruption,
    SessionEnded,
    Transcript,
    TurnEvent,
    VoiceClient,
    VoiceGatewayError,
)
from voicegw_client import audio as sdk_audio
from voicegw_client._playout import Playout

CHUNK_MS = 20


@dataclass
class Recorded:
    t: float
    event: Event


@dataclass
class CallLog:
    events: list[Recorded] = field(default_factory=list)
    error: VoiceGatewayError | None = None
    status_code: str | None = None

    def of(self, kind: type) -> list[Any]:
        return [r.event for r in self.events if isinstance(r.event, kind)]

    def transcripts(self, role: str) -> list[str]:
        return [e.text for e in self.of(Transcript) if e.role == role and e.final]

    def turns(self) -> list[str]:
        return [e.kind for e in self.of(TurnEvent)]

    def audio_bytes(self, utterance_id: int | None = None) -> bytes:
        return b"".join(
            e.data
            for e in self.of(AgentAudio)
            if utterance_id is None or e.utterance_id == utterance_id
        )

    @property
    def ended(self) -> SessionEnded | None:
        ended = self.of(SessionEnded)
        return ended[0] if ended else None


class ScriptedCaller:
    def __init__(
        self,
        client: VoiceClient,
        agent: str,
        *,
        input_format: AudioFormat | None = None,
        output_format: AudioFormat | None = None,
        caller_number: str = "",
        playback_marks: bool = True,
    ) -> None:
        self._client = client
        self._agent = agent
        self.input_format = input_format or AudioFormat("linear16", 16000)
        self.output_format = output_format
        self._caller_number = caller_number
        self.log = CallLog()
        self._pending: asyncio.Queue[bytes] = asyncio.Queue()
        self._changed = asyncio.Condition()
        self._conversation: Conversation | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.finished = asyncio.Event()
        # A loudspeaker: agent audio is played in real time, dropped on an interruption, and
        # (unless `playback_marks` is off) reported back with playback marks.
        self.playout: Playout | None = None
        self._send_marks = playback_marks
        self._dropped: set[int] = set()

    async def start(self) -> ScriptedCaller:
        self._conversation = await self._client.converse(
            self._agent,
            input_format=self.input_format,
            output_format=self.output_format,
            caller_number=self._caller_number,
        )
        self._tasks = [
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._send_loop()),
        ]
        return self

    async def say(self, pcm16: bytes, rate: int) -> None:
        """Queues 16-bit PCM (any rate) to be spoken next, converted to the call's format."""
        fmt = self.input_format
        converted = sdk_audio.resample(pcm16, rate, fmt.sample_rate_hz)
        await self._pending.put(sdk_audio.encode(converted, fmt.encoding))

    async def wait_for(self, predicate: Callable[[CallLog], bool], timeout: float = 30.0) -> None:
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self.log) or self.finished.is_set())

        await asyncio.wait_for(check(), timeout)
        if not predicate(self.log):
            raise AssertionError(f"call ended before the condition held: {self.summary()}")

    async def wait_bot_stopped(self, count: int, timeout: float = 30.0) -> None:
        await self.wait_for(lambda log: log.turns().count("bot_stopped") >= count, timeout)

    async def hangup(self) -> None:
        if self._conversation is not None and not self._conversation.hung_up:
            await self._conversation.hangup()

    async def wait_end(self, timeout: float = 30.0) -> CallLog:
        await asyncio.wait_for(self.finished.wait(), timeout)
        return self.log

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._conversation is not None:
            await self._conversation.close()

    def summary(self) -> str:
        kinds = [
            type(r.event).__name__ for r in self.log.events if not isinstance(r.event, AgentAudio)
        ]
        return f"events={kinds} transcripts={[(e.role, e.text) for e in self.log.of(Transcript)]}"

    async def _receive(self) -> None:
        assert self._conversation is not None
        try:
            async for event in self._conversation:
                self.log.events.append(Recorded(time.monotonic(), event))
                self._play(event)
                async with self._changed:
                    self._changed.notify_all()
            self.log.status_code = "OK"
        except VoiceGatewayError as e:
            self.log.error = e
            self.log.status_code = e.code
        finally:
            self.finished.set()
            async with self._changed:
                self._changed.notify_all()

    def _play(self, event: Event) -> None:
        if isinstance(event, AgentAudio):
            fmt = self.output_format or self.input_format
            if self.playout is None:
                self.playout = Playout(fmt.sample_rate_hz)
            if event.utterance_id not in self._dropped:
                self.playout.push(event.utterance_id, sdk_audio.decode(event.data, fmt.encoding))
        elif isinstance(event, Interruption) and self.playout is not None:
            self._dropped.add(event.utterance_id)
            self.playout.drop()

    async def _send_loop(self) -> None:
        """Real-time audio: 20 ms every 20 ms, speech when queued, silence otherwise."""
        assert self._conversation is not None
        fmt = self.input_format
        step = fmt.bytes_for_ms(CHUNK_MS)
        silence = sdk_audio.encode(bytes(fmt.sample_rate_hz * CHUNK_MS // 1000 * 2), fmt.encoding)
        buffer = b""
        next_at = time.monotonic()
        try:
            while not self.finished.is_set() and not self._conversation.hung_up:
                if not buffer and not self._pending.empty():
                    buffer = self._pending.get_nowait()
                if buffer:
                    chunk, buffer = buffer[:step], buffer[step:]
                    if len(chunk) < step:
                        chunk += silence[: step - len(chunk)]
                else:
                    chunk = silence
                await self._conversation.send_audio(chunk)
                if self.playout is not None:
                    self.playout.advance(CHUNK_MS / 1000)
                    for utterance_id, played_ms in self.playout.take_marks():
                        if self._send_marks:
                            await self._conversation.send_playback_mark(utterance_id, played_ms)
                next_at += CHUNK_MS / 1000
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        except Exception:  # noqa: BLE001 - the call ended under us; the receiver records how
            return
