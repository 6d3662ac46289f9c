"""PostgreSQL stops mid-call for 20 s: the call runs on what it holds, its usage goes to the
local spool, and once the database is back the usage is applied exactly once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from voicegw_client import VoiceClient

from billing.ledger import Ledger
from billing.plans import Plans
from gateway.db import Database, create_database
from gateway.server import Gateway
from gateway.storage.embedded import EmbeddedPostgres, default_base_dir
from tests.billing.helpers import assert_entries_match_balances, fund
from tests.integration.caller import ScriptedCaller
from tests.integration.conftest import gateway_settings, make_tenant

OUTAGE_SECS = 20.0


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Waits for a condition nothing signals (files appearing, a server coming back)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def own_postgres() -> AsyncIterator[EmbeddedPostgres]:
    """A PostgreSQL server of this test's own, so stopping it disturbs no other test."""
    embedded = EmbeddedPostgres(
        default_base_dir() / f"outage-{uuid.uuid4().hex[:8]}" / "pgdata", durable=False
    )
    await asyncio.to_thread(embedded.acquire)
    try:
        yield embedded
    finally:
        await asyncio.to_thread(embedded.release)
        await asyncio.to_thread(embedded.remove)


async def test_a_database_outage_mid_call_loses_no_usage_and_charges_once(
    own_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    await create_database(own_postgres.dsn(), "outage")
    database = await Database.connect(own_postgres.dsn("outage"))
    await database.migrate()
    await database.pool.execute(
        """INSERT INTO billing_plans
               (code, monthly_fee_minor, included_seconds, per_minute_minor, rounding)
           VALUES ('persecond', 0, 0, 600, 'per_second')"""
    )
    settings = gateway_settings(
        tmp_path / "state",
        billing_hold_secs=60,
        billing_heartbeat_secs=1,
        billing_spool_retry_secs=0.2,
    )
    gateway = Gateway(settings, database=database)
    await gateway.start()
    try:
        tenant = await make_tenant(database)
        ledger = Ledger(database.pool)
        await Plans(ledger).switch_now(tenant.org_id, "persecond")
        await fund(ledger, tenant.org_id, 5000)
        spool = gateway.spool
        assert spool is not None
        async with VoiceClient(f"127.0.0.1:{gateway.grpc_port}", tenant.key) as client:
            caller = await ScriptedCaller(client, "secretary").start()
            try:
                await caller.wait_bot_stopped(1)  # the greeting played: a call under way
                stopped_at = time.monotonic()
                await asyncio.to_thread(own_postgres.release)  # PostgreSQL stops
                # The call goes on, on its hold; its heartbeats now land in the spool.
                await until(lambda: bool(spool.pending()), 10, "a spooled heartbeat")
                await caller.hangup()
                log = await caller.wait_end()
            finally:
                await caller.close()
        assert log.ended is not None and log.ended.reason == "caller_hangup"
        assert [r.kind for r in spool.pending()] == ["finalize"]
        # The rest of the outage: nothing can be applied while the database is away.
        await asyncio.sleep(max(0.0, OUTAGE_SECS - (time.monotonic() - stopped_at)))
        assert [r.kind for r in spool.pending()] == ["finalize"]
        await asyncio.to_thread(own_postgres.acquire)  # back
        await until(lambda: not spool.pending(), 30, "the spool to drain")
        row = await database.pool.fetchrow(
            """SELECT call_id, status, duration_ms, billed_seconds, charged_minor
               FROM billing_calls WHERE org_id = $1""",
            tenant.org_id,
        )
        assert row["status"] == "finalized"
        # The caller was told the duration measured on the gateway; billing agrees to the second.
        assert row["billed_seconds"] == log.ended.billed_seconds > 0
        assert row["charged_minor"] == 10 * row["billed_seconds"]
        # Applying it again (a second replay, a retry) changes nothing.
        assert await spool.replay(gateway.billing) == 0  # type: ignore[arg-type]
        assert gateway.meter is not None
        again = await gateway.meter.finalize(
            row["call_id"], row["duration_ms"], key=f"finalize:{row['call_id']}"
        )
        assert again.replayed and again.charged_minor == row["charged_minor"]
        account = await ledger.customer_account(tenant.org_id)
        assert (account.posted_minor, account.held_minor) == (5000 - row["charged_minor"], 0)
        await assert_entries_match_balances(database)
    finally:
        await gateway.stop(grace_secs=1)
        await database.close()
