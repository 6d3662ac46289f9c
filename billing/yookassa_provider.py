"""YooKassa through its SDK: payments with a redirect confirmation, and re-fetching payments and
refunds by id, since its notifications are unsigned and only what its API says is believed.

The SDK is synchronous (requests), so calls run in a thread. Its configuration is class state
shared by the whole process, so one `YooKassaProvider` configures it once: a process serves one
shop. Amounts cross the API as rouble strings; they are converted with Decimal, exactly, both ways.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import requests
from yookassa import Configuration, Payment, Refund
from yookassa.domain.exceptions import ApiError, NotFoundError

from billing.payment_types import Checkout, Opened, PaymentError, ProviderError

MINOR_PER_UNIT = 100  # RUB (and every currency YooKassa accepts) has two decimal places
_CENT = Decimal("0.01")


def to_decimal_string(amount_minor: int) -> str:
    """50000 -> "500.00"."""
    return str((Decimal(amount_minor) / MINOR_PER_UNIT).quantize(_CENT))


def to_minor(value: Any) -> int:
    """ "500.00" -> 50000; refuses anything finer than a kopeck instead of rounding it away."""
    minor = Decimal(str(value)) * MINOR_PER_UNIT
    if minor != minor.to_integral_value():
        raise ValueError(f"amount {value!r} has a fraction of a minor unit")
    return int(minor)


@dataclass(frozen=True, slots=True)
class RemotePayment:
    id: str
    status: str
    amount_minor: int
    currency: str
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class RemoteRefund:
    id: str
    payment_id: str
    status: str
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class ReceiptSettings:
    """54-FZ receipt fields the shop is registered with."""

    vat_code: int
    tax_system_code: int | None


class NotAtProvider(Exception):
    """YooKassa does not know the id (a forged notification names an invented payment)."""


class YooKassaProvider:
    def __init__(
        self,
        shop_id: str,
        secret_key: str,
        api_url: str | None = None,
        receipt: ReceiptSettings | None = None,
    ) -> None:
        options = {"api_url": api_url} if api_url else {}
        Configuration.configure(shop_id, secret_key, **options)
        self._receipt = receipt

    async def open_checkout(self, checkout: Checkout) -> Opened:
        value = to_decimal_string(checkout.amount_minor)
        params: dict[str, Any] = {
            "amount": {"value": value, "currency": checkout.currency},
            "capture": True,
            "confirmation": {"type": "redirect", "return_url": checkout.return_url},
            "description": checkout.description,
            "metadata": checkout.metadata,
        }
        if self._receipt is not None:
            params["receipt"] = self._receipt_for(checkout, value)
        payment = await self._call(Payment.create, params, str(checkout.payment_id))
        url = getattr(payment.confirmation, "confirmation_url", None)
        if not url:
            raise ProviderError(f"YooKassa payment {payment.id} has no confirmation URL")
        return Opened(str(payment.id), str(url))

    def _receipt_for(self, checkout: Checkout, value: str) -> dict[str, Any]:
        assert self._receipt is not None
        if not checkout.receipt_email:
            raise PaymentError("this shop issues 54-FZ receipts: the customer's email is required")
        receipt: dict[str, Any] = {
            "customer": {"email": checkout.receipt_email},
            "items": [
                {
                    "description": checkout.description,
                    "quantity": "1.00",
                    "amount": {"value": value, "currency": checkout.currency},
                    "vat_code": self._receipt.vat_code,
                    "payment_mode": "full_payment",
                    "payment_subject": "service",
                }
            ],
        }
        if self._receipt.tax_system_code is not None:
            receipt["tax_system_code"] = self._receipt.tax_system_code
        return receipt

    async def find_payment(self, payment_id: str) -> RemotePayment:
        payment = await self._call(Payment.find_one, payment_id)
        return RemotePayment(
            str(payment.id),
            str(payment.status),
            to_minor(payment.amount.value),
            str(payment.amount.currency),
            {str(k): str(v) for k, v in (payment.metadata or {}).items()},
        )

    async def find_refund(self, refund_id: str) -> RemoteRefund:
        refund = await self._call(Refund.find_one, refund_id)
        return RemoteRefund(
            str(refund.id),
            str(refund.payment_id),
            str(refund.status),
            to_minor(refund.amount.value),
            str(refund.amount.currency),
        )

    @staticmethod
    async def _call(method: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(method, *args)
        except NotFoundError as exc:
            raise NotAtProvider(str(exc)) from exc
        except (ApiError, requests.RequestException) as exc:
            raise ProviderError(f"YooKassa: {exc}") from exc
        except AttributeError as exc:
            # The SDK reads `.response` off any exception, so a refused connection surfaces so.
            raise ProviderError(f"YooKassa unreachable: {exc}") from exc
