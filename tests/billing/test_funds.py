"""Funds on a real PostgreSQL: credits and debits from outside happen once per key, a debit the
balance cannot cover becomes a receivable and suspends the organisation, and the next credits pay
the debt first and lift the suspension once nothing is owed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from billing.funds import Funds
from billing.ledger import IdempotencyConflict, Ledger, LedgerError
from billing.plans import Plans
from gateway.db import Database
from gateway.storage import orgs


async def _org(database: Database) -> uuid.UUID:
    return (await orgs.create(database.pool, f"funds-{uuid.uuid4().hex[:10]}")).id


async def _suspended(database: Database, org_id: uuid.UUID) -> bool:
    org = await orgs.get(database.pool, org_id)
    assert org is not None
    return org.billing_suspended


async def _balance(ledger: Ledger, org_id: uuid.UUID, currency: str = "RUB") -> int:
    return (await ledger.customer_account(org_id, currency)).posted_minor


async def _credit(funds: Funds, org_id: uuid.UUID, amount: int, key: str | None = None) -> None:
    key = key or str(uuid.uuid4())
    await funds.credit(org_id, amount, "RUB", source="stripe", key=key, request={"payment": key})


async def test_a_credit_happens_once_per_key(database: Database) -> None:
    ledger = Ledger(database.pool)
    funds = Funds(ledger)
    org_id = await _org(database)
    first = await funds.credit(
        org_id, 50_000, "RUB", source="yookassa", key="pay-1", request={"payment": "pay-1"}
    )
    again = await funds.credit(
        org_id, 50_000, "RUB", source="yookassa", key="pay-1", request={"payment": "pay-1"}
    )
    assert not first.replayed and again.replayed and again.id == first.id
    assert await _balance(ledger, org_id) == 50_000
    clearing = await ledger.system_account("clearing_yookassa")
    assert clearing.posted_minor <= -50_000
    with pytest.raises(IdempotencyConflict):
        await funds.credit(
            org_id, 60_000, "RUB", source="yookassa", key="pay-1", request={"payment": "pay-1"}
        )


async def test_adjustments_have_their_own_counter_account(database: Database) -> None:
    ledger = Ledger(database.pool)
    funds = Funds(ledger)
    org_id = await _org(database)
    await funds.credit(
        org_id, 700, "RUB", source="adjustment", key="adj-1", request={"reason": "goodwill"}
    )
    await funds.debit(
        org_id, 200, "RUB", source="adjustment", key="adj-2", request={"reason": "typo"}
    )
    assert await _balance(ledger, org_id) == 500
    adjustment = await ledger.system_account("adjustment")
    assert adjustment.kind == "adjustment"
    with pytest.raises(LedgerError):
        await funds.credit(org_id, 1, "RUB", source="paypal", key="x", request={})
    with pytest.raises(LedgerError):
        await funds.debit(org_id, 0, "RUB", source="adjustment", key="y", request={})


async def test_a_covered_debit_leaves_nothing_owed(database: Database) -> None:
    ledger = Ledger(database.pool)
    funds = Funds(ledger)
    org_id = await _org(database)
    await _credit(funds, org_id, 1000)
    posted = await funds.debit(
        org_id, 400, "RUB", source="stripe", key="re-1", request={"refund": "re-1"}
    )
    assert posted.result["shortfall_minor"] == 0
    assert await _balance(ledger, org_id) == 600
    assert await funds.outstanding(org_id, "RUB") == 0
    assert not await _suspended(database, org_id)


async def test_receivable_suspend_and_unsuspend_cycle(database: Database) -> None:
    ledger = Ledger(database.pool)
    funds = Funds(ledger)
    org_id = await _org(database)
    await _credit(funds, org_id, 1000)

    # A refund of more than the balance: all of it is taken, the rest is owed.
    posted = await funds.debit(
        org_id, 2500, "RUB", source="stripe", key="dp-1", request={"dispute": "dp-1"}
    )
    assert (posted.result["taken_minor"], posted.result["shortfall_minor"]) == (1000, 1500)
    assert await _balance(ledger, org_id) == 0
    assert await funds.outstanding(org_id, "RUB") == 1500
    assert await _suspended(database, org_id)

    # A replay changes nothing (and does not suspend twice or owe twice).
    again = await funds.debit(
        org_id, 2500, "RUB", source="stripe", key="dp-1", request={"dispute": "dp-1"}
    )
    assert again.replayed and await funds.outstanding(org_id, "RUB") == 1500

    # A credit smaller than the debt goes to the debt; still suspended.
    await _credit(funds, org_id, 1000)
    assert await _balance(ledger, org_id) == 0
    assert await funds.outstanding(org_id, "RUB") == 500
    assert await _suspended(database, org_id)

    # The next one clears it, keeps the rest and lifts the suspension.
    await _credit(funds, org_id, 800)
    assert await _balance(ledger, org_id) == 300
    assert await funds.outstanding(org_id, "RUB") == 0
    assert not await _suspended(database, org_id)


async def test_a_debit_does_not_take_money_held_for_calls(database: Database) -> None:
    ledger = Ledger(database.pool)
    funds = Funds(ledger)
    org_id = await _org(database)
    await _credit(funds, org_id, 1000)
    account = await ledger.customer_account(org_id)
    hold = await ledger.authorize(account.id, 600, ttl=timedelta(minutes=5))
    posted = await funds.debit(
        org_id, 1000, "RUB", source="yookassa", key="r-1", request={"refund": "r-1"}
    )
    assert (posted.result["taken_minor"], posted.result["shortfall_minor"]) == (400, 600)
    await ledger.capture(hold.id, 600)  # the call in progress is still paid for
    assert await _balance(ledger, org_id) == 0
    assert await funds.outstanding(org_id, "RUB") == 600


async def test_a_credit_does_not_lift_a_suspension_without_a_debt(database: Database) -> None:
    """An operator's suspension is not the ledger's to lift."""
    ledger = Ledger(database.pool)
    funds = Funds(ledger)
    org_id = await _org(database)
    await orgs.set_suspended(database.pool, org_id, True)
    await _credit(funds, org_id, 1000)
    org = await orgs.get(database.pool, org_id)
    assert org is not None and org.suspended and not org.billing_suspended


async def test_a_credit_pays_an_unpaid_plan_fee(database: Database) -> None:
    class Clock:
        moment = datetime(2026, 1, 20, tzinfo=UTC)

        def now(self) -> datetime:
            return self.moment

    clock = Clock()
    ledger = Ledger(database.pool, clock)
    plans, funds = Plans(ledger), Funds(ledger)
    org_id = await _org(database)
    await plans.change_plan(org_id, "basic")
    clock.moment = datetime(2026, 2, 1, 0, 0, 1, tzinfo=UTC)
    await plans.subscription(org_id)  # February's fee: nothing to pay it with
    assert await funds.outstanding(org_id, "RUB") == 99_000
    assert await _suspended(database, org_id)
    await _credit(funds, org_id, 100_000)
    assert await funds.outstanding(org_id, "RUB") == 0
    assert await _balance(ledger, org_id) == 1_000
    assert not await _suspended(database, org_id)


async def test_concurrent_debits_take_the_balance_once(database: Database) -> None:
    """Ten refunds of 300 against 1000 at once: exactly 1000 taken and 2000 owed."""
    ledger = Ledger(database.pool)
    funds = Funds(ledger)
    org_id = await _org(database)
    await _credit(funds, org_id, 1000)
    results = await asyncio.gather(
        *(
            funds.debit(org_id, 300, "RUB", source="stripe", key=f"r-{i}", request={"refund": i})
            for i in range(10)
        )
    )
    assert sum(p.result["taken_minor"] for p in results) == 1000
    assert await _balance(ledger, org_id) == 0
    assert await funds.outstanding(org_id, "RUB") == 2000
    rows = await database.pool.fetch(
        """SELECT a.posted_minor, coalesce(sum(e.amount_minor), 0) AS entries
           FROM billing_accounts a LEFT JOIN billing_entries e ON e.account_id = a.id
           GROUP BY a.id, a.posted_minor"""
    )
    assert all(row["posted_minor"] == row["entries"] for row in rows)
