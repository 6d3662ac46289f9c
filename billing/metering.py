"""Metered calls: admit a call against plan minutes and money, extend it, bill it exactly once.

A call's authorization is built from two guarded reservations: included plan seconds (held on
the subscription) first, then money (ledger holds tagged with the call) at the plan's rate.
Both are in rounded seconds of the plan's rounding, so whatever second the call ends in, what
was reserved covers what is billed. An authorization may be granted in part (the money covers
less than asked, but at least `min_seconds`): the gateway then knows exactly when the money
runs out and can say so to the caller before it does.

Reads here only choose how much to ask for; every grant is a guarded update that refuses when
a concurrent call took the money first, and the request is then re-sized from a fresh read.

The call row is finalized once. A call whose gateway vanished is settled by `sweep` at its last
heartbeat; if that gateway later delivers the real end (from its durable spool) within
`late_grace`, the difference is charged after all: from the balance, and what the balance
cannot pay goes to the receivable account and suspends the organisation.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from billing import idempotency
from billing.funds import Funds
from billing.ledger import Ledger, LedgerError, request_hash
from billing.plans import Plans
from gateway import metrics
from gateway.storage._db import transaction

ROUNDINGS = ("per_second", "per_started_minute", "60_6")
INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
_ATTEMPTS = 8


class Refused(LedgerError):
    """The call cannot be paid for; `reason` is the ErrorInfo reason the gateway reports."""

    def __init__(self, reason: str, message: str, *, suspended: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.suspended = suspended


class CallNotOpen(LedgerError):
    """The call was already finalized (or settled by the sweeper): it cannot be extended."""


class UnknownCall(LedgerError):
    """No such metered call (or organisation) for this caller."""


class CallExists(LedgerError):
    """The call was authorized before, under another idempotency key."""


def billable_seconds(duration_ms: int, rounding: str) -> int:
    """The seconds a call of `duration_ms` is billed under `rounding` (every started second
    counts; then per started minute, or a 60 s minimum followed by 6 s steps)."""
    if duration_ms <= 0:
        return 0
    seconds = -(-duration_ms // 1000)
    if rounding == "per_second":
        return seconds
    if rounding == "per_started_minute":
        return -(-seconds // 60) * 60
    if rounding == "60_6":
        return 60 if seconds <= 60 else 60 + -(-(seconds - 60) // 6) * 6
    raise LedgerError(f"unknown rounding {rounding!r}")


def money_due(billed_seconds: int, plan_seconds: int, per_minute_minor: int) -> int:
    """What the seconds not covered by the plan cost, rounded up to a whole minor unit."""
    over = max(0, billed_seconds - plan_seconds)
    return -(-over * per_minute_minor // 60)


@dataclass(frozen=True, slots=True)
class CallGrant:
    call_id: uuid.UUID
    # Call seconds covered in total, and how many this request added.
    authorized_seconds: int
    granted_seconds: int
    plan_seconds: int
    held_minor: int
    currency: str
    # The balance's available amount and the plan's remaining seconds (None: unlimited) after
    # this grant: what the gateway tells a caller about the money left.
    available_minor: int
    plan_remaining_seconds: int | None
    # Seconds beyond `authorized_seconds` the plan and balance could still pay for now
    # (None: unlimited): what the gateway warns the caller with.
    more_seconds: int | None = None
    replayed: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["call_id"] = str(self.call_id)
        data.pop("replayed")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], *, replayed: bool) -> CallGrant:
        return cls(**{**data, "call_id": uuid.UUID(data["call_id"]), "replayed": replayed})


@dataclass(frozen=True, slots=True)
class CallBill:
    call_id: uuid.UUID
    status: str
    duration_ms: int
    billed_seconds: int
    plan_seconds: int
    charged_minor: int
    # Part of `charged_minor` taken after the holds were gone (overrun, late finalize).
    late_minor: int
    currency: str
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class _Call:
    call_id: uuid.UUID
    org_id: uuid.UUID
    currency: str
    rounding: str
    per_minute_minor: int
    status: str
    authorized_seconds: int
    plan_held_seconds: int
    usage_ms: int
    finalized_at: datetime | None
    duration_ms: int | None
    billed_seconds: int | None
    plan_used_seconds: int | None
    charged_minor: int | None
    late_minor: int
    included: bool

    def bill(self, *, replayed: bool) -> CallBill:
        return CallBill(
            self.call_id,
            self.status,
            self.duration_ms or 0,
            self.billed_seconds or 0,
            self.plan_used_seconds or 0,
            self.charged_minor or 0,
            self.late_minor,
            self.currency,
            replayed,
        )


_CALL = """c.call_id, c.org_id, c.currency, c.rounding, c.per_minute_minor, c.status,
    c.authorized_seconds, c.plan_held_seconds, c.usage_ms, c.finalized_at, c.duration_ms,
    c.billed_seconds, c.plan_used_seconds, c.charged_minor, c.late_minor,
    p.included_seconds IS DISTINCT FROM 0 AS included"""


def _call(row: Any) -> _Call:
    return _Call(**dict(row))


class _Retry(Exception):
    """A guarded reservation lost a race: undo this attempt's part and re-size."""


