"""Admission over real sockets: the process limit, the per-organisation limit, health while full.

The gateway here is this module's own, with room for two calls, so "full" is reached with two
real calls (greeted by the real engines, then waiting). Its inbound-silence timeout is long: the
held calls send nothing after their config, and must stay up until the test hangs them up.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from voicegw.v1 import voice_pb2 as pb

from gateway.db import Database
from gateway.health import GatewayHealth, ServingState
from gateway.server import VOICE_SERVICE, Gateway
from gateway.storage import orgs
from tests.integration.conftest import gateway_settings, make_tenant
from tests.integration.rpc import HeldCall, bearer, config, converse, error_reason, hold_call

MAX_SESSIONS = 2
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
async def small_gateway(
    database: Database, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    settings = gateway_settings(
        Path(tmp_path_factory.mktemp("admission-state")),
        stt_workers=1,
        max_sessions=MAX_SESSIONS,
        inbound_timeout_secs=300,
    )
    gw = Gateway(settings, database=database)
    await gw.start()
    yield gw
    await gw.stop(grace_secs=1)


@pytest.fixture
async def calls() -> AsyncIterator[list[HeldCall]]:
    """Calls a test holds; whatever is still up at the end is cut off."""
    held: list[HeldCall] = []
    yield held
    await asyncio.gather(*(c.close() for c in held))


async def health_check(gateway: Gateway, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service)
        )
    return int(response.status)


async def wait_for_health(
    gateway: Gateway, service: str, status: int, timeout: float = 15.0
) -> None:
    """Waits on the health Watch stream (what a balancer sees) for `status`."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        stream = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=service)
        )

        async def first_match() -> None:
            async for response in stream:
                if response.status == status:
                    return
            raise AssertionError(f"health Watch for {service!r} ended before {status}")

        try:
            await asyncio.wait_for(first_match(), timeout)
        finally:
            stream.cancel()


