"""Calls are metered end to end over `Converse`: refused before any audio when unpaid, warned
and then closed when the money runs out, billed the server-measured duration once."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from voicegw.v1 import billing_pb2 as bpb
from voicegw.v1 import billing_pb2_grpc
from voicegw_client import BillingNotice, SessionEnded, VoiceClient

from billing.ledger import Ledger
from billing.plans import Plans
from gateway.auth import create_api_key
from gateway.db import Database
from gateway.server import Gateway
from tests.billing.helpers import assert_entries_match_balances, fund
from tests.conftest import TEST_PEPPER
from tests.integration.caller import ScriptedCaller
from tests.integration.conftest import Tenant, gateway_settings, make_tenant
from tests.integration.rpc import bearer, config, converse, error_reason

# A plan billed per second at 600 kopecks a minute (10 a second), so a few seconds of money
# make a whole cut-off in a test.
TEST_PLAN = "persecond"


@pytest.fixture(scope="module")
async def metered_gateway(
    database: Database, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    await database.pool.execute(
        """INSERT INTO billing_plans
               (code, monthly_fee_minor, included_seconds, per_minute_minor, rounding)
           VALUES ($1, 0, 0, 600, 'per_second') ON CONFLICT (code) DO NOTHING""",
        TEST_PLAN,
    )
    settings = gateway_settings(
        Path(tmp_path_factory.mktemp("billing-state")),
        billing_hold_secs=5,
        billing_extend_lead_secs=7,
        billing_warning_secs=8,
        billing_closing_secs=5,
        billing_heartbeat_secs=1,
    )
    gw = Gateway(settings, database=database)
    await gw.start()
    yield gw
    await gw.stop(grace_secs=1)


async def _payg_tenant(database: Database, plan: str = "payg") -> Tenant:
    tenant = await make_tenant(database)
    await Plans(Ledger(database.pool)).switch_now(tenant.org_id, plan)
    return tenant


async def test_an_unfunded_call_is_refused_before_any_audio(
    metered_gateway: Gateway, database: Database
) -> None:
    tenant = await _payg_tenant(database)
    responses, error = await converse(metered_gateway, [config()], bearer(tenant.key))
    assert responses == []  # not even session_started: the caller was never answered
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(error) == "INSUFFICIENT_BALANCE"
    rows = await database.pool.fetchval(
        "SELECT count(*) FROM calls WHERE org_id = $1", tenant.org_id
    )
    assert rows == 0


async def test_a_call_hears_the_warning_then_the_closing_line_and_is_billed_once(
    metered_gateway: Gateway, database: Database
) -> None:
    tenant = await _payg_tenant(database, TEST_PLAN)
    ledger = Ledger(database.pool)
    await fund(ledger, tenant.org_id, 120)  # 12 seconds
    async with VoiceClient(f"127.0.0.1:{metered_gateway.grpc_port}", tenant.key) as client:
        caller = await ScriptedCaller(client, "secretary").start()
        try:
            log = await caller.wait_end(timeout=40)
        finally:
            await caller.close()
    notices = log.of(BillingNotice)
    assert len(notices) == 1 and notices[0].kind == "low_balance"
    assert 0 < notices[0].seconds_left <= 8 and notices[0].currency == "RUB"
    said = " ".join(log.transcripts("agent"))
    assert "almost used up" in said and "has run out" in said
    assert said.index("almost used up") < said.index("has run out")
    ended = log.ended
    assert isinstance(ended, SessionEnded) and ended.reason == "balance_exhausted"
    row = await database.pool.fetchrow(
        """SELECT c.duration_ms, b.billed_seconds, b.charged_minor, b.status,
                  b.authorized_seconds
           FROM calls c JOIN billing_calls b ON b.call_id = c.id WHERE c.org_id = $1""",
        tenant.org_id,
    )
    # Never past the money, billed the server-measured duration under per-second rounding.
    assert row["status"] == "finalized" and row["authorized_seconds"] == 12
    measured = math.ceil(min(row["duration_ms"], 12_000) / 1000)
    assert row["billed_seconds"] == ended.billed_seconds == measured
    assert 11 <= row["billed_seconds"] <= 12 and row["duration_ms"] < 12_500
    assert row["charged_minor"] == 10 * row["billed_seconds"]
    account = await ledger.customer_account(tenant.org_id)
    assert (account.posted_minor, account.held_minor) == (120 - row["charged_minor"], 0)
    await assert_entries_match_balances(database)


async def test_a_hangup_bills_the_plan_rounding_and_releases_the_rest(
    metered_gateway: Gateway, database: Database
) -> None:
    tenant = await _payg_tenant(database)  # 1000 a started minute
    ledger = Ledger(database.pool)
    await fund(ledger, tenant.org_id, 5000)
    async with VoiceClient(f"127.0.0.1:{metered_gateway.grpc_port}", tenant.key) as client:
        caller = await ScriptedCaller(client, "secretary").start()
        try:
            await caller.wait_bot_stopped(1)  # the greeting
            await caller.hangup()
            log = await caller.wait_end()
        finally:
            await caller.close()
    assert log.ended is not None and log.ended.reason == "caller_hangup"
    assert log.ended.billed_seconds == 60  # a started minute
    account = await ledger.customer_account(tenant.org_id)
    assert (account.posted_minor, account.held_minor) == (4000, 0)


async def test_a_tenant_key_cannot_meter_calls(
    metered_gateway: Gateway, database: Database
) -> None:
    tenant = await _payg_tenant(database)
    # Even a tenant key carrying the scope: only a service organisation's key meters calls.
    scoped = await create_api_key(
        database.pool, TEST_PEPPER, tenant.org_id, scopes=["billing:gateway", "billing:read"]
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{metered_gateway.grpc_port}") as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        for key in (tenant.key, scoped.key):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.FinalizeCall(
                    bpb.FinalizeCallRequest(
                        call_id=str(uuid.uuid4()), duration_ms=1000, idempotency_key="k"
                    ),
                    metadata=bearer(key),
                )
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        balance = await stub.GetBalance(bpb.GetBalanceRequest(), metadata=bearer(scoped.key))
        assert balance.plan_code == "payg" and balance.available.currency == "RUB"


async def test_a_call_that_money_cannot_carry_past_its_minimum_is_not_answered(
    metered_gateway: Gateway, database: Database
) -> None:
    tenant = await _payg_tenant(database, TEST_PLAN)
    await fund(Ledger(database.pool), tenant.org_id, 40)  # 4 s; the gateway's minimum is 5 s
    responses, error = await converse(metered_gateway, [config()], bearer(tenant.key))
    assert responses == []
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(error) == "INSUFFICIENT_BALANCE"
    account = await Ledger(database.pool).customer_account(tenant.org_id)
    assert (account.posted_minor, account.held_minor) == (40, 0)
