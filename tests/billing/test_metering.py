"""Metered calls on a real PostgreSQL: admitted only when paid for, billed once by the plan's
rounding, a crashed call charged up to its last heartbeat, a late end charged once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from billing.ledger import IdempotencyConflict, Ledger
from billing.metering import (
    INSUFFICIENT_BALANCE,
    QUOTA_EXCEEDED,
    CallMeter,
    CallNotOpen,
    Refused,
    billable_seconds,
)
from billing.plans import Plans
from gateway.db import Database
from gateway.storage import orgs
from tests.billing.helpers import FakeClock, assert_entries_match_balances, fund, new_org

START = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ms", "rounding", "billed"),
    [
        (0, "per_second", 0),
        (1, "per_second", 1),
        (1000, "per_second", 1),
        (1001, "per_second", 2),
        (59_000, "per_started_minute", 60),
        (60_001, "per_started_minute", 120),
        (1, "60_6", 60),
        (60_000, "60_6", 60),
        (60_001, "60_6", 66),
        (67_000, "60_6", 72),
    ],
)
def test_billable_seconds_follow_the_rounding(ms: int, rounding: str, billed: int) -> None:
    assert billable_seconds(ms, rounding) == billed


def _meter(database: Database, clock: FakeClock | None = None) -> CallMeter:
    ledger = Ledger(database.pool, clock or FakeClock(START))
    return CallMeter(ledger, Plans(ledger), hold_ttl=timedelta(minutes=2))


async def _balance(meter: CallMeter, org_id: uuid.UUID) -> tuple[int, int]:
    account = await meter.ledger.customer_account(org_id)
    return account.posted_minor, account.held_minor


async def test_a_call_is_held_per_started_minute_and_billed_once(database: Database) -> None:
    meter = _meter(database)
    org_id = await new_org(database)
    await fund(meter.ledger, org_id, 5000)
    call = uuid.uuid4()
    grant = await meter.authorize(org_id, call, 60, key="a1")
    assert (grant.authorized_seconds, grant.held_minor, grant.available_minor) == (60, 1000, 4000)
    grant = await meter.extend(call, 30, key="e1", usage_ms=50_000)
    # 90 s rounds up to 120 s: a second minute held.
    assert (grant.authorized_seconds, grant.granted_seconds, grant.held_minor) == (90, 30, 2000)
    bill = await meter.finalize(call, 61_500, key="f1")
    assert (bill.billed_seconds, bill.charged_minor, bill.late_minor) == (120, 2000, 0)
    assert await _balance(meter, org_id) == (3000, 0)
    again = await meter.finalize(call, 61_500, key="f2")  # another key: still the same bill
    assert again.replayed and again.charged_minor == 2000
    assert await _balance(meter, org_id) == (3000, 0)
    with pytest.raises(IdempotencyConflict):
        await meter.finalize(call, 99_000, key="f1")
    with pytest.raises(CallNotOpen):
        await meter.extend(call, 30, key="e2")
    await assert_entries_match_balances(database)


async def test_an_unfunded_call_is_refused_and_leaves_nothing(database: Database) -> None:
    meter = _meter(database)
    org_id = await new_org(database)
    with pytest.raises(Refused) as refused:
        await meter.authorize(org_id, uuid.uuid4(), 60, key="a1")
    assert refused.value.reason == INSUFFICIENT_BALANCE
    assert (
        await database.pool.fetchval("SELECT count(*) FROM billing_calls WHERE org_id = $1", org_id)
        == 0
    )
    # The key did nothing, so a retry after a top-up is admitted under the same key.
    await fund(meter.ledger, org_id, 1000)
    assert (await meter.authorize(org_id, uuid.uuid4(), 60, key="a1")).authorized_seconds == 60


async def test_a_partial_grant_stops_exactly_where_the_money_does(database: Database) -> None:
    meter = _meter(database)
    org_id = await new_org(database)
    await database.pool.execute("UPDATE billing_plans SET rounding = 'per_second'")
    try:
        await fund(meter.ledger, org_id, 250)  # 15 s at 1000 per minute
        call = uuid.uuid4()
        assert (await meter.authorize(org_id, call, 10, key="a")).authorized_seconds == 10
        grant = await meter.extend(call, 10, key="e1")
        assert (grant.authorized_seconds, grant.granted_seconds, grant.held_minor) == (15, 5, 250)
        with pytest.raises(Refused) as refused:
            await meter.extend(call, 10, key="e2")
        assert refused.value.reason == INSUFFICIENT_BALANCE
        bill = await meter.finalize(call, 14_200, key="f")
        assert (bill.billed_seconds, bill.charged_minor) == (15, 250)
    finally:
        await database.pool.execute("UPDATE billing_plans SET rounding = 'per_started_minute'")
    assert await _balance(meter, org_id) == (0, 0)


async def test_sixty_concurrent_calls_get_only_the_affordable_minutes(
    database: Database,
) -> None:
    meter = _meter(database)
    org_id = await new_org(database)
    await fund(meter.ledger, org_id, 6000)  # six minutes on payg

    async def one(i: int) -> bool:
        try:
            await meter.authorize(org_id, uuid.uuid4(), 60, min_seconds=60, key=f"k{i}")
            return True
        except Refused:
            return False

    granted = await asyncio.gather(*(one(i) for i in range(60)))
    assert sum(granted) == 6
    assert await _balance(meter, org_id) == (6000, 6000)
    await assert_entries_match_balances(database)


async def test_one_remaining_plan_minute_admits_one_call(database: Database) -> None:
    meter = _meter(database)
    org_id = await new_org(database)
    plans = meter.plans
    await plans.subscription(org_id)
    await database.pool.execute(
        """UPDATE billing_subscriptions SET plan_code = 'basic', included_seconds = 6000,
           used_seconds = 5940 WHERE org_id = $1""",
        org_id,
    )

    async def one(i: int) -> str:
        try:
            await meter.authorize(org_id, uuid.uuid4(), 60, min_seconds=60, key=f"k{i}")
            return "granted"
        except Refused as refused:
            return refused.reason

    outcomes = await asyncio.gather(*(one(i) for i in range(60)))
    assert outcomes.count("granted") == 1
    assert set(outcomes) == {"granted", QUOTA_EXCEEDED}
    sub = await plans.subscription(org_id)
    assert (sub.used_seconds, sub.held_seconds) == (5940, 60)


async def test_plan_minutes_come_first_then_money(database: Database) -> None:
    meter = _meter(database)
    org_id = await new_org(database)
    await meter.plans.subscription(org_id)
    await database.pool.execute(
        """UPDATE billing_subscriptions SET plan_code = 'basic', included_seconds = 6000,
           used_seconds = 5970 WHERE org_id = $1""",
        org_id,
    )
    await fund(meter.ledger, org_id, 10_000)
    call = uuid.uuid4()
    grant = await meter.authorize(org_id, call, 120, key="a")
    # 30 included seconds, then 90 s at basic's 800 per minute, admitted when the call began.
    assert (grant.plan_seconds, grant.plan_remaining_seconds) == (30, 0)
    assert grant.held_minor == 1200
    bill = await meter.finalize(call, 100_000, key="f")  # 100 s -> 120 s billed
    assert (bill.plan_seconds, bill.charged_minor) == (30, 1200)
    sub = await meter.plans.subscription(org_id)
    assert (sub.used_seconds, sub.held_seconds) == (6000, 0)
    assert await _balance(meter, org_id) == (8800, 0)


async def test_a_crashed_call_is_billed_to_its_last_heartbeat_and_a_late_end_once(
    database: Database,
) -> None:
    clock = FakeClock(START)
    meter = _meter(database, clock)
    meter.late_grace = timedelta(minutes=30)
    org_id = await new_org(database)
    await fund(meter.ledger, org_id, 10_000)
    call = uuid.uuid4()
    await meter.authorize(org_id, call, 180, key="a")
    clock.moment += timedelta(seconds=70)
    assert await meter.heartbeat(call, 70_000)
    clock.moment += timedelta(minutes=1)
    await meter.sweep()  # the heartbeat is 1 min old, the TTL 2 min
    assert (await meter.bill(call)).status == "open"
    clock.moment += timedelta(minutes=2)
    assert await meter.sweep() >= 1
    bill = await meter.bill(call)
    assert (bill.status, bill.billed_seconds, bill.charged_minor) == ("expired", 120, 2000)
    assert await _balance(meter, org_id) == (8000, 0)
    assert not await meter.heartbeat(call, 80_000)
    # The gateway's spool delivers the real end: 150 s, one more minute, charged once.
    late = await meter.finalize(call, 150_000, key="f")
    assert (late.status, late.billed_seconds, late.charged_minor, late.late_minor) == (
        "finalized",
        180,
        3000,
        1000,
    )
    again = await meter.finalize(call, 150_000, key="f-retry")
    assert again.replayed and again.charged_minor == 3000
    assert await _balance(meter, org_id) == (7000, 0)
    await assert_entries_match_balances(database)


async def test_a_late_end_after_the_grace_period_charges_nothing_more(database: Database) -> None:
    clock = FakeClock(START)
    meter = _meter(database, clock)
    meter.late_grace = timedelta(minutes=30)
    org_id = await new_org(database)
    await fund(meter.ledger, org_id, 10_000)
    call = uuid.uuid4()
    await meter.authorize(org_id, call, 120, key="a")
    await meter.heartbeat(call, 30_000)
    clock.moment += timedelta(minutes=3)
    assert await meter.sweep() >= 1
    clock.moment += timedelta(minutes=31)
    bill = await meter.finalize(call, 110_000, key="f")
    assert (bill.status, bill.charged_minor) == ("expired", 1000)
    assert await _balance(meter, org_id) == (9000, 0)


async def test_a_late_charge_the_balance_cannot_pay_is_receivable_and_suspends(
    database: Database,
) -> None:
    clock = FakeClock(START)
    meter = _meter(database, clock)
    org_id = await new_org(database)
    await fund(meter.ledger, org_id, 1000)
    call = uuid.uuid4()
    await meter.authorize(org_id, call, 60, key="a")
    await meter.heartbeat(call, 59_000)
    clock.moment += timedelta(minutes=3)
    await meter.sweep()
    bill = await meter.finalize(call, 125_000, key="f")  # 3 minutes, 1 paid, 2 owed
    assert (bill.charged_minor, bill.late_minor) == (3000, 2000)
    assert await _balance(meter, org_id) == (0, 0)
    org = await orgs.get(database.pool, org_id)
    assert org is not None and org.billing_suspended and not org.suspended
    with pytest.raises(Refused) as refused:
        await meter.authorize(org_id, uuid.uuid4(), 60, key="b")
    assert refused.value.suspended
    await assert_entries_match_balances(database)


async def test_enterprise_calls_are_unlimited_and_free_per_minute(database: Database) -> None:
    meter = _meter(database)
    org_id = await new_org(database)
    await meter.plans.subscription(org_id)
    await database.pool.execute(
        """UPDATE billing_subscriptions SET plan_code = 'enterprise', included_seconds = NULL
           WHERE org_id = $1""",
        org_id,
    )
    call = uuid.uuid4()
    grant = await meter.authorize(org_id, call, 3600, key="a")
    assert (grant.authorized_seconds, grant.held_minor, grant.plan_remaining_seconds) == (
        3600,
        0,
        None,
    )
    bill = await meter.finalize(call, 4_000_000, key="f")  # an overrun is covered too
    assert (bill.billed_seconds, bill.plan_seconds, bill.charged_minor) == (4020, 4020, 0)
