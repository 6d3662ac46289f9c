"""A client pushing audio faster than real time loses its call; a caller beside it does not.

The fast client is the public SDK sending 20 ms chunks every 6.7 ms (3x real time), as a script
streaming a file without pacing would; the gateway must refuse it within a few seconds with
INVALID_ARGUMENT and say why, store the call as ended by an error, and leave other calls alone.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid

from voicegw_client import SessionEnded, SessionStarted, VoiceClient, VoiceGatewayError

from gateway.db import Database
from gateway.server import Gateway
from gateway.storage import calls
from tests.audio_helpers import silence
from tests.integration.conftest import make_tenant
from tests.integration.test_conversation import finish, short_secretary, start_call, stored

CHUNK_MS = 20
SPEED = 3.0
MESSAGE = re.compile(r"audio arrives faster than real time \((\d+(?:\.\d+)?)x\)")


async def stream_fast(client: VoiceClient) -> tuple[VoiceGatewayError, list[object], float]:
    """Streams silence at `SPEED` x real time until the gateway ends the call.

    Returns the error, the events received and how long after `session_started` the call was
    refused (the audio streams from the start, but until then the gateway is not reading it).
    """
    conversation = await client.converse("secretary")
    events: list[object] = []
    chunk = silence(CHUNK_MS)

    async def send() -> None:
        next_at = time.monotonic()
        while True:
            await conversation.send_audio(chunk)
            # Never faster than SPEED, even after a write waited on flow control.
            next_at = max(next_at + CHUNK_MS / 1000 / SPEED, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())

    started = time.monotonic()
    sender = asyncio.create_task(send())
    try:
        async for event in conversation:
            events.append(event)
            if isinstance(event, SessionStarted):
                started = time.monotonic()
        raise AssertionError(f"the fast call ended with OK: {events}")
    except VoiceGatewayError as e:
        return e, events, time.monotonic() - started
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        await conversation.close()


async def test_audio_faster_than_real_time_is_refused(gateway: Gateway, database: Database) -> None:
    tenant = await make_tenant(database, short_secretary())
    normal_client, normal = await start_call(gateway, tenant)
    async with VoiceClient(f"127.0.0.1:{gateway.grpc_port}", tenant.key) as fast_client:
        error, events, refused_after = await asyncio.wait_for(stream_fast(fast_client), 30)

    assert error.code == "INVALID_ARGUMENT", error
    match = MESSAGE.search(error.message)
    assert match, error.message
    assert 2.5 <= float(match[1]) <= 3.5
    assert refused_after < 3.5  # caught within about 2 s of the call starting
    ended = [e for e in events if isinstance(e, SessionEnded)]
    assert ended and ended[0].reason == "error" and MESSAGE.search(ended[0].detail)
    started = next(e for e in events if isinstance(e, SessionStarted))
    record = await calls.get_call(database.pool, uuid.UUID(started.session_id))
    assert record is not None and record.end_reason == "error"
    assert MESSAGE.search(record.end_detail or "")

    # The real-time caller beside it hears its whole greeting and hangs up normally.
    await normal.wait_bot_stopped(1)
    log = await finish(normal_client, normal)
    assert log.status_code == "OK", log.error
    assert log.ended is not None and log.ended.reason == "caller_hangup"
    assert (await stored(database, log)).end_reason == "caller_hangup"
