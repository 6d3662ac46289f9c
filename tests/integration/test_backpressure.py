"""A client that stops reading loses its call; the gateway's memory and other calls do not suffer.

The stuck client is a raw gRPC stream that keeps sending audio in real time (so it is alive by
every inbound measure) but, after `session_started`, never reads a response again. Its channel
announces a small HTTP/2 window and no BDP probing, so the greeting's audio fills the window
within a second; gRPC's flow control then holds the gateway's `context.write`, the door's queue
stops draining, and after `client_stall_secs` (5 s) the call must end with `client_timeout`.
A normal caller on the same gateway meanwhile hears its greeting and gets its answer.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
from voicegw.v1 import voice_pb2 as pb
from voicegw.v1 import voice_pb2_grpc

from gateway.db import Database
from gateway.server import Gateway
from gateway.session import Session
from gateway.storage import calls
from tests.audio_helpers import silence, speech
from tests.integration.conftest import Tenant, make_tenant
from tests.integration.test_conversation import (
    HOURS_ANSWER,
    finish,
    said,
    short_secretary,
    start_call,
    stored,
)

STALL_SECS = 5.0
# 16 KiB of window: half a second of 16 kHz linear16; the greeting is well over a second.
SMALL_WINDOW = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16 * 1024)]


async def stuck_client(gateway: Gateway, tenant: Tenant, started: asyncio.Future[str]) -> None:
    """Streams silence at real time, reads `session_started` only, and never reads again.

    Runs until cancelled; reports the call id through `started`.
    """
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{gateway.grpc_port}", options=SMALL_WINDOW
    ) as channel:
        call = voice_pb2_grpc.VoiceServiceStub(channel).Converse(
            metadata=(("authorization", f"Bearer {tenant.key}"),)
        )
        await call.write(
            pb.ConverseRequest(
                config=pb.SessionConfig(
                    agent="secretary",
                    input_format=pb.AudioFormat(
                        encoding=pb.AUDIO_ENCODING_LINEAR16, sample_rate_hz=16000
                    ),
                )
            )
        )
        first = await call.read()
        assert isinstance(first, pb.ConverseResponse) and first.HasField("session_started")
        started.set_result(first.session_started.session_id)
        chunk = pb.ConverseRequest(audio=pb.AudioInput(data=silence(20)))
        next_at = time.monotonic()
        try:
            while not call.done():
                await call.write(chunk)
                next_at = max(next_at + 0.02, time.monotonic())
                await asyncio.sleep(next_at - time.monotonic())
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return  # the gateway ended the stream
        finally:
            call.cancel()


async def test_client_that_stops_reading_ends_with_client_timeout(
    gateway: Gateway, database: Database
) -> None:
    assert gateway.sessions is not None
    assert gateway.settings.client_stall_secs == STALL_SECS
    tenant = await make_tenant(database, short_secretary())
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    stuck = asyncio.create_task(stuck_client(gateway, tenant, started))
    try:
        call_id = uuid.UUID(await asyncio.wait_for(started, 30))
        session: Session = gateway.sessions.sessions[call_id]
        t_started = time.monotonic()

        # A normal call alongside, start to answer, while the stuck one is stalling.
        client, caller = await start_call(gateway, tenant)
        await caller.wait_bot_stopped(1)
        await caller.say(speech("what are your opening hours"), 16000)
        await caller.wait_for(lambda log: said(log, HOURS_ANSWER))
        await caller.wait_bot_stopped(2)
        log = await finish(client, caller)

        await asyncio.wait_for(session.finished.wait(), 30)
        ended_after = time.monotonic() - t_started
    finally:
        stuck.cancel()
        await asyncio.gather(stuck, return_exceptions=True)

    assert session.outcome is not None
    assert session.outcome.reason.value == "client_timeout", session.outcome
    assert session.outcome.detail == "client stopped reading for 5 s"
    # It waited for the stall: the greeting fills the window in about a second, then 5 s.
    assert ended_after >= STALL_SECS
    record = await calls.get_call(database.pool, call_id)
    assert record is not None and record.status == "ended"
    assert record.end_reason == "client_timeout"
    assert record.end_detail == "client stopped reading for 5 s"

    assert log.status_code == "OK", log.error
    assert log.ended is not None and log.ended.reason == "caller_hangup"
    normal = await stored(database, log)
    assert normal.end_reason == "caller_hangup"
    turns = await calls.list_turns(database.pool, normal.id)
    assert [t.role for t in turns][:3] == ["agent", "user", "agent"]
