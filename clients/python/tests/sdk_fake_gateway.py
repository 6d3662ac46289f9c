"""A scripted fake gateway (a real grpc.aio server on 127.0.0.1:0) and audio test helpers.

It speaks the real VoiceService protocol (config first, session_started, paced agent audio
tagged with utterance ids, turn events, interruption on barge-in, session_ended then OK, and
statuses with ErrorInfo for refusals), so the SDK and `voicegw talk` are exercised over real
sockets. It stands in for the server only; the client code under test is the real one. It
detects caller speech with a plain energy threshold on synthetic tones, so these tests need
none of the server's speech engines, and it decodes mu-law with its own formula so it checks
the SDK's encoder instead of trusting it.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import struct
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from voicegw.v1 import voice_pb2 as pb
from voicegw.v1 import voice_pb2_grpc

CHUNK_MS = 20
SPEECH_RMS = 1000.0  # caller tones are ~5000 RMS, silence is 0
USER_STOP_MS = 200  # silence that ends a user turn
API_KEY = "vg_test_0123456789abcdef"


# --- independent audio helpers for the fake (not the SDK's code) ---------------------------------


def ulaw_to_linear(code: int) -> int:
    """ITU-T G.711 mu-law expansion, written from the standard's formula."""
    code = ~code & 0xFF
    sign, exponent, mantissa = code & 0x80, (code >> 4) & 0x07, code & 0x0F
    magnitude = ((2 * mantissa + 33) << (exponent + 2)) - 132
    return -magnitude if sign else magnitude


def linear_to_ulaw(sample: int) -> int:
    """G.711 mu-law compression: bias 132, segment = position of the top bit."""
    sign = 0x80 if sample < 0 else 0x00
    magnitude = min(abs(sample), 32635) + 132
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def tone(freq: float, ms: int, rate: int, amplitude: int = 8000) -> list[int]:
    n = rate * ms // 1000
    return [round(amplitude * math.sin(2 * math.pi * freq * i / rate)) for i in range(n)]


def pcm16(samples: list[int]) -> bytes:
    return array("h", samples).tobytes()


def rms(samples: list[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / len(samples)) if samples else 0.0


def dominant_frequency(samples: list[int], rate: int) -> float:
    """Frequency from the count of upward zero crossings; enough for one clean tone."""
    crossings = sum(1 for a, b in itertools.pairwise(samples) if a < 0 <= b)
    return crossings * rate / len(samples)


def write_wav(path: str, samples: list[int], rate: int, channels: int = 1) -> None:
    """A 16-bit PCM WAV; with channels > 1 every sample is repeated on each channel."""
    frames = pcm16([s for s in samples for _ in range(channels)])
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(frames),
        b"WAVE",
        b"fmt ",
        16,
        1,
        channels,
        rate,
        rate * 2 * channels,
        2 * channels,
        16,
        b"data",
        len(frames),
    )
    with open(path, "wb") as f:
        f.write(header + frames)


def error_info_details(code: int, message: str, reason: str) -> bytes:
    """A serialised google.rpc.Status carrying an ErrorInfo, encoded by hand."""

    def field_bytes(number: int, payload: bytes) -> bytes:
        return bytes([number << 3 | 2, len(payload)]) + payload

    info = field_bytes(1, reason.encode()) + field_bytes(2, b"voicegw.dev")
    detail = any_pb2.Any(type_url="type.googleapis.com/google.rpc.ErrorInfo", value=info)
    return (
        bytes([0x08, code])
        + field_bytes(2, message.encode())
        + field_bytes(3, detail.SerializeToString())
    )


# --- the fake server -----------------------------------------------------------------------------


@dataclass
class Script:
    """What the fake agent does in a call."""

    agent: str = "secretary"
    greeting_ms: int = 400
    reply_ms: int = 300
    lead_ms: float = 200.0  # how far ahead of real time agent audio is sent
    answer: bool = True  # reply after the caller's turn
    goodbye_after_reply: bool = False  # end the call itself (agent_goodbye) after replying
    abort_after_greeting: tuple[grpc.StatusCode, str] | None = None
    refuse: tuple[grpc.StatusCode, str, str] | None = None  # code, message, ErrorInfo reason


@dataclass
class Chunk:
    encoded: bytes
    pcm: list[int]
    speech: bool
    after_greeting: bool  # the greeting's bot_stopped had been sent when it arrived


