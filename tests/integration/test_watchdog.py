"""A pipeline that will not stop never holds a call: the end watchdog stores it and ends it anyway.

The TTS here is the real one, except that once the call is ending it blocks on the EndFrame or
CancelFrame, and in its cleanup, and swallows every cancellation while it does: the worst a
buggy engine can do without freezing the event loop. The call must still end within the
watchdog's (here shortened) timeouts plus its bounded final wait, with its row stored and
`session_ended` sent.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pipecat.frames.frames import CancelFrame, EndFrame, Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from voicegw.v1 import voice_pb2 as pb

from gateway.db import Database
from gateway.server import Gateway
from gateway.session import ABANDON_WAIT_SECS
from gateway.storage import calls
from pipelines.agent_config import AgentConfig
from pipelines.builder import OfflineEngines
from pipelines.services.offline_tts import EspeakTTSService
from tests.integration.conftest import Tenant, gateway_settings
from tests.integration.rpc import HeldCall, hold_call
from transports.events import EndReason

WATCHDOG_SECS = 0.5


class Gate:
    """Where the stubborn TTS gets stuck; `release` lets it go when the test is over."""

    def __init__(self) -> None:
        self.held = asyncio.Event()
        self.released = asyncio.Event()

    async def hold(self) -> None:
        self.held.set()
        while not self.released.is_set():
            try:
                await self.released.wait()
            except asyncio.CancelledError:
                continue  # the misbehaviour under test: cancellation is ignored


class StubbornTTS(EspeakTTSService):
    def __init__(self, gate: Gate, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = gate

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, (EndFrame, CancelFrame)):
            await self._gate.hold()
        await super().process_frame(frame, direction)

    async def cleanup(self) -> None:
        await self._gate.hold()
        await super().cleanup()


class StubbornEngines(OfflineEngines):
    def __init__(self, stt_workers: int) -> None:
        super().__init__(stt_workers)
        self.gate = Gate()

    def make_tts(self, agent: AgentConfig) -> FrameProcessor:
        return StubbornTTS(self.gate, self.tts_worker, voice=agent.voice)


@pytest.fixture(scope="module")
def stubborn_engines() -> StubbornEngines:
    return StubbornEngines(stt_workers=1)


@pytest.fixture(scope="module")
async def stubborn_gateway(
    database: Database,
    tmp_path_factory: pytest.TempPathFactory,
    stubborn_engines: StubbornEngines,
) -> AsyncIterator[Gateway]:
    settings = gateway_settings(
        Path(tmp_path_factory.mktemp("watchdog-state")),
        stt_workers=1,
        inbound_timeout_secs=300,
        end_graceful_timeout_secs=WATCHDOG_SECS,
        end_cancel_timeout_secs=WATCHDOG_SECS,
    )
    gw = Gateway(settings, database=database, engines=stubborn_engines)
    await gw.start()
    yield gw
    # Let the abandoned pipelines recover; stopping the gateway then reaps them (a pipeline
    # still stuck would hold up the event loop's close at the end of the test session).
    stubborn_engines.gate.released.set()
    await gw.stop(grace_secs=1)


@pytest.fixture
async def call(stubborn_gateway: Gateway, tenant: Tenant) -> AsyncIterator[HeldCall]:
    held = await hold_call(stubborn_gateway, tenant.key)
    yield held
    await held.close()


@pytest.mark.parametrize(
    "reason",
    [
        pytest.param(EndReason.CALLER_HANGUP, id="caller-hangs-up:CancelFrame"),
        pytest.param(EndReason.AGENT_GOODBYE, id="agent-ends:EndFrame"),
    ],
)
async def test_a_pipeline_that_will_not_stop_still_ends_and_stores_the_call(
    stubborn_gateway: Gateway,
    stubborn_engines: StubbornEngines,
    database: Database,
    call: HeldCall,
    reason: EndReason,
) -> None:
    gateway, gate = stubborn_gateway, stubborn_engines.gate
    assert gateway.sessions is not None
    call_id = uuid.UUID(call.session_id)
    session = gateway.sessions.sessions[call_id]
    gate.held.clear()  # set again only if this call's pipeline gets stuck

    t0 = time.monotonic()
    if reason is EndReason.CALLER_HANGUP:
        ended = await call.hang_up(timeout=30)
    else:
        assert gateway.sessions.hang_up(call_id, reason, "closing")
        ended = await call.wait_ended(timeout=30)
    took = time.monotonic() - t0

    assert gate.held.is_set(), "the TTS never got stuck: the watchdog was not tested"
    assert not gate.released.is_set()
    assert ended.reason == pb.EndReason.Value(f"END_REASON_{reason.name}")
    # The watchdog's wait, then at most the bounded final wait (plus slack for a busy machine).
    assert took < WATCHDOG_SECS + ABANDON_WAIT_SECS + 3.0
    await asyncio.wait_for(session.finished.wait(), 10)
    assert call_id not in gateway.sessions.sessions  # its capacity is free again
    record = await calls.get_call(database.pool, call_id)
    assert record is not None and record.status == "ended"
    assert record.end_reason == reason.value
