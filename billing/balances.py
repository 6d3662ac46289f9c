"""What an organisation owes, read from the ledger's entries rather than a cached column.

The receivable account is a system account shared by every organisation, so its cached balance
cannot say who owes what; the owing organisation is on each transaction (`org_id`). A plain
function on purpose: `billing/funds.py` is getting a `Funds.outstanding`, and callers should be
able to switch to it without caring which one they hold.
"""

from __future__ import annotations

import uuid

from gateway.storage._db import Queryable


async def outstanding(db: Queryable, org_id: uuid.UUID, currency: str) -> int:
    """Minor units `org_id` owes in `currency` (0 when it owes nothing).

    Shortfalls debit the receivable account and payments of them credit it back, both in
    transactions tagged with the organisation, so the negated sum of those legs is the debt.
    """
    total = await db.fetchval(
        """SELECT COALESCE(SUM(e.amount_minor), 0)
           FROM billing_entries e
           JOIN billing_accounts a ON a.id = e.account_id
           JOIN billing_transactions t ON t.id = e.transaction_id
           WHERE a.kind = 'receivable' AND a.currency = $2 AND t.org_id = $1""",
        org_id,
        currency,
    )
    return -int(total)
