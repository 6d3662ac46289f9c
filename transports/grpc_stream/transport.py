"""A Pipecat transport over one `Converse` stream.

Input: the stream's requests become frames (audio decoded and resampled once to the pipeline's
16 kHz, typed text, DTMF); hangup, end of stream and protocol violations are reported to the
Session through `CallControl`. Output: agent audio is encoded to the caller's format and paced at
most `max_lead_secs` ahead of real time, so a barge-in has little to flush; session events share
the same ordered queue as audio.

Back-pressure (docs/ARCHITECTURE.md): the Session judges the caller's audio rate from what the
door reports (`gateway/rate_guard.py`); the outbound queue is bounded and a client that stops
reading ends the call with `client_timeout`; a barge-in drops the interrupted utterance's queued
audio.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from loguru import logger
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
    TranscriptionFrame,
    TTSStartedFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams
from voicegw.v1 import voice_pb2 as pb

from pipelines.utterances import UtteranceRegistry
from transports.codecs.formats import AudioSpec, FormatError
from transports.door import CallControl, Liveness
from transports.events import (
    EndReason,
    EndRequest,
    InterruptionEvent,
    SessionEvent,
    SessionStartedEvent,
)
from transports.grpc_stream.wire import event_to_proto, spec_to_proto

_DTMF_KEYS = {entry.value: entry for entry in KeypadEntry}
_END_OF_OUTPUT = object()
DEFAULT_MAX_QUEUED = 256
DEFAULT_STALL_SECS = 5.0


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """What one Converse stream tolerates from its client (from the gateway's Settings)."""

    client_stall_secs: float = DEFAULT_STALL_SECS  # a write pending this long ends the call
    max_queued: int = DEFAULT_MAX_QUEUED  # responses waiting for a client that reads slowly


class GrpcCallStream:
    """The wire half of the door: reads requests and writes responses of one Converse call.

    Writes go through one queue and one writer task so audio and events keep their order and a
    slow client cannot make a pipeline task block inside `context.write`.

    Back-pressure: a client that stops reading (frozen, or a bug) makes gRPC's HTTP/2 flow
    control hold `context.write` once the stream's window and the socket buffers are full. The
    queue is bounded (`max_queued` messages, about 10 s of 40 ms audio chunks; the pacer keeps a
    reading client's queue at a handful) and the writer is watched: when one write has not
    completed for `stall_secs`, or the queue is full, the call ends through `on_stall` with
    `client_timeout`. `send` never blocks and never grows the queue past the bound: a message
    that does not fit is dropped, because the call it belongs to is ending anyway, and the
    end-of-output marker is not counted against the bound so `drain_and_close` always works.
    """

    def __init__(
        self,
        context: grpc.aio.ServicerContext,
        *,
        on_stall: Callable[[EndRequest], None] | None = None,
        max_queued: int = DEFAULT_MAX_QUEUED,
        stall_secs: float = DEFAULT_STALL_SECS,
    ) -> None:
        self._context = context
        self._outbound: deque[pb.ConverseResponse | object] = deque()
        self._ready = asyncio.Event()  # set while something is queued
        self._max_queued = max_queued
        self._stall_secs = stall_secs
        self._on_stall = on_stall
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self.write_failed = asyncio.Event()
        self.stalled = False
        self.dropped = 0  # messages refused by a full queue

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    @property
    def queued(self) -> int:
        """Responses waiting for the writer (not the one being written, nor the end marker,
        which is always last)."""
        closing = bool(self._outbound) and self._outbound[-1] is _END_OF_OUTPUT
        return len(self._outbound) - closing

    async def read(self) -> pb.ConverseRequest | None:
        """Next request, or None when the client has half-closed its side."""
        message = await self._context.read()
        if message is grpc.aio.EOF:
            return None
        assert isinstance(message, pb.ConverseRequest)
        return message

    def send(self, response: pb.ConverseResponse) -> None:
        """Queues a response; never blocks. A full queue means the client stopped reading."""
        if self._closed:
            return
        if len(self._outbound) >= self._max_queued:
            self.dropped += 1
            self._stall(f"client stopped reading ({self._max_queued} messages queued)")
            return
        self._outbound.append(response)
        self._ready.set()

    def interrupt(self, event: pb.ConverseResponse, utterance_id: int) -> int:
        """Drops the queued audio of `utterance_id` and queues `event` where the first of it
        was, ahead of the rest, so the client learns of the interruption before anything
        queued after the dropped audio. Returns how many audio messages were dropped.

        Everything queued on our side is dropped; what the client already buffered is its to
        drop when it reads `event`. Other messages keep their order.
        """
        if self._closed:
            return 0
        kept: deque[pb.ConverseResponse | object] = deque()
        position: int | None = None
        for item in self._outbound:
            if (
                isinstance(item, pb.ConverseResponse)
                and item.HasField("audio")
                and item.audio.utterance_id == utterance_id
            ):
                if position is None:
                    position = len(kept)
                continue
            kept.append(item)
        dropped = len(self._outbound) - len(kept)
        if position is None:
            kept.append(event)
        else:
            kept.insert(position, event)
        self._outbound = kept
        self._ready.set()
        return dropped

    async def drain_and_close(self) -> None:
        """Waits until everything queued has been written, then stops the writer.

        Bounded: a client that does not read makes the writer give up after `stall_secs`.
        """
        if self._closed:
            return
        self._closed = True
        self._outbound.append(_END_OF_OUTPUT)
        self._ready.set()
        if self._writer is not None:
            try:
                await self._writer
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - client is gone
                pass

    async def abort_writer(self) -> None:
        self._closed = True
        self._outbound.clear()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            try:
                await self._writer
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass

    def _stall(self, detail: str) -> None:
        if self.stalled:
            return
        self.stalled = True
        logger.info(f"ending call: {detail}")
        if self._on_stall is not None:
            self._on_stall(EndRequest(EndReason.CLIENT_TIMEOUT, detail, caller_gone=True))

    async def _write_loop(self) -> None:
        while True:
            while not self._outbound:
                self._ready.clear()
                await self._ready.wait()
            item = self._outbound.popleft()
            if item is _END_OF_OUTPUT:
                return
            try:
                # Only a write in progress can stall: with nothing queued the writer waits on
                # the queue, not on the client.
                async with asyncio.timeout(self._stall_secs):
                    await self._context.write(item)
            except TimeoutError:
                self._stall(f"client stopped reading for {self._stall_secs:g} s")
                return
            except Exception as e:  # noqa: BLE001 - any write failure means the client is gone
                logger.debug(f"write to client failed: {e}")
                self.write_failed.set()
                return


class GrpcStreamInput(BaseInputTransport):
    def __init__(
        self,
        stream: GrpcCallStream,
        spec: AudioSpec,
        control: CallControl,
        params: TransportParams,
    ) -> None:
        super().__init__(params)
        self._stream = stream
        self._spec = spec
        self._control = control
        self._resampler = create_stream_resampler(quality="HQ")
        self._reader: asyncio.Task[None] | None = None

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        if self._reader is None:
            self._reader = self.create_task(self._read_loop(), name="grpc-read")

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._stop_reader()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._stop_reader()

    async def _stop_reader(self) -> None:
        if self._reader is not None:
            await self.cancel_task(self._reader)
            self._reader = None

    async def _read_loop(self) -> None:
        while True:
            try:
                request = await self._stream.read()
            except Exception as e:  # noqa: BLE001 - the client vanished mid-read
                self._control.request_end(
                    EndRequest(EndReason.CALLER_HANGUP, f"stream lost: {e}", caller_gone=True)
                )
                return
            if request is None:
                self._control.request_end(EndRequest(EndReason.CALLER_HANGUP, "client closed"))
                return
            audio_secs = (
                self._spec.duration_ms(len(request.audio.data)) / 1000
                if request.WhichOneof("request") == "audio"
                else 0.0
            )
            self._control.on_inbound_activity(audio_secs=audio_secs)
            if not await self._dispatch(request):
                return

    async def _dispatch(self, request: pb.ConverseRequest) -> bool:
        """Handles one request; False when the call is over from the caller's side."""
        kind = request.WhichOneof("request")
        if kind == "audio":
            try:
                self._spec.check_chunk(request.audio.data)
            except FormatError as e:
                return self._protocol_error(str(e))
            pcm = self._spec.to_pcm(request.audio.data)
            rate = self.sample_rate  # the pipeline's input rate, from the StartFrame
            if self._spec.sample_rate != rate:
                pcm = await self._resampler.resample(pcm, self._spec.sample_rate, rate)
            if pcm:
                await self.push_audio_frame(InputAudioRawFrame(pcm, rate, 1))
        elif kind == "text":
            text = request.text.text.strip()
            if text:
                await self.push_frame(
                    TranscriptionFrame(
                        text,
                        user_id="caller",
                        timestamp=datetime.now(UTC).isoformat(),
                        finalized=True,
                    )
                )
        elif kind == "dtmf":
            for digit in request.dtmf.digits:
                entry = _DTMF_KEYS.get(digit.upper())
                if entry is None:
                    return self._protocol_error(f"invalid DTMF digit {digit!r}")
                await self.push_frame(InputDTMFFrame(button=entry))
        elif kind == "playback_mark":
            mark = request.playback_mark
            self._control.on_playback_mark(mark.utterance_id, mark.played_ms)
        elif kind == "hangup":
            self._control.request_end(EndRequest(EndReason.CALLER_HANGUP, "hangup"))
            return False
        elif kind == "config":
            return self._protocol_error("duplicate config: it must be sent exactly once, first")
        else:
            return self._protocol_error("empty request: set one of the request fields")
        return True

    def _protocol_error(self, message: str) -> bool:
        self._control.request_end(
            EndRequest(EndReason.ERROR, message, status_code="INVALID_ARGUMENT")
        )
        return False


class GrpcStreamOutput(BaseOutputTransport):
    def __init__(
        self,
        stream: GrpcCallStream,
        spec: AudioSpec,
        utterances: UtteranceRegistry,
        params: TransportParams,
        max_lead_secs: float,
        control: CallControl,
    ) -> None:
        super().__init__(params)
        self._control = control
        self._vad_started: float | None = None
        self._stream = stream
        self._spec = spec
        self._utterances = utterances
        self._max_lead = max_lead_secs
        self._play_end = 0.0  # monotonic time at which the client finishes what we sent
        self._utterance = 0
        self._interrupted: set[int] = set()
        self._sent_ms: dict[int, float] = {}  # audio of each utterance sent to the client

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._vad_started = time.monotonic()
        if isinstance(frame, InterruptionFrame) and direction == FrameDirection.DOWNSTREAM:
            # Tell the client to drop what it buffered before anything else goes out; the
            # utterance is dead even if a chunk of it is still inside write_audio_frame.
            now = time.monotonic()
            utterance = self._utterance
            if utterance and utterance not in self._interrupted:
                self._interrupted.add(utterance)
                if self._vad_started is not None and self._play_end > now:  # it was speaking
                    self._control.on_barge_in(now - self._vad_started)
                # What the caller heard, by our account: everything sent minus what a client
                # playing in real time still had buffered. Client playback marks override it.
                unplayed_ms = max(0.0, self._play_end - now) * 1000
                self._utterances.estimate_played(
                    utterance, int(self._sent_ms.get(utterance, 0.0) - unplayed_ms)
                )
            self._play_end = now
            # Audio of the utterance still queued for a slow client goes too, and the event
            # overtakes it.
            self._stream.interrupt(event_to_proto(InterruptionEvent(utterance)), utterance)

    async def write_transport_frame(self, frame: Frame) -> None:
        # Frames reach here in playback order, so a TTS context starting is exactly where the
        # next utterance begins on the wire.
        if isinstance(frame, TTSStartedFrame):
            self._utterance = self._utterances.id_for(frame.context_id)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        utterance = self._utterance
        if utterance in self._interrupted:
            return False
        duration = len(frame.audio) / 2 / frame.sample_rate
        now = time.monotonic()
        self._play_end = max(self._play_end, now)
        lead = self._play_end - now
        if lead > self._max_lead:
            await asyncio.sleep(lead - self._max_lead)
        if utterance in self._interrupted:
            return False
        self._play_end += duration
        self._sent_ms[utterance] = self._sent_ms.get(utterance, 0.0) + duration * 1000
        payload = self._spec.from_pcm(frame.audio)
        self._stream.send(
            pb.ConverseResponse(audio=pb.AgentAudio(data=payload, utterance_id=utterance))
        )
        return True


class GrpcStreamTransport(BaseTransport):
    def __init__(
        self,
        stream: GrpcCallStream,
        input_spec: AudioSpec,
        output_spec: AudioSpec,
        control: CallControl,
        utterances: UtteranceRegistry,
        max_lead_secs: float = 0.2,
    ) -> None:
        super().__init__()
        params = TransportParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_out_sample_rate=output_spec.sample_rate,
            audio_out_end_silence_secs=0,
        )
        self._input = GrpcStreamInput(stream, input_spec, control, params)
        self._output = GrpcStreamOutput(
            stream, output_spec, utterances, params, max_lead_secs, control
        )

    def input(self) -> GrpcStreamInput:
        return self._input

    def output(self) -> GrpcStreamOutput:
        return self._output


