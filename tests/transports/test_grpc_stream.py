"""The gRPC door over a real socket, with a tiny echo pipeline instead of an agent.

What is under test is the wire mapping: formats decoded and resampled once on the way in,
resampled and encoded on the way out, pacing, interruption, and protocol errors.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner
from voicegw.v1 import voice_pb2 as pb
from voicegw.v1 import voice_pb2_grpc

from pipelines.utterances import UtteranceRegistry
from transports.codecs import g711
from transports.events import EndReason, EndRequest
from transports.grpc_stream import GrpcStreamDoor, StreamLimits
from transports.grpc_stream.wire import spec_from_proto

ENCODINGS = {
    "linear16": pb.AUDIO_ENCODING_LINEAR16,
    "pcmu": pb.AUDIO_ENCODING_PCMU,
    "pcma": pb.AUDIO_ENCODING_PCMA,
}


class Echo(FrameProcessor):
    """Plays caller audio straight back as one agent utterance; DTMF '#' interrupts it."""

    def __init__(self, burst_secs: float = 0.0) -> None:
        super().__init__()
        self._started = False
        self._burst = burst_secs

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            if not self._started:
                self._started = True
                await self.push_frame(TTSStartedFrame(context_id="echo"))
                if self._burst:
                    silence = bytes(int(16000 * self._burst) * 2)
                    await self.push_frame(TTSAudioRawFrame(silence, 16000, 1, context_id="echo"))
            if not self._burst:
                await self.push_frame(
                    TTSAudioRawFrame(frame.audio, frame.sample_rate, 1, context_id="echo")
                )
        elif isinstance(frame, InputDTMFFrame) and frame.button.value == "#":
            await self.push_frame(InterruptionFrame())
        else:
            await self.push_frame(frame, direction)


@dataclass
class Control:
    ended: asyncio.Future[EndRequest] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    marks: list[tuple[int, int]] = field(default_factory=list)

    def request_end(self, request: EndRequest) -> None:
        if not self.ended.done():
            self.ended.set_result(request)

    def on_playback_mark(self, utterance_id: int, played_ms: int) -> None:
        self.marks.append((utterance_id, played_ms))

    def on_barge_in(self, vad_to_interruption_secs: float) -> None:
        pass

    def on_inbound_activity(self, *, audio_secs: float = 0.0) -> None:
        pass


class EchoService(voice_pb2_grpc.VoiceServiceServicer):
    def __init__(self, burst_secs: float = 0.0, limits: StreamLimits | None = None) -> None:
        self.burst_secs = burst_secs
        self.limits = limits
        self.controls: list[Control] = []
        self.doors: list[GrpcStreamDoor] = []

    async def Converse(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:
        first = await context.read()
        spec_in = spec_from_proto(first.config.input_format, "input")
        spec_out = (
            spec_from_proto(first.config.output_format, "output")
            if first.config.HasField("output_format")
            else spec_in
        )
        control = Control()
        self.controls.append(control)
        door = GrpcStreamDoor(
            context, spec_in, spec_out, control, UtteranceRegistry(), limits=self.limits
        )
        self.doors.append(door)
        pipeline = Pipeline(
            [door.transport.input(), Echo(self.burst_secs), door.transport.output()]
        )
        worker = PipelineWorker(
            pipeline,
            params=PipelineParams(
                audio_in_sample_rate=16000, audio_out_sample_rate=spec_out.sample_rate
            ),
            enable_rtvi=False,
            idle_timeout_secs=None,
            cancel_on_idle_timeout=False,
            cancel_runner_on_idle_timeout=False,
        )
        run = asyncio.create_task(WorkerRunner(handle_sigint=False).run(worker))
        try:
            await asyncio.wait({run, control.ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Also when the server cancels this handler (a test stopping it before the door saw
            # the client go): the pipeline has its own task and would outlive the test, to hang
            # the event loop's teardown.
            if not run.done():
                await worker.cancel()
                await run
        request = control.ended.result() if control.ended.done() else None
        await door.close()
        if request is not None and request.status_code:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.detail)


@asynccontextmanager
async def serving(service: EchoService) -> AsyncIterator[str]:
    """`service` on a real gRPC server on a free port; yields its address."""
    server = grpc.aio.server()
    voice_pb2_grpc.add_VoiceServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[str, EchoService]]:
    service = EchoService()
    async with serving(service) as address:
        yield address, service


def tone(freq: float, secs: float, rate: int) -> bytes:
    t = np.arange(int(secs * rate)) / rate
    return (np.sin(2 * math.pi * freq * t) * 8000).astype("<i2").tobytes()


def encode(pcm: bytes, encoding: str) -> bytes:
    return {"pcmu": g711.ulaw_encode, "pcma": g711.alaw_encode}.get(encoding, lambda b: b)(pcm)


def decode(payload: bytes, encoding: str) -> bytes:
    return {"pcmu": g711.ulaw_decode, "pcma": g711.alaw_decode}.get(encoding, lambda b: b)(payload)


def dominant_hz(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def config(encoding: str, rate: int, out: tuple[str, int] | None = None) -> pb.ConverseRequest:
    cfg = pb.SessionConfig(
        agent="echo", input_format=pb.AudioFormat(encoding=ENCODINGS[encoding], sample_rate_hz=rate)
    )
    if out:
        cfg.output_format.CopyFrom(
            pb.AudioFormat(encoding=ENCODINGS[out[0]], sample_rate_hz=out[1])
        )
    return pb.ConverseRequest(config=cfg)


FORMATS = [("linear16", r) for r in (8000, 16000, 24000, 48000)] + [("pcmu", 8000), ("pcma", 8000)]


@pytest.mark.parametrize(("encoding", "rate"), FORMATS)
async def test_each_format_round_trips(
    echo_server: tuple[str, EchoService], encoding: str, rate: int
) -> None:
    target, _ = echo_server
    # A live caller keeps sending after speaking; the trailing silence flushes the resamplers.
    pcm = tone(440, 1.0, rate) + bytes(rate)  # 1 s tone, 0.5 s silence
    chunk = rate // 50 * 2  # 20 ms of 16-bit samples
    bytes_per_sec = len(encode(bytes(rate * 2), encoding))
    async with grpc.aio.insecure_channel(target) as channel:
        call = voice_pb2_grpc.VoiceServiceStub(channel).Converse()
        await call.write(config(encoding, rate))
        for i in range(0, len(pcm), chunk):
            await call.write(
                pb.ConverseRequest(audio=pb.AudioInput(data=encode(pcm[i : i + chunk], encoding)))
            )
        received = bytearray()
        async for response in call:
            if response.HasField("audio"):
                assert response.audio.utterance_id == 1
                received += response.audio.data
                if len(received) >= bytes_per_sec * 1.2:
                    break
        await call.write(pb.ConverseRequest(hangup=pb.HangupRequest()))
        await call.done_writing()
    back = decode(bytes(received), encoding)
    # The middle of the tone, away from the resamplers' start-up transient, is still 440 Hz.
    tone_part = back[int(0.3 * rate) * 2 : int(0.9 * rate) * 2]
    assert abs(dominant_hz(tone_part, rate) - 440) < 15


async def test_output_format_may_differ_from_input(echo_server: tuple[str, EchoService]) -> None:
    target, _ = echo_server
    pcm = tone(440, 0.6, 16000) + bytes(16000)
    async with grpc.aio.insecure_channel(target) as channel:
        call = voice_pb2_grpc.VoiceServiceStub(channel).Converse()
        await call.write(config("linear16", 16000, out=("pcmu", 8000)))
        for i in range(0, len(pcm), 640):
            await call.write(pb.ConverseRequest(audio=pb.AudioInput(data=pcm[i : i + 640])))
        received = bytearray()
        async for response in call:
            if response.HasField("audio"):
                received += response.audio.data
                if len(received) >= 8000 * 0.8:
                    break
        await call.done_writing()
    back = g711.ulaw_decode(bytes(received))
    assert abs(dominant_hz(back[int(0.1 * 8000) * 2 : int(0.5 * 8000) * 2], 8000) - 440) < 15


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x01\x02\x03", "whole number"),
        (bytes(2 * 16 * 5), "outside"),
        (bytes(2 * 16 * 120), "outside"),
    ],
)
async def test_malformed_audio_ends_with_invalid_argument(
    echo_server: tuple[str, EchoService], payload: bytes, message: str
) -> None:
    target, _ = echo_server
    async with grpc.aio.insecure_channel(target) as channel:
        call = voice_pb2_grpc.VoiceServiceStub(channel).Converse()
        await call.write(config("linear16", 16000))
        await call.write(pb.ConverseRequest(audio=pb.AudioInput(data=payload)))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call:
                pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (raised.value.details() or "")


async def test_duplicate_config_is_a_protocol_error(echo_server: tuple[str, EchoService]) -> None:
    target, _ = echo_server
    async with grpc.aio.insecure_channel(target) as channel:
        call = voice_pb2_grpc.VoiceServiceStub(channel).Converse()
        await call.write(config("linear16", 16000))
        await call.write(config("linear16", 16000))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in call:
                pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "duplicate config" in (raised.value.details() or "")


async def test_output_is_paced_near_real_time() -> None:
    """A 3 s burst from the pipeline reaches the client no faster than real time + lead."""
    service = EchoService(burst_secs=3.0)
    async with serving(service) as address:
        async with grpc.aio.insecure_channel(address) as channel:
            call = voice_pb2_grpc.VoiceServiceStub(channel).Converse()
            await call.write(config("linear16", 16000))
            await call.write(pb.ConverseRequest(audio=pb.AudioInput(data=bytes(640))))
            received_ms = 0.0
            first: float | None = None
            worst_lead_ms = 0.0
            async for response in call:
                if not response.HasField("audio"):
                    continue
                now = time.monotonic()
                first = first or now
                received_ms += len(response.audio.data) / 32
                worst_lead_ms = max(worst_lead_ms, received_ms - (now - first) * 1000)
                if received_ms >= 3000:
                    break
            await call.done_writing()
    # The first chunk arrives at "time zero" with its own duration already counted, so the lead
    # bound is 200 ms plus one 40 ms chunk; a slow machine only makes the lead smaller.
    assert worst_lead_ms <= 200 + 40 + 20
    assert received_ms >= 3000


async def test_interruption_stops_the_utterance(echo_server: tuple[str, EchoService]) -> None:
    target, _ = echo_server
    pcm = tone(300, 2.0, 16000)
    async with grpc.aio.insecure_channel(target) as channel:
        call = voice_pb2_grpc.VoiceServiceStub(channel).Converse()
        await call.write(config("linear16", 16000))
        for i in range(0, len(pcm), 640):
            await call.write(pb.ConverseRequest(audio=pb.AudioInput(data=pcm[i : i + 640])))
        events: list[str] = []
        async for response in call:
            kind = response.WhichOneof("response")
            events.append(kind)
            if kind == "audio" and events.count("audio") == 5:
                await call.write(pb.ConverseRequest(dtmf=pb.DtmfInput(digits="#")))
            if kind == "interruption":
                assert response.interruption.utterance_id == 1
                await call.write(pb.ConverseRequest(hangup=pb.HangupRequest()))
                await call.done_writing()
        # Nothing of utterance 1 after the interruption.
        after = events[events.index("interruption") + 1 :]
        assert "audio" not in after


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Waits for a condition the code under test exposes no event for, checking every 10 ms."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


SMALL_WINDOW = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16 * 1024)]


@pytest.mark.parametrize(
    ("limits", "detail"),
    [
        (StreamLimits(client_stall_secs=0.5), "client stopped reading for 0.5 s"),
        (StreamLimits(max_queued=8), "client stopped reading (8 messages queued)"),
    ],
    ids=["stalled-write", "full-queue"],
)
async def test_client_that_stops_reading_ends_the_call(limits: StreamLimits, detail: str) -> None:
    """Whichever comes first, a write pending too long or a full queue ends the call as the
    client's timeout, and the queue never holds more than its bound."""
    service = EchoService(burst_secs=4.0, limits=limits)
    async with serving(service) as address:
        async with grpc.aio.insecure_channel(address, options=SMALL_WINDOW) as channel:
            call = voice_pb2_grpc.VoiceServiceStub(channel).Converse()
            await call.write(config("linear16", 16000))
            await call.write(pb.ConverseRequest(audio=pb.AudioInput(data=bytes(640))))
            await until(lambda: bool(service.controls))
            ended = await asyncio.wait_for(service.controls[0].ended, 10)
            stream = service.doors[0].stream
            call.cancel()
    assert ended.reason is EndReason.CLIENT_TIMEOUT and ended.caller_gone
    assert ended.detail == detail
    assert stream.stalled
    assert stream.queued <= limits.max_queued


