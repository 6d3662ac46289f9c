"""Plans and subscriptions: included minutes held like money, monthly fees, period rollover.

A subscription's period is a UTC calendar month. At the first touch in a new month the period
rolls over once: the fee of the plan now in force (the requested one, if a change was asked for)
is debited under an idempotency key naming the month, and the minutes reset. When the balance
cannot pay the fee, what it can pay is taken, the rest is posted to the receivable account and
the organisation is suspended until it is paid (its calls are refused).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from billing.funds import Funds
from billing.ledger import Ledger, LedgerError
from gateway.storage._db import transaction

DEFAULT_PLAN = "payg"


@dataclass(frozen=True, slots=True)
class Plan:
    code: str
    currency: str
    monthly_fee_minor: int
    included_seconds: int | None
    per_minute_minor: int
    rounding: str


@dataclass(frozen=True, slots=True)
class Subscription:
    org_id: uuid.UUID
    plan_code: str
    next_plan_code: str | None
    period_start: datetime
    included_seconds: int | None
    used_seconds: int
    held_seconds: int

    @property
    def remaining_seconds(self) -> int | None:
        if self.included_seconds is None:
            return None
        return self.included_seconds - self.used_seconds - self.held_seconds


_SUB = (
    "org_id, plan_code, next_plan_code, period_start, included_seconds, used_seconds, held_seconds"
)


def _plan(row: Any) -> Plan:
    return Plan(
        row["code"],
        row["currency"],
        row["monthly_fee_minor"],
        row["included_seconds"],
        row["per_minute_minor"],
        row["rounding"],
    )


def _sub(row: Any) -> Subscription:
    return Subscription(
        row["org_id"],
        row["plan_code"],
        row["next_plan_code"],
        row["period_start"],
        row["included_seconds"],
        row["used_seconds"],
        row["held_seconds"],
    )


def month_start(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


class Plans:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._db = ledger.db

    async def list(self) -> list[Plan]:
        rows = await self._db.fetch("SELECT * FROM billing_plans ORDER BY monthly_fee_minor")
        return [_plan(row) for row in rows]

    async def plan(self, code: str, *, db: Any = None) -> Plan:
        row = await (db or self._db).fetchrow("SELECT * FROM billing_plans WHERE code = $1", code)
        if row is None:
            raise LedgerError(f"no plan {code!r}")
        return _plan(row)

    async def subscription(self, org_id: uuid.UUID) -> Subscription:
        """The organisation's subscription in the current period (payg from its first use).

        Every admission asks this, so the common case (it exists, the period has started) is
        one plain read: no row lock, so no commit flush and no queue behind the organisation's
        other calls (measured: the lock cost one WAL flush per authorization).
        """
        row = await self._db.fetchrow(
            f"SELECT {_SUB} FROM billing_subscriptions WHERE org_id = $1", org_id
        )
        if row is not None and row["period_start"] >= month_start(self.ledger.clock.now()):
            return _sub(row)
        payg = await self.plan(DEFAULT_PLAN)
        await self._db.execute(
            """INSERT INTO billing_subscriptions (org_id, plan_code, period_start, included_seconds)
               VALUES ($1, $2, $3, $4) ON CONFLICT (org_id) DO NOTHING""",
            org_id,
            payg.code,
            month_start(self.ledger.clock.now()),
            payg.included_seconds,
        )
        return await self.rollover(org_id)

    async def change_plan(self, org_id: uuid.UUID, code: str) -> Subscription:
        """Asks for `code` from the next period on (no proration)."""
        await self.plan(code)
        await self.subscription(org_id)
        row = await self._db.fetchrow(
            f"""UPDATE billing_subscriptions SET next_plan_code = $2 WHERE org_id = $1
                RETURNING {_SUB}""",
            org_id,
            code,
        )
        return _sub(row)

    async def switch_now(self, org_id: uuid.UUID, code: str) -> Subscription:
        """An operator's switch (a contract billed elsewhere, a correction, a trial, the local
        demo): the plan is in force now, with no fee, unlike a customer's `change_plan`.

        The switch is the current period's start on the new plan: a period not rolled over yet is
        started here (its used seconds reset, no fee for the old plan it is leaving), and a pending
        `next_plan_code` is dropped because the operator has just decided the plan. Seconds already
        used or held stay covered even when the new plan includes fewer, as at a rollover, so the
        subscription's `used + held <= included` guard holds and live calls are not cut short.
        """
        plan = await self.plan(code)
        period = month_start(self.ledger.clock.now())
        async with transaction(self._db) as conn:
            # The row lock orders this against a concurrent rollover: whichever runs second sees
            # the period already started and leaves it alone.
            await conn.execute(
                """INSERT INTO billing_subscriptions
                       (org_id, plan_code, period_start, included_seconds)
                   VALUES ($1, $2, $3, $4) ON CONFLICT (org_id) DO NOTHING""",
                org_id,
                plan.code,
                period,
                plan.included_seconds,
            )
            row = await conn.fetchrow(
                f"""UPDATE billing_subscriptions s
                    SET plan_code = $2, next_plan_code = NULL,
                        period_start = GREATEST(s.period_start, $3),
                        used_seconds = CASE WHEN s.period_start < $3 THEN 0 ELSE s.used_seconds END,
                        included_seconds = CASE
                            WHEN $4::bigint IS NULL THEN NULL
                            ELSE GREATEST($4::bigint, s.held_seconds + CASE
                                WHEN s.period_start < $3 THEN 0 ELSE s.used_seconds END) END
                    WHERE org_id = $1 RETURNING {_SUB}""",
                org_id,
                plan.code,
                period,
                plan.included_seconds,
            )
        return _sub(row)

    async def rollover(self, org_id: uuid.UUID) -> Subscription:
        """Starts the current month's period if it has not started yet; safe to call often."""
        period = month_start(self.ledger.clock.now())
        async with transaction(self._db) as conn:
            row = await conn.fetchrow(
                f"SELECT {_SUB} FROM billing_subscriptions WHERE org_id = $1 FOR UPDATE", org_id
            )
            if row is None:
                raise LedgerError(f"organisation {org_id} has no subscription")
            current = _sub(row)
            if current.period_start >= period:
                return current
            plan = await self.plan(current.next_plan_code or current.plan_code, db=conn)
            row = await conn.fetchrow(
                f"""UPDATE billing_subscriptions
                    SET plan_code = $2, next_plan_code = NULL, period_start = $3,
                        used_seconds = 0,
                        -- Seconds still held by calls that span the change stay covered even
                        -- when the new plan includes fewer (a downgrade mid-call).
                        included_seconds = CASE WHEN $4::bigint IS NULL THEN NULL
                                                ELSE GREATEST($4::bigint, held_seconds) END
                    WHERE org_id = $1 RETURNING {_SUB}""",
                org_id,
                plan.code,
                period,
                plan.included_seconds,
            )
            if plan.monthly_fee_minor:
                await self._charge_fee(conn, org_id, plan, period)
            return _sub(row)

    async def _charge_fee(self, conn: Any, org_id: uuid.UUID, plan: Plan, period: datetime) -> None:
        # Under the subscription's row lock: the month's fee is debited once, what the balance
        # cannot pay becoming a receivable that suspends the organisation.
        await Funds(self.ledger).debit(
            org_id,
            plan.monthly_fee_minor,
            plan.currency,
            source="plan_fee",
            key=f"{plan.code}:{period:%Y-%m}",
            request={"plan": plan.code, "period": f"{period:%Y-%m}"},
            result={"plan": plan.code, "fee_minor": plan.monthly_fee_minor},
            db=conn,
        )

    # Included minutes -------------------------------------------------------------------------

    async def hold_seconds(self, org_id: uuid.UUID, seconds: int, *, db: Any = None) -> bool:
        """Reserves `seconds` of included minutes; False when the plan cannot cover them.

        Pass `db` (the caller's transaction) only after `subscription()` has run for this
        period: the guarded update is all this does then.
        """
        if seconds <= 0:
            raise LedgerError("a minutes hold must be positive")
        if db is None:
            await self.subscription(org_id)
        status = await (db or self._db).execute(
            """UPDATE billing_subscriptions SET held_seconds = held_seconds + $2
               WHERE org_id = $1
                 AND (included_seconds IS NULL
                      OR used_seconds + held_seconds + $2 <= included_seconds)""",
            org_id,
            seconds,
        )
        return bool(status == "UPDATE 1")

    async def settle_seconds(
        self, org_id: uuid.UUID, held: int, used: int, *, db: Any = None
    ) -> None:
        """Turns `held` reserved seconds into `used` (≤ held) ones, releasing the rest."""
        if not 0 <= used <= held:
            raise LedgerError("used seconds must be between 0 and the held seconds")
        status = await (db or self._db).execute(
            """UPDATE billing_subscriptions
               SET held_seconds = held_seconds - $2, used_seconds = used_seconds + $3
               WHERE org_id = $1 AND held_seconds >= $2""",
            org_id,
            held,
            used,
        )
        if status != "UPDATE 1":
            raise LedgerError(f"organisation {org_id} holds fewer than {held} seconds")

    async def use_seconds(self, org_id: uuid.UUID, seconds: int, *, db: Any = None) -> int:
        """Uses up to `seconds` included seconds without a hold (a late charge); returns how
        many the plan covered, the rest being the caller's to charge in money."""
        if seconds <= 0:
            return 0
        async with transaction(db or self._db) as conn:
            # Locked, then computed, then written: one guarded statement computed the grant
            # from another row version than it updated under load (seen: CHECK violations).
            row = await conn.fetchrow(
                """SELECT included_seconds, used_seconds, held_seconds
                   FROM billing_subscriptions WHERE org_id = $1 FOR UPDATE""",
                org_id,
            )
            if row is None:
                return 0
            room = (
                seconds
                if row["included_seconds"] is None
                else row["included_seconds"] - row["used_seconds"] - row["held_seconds"]
            )
            covered = max(0, min(seconds, room))
            if covered:
                await conn.execute(
                    """UPDATE billing_subscriptions SET used_seconds = used_seconds + $2
                       WHERE org_id = $1""",
                    org_id,
                    covered,
                )
        return int(covered or 0)
