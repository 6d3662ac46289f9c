"""The asyncio client: one `VoiceClient` per gateway, one `Conversation` per call.

A call is a single bidirectional `VoiceService.Converse` stream. The SDK hides the protocol's
rules so applications cannot get them wrong: the config is always the first message, writes
from several tasks (microphone audio, playback marks) are serialised because grpc.aio allows
one write in flight, nothing can be sent once the call was hung up, and a non-OK status always
surfaces as `VoiceGatewayError` with the gateway's ErrorInfo reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from types import TracebackType

import grpc
from voicegw.v1 import voice_pb2 as pb
from voicegw.v1 import voice_pb2_grpc

from voicegw_client._events import (
    AudioFormat,
    Event,
    SessionEnded,
    SessionStarted,
    event_from_proto,
)
from voicegw_client._status import (
    CallStatus,
    ConversationClosed,
    VoiceGatewayError,
    reason_from_metadata,
)

__version__ = "0.1.0"

_CORE_INTERNAL_ERROR: type[Exception] | None
try:  # grpc internals, for _write_request; without them the public API is used
    from grpc._cython import cygrpc  # type: ignore[attr-defined]

    _CORE_INTERNAL_ERROR = cygrpc.InternalError
except (ImportError, AttributeError):
    _CORE_INTERNAL_ERROR = None
_DTMF_DIGITS = frozenset("0123456789*#ABCD")
_UINT32_MAX = 2**32 - 1


def _error_from_rpc(error: grpc.aio.AioRpcError) -> VoiceGatewayError:
    return VoiceGatewayError(
        error.code().name,
        error.details() or "",
        reason_from_metadata(error.trailing_metadata()),
    )


# How long a failed write waits for the status the gateway sent before giving up on it.
_STATUS_AFTER_FAILED_WRITE_SECS = 2.0


async def _write_request(call: grpc.aio.StreamStreamCall, request: pb.ConverseRequest) -> None:
    """`call.write(request)`, but keeping the gateway's status when the write races the end.

    A caller streams audio every 20 ms, so a refusal or an abort by the gateway usually meets a
    write in flight. grpc.aio (up to at least 1.81) then replaces the status the gateway sent
    with "INTERNAL: Internal error from Core" (grpc/grpc#36066, fix proposed in #43486), and a
    NOT_FOUND or RESOURCE_EXHAUSTED would reach the application as INTERNAL in a good share of
    calls. This does what `call.write` does, except that on that failure it waits briefly for
    the real status instead of overwriting it. It needs grpc.aio internals, so it falls back to
    the public `write` if they ever change.
    """
    cython_call = getattr(call, "_cython_call", None)
    metadata_sent = getattr(call, "_metadata_sent", None)
    serializer = getattr(call, "_request_serializer", None)
    internal_error = _CORE_INTERNAL_ERROR
    if (
        internal_error is None
        or cython_call is None
        or not isinstance(metadata_sent, asyncio.Event)
        or serializer is None
    ):
        await call.write(request)
        return
    if call.done():
        raise asyncio.InvalidStateError("RPC already finished")
    if not metadata_sent.is_set():
        await metadata_sent.wait()
        if call.done():
            await _raise_final_status(call)
            raise asyncio.InvalidStateError("RPC already finished")
    try:
        await cython_call.send_serialized_message(serializer(request))
    except internal_error as err:
        try:
            await asyncio.wait_for(asyncio.shield(call.code()), _STATUS_AFTER_FAILED_WRITE_SECS)
        except TimeoutError:
            # No status is coming (the batch was refused locally): what grpc itself does.
            cython_call.set_internal_error(str(err))
        await _raise_final_status(call)
        raise asyncio.InvalidStateError("RPC already finished") from None
    except asyncio.CancelledError:
        if not call.cancelled():
            call.cancel()
        raise


async def _raise_final_status(call: grpc.aio.StreamStreamCall) -> None:
    code = await call.code()
    if code != grpc.StatusCode.OK:
        raise VoiceGatewayError(
            code.name,
            await call.details() or "",
            reason_from_metadata(await call.trailing_metadata()),
        )


class Conversation:
    """One call in progress. Send with the `send_*` methods, receive with `async for`.

    Iterating yields typed events until the gateway closes the stream; then `status` holds the
    final status. A non-OK status is raised from the iteration as `VoiceGatewayError`.
    Sending after `hangup()` or `close()`, or after the call has ended, raises
    `ConversationClosed`.
    """

    def __init__(
        self,
        call: grpc.aio.StreamStreamCall,
        input_format: AudioFormat,
        output_format: AudioFormat,
        on_close: Callable[[Conversation], None] | None = None,
    ) -> None:
        self._call = call
        self._write_lock = asyncio.Lock()
        self._hung_up = False
        self._closed = False
        self._ended = False  # session_ended arrived: the gateway reads nothing more
        self._iterated = False
        self._on_close = on_close
        self.input_format = input_format
        #: What the gateway will send; replaced by the negotiated format from session_started.
        self.output_format = output_format
        self.session: SessionStarted | None = None
        self.status: CallStatus | None = None

    # Sending -----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._hung_up or self._closed:
            raise ConversationClosed("the conversation was hung up or closed")
        if self._ended:
            raise ConversationClosed("the call has ended")

    async def _send(self, request: pb.ConverseRequest) -> None:
        self._check_open()
        async with self._write_lock:
            self._check_open()  # hangup() or the end may have come while waiting for the lock
            await self._write(request)

    async def _write(self, request: pb.ConverseRequest) -> None:
        try:
            await _write_request(self._call, request)
        except asyncio.InvalidStateError as e:
            raise ConversationClosed("the call has already ended") from e
        except grpc.aio.AioRpcError as e:
            raise _error_from_rpc(e) from None

    async def send_audio(self, data: bytes) -> None:
        """Sends caller audio in the input format (the gateway accepts 10-100 ms per chunk)."""
        if not data or len(data) % self.input_format.bytes_per_sample:
            raise ValueError(
                f"audio chunk of {len(data)} bytes is not a whole number of "
                f"{self.input_format.encoding} samples"
            )
        await self._send(pb.ConverseRequest(audio=pb.AudioInput(data=bytes(data))))

    async def send_text(self, text: str) -> None:
        """Sends a typed user turn, handled as if the caller had said it."""
        await self._send(pb.ConverseRequest(text=pb.TextInput(text=text)))

    async def send_dtmf(self, digits: str) -> None:
        """Sends keypad digits (0-9, *, #, A-D)."""
        bad = sorted(set(digits.upper()) - _DTMF_DIGITS)
        if not digits or bad:
            raise ValueError(f"invalid DTMF digits {digits!r}: use 0-9, *, #, A-D")
        await self._send(pb.ConverseRequest(dtmf=pb.DtmfInput(digits=digits.upper())))

    async def send_playback_mark(self, utterance_id: int, played_ms: int) -> None:
        """Reports how much of an agent utterance was actually played, so after a barge-in the
        agent remembers only the words the caller heard."""
        if not (0 <= utterance_id <= _UINT32_MAX and 0 <= played_ms <= _UINT32_MAX):
            raise ValueError(f"invalid playback mark ({utterance_id}, {played_ms})")
        await self._send(
            pb.ConverseRequest(
                playback_mark=pb.PlaybackMark(utterance_id=utterance_id, played_ms=played_ms)
            )
        )

    async def hangup(self) -> None:
        """Ends the call from the caller's side; keep iterating to get session_ended.

        Idempotent, and a no-op once the call has ended.
        """
        if self._hung_up or self._closed:
            return
        self._hung_up = True
        async with self._write_lock:
            if self._call.done() or self._ended:
                return
            try:
                await _write_request(self._call, pb.ConverseRequest(hangup=pb.HangupRequest()))
                await self._call.done_writing()
            except (asyncio.InvalidStateError, grpc.aio.AioRpcError, VoiceGatewayError):
                # The call ended meanwhile; the iteration reports how.
                pass

    @property
    def hung_up(self) -> bool:
        return self._hung_up

    # Receiving ---------------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        if self._iterated:
            raise RuntimeError("a conversation's events can be iterated only once")
        self._iterated = True
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:  # type: ignore[attr-defined]  # missing in grpc-stubs
                    break
                assert isinstance(response, pb.ConverseResponse)
                event = event_from_proto(response)
                if event is None:
                    continue
                if isinstance(event, SessionStarted):
                    self.session = event
                    if event.output_format is not None:
                        self.output_format = event.output_format
                elif isinstance(event, SessionEnded):
                    # Writing on would only race the gateway's status (see _write_request).
                    self._ended = True
                yield event
        except grpc.aio.AioRpcError as e:
            self._release()
            error = _error_from_rpc(e)
            self.status = error.status
            raise error from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not self._closed or (task is not None and task.cancelling()):
                raise
            # Our own close() cancelled the RPC: report it as a status, not as a task cancel.
            self.status = CallStatus("CANCELLED", "closed by the client")
            raise VoiceGatewayError("CANCELLED", "closed by the client") from None
        code = await self._call.code()
        details = await self._call.details()
        reason = reason_from_metadata(await self._call.trailing_metadata())
        self.status = CallStatus(code.name, details or "", reason)
        self._release()
        if code != grpc.StatusCode.OK:
            raise VoiceGatewayError(code.name, details or "", reason)

    # Lifecycle ---------------------------------------------------------------------------------

    async def close(self) -> None:
        """Abandons the call: cancels the stream if it is still open. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if not self._call.done():
            self._call.cancel()
        self._release()

    def _release(self) -> None:
        if self._on_close is not None:
            self._on_close(self)
            self._on_close = None

    async def __aenter__(self) -> Conversation:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class VoiceClient:
    """A connection to one gateway; use as `async with VoiceClient(...) as client:`.

    The API key travels as `authorization: Bearer <key>` on every call. Over plain TCP it is
    readable on the network, so use `tls=True` (optionally with `root_certificates` for a
    private CA) anywhere but localhost. Leaving the context (or `close()`) cancels open calls
    and closes the channel. Create it inside the event loop that uses it: a grpc.aio channel
    belongs to one loop.
    """

    def __init__(
        self,
        target: str,
        api_key: str,
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("an API key is required")
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        options = [("grpc.primary_user_agent", f"voicegw-client/{__version__}")]
        if tls or root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self._channel = grpc.aio.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options)
        self._stub = voice_pb2_grpc.VoiceServiceStub(self._channel)
        self._conversations: set[Conversation] = set()
        self._closed = False

    async def converse(
        self,
        agent: str,
        *,
        input_format: AudioFormat | None = None,
        output_format: AudioFormat | None = None,
        language: str = "",
        caller_number: str = "",
        caller_name: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> Conversation:
        """Starts a call with `agent` and sends its config.

        `input_format` defaults to linear16 at 16 kHz; `output_format` None means the same as
        the input. A refusal (unknown agent, no balance, ...) is raised as `VoiceGatewayError`
        from the event iteration, or from here if it is already known.
        """
        if self._closed:
            raise ConversationClosed("the client is closed")
        if not agent:
            raise ValueError("an agent name is required")
        input_format = input_format or AudioFormat("linear16", 16000)
        config = pb.SessionConfig(
            agent=agent,
            input_format=input_format.to_proto(),
            language=language,
            caller=pb.CallerInfo(
                phone_number=caller_number,
                display_name=caller_name,
                metadata=dict(metadata or {}),
            ),
        )
        if output_format is not None:
            config.output_format.CopyFrom(output_format.to_proto())
        call = self._stub.Converse(metadata=self._metadata)
        conversation = Conversation(
            call, input_format, output_format or input_format, self._conversations.discard
        )
        self._conversations.add(conversation)
        try:
            async with conversation._write_lock:
                await conversation._write(pb.ConverseRequest(config=config))
        except BaseException:
            await conversation.close()
            raise
        return conversation

    async def close(self) -> None:
        """Cancels open conversations and closes the channel."""
        if self._closed:
            return
        self._closed = True
        for conversation in list(self._conversations):
            await conversation.close()
        await self._channel.close(None)

    async def __aenter__(self) -> VoiceClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def connect(
    target: str,
    api_key: str,
    *,
    tls: bool = False,
    root_certificates: bytes | None = None,
) -> VoiceClient:
    """Same as `VoiceClient(...)`; reads well in `async with connect(...) as client:`."""
    return VoiceClient(target, api_key, tls=tls, root_certificates=root_certificates)