class CallMeter:
    def __init__(
        self,
        ledger: Ledger,
        plans: Plans | None = None,
        *,
        hold_ttl: timedelta = timedelta(minutes=10),
        late_grace: timedelta = timedelta(hours=24),
    ) -> None:
        self.ledger = ledger
        self.plans = plans or Plans(ledger)
        self.hold_ttl = hold_ttl
        self.late_grace = late_grace
        self._db = ledger.db

    # Admission and extension ------------------------------------------------------------------

    async def authorize(
        self,
        org_id: uuid.UUID,
        call_id: uuid.UUID,
        seconds: int,
        *,
        key: str,
        min_seconds: int = 1,
    ) -> CallGrant:
        """Admits a new call for up to `seconds` (at least `min_seconds`), or raises `Refused`."""
        _check_request(seconds, min_seconds)
        suspended = await self._db.fetchval(
            "SELECT billing_suspended FROM organizations WHERE id = $1", org_id
        )
        if suspended is None:
            raise UnknownCall(f"no organisation {org_id}")
        if suspended:
            raise Refused(
                INSUFFICIENT_BALANCE,
                "the organisation is suspended until its outstanding balance is paid",
                suspended=True,
            )
        sub = await self.plans.subscription(org_id)  # rolls the period over first if due
        plan = await self.plans.plan(sub.plan_code)
        customer = await self.ledger.customer_account(org_id, plan.currency)
        digest = request_hash({"call": str(call_id), "seconds": seconds, "min": min_seconds})
        now = self.ledger.clock.now()
        async with transaction(self._db) as conn:
            claimed = await idempotency.claim(
                conn, org_id, "call_authorize", key, digest, result={}, now=now
            )
            if claimed.stored is not None:
                return CallGrant.from_json(claimed.stored, replayed=True)
            inserted = await conn.execute(
                """INSERT INTO billing_calls (call_id, org_id, currency, plan_code, rounding,
                       per_minute_minor, created_at, heartbeat_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (call_id) DO NOTHING""",
                call_id,
                org_id,
                plan.currency,
                plan.code,
                plan.rounding,
                plan.per_minute_minor,
                now,
            )
            if inserted != "INSERT 0 1":
                raise CallExists(f"call {call_id} was already authorized (another key)")
            call = await self._lock(conn, call_id)
            grant = await self._cover(conn, call, customer.id, seconds, min_seconds)
            await idempotency.record(conn, claimed.transaction_id, grant.to_json())
            return grant

    async def extend(
        self,
        call_id: uuid.UUID,
        seconds: int,
        *,
        key: str,
        usage_ms: int = 0,
        min_seconds: int = 1,
        org_id: uuid.UUID | None = None,
    ) -> CallGrant:
        """Covers up to `seconds` more of an open call; `Refused` when nothing more is paid.

        `org_id`, when given, must own the call (a service acting for one tenant)."""
        _check_request(seconds, min_seconds)
        call = await self._get(call_id, org_id)
        customer = await self.ledger.customer_account(call.org_id, call.currency)
        digest = request_hash({"call": str(call_id), "seconds": seconds, "min": min_seconds})
        now = self.ledger.clock.now()
        async with transaction(self._db) as conn:
            claimed = await idempotency.claim(
                conn, call.org_id, "call_extend", key, digest, result={}, now=now
            )
            if claimed.stored is not None:
                return CallGrant.from_json(claimed.stored, replayed=True)
            call = await self._lock(conn, call_id)
            if call.status != "open":
                raise CallNotOpen(f"call {call_id} is {call.status}")
            await self._beat(conn, call_id, usage_ms, now)
            grant = await self._cover(conn, call, customer.id, seconds, min_seconds)
            await idempotency.record(conn, claimed.transaction_id, grant.to_json())
            return grant

    async def _cover(
        self,
        conn: Any,
        call: _Call,
        customer_id: uuid.UUID,
        seconds: int,
        min_seconds: int,
    ) -> CallGrant:
        held = await self._held_minor(conn, call.call_id)
        for _ in range(_ATTEMPTS):
            plan_left, available = await self._room(conn, call.org_id, customer_id)
            target = _largest_target(call, held, seconds, min_seconds, plan_left, available)
            if target is None:
                raise self._refusal(call, seconds)
            rounded = billable_seconds(target * 1000, call.rounding)
            plan_total = call.plan_held_seconds + _plan_take(call, rounded, plan_left)
            extra = money_due(rounded, plan_total, call.per_minute_minor) - held
            try:
                async with conn.transaction():  # a savepoint: a lost race undoes only this try
                    if plan_total > call.plan_held_seconds:
                        taken = plan_total - call.plan_held_seconds
                        if not await self.plans.hold_seconds(call.org_id, taken, db=conn):
                            raise _Retry
                    if extra > 0:
                        try:
                            await self.ledger.authorize(
                                customer_id,
                                extra,
                                ttl=self.hold_ttl,
                                call_id=call.call_id,
                                db=conn,
                            )
                        except LedgerError:
                            raise _Retry from None
            except _Retry:
                continue
            await conn.execute(
                """UPDATE billing_calls SET authorized_seconds = $2, plan_held_seconds = $3
                   WHERE call_id = $1""",
                call.call_id,
                target,
                plan_total,
            )
            plan_after, available_after = await self._room(conn, call.org_id, customer_id)
            return CallGrant(
                call.call_id,
                target,
                target - call.authorized_seconds,
                plan_total,
                held + max(0, extra),
                call.currency,
                available_after,
                plan_after,
                _more_seconds(call, plan_after, available_after),
            )
        raise self._refusal(call, seconds)

    def _refusal(self, call: _Call, seconds: int) -> Refused:
        if call.included:
            return Refused(
                QUOTA_EXCEEDED,
                f"the plan's included minutes are used up and the balance cannot pay "
                f"{seconds} s more",
            )
        return Refused(INSUFFICIENT_BALANCE, f"the balance cannot pay {seconds} s more")

    async def _room(
        self, conn: Any, org_id: uuid.UUID, customer_id: uuid.UUID
    ) -> tuple[int | None, int]:
        row = await conn.fetchrow(
            """SELECT s.included_seconds - s.used_seconds - s.held_seconds AS plan_left,
                      a.posted_minor - a.held_minor AS available
               FROM billing_accounts a, billing_subscriptions s
               WHERE a.id = $1 AND s.org_id = $2""",
            customer_id,
            org_id,
        )
        return row["plan_left"], row["available"]

    async def _held_minor(self, conn: Any, call_id: uuid.UUID) -> int:
        return int(
            await conn.fetchval(
                """SELECT COALESCE(SUM(amount_minor), 0) FROM billing_holds
                   WHERE call_id = $1 AND status = 'pending'""",
                call_id,
            )
        )

    # Liveness -----------------------------------------------------------------------------------

    async def heartbeat(
        self, call_id: uuid.UUID, usage_ms: int, *, org_id: uuid.UUID | None = None
    ) -> bool:
        """Records the call's duration so far; False once the call is no longer open."""
        await self._get(call_id, org_id)
        async with transaction(self._db) as conn:
            return await self._beat(conn, call_id, usage_ms, self.ledger.clock.now())

    async def _beat(self, conn: Any, call_id: uuid.UUID, usage_ms: int, now: datetime) -> bool:
        status = await conn.execute(
            """UPDATE billing_calls SET usage_ms = GREATEST(usage_ms, $2), heartbeat_at = $3
               WHERE call_id = $1 AND status = 'open'""",
            call_id,
            max(0, usage_ms),
            now,
        )
        await conn.execute(
            """UPDATE billing_holds SET heartbeat_at = $2
               WHERE call_id = $1 AND status = 'pending'""",
            call_id,
            now,
        )
        return bool(status == "UPDATE 1")

    # Billing ------------------------------------------------------------------------------------

    async def finalize(
        self,
        call_id: uuid.UUID,
        duration_ms: int,
        *,
        key: str,
        reason: str = "",
        org_id: uuid.UUID | None = None,
    ) -> CallBill:
        """Bills the call's real duration once. A repeat returns the first bill; a finalize
        arriving after the sweeper settled the call (within `late_grace`) charges the rest."""
        if duration_ms < 0:
            raise LedgerError("a call's duration cannot be negative")
        call = await self._get(call_id, org_id)
        digest = request_hash({"call": str(call_id), "duration_ms": duration_ms})
        now = self.ledger.clock.now()
        async with transaction(self._db) as conn:
            claimed = await idempotency.claim(
                conn, call.org_id, "call_finalize", key, digest, result={}, now=now
            )
            call = await self._lock(conn, call_id)
            if claimed.stored is not None or call.status == "finalized":
                return call.bill(replayed=True)
            if call.status == "expired":
                if call.finalized_at is not None and now - call.finalized_at > self.late_grace:
                    return call.bill(replayed=True)
                return await self._late(conn, call, duration_ms, reason)
            return await self._settle(conn, call, duration_ms, "finalized", reason)

    async def _settle(
        self, conn: Any, call: _Call, duration_ms: int, status: str, reason: str
    ) -> CallBill:
        billed = billable_seconds(duration_ms, call.rounding)
        plan_used = min(billed, call.plan_held_seconds)
        if call.plan_held_seconds:
            await self.plans.settle_seconds(call.org_id, call.plan_held_seconds, plan_used, db=conn)
        plan_used += await self.plans.use_seconds(
            call.org_id, billed - max(plan_used, _rounded(call)), db=conn
        )
        due = money_due(billed, plan_used, call.per_minute_minor)
        left = due
        # Locked before the account (as every path locks hold, then account): no deadlock.
        holds = await conn.fetch(
            """SELECT id, amount_minor FROM billing_holds
               WHERE call_id = $1 AND status = 'pending' ORDER BY created_at, id FOR UPDATE""",
            call.call_id,
        )
        for hold in holds:
            take = min(left, hold["amount_minor"])
            if take:
                await self.ledger.capture(hold["id"], take, db=conn)
            else:
                await self.ledger.void(hold["id"], db=conn)
            left -= take
        if left:
            await self._charge_late(conn, call, left, f"overrun:{call.call_id}")
        row = await conn.fetchrow(
            f"""UPDATE billing_calls c SET status = $2, finalized_at = $3, duration_ms = $4,
                    billed_seconds = $5, plan_used_seconds = $6, charged_minor = $7,
                    late_minor = $8, end_reason = $9
                FROM billing_plans p WHERE c.call_id = $1 AND p.code = c.plan_code
                RETURNING {_CALL}""",
            call.call_id,
            status,
            self.ledger.clock.now(),
            duration_ms,
            billed,
            plan_used,
            due,
            left,
            reason or None,
        )
        metrics.BILLING_SECONDS.labels(status=status).inc(billed)
        return _call(row).bill(replayed=False)

    async def _late(self, conn: Any, call: _Call, duration_ms: int, reason: str) -> CallBill:
        """The real end of a call the sweeper settled at its last heartbeat."""
        billed = billable_seconds(duration_ms, call.rounding)
        already = call.billed_seconds or 0
        plan_used = call.plan_used_seconds or 0
        if billed > already:
            plan_used += await self.plans.use_seconds(call.org_id, billed - already, db=conn)
        due = max(call.charged_minor or 0, money_due(billed, plan_used, call.per_minute_minor))
        more = due - (call.charged_minor or 0)
        if more:
            await self._charge_late(conn, call, more, f"late:{call.call_id}")
        row = await conn.fetchrow(
            f"""UPDATE billing_calls c SET status = 'finalized', duration_ms = $2,
                    billed_seconds = $3, plan_used_seconds = $4, charged_minor = $5,
                    late_minor = late_minor + $6, end_reason = COALESCE($7, end_reason)
                FROM billing_plans p WHERE c.call_id = $1 AND p.code = c.plan_code
                RETURNING {_CALL}""",
            call.call_id,
            max(duration_ms, call.duration_ms or 0),
            max(billed, already),
            plan_used,
            due,
            more,
            reason or None,
        )
        metrics.BILLING_SECONDS.labels(status="late").inc(max(0, billed - already))
        return _call(row).bill(replayed=False)

    async def _charge_late(self, conn: Any, call: _Call, amount: int, key: str) -> None:
        """Charges `amount` with no hold behind it: what the balance has, the rest receivable."""
        await Funds(self.ledger).debit(
            call.org_id,
            amount,
            call.currency,
            source="call",
            key=key,
            request={"call": str(call.call_id)},
            result={"call_id": str(call.call_id)},
            db=conn,
        )

    async def sweep(self, ttl: timedelta | None = None) -> int:
        """Settles open calls whose heartbeat is older than `ttl` at their last reported
        duration (status `expired`), then any orphaned ledger hold. Returns how many calls."""
        ttl = ttl or self.hold_ttl
        cutoff = self.ledger.clock.now() - ttl
        rows = await self._db.fetch(
            """SELECT call_id FROM billing_calls
               WHERE status = 'open' AND heartbeat_at < $1 ORDER BY heartbeat_at""",
            cutoff,
        )
        settled = 0
        for row in rows:
            async with transaction(self._db) as conn:
                call = await self._lock(conn, row["call_id"])
                stale = await conn.fetchval(
                    "SELECT heartbeat_at < $2 FROM billing_calls WHERE call_id = $1",
                    call.call_id,
                    cutoff,
                )
                if call.status != "open" or not stale:
                    continue  # it heartbeated or was finalized meanwhile
                await self._settle(conn, call, call.usage_ms, "expired", "expired")
                settled += 1
        await self.ledger.sweep(ttl)
        metrics.BILLING_HOLDS_OPEN.set(
            await self._db.fetchval("SELECT count(*) FROM billing_calls WHERE status = 'open'")
        )
        return settled

    # Lookups ------------------------------------------------------------------------------------

    async def authorization(
        self, call_id: uuid.UUID, *, org_id: uuid.UUID | None = None
    ) -> CallGrant:
        """The call's authorization as it stands (what a heartbeat answers)."""
        call = await self._get(call_id, org_id)
        customer = await self.ledger.customer_account(call.org_id, call.currency)
        plan_left, available = await self._room(self._db, call.org_id, customer.id)
        held = await self._held_minor(self._db, call_id)
        return CallGrant(
            call_id,
            call.authorized_seconds,
            0,
            call.plan_held_seconds,
            held,
            call.currency,
            available,
            plan_left,
            _more_seconds(call, plan_left, available),
        )

    async def bill(self, call_id: uuid.UUID, *, org_id: uuid.UUID | None = None) -> CallBill:
        return (await self._get(call_id, org_id)).bill(replayed=False)

    async def _get(self, call_id: uuid.UUID, org_id: uuid.UUID | None) -> _Call:
        row = await self._db.fetchrow(
            f"""SELECT {_CALL} FROM billing_calls c JOIN billing_plans p ON p.code = c.plan_code
                WHERE c.call_id = $1""",
            call_id,
        )
        # Another organisation's call reads as unknown, so one tenant cannot probe another's.
        if row is None or (org_id is not None and row["org_id"] != org_id):
            raise UnknownCall(f"no metered call {call_id}")
        return _call(row)

    async def _lock(self, conn: Any, call_id: uuid.UUID) -> _Call:
        row = await conn.fetchrow(
            f"""SELECT {_CALL} FROM billing_calls c JOIN billing_plans p ON p.code = c.plan_code
                WHERE c.call_id = $1 FOR UPDATE OF c""",
            call_id,
        )
        if row is None:
            raise UnknownCall(f"no metered call {call_id}")
        return _call(row)


