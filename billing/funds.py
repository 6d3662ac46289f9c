"""Money entering and leaving an organisation's prepaid balance from outside: provider payments,
refunds, disputes and manual adjustments.

One place owns the receivable rule, so payments and the admin RPC cannot disagree about it: a
debit the available balance cannot cover still happens in full (the provider has already taken
the money back), the shortfall is owed on the receivable account and the organisation is
suspended; the next credit pays the debt first and lifts the suspension once nothing is owed.

Each operation runs under a row lock on the customer account, so a credit, a debit and a plan fee
for one organisation never read the same available balance.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from billing.ledger import Account, Ledger, LedgerError, Posted, SystemAccountKind, request_hash
from gateway import metrics
from gateway.storage._db import Queryable, transaction

Source = Literal["stripe", "yookassa", "adjustment", "call", "plan_fee"]

# Where the other leg goes: money from (or back to) a provider clears through its account; what
# we charge for service (calls past their holds, monthly fees) is revenue.
_COUNTER: dict[str, SystemAccountKind] = {
    "stripe": "clearing_stripe",
    "yookassa": "clearing_yookassa",
    "adjustment": "adjustment",
    "call": "revenue",
    "plan_fee": "revenue",
}


def _counter_kind(source: str) -> SystemAccountKind:
    try:
        return _COUNTER[source]
    except KeyError:
        raise LedgerError(f"unknown source of funds {source!r}") from None


def _digest(amount_minor: int, currency: str, request: dict[str, Any]) -> str:
    # The amount is part of the request even when the caller left it out of `request`: a key
    # reused for another amount must be a conflict, not a silent replay of the first.
    return request_hash({"amount_minor": amount_minor, "currency": currency, "request": request})


class Funds:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def credit(
        self,
        org_id: uuid.UUID,
        amount_minor: int,
        currency: str,
        *,
        source: str,
        key: str,
        request: dict[str, Any],
        result: dict[str, Any] | None = None,
        db: Queryable = None,
    ) -> Posted:
        """Adds `amount_minor` to the organisation's balance once per (source, key), then pays
        what it owes on the receivable account from it.

        `db` is the caller's connection when the credit must commit with the caller's own rows
        (a payment marked paid): the credit then happens exactly when they do.
        """
        if amount_minor <= 0:
            raise LedgerError("a credit must be for a positive amount")
        ledger = self.ledger
        async with transaction(db or ledger.db) as conn:
            customer = await self._locked_customer(conn, org_id, currency)
            counter = await ledger.system_account(_counter_kind(source), currency, db=conn)
            posted = await ledger.post_in(
                conn,
                org_id,
                f"credit:{source}",
                key,
                _digest(amount_minor, currency, request),
                [(counter.id, -amount_minor), (customer.id, amount_minor)],
                {"amount_minor": amount_minor, "currency": currency, **(result or {})},
            )
            if not posted.replayed:
                await self._pay_receivable(conn, org_id, customer, posted.id)
            return posted

    async def debit(
        self,
        org_id: uuid.UUID,
        amount_minor: int,
        currency: str,
        *,
        source: str,
        key: str,
        request: dict[str, Any],
        result: dict[str, Any] | None = None,
        db: Queryable = None,
    ) -> Posted:
        """Takes `amount_minor` back once per (source, key): from the available balance as far
        as it goes, the rest becomes a receivable and suspends the organisation.

        Never refused for lack of funds: a refund or a lost dispute has already happened at the
        provider, so the ledger must record it whatever the balance says. Held money (calls in
        progress) is not taken, so those calls can still be captured.
        """
        if amount_minor <= 0:
            raise LedgerError("a debit must be for a positive amount")
        ledger = self.ledger
        async with transaction(db or ledger.db) as conn:
            customer = await self._locked_customer(conn, org_id, currency)
            counter = await ledger.system_account(_counter_kind(source), currency, db=conn)
            receivable = await ledger.system_account("receivable", currency, db=conn)
            taken = max(0, min(amount_minor, customer.available_minor))
            shortfall = amount_minor - taken
            posted = await ledger.post_in(
                conn,
                org_id,
                f"debit:{source}",
                key,
                _digest(amount_minor, currency, request),
                [(counter.id, amount_minor), (customer.id, -taken), (receivable.id, -shortfall)],
                {
                    "amount_minor": amount_minor,
                    "currency": currency,
                    "taken_minor": taken,
                    "shortfall_minor": shortfall,
                    **(result or {}),
                },
            )
            if not posted.replayed and shortfall:
                await conn.execute(
                    "UPDATE organizations SET billing_suspended = true WHERE id = $1", org_id
                )
        if not posted.replayed and shortfall:
            metrics.RECEIVABLES.labels(currency).inc(shortfall)
        return posted

    async def outstanding(self, org_id: uuid.UUID, currency: str, *, db: Queryable = None) -> int:
        """What the organisation owes on the receivable account in `currency`.

        Derived from the entries (the receivable account is shared by all organisations, so its
        cached balance cannot say who owes what): every transaction is tagged with its org.
        """
        conn = db or self.ledger.db
        receivable = await self.ledger.system_account("receivable", currency, db=conn)
        owed = await conn.fetchval(
            """SELECT coalesce(-sum(e.amount_minor), 0)
               FROM billing_entries e JOIN billing_transactions t ON t.id = e.transaction_id
               WHERE t.org_id = $1 AND e.account_id = $2""",
            org_id,
            receivable.id,
        )
        return int(owed)

    async def _locked_customer(self, conn: Any, org_id: uuid.UUID, currency: str) -> Account:
        account = await self.ledger.customer_account(org_id, currency, db=conn)
        row = await conn.fetchrow(
            "SELECT posted_minor, held_minor FROM billing_accounts WHERE id = $1 FOR UPDATE",
            account.id,
        )
        return Account(
            account.id,
            account.org_id,
            account.kind,
            account.currency,
            row["posted_minor"],
            row["held_minor"],
        )

    async def _pay_receivable(
        self, conn: Any, org_id: uuid.UUID, customer: Account, credit_id: uuid.UUID
    ) -> None:
        """Pays the debt in the credit's currency from the (locked) available balance.

        The suspension is lifted only when this payment cleared a debt and nothing is owed in
        any currency: an organisation an operator suspended without a debt stays suspended.
        """
        owed = await self.outstanding(org_id, customer.currency, db=conn)
        if owed <= 0:
            return
        available = await conn.fetchval(
            "SELECT posted_minor - held_minor FROM billing_accounts WHERE id = $1", customer.id
        )
        paid = max(0, min(owed, available))
        if paid:
            receivable = await self.ledger.system_account("receivable", customer.currency, db=conn)
            await self.ledger.post_in(
                conn,
                org_id,
                "receivable_payoff",
                str(credit_id),
                request_hash({"credit": str(credit_id), "paid_minor": paid}),
                [(customer.id, -paid), (receivable.id, paid)],
                {"paid_minor": paid, "outstanding_minor": owed - paid},
            )
        if paid == owed and not await self._owes_anything(conn, org_id):
            await conn.execute(
                "UPDATE organizations SET billing_suspended = false WHERE id = $1", org_id
            )

    @staticmethod
    async def _owes_anything(conn: Any, org_id: uuid.UUID) -> bool:
        return bool(
            await conn.fetchval(
                """SELECT EXISTS (
                       SELECT 1 FROM billing_entries e
                       JOIN billing_transactions t ON t.id = e.transaction_id
                       JOIN billing_accounts a ON a.id = e.account_id
                       WHERE t.org_id = $1 AND a.kind = 'receivable'
                       GROUP BY a.id HAVING sum(e.amount_minor) < 0)""",
                org_id,
            )
        )
