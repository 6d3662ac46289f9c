"""Payments: checkouts at Stripe and YooKassa, and what their verified reports do to balances.

A payment row is stored before the provider is asked, and its id is the idempotency key the
provider gets, so a retried `create_top_up` (same key, same request) returns the same checkout and a
crash between our insert and the provider's answer is repaired by the retry, never duplicated.

Money moves only on a verified report (webhooks.py verifies; this module decides): a payment is
credited once, under a row lock on the payment, with the ledger key set to the provider's payment
id as a second guard; a refund or dispute is debited once per refund/dispute through `Funds`, so a
balance too small for it becomes a receivable and suspends the organisation.

Plan-fee checkouts are paid into the prepaid balance and ask for the plan from the next period;
the period rollover then debits the fee from that balance (plans.py). The fee is therefore
charged by one code path only, whether the customer paid it ahead by checkout or by top-ups.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from yookassa.domain.notification import WebhookNotificationFactory

from billing.funds import Funds
from billing.ledger import DEFAULT_CURRENCY, IdempotencyConflict, Ledger, request_hash
from billing.payment_settings import PaymentSettings
from billing.payment_types import (
    PROVIDERS,
    Checkout,
    CurrencyMismatch,
    PaymentError,
    PaymentsNotConfigured,
    Provider,
    Purpose,
)
from billing.plans import Plans
from billing.stripe_provider import StripeProvider
from billing.yookassa_provider import NotAtProvider, ReceiptSettings, YooKassaProvider
from gateway.storage._db import transaction

__all__ = [
    "CurrencyMismatch",
    "IdempotencyConflict",
    "PaymentError",
    "Payments",
    "PaymentsNotConfigured",
    "TopUp",
]

# Outcomes after which a redelivered event needs no work. A rejected one may be retried: a
# YooKassa notification that arrived before its payment settled is sent again, and must count.
FINAL_OUTCOMES = frozenset({"credited", "debited", "duplicate", "ignored", "canceled"})
# Outcomes (prefixes) the provider is asked to redeliver, with a non-2xx status.
RETRY = "retry"


@dataclass(frozen=True, slots=True)
class TopUp:
    payment_id: uuid.UUID
    provider: str
    redirect_url: str
    amount_minor: int
    currency: str


class Payments:
    def __init__(self, ledger: Ledger, settings: PaymentSettings | None = None) -> None:
        self.ledger = ledger
        self.funds = Funds(ledger)
        self.plans = Plans(ledger)
        self.settings = settings if settings is not None else PaymentSettings()
        self._db = ledger.db
        s = self.settings
        self.stripe: StripeProvider | None = None
        self.yookassa: YooKassaProvider | None = None
        if s.stripe_secret_key and s.stripe_webhook_secret:
            self.stripe = StripeProvider(
                s.stripe_secret_key.get_secret_value(),
                s.stripe_webhook_secret.get_secret_value(),
                s.stripe_api_base,
            )
        if s.yookassa_shop_id and s.yookassa_secret_key:
            receipt = (
                ReceiptSettings(s.yookassa_vat_code, s.yookassa_tax_system_code)
                if s.yookassa_receipt
                else None
            )
            self.yookassa = YooKassaProvider(
                s.yookassa_shop_id,
                s.yookassa_secret_key.get_secret_value(),
                s.yookassa_api_url,
                receipt,
            )

    # Checkouts -------------------------------------------------------------------------------

    async def create_top_up(
        self,
        org_id: uuid.UUID,
        *,
        provider: str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        purpose: Purpose = "topup",
        plan_code: str | None = None,
        return_url: str | None = None,
        receipt_email: str | None = None,
    ) -> TopUp:
        """Opens a checkout and returns where to send the customer; nothing is credited yet.

        Raises `CurrencyMismatch` for a currency other than the organisation's account currency,
        `IdempotencyConflict` for a key already used with another request, `PaymentsNotConfigured`
        for a provider without keys, `ProviderError` when the provider fails (retry: same key).
        """
        opener = self._opener(provider)
        currency = currency.upper()
        if amount_minor <= 0:
            raise PaymentError("a payment must be for a positive amount")
        if not idempotency_key:
            raise PaymentError("an idempotency key is required")
        await self._check_purpose(purpose, plan_code, amount_minor, currency)
        account_currency = await self._account_currency(org_id)
        if currency != account_currency:
            raise CurrencyMismatch(
                f"the organisation's balance is in {account_currency}, not {currency}"
            )
        return_url = return_url or self._default_return_url()
        request = {
            "provider": provider,
            "amount_minor": amount_minor,
            "currency": currency,
            "purpose": purpose,
            "plan_code": plan_code,
            "return_url": return_url,
            "receipt_email": receipt_email,
        }
        row = await self._payment_for_key(org_id, idempotency_key, request)
        if row["redirect_url"]:
            return _top_up(row)
        opened = await opener.open_checkout(
            Checkout(
                row["id"],
                org_id,
                amount_minor,
                currency,
                purpose,
                plan_code,
                return_url,
                receipt_email,
            )
        )
        row = await self._db.fetchrow(
            """UPDATE billing_payments
               SET provider_payment_id = $2, redirect_url = $3, updated_at = $4,
                   status = CASE WHEN status = 'created' THEN 'pending' ELSE status END
               WHERE id = $1 RETURNING *""",
            row["id"],
            opened.provider_payment_id,
            opened.redirect_url,
            self.ledger.clock.now(),
        )
        return _top_up(row)

    def _opener(self, provider: str) -> StripeProvider | YooKassaProvider:
        if provider not in PROVIDERS:
            raise PaymentError(f"unknown payment provider {provider!r}")
        opener = self.stripe if provider == "stripe" else self.yookassa
        if opener is None:
            raise PaymentsNotConfigured(f"{provider} payments are not configured")
        return opener

    async def _check_purpose(
        self, purpose: str, plan_code: str | None, amount_minor: int, currency: str
    ) -> None:
        if purpose == "topup":
            if plan_code is not None:
                raise PaymentError("a top-up names no plan")
            return
        if purpose != "plan_fee" or plan_code is None:
            raise PaymentError("a plan-fee payment names its plan")
        plan = await self.plans.plan(plan_code)
        if (amount_minor, currency) != (plan.monthly_fee_minor, plan.currency):
            raise PaymentError(
                f"plan {plan.code} costs {plan.monthly_fee_minor} {plan.currency} a month"
            )

    async def _account_currency(self, org_id: uuid.UUID) -> str:
        """The currency of the organisation's (first) balance; new organisations pay in RUB."""
        currency = await self._db.fetchval(
            """SELECT currency FROM billing_accounts WHERE org_id = $1 AND kind = 'customer'
               ORDER BY created_at, id LIMIT 1""",
            org_id,
        )
        return str(currency or DEFAULT_CURRENCY)

    def _default_return_url(self) -> str:
        base = self.settings.public_base_url
        if not base:
            raise PaymentError("no return_url given and VOICEGW_PUBLIC_BASE_URL is not set")
        return f"{base.rstrip('/')}/billing/return"

    async def _payment_for_key(self, org_id: uuid.UUID, key: str, request: dict[str, Any]) -> Any:
        """The payment row of (org, key): new, or the one the same request created before."""
        digest = request_hash(request)
        now = self.ledger.clock.now()
        try:
            row = await self._db.fetchrow(
                """INSERT INTO billing_payments
                       (org_id, provider, purpose, plan_code, amount_minor, currency,
                        idempotency_key, request_hash, created_at, updated_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
                   ON CONFLICT (org_id, idempotency_key) DO NOTHING
                   RETURNING *""",
                org_id,
                request["provider"],
                request["purpose"],
                request["plan_code"],
                request["amount_minor"],
                request["currency"],
                key,
                digest,
                now,
            )
        except asyncpg.ForeignKeyViolationError:
            raise PaymentError(f"no organisation {org_id}") from None
        if row is None:
            row = await self._db.fetchrow(
                "SELECT * FROM billing_payments WHERE org_id = $1 AND idempotency_key = $2",
                org_id,
                key,
            )
            if row["request_hash"] != digest:
                raise IdempotencyConflict(
                    f"idempotency key {key!r} was already used for a different payment"
                )
        return row

    # Webhook inbox ---------------------------------------------------------------------------

    async def already_handled(self, provider: Provider, event_id: str) -> bool:
        outcome = await self._db.fetchval(
            "SELECT outcome FROM billing_webhook_events WHERE provider = $1 AND event_id = $2",
            provider,
            event_id,
        )
        return outcome in FINAL_OUTCOMES

    async def record_event(
        self, provider: Provider, event_id: str, event_type: str, payload: Any, outcome: str
    ) -> None:
        """Keeps the event and what handling it did; a final outcome is never overwritten."""
        await self._db.execute(
            """INSERT INTO billing_webhook_events
                   (provider, event_id, event_type, received_at, outcome, payload)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb)
               ON CONFLICT (provider, event_id) DO UPDATE
                   SET outcome = EXCLUDED.outcome, received_at = EXCLUDED.received_at
                   WHERE billing_webhook_events.outcome <> ALL($7::text[])""",
            provider,
            event_id,
            event_type,
            self.ledger.clock.now(),
            outcome,
            json.dumps(payload),
            sorted(FINAL_OUTCOMES),
        )

    # Stripe ----------------------------------------------------------------------------------

    async def on_stripe_event(self, event: dict[str, Any]) -> str:
        """Acts on a verified Stripe event; returns the outcome to record."""
        kind = event["type"]
        obj = event["data"]["object"]
        metadata = obj.get("metadata") or {}
        if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
            if obj.get("payment_status") != "paid":
                return "awaiting_payment"  # a delayed method; async_payment_succeeded follows
            return await self._settle_paid(
                "stripe",
                our_id=metadata.get("payment_id") or obj.get("client_reference_id"),
                provider_payment_id=obj["id"],
                amount_minor=obj["amount_total"],
                currency=str(obj["currency"]).upper(),
                org_id=metadata.get("org_id"),
                intent_id=obj.get("payment_intent"),
            )
        if kind == "charge.refunded":
            # `amount_refunded` is cumulative: each partial refund reports the total so far.
            total = obj["amount_refunded"]
            return await self._settle_reversal(
                "stripe",
                intent_id=obj.get("payment_intent"),
                our_id=metadata.get("payment_id"),
                currency=str(obj["currency"]).upper(),
                key=f"refund:{obj['id']}:{total}",
                refunded_total=total,
            )
        if kind == "charge.dispute.created":
            return await self._settle_reversal(
                "stripe",
                intent_id=obj.get("payment_intent"),
                our_id=None,
                currency=str(obj["currency"]).upper(),
                key=f"dispute:{obj['id']}",
                amount_minor=obj["amount"],
            )
        return "ignored"

    # YooKassa --------------------------------------------------------------------------------

    @staticmethod
    def parse_yookassa(body: Any) -> tuple[str, str]:
        """(event, object id) of a notification; ValueError/TypeError when it is not one."""
        notification = WebhookNotificationFactory().create(body)
        object_id = getattr(notification.object, "id", None)
        if not isinstance(object_id, str) or not object_id:
            raise ValueError("the notification's object has no id")
        return str(notification.event), object_id

    async def on_yookassa_notification(self, event: str, object_id: str) -> str:
        """Acts on a notification from an allowed network, believing only what YooKassa's API
        says about the object when asked by id."""
        assert self.yookassa is not None
        try:
            if event == "payment.succeeded":
                payment = await self.yookassa.find_payment(object_id)
                if payment.status != "succeeded":
                    return f"rejected: the payment is {payment.status}"
                return await self._settle_paid(
                    "yookassa",
                    our_id=payment.metadata.get("payment_id"),
                    provider_payment_id=payment.id,
                    amount_minor=payment.amount_minor,
                    currency=payment.currency,
                    org_id=payment.metadata.get("org_id"),
                )
            if event == "payment.canceled":
                payment = await self.yookassa.find_payment(object_id)
                if payment.status != "canceled":
                    return f"rejected: the payment is {payment.status}"
                return await self._mark_canceled("yookassa", payment.id)
            if event == "refund.succeeded":
                refund = await self.yookassa.find_refund(object_id)
                if refund.status != "succeeded":
                    return f"rejected: the refund is {refund.status}"
                return await self._settle_reversal(
                    "yookassa",
                    provider_payment_id=refund.payment_id,
                    currency=refund.currency,
                    key=f"refund:{refund.id}",
                    amount_minor=refund.amount_minor,
                    refund=True,
                )
        except NotAtProvider:
            return "rejected: unknown to YooKassa"
        return "ignored"

    # Settlement ------------------------------------------------------------------------------

    async def _lock_payment(
        self,
        conn: Any,
        provider: Provider,
        *,
        our_id: str | None = None,
        provider_payment_id: str | None = None,
        intent_id: str | None = None,
    ) -> Any:
        """Our row for a provider's report, locked. A Stripe refund or dispute names the
        PaymentIntent; otherwise our id when the report carries it (a webhook may beat the
        create call's own update of the provider's id), else the provider's payment id."""
        if intent_id:
            row = await conn.fetchrow(
                """SELECT * FROM billing_payments
                   WHERE provider = $1 AND provider_intent_id = $2 FOR UPDATE""",
                provider,
                intent_id,
            )
            if row is not None:
                return row
        if our_id:
            try:
                payment_id = uuid.UUID(our_id)
            except ValueError:
                return None
            return await conn.fetchrow(
                "SELECT * FROM billing_payments WHERE id = $1 AND provider = $2 FOR UPDATE",
                payment_id,
                provider,
            )
        if not provider_payment_id:
            return None
        return await conn.fetchrow(
            """SELECT * FROM billing_payments
               WHERE provider = $1 AND provider_payment_id = $2 FOR UPDATE""",
            provider,
            provider_payment_id,
        )

    async def _settle_paid(
        self,
        provider: Provider,
        *,
        our_id: str | None,
        provider_payment_id: str,
        amount_minor: int,
        currency: str,
        org_id: str | None,
        intent_id: str | None = None,
    ) -> str:
        async with transaction(self._db) as conn:
            row = await self._lock_payment(
                conn, provider, our_id=our_id, provider_payment_id=provider_payment_id
            )
            if row is None:
                return "rejected: no such payment of ours"
            mismatch = _mismatch(row, provider_payment_id, amount_minor, currency, org_id)
            if mismatch:
                return f"rejected: {mismatch}"
            if row["credited_transaction_id"] is not None:
                return "duplicate"
            if row["purpose"] == "plan_fee":
                # Before the credit: the plan's rollover locks the subscription, then the
                # balance, and so must we.
                plans = Plans(Ledger(conn, self.ledger.clock))
                await plans.change_plan(row["org_id"], row["plan_code"])
            posted = await self.funds.credit(
                row["org_id"],
                amount_minor,
                currency,
                source=provider,
                key=provider_payment_id,
                request={"payment_id": str(row["id"]), "provider_payment_id": provider_payment_id},
                result={"payment_id": str(row["id"]), "purpose": row["purpose"]},
                db=conn,
            )
            await conn.execute(
                """UPDATE billing_payments
                   SET status = 'succeeded', credited_transaction_id = $2, updated_at = $3,
                       provider_payment_id = $4,
                       provider_intent_id = coalesce(provider_intent_id, $5)
                   WHERE id = $1""",
                row["id"],
                posted.id,
                self.ledger.clock.now(),
                provider_payment_id,
                intent_id,
            )
            return "duplicate" if posted.replayed else "credited"

    async def _settle_reversal(
        self,
        provider: Provider,
        *,
        currency: str,
        key: str,
        our_id: str | None = None,
        provider_payment_id: str | None = None,
        intent_id: str | None = None,
        amount_minor: int | None = None,
        refunded_total: int | None = None,
        refund: bool = False,
    ) -> str:
        """Takes back a refund or dispute of a credited payment, once per `key`.

        A refund is given either as `amount_minor` (one refund) or as `refunded_total` (what the
        provider has refunded so far, of which only the part not yet debited is taken).
        """
        async with transaction(self._db) as conn:
            row = await self._lock_payment(
                conn,
                provider,
                our_id=our_id,
                provider_payment_id=provider_payment_id,
                intent_id=intent_id,
            )
            if row is None:
                return "ignored"  # not a payment of ours (the account may sell other things)
            if row["credited_transaction_id"] is None:
                # Reports can overtake each other: answered with a retry status, so the provider
                # redelivers this one after the payment's own report has credited it.
                return "retry: the payment is not credited yet"
            if currency != row["currency"]:
                return "rejected: currency differs from the payment"
            if refunded_total is not None:
                refund = True
                amount_minor = refunded_total - row["refunded_minor"]
                if amount_minor <= 0:
                    return "duplicate"
            assert amount_minor is not None
            if amount_minor <= 0:
                return "rejected: nothing to take back"
            refunded = row["refunded_minor"] + (amount_minor if refund else 0)
            if amount_minor > row["amount_minor"] or refunded > row["amount_minor"]:
                return "rejected: more than the payment"
            posted = await self.funds.debit(
                row["org_id"],
                amount_minor,
                currency,
                source=provider,
                key=key,
                request={"payment_id": str(row["id"]), "key": key},
                result={"payment_id": str(row["id"])},
                db=conn,
            )
            if posted.replayed:
                return "duplicate"
            if refund:
                await conn.execute(
                    """UPDATE billing_payments
                       SET refunded_minor = $2, updated_at = $3,
                           status = CASE WHEN $2 = amount_minor THEN 'refunded'
                                         ELSE 'partially_refunded' END
                       WHERE id = $1""",
                    row["id"],
                    refunded,
                    self.ledger.clock.now(),
                )
            return "debited"

    async def _mark_canceled(self, provider: Provider, provider_payment_id: str) -> str:
        await self._db.execute(
            """UPDATE billing_payments SET status = 'canceled', updated_at = $3
               WHERE provider = $1 AND provider_payment_id = $2
                 AND status IN ('created', 'pending')""",
            provider,
            provider_payment_id,
            self.ledger.clock.now(),
        )
        return "canceled"


def _mismatch(
    row: Any, provider_payment_id: str, amount_minor: int, currency: str, org_id: str | None
) -> str | None:
    """Why a provider's report does not describe this payment of ours (None: it does)."""
    if row["provider_payment_id"] and row["provider_payment_id"] != provider_payment_id:
        return "provider payment id differs"
    if amount_minor != row["amount_minor"]:
        return "amount differs"
    if currency != row["currency"]:
        return "currency differs"
    if org_id != str(row["org_id"]):
        return "organisation differs"
    return None


def _top_up(row: Any) -> TopUp:
    return TopUp(
        row["id"], row["provider"], row["redirect_url"], row["amount_minor"], row["currency"]
    )
