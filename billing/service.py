"""`voicegw.v1.BillingService` over gRPC: who may do what, and the status each refusal gets.

The money rules live in `CallMeter`, `Plans` and the ledger; this layer checks the caller's
scope and tenancy, validates the request, and maps every refusal to a precise status. The
gateway's own RPCs (authorize, extend, finalize) are for service keys only: a tenant able to
finalize its own calls could bill itself nothing.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

import grpc
from grpc_status import rpc_status
from voicegw.v1 import billing_pb2 as pb
from voicegw.v1 import billing_pb2_grpc

from billing import idempotency
from billing.funds import Funds
from billing.ledger import IdempotencyConflict, Ledger, LedgerError, request_hash
from billing.metering import (
    CallBill,
    CallExists,
    CallMeter,
    CallNotOpen,
    Refused,
    UnknownCall,
)
from billing.payment_types import (
    CurrencyMismatch,
    PaymentError,
    PaymentsNotConfigured,
    ProviderError,
)
from billing.payments import Payments
from billing.plans import Plans
from billing.wire import UNREACHABLE, bill_to_proto, grant_to_proto, money
from gateway import metrics
from gateway.auth import Principal
from gateway.grpc_auth import current_principal
from gateway.grpc_errors import status_with_reason
from gateway.storage._db import transaction

GATEWAY_SCOPE = "billing:gateway"
READ_SCOPE = "billing:read"
ADMIN_SCOPE = "billing:admin"
_ROUNDING = {
    "per_second": pb.ROUNDING_PER_SECOND,
    "per_started_minute": pb.ROUNDING_PER_STARTED_MINUTE,
    "60_6": pb.ROUNDING_SIXTY_SIX,
}
_PROVIDERS = {pb.PAYMENT_PROVIDER_STRIPE: "stripe", pb.PAYMENT_PROVIDER_YOOKASSA: "yookassa"}

T = TypeVar("T")


class _Abort(Exception):
    def __init__(self, code: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


def _uuid(value: str, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise _Abort("INVALID_ARGUMENT", f"{field} must be a UUID, got {value!r}") from None


def _key(value: str) -> str:
    key = value.strip()
    if not key or len(key) > 200:
        raise _Abort("INVALID_ARGUMENT", "idempotency_key is required (1-200 characters)")
    return key


def _seconds(seconds: int, min_seconds: int) -> tuple[int, int]:
    min_seconds = min_seconds or 1
    if not 1 <= min_seconds <= seconds <= 24 * 3600:
        raise _Abort(
            "INVALID_ARGUMENT", "need 1 <= min_seconds <= seconds <= 86400 (one call at a time)"
        )
    return seconds, min_seconds


class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
    def __init__(
        self,
        meter: CallMeter,
        *,
        funds: Funds | None = None,
        payments: Payments | None = None,
    ) -> None:
        self.meter = meter
        self.ledger: Ledger = meter.ledger
        self.plans: Plans = meter.plans
        self.funds = funds
        self.payments = payments

    # Gateway RPCs -------------------------------------------------------------------------------

    async def AuthorizeCall(
        self, request: pb.AuthorizeCallRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthorizeCallResponse:
        async def run() -> pb.AuthorizeCallResponse:
            self._gateway_only()
            org_id = _uuid(request.organization_id, "organization_id")
            seconds, min_seconds = _seconds(request.seconds, request.min_seconds)
            grant = await self.meter.authorize(
                org_id,
                _uuid(request.call_id, "call_id"),
                seconds,
                min_seconds=min_seconds,
                key=_key(request.idempotency_key),
            )
            return pb.AuthorizeCallResponse(authorization=grant_to_proto(grant))

        return await _answer(context, run)

    async def ExtendCall(
        self, request: pb.ExtendCallRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExtendCallResponse:
        async def run() -> pb.ExtendCallResponse:
            self._gateway_only()
            call_id = _uuid(request.call_id, "call_id")
            if request.seconds == 0:  # a heartbeat: no money moves, no key needed
                if not await self.meter.heartbeat(call_id, request.usage_ms):
                    raise CallNotOpen(f"call {call_id} is no longer open (finalized or swept)")
                grant = await self.meter.authorization(call_id)
            else:
                seconds, min_seconds = _seconds(request.seconds, request.min_seconds)
                grant = await self.meter.extend(
                    call_id,
                    seconds,
                    min_seconds=min_seconds,
                    usage_ms=request.usage_ms,
                    key=_key(request.idempotency_key),
                )
            return pb.ExtendCallResponse(authorization=grant_to_proto(grant))

        return await _answer(context, run)

    async def FinalizeCall(
        self, request: pb.FinalizeCallRequest, context: grpc.aio.ServicerContext
    ) -> pb.FinalizeCallResponse:
        async def run() -> pb.FinalizeCallResponse:
            self._gateway_only()
            if request.duration_ms < 0:
                raise _Abort("INVALID_ARGUMENT", "duration_ms cannot be negative")
            bill = await self.meter.finalize(
                _uuid(request.call_id, "call_id"),
                request.duration_ms,
                reason=request.end_reason,
                key=_key(request.idempotency_key),
            )
            return pb.FinalizeCallResponse(bill=bill_to_proto(bill, reason=request.end_reason))

        return await _answer(context, run)

    # Reading ------------------------------------------------------------------------------------

    async def GetBalance(
        self, request: pb.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetBalanceResponse:
        async def run() -> pb.GetBalanceResponse:
            org_id = self._org(request.organization_id, READ_SCOPE)
            return await self.balance(org_id)

        return await _answer(context, run)

    async def balance(self, org_id: uuid.UUID) -> pb.GetBalanceResponse:
        sub = await self.plans.subscription(org_id)
        plan = await self.plans.plan(sub.plan_code)
        account = await self.ledger.customer_account(org_id, plan.currency)
        suspended = await self.ledger.db.fetchval(
            "SELECT billing_suspended FROM organizations WHERE id = $1", org_id
        )
        owed = await self.funds.outstanding(org_id, plan.currency) if self.funds else 0
        return pb.GetBalanceResponse(
            organization_id=str(org_id),
            balance=money(account.posted_minor, account.currency),
            held=money(account.held_minor, account.currency),
            available=money(account.available_minor, account.currency),
            plan_code=sub.plan_code,
            next_plan_code=sub.next_plan_code or "",
            period_start=sub.period_start.isoformat(),
            included_seconds=sub.included_seconds,
            used_seconds=sub.used_seconds,
            held_seconds=sub.held_seconds,
            outstanding=money(owed, account.currency),
            suspended=bool(suspended),
        )

    async def ListUsage(
        self, request: pb.ListUsageRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListUsageResponse:
        async def run() -> pb.ListUsageResponse:
            org_id = self._org(request.organization_id, READ_SCOPE)
            size = request.page_size or 50
            if not 1 <= size <= 200:
                raise _Abort("INVALID_ARGUMENT", "page_size must be between 1 and 200")
            after = _page_token(request.page_token)
            rows = await self.ledger.db.fetch(
                """SELECT call_id, status, created_at, COALESCE(duration_ms, usage_ms) AS ms,
                          COALESCE(billed_seconds, 0) AS billed,
                          COALESCE(plan_used_seconds, plan_held_seconds) AS plan,
                          COALESCE(charged_minor, 0) AS charged, late_minor, currency,
                          COALESCE(end_reason, '') AS reason
                   FROM billing_calls
                   WHERE org_id = $1
                     AND ($2::timestamptz IS NULL OR (created_at, call_id) < ($2, $3))
                   ORDER BY created_at DESC, call_id DESC LIMIT $4""",
                org_id,
                after[0] if after else None,
                after[1] if after else None,
                size + 1,
            )
            calls = [
                bill_to_proto(
                    CallBill(
                        r["call_id"],
                        r["status"],
                        r["ms"],
                        r["billed"],
                        r["plan"],
                        r["charged"],
                        r["late_minor"],
                        r["currency"],
                    ),
                    r["created_at"],
                    r["reason"],
                )
                for r in rows[:size]
            ]
            token = ""
            if len(rows) > size:
                last = rows[size - 1]
                raw = f"{last['created_at'].isoformat()}|{last['call_id']}"
                token = base64.urlsafe_b64encode(raw.encode()).decode()
            return pb.ListUsageResponse(calls=calls, next_page_token=token)

        return await _answer(context, run)

    async def ListPlans(
        self, request: pb.ListPlansRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPlansResponse:
        async def run() -> pb.ListPlansResponse:
            self._scope(READ_SCOPE)
            plans = [
                pb.Plan(
                    code=p.code,
                    monthly_fee=money(p.monthly_fee_minor, p.currency),
                    included_seconds=p.included_seconds,
                    per_minute=money(p.per_minute_minor, p.currency),
                    rounding=_ROUNDING[p.rounding],
                )
                for p in await self.plans.list()
            ]
            return pb.ListPlansResponse(plans=plans)

        return await _answer(context, run)

    # Changing -----------------------------------------------------------------------------------

    async def ChangePlan(
        self, request: pb.ChangePlanRequest, context: grpc.aio.ServicerContext
    ) -> pb.ChangePlanResponse:
        async def run() -> pb.ChangePlanResponse:
            org_id = self._org(request.organization_id, ADMIN_SCOPE)
            key = _key(request.idempotency_key)
            known = {p.code for p in await self.plans.list()}
            if request.plan_code not in known:
                raise _Abort("INVALID_ARGUMENT", f"unknown plan {request.plan_code!r}")
            digest = request_hash({"plan": request.plan_code})
            async with transaction(self.ledger.db) as conn:
                # A replayed key must not undo a later change made under another key.
                claimed = await idempotency.claim(
                    conn, org_id, "plan_change", key, digest, result={}, now=self.ledger.clock.now()
                )
                if claimed.stored is not None:
                    return pb.ChangePlanResponse(**claimed.stored)
                sub = await self.plans.change_plan(org_id, request.plan_code)
                result = {
                    "plan_code": sub.plan_code,
                    "next_plan_code": sub.next_plan_code or "",
                    "period_start": sub.period_start.isoformat(),
                }
                await idempotency.record(conn, claimed.transaction_id, result)
            return pb.ChangePlanResponse(**result)

        return await _answer(context, run)

    async def CreateTopUp(
        self, request: pb.CreateTopUpRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTopUpResponse:
        async def run() -> pb.CreateTopUpResponse:
            org_id = self._org(request.organization_id, READ_SCOPE)
            if self.payments is None:
                raise _Abort("UNIMPLEMENTED", "no payment provider is configured")
            provider = _PROVIDERS.get(request.provider)
            if provider is None:
                raise _Abort("INVALID_ARGUMENT", "provider must be STRIPE or YOOKASSA")
            if request.amount.amount_minor <= 0 or not request.amount.currency:
                raise _Abort("INVALID_ARGUMENT", "amount must be positive, with a currency")
            top_up = await self.payments.create_top_up(
                org_id,
                provider=provider,
                amount_minor=request.amount.amount_minor,
                currency=request.amount.currency,
                idempotency_key=_key(request.idempotency_key),
                purpose="plan_fee" if request.plan_code else "topup",
                plan_code=request.plan_code or None,
                return_url=request.return_url or None,
                receipt_email=request.receipt_email or None,
            )
            return pb.CreateTopUpResponse(
                payment_id=str(top_up.payment_id),
                provider=request.provider,
                redirect_url=top_up.redirect_url,
                amount=money(top_up.amount_minor, top_up.currency),
            )

        return await _answer(context, run)

    async def AdjustBalance(
        self, request: pb.AdjustBalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.AdjustBalanceResponse:
        async def run() -> pb.AdjustBalanceResponse:
            principal = self._scope(ADMIN_SCOPE)
            if not principal.service:
                # An organisation crediting itself would be free money: operators only.
                raise _Abort("PERMISSION_DENIED", "AdjustBalance needs an operator's service key")
            org_id = _uuid(request.organization_id, "organization_id")
            amount = request.amount.amount_minor
            if amount == 0 or not request.reason.strip():
                raise _Abort("INVALID_ARGUMENT", "amount must be non-zero and a reason given")
            if self.funds is None:
                raise _Abort("UNIMPLEMENTED", "balance adjustments are not available")
            sub = await self.plans.subscription(org_id)
            currency = (await self.plans.plan(sub.plan_code)).currency
            if request.amount.currency and request.amount.currency != currency:
                raise _Abort(
                    "FAILED_PRECONDITION",
                    f"the organisation's account is in {currency}, not {request.amount.currency}",
                )
            key = _key(request.idempotency_key)
            body = {"amount": amount, "currency": currency, "reason": request.reason}
            operation = self.funds.credit if amount > 0 else self.funds.debit
            posted = await operation(
                org_id, abs(amount), currency, source="adjustment", key=key, request=body
            )
            account = await self.ledger.customer_account(org_id, currency)
            return pb.AdjustBalanceResponse(
                balance=money(account.posted_minor, currency),
                available=money(account.available_minor, currency),
                replayed=bool(getattr(posted, "replayed", False)),
            )

        return await _answer(context, run)

    # Access -------------------------------------------------------------------------------------

    def _scope(self, scope: str) -> Principal:
        principal = current_principal()
        # billing:admin implies billing:read.
        if principal.has_scope(scope) or (scope == READ_SCOPE and principal.has_scope(ADMIN_SCOPE)):
            return principal
        raise _Abort("PERMISSION_DENIED", f"this API key lacks the {scope!r} scope")

    def _gateway_only(self) -> Principal:
        principal = current_principal()
        if not principal.service or not principal.has_scope(GATEWAY_SCOPE):
            raise _Abort(
                "PERMISSION_DENIED",
                f"only the gateway's service key (scope {GATEWAY_SCOPE!r}) may meter calls",
            )
        return principal

    def _org(self, requested: str, scope: str) -> uuid.UUID:
        """The organisation a read or change is about: a tenant's own, or any for a service."""
        principal = self._scope(scope)
        if not requested:
            return principal.org_id
        org_id = _uuid(requested, "organization_id")
        if org_id != principal.org_id and not principal.service:
            raise _Abort("PERMISSION_DENIED", "a tenant's key can only see its own organisation")
        return org_id


