"""How the gateway reaches billing: the meter in this process, or `voicegw billing serve`.

Both speak the same four operations and fail the same two ways: `Refused` (the call cannot be
paid; the caller hears why) and `BillingUnavailable` (billing cannot be asked right now: a new
call fails closed, a live call runs on what it holds and its usage goes to the spool).
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import asyncpg
import grpc
from voicegw.v1 import billing_pb2 as pb
from voicegw.v1 import billing_pb2_grpc
from voicegw_client._status import reason_from_metadata

from billing.ledger import LedgerError
from billing.metering import CallBill, CallGrant, CallMeter, Refused, UnknownCall
from billing.wire import UNREACHABLE, bill_from_proto, grant_from_proto

# Database faults that say nothing about the call (deadlock, too many connections, a broken
# constraint): unclear, so treated like an outage (retried under the same keys), never as money.
_UNCLEAR_DB = (*UNREACHABLE, asyncpg.PostgresError)
# gRPC statuses after which the request may or may not have been applied.
_UNCLEAR_CODES = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
)


class BillingUnavailable(Exception):
    """Billing could not be reached; nothing is known to have happened."""


class CallBilling(Protocol):
    async def authorize(
        self, org_id: uuid.UUID, call_id: uuid.UUID, seconds: int, *, min_seconds: int, key: str
    ) -> CallGrant: ...

    async def extend(
        self, call_id: uuid.UUID, seconds: int, *, min_seconds: int, usage_ms: int, key: str
    ) -> CallGrant: ...

    async def heartbeat(self, call_id: uuid.UUID, usage_ms: int) -> None: ...

    async def finalize(
        self, call_id: uuid.UUID, duration_ms: int, *, reason: str, key: str
    ) -> CallBill: ...


class LocalBilling:
    """The meter on this process's database pool."""

    def __init__(self, meter: CallMeter) -> None:
        self.meter = meter

    async def authorize(
        self, org_id: uuid.UUID, call_id: uuid.UUID, seconds: int, *, min_seconds: int, key: str
    ) -> CallGrant:
        try:
            return await self.meter.authorize(
                org_id, call_id, seconds, min_seconds=min_seconds, key=key
            )
        except _UNCLEAR_DB as error:
            raise BillingUnavailable(str(error)) from error

    async def extend(
        self, call_id: uuid.UUID, seconds: int, *, min_seconds: int, usage_ms: int, key: str
    ) -> CallGrant:
        try:
            return await self.meter.extend(
                call_id, seconds, min_seconds=min_seconds, usage_ms=usage_ms, key=key
            )
        except _UNCLEAR_DB as error:
            raise BillingUnavailable(str(error)) from error

    async def heartbeat(self, call_id: uuid.UUID, usage_ms: int) -> None:
        try:
            await self.meter.heartbeat(call_id, usage_ms)
        except _UNCLEAR_DB as error:
            raise BillingUnavailable(str(error)) from error

    async def finalize(
        self, call_id: uuid.UUID, duration_ms: int, *, reason: str, key: str
    ) -> CallBill:
        try:
            return await self.meter.finalize(call_id, duration_ms, reason=reason, key=key)
        except _UNCLEAR_DB as error:
            raise BillingUnavailable(str(error)) from error


class RemoteBilling:
    """`BillingService` over gRPC with the gateway's service key."""

    def __init__(self, target: str, service_key: str, *, timeout_secs: float = 5.0) -> None:
        self._channel = grpc.aio.insecure_channel(target)
        self._stub = billing_pb2_grpc.BillingServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {service_key}"),)
        self._timeout = timeout_secs

    async def close(self) -> None:
        await self._channel.close()

    async def authorize(
        self, org_id: uuid.UUID, call_id: uuid.UUID, seconds: int, *, min_seconds: int, key: str
    ) -> CallGrant:
        request = pb.AuthorizeCallRequest(
            organization_id=str(org_id),
            call_id=str(call_id),
            seconds=seconds,
            min_seconds=min_seconds,
            idempotency_key=key,
        )
        response = await self._call(self._stub.AuthorizeCall, request)
        return grant_from_proto(response.authorization)

    async def extend(
        self, call_id: uuid.UUID, seconds: int, *, min_seconds: int, usage_ms: int, key: str
    ) -> CallGrant:
        request = pb.ExtendCallRequest(
            call_id=str(call_id),
            seconds=seconds,
            min_seconds=min_seconds,
            usage_ms=usage_ms,
            idempotency_key=key,
        )
        response = await self._call(self._stub.ExtendCall, request)
        return grant_from_proto(response.authorization)

    async def heartbeat(self, call_id: uuid.UUID, usage_ms: int) -> None:
        await self._call(
            self._stub.ExtendCall, pb.ExtendCallRequest(call_id=str(call_id), usage_ms=usage_ms)
        )

    async def finalize(
        self, call_id: uuid.UUID, duration_ms: int, *, reason: str, key: str
    ) -> CallBill:
        request = pb.FinalizeCallRequest(
            call_id=str(call_id), duration_ms=duration_ms, end_reason=reason, idempotency_key=key
        )
        response = await self._call(self._stub.FinalizeCall, request)
        return bill_from_proto(response.bill)

    async def _call(self, method: grpc.aio.UnaryUnaryMultiCallable, request: object) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise _translate(error) from error


def _translate(error: grpc.aio.AioRpcError) -> Exception:
    code = error.code()
    if code in _UNCLEAR_CODES:
        return BillingUnavailable(f"billing service: {code.name}: {error.details()}")
    if code is grpc.StatusCode.NOT_FOUND:
        return UnknownCall(error.details() or "no such metered call")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        reason = reason_from_metadata(error.trailing_metadata())
        return Refused(reason or "INSUFFICIENT_BALANCE", error.details() or "")
    return LedgerError(f"billing service refused: {code.name}: {error.details()}")
