"""Plans on a real PostgreSQL: minutes cannot be overspent, a month's fee is debited once, a fee
the balance cannot pay becomes a receivable and suspends the organisation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from billing.ledger import Ledger
from billing.plans import Plans
from gateway.db import Database
from gateway.storage import orgs
from tests.billing.helpers import FakeClock, fund, new_org


async def test_the_price_list(database: Database) -> None:
    # Only the product's price list (tests may add plans of their own to the shared database).
    listed = await Plans(Ledger(database.pool)).list()
    plans = [p for p in listed if p.code in ("payg", "basic", "pro", "enterprise")]
    assert [
        (p.code, p.monthly_fee_minor, p.included_seconds, p.per_minute_minor, p.rounding)
        for p in plans
    ] == [
        ("payg", 0, 0, 1000, "per_started_minute"),
        ("basic", 99000, 6000, 800, "per_started_minute"),
        ("pro", 299000, 30000, 600, "per_started_minute"),
        ("enterprise", 999000, None, 0, "per_started_minute"),
    ]


async def test_new_organisations_start_on_payg_with_nothing_included(database: Database) -> None:
    plans = Plans(Ledger(database.pool))
    org_id = await new_org(database, "plan")
    sub = await plans.subscription(org_id)
    assert (sub.plan_code, sub.remaining_seconds) == ("payg", 0)
    assert not await plans.hold_seconds(org_id, 1)


async def test_sixty_concurrent_holds_on_one_remaining_minute_grant_one(
    database: Database,
) -> None:
    clock = FakeClock(datetime(2026, 3, 15, tzinfo=UTC))
    ledger = Ledger(database.pool, clock)
    plans = Plans(ledger)
    org_id = await new_org(database, "plan")
    await fund(ledger, org_id, 99000)
    await plans.change_plan(org_id, "basic")
    clock.moment = datetime(2026, 4, 1, tzinfo=UTC)
    await plans.subscription(org_id)
    assert await plans.hold_seconds(org_id, 5940)
    await plans.settle_seconds(org_id, 5940, 5940)  # 99 of 100 minutes used
    granted = await asyncio.gather(*(plans.hold_seconds(org_id, 60) for _ in range(60)))
    assert sum(granted) == 1
    sub = await plans.subscription(org_id)
    assert (sub.used_seconds, sub.held_seconds, sub.remaining_seconds) == (5940, 60, 0)
    await plans.settle_seconds(org_id, 60, 42)
    sub = await plans.subscription(org_id)
    assert (sub.used_seconds, sub.held_seconds, sub.remaining_seconds) == (5982, 0, 18)


async def test_rollover_debits_the_fee_once_and_resets_minutes(database: Database) -> None:
    clock = FakeClock(datetime(2026, 1, 20, 12, tzinfo=UTC))
    ledger = Ledger(database.pool, clock)
    plans = Plans(ledger)
    org_id = await new_org(database, "plan")
    await fund(ledger, org_id, 250000)
    await plans.change_plan(org_id, "basic")  # from February
    assert (await plans.subscription(org_id)).plan_code == "payg"

    clock.moment = datetime(2026, 2, 1, 0, 0, 1, tzinfo=UTC)
    subs = await asyncio.gather(*(plans.subscription(org_id) for _ in range(20)))
    assert {s.plan_code for s in subs} == {"basic"}
    account = await ledger.customer_account(org_id)
    assert account.posted_minor == 250000 - 99000
    assert await plans.hold_seconds(org_id, 600)
    await plans.settle_seconds(org_id, 600, 600)

    clock.moment = datetime(2026, 3, 3, tzinfo=UTC)
    sub = await plans.subscription(org_id)
    await plans.subscription(org_id)
    assert (sub.plan_code, sub.used_seconds, sub.remaining_seconds) == ("basic", 0, 6000)
    assert (await ledger.customer_account(org_id)).posted_minor == 250000 - 2 * 99000
    fees = await database.pool.fetchval(
        "SELECT count(*) FROM billing_transactions WHERE org_id = $1 AND kind = 'debit:plan_fee'",
        org_id,
    )
    assert fees == 2


async def test_an_unpayable_fee_becomes_a_receivable_and_suspends(database: Database) -> None:
    clock = FakeClock(datetime(2026, 5, 10, tzinfo=UTC))
    ledger = Ledger(database.pool, clock)
    plans = Plans(ledger)
    org_id = await new_org(database, "plan")
    await fund(ledger, org_id, 50000)
    await plans.change_plan(org_id, "basic")
    receivable = await ledger.system_account("receivable")
    clock.moment = datetime(2026, 6, 1, tzinfo=UTC)
    await plans.subscription(org_id)
    assert (await ledger.customer_account(org_id)).posted_minor == 0
    assert (await ledger.account(receivable.id)).posted_minor <= -49000
    shortfall = await database.pool.fetchval(
        """SELECT e.amount_minor FROM billing_entries e
           JOIN billing_transactions t ON t.id = e.transaction_id
           WHERE t.org_id = $1 AND t.kind = 'debit:plan_fee' AND e.account_id = $2""",
        org_id,
        receivable.id,
    )
    assert shortfall == -49000
    org = await orgs.get(database.pool, org_id)
    assert org is not None and org.billing_suspended and not org.suspended