def _page_token(token: str) -> tuple[datetime, uuid.UUID] | None:
    if not token:
        return None
    try:
        stamp, call_id = base64.urlsafe_b64decode(token.encode()).decode().split("|")
        return datetime.fromisoformat(stamp), uuid.UUID(call_id)
    except (ValueError, UnicodeDecodeError):
        raise _Abort("INVALID_ARGUMENT", "page_token is not one this service issued") from None


async def _answer(context: grpc.aio.ServicerContext, run: Callable[[], Awaitable[T]]) -> T:
    """Runs an RPC body, turning every refusal into its status (with ErrorInfo for money)."""
    try:
        return await run()
    except _Abort as abort:
        failure = (abort.code, abort.message, abort.reason)
    except Refused as refused:
        metrics.BILLING_REFUSALS.labels(reason=refused.reason).inc()
        failure = ("RESOURCE_EXHAUSTED", str(refused), refused.reason)
    except (IdempotencyConflict, CallExists) as conflict:
        failure = ("ALREADY_EXISTS", str(conflict), None)
    except UnknownCall as unknown:
        failure = ("NOT_FOUND", str(unknown), None)
    except CallNotOpen as closed:
        failure = ("FAILED_PRECONDITION", str(closed), None)
    except LedgerError as error:
        failure = ("INVALID_ARGUMENT", str(error), None)
    except CurrencyMismatch as error:
        failure = ("FAILED_PRECONDITION", str(error), None)
    except PaymentsNotConfigured as error:
        failure = ("FAILED_PRECONDITION", str(error), None)
    except ProviderError as error:
        failure = ("UNAVAILABLE", str(error), None)
    except PaymentError as error:
        failure = ("INVALID_ARGUMENT", str(error), None)
    except UNREACHABLE as error:
        failure = ("UNAVAILABLE", f"the billing database is unreachable: {error}", None)
    code, message, reason = failure
    await context.abort_with_status(rpc_status.to_status(status_with_reason(code, message, reason)))
    raise AssertionError("abort_with_status returns only by raising")
