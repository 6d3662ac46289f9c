"""The gateway and `voicegw talk` as real processes: the commands the README documents.

`voicegw serve` runs against the test database (DATABASE_URL), `voicegw talk` talks to it from a
WAV file, and SIGTERM mid-call ends the call with `shutdown` and still stores it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import uuid
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from voicegw_client import SessionStarted, VoiceClient

from gateway.db import Database
from gateway.server import Gateway
from gateway.storage import calls
from pipelines.engines.espeak import write_wav
from tests.audio_helpers import speech
from tests.conftest import TEST_PEPPER
from tests.integration.caller import ScriptedCaller
from tests.integration.conftest import Tenant, make_tenant

VOICEGW = str(Path(sys.executable).parent / "voicegw")


def talk_command(port: int, key: str, wav: Path, *options: str) -> list[str]:
    """`voicegw talk` to the secretary on a local gateway, as the README shows it."""
    target = f"127.0.0.1:{port}"
    return [
        VOICEGW,
        "talk",
        "--target",
        target,
        "--api-key",
        key,
        "--agent",
        "secretary",
        "--wav",
        str(wav),
        *options,
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_serving(port: int, process: asyncio.subprocess.Process, timeout: float = 60) -> None:
    """Waits for the health service to say SERVING (or the process to die)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            assert process.returncode is None, "voicegw serve exited during start-up"
            try:
                await asyncio.wait_for(channel.channel_ready(), 2)
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except (TimeoutError, grpc.aio.AioRpcError):
                pass
            assert asyncio.get_running_loop().time() < deadline, "gateway did not start"


@pytest.fixture
async def served(
    database: Database, tmp_path: Path
) -> AsyncIterator[tuple[int, asyncio.subprocess.Process]]:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database.dsn,
        "VOICEGW_KEY_PEPPER": TEST_PEPPER,
        "VOICEGW_STATE_DIR": str(tmp_path / "state"),
        "VOICEGW_STT_WORKERS": "1",
        "VOICEGW_SHUTDOWN_GRACE_SECS": "1",
    }
    process = await asyncio.create_subprocess_exec(
        VOICEGW,
        "serve",
        "--host",
        "127.0.0.1",
        "--grpc-port",
        str(port),
        "--http-port",
        str(free_port()),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.log", "wb"),
    )
    try:
        await wait_serving(port, process)
        yield port, process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)


async def test_talk_against_serve_as_the_readme_says(
    served: tuple[int, asyncio.subprocess.Process], database: Database, tmp_path: Path
) -> None:
    port, _ = served
    tenant = await make_tenant(database)
    question = tmp_path / "question.wav"
    write_wav(question, "what are your opening hours")
    out, events = tmp_path / "answer.wav", tmp_path / "events.jsonl"
    talk = await asyncio.create_subprocess_exec(
        *talk_command(port, tenant.key, question, "--out", str(out), "--events", str(events)),
        "--timeout",
        "90",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(talk.communicate(), 120)
    assert talk.returncode == 0, stderr.decode()[-2000:]
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    names = [line["event"] for line in lines]
    assert names[0] == "session_started" and names[-1] == "status"
    assert lines[-1]["code"] == "OK"
    assert names[-2] == "session_ended" and lines[-2]["reason"] == "caller_hangup"
    assert all(isinstance(line["t_ms"], int | float) for line in lines)
    agent = [
        line["text"] for line in lines if line["event"] == "transcript" and line["role"] == "agent"
    ]
    user = [
        line["text"] for line in lines if line["event"] == "transcript" and line["role"] == "user"
    ]
    assert agent[0].startswith("Hello, and thank you for calling Acme Dental")
    assert user and "hours" in user[0]
    assert any(text.startswith("We are open Monday to Friday") for text in agent)
    kinds = [line["kind"] for line in lines if line["event"] == "turn"]
    assert kinds.index("user_started") > kinds.index("bot_stopped")  # spoke after the greeting
    with wave.open(str(out)) as played:
        assert played.getframerate() == 16000
        assert played.getnframes() / 16000 > 10  # greeting and answer, as played
    session_id = lines[0]["session_id"]
    record = await calls.get_call(database.pool, uuid.UUID(session_id))
    assert record is not None and record.end_reason == "caller_hangup"


async def test_sigterm_mid_call_ends_with_shutdown_and_stores_it(
    served: tuple[int, asyncio.subprocess.Process], database: Database
) -> None:
    port, process = served
    tenant = await make_tenant(database)
    async with VoiceClient(f"127.0.0.1:{port}", tenant.key) as client:
        caller = await ScriptedCaller(client, "secretary").start()
        await caller.wait_for(lambda log: bool(log.audio_bytes()))  # mid-greeting
        process.send_signal(signal.SIGTERM)
        log = await caller.wait_end(timeout=30)
        await caller.close()
    assert log.ended is not None and log.ended.reason == "shutdown"
    assert log.status_code == "OK"
    assert await asyncio.wait_for(process.wait(), 30) == 0
    call_id = uuid.UUID(log.of(SessionStarted)[0].session_id)
    record = await calls.get_call(database.pool, call_id)
    assert record is not None and record.status == "ended" and record.end_reason == "shutdown"
    turns = await calls.list_turns(database.pool, call_id)
    assert turns and turns[0].role == "agent" and turns[0].interrupted


async def test_vanished_client_still_leaves_a_stored_call(
    gateway: Gateway, tenant: Tenant, database: Database
) -> None:
    assert gateway.sessions is not None
    client = VoiceClient(f"127.0.0.1:{gateway.grpc_port}", tenant.key)
    caller = await ScriptedCaller(client, "secretary").start()
    await caller.wait_for(lambda log: bool(log.of(SessionStarted)))
    call_id = uuid.UUID(caller.log.of(SessionStarted)[0].session_id)
    session = gateway.sessions.sessions[call_id]
    await caller.say(speech("what are your"), 16000)
    # The client disappears without a hangup: its channel is torn down mid-call.
    await client.close()
    await asyncio.wait_for(session.finished.wait(), 30)
    await caller.close()
    record = await calls.get_call(database.pool, call_id)
    assert record is not None and record.status == "ended"
    # Depending on how the channel's teardown reaches the server, the stream either breaks or
    # ends; either way the call is the caller's doing and it is stored.
    assert record.end_reason == "caller_hangup"
    assert record.end_detail and (
        "stream lost" in record.end_detail or "closed" in record.end_detail
    )
