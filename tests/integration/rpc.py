"""Raw gRPC helpers for tests that look at statuses and ErrorInfo reasons, below the SDK."""

from __future__ import annotations

import asyncio

import grpc
from google.rpc import error_details_pb2, status_pb2
from voicegw.v1 import voice_pb2 as pb
from voicegw.v1 import voice_pb2_grpc

from gateway.server import Gateway


def config(
    agent: str = "secretary", encoding: int = pb.AUDIO_ENCODING_LINEAR16, rate: int = 16000
) -> pb.ConverseRequest:
    return pb.ConverseRequest(
        config=pb.SessionConfig(
            agent=agent, input_format=pb.AudioFormat(encoding=encoding, sample_rate_hz=rate)
        )
    )


async def converse(
    gateway: Gateway,
    requests: list[pb.ConverseRequest],
    metadata: tuple[tuple[str, str], ...] = (),
) -> tuple[list[pb.ConverseResponse], grpc.aio.AioRpcError | None]:
    """Sends the requests (then half-closes) and reads until the stream ends."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        call = voice_pb2_grpc.VoiceServiceStub(channel).Converse(metadata=metadata)
        responses: list[pb.ConverseResponse] = []
        try:
            for request in requests:
                await call.write(request)
            await call.done_writing()
            async for response in call:
                responses.append(response)
                if response.HasField("session_ended"):
                    break
            await call.wait_for_connection()
            code = await call.code()
            if code != grpc.StatusCode.OK:
                raise grpc.aio.AioRpcError(code, None, None, await call.details())
        except grpc.aio.AioRpcError as e:
            return responses, e
    return responses, None


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def error_reason(error: grpc.aio.AioRpcError) -> str | None:
    """The google.rpc.ErrorInfo reason of a rich status (what clients branch on), if any."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return None


class HeldCall:
    """A call kept up until the test hangs up: it reads everything the gateway sends (so flow
    control never stalls the door) and lets the test wait for the start and the end."""

    def __init__(self, gateway: Gateway, key: str) -> None:
        self._channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}")
        self._call = voice_pb2_grpc.VoiceServiceStub(self._channel).Converse(metadata=bearer(key))
        self.started = asyncio.Event()
        self.ended = asyncio.Event()
        self.session_id = ""
        self.session_ended: pb.SessionEnded | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 30.0) -> HeldCall:
        await self._call.write(config())
        reader = self._reader = asyncio.create_task(self._read())
        started = asyncio.ensure_future(self.started.wait())
        try:
            await asyncio.wait(
                {reader, started}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            started.cancel()
        if not self.started.is_set():
            await self.close()
            if reader.done() and not reader.cancelled():
                reader.result()  # a refusal raises its AioRpcError here
            raise TimeoutError(f"no session_started within {timeout:g} s")
        return self

    async def _read(self) -> None:
        async for response in self._call:
            if response.HasField("session_started"):
                self.session_id = response.session_started.session_id
                self.started.set()
            elif response.HasField("session_ended"):
                self.session_ended = response.session_ended
                self.ended.set()

    async def hang_up(self, timeout: float = 30.0) -> pb.SessionEnded:
        await self._call.write(pb.ConverseRequest(hangup=pb.HangupRequest()))
        await self._call.done_writing()
        return await self.wait_ended(timeout)

    async def wait_ended(self, timeout: float = 30.0) -> pb.SessionEnded:
        await asyncio.wait_for(self.ended.wait(), timeout)
        assert self.session_ended is not None
        return self.session_ended

    async def close(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
        self._call.cancel()
        await self._channel.close()


async def hold_call(gateway: Gateway, key: str) -> HeldCall:
    """Opens a call and returns once the gateway says it started."""
    return await HeldCall(gateway, key).start()