async def test_interruption_drops_audio_queued_for_a_slow_client() -> None:
    """A client that reads slowly has audio queued on our side; the interruption overtakes it.

    The client's 16 KiB HTTP/2 window holds 12 chunks of 40 ms; it stops reading, so the next
    chunks wait in the door's queue. After the interruption it reads everything: at most the
    window's worth (and the one write in flight) precedes the interruption, nothing follows it.
    """
    service = EchoService(burst_secs=4.0)
    async with serving(service) as address:
        async with grpc.aio.insecure_channel(address, options=SMALL_WINDOW) as channel:
            call = voice_pb2_grpc.VoiceServiceStub(channel).Converse()
            await call.write(config("linear16", 16000))
            await call.write(pb.ConverseRequest(audio=pb.AudioInput(data=bytes(640))))
            await until(lambda: bool(service.doors) and service.doors[0].stream.queued >= 24)
            queued = service.doors[0].stream.queued
            await call.write(pb.ConverseRequest(dtmf=pb.DtmfInput(digits="#")))
            events: list[tuple[str, int]] = []
            async for response in call:
                kind = response.WhichOneof("response")
                if kind == "audio":
                    events.append((kind, response.audio.utterance_id))
                elif kind == "interruption":
                    events.append((kind, response.interruption.utterance_id))
                    await call.write(pb.ConverseRequest(hangup=pb.HangupRequest()))
                    await call.done_writing()
    assert ("interruption", 1) in events
    cut = events.index(("interruption", 1))
    before, after = events[:cut], events[cut + 1 :]
    assert ("audio", 1) not in after
    # What the window held (12), the write in flight and a little HTTP/2 rounding; without the
    # purge, the `queued` chunks (24 or more) would all have come first as well.
    assert len(before) <= 18 < 12 + queued, (len(before), queued)
