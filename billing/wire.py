"""BillingService messages to and from the meter's own types (shared by server and client)."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
from voicegw.v1 import billing_pb2 as pb

from billing.metering import CallBill, CallGrant

# The database being unreachable (down, restarting, shutting down, connection lost): the caller
# may retry, and the gateway fails closed.
UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
)


def money(amount_minor: int, currency: str) -> pb.Money:
    return pb.Money(amount_minor=amount_minor, currency=currency)


def grant_to_proto(grant: CallGrant) -> pb.CallAuthorization:
    return pb.CallAuthorization(
        call_id=str(grant.call_id),
        authorized_seconds=grant.authorized_seconds,
        granted_seconds=grant.granted_seconds,
        plan_seconds=grant.plan_seconds,
        held=money(grant.held_minor, grant.currency),
        available=money(grant.available_minor, grant.currency),
        plan_remaining_seconds=grant.plan_remaining_seconds,
        replayed=grant.replayed,
        more_seconds=grant.more_seconds,
    )


def grant_from_proto(auth: pb.CallAuthorization) -> CallGrant:
    return CallGrant(
        uuid.UUID(auth.call_id),
        auth.authorized_seconds,
        auth.granted_seconds,
        auth.plan_seconds,
        auth.held.amount_minor,
        auth.held.currency,
        auth.available.amount_minor,
        auth.plan_remaining_seconds if auth.HasField("plan_remaining_seconds") else None,
        auth.more_seconds if auth.HasField("more_seconds") else None,
        auth.replayed,
    )


def bill_to_proto(
    bill: CallBill, created_at: datetime | None = None, reason: str = ""
) -> pb.CallBill:
    return pb.CallBill(
        call_id=str(bill.call_id),
        status=bill.status,
        duration_ms=bill.duration_ms,
        billed_seconds=bill.billed_seconds,
        plan_seconds=bill.plan_seconds,
        charged=money(bill.charged_minor, bill.currency),
        charged_late=money(bill.late_minor, bill.currency),
        replayed=bill.replayed,
        created_at=created_at.isoformat() if created_at else "",
        end_reason=reason,
    )


def bill_from_proto(bill: pb.CallBill) -> CallBill:
    return CallBill(
        uuid.UUID(bill.call_id),
        bill.status,
        bill.duration_ms,
        bill.billed_seconds,
        bill.plan_seconds,
        bill.charged.amount_minor,
        bill.charged_late.amount_minor,
        bill.charged.currency,
        bill.replayed,
    )
