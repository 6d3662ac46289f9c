"""What payments and their providers exchange, and how a payment request can fail.

Kept apart from both so a provider module never imports the payments service that drives it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

Provider = Literal["stripe", "yookassa"]
Purpose = Literal["topup", "plan_fee"]
PROVIDERS: tuple[Provider, ...] = ("stripe", "yookassa")


class PaymentError(Exception):
    """A payment request that cannot be served as asked; the message says why."""


class CurrencyMismatch(PaymentError):
    """The requested currency is not the organisation's account currency (FAILED_PRECONDITION)."""


class PaymentsNotConfigured(PaymentError):
    """The provider's keys are not set in this process."""


class ProviderError(PaymentError):
    """The provider refused the request or could not be reached; retrying with the same
    idempotency key is safe."""


@dataclass(frozen=True, slots=True)
class Checkout:
    """A payment to open at a provider; `payment_id` is ours and the provider's idempotency key."""

    payment_id: uuid.UUID
    org_id: uuid.UUID
    amount_minor: int
    currency: str
    purpose: Purpose
    plan_code: str | None
    return_url: str
    receipt_email: str | None

    @property
    def description(self) -> str:
        if self.purpose == "plan_fee":
            return f"voicegw plan {self.plan_code}"
        return "voicegw balance top-up"

    @property
    def metadata(self) -> dict[str, str]:
        """Sent with the payment and checked again when the provider reports it paid."""
        data = {"org_id": str(self.org_id), "payment_id": str(self.payment_id)}
        data["purpose"] = self.purpose
        if self.plan_code:
            data["plan_code"] = self.plan_code
        return data


@dataclass(frozen=True, slots=True)
class Opened:
    """The provider's side of a checkout: its payment id and where to send the customer."""

    provider_payment_id: str
    redirect_url: str
