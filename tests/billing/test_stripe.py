"""Stripe payments end to end: the real SDK opens Checkout Sessions at a local fake Stripe, and
signed webhooks posted over HTTP to the gateway's routes move money in a real PostgreSQL ledger
only when provably from Stripe, within ±300 s, and once per event and per payment."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pydantic import SecretStr

from billing.funds import Funds
from billing.ledger import IdempotencyConflict, Ledger
from billing.payment_settings import PaymentSettings
from billing.payment_types import CurrencyMismatch, PaymentError, PaymentsNotConfigured
from billing.payments import Payments, TopUp
from billing.plans import Plans
from gateway.db import Database
from gateway.storage import orgs
from gateway.storage.orgs import Organization
from tests.billing.conftest import FakeClock, webhook_client
from tests.billing.fake_stripe import (
    SECRET_KEY,
    WEBHOOK_SECRET,
    FakeStripe,
    charge,
    dispute,
    event,
    sign,
)
from tests.billing.helpers import spend

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def payments(database: Database, fake_stripe: FakeStripe, clock: FakeClock) -> Payments:
    settings = PaymentSettings(
        stripe_secret_key=SecretStr(SECRET_KEY),
        stripe_webhook_secret=SecretStr(WEBHOOK_SECRET),
        stripe_api_base=fake_stripe.url,
        public_base_url="https://voicegw.example",
    )
    return Payments(Ledger(database.pool, clock), settings)


@pytest.fixture
async def client(payments: Payments) -> AsyncIterator[Client]:
    async with webhook_client(payments) as client:
        yield client


async def _top_up(payments: Payments, org: Organization, amount: int = 50_000) -> TopUp:
    return await payments.create_top_up(
        org.id,
        provider="stripe",
        amount_minor=amount,
        currency="RUB",
        idempotency_key=f"top-{uuid.uuid4()}",
    )


async def _post(client: Client, payload: str, header: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    response = await client.post("/webhooks/stripe", data=payload.encode(), headers=headers)
    return response.status, await response.json()


def _now(payments: Payments) -> int:
    return int(payments.ledger.clock.now().timestamp())


async def _deliver(client: Client, payments: Payments, payload: str) -> tuple[int, Any]:
    return await _post(client, payload, sign(payload, _now(payments)))


async def _balance(payments: Payments, org: Organization) -> int:
    return (await payments.ledger.customer_account(org.id)).posted_minor


async def _suspended(database: Database, org: Organization) -> bool:
    current = await orgs.get(database.pool, org.id)
    assert current is not None
    return current.billing_suspended


async def _paid_top_up(
    client: Client, payments: Payments, fake: FakeStripe, org: Organization, amount: int
) -> dict[str, Any]:
    top_up = await _top_up(payments, org, amount)
    session = fake.pay(fake.session_id(top_up.redirect_url))
    status, body = await _deliver(client, payments, event("checkout.session.completed", session))
    assert (status, body["outcome"]) == (200, "credited")
    return session


# Checkouts ------------------------------------------------------------------------------------


async def test_a_top_up_opens_a_checkout_session(
    payments: Payments, fake_stripe: FakeStripe, org: Organization
) -> None:
    top_up = await payments.create_top_up(
        org.id,
        provider="stripe",
        amount_minor=123_45,
        currency="rub",
        idempotency_key="order-1",
        receipt_email="payer@example.com",
    )
    assert (top_up.provider, top_up.amount_minor, top_up.currency) == ("stripe", 12345, "RUB")
    [sent] = fake_stripe.requests
    assert sent.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert sent.headers["Idempotency-Key"] == f"voicegw-payment-{top_up.payment_id}"
    form = sent.form
    assert form["mode"] == "payment"
    assert form["line_items[0][price_data][unit_amount]"] == "12345"
    assert form["line_items[0][price_data][currency]"] == "rub"
    assert form["line_items[0][quantity]"] == "1"
    assert form["client_reference_id"] == str(top_up.payment_id)
    assert form["metadata[org_id]"] == str(org.id)
    assert form["metadata[payment_id]"] == str(top_up.payment_id)
    assert form["metadata[purpose]"] == "topup"
    assert form["payment_intent_data[metadata][payment_id]"] == str(top_up.payment_id)
    assert form["success_url"] == "https://voicegw.example/billing/return"
    assert form["customer_email"] == "payer@example.com"
    session = fake_stripe.sessions[fake_stripe.session_id(top_up.redirect_url)]
    assert top_up.redirect_url == session["url"]
    assert await _balance(payments, org) == 0  # nothing is credited before Stripe says so


async def test_top_up_idempotency(
    payments: Payments, fake_stripe: FakeStripe, org: Organization
) -> None:
    request: dict[str, Any] = {
        "provider": "stripe",
        "amount_minor": 1000,
        "currency": "RUB",
        "idempotency_key": "same-key",
    }
    first = await payments.create_top_up(org.id, **request)
    again = await payments.create_top_up(org.id, **request)
    assert again == first
    assert len(fake_stripe.requests) == 1  # the provider was asked once
    with pytest.raises(IdempotencyConflict):
        await payments.create_top_up(org.id, **{**request, "amount_minor": 2000})
    assert len(fake_stripe.requests) == 1


async def test_concurrent_identical_top_ups_open_one_session(
    payments: Payments, fake_stripe: FakeStripe, org: Organization
) -> None:
    results = await asyncio.gather(
        *(
            payments.create_top_up(
                org.id, provider="stripe", amount_minor=500, currency="RUB", idempotency_key="k"
            )
            for _ in range(5)
        )
    )
    assert len({r.redirect_url for r in results}) == 1
    assert len(fake_stripe.sessions) == 1


async def test_the_currency_must_be_the_account_currency(
    payments: Payments, fake_stripe: FakeStripe, org: Organization, database: Database
) -> None:
    with pytest.raises(CurrencyMismatch):
        await payments.create_top_up(
            org.id, provider="stripe", amount_minor=1000, currency="USD", idempotency_key="u1"
        )
    dollars = await orgs.create(database.pool, f"usd-{uuid.uuid4().hex[:10]}")
    await payments.ledger.customer_account(dollars.id, "USD")
    with pytest.raises(CurrencyMismatch):
        await payments.create_top_up(
            dollars.id, provider="stripe", amount_minor=1000, currency="RUB", idempotency_key="r"
        )
    top_up = await payments.create_top_up(
        dollars.id, provider="stripe", amount_minor=1000, currency="USD", idempotency_key="u"
    )
    assert top_up.currency == "USD"
    assert len(fake_stripe.requests) == 1


async def test_refused_requests(payments: Payments, org: Organization, database: Database) -> None:
    with pytest.raises(PaymentError):
        await payments.create_top_up(
            org.id, provider="stripe", amount_minor=0, currency="RUB", idempotency_key="z"
        )
    with pytest.raises(PaymentError):
        await payments.create_top_up(
            org.id, provider="paypal", amount_minor=1, currency="RUB", idempotency_key="p"
        )
    with pytest.raises(PaymentError):  # a plan fee is the plan's price
        await payments.create_top_up(
            org.id,
            provider="stripe",
            amount_minor=1,
            currency="RUB",
            idempotency_key="f",
            purpose="plan_fee",
            plan_code="basic",
        )
    with pytest.raises(PaymentsNotConfigured):
        await payments.create_top_up(
            org.id, provider="yookassa", amount_minor=1, currency="RUB", idempotency_key="y"
        )


# Webhooks -------------------------------------------------------------------------------------


async def test_a_paid_checkout_credits_once_whatever_the_replays(
    client: Client, payments: Payments, fake_stripe: FakeStripe, org: Organization
) -> None:
    top_up = await _top_up(payments, org, 50_000)
    session = fake_stripe.pay(fake_stripe.session_id(top_up.redirect_url))
    payload = event("checkout.session.completed", session)

    assert await _deliver(client, payments, payload) == (200, {"outcome": "credited"})
    assert await _balance(payments, org) == 50_000
    # The same event again (Stripe redelivers for days), and concurrently.
    replies = await asyncio.gather(*(_deliver(client, payments, payload) for _ in range(5)))
    assert all(reply == (200, {"outcome": "duplicate"}) for reply in replies)
    # Another event about the same payment: still one credit.
    other = event("checkout.session.async_payment_succeeded", session)
    assert await _deliver(client, payments, other) == (200, {"outcome": "duplicate"})
    assert await _balance(payments, org) == 50_000

    row = await payments.ledger.db.fetchrow(
        "SELECT * FROM billing_payments WHERE id = $1", top_up.payment_id
    )
    assert row["status"] == "succeeded"
    assert row["provider_payment_id"] == session["id"]
    assert row["provider_intent_id"] == session["payment_intent"]
    credits = await payments.ledger.db.fetchval(
        """SELECT count(*) FROM billing_transactions
           WHERE org_id = $1 AND kind = 'credit:stripe' AND idempotency_key = $2""",
        org.id,
        session["id"],
    )
    assert credits == 1


async def test_concurrent_first_deliveries_credit_once(
    client: Client, payments: Payments, fake_stripe: FakeStripe, org: Organization
) -> None:
    top_up = await _top_up(payments, org, 7_000)
    session = fake_stripe.pay(fake_stripe.session_id(top_up.redirect_url))
    payloads = [event("checkout.session.completed", session) for _ in range(6)]  # 6 event ids
    replies = await asyncio.gather(*(_deliver(client, payments, p) for p in payloads))
    assert sorted(body["outcome"] for _, body in replies) == ["credited"] + ["duplicate"] * 5
    assert await _balance(payments, org) == 7_000


async def _rejected(client: Client, payload: str, header: str | None) -> None:
    status, body = await _post(client, payload, header)
    assert status == 400, body


@pytest.mark.parametrize(
    "case",
    ["wrong secret", "tampered body", "301 s old", "301 s ahead", "no header", "garbled header"],
)
async def test_unverifiable_events_are_refused_and_credit_nothing(
    case: str,
    client: Client,
    payments: Payments,
    fake_stripe: FakeStripe,
    org: Organization,
) -> None:
    top_up = await _top_up(payments, org)
    session = fake_stripe.pay(fake_stripe.session_id(top_up.redirect_url))
    payload = event("checkout.session.completed", session)
    now = _now(payments)
    header: str | None
    if case == "wrong secret":
        header = sign(payload, now, "whsec_not_ours")
    elif case == "tampered body":
        header = sign(payload, now)
        payload = payload.replace('"amount_total": 50000', '"amount_total": 5000000')
        assert "5000000" in payload
    elif case == "301 s old":
        header = sign(payload, now - 301)
    elif case == "301 s ahead":
        header = sign(payload, now + 301)
    elif case == "no header":
        header = None
    else:
        header = "t=yesterday,v1=zzz"
    await _rejected(client, payload, header)
    assert await _balance(payments, org) == 0
    recorded = await payments.ledger.db.fetchval(
        "SELECT count(*) FROM billing_webhook_events WHERE payload->'data'->'object'->>'id' = $1",
        session["id"],
    )
    assert recorded == 0


async def test_a_signature_a_few_seconds_ahead_is_accepted(
    client: Client, payments: Payments, fake_stripe: FakeStripe, org: Organization
) -> None:
    """Clocks drift: Stripe's clock 5 s ahead of ours is no reason to refuse its event."""
    top_up = await _top_up(payments, org, 1_000)
    session = fake_stripe.pay(fake_stripe.session_id(top_up.redirect_url))
    payload = event("checkout.session.completed", session)
    status, body = await _post(client, payload, sign(payload, _now(payments) + 5))
    assert (status, body["outcome"]) == (200, "credited")
    # Exactly 300 s ahead is still within the tolerance (-300 s is left to the SDK's check,
    # which reads the real clock, not ours).
    other = event("checkout.session.async_payment_succeeded", session)
    assert (await _post(client, other, sign(other, _now(payments) + 300)))[0] == 200
    assert await _balance(payments, org) == 1_000


