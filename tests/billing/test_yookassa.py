"""YooKassa payments end to end: the real SDK creates and re-fetches payments at a local fake
YooKassa API, and notifications posted over HTTP to the gateway's route move money only when they
come from an allowed network and YooKassa's API, asked by id, confirms them; once per payment."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from billing.funds import Funds
from billing.ledger import Ledger
from billing.payment_settings import PaymentSettings
from billing.payment_types import CurrencyMismatch, PaymentError, ProviderError
from billing.payments import Payments, TopUp
from billing.yookassa_provider import to_decimal_string, to_minor
from gateway.db import Database
from gateway.source_ip import client_address
from gateway.storage import orgs
from gateway.storage.orgs import Organization
from tests.billing.conftest import FakeClock, webhook_client
from tests.billing.fake_yookassa import SECRET_KEY, SHOP_ID, FakeYooKassa, notification
from tests.billing.helpers import spend

Client = TestClient[web.Request, web.Application]
YOOKASSA_IP = "185.71.76.5"  # inside the SDK's 185.71.76.0/27


def _settings(api_url: str, **overrides: Any) -> PaymentSettings:
    values: dict[str, Any] = {
        "yookassa_shop_id": SHOP_ID,
        "yookassa_secret_key": SECRET_KEY,
        "yookassa_api_url": api_url,
        "public_base_url": "https://voicegw.example",
        # The test client connects from loopback.
        "yookassa_allowed_networks": ["127.0.0.0/8"],
        **overrides,
    }
    # None: the setting's own default.
    return PaymentSettings(**{k: v for k, v in values.items() if v is not None})


@pytest.fixture
def fake(fake_yookassa: tuple[FakeYooKassa, str]) -> FakeYooKassa:
    return fake_yookassa[0]


@pytest.fixture
def payments(
    database: Database, fake_yookassa: tuple[FakeYooKassa, str], clock: FakeClock
) -> Payments:
    return Payments(Ledger(database.pool, clock), _settings(fake_yookassa[1]))


@pytest.fixture
async def client(payments: Payments) -> AsyncIterator[Client]:
    async with webhook_client(payments) as client:
        yield client


async def _top_up(payments: Payments, org: Organization, amount: int) -> TopUp:
    return await payments.create_top_up(
        org.id,
        provider="yookassa",
        amount_minor=amount,
        currency="RUB",
        idempotency_key=f"top-{uuid.uuid4()}",
    )


def _provider_id(fake: FakeYooKassa, top_up: TopUp) -> str:
    [payment_id] = [
        p["id"]
        for p in fake.payments.values()
        if p["metadata"]["payment_id"] == str(top_up.payment_id)
    ]
    return payment_id


async def _notify(
    client: Client, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await client.post(
        "/webhooks/yookassa",
        data=data,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    return response.status, (await response.json())["outcome"]


async def _balance(payments: Payments, org: Organization) -> int:
    return (await payments.ledger.customer_account(org.id)).posted_minor


async def _paid(
    client: Client, payments: Payments, fake: FakeYooKassa, org: Organization, amount: int
) -> str:
    payment_id = _provider_id(fake, await _top_up(payments, org, amount))
    payment = fake.succeed(payment_id)
    assert await _notify(client, notification("payment.succeeded", payment)) == (200, "credited")
    return payment_id


# Money ----------------------------------------------------------------------------------------


def test_roubles_and_kopecks_convert_exactly() -> None:
    assert to_decimal_string(50_000) == "500.00"
    assert to_decimal_string(1) == "0.01"
    assert to_decimal_string(123_456_789_012_345_67) == "123456789012345.67"
    assert to_minor("500.00") == 50_000
    assert to_minor("0.1") == 10
    with pytest.raises(ValueError):
        to_minor("1.005")


# Checkouts ------------------------------------------------------------------------------------


async def test_a_top_up_creates_a_payment_with_a_stable_idempotence_key(
    payments: Payments, fake: FakeYooKassa, org: Organization
) -> None:
    fake.fail_next = 1  # the first attempt dies with a 500: the retry must reuse the key
    request: dict[str, Any] = {
        "provider": "yookassa",
        "amount_minor": 123_456,
        "currency": "RUB",
        "idempotency_key": "order-7",
    }
    with pytest.raises(ProviderError):
        await payments.create_top_up(org.id, **request)
    top_up = await payments.create_top_up(org.id, **request)
    again = await payments.create_top_up(org.id, **request)
    assert again == top_up
    sent = [r for r in fake.requests if r.method == "POST"]
    assert len(sent) == 2  # the failed attempt and its retry; the replay asked nobody
    token = base64.b64encode(f"{SHOP_ID}:{SECRET_KEY}".encode()).decode()
    for request_sent in sent:
        assert request_sent.headers["Idempotence-Key"] == str(top_up.payment_id)
        assert request_sent.headers["Authorization"] == f"Basic {token}"
    body = sent[-1].body
    assert body["amount"] == {"value": "1234.56", "currency": "RUB"}
    assert body["capture"] is True
    assert body["confirmation"] == {
        "type": "redirect",
        "return_url": "https://voicegw.example/billing/return",
    }
    assert body["metadata"] == {
        "org_id": str(org.id),
        "payment_id": str(top_up.payment_id),
        "purpose": "topup",
        "cms_name": "yookassa_sdk_python",  # the SDK adds its own
    }
    assert "receipt" not in body
    assert len(fake.payments) == 1
    [payment] = fake.payments.values()
    assert top_up.redirect_url == payment["confirmation"]["confirmation_url"]
    assert await _balance(payments, org) == 0


async def test_a_receipt_shop_sends_54fz_receipts(
    database: Database, fake_yookassa: tuple[FakeYooKassa, str], org: Organization
) -> None:
    fake, url = fake_yookassa
    settings = _settings(
        url, yookassa_receipt=True, yookassa_vat_code=1, yookassa_tax_system_code=2
    )
    payments = Payments(Ledger(database.pool), settings)
    with pytest.raises(PaymentError):  # a receipt needs the customer's email
        await payments.create_top_up(
            org.id, provider="yookassa", amount_minor=1000, currency="RUB", idempotency_key="r0"
        )
    assert fake.requests == []
    await payments.create_top_up(
        org.id,
        provider="yookassa",
        amount_minor=1000,
        currency="RUB",
        idempotency_key="r1",
        receipt_email="payer@example.com",
    )
    receipt = fake.requests[-1].body["receipt"]
    assert receipt["customer"] == {"email": "payer@example.com"}
    assert receipt["tax_system_code"] == 2
    [item] = receipt["items"]
    assert item["amount"] == {"value": "10.00", "currency": "RUB"}
    assert (item["vat_code"], item["payment_mode"], item["payment_subject"]) == (
        1,
        "full_payment",
        "service",
    )


async def test_a_foreign_currency_is_refused(
    payments: Payments, fake: FakeYooKassa, org: Organization
) -> None:
    with pytest.raises(CurrencyMismatch):
        await payments.create_top_up(
            org.id, provider="yookassa", amount_minor=1000, currency="EUR", idempotency_key="e"
        )
    assert fake.requests == []


# Notifications --------------------------------------------------------------------------------


async def test_a_confirmed_payment_credits_once_whatever_the_duplicates(
    client: Client, payments: Payments, fake: FakeYooKassa, org: Organization
) -> None:
    payment_id = _provider_id(fake, await _top_up(payments, org, 50_000))
    body = notification("payment.succeeded", fake.succeed(payment_id))
    assert await _notify(client, body) == (200, "credited")
    replies = await asyncio.gather(*(_notify(client, body) for _ in range(5)))
    assert replies == [(200, "duplicate")] * 5
    assert await _balance(payments, org) == 50_000
    refetches = [r for r in fake.requests if r.path == f"/v3/payments/{payment_id}"]
    assert refetches  # the notification itself was not believed


async def test_concurrent_first_notifications_credit_once(
    client: Client, payments: Payments, fake: FakeYooKassa, org: Organization
) -> None:
    payment_id = _provider_id(fake, await _top_up(payments, org, 3_000))
    body = notification("payment.succeeded", fake.succeed(payment_id))
    replies = await asyncio.gather(*(_notify(client, body) for _ in range(6)))
    assert sorted(outcome for _, outcome in replies) == ["credited"] + ["duplicate"] * 5
    assert await _balance(payments, org) == 3_000


@pytest.mark.parametrize("status", ["pending", "waiting_for_capture", "canceled"])
async def test_a_notification_yookassa_does_not_confirm_credits_nothing(
    status: str, client: Client, payments: Payments, fake: FakeYooKassa, org: Organization
) -> None:
    payment_id = _provider_id(fake, await _top_up(payments, org, 50_000))
    forged = notification("payment.succeeded", dict(fake.payments[payment_id], status="succeeded"))
    fake.payments[payment_id]["status"] = status
    assert await _notify(client, forged) == (200, f"rejected: the payment is {status}")
    assert await _balance(payments, org) == 0
    if status != "canceled":
        # When the payment does succeed, the same notification, redelivered, now counts.
        fake.succeed(payment_id)
        assert await _notify(client, forged) == (200, "credited")
        assert await _balance(payments, org) == 50_000


@pytest.mark.parametrize("change", ["amount", "currency", "org_id", "payment_id", "no metadata"])
async def test_a_payment_that_does_not_match_ours_credits_nothing(
    change: str, client: Client, payments: Payments, fake: FakeYooKassa, org: Organization
) -> None:
    payment_id = _provider_id(fake, await _top_up(payments, org, 50_000))
    payment = fake.succeed(payment_id)
    if change == "amount":
        payment["amount"] = {"value": "5000.00", "currency": "RUB"}
    elif change == "currency":
        payment["amount"] = {"value": "500.00", "currency": "USD"}
    elif change == "no metadata":
        payment["metadata"] = {}
    else:
        payment["metadata"] = dict(payment["metadata"], **{change: str(uuid.uuid4())})
    status, outcome = await _notify(client, notification("payment.succeeded", payment))
    assert status == 200 and outcome.startswith("rejected"), outcome
    assert await _balance(payments, org) == 0


async def test_an_invented_payment_credits_nothing(client: Client, payments: Payments) -> None:
    body = notification(
        "payment.succeeded",
        {
            "id": "2e1b0000-000f-5000-9000-000000000000",
            "status": "succeeded",
            "amount": {"value": "100.00", "currency": "RUB"},
        },
    )
    assert await _notify(client, body) == (200, "rejected: unknown to YooKassa")


async def test_a_canceled_payment_is_marked(
    client: Client, payments: Payments, fake: FakeYooKassa, org: Organization
) -> None:
    top_up = await _top_up(payments, org, 1_000)
    payment_id = _provider_id(fake, top_up)
    fake.payments[payment_id]["status"] = "canceled"
    body = notification("payment.canceled", fake.payments[payment_id])
    assert await _notify(client, body) == (200, "canceled")
    status = await payments.ledger.db.fetchval(
        "SELECT status FROM billing_payments WHERE id = $1", top_up.payment_id
    )
    assert status == "canceled"


async def test_a_refund_is_debited_once_and_a_shortfall_suspends(
    client: Client,
    payments: Payments,
    fake: FakeYooKassa,
    org: Organization,
    database: Database,
) -> None:
    payment_id = await _paid(client, payments, fake, org, 10_000)
    ledger = payments.ledger
    await spend(ledger, org.id, 9_000)

    # A refund YooKassa has not completed yet takes nothing.
    pending = fake.refund(payment_id, "30.00", status="pending")
    forged = notification("refund.succeeded", dict(pending, status="succeeded"))
    assert await _notify(client, forged) == (200, "rejected: the refund is pending")
    assert await _balance(payments, org) == 1_000

    refund = fake.refund(payment_id, "40.00")
    body = notification("refund.succeeded", refund)
    assert await _notify(client, body) == (200, "debited")
    assert await _notify(client, body) == (200, "duplicate")
    funds = Funds(ledger)
    assert await _balance(payments, org) == 0
    assert await funds.outstanding(org.id, "RUB") == 3_000
    suspended = await orgs.get(database.pool, org.id)
    assert suspended is not None and suspended.billing_suspended
    row = await ledger.db.fetchrow(
        "SELECT status, refunded_minor FROM billing_payments WHERE provider_payment_id = $1",
        payment_id,
    )
    assert (row["status"], row["refunded_minor"]) == ("partially_refunded", 4_000)


async def test_a_refund_before_its_payment_is_credited_is_redelivered(
    client: Client, payments: Payments, fake: FakeYooKassa, org: Organization
) -> None:
    payment_id = _provider_id(fake, await _top_up(payments, org, 2_000))
    payment = fake.succeed(payment_id)
    refund = notification("refund.succeeded", fake.refund(payment_id, "20.00"))
    assert await _notify(client, refund) == (409, "retry: the payment is not credited yet")
    assert await _notify(client, notification("payment.succeeded", payment)) == (200, "credited")
    assert await _notify(client, refund) == (200, "debited")
    assert await _balance(payments, org) == 0


async def test_only_yookassa_networks_are_believed(
    database: Database, fake_yookassa: tuple[FakeYooKassa, str], org: Organization
) -> None:
    fake, url = fake_yookassa
    # The SDK's own allow-list, which loopback is not on.
    payments = Payments(Ledger(database.pool), _settings(url, yookassa_allowed_networks=None))
    assert payments.settings.yookassa_allowed_networks[0] == ipaddress.ip_network("77.75.153.0/25")
    payment_id = _provider_id(fake, await _top_up(payments, org, 1_000))
    body = notification("payment.succeeded", fake.succeed(payment_id))
    async with webhook_client(payments) as client:
        assert await _notify(client, body) == (403, "forbidden: source not allowed")
        # Claiming to be forwarded from YooKassa helps nobody who is not a trusted proxy.
        headers = {"X-Forwarded-For": YOOKASSA_IP}
        assert await _notify(client, body, headers) == (403, "forbidden: source not allowed")
    assert await _balance(payments, org) == 0
    assert not [r for r in fake.requests if r.method == "GET"]  # nothing was even re-fetched


async def test_behind_a_trusted_proxy_the_forwarded_address_counts(
    database: Database, fake_yookassa: tuple[FakeYooKassa, str], org: Organization
) -> None:
    fake, url = fake_yookassa
    settings = _settings(url, yookassa_allowed_networks=None, trusted_proxies="127.0.0.1/32")
    payments = Payments(Ledger(database.pool), settings)
    payment_id = _provider_id(fake, await _top_up(payments, org, 1_000))
    body = notification("payment.succeeded", fake.succeed(payment_id))
    async with webhook_client(payments) as client:
        # A client spoofing YooKassa's address in front of its own: the proxy appends the real one.
        spoofed = {"X-Forwarded-For": f"{YOOKASSA_IP}, 203.0.113.9"}
        assert await _notify(client, body, spoofed) == (403, "forbidden: source not allowed")
        assert await _notify(client, body, {"X-Forwarded-For": "not-an-ip"}) == (
            403,
            "forbidden: source not allowed",
        )
        assert await _notify(client, body) == (403, "forbidden: source not allowed")
        assert await _balance(payments, org) == 0
        # Through the proxy from YooKassa (and through a second trusted hop): believed.
        chained = {"X-Forwarded-For": f"198.51.100.7, {YOOKASSA_IP}, 127.0.0.1"}
        assert await _notify(client, body, chained) == (200, "credited")
    assert await _balance(payments, org) == 1_000


def test_client_address_rules() -> None:
    trusted = [ipaddress.ip_network("10.0.0.0/8")]
    assert str(client_address("::ffff:185.71.76.5", [], trusted)) == "185.71.76.5"
    assert str(client_address("10.1.1.1", ["1.1.1.1, 2.2.2.2"], trusted)) == "2.2.2.2"
    assert str(client_address("10.1.1.1", ["1.1.1.1", "2.2.2.2, 10.3.3.3"], trusted)) == "2.2.2.2"
    assert str(client_address("2.2.2.2", ["10.1.1.1"], trusted)) == "2.2.2.2"
    assert client_address("10.1.1.1", ["1.1.1.1, garbage"], trusted) is None
    assert client_address(None, [], trusted) is None


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"type": "notification"}',
        b'{"type": "notification", "event": "payment.succeeded", "object": {}}',
    ],
)
async def test_malformed_notifications_are_refused(
    body: bytes, client: Client, payments: Payments
) -> None:
    status, outcome = await _notify(client, body)
    assert status == 400 and outcome.startswith("malformed")


async def test_an_unreachable_api_asks_yookassa_to_retry(
    database: Database, org: Organization
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    payments = Payments(Ledger(database.pool), _settings(f"http://127.0.0.1:{port}/v3"))
    body = notification(
        "payment.succeeded",
        {
            "id": "2e1b0000-000f-5000-9000-000000000001",
            "status": "succeeded",
            "amount": {"value": "1.00", "currency": "RUB"},
        },
    )
    async with webhook_client(payments) as client:
        assert await _notify(client, body) == (503, "provider_unavailable: retry later")
