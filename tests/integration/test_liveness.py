"""A dead or frozen client never keeps a call (or a bill) open.

The frozen client is a real `voicegw talk` process stopped with SIGSTOP: its TCP connection stays
up and the kernel keeps acknowledging, but it sends nothing more. The gateway's inbound-silence
timeout (shortened here from the production 10 s) ends the call with `client_timeout`, billed to
the client's last audio.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.db import Database
from gateway.server import Gateway
from gateway.storage import calls
from pipelines.engines.espeak import write_wav
from tests.integration.conftest import Tenant
from tests.integration.test_process import talk_command

TIMEOUT_SECS = 2.0


@pytest.fixture
async def short_inbound_timeout(gateway: Gateway) -> AsyncIterator[Gateway]:
    assert gateway.sessions is not None
    saved = gateway.sessions.policy
    gateway.sessions.policy = replace(saved, inbound_timeout_secs=TIMEOUT_SECS)
    yield gateway
    gateway.sessions.policy = saved


async def test_frozen_client_ends_with_client_timeout_billed_to_its_last_audio(
    short_inbound_timeout: Gateway, tenant: Tenant, database: Database, tmp_path: Path
) -> None:
    gateway = short_inbound_timeout
    assert gateway.sessions is not None
    question = tmp_path / "question.wav"
    write_wav(question, "what are your opening hours")
    talk = await asyncio.create_subprocess_exec(
        *talk_command(gateway.grpc_port, tenant.key, question, "--events", "/dev/stdout"),
        "--timeout",
        "120",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert talk.stdout is not None
        call_id: uuid.UUID | None = None
        playing = False
        while not (call_id and playing):  # until the greeting is playing: mid-call
            line = await asyncio.wait_for(talk.stdout.readline(), 60)
            assert line, "talk exited before the call started"
            if line.startswith(b"{"):
                event = json.loads(line)
                if event["event"] == "session_started":
                    call_id = uuid.UUID(event["session_id"])
                playing = playing or event["event"] == "audio"
        assert call_id is not None
        session = gateway.sessions.sessions[call_id]
        talk.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        await asyncio.wait_for(session.finished.wait(), 30)
        noticed_after = time.monotonic() - frozen_at
    finally:
        if talk.returncode is None:
            os.kill(talk.pid, signal.SIGKILL)
            os.kill(talk.pid, signal.SIGCONT)
        await talk.wait()

    assert session.outcome is not None
    assert session.outcome.reason.value == "client_timeout"
    assert noticed_after >= TIMEOUT_SECS * 0.9  # it waited for the silence, not less
    record = await calls.get_call(database.pool, call_id)
    assert record is not None and record.status == "ended"
    assert record.end_reason == "client_timeout"
    assert "no message from the client" in (record.end_detail or "")
    # Billed to the last audio received, not to when the silence was noticed.
    assert record.duration_ms is not None and record.started_at and record.ended_at
    wall_ms = (record.ended_at - record.started_at).total_seconds() * 1000
    assert record.duration_ms <= wall_ms - TIMEOUT_SECS * 1000 * 0.75