async def test_delayed_methods_credit_when_the_payment_succeeds(
    client: Client, payments: Payments, fake_stripe: FakeStripe, org: Organization
) -> None:
    top_up = await _top_up(payments, org, 2_500)
    session_id = fake_stripe.session_id(top_up.redirect_url)
    unpaid = dict(fake_stripe.sessions[session_id], status="complete")
    completed = event("checkout.session.completed", unpaid)
    assert await _deliver(client, payments, completed) == (200, {"outcome": "awaiting_payment"})
    assert await _balance(payments, org) == 0
    paid = event("checkout.session.async_payment_succeeded", fake_stripe.pay(session_id))
    assert await _deliver(client, payments, paid) == (200, {"outcome": "credited"})
    assert await _balance(payments, org) == 2_500


async def test_unknown_events_are_recorded_as_ignored(client: Client, payments: Payments) -> None:
    payload = event("customer.created", {"id": "cus_1", "object": "customer"}, "evt_unknown_1")
    assert await _deliver(client, payments, payload) == (200, {"outcome": "ignored"})
    outcome = await payments.ledger.db.fetchval(
        "SELECT outcome FROM billing_webhook_events WHERE provider = 'stripe' AND event_id = $1",
        "evt_unknown_1",
    )
    assert outcome == "ignored"


