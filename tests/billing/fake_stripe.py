"""A local Stripe: the Checkout Sessions endpoint the SDK calls, speaking Stripe's wire format
(form-encoded requests, JSON objects, Bearer auth, Idempotency-Key replay), plus builders for the
signed webhook events Stripe would send about those sessions."""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import stripe
from aiohttp import web
from multidict import MultiDictProxy

SECRET_KEY = "sk_test_voicegw_fake"
WEBHOOK_SECRET = "whsec_voicegw_fake_secret"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]


def _nested(form: MultiDictProxy[Any], prefix: str) -> dict[str, str]:
    """`metadata[org_id]=...` fields as {"org_id": ...}."""
    pattern = re.compile(rf"^{re.escape(prefix)}\[([^\]]+)\]$")
    return {m[1]: str(v) for k, v in form.items() if (m := pattern.match(k))}


@dataclass
class FakeStripe:
    requests: list[Recorded] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/checkout/sessions", self._create_session)
        return app

    async def _create_session(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                dict(request.headers),
                {k: str(v) for k, v in form.items()},
            )
        )
        if request.headers.get("Authorization") != f"Bearer {SECRET_KEY}":
            return _error(401, "invalid_request_error", "Invalid API Key provided")
        key = request.headers.get("Idempotency-Key", "")
        if key in self.by_key:
            return web.json_response(self.sessions[self.by_key[key]])
        if form.get("mode") != "payment":
            return _error(400, "invalid_request_error", "Missing required param: mode.")
        session_id = f"cs_test_{secrets.token_hex(12)}"
        quantity = int(str(form.get("line_items[0][quantity]", "1")))
        unit_amount = int(str(form["line_items[0][price_data][unit_amount]"]))
        session = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": unit_amount * quantity,
            "amount_total": unit_amount * quantity,
            "cancel_url": form.get("cancel_url"),
            "client_reference_id": form.get("client_reference_id"),
            "created": int(time.time()),
            "currency": form["line_items[0][price_data][currency]"],
            "customer_email": form.get("customer_email"),
            "expires_at": int(time.time()) + 86400,
            "livemode": False,
            "metadata": _nested(form, "metadata"),
            "mode": "payment",
            "payment_intent": None,
            "payment_status": "unpaid",
            "status": "open",
            "success_url": form.get("success_url"),
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        }
        self.sessions[session_id] = session
        self.by_key[key] = session_id
        return web.json_response(session)

    def session_id(self, checkout_url: str) -> str:
        """The session a customer is sent to by `checkout_url`."""
        return checkout_url.rsplit("/", 1)[1]

    # What Stripe would send -----------------------------------------------------------------

    def pay(self, session_id: str) -> dict[str, Any]:
        """The customer paid: the session completes with a PaymentIntent."""
        session = self.sessions[session_id]
        session.update(
            payment_status="paid",
            status="complete",
            payment_intent=session["payment_intent"] or f"pi_{secrets.token_hex(12)}",
        )
        return dict(session)


def _error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message}}, status=status)


def event(kind: str, obj: dict[str, Any], event_id: str | None = None) -> str:
    """A webhook body as Stripe serialises it."""
    return json.dumps(
        {
            "id": event_id or f"evt_{secrets.token_hex(12)}",
            "object": "event",
            "api_version": "2026-10-28.endive",
            "created": int(time.time()),
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
        }
    )


def charge(session: dict[str, Any], *, amount_refunded: int = 0) -> dict[str, Any]:
    return {
        "id": f"ch_{session['payment_intent'][3:]}",
        "object": "charge",
        "amount": session["amount_total"],
        "amount_captured": session["amount_total"],
        "amount_refunded": amount_refunded,
        "currency": session["currency"],
        "metadata": dict(session["metadata"]),
        "paid": True,
        "payment_intent": session["payment_intent"],
        "refunded": amount_refunded == session["amount_total"],
        "status": "succeeded",
    }


def dispute(session: dict[str, Any], amount: int) -> dict[str, Any]:
    return {
        "id": f"du_{secrets.token_hex(12)}",
        "object": "dispute",
        "amount": amount,
        "charge": charge(session)["id"],
        "currency": session["currency"],
        "metadata": {},
        "payment_intent": session["payment_intent"],
        "reason": "fraudulent",
        "status": "needs_response",
    }


def sign(payload: str, timestamp: int, secret: str = WEBHOOK_SECRET) -> str:
    return str(stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp))
