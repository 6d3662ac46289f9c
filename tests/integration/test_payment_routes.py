"""The running gateway serves the payment webhooks on its HTTP port; without provider keys they
answer 503 (not 404), and the outcome shows in /metrics."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.server import Gateway


async def test_unconfigured_payment_webhooks_answer_503(gateway: Gateway) -> None:
    assert gateway.payments is not None
    if gateway.payments.stripe is not None or gateway.payments.yookassa is not None:
        pytest.skip("payment keys are set in this environment")
    base = f"http://127.0.0.1:{gateway.http_port}"
    async with aiohttp.ClientSession() as http:
        for provider in ("stripe", "yookassa"):
            async with http.post(f"{base}/webhooks/{provider}", data=b"{}") as response:
                assert response.status == 503
                body = await response.json()
                assert body["outcome"] == "not_configured: payments not configured"
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
    assert 'voicegw_payment_webhooks_total{outcome="not_configured",provider="stripe"}' in text