async def test_a_signed_event_that_does_not_match_the_payment_credits_nothing(
    client: Client, payments: Payments, fake_stripe: FakeStripe, org: Organization
) -> None:
    top_up = await _top_up(payments, org, 1_000)
    session = dict(fake_stripe.pay(fake_stripe.session_id(top_up.redirect_url)))
    session["amount_total"] = 2_000
    status, body = await _deliver(client, payments, event("checkout.session.completed", session))
    assert (status, body["outcome"]) == (200, "rejected: amount differs")
    assert await _balance(payments, org) == 0


async def test_a_refund_beyond_the_balance_becomes_a_receivable_and_suspends(
    client: Client,
    payments: Payments,
    fake_stripe: FakeStripe,
    org: Organization,
    database: Database,
) -> None:
    session = await _paid_top_up(client, payments, fake_stripe, org, 10_000)
    # 7 000 of it is spent on calls before the customer asks for their money back.
    ledger = payments.ledger
    await spend(ledger, org.id, 7_000)

    # A partial refund of 2 000 (Stripe reports the cumulative amount refunded).
    partial = event("charge.refunded", charge(session, amount_refunded=2_000))
    assert await _deliver(client, payments, partial) == (200, {"outcome": "debited"})
    assert await _balance(payments, org) == 1_000
    assert not await _suspended(database, org)

    # Then the rest: 8 000 more, of which only 1 000 is there.
    full = event("charge.refunded", charge(session, amount_refunded=10_000))
    assert await _deliver(client, payments, full) == (200, {"outcome": "debited"})
    funds = Funds(ledger)
    assert await _balance(payments, org) == 0
    assert await funds.outstanding(org.id, "RUB") == 7_000
    assert await _suspended(database, org)

    # Replays, and a late copy of the partial refund, take nothing more.
    assert await _deliver(client, payments, full) == (200, {"outcome": "duplicate"})
    late = event("charge.refunded", charge(session, amount_refunded=2_000))
    assert await _deliver(client, payments, late) == (200, {"outcome": "duplicate"})
    assert await funds.outstanding(org.id, "RUB") == 7_000
    status = await ledger.db.fetchval(
        "SELECT status FROM billing_payments WHERE provider_payment_id = $1", session["id"]
    )
    assert status == "refunded"

    # Paying the debt lifts the suspension.
    await _paid_top_up(client, payments, fake_stripe, org, 10_000)
    assert await funds.outstanding(org.id, "RUB") == 0
    assert await _balance(payments, org) == 3_000
    assert not await _suspended(database, org)


