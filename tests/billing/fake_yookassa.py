"""A local YooKassa API v3: create and read payments, read refunds, as the SDK calls them (JSON,
Basic auth `shopId:secret`, Idempotence-Key replay), with realistic objects. Tests change a
payment's state here to play what YooKassa would answer when the gateway re-fetches it."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

SHOP_ID = "100500"
SECRET_KEY = "test_voicegw_fake_secret"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _object_id() -> str:
    # YooKassa's ids look like UUIDs whose third group starts with 000.
    raw = uuid.uuid4().hex
    return f"{raw[:8]}-{raw[8:12]}-000f-5000-{raw[20:32]}"


@dataclass
class FakeYooKassa:
    requests: list[Recorded] = field(default_factory=list)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    # Answer this many payment creations with YooKassa's 500 (after recording them).
    fail_next: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v3/payments", self._create_payment)
        app.router.add_get("/v3/payments/{id}", self._get_payment)
        app.router.add_get("/v3/refunds/{id}", self._get_refund)
        return app

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body))
        return body

    @staticmethod
    def _authorised(request: web.Request) -> bool:
        token = base64.b64encode(f"{SHOP_ID}:{SECRET_KEY}".encode()).decode()
        return request.headers.get("Authorization") == f"Basic {token}"

    async def _create_payment(self, request: web.Request) -> web.Response:
        body = await self._record(request)
        if not self._authorised(request):
            return _error(401, "invalid_credentials", "Authentication by given credentials failed")
        if self.fail_next:
            self.fail_next -= 1
            return _error(500, "internal_server_error", "Internal server error")
        key = request.headers.get("Idempotence-Key")
        if not key:
            return _error(400, "invalid_request", "Idempotence-Key header is required")
        if key in self.by_key:
            return web.json_response(self.payments[self.by_key[key]])
        payment_id = _object_id()
        payment = {
            "id": payment_id,
            "status": "pending",
            "paid": False,
            "amount": body["amount"],
            "confirmation": {
                "type": "redirect",
                "return_url": body["confirmation"]["return_url"],
                "confirmation_url": (
                    f"https://yoomoney.ru/checkout/payments/v2/contract?orderId={payment_id}"
                ),
            },
            "created_at": _now(),
            "description": body.get("description"),
            "metadata": body.get("metadata", {}),
            "recipient": {"account_id": SHOP_ID, "gateway_id": "100700"},
            "refundable": False,
            "test": True,
        }
        self.payments[payment_id] = payment
        self.by_key[key] = payment_id
        return web.json_response(payment)

    async def _get_payment(self, request: web.Request) -> web.Response:
        await self._record(request)
        if not self._authorised(request):
            return _error(401, "invalid_credentials", "Authentication by given credentials failed")
        payment = self.payments.get(request.match_info["id"])
        if payment is None:
            return _error(404, "not_found", "Payment not found")
        return web.json_response(payment)

    async def _get_refund(self, request: web.Request) -> web.Response:
        await self._record(request)
        if not self._authorised(request):
            return _error(401, "invalid_credentials", "Authentication by given credentials failed")
        refund = self.refunds.get(request.match_info["id"])
        if refund is None:
            return _error(404, "not_found", "Refund not found")
        return web.json_response(refund)

    # What YooKassa would do ------------------------------------------------------------------

    def succeed(self, payment_id: str) -> dict[str, Any]:
        payment = self.payments[payment_id]
        payment.update(
            status="succeeded",
            paid=True,
            refundable=True,
            captured_at=_now(),
            income_amount=payment["amount"],
            payment_method={"type": "bank_card", "id": payment_id, "saved": False},
        )
        return payment

    def refund(self, payment_id: str, value: str, status: str = "succeeded") -> dict[str, Any]:
        payment = self.payments[payment_id]
        refund_id = _object_id()
        refund: dict[str, Any] = {
            "id": refund_id,
            "payment_id": payment_id,
            "status": status,
            "created_at": _now(),
            "amount": {"value": value, "currency": payment["amount"]["currency"]},
        }
        self.refunds[refund_id] = refund
        return refund


def _error(status: int, code: str, description: str) -> web.Response:
    return web.json_response(
        {"type": "error", "id": str(uuid.uuid4()), "code": code, "description": description},
        status=status,
    )


def notification(event: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"type": "notification", "event": event, "object": obj}