@dataclass
class CallRecord:
    metadata: dict[str, str] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list)  # request kinds, in arrival order
    # Audio and marks interleaved as they arrived: ("speech" | "silence") or ("mark", id, ms).
    timeline: list[tuple[str | int, ...]] = field(default_factory=list)
    config: pb.SessionConfig | None = None
    chunks: list[Chunk] = field(default_factory=list)
    marks: list[tuple[int, int]] = field(default_factory=list)
    marks_monotonic: bool = True
    texts: list[str] = field(default_factory=list)
    dtmf: list[str] = field(default_factory=list)
    sent_audio_ms: dict[int, int] = field(default_factory=dict)
    interruptions: list[int] = field(default_factory=list)
    end_reason: str = ""
    odd_chunks: int = 0  # audio chunks that were not exactly 20 ms

    @property
    def speech_chunks(self) -> list[Chunk]:
        return [c for c in self.chunks if c.speech]


class _FakeCall:
    def __init__(
        self,
        context: grpc.aio.ServicerContext,
        record: CallRecord,
        script: Script,
        in_fmt: pb.AudioFormat,
        out_fmt: pb.AudioFormat,
    ) -> None:
        self.context = context
        self.record = record
        self.script = script
        self.in_fmt = in_fmt
        self.out_fmt = out_fmt
        self.lock = asyncio.Lock()
        self.triggers: asyncio.Queue[str] = asyncio.Queue()
        self.speaking: int | None = None
        self.interrupted: set[int] = set()
        self.greeting_over = False
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()

    async def write(self, **response: object) -> None:
        await self.context.write(pb.ConverseResponse(**response))  # type: ignore[arg-type]

    def decode(self, data: bytes) -> list[int]:
        if self.in_fmt.encoding == pb.AUDIO_ENCODING_PCMU:
            return [ulaw_to_linear(b) for b in data]
        return list(array("h", data))

    def encode_out(self, samples: list[int]) -> bytes:
        if self.out_fmt.encoding == pb.AUDIO_ENCODING_PCMU:
            return bytes(linear_to_ulaw(s) for s in samples)
        return pcm16(samples)

    async def speak(self, utterance: int, ms: int, text: str) -> None:
        """Agent speech: bot_started, paced 20 ms chunks, bot_stopped (also when cut off)."""
        async with self.lock:
            await self.write(
                turn=pb.TurnEvent(kind=pb.TURN_EVENT_KIND_BOT_STARTED, utterance_id=utterance)
            )
            await self.write(
                transcript=pb.Transcript(
                    role=pb.ROLE_AGENT, text=text, final=True, utterance_id=utterance
                )
            )
            self.speaking = utterance
        rate = self.out_fmt.sample_rate_hz
        samples = tone(300, ms, rate, amplitude=6000)
        step = rate * CHUNK_MS // 1000
        t0 = self.loop.time()
        sent_ms = 0
        for start in range(0, len(samples), step):
            ahead = t0 + (sent_ms - self.script.lead_ms) / 1000 - self.loop.time()
            if ahead > 0:
                await asyncio.sleep(ahead)  # pacing, as the real gateway does
            async with self.lock:
                if utterance in self.interrupted:
                    break
                data = self.encode_out(samples[start : start + step])
                await self.write(audio=pb.AgentAudio(data=data, utterance_id=utterance))
                sent_ms += CHUNK_MS
                self.record.sent_audio_ms[utterance] = sent_ms
        async with self.lock:
            self.speaking = None
            await self.write(
                turn=pb.TurnEvent(kind=pb.TURN_EVENT_KIND_BOT_STOPPED, utterance_id=utterance)
            )

    async def read_loop(self) -> None:
        in_speech = False
        silent_ms = 0
        chunk_bytes = (
            self.in_fmt.sample_rate_hz
            * CHUNK_MS
            // 1000
            * (2 if self.in_fmt.encoding == pb.AUDIO_ENCODING_LINEAR16 else 1)
        )
        while True:
            request = await self.context.read()
            if request is grpc.aio.EOF:  # type: ignore[attr-defined]
                await self.triggers.put("hangup")
                return
            kind = request.WhichOneof("request")
            self.record.kinds.append(kind)
            if kind == "audio":
                data = request.audio.data
                if len(data) != chunk_bytes:
                    self.record.odd_chunks += 1
                pcm = self.decode(data)
                speech = rms(pcm) > SPEECH_RMS
                self.record.chunks.append(Chunk(data, pcm, speech, self.greeting_over))
                self.record.timeline.append(("speech" if speech else "silence",))
                if speech:
                    silent_ms = 0
                    if not in_speech:
                        in_speech = True
                        async with self.lock:
                            await self.write(
                                turn=pb.TurnEvent(kind=pb.TURN_EVENT_KIND_USER_STARTED)
                            )
                            if self.speaking is not None:
                                self.interrupted.add(self.speaking)
                                self.record.interruptions.append(self.speaking)
                                await self.write(
                                    interruption=pb.Interruption(utterance_id=self.speaking)
                                )
                elif in_speech:
                    silent_ms += CHUNK_MS
                    if silent_ms >= USER_STOP_MS:
                        in_speech = False
                        async with self.lock:
                            await self.write(
                                turn=pb.TurnEvent(kind=pb.TURN_EVENT_KIND_USER_STOPPED)
                            )
                        await self.triggers.put("user_stopped")
            elif kind == "playback_mark":
                mark = request.playback_mark
                previous = [ms for u, ms in self.record.marks if u == mark.utterance_id]
                if previous and mark.played_ms < previous[-1]:
                    self.record.marks_monotonic = False
                self.record.marks.append((mark.utterance_id, mark.played_ms))
                self.record.timeline.append(("mark", mark.utterance_id, mark.played_ms))
            elif kind == "text":
                self.record.texts.append(request.text.text)
            elif kind == "dtmf":
                self.record.dtmf.append(request.dtmf.digits)
            elif kind == "hangup":
                await self.triggers.put("hangup")
                return
            elif kind == "config":
                await self.triggers.put("duplicate_config")
                return

    async def run(self) -> None:
        await self.write(
            session_started=pb.SessionStarted(
                session_id="call-1",
                agent=self.script.agent,
                agent_version=3,
                input_format=self.in_fmt,
                output_format=self.out_fmt,
            )
        )
        reader = asyncio.create_task(self.read_loop())
        reason = pb.END_REASON_CALLER_HANGUP
        try:
            if self.script.greeting_ms:
                await self.speak(1, self.script.greeting_ms, "Hello, how can I help?")
            self.greeting_over = True
            if self.script.abort_after_greeting:
                code, message = self.script.abort_after_greeting
                await self.context.abort(code, message)
            utterance = 1
            while True:
                trigger = await self.triggers.get()
                if trigger == "hangup":
                    break
                if trigger == "duplicate_config":
                    await self.context.abort(grpc.StatusCode.INVALID_ARGUMENT, "duplicate config")
                if trigger == "user_stopped" and self.script.answer:
                    utterance += 1
                    async with self.lock:
                        await self.write(
                            transcript=pb.Transcript(
                                role=pb.ROLE_USER, text="hello there", final=True
                            )
                        )
                        await self.write(latency=pb.LatencyReport(user_to_bot_ms=420, stt_ms=90))
                    await self.speak(utterance, self.script.reply_ms, "Nice to meet you.")
                    if self.script.goodbye_after_reply:
                        reason = pb.END_REASON_AGENT_GOODBYE
                        break
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        self.record.end_reason = pb.EndReason.Name(reason)
        billed = math.ceil(self.loop.time() - self.started)
        await self.write(session_ended=pb.SessionEnded(reason=reason, billed_seconds=billed))