async def test_a_refund_that_overtakes_its_payment_is_redelivered(
    client: Client, payments: Payments, fake_stripe: FakeStripe, org: Organization
) -> None:
    """Stripe does not promise order: a refund reported before the payment's own completion
    gets 409, so Stripe sends it again, and counts then."""
    top_up = await _top_up(payments, org, 4_000)
    session = fake_stripe.pay(fake_stripe.session_id(top_up.redirect_url))
    refund = event("charge.refunded", charge(session, amount_refunded=4_000))
    status, body = await _deliver(client, payments, refund)
    assert (status, body["outcome"]) == (409, "retry: the payment is not credited yet")
    assert await _balance(payments, org) == 0
    completed = event("checkout.session.completed", session)
    assert await _deliver(client, payments, completed) == (200, {"outcome": "credited"})
    assert await _deliver(client, payments, refund) == (200, {"outcome": "debited"})
    assert await _balance(payments, org) == 0
    assert await Funds(payments.ledger).outstanding(org.id, "RUB") == 0


async def test_a_dispute_is_debited_once(
    client: Client,
    payments: Payments,
    fake_stripe: FakeStripe,
    org: Organization,
    database: Database,
) -> None:
    session = await _paid_top_up(client, payments, fake_stripe, org, 5_000)
    ledger = payments.ledger
    await spend(ledger, org.id, 4_000)
    payload = event("charge.dispute.created", dispute(session, 5_000))
    assert await _deliver(client, payments, payload) == (200, {"outcome": "debited"})
    assert await _deliver(client, payments, payload) == (200, {"outcome": "duplicate"})
    assert await _balance(payments, org) == 0
    assert await Funds(ledger).outstanding(org.id, "RUB") == 4_000
    assert await _suspended(database, org)


async def test_a_plan_fee_checkout_credits_and_switches_the_plan_next_period(
    client: Client, payments: Payments, fake_stripe: FakeStripe, org: Organization
) -> None:
    top_up = await payments.create_top_up(
        org.id,
        provider="stripe",
        amount_minor=99_000,
        currency="RUB",
        idempotency_key="basic-please",
        purpose="plan_fee",
        plan_code="basic",
    )
    sent = fake_stripe.requests[-1].form
    assert (sent["metadata[purpose]"], sent["metadata[plan_code]"]) == ("plan_fee", "basic")
    session = fake_stripe.pay(fake_stripe.session_id(top_up.redirect_url))
    payload = event("checkout.session.completed", session)
    assert await _deliver(client, payments, payload) == (200, {"outcome": "credited"})
    assert await _balance(payments, org) == 99_000
    sub = await Plans(payments.ledger).subscription(org.id)
    assert (sub.plan_code, sub.next_plan_code) == ("payg", "basic")


async def test_unconfigured_providers_answer_503(database: Database) -> None:
    payments = Payments(Ledger(database.pool), PaymentSettings(yookassa_shop_id=None))
    if payments.stripe is not None or payments.yookassa is not None:
        pytest.skip("payment keys are set in this environment")
    async with webhook_client(payments) as client:
        for path in ("/webhooks/stripe", "/webhooks/yookassa"):
            response = await client.post(path, data=b"{}")
            assert response.status == 503
            assert (await response.json())["outcome"].endswith("payments not configured")
