"""The providers' webhooks as aiohttp routes: authenticity, the inbox, HTTP status codes.

The routes exist whether or not a provider is configured; an unconfigured one answers 503
"payments not configured", which a provider retries and an operator can see in its dashboard,
instead of a 404 that looks like a wrong URL.

Status codes follow what makes providers retry (any non-2xx): 400 (Stripe: not provably signed
now; YooKassa: not a notification) and 403 (not from YooKassa's networks) move no money, and a
redelivery gets the same answer; 503 when we could not ask YooKassa (it redelivers for 24 h); 409
for a refund or dispute of a payment whose own report has not been handled yet (so it comes back
later); 200 once handled, including duplicates, ignored events and reports whose re-fetch does
not match (the outcome is in the body and in the inbox).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from loguru import logger

from billing.payment_types import Provider, ProviderError
from billing.payments import RETRY, Payments
from billing.stripe_provider import BadSignature
from gateway import metrics
from gateway.source_ip import client_address, within

Handler = Callable[[web.Request], Awaitable[web.Response]]


def _answer(provider: Provider, outcome: str, status: int = 200) -> web.Response:
    # The label is the outcome's kind ("rejected"), not its free-text reason.
    metrics.PAYMENT_WEBHOOKS.labels(provider, outcome.split(":")[0]).inc()
    return web.json_response({"outcome": outcome}, status=status)


async def _handle(
    payments: Payments,
    provider: Provider,
    event_id: str,
    event_type: str,
    payload: Any,
    act: Callable[[], Awaitable[str]],
) -> web.Response:
    """Runs `act` unless the inbox says the event was handled, then records what it did."""
    if await payments.already_handled(provider, event_id):
        return _answer(provider, "duplicate")
    outcome = await act()
    await payments.record_event(provider, event_id, event_type, payload, outcome)
    logger.info(f"{provider} webhook {event_type} {event_id}: {outcome}")
    return _answer(provider, outcome, 409 if outcome.startswith(RETRY) else 200)


def webhook_routes(payments: Payments) -> list[web.RouteDef]:
    """`POST /webhooks/stripe` and `POST /webhooks/yookassa`."""

    async def stripe_webhook(request: web.Request) -> web.Response:
        if payments.stripe is None:
            return _answer("stripe", "not_configured: payments not configured", 503)
        payload = await request.read()
        try:
            event = payments.stripe.verify(
                payload, request.headers.get("Stripe-Signature"), payments.ledger.clock.now()
            )
            event_id, event_type = str(event["id"]), str(event["type"])
        except (BadSignature, KeyError) as exc:
            return _answer("stripe", f"bad_signature: {exc}", 400)
        try:
            return await _handle(
                payments,
                "stripe",
                event_id,
                event_type,
                event,
                lambda: payments.on_stripe_event(event),
            )
        except (KeyError, TypeError, ValueError) as exc:
            return _answer("stripe", f"malformed: {exc!r}", 400)

    async def yookassa_webhook(request: web.Request) -> web.Response:
        if payments.yookassa is None:
            return _answer("yookassa", "not_configured: payments not configured", 503)
        settings = payments.settings
        source = client_address(
            request.remote,
            request.headers.getall("X-Forwarded-For", []),
            settings.trusted_proxies,
        )
        if source is None or not within(source, settings.yookassa_allowed_networks):
            logger.warning(f"yookassa webhook refused from {source or request.remote}")
            return _answer("yookassa", "forbidden: source not allowed", 403)
        try:
            body = json.loads(await request.read())
            event, object_id = payments.parse_yookassa(body)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return _answer("yookassa", f"malformed: {exc}", 400)
        try:
            return await _handle(
                payments,
                "yookassa",
                f"{event}:{object_id}",
                event,
                body,
                lambda: payments.on_yookassa_notification(event, object_id),
            )
        except ProviderError as exc:
            logger.warning(f"yookassa webhook {event} {object_id}: {exc}")
            return _answer("yookassa", "provider_unavailable: retry later", 503)

    return [
        web.post("/webhooks/stripe", stripe_webhook),
        web.post("/webhooks/yookassa", yookassa_webhook),
    ]
