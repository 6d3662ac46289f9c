"""Billing in a process of its own (`voicegw billing serve`): a gateway meters through it with a
service key, and refuses new calls (fails closed) when it cannot reach it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from voicegw_client import VoiceClient

from billing.ledger import Ledger
from billing.plans import Plans
from gateway.auth import create_api_key
from gateway.db import Database
from gateway.server import Gateway
from gateway.storage import orgs
from tests.billing.helpers import fund
from tests.conftest import TEST_PEPPER
from tests.integration.caller import ScriptedCaller
from tests.integration.conftest import gateway_settings, make_tenant
from tests.integration.rpc import bearer, config, converse

VOICEGW = str(Path(sys.executable).parent / "voicegw")


@pytest.fixture
async def billing_process(
    database: Database, tmp_path: Path
) -> AsyncIterator[tuple[int, asyncio.subprocess.Process]]:
    env = {
        **{k: v for k, v in os.environ.items() if k != "VOICEGW_CONFIG"},
        "DATABASE_URL": database.dsn,
        "VOICEGW_KEY_PEPPER": TEST_PEPPER,
        "VOICEGW_STATE_DIR": str(tmp_path / "billing-state"),
    }
    process = await asyncio.create_subprocess_exec(
        VOICEGW,
        "billing",
        "serve",
        "--host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--http-port",
        "0",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    banner = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
    match = re.search(r"grpc localhost:(\d+)", banner)
    assert match, banner
    yield int(match[1]), process
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)


async def test_a_gateway_meters_through_the_billing_service_and_fails_closed_without_it(
    billing_process: tuple[int, asyncio.subprocess.Process],
    database: Database,
    tmp_path: Path,
) -> None:
    port, process = billing_process
    service = await orgs.create(database.pool, f"svc-{uuid.uuid4().hex[:8]}", service=True)
    key = await create_api_key(
        database.pool, TEST_PEPPER, service.id, scopes=["billing:gateway", "billing:read"]
    )
    settings = gateway_settings(
        tmp_path / "gw-state",
        billing_target=f"127.0.0.1:{port}",
        billing_service_key=key.key,
    )
    tenant = await make_tenant(database)
    ledger = Ledger(database.pool)
    await Plans(ledger).switch_now(tenant.org_id, "payg")
    await fund(ledger, tenant.org_id, 3000)
    gateway = Gateway(settings, database=database)
    await gateway.start()
    try:
        async with VoiceClient(f"127.0.0.1:{gateway.grpc_port}", tenant.key) as client:
            caller = await ScriptedCaller(client, "secretary").start()
            try:
                await caller.wait_bot_stopped(1)
                await caller.hangup()
                log = await caller.wait_end()
            finally:
                await caller.close()
        assert log.ended is not None and log.ended.billed_seconds == 60
        row = await database.pool.fetchrow(
            "SELECT status, charged_minor FROM billing_calls WHERE org_id = $1", tenant.org_id
        )
        assert (row["status"], row["charged_minor"]) == ("finalized", 1000)
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
        responses, error = await converse(gateway, [config()], bearer(tenant.key))
        assert responses == []
        assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
        assert "billing" in (error.details() or "")
    finally:
        await gateway.stop(grace_secs=1)
    account = await ledger.customer_account(tenant.org_id)
    assert (account.posted_minor, account.held_minor) == (2000, 0)