def _more_seconds(call: _Call, plan_left: int | None, available: int) -> int | None:
    if plan_left is None:
        return None
    bought = available * 60 // call.per_minute_minor if call.per_minute_minor else 0
    return max(0, plan_left) + bought


def _check_request(seconds: int, min_seconds: int) -> None:
    if not 1 <= min_seconds <= seconds:
        raise LedgerError("need 1 <= min_seconds <= seconds")


def _rounded(call: _Call) -> int:
    return billable_seconds(call.authorized_seconds * 1000, call.rounding)


def _plan_take(call: _Call, rounded_target: int, plan_left: int | None) -> int:
    """Included seconds to add so the plan covers as much of `rounded_target` as it can."""
    wanted = max(0, rounded_target - max(_rounded(call), call.plan_held_seconds))
    return wanted if plan_left is None else max(0, min(wanted, plan_left))


def _largest_target(
    call: _Call,
    held_minor: int,
    seconds: int,
    min_seconds: int,
    plan_left: int | None,
    available: int,
) -> int | None:
    """The longest coverage in [authorized + min_seconds, authorized + seconds] that the plan
    and the available balance can pay for now (cost only grows with the target)."""

    def affordable(target: int) -> bool:
        rounded = billable_seconds(target * 1000, call.rounding)
        plan_total = call.plan_held_seconds + _plan_take(call, rounded, plan_left)
        if call.per_minute_minor == 0 and rounded > plan_total and plan_left is not None:
            return False  # a free overage rate never pays for minutes the plan lacks
        return money_due(rounded, plan_total, call.per_minute_minor) - held_minor <= available

    low, high = call.authorized_seconds + min_seconds, call.authorized_seconds + seconds
    if not affordable(low):
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if affordable(middle):
            low = middle
        else:
            high = middle - 1
    return low
