"""Operator changes that step around the customer-facing rules of billing/plans.py.

A customer's plan change waits for the next period and its fee (`Plans.change_plan`). An operator
sometimes needs the plan in force now: a contract billed outside the ledger, a correction, a
trial, or the local demo (`voicegw dev`), whose organisation has no money and would otherwise be
refused or, charged a fee it cannot pay, suspended.
"""

from __future__ import annotations

import uuid

from billing.plans import Plans, Subscription, month_start
from gateway.storage._db import transaction

_SUB = (
    "org_id, plan_code, next_plan_code, period_start, included_seconds, used_seconds, held_seconds"
)


async def switch_plan_now(plans: Plans, org_id: uuid.UUID, code: str) -> Subscription:
    """Puts the organisation on `code` for the current period at once, charging no fee.

    The switch is the current period's start on the new plan: a period not rolled over yet is
    started here (its used seconds reset, no fee for the old plan it is leaving), and a pending
    `next_plan_code` is dropped because the operator has just decided the plan. Seconds already
    used or held stay covered even when the new plan includes fewer, as at a rollover, so the
    subscription's `used + held <= included` guard holds and live calls are not cut short.
    """
    plan = await plans.plan(code)
    period = month_start(plans.ledger.clock.now())
    async with transaction(plans.ledger.db) as conn:
        # The row lock orders this against a concurrent rollover: whichever runs second sees
        # the period already started and leaves it alone.
        await conn.execute(
            """INSERT INTO billing_subscriptions (org_id, plan_code, period_start, included_seconds)
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
    return Subscription(**dict(row))
