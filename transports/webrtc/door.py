"""The browser door: one WebRTC peer connection (aiortc, via Pipecat's SmallWebRTC) = one call.

Audio travels as media tracks; session events go to the page over the `events` data channel as
JSON, the same objects `voicegw talk --events` writes (without `t_ms`), so one client-side
parser serves both. The page pings on that channel every second. aiortc by itself notices a
vanished peer only after ~30 s, so the door declares its `Liveness` and the Session's inbound
watchdog ends the call with `client_timeout` after `ping_timeout_secs` without a ping or
`audio_timeout_secs` without audio; the door itself ends it at once when the
page says `{"type": "hangup"}` or the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from pipecat.frames.frames import InputAudioRawFrame
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import (
    SmallWebRTCInputTransport,
    SmallWebRTCTransport,
)
from voicegw_client._events import AudioFormat, event_from_proto
from voicegw_client.talk import event_record

from transports.door import CallControl, Liveness
from transports.events import EndReason, EndRequest, SessionEvent
from transports.grpc_stream.wire import event_to_proto

# What the browser sends and receives on the wire (Opus at 48 kHz, whatever we resample to);
# the SDK's AudioFormat knows only the gRPC encodings, so session_started says so directly.
WIRE_FORMAT = {"encoding": "opus", "sample_rate_hz": 48000}
_PLACEHOLDER = AudioFormat("linear16", 48000)
# Time to set up ICE and DTLS before the first ping is due.
CONNECT_TIMEOUT_SECS = 15.0
FLUSH_SECS = 1.0


class WidgetConnection(SmallWebRTCConnection):
    """A peer connection only the door closes.

    Pipecat's transport closes the peer when the pipeline stops, but the Session sends the
    call's last event (`session_ended`) after that; the door closes it once that has left.
    """

    _held = True

    async def disconnect(self) -> None:
        if not self._held:
            await super().disconnect()

    async def close_now(self) -> None:
        self._held = False
        await super().disconnect()


def event_json(event: SessionEvent) -> dict[str, Any] | None:
    """The page's view of a session event: exactly `voicegw talk`'s JSON line."""
    parsed = event_from_proto(event_to_proto(event))
    if parsed is None:
        return None
    record = event_record(parsed, (_PLACEHOLDER, _PLACEHOLDER))
    if record.get("event") == "session_started":
        record["input_format"] = record["output_format"] = dict(WIRE_FORMAT)
    return record


class _CountingInput(SmallWebRTCInputTransport):
    """Reports each caller audio frame to the door (liveness, rate guard, billed end)."""

    def __init__(self, *args: Any, on_audio: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_audio = on_audio

    async def push_audio_frame(self, frame: InputAudioRawFrame) -> None:
        self._on_audio(len(frame.audio) / (2 * frame.num_channels * frame.sample_rate))
        await super().push_audio_frame(frame)


class _Transport(SmallWebRTCTransport):
    def __init__(self, connection: SmallWebRTCConnection, params: TransportParams, door: Any):
        super().__init__(connection, params)
        self._door = door

    def input(self) -> SmallWebRTCInputTransport:
        if not self._input:
            self._input = _CountingInput(
                self._client, self._params, name=self._input_name, on_audio=self._door.on_audio
            )
        return self._input


class WebRTCDoor:
    name = "webrtc"

    def __init__(
        self,
        control: CallControl,
        connection: WidgetConnection,
        *,
        in_rate: int = 16000,
        out_rate: int = 24000,
        ping_timeout_secs: float = 3.0,
        audio_timeout_secs: float = 5.0,
    ) -> None:
        self._control = control
        self.connection = connection
        # Enforced by the Session's inbound watchdog, fed by the pings and the audio below.
        self.liveness: Liveness | None = Liveness(
            CONNECT_TIMEOUT_SECS, ping_timeout_secs, audio_timeout_secs
        )
        self._channel: Any = None
        self._closed = False
        params = TransportParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_in_sample_rate=in_rate,
            audio_out_sample_rate=out_rate,
        )
        self._transport = _Transport(connection, params, self)
        connection.pc.on("datachannel", self._on_datachannel)
        connection.add_event_handler("closed", self._on_closed)
        connection.add_event_handler("failed", self._on_closed)
        connection.add_event_handler("app-message", self._on_app_message)

    @property
    def transport(self) -> SmallWebRTCTransport:
        return self._transport

    # From the page -------------------------------------------------------------------------

    def on_audio(self, secs: float) -> None:
        self._control.on_inbound_activity(audio_secs=secs)

    def _on_datachannel(self, channel: Any) -> None:
        self._channel = channel

        # Alongside Pipecat's own handler (which also sees the pings): ours feeds liveness.
        @channel.on("message")  # type: ignore[untyped-decorator]
        def on_message(message: Any) -> None:
            if isinstance(message, str) and message.startswith("ping"):
                self._control.on_inbound_activity()

    async def _on_app_message(self, _connection: Any, message: Any) -> None:
        if isinstance(message, dict) and message.get("type") == "hangup":
            self._control.request_end(EndRequest(EndReason.CALLER_HANGUP, "the caller hung up"))

    async def _on_closed(self, _connection: Any) -> None:
        if not self._closed:
            self._control.request_end(
                EndRequest(EndReason.CALLER_HANGUP, "the browser left", caller_gone=True)
            )

    # To the page ---------------------------------------------------------------------------

    def send_event(self, event: SessionEvent) -> None:
        if self._closed:
            return
        message = event_json(event)
        if message is not None:
            self.connection.send_app_message(message)

    async def close(self) -> None:
        """Lets the last events (session_ended) leave before the connection closes."""
        channel = self._channel
        if channel is not None and channel.bufferedAmount:
            drained = asyncio.Event()
            channel.on("bufferedamountlow", drained.set)  # fires when the buffer is empty
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drained.wait(), FLUSH_SECS)
        await self.abort()

    async def abort(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.connection.close_now()