async def healthz(gateway: Gateway) -> tuple[int, Any]:
    """(status, body without the pid); the pid is checked to be this process's."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{gateway.http_port}/healthz") as response,
    ):
        body = await response.json()
    assert body.pop("pid") == os.getpid()
    return response.status, body


async def test_full_gateway_refuses_with_capacity_and_is_not_serving_until_a_call_ends(
    small_gateway: Gateway, database: Database, calls: list[HeldCall]
) -> None:
    gateway = small_gateway
    # One organisation per call: only the process limit is in play here.
    tenants = [await make_tenant(database) for _ in range(MAX_SESSIONS + 2)]
    assert await healthz(gateway) == (200, {"status": "serving"})
    for tenant in tenants[:MAX_SESSIONS]:
        calls.append(await hold_call(gateway, tenant.key))

    _, error = await converse(gateway, [config()], bearer(tenants[MAX_SESSIONS].key))
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(error) == "CAPACITY"
    assert f"at capacity ({MAX_SESSIONS} calls)" in (error.details() or "")
    # Exactly one refusal: the held calls are all still up.
    assert all(not c.ended.is_set() for c in calls)
    assert gateway.sessions is not None and len(gateway.sessions.sessions) == MAX_SESSIONS

    await gateway.health.settled()
    assert await health_check(gateway, "") == NOT_SERVING
    assert await health_check(gateway, VOICE_SERVICE) == NOT_SERVING
    assert await healthz(gateway) == (503, {"status": "full"})

    ended = await calls.pop(0).hang_up()
    assert ended.reason  # the call ended properly, with a reason
    await wait_for_health(gateway, "", SERVING)
    await wait_for_health(gateway, VOICE_SERVICE, SERVING)
    assert await healthz(gateway) == (200, {"status": "serving"})

    calls.append(await hold_call(gateway, tenants[MAX_SESSIONS + 1].key))  # admitted again
    await gateway.health.settled()
    assert await health_check(gateway, "") == NOT_SERVING
    for call in list(calls):
        await call.hang_up()
    await wait_for_health(gateway, VOICE_SERVICE, SERVING)


async def test_an_organisation_at_its_limit_is_refused_while_another_is_admitted(
    small_gateway: Gateway, database: Database, calls: list[HeldCall]
) -> None:
    gateway = small_gateway
    limited = await make_tenant(database)
    other = await make_tenant(database)
    assert await orgs.set_call_limit(database.pool, limited.org_id, 1)

    calls.append(await hold_call(gateway, limited.key))
    # The limited org's second call and another org's call arrive together.
    (_, error), admitted = await asyncio.gather(
        converse(gateway, [config()], bearer(limited.key)), hold_call(gateway, other.key)
    )
    calls.append(admitted)
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(error) == "CAPACITY"
    assert f"{limited.name!r} is at its limit of 1 concurrent calls" in (error.details() or "")
    assert admitted.session_id and not admitted.ended.is_set()
    assert gateway.sessions is not None
    assert gateway.sessions.org_calls(limited.org_id) == 1
    assert gateway.sessions.org_calls(other.org_id) == 1

    # Once its call ends the organisation may call again; the counter followed the end.
    first = calls.pop(0)
    session = gateway.sessions.sessions[uuid.UUID(first.session_id)]
    await first.hang_up()
    await asyncio.wait_for(session.finished.wait(), 30)
    assert gateway.sessions.org_calls(limited.org_id) == 0
    calls.append(await hold_call(gateway, limited.key))
    for call in list(calls):
        await call.hang_up()


async def test_default_organisation_limit_comes_from_the_setting(
    small_gateway: Gateway, database: Database, calls: list[HeldCall]
) -> None:
    """Without its own limit an organisation gets `org_max_calls`; `default` restores that."""
    gateway = small_gateway
    assert gateway.sessions is not None
    tenant = await make_tenant(database)
    await orgs.set_call_limit(database.pool, tenant.org_id, 1)
    await orgs.set_call_limit(database.pool, tenant.org_id, None)
    saved = gateway.sessions.org_max_calls
    gateway.sessions.org_max_calls = 1
    try:
        calls.append(await hold_call(gateway, tenant.key))
        _, error = await converse(gateway, [config()], bearer(tenant.key))
    finally:
        gateway.sessions.org_max_calls = saved
    assert error is not None and error_reason(error) == "CAPACITY"
    assert "at its limit of 1 concurrent calls" in (error.details() or "")
    await calls.pop().hang_up()


async def test_a_draining_gateway_is_not_serving_while_its_calls_finish(
    database: Database, tmp_path: Path
) -> None:
    settings = gateway_settings(tmp_path, stt_workers=1, inbound_timeout_secs=300)
    gateway = Gateway(settings, database=database)
    await gateway.start()
    stopping: asyncio.Task[None] | None = None
    held: HeldCall | None = None
    try:
        tenant = await make_tenant(database)
        held = await hold_call(gateway, tenant.key)
        stopping = asyncio.create_task(gateway.stop(grace_secs=120))  # SIGTERM
        await wait_for_health(gateway, "", NOT_SERVING)
        assert await health_check(gateway, VOICE_SERVICE) == NOT_SERVING
        assert await healthz(gateway) == (503, {"status": "draining"})
        _, error = await converse(gateway, [config()], bearer(tenant.key))
        assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
        assert not stopping.done()  # the held call keeps the gateway up, draining
        ended = await held.hang_up()
        assert ended.reason == pb.END_REASON_CALLER_HANGUP
        await asyncio.wait_for(stopping, 30)
        assert gateway.health.state is ServingState.DRAINING
    finally:
        if held is not None:
            await held.close()
        if stopping is None:
            await gateway.stop(grace_secs=1)
        elif not stopping.done():
            stopping.cancel()


async def test_health_follows_the_latest_load_and_draining_is_final() -> None:
    """Unit level: bursts of load changes settle on the last one; nothing undoes draining."""
    health = GatewayHealth([VOICE_SERVICE])
    await health.start()

    async def status(service: str) -> int:
        response = await health.servicer.Check(health_pb2.HealthCheckRequest(service=service), None)
        return int(response.status)

    for active in (1, 2, 1, 2, 3, 1):  # no await in between: one publish applies the last
        health.on_load(active, 2)
    await health.settled()
    assert health.state is ServingState.SERVING
    assert (await status(""), await status(VOICE_SERVICE)) == (SERVING, SERVING)
    health.on_load(2, 2)
    await health.settled()
    assert health.state is ServingState.FULL
    assert (await status(""), await status(VOICE_SERVICE)) == (NOT_SERVING, NOT_SERVING)

    await health.drain()
    health.on_load(0, 2)
    await health.settled()
    assert health.state is ServingState.DRAINING
    assert (await status(""), await status(VOICE_SERVICE)) == (NOT_SERVING, NOT_SERVING)