class GrpcStreamDoor:
    """The gRPC door of one call, as the Session sees it."""

    name = "grpc"
    liveness: Liveness | None = None  # any message counts: the general timeout is enough

    def __init__(
        self,
        context: grpc.aio.ServicerContext,
        input_spec: AudioSpec,
        output_spec: AudioSpec,
        control: CallControl,
        utterances: UtteranceRegistry,
        max_lead_secs: float = 0.2,
        limits: StreamLimits | None = None,
    ) -> None:
        limits = limits or StreamLimits()
        self.input_spec = input_spec
        self.output_spec = output_spec
        self.stream = GrpcCallStream(
            context,
            on_stall=control.request_end,
            max_queued=limits.max_queued,
            stall_secs=limits.client_stall_secs,
        )
        self.stream.start()
        self._transport = GrpcStreamTransport(
            self.stream, input_spec, output_spec, control, utterances, max_lead_secs
        )

    @property
    def transport(self) -> GrpcStreamTransport:
        return self._transport

    def send_event(self, event: SessionEvent) -> None:
        response = event_to_proto(event)
        if isinstance(event, SessionStartedEvent):
            response.session_started.input_format.CopyFrom(spec_to_proto(self.input_spec))
            response.session_started.output_format.CopyFrom(spec_to_proto(self.output_spec))
        self.stream.send(response)

    async def close(self) -> None:
        await self.stream.drain_and_close()

    async def abort(self) -> None:
        await self.stream.abort_writer()
