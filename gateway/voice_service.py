"""`VoiceService.Converse`: the gRPC door's entry point.

Reads the config, validates formats, asks the SessionManager for a Session (refusals become
statuses with ErrorInfo), and runs it over a `GrpcStreamDoor`. A started call always ends with
`session_ended` and then OK, except a protocol violation, which ends it with INVALID_ARGUMENT
after `session_ended` so the client learns exactly what it did wrong.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc_status import rpc_status
from loguru import logger
from voicegw.v1 import voice_pb2 as pb
from voicegw.v1 import voice_pb2_grpc

from gateway import metrics
from gateway.config import Settings
from gateway.grpc_auth import current_principal
from gateway.grpc_errors import status_with_reason
from gateway.sessions import CallRequest, SessionManager, SessionRefused
from pipelines.utterances import UtteranceRegistry
from transports.codecs.formats import FormatError
from transports.door import CallControl
from transports.events import EndReason, EndRequest
from transports.grpc_stream import GrpcStreamDoor, StreamLimits
from transports.grpc_stream.wire import spec_from_proto

CONFIG_TIMEOUT_SECS = 10.0
VOICE_SCOPE = "voice"


def stream_limits(settings: Settings) -> StreamLimits:
    """The per-stream limits the gRPC door enforces, from the gateway's settings."""
    return StreamLimits(client_stall_secs=settings.client_stall_secs)


class VoiceService(voice_pb2_grpc.VoiceServiceServicer):
    def __init__(
        self,
        sessions: SessionManager,
        max_lead_secs: float = 0.2,
        limits: StreamLimits | None = None,
    ) -> None:
        self._sessions = sessions
        self._max_lead = max_lead_secs
        self._limits = limits or StreamLimits()

    async def Converse(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:
        principal = current_principal()
        if not principal.has_scope(VOICE_SCOPE):
            await self._refuse(
                context, "PERMISSION_DENIED", f"this API key lacks the {VOICE_SCOPE!r} scope"
            )
            return
        try:
            first = await asyncio.wait_for(context.read(), CONFIG_TIMEOUT_SECS)
        except TimeoutError:
            await self._refuse(context, "INVALID_ARGUMENT", "no config received within 10 s")
            return
        if first is grpc.aio.EOF or first.WhichOneof("request") != "config":
            await self._refuse(
                context, "INVALID_ARGUMENT", "the first request must be the session config"
            )
            return
        config: pb.SessionConfig = first.config
        if not config.agent:
            await self._refuse(context, "INVALID_ARGUMENT", "config.agent is required")
            return
        try:
            input_spec = spec_from_proto(config.input_format, "input_format")
            output_spec = (
                spec_from_proto(config.output_format, "output_format")
                if config.HasField("output_format")
                else input_spec
            )
        except FormatError as e:
            await self._refuse(context, "INVALID_ARGUMENT", str(e))
            return
        try:
            session = await self._sessions.open(
                CallRequest(
                    org_id=principal.org_id,
                    org_name=principal.org_name,
                    agent_name=config.agent,
                    door="grpc",
                    input_format=input_spec.label(),
                    output_format=output_spec.label(),
                    output_rate=output_spec.sample_rate,
                    caller_number=config.caller.phone_number,
                    caller_name=config.caller.display_name,
                    caller_metadata=dict(config.caller.metadata),
                    language=config.language,
                )
            )
        except SessionRefused as refused:
            await self._refuse(context, refused.code, refused.message, refused.reason)
            return

        def make_door(control: CallControl, utterances: UtteranceRegistry) -> GrpcStreamDoor:
            return GrpcStreamDoor(
                context,
                input_spec,
                output_spec,
                control,
                utterances,
                self._max_lead,
                self._limits,
            )

        # The session runs in its own task: if the client vanishes, gRPC cancels this handler,
        # but the call must still end properly and be stored.
        task = asyncio.create_task(session.run(make_door))
        try:
            outcome = await asyncio.shield(task)
        except asyncio.CancelledError:
            session.request_end(
                EndRequest(
                    EndReason.CALLER_HANGUP, "stream lost: client vanished", caller_gone=True
                )
            )
            await task
            raise
        if outcome.status_code:
            await context.abort_with_status(
                rpc_status.to_status(status_with_reason(outcome.status_code, outcome.detail, None))
            )

    async def _refuse(
        self,
        context: grpc.aio.ServicerContext,
        code: str,
        message: str,
        reason: str | None = None,
    ) -> None:
        metrics.CALLS_REFUSED.labels("grpc", code).inc()
        logger.info(f"call refused: {code} {message}")
        await context.abort_with_status(
            rpc_status.to_status(status_with_reason(code, message, reason))
        )
