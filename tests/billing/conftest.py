"""Fixtures for payments: the local provider fakes on real ports, and the gateway's webhook routes
served over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from billing.payments import Payments
from billing.webhooks import webhook_routes
from tests.billing.fake_stripe import FakeStripe
from tests.billing.fake_yookassa import FakeYooKassa
from tests.billing.helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """Pinned to the current whole second: Stripe's SDK still checks staleness on the real
    clock, and a whole second makes "301 s away" exact."""
    return FakeClock(datetime.fromtimestamp(int(datetime.now(UTC).timestamp()), UTC))


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def fake_stripe() -> AsyncIterator[FakeStripe]:
    fake = FakeStripe()
    async with serve(fake.app()) as url:
        fake.url = url
        yield fake


@pytest.fixture
async def fake_yookassa() -> AsyncIterator[tuple[FakeYooKassa, str]]:
    fake = FakeYooKassa()
    async with serve(fake.app()) as url:
        yield fake, f"{url}/v3"


@asynccontextmanager
async def webhook_client(
    payments: Payments,
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """An HTTP client of an app with exactly the gateway's webhook routes."""
    app = web.Application()
    app.add_routes(webhook_routes(payments))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client