class FakeVoiceService(voice_pb2_grpc.VoiceServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script
        self.calls: list[CallRecord] = []

    async def Converse(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:
        metadata = context.invocation_metadata() or ()
        record = CallRecord(metadata={k: v for k, v in metadata if isinstance(v, str)})
        self.calls.append(record)
        first = await context.read()
        if first is grpc.aio.EOF or first.WhichOneof("request") != "config":  # type: ignore[attr-defined]
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "config must come first")
        record.kinds.append("config")
        config = first.config
        record.config = config
        if record.metadata.get("authorization") != f"Bearer {API_KEY}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid or revoked API key")
        if self.script.refuse is not None:
            code, message, reason = self.script.refuse
            await context.abort(
                code,
                message,
                trailing_metadata=(
                    ("grpc-status-details-bin", error_info_details(code.value[0], message, reason)),
                ),
            )
        if config.agent != self.script.agent:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"agent {config.agent!r} not found")
        in_fmt = config.input_format
        out_fmt = config.output_format if config.HasField("output_format") else in_fmt
        for fmt in (in_fmt, out_fmt):
            if fmt.encoding not in (pb.AUDIO_ENCODING_LINEAR16, pb.AUDIO_ENCODING_PCMU):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "fake supports l16/pcmu")
        await _FakeCall(context, record, self.script, in_fmt, out_fmt).run()


@dataclass
class FakeGateway:
    target: str
    service: FakeVoiceService

    @property
    def call(self) -> CallRecord:
        assert len(self.service.calls) == 1, f"{len(self.service.calls)} calls"
        return self.service.calls[0]


StartGateway = Callable[..., Awaitable[FakeGateway]]
