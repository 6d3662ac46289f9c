"""Stripe through its SDK: Checkout Sessions for payments, signed webhooks for their outcome.

The SDK's client is synchronous (the async one needs httpx), so calls run in a thread. It does not
retry: our payment id is the Idempotency-Key, so the caller can retry safely, and a top-up request
should fail in bounded time rather than wait through the SDK's backoff.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

import stripe
from stripe.params.checkout import SessionCreateParams

from billing.payment_types import Checkout, Opened, ProviderError

# Stripe's own tolerance, applied in both directions here: the SDK rejects only stale timestamps
# (one signed an hour in the future passes it), and a future-dated signature is no more trustworthy.
TOLERANCE_SECS = 300


class BadSignature(Exception):
    """The webhook is not provably from Stripe now: missing, garbled, wrong or out-of-time."""


def signature_timestamp(header: str | None) -> int:
    """The `t=` of a Stripe-Signature header (`t=...,v1=...`)."""
    if not header:
        raise BadSignature("no Stripe-Signature header")
    stamps = [part[2:] for part in header.split(",") if part.startswith("t=")]
    if len(stamps) != 1 or not stamps[0].isdigit():
        raise BadSignature("Stripe-Signature has no single numeric timestamp")
    return int(stamps[0])


class StripeProvider:
    def __init__(self, secret_key: str, webhook_secret: str, api_base: str | None = None) -> None:
        addresses: Any = {"api": api_base} if api_base else None
        self._client = stripe.StripeClient(
            secret_key, base_addresses=addresses, max_network_retries=0
        )
        self._webhook_secret = webhook_secret

    async def open_checkout(self, checkout: Checkout) -> Opened:
        metadata = checkout.metadata
        # A TypedDict of the SDK's, so mypy checks the request's shape against Stripe's API.
        params: SessionCreateParams = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": checkout.currency.lower(),
                        "unit_amount": checkout.amount_minor,
                        "product_data": {"name": checkout.description},
                    },
                }
            ],
            "success_url": checkout.return_url,
            "cancel_url": checkout.return_url,
            "client_reference_id": str(checkout.payment_id),
            "metadata": metadata,
            # Copied to the PaymentIntent too, so its charges (refunds, disputes) name our payment.
            "payment_intent_data": {"metadata": metadata},
        }
        if checkout.receipt_email:
            params["customer_email"] = checkout.receipt_email
        try:
            session = await asyncio.to_thread(
                self._client.v1.checkout.sessions.create,
                params=params,
                options={"idempotency_key": f"voicegw-payment-{checkout.payment_id}"},
            )
        except stripe.StripeError as exc:
            raise ProviderError(f"Stripe refused the checkout: {exc}") from exc
        if not session.url:
            raise ProviderError(f"Stripe checkout session {session.id} has no URL")
        return Opened(session.id, session.url)

    def verify(self, payload: bytes, header: str | None, now: datetime) -> dict[str, Any]:
        """The event, if `payload` is signed with our secret within ±300 s of `now`.

        Our clock is checked first (both directions), then the SDK checks the signature (and,
        again, staleness against the system clock).
        """
        timestamp = signature_timestamp(header)
        if abs(now.timestamp() - timestamp) > TOLERANCE_SECS:
            raise BadSignature(f"signature timestamp {timestamp} is more than 300 s from now")
        try:
            stripe.Webhook.construct_event(payload, header, self._webhook_secret)
            event = json.loads(payload)
        except (stripe.SignatureVerificationError, ValueError) as exc:
            raise BadSignature(str(exc)) from exc
        if not isinstance(event, dict):
            raise BadSignature("the signed payload is not an event")
        return event
