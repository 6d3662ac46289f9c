"""Soak: 300 short calls in a row through one in-process gateway leave no memory or tasks behind.

Each call is what a phone that hangs up early does: connect, wait for the greeting to start,
hang up. That exercises everything a call builds and tears down (Session, pipeline with its VAD,
STT and TTS services, door, writer, call row) and little else, so 300 of them take 15-30 s.
The process's resident memory (the gateway runs in this process; the engines' worker processes
are not counted) may grow by less than 50 MiB from after a warm-up of 20 calls (lazy imports,
caches, pools reaching their size) to the end. Measured: +7 MiB with the shared VAD session
(pipelines/vad_batch.py); +101 MiB with an ONNX session per call, which this test then fails on.
"""

from __future__ import annotations

import asyncio
import gc
import time
import uuid

from voicegw_client import AgentAudio, SessionEnded, SessionStarted, VoiceClient

from gateway.db import Database
from gateway.server import Gateway
from gateway.session import Session
from gateway.storage import calls
from tests.integration.conftest import Tenant, make_tenant
from tests.integration.test_conversation import short_secretary

CALLS = 300
WARM_UP = 20
MAX_GROWTH_MIB = 50.0


def rss_mib() -> float:
    """This process's resident set size, after collecting garbage cycles."""
    gc.collect()
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


async def short_call(gateway: Gateway, client: VoiceClient) -> tuple[uuid.UUID, str]:
    """Connects, hangs up at the greeting's first audio, waits until the call is stored and
    its Session gone; returns the call id and the end reason the client was told."""
    assert gateway.sessions is not None
    session: Session | None = None
    reason = ""
    async with await client.converse("secretary") as conversation:
        async for event in conversation:
            if isinstance(event, SessionStarted):
                session = gateway.sessions.sessions[uuid.UUID(event.session_id)]
            elif isinstance(event, AgentAudio) and not conversation.hung_up:
                await conversation.hangup()
            elif isinstance(event, SessionEnded):
                reason = event.reason
    assert session is not None
    await session.finished.wait()
    return session.call_id, reason


async def test_many_short_calls_leave_nothing_behind(gateway: Gateway, database: Database) -> None:
    assert gateway.sessions is not None
    tenant: Tenant = await make_tenant(database, short_secretary())
    tasks_before = asyncio.all_tasks()
    started = time.monotonic()
    async with VoiceClient(f"127.0.0.1:{gateway.grpc_port}", tenant.key) as client:
        for _ in range(WARM_UP):
            await short_call(gateway, client)
        rss_warm = rss_mib()
        reasons: dict[str, int] = {}
        last_id = uuid.UUID(int=0)
        for _ in range(CALLS - WARM_UP):
            last_id, reason = await short_call(gateway, client)
            reasons[reason] = reasons.get(reason, 0) + 1
    elapsed = time.monotonic() - started
    rss_end = rss_mib()

    # Every call ended as the caller hung up, and was stored.
    assert reasons == {"caller_hangup": CALLS - WARM_UP}, reasons
    record = await calls.get_call(database.pool, last_id)
    assert record is not None and record.end_reason == "caller_hangup"
    listed = await calls.list_calls(database.pool, tenant.org_id, limit=CALLS + 1)
    assert len(listed) == CALLS

    # No Session left, and no task: whatever a call started has ended with it. The gRPC
    # handler of the last call may still be returning, so leftovers get a moment to finish;
    # one that does not is a leak.
    assert not gateway.sessions.sessions
    leftovers = asyncio.all_tasks() - tasks_before - {asyncio.current_task()}
    if leftovers:
        _, pending = await asyncio.wait(leftovers, timeout=5)
        assert not pending, [task.get_coro() for task in pending]

    growth = rss_end - rss_warm
    print(
        f"soak: {CALLS} calls in {elapsed:.1f} s; RSS {rss_warm:.1f} MiB after {WARM_UP} calls, "
        f"{rss_end:.1f} MiB at the end (+{growth:.1f} MiB)"
    )
    assert growth < MAX_GROWTH_MIB, f"RSS grew {growth:.1f} MiB over {CALLS - WARM_UP} calls"
