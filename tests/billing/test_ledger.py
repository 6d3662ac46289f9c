"""The ledger on a real PostgreSQL: concurrent holds never overspend, every transaction balances,
an idempotency key has one effect, a hold resolves once."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from billing.ledger import (
    HoldNotPending,
    IdempotencyConflict,
    InsufficientBalance,
    Ledger,
)
from gateway.db import Database
from gateway.storage import orgs
from tests.billing.helpers import assert_entries_match_balances

TTL = timedelta(minutes=5)

# Runs in a second process: the same race from another connection pool and interpreter.
RACER = """
import asyncio, json, sys, uuid
from datetime import timedelta
import asyncpg
from billing.ledger import InsufficientBalance, Ledger

async def main(dsn, account, n, amount):
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=10)
    ledger = Ledger(pool)
    async def one():
        try:
            await ledger.authorize(uuid.UUID(account), amount, ttl=timedelta(minutes=5))
            return True
        except InsufficientBalance:
            return False
    print("ready", flush=True)
    sys.stdin.readline()
    granted = await asyncio.gather(*(one() for _ in range(n)))
    print(json.dumps(sum(granted)), flush=True)
    await pool.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
"""


async def _funded(ledger: Ledger, database: Database, amount: int) -> uuid.UUID:
    org = await orgs.create(database.pool, f"bill-{uuid.uuid4().hex[:10]}")
    customer = await ledger.customer_account(org.id)
    clearing = await ledger.system_account("clearing_stripe")
    await ledger.post(
        org_id=org.id,
        kind="topup",
        key=f"pay-{uuid.uuid4()}",
        request={"amount": amount},
        legs=[(clearing.id, -amount), (customer.id, amount)],
    )
    return customer.id


async def test_sixty_concurrent_holds_from_two_processes_grant_only_what_is_affordable(
    database: Database,
) -> None:
    ledger = Ledger(database.pool)
    account = await _funded(ledger, database, 1000)
    racer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RACER,
        database.dsn,
        str(account),
        "30",
        "150",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert racer.stdout is not None and racer.stdin is not None
    try:
        assert (await racer.stdout.readline()).strip() == b"ready"

        async def one() -> bool:
            try:
                await ledger.authorize(account, 150, ttl=TTL)
                return True
            except InsufficientBalance:
                return False

        racer.stdin.write(b"go\n")
        await racer.stdin.drain()
        here = await asyncio.gather(*(one() for _ in range(30)))
        there = json.loads(await racer.stdout.readline())
    finally:
        await asyncio.wait_for(racer.wait(), 30)
    assert sum(here) + there == 6  # 6 x 150 <= 1000 < 7 x 150
    balance = await ledger.account(account)
    assert (balance.posted_minor, balance.held_minor) == (1000, 900)
    await assert_entries_match_balances(database)


async def test_same_key_has_one_effect_and_another_request_under_it_is_refused(
    database: Database,
) -> None:
    ledger = Ledger(database.pool)
    org = await orgs.create(database.pool, f"bill-{uuid.uuid4().hex[:10]}")
    customer = await ledger.customer_account(org.id)
    clearing = await ledger.system_account("clearing_yookassa")
    legs = [(clearing.id, -500), (customer.id, 500)]
    first = await ledger.post(
        org_id=org.id, kind="topup", key="p-1", request={"amount": 500}, legs=legs
    )
    replays = await asyncio.gather(
        *(
            ledger.post(org_id=org.id, kind="topup", key="p-1", request={"amount": 500}, legs=legs)
            for _ in range(5)
        )
    )
    assert not first.replayed and all(r.replayed and r.id == first.id for r in replays)
    assert (await ledger.account(customer.id)).posted_minor == 500
    with pytest.raises(IdempotencyConflict):
        await ledger.post(
            org_id=org.id,
            kind="topup",
            key="p-1",
            request={"amount": 900},
            legs=[(clearing.id, -900), (customer.id, 900)],
        )
    assert (await ledger.account(customer.id)).posted_minor == 500
    await assert_entries_match_balances(database)


async def test_overdraft_is_refused_and_leaves_nothing(database: Database) -> None:
    ledger = Ledger(database.pool)
    account = await _funded(ledger, database, 100)
    revenue = await ledger.system_account("revenue")
    org_id = (await ledger.account(account)).org_id
    with pytest.raises(InsufficientBalance):
        await ledger.post(
            org_id=org_id,
            kind="fee",
            key="fee-1",
            request={"amount": 101},
            legs=[(account, -101), (revenue.id, 101)],
        )
    kept = await database.pool.fetchval(
        "SELECT count(*) FROM billing_transactions WHERE org_id = $1 AND kind = 'fee'", org_id
    )
    assert kept == 0 and (await ledger.account(account)).posted_minor == 100


async def test_a_hold_is_captured_or_voided_exactly_once(database: Database) -> None:
    ledger = Ledger(database.pool)
    account = await _funded(ledger, database, 1000)
    hold = await ledger.authorize(account, 600, ttl=TTL, call_id=uuid.uuid4())
    with pytest.raises(InsufficientBalance):
        await ledger.authorize(account, 500, ttl=TTL)
    await ledger.capture(hold.id, 250)
    for late in (ledger.capture(hold.id, 250), ledger.void(hold.id)):
        with pytest.raises(HoldNotPending):
            await late
    balance = await ledger.account(account)
    assert (balance.posted_minor, balance.held_minor) == (750, 0)
    voided = await ledger.authorize(account, 700, ttl=TTL)
    await ledger.void(voided.id)
    balance = await ledger.account(account)
    assert (balance.posted_minor, balance.held_minor) == (750, 0)
    await assert_entries_match_balances(database)


async def test_the_database_refuses_unbalanced_or_edited_entries(database: Database) -> None:
    ledger = Ledger(database.pool)
    account = await _funded(ledger, database, 10)
    now = datetime.now(UTC)
    async with database.pool.acquire() as conn:
        with pytest.raises(asyncpg.RaiseError, match="unbalanced"):
            async with conn.transaction():
                tx = await conn.fetchval(
                    """INSERT INTO billing_transactions
                       (kind, idempotency_key, request_hash, created_at)
                       VALUES ('bad', $1, 'x', $2) RETURNING id""",
                    str(uuid.uuid4()),
                    now,
                )
                await conn.execute(
                    """INSERT INTO billing_entries
                       (transaction_id, account_id, amount_minor, created_at)
                       VALUES ($1, $2, 5, $3)""",
                    tx,
                    account,
                    now,
                )
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await conn.execute(
                "UPDATE billing_entries SET amount_minor = 1 WHERE account_id = $1", account
            )


class FakeClock:
    def __init__(self) -> None:
        self.moment = datetime(2026, 7, 1, 12, tzinfo=UTC)

    def now(self) -> datetime:
        return self.moment


async def test_sweeper_charges_a_silent_call_its_last_usage_and_a_late_finalize_cannot(
    database: Database,
) -> None:
    clock = FakeClock()
    ledger = Ledger(database.pool, clock)
    account = await _funded(ledger, database, 1000)
    crashed = await ledger.authorize(account, 600, ttl=TTL)
    alive = await ledger.authorize(account, 300, ttl=TTL)
    assert await ledger.heartbeat(crashed.id, 100)
    clock.moment += timedelta(seconds=30)
    assert await ledger.heartbeat(crashed.id, 250)  # its last word
    clock.moment += timedelta(seconds=90)
    assert await ledger.heartbeat(alive.id, 40)
    assert await ledger.sweep(timedelta(seconds=60)) == 1

    balance = await ledger.account(account)
    assert (balance.posted_minor, balance.held_minor) == (750, 300)
    with pytest.raises(HoldNotPending, match="expired"):
        await ledger.capture(crashed.id, 400)
    assert not await ledger.heartbeat(crashed.id, 300)
    assert await ledger.sweep(timedelta(seconds=60)) == 0
    await ledger.capture(alive.id, 40)
    balance = await ledger.account(account)
    assert (balance.posted_minor, balance.held_minor) == (710, 0)
    await assert_entries_match_balances(database)
