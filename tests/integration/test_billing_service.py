"""`BillingService` over real gRPC: concurrent authorizations from two processes never overspend,
idempotency keys replay or conflict, refusals carry their status and reason, tenants are kept
apart and only operators adjust balances."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from voicegw.v1 import billing_pb2 as bpb
from voicegw.v1 import billing_pb2_grpc

from billing.ledger import Ledger
from gateway.auth import create_api_key
from gateway.db import Database
from gateway.server import Gateway
from gateway.storage import orgs
from tests.billing.helpers import assert_entries_match_balances, fund
from tests.conftest import TEST_PEPPER
from tests.integration.conftest import Tenant, make_tenant
from tests.integration.rpc import bearer, error_reason

SERVICE_SCOPES = ["billing:gateway", "billing:read", "billing:admin"]

# The second process: its own interpreter, channel and connection, racing the test's own.
RACER = """
import asyncio, json, sys, uuid
import grpc
from voicegw.v1 import billing_pb2 as bpb, billing_pb2_grpc

async def main(target, key, org, n):
    async with grpc.aio.insecure_channel(target) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        meta = (("authorization", "Bearer " + key),)
        async def one():
            try:
                await stub.AuthorizeCall(bpb.AuthorizeCallRequest(
                    organization_id=org, call_id=str(uuid.uuid4()), seconds=60, min_seconds=60,
                    idempotency_key=str(uuid.uuid4())), metadata=meta)
                return True
            except grpc.aio.AioRpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                return False
        await channel.channel_ready()
        print("ready", flush=True)
        sys.stdin.readline()
        granted = await asyncio.gather(*(one() for _ in range(n)))
        print(json.dumps(sum(granted)), flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


@pytest.fixture(scope="module")
async def service_key(database: Database) -> str:
    org = await orgs.create(database.pool, f"svc-{uuid.uuid4().hex[:8]}", service=True)
    issued = await create_api_key(database.pool, TEST_PEPPER, org.id, scopes=SERVICE_SCOPES)
    return issued.key


@pytest.fixture
async def stub(gateway: Gateway) -> AsyncIterator[billing_pb2_grpc.BillingServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        yield billing_pb2_grpc.BillingServiceStub(channel)


async def _payg(database: Database) -> Tenant:
    from billing.plans import Plans

    tenant = await make_tenant(database)
    await Plans(Ledger(database.pool)).switch_now(tenant.org_id, "payg")
    return tenant


def _authorize(org: uuid.UUID, key: str, call: str | None = None) -> bpb.AuthorizeCallRequest:
    return bpb.AuthorizeCallRequest(
        organization_id=str(org),
        call_id=call or str(uuid.uuid4()),
        seconds=60,
        min_seconds=60,
        idempotency_key=key,
    )


@pytest.mark.parametrize(
    ("case", "affordable", "reason"),
    [("six-minutes-of-money", 6, "INSUFFICIENT_BALANCE"), ("one-plan-minute", 1, "QUOTA_EXCEEDED")],
)
async def test_sixty_concurrent_authorizations_from_two_processes_grant_what_is_affordable(
    gateway: Gateway,
    database: Database,
    service_key: str,
    stub: billing_pb2_grpc.BillingServiceStub,
    case: str,
    affordable: int,
    reason: str,
) -> None:
    tenant = await _payg(database)
    ledger = Ledger(database.pool)
    if case == "one-plan-minute":  # basic, 99 of its 100 minutes used, no money
        await database.pool.execute(
            """UPDATE billing_subscriptions SET plan_code = 'basic', included_seconds = 6000,
               used_seconds = 5940 WHERE org_id = $1""",
            tenant.org_id,
        )
    else:
        await fund(ledger, tenant.org_id, 6000)  # six started minutes at 1000
    racer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RACER,
        f"127.0.0.1:{gateway.grpc_port}",
        service_key,
        str(tenant.org_id),
        "30",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert racer.stdout is not None and racer.stdin is not None

    async def one() -> bool:
        try:
            await stub.AuthorizeCall(
                _authorize(tenant.org_id, str(uuid.uuid4())), metadata=bearer(service_key)
            )
            return True
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert error_reason(error) == reason
            return False

    try:
        assert (await racer.stdout.readline()).strip() == b"ready"
        racer.stdin.write(b"go\n")
        await racer.stdin.drain()
        here = await asyncio.gather(*(one() for _ in range(30)))
        there = json.loads(await racer.stdout.readline())
    finally:
        await asyncio.wait_for(racer.wait(), 30)
    assert sum(here) + there == affordable
    account = await ledger.customer_account(tenant.org_id)
    held = await database.pool.fetchval(
        "SELECT held_seconds FROM billing_subscriptions WHERE org_id = $1", tenant.org_id
    )
    if case == "one-plan-minute":
        assert (account.posted_minor, account.held_minor, held) == (0, 0, 60)
    else:
        assert (account.posted_minor, account.held_minor, held) == (6000, 6000, 0)
    await assert_entries_match_balances(database)


async def test_one_key_one_effect_and_another_request_under_it_conflicts(
    database: Database, service_key: str, stub: billing_pb2_grpc.BillingServiceStub
) -> None:
    tenant = await _payg(database)
    ledger = Ledger(database.pool)
    await fund(ledger, tenant.org_id, 3000)
    meta = bearer(service_key)
    call = str(uuid.uuid4())
    first = await stub.AuthorizeCall(_authorize(tenant.org_id, "auth-1", call), metadata=meta)
    again = await stub.AuthorizeCall(_authorize(tenant.org_id, "auth-1", call), metadata=meta)
    assert not first.authorization.replayed and again.authorization.replayed
    assert again.authorization.held.amount_minor == first.authorization.held.amount_minor == 1000
    with pytest.raises(grpc.aio.AioRpcError) as conflict:
        await stub.AuthorizeCall(
            _authorize(tenant.org_id, "auth-1", str(uuid.uuid4())), metadata=meta
        )
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    final = bpb.FinalizeCallRequest(call_id=call, duration_ms=61_000, idempotency_key="fin-1")
    bill = (await stub.FinalizeCall(final, metadata=meta)).bill
    replay = (await stub.FinalizeCall(final, metadata=meta)).bill
    # Two started minutes: the hold's 1000, then 1000 past it, charged from the balance.
    assert (bill.billed_seconds, bill.charged.amount_minor) == (120, 2000)
    assert bill.charged_late.amount_minor == 1000
    assert replay.replayed and replay.charged.amount_minor == bill.charged.amount_minor
    final.duration_ms = 5_000
    with pytest.raises(grpc.aio.AioRpcError) as changed:
        await stub.FinalizeCall(final, metadata=meta)
    assert changed.value.code() == grpc.StatusCode.ALREADY_EXISTS
    account = await ledger.customer_account(tenant.org_id)
    assert (account.posted_minor, account.held_minor) == (1000, 0)
    await assert_entries_match_balances(database)


async def test_refusals_have_precise_statuses(
    database: Database, service_key: str, stub: billing_pb2_grpc.BillingServiceStub
) -> None:
    tenant = await _payg(database)
    meta = bearer(service_key)
    cases: list[tuple[object, grpc.StatusCode]] = [
        (stub.AuthorizeCall(_authorize(tenant.org_id, "k"), metadata=meta), "RESOURCE_EXHAUSTED"),
        (
            stub.AuthorizeCall(
                bpb.AuthorizeCallRequest(organization_id="nope", call_id=str(uuid.uuid4())),
                metadata=meta,
            ),
            "INVALID_ARGUMENT",
        ),
        (
            stub.AuthorizeCall(_authorize(tenant.org_id, ""), metadata=meta),
            "INVALID_ARGUMENT",
        ),
        (
            stub.ExtendCall(
                bpb.ExtendCallRequest(call_id=str(uuid.uuid4()), seconds=5, idempotency_key="e"),
                metadata=meta,
            ),
            "NOT_FOUND",
        ),
        (
            stub.CreateTopUp(
                bpb.CreateTopUpRequest(
                    organization_id=str(tenant.org_id),
                    provider=bpb.PAYMENT_PROVIDER_STRIPE,
                    amount=bpb.Money(amount_minor=50_000, currency="USD"),
                    idempotency_key="t",
                ),
                metadata=meta,
            ),
            "FAILED_PRECONDITION",
        ),
        (stub.ListPlans(bpb.ListPlansRequest()), "UNAUTHENTICATED"),
    ]
    for pending, expected in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pending  # type: ignore[misc]
        assert refused.value.code().name == expected, refused.value.details()


async def test_tenants_see_only_their_own_and_only_operators_adjust(
    database: Database, service_key: str, stub: billing_pb2_grpc.BillingServiceStub
) -> None:
    a, b = await _payg(database), await _payg(database)
    reader = await create_api_key(
        database.pool, TEST_PEPPER, a.org_id, scopes=["billing:read", "billing:admin"]
    )
    own = await stub.GetBalance(bpb.GetBalanceRequest(), metadata=bearer(reader.key))
    assert own.organization_id == str(a.org_id) and own.plan_code == "payg"
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await stub.GetBalance(
            bpb.GetBalanceRequest(organization_id=str(b.org_id)), metadata=bearer(reader.key)
        )
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as voice_key:  # the tenant's plain voice key
        await stub.GetBalance(bpb.GetBalanceRequest(), metadata=bearer(a.key))
    assert voice_key.value.code() == grpc.StatusCode.PERMISSION_DENIED
    adjust = bpb.AdjustBalanceRequest(
        organization_id=str(a.org_id),
        amount=bpb.Money(amount_minor=2500, currency="RUB"),
        reason="goodwill",
        idempotency_key="adj-1",
    )
    with pytest.raises(grpc.aio.AioRpcError) as self_credit:
        await stub.AdjustBalance(adjust, metadata=bearer(reader.key))
    assert self_credit.value.code() == grpc.StatusCode.PERMISSION_DENIED
    done = await stub.AdjustBalance(adjust, metadata=bearer(service_key))
    replay = await stub.AdjustBalance(adjust, metadata=bearer(service_key))
    assert done.balance.amount_minor == replay.balance.amount_minor == 2500 and replay.replayed
    debit = bpb.AdjustBalanceRequest(
        organization_id=str(a.org_id),
        amount=bpb.Money(amount_minor=-4000, currency="RUB"),
        reason="chargeback fee",
        idempotency_key="adj-2",
    )
    await stub.AdjustBalance(debit, metadata=bearer(service_key))
    balance = await stub.GetBalance(
        bpb.GetBalanceRequest(organization_id=str(a.org_id)), metadata=bearer(service_key)
    )
    assert balance.balance.amount_minor == 0 and balance.outstanding.amount_minor == 1500
    assert balance.suspended
    plans = await stub.ListPlans(bpb.ListPlansRequest(), metadata=bearer(reader.key))
    standard = [p.code for p in plans.plans if p.code in ("payg", "basic", "pro", "enterprise")]
    assert standard == ["payg", "basic", "pro", "enterprise"]  # cheapest first
    change = await stub.ChangePlan(
        bpb.ChangePlanRequest(plan_code="basic", idempotency_key="c1"),
        metadata=bearer(reader.key),
    )
    assert (change.plan_code, change.next_plan_code) == ("payg", "basic")
    later = await stub.ChangePlan(
        bpb.ChangePlanRequest(plan_code="pro", idempotency_key="c2"), metadata=bearer(reader.key)
    )
    replay = await stub.ChangePlan(
        bpb.ChangePlanRequest(plan_code="basic", idempotency_key="c1"),
        metadata=bearer(reader.key),
    )
    assert later.next_plan_code == "pro" and replay.next_plan_code == "basic"
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await stub.ChangePlan(
            bpb.ChangePlanRequest(plan_code="enterprise", idempotency_key="c1"),
            metadata=bearer(reader.key),
        )
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    current = await stub.GetBalance(bpb.GetBalanceRequest(), metadata=bearer(reader.key))
    assert current.next_plan_code == "pro"  # the replay did not undo the later change


async def test_usage_pages_through_billed_calls(
    database: Database, service_key: str, stub: billing_pb2_grpc.BillingServiceStub
) -> None:
    tenant = await _payg(database)
    await fund(Ledger(database.pool), tenant.org_id, 10_000)
    meta = bearer(service_key)
    calls = []
    for i in range(5):
        call = str(uuid.uuid4())
        await stub.AuthorizeCall(_authorize(tenant.org_id, f"a{i}", call), metadata=meta)
        await stub.FinalizeCall(
            bpb.FinalizeCallRequest(
                call_id=call, duration_ms=1000 * (i + 1), idempotency_key=f"f{i}"
            ),
            metadata=meta,
        )
        calls.append(call)
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListUsage(
            bpb.ListUsageRequest(organization_id=str(tenant.org_id), page_size=2, page_token=token),
            metadata=meta,
        )
        seen += [c.call_id for c in page.calls]
        assert all(c.charged.amount_minor == 1000 for c in page.calls)
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(calls) and len(seen) == 5
