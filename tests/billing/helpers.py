"""What the billing tests share: a clock they set, funded organisations, the ledger's invariants."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from billing.ledger import Ledger
from gateway.db import Database
from gateway.storage import orgs


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.moment = now

    def now(self) -> datetime:
        return self.moment


async def new_org(database: Database, prefix: str = "bill") -> uuid.UUID:
    return (await orgs.create(database.pool, f"{prefix}-{uuid.uuid4().hex[:10]}")).id


async def fund(ledger: Ledger, org_id: uuid.UUID, amount: int) -> uuid.UUID:
    """Credits `amount` as a top-up would; returns the customer account."""
    customer = await ledger.customer_account(org_id)
    clearing = await ledger.system_account("clearing_stripe")
    await ledger.post(
        org_id=org_id,
        kind="topup",
        key=f"pay-{uuid.uuid4()}",
        request={"amount": amount},
        legs=[(clearing.id, -amount), (customer.id, amount)],
    )
    return customer.id


async def spend(ledger: Ledger, org_id: uuid.UUID, amount: int) -> None:
    """Spends `amount` of the balance the way a call does: held, then captured."""
    account = await ledger.customer_account(org_id)
    hold = await ledger.authorize(account.id, amount, ttl=timedelta(minutes=5))
    await ledger.capture(hold.id, amount)


async def assert_entries_match_balances(database: Database) -> None:
    """Every cached balance equals the sum of its entries and every transaction balances."""
    rows = await database.pool.fetch(
        """SELECT a.id, a.posted_minor, coalesce(sum(e.amount_minor), 0) AS entries
           FROM billing_accounts a LEFT JOIN billing_entries e ON e.account_id = a.id
           GROUP BY a.id, a.posted_minor"""
    )
    assert rows
    assert all(row["posted_minor"] == row["entries"] for row in rows)
    unbalanced = await database.pool.fetchval(
        """SELECT count(*) FROM (SELECT transaction_id FROM billing_entries
           GROUP BY transaction_id HAVING sum(amount_minor) <> 0) t"""
    )
    assert unbalanced == 0
    held = await database.pool.fetchval(
        """SELECT count(*) FROM billing_accounts a WHERE held_minor <> (SELECT
               coalesce(sum(amount_minor), 0) FROM billing_holds h
               WHERE h.account_id = a.id AND h.status = 'pending')"""
    )
    assert held == 0
