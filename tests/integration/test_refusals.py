"""Every refusal of DESIGN §3, over a real socket, with the status a client can branch on."""

from __future__ import annotations

import grpc
import pytest
from voicegw.v1 import voice_pb2 as pb

from gateway.auth import create_api_key
from gateway.db import Database
from gateway.server import Gateway
from tests.audio_helpers import silence
from tests.conftest import TEST_PEPPER
from tests.integration.conftest import Tenant, make_tenant
from tests.integration.rpc import bearer, config, converse, error_reason


async def test_no_key_is_unauthenticated(gateway: Gateway) -> None:
    _, error = await converse(gateway, [config()])
    assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "missing API key" in (error.details() or "")


@pytest.mark.parametrize(
    "key", ["vg_abcdefgh_" + "x" * 43, "not-a-key", ""], ids=["unknown", "malformed", "empty"]
)
async def test_bad_key_is_unauthenticated(gateway: Gateway, key: str) -> None:
    _, error = await converse(gateway, [config()], (("x-api-key", key),) if key else ())
    assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_revoked_key_is_unauthenticated(gateway: Gateway, database: Database) -> None:
    tenant = await make_tenant(database)
    from gateway.auth import parse_api_key
    from gateway.storage import api_keys

    parsed = parse_api_key(tenant.key)
    assert parsed is not None
    await api_keys.revoke(database.pool, parsed.prefix)
    _, error = await converse(gateway, [config()], bearer(tenant.key))
    assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_x_api_key_header_is_accepted(gateway: Gateway, tenant: Tenant) -> None:
    responses, error = await converse(
        gateway,
        [config(), pb.ConverseRequest(hangup=pb.HangupRequest())],
        (("x-api-key", tenant.key),),
    )
    assert error is None
    assert responses[0].HasField("session_started")
    assert responses[-1].session_ended.reason == pb.END_REASON_CALLER_HANGUP


async def test_unknown_agent_is_not_found(gateway: Gateway, tenant: Tenant) -> None:
    _, error = await converse(gateway, [config("nobody")], bearer(tenant.key))
    assert error is not None and error.code() == grpc.StatusCode.NOT_FOUND


async def test_another_tenants_agent_is_not_found(gateway: Gateway, database: Database) -> None:
    """Tenant B cannot reach (or probe the existence of) tenant A's agent names."""
    from gateway.storage import agents, orgs
    from pipelines.agent_config import AgentConfig

    a = await make_tenant(database)
    await agents.create_or_new_version(
        database.pool, a.org_id, "private-agent", AgentConfig.default_secretary().to_dict()
    )
    b_org = await orgs.create(database.pool, f"org-b-{a.name}")
    b_key = (await create_api_key(database.pool, TEST_PEPPER, b_org.id)).key
    _, as_b = await converse(gateway, [config("private-agent")], bearer(b_key))
    _, unknown = await converse(gateway, [config("no-such-agent")], bearer(b_key))
    assert as_b is not None and unknown is not None
    assert as_b.code() == unknown.code() == grpc.StatusCode.NOT_FOUND
    assert (as_b.details() or "").replace("private-agent", "X") == (
        unknown.details() or ""
    ).replace("no-such-agent", "X")


async def test_first_request_must_be_config(gateway: Gateway, tenant: Tenant) -> None:
    audio = pb.ConverseRequest(audio=pb.AudioInput(data=silence(20)))
    _, error = await converse(gateway, [audio], bearer(tenant.key))
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "first request must be the session config" in (error.details() or "")


async def test_missing_agent_name_is_invalid(gateway: Gateway, tenant: Tenant) -> None:
    _, error = await converse(gateway, [config("")], bearer(tenant.key))
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("encoding", "rate"),
    [
        (pb.AUDIO_ENCODING_LINEAR16, 44100),
        (pb.AUDIO_ENCODING_LINEAR16, 11025),
        (pb.AUDIO_ENCODING_PCMU, 16000),
        (pb.AUDIO_ENCODING_PCMA, 48000),
        (pb.AUDIO_ENCODING_UNSPECIFIED, 16000),
    ],
)
async def test_unsupported_format_is_invalid(
    gateway: Gateway, tenant: Tenant, encoding: int, rate: int
) -> None:
    _, error = await converse(gateway, [config(encoding=encoding, rate=rate)], bearer(tenant.key))
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input_format" in (error.details() or "")


async def test_malformed_audio_mid_call_ends_with_invalid_argument(
    gateway: Gateway, tenant: Tenant, database: Database
) -> None:
    bad = pb.ConverseRequest(audio=pb.AudioInput(data=b"\x00\x01\x02"))
    responses, error = await converse(gateway, [config(), bad], bearer(tenant.key))
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "whole number" in (error.details() or "")
    # The call had started: it still ended properly and was stored.
    assert responses[0].HasField("session_started")
    assert responses[-1].session_ended.reason == pb.END_REASON_ERROR
    from uuid import UUID

    from gateway.storage import calls

    record = await calls.get_call(database.pool, UUID(responses[0].session_started.session_id))
    assert record is not None and record.end_reason == "error"


async def test_over_capacity_is_resource_exhausted_with_reason(
    gateway: Gateway, tenant: Tenant
) -> None:
    assert gateway.sessions is not None
    saved = gateway.sessions.max_sessions
    gateway.sessions.max_sessions = len(gateway.sessions.sessions)
    try:
        _, error = await converse(gateway, [config()], bearer(tenant.key))
    finally:
        gateway.sessions.max_sessions = saved
    assert error is not None and error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_reason(error) == "CAPACITY"


async def test_draining_gateway_is_unavailable(gateway: Gateway, tenant: Tenant) -> None:
    assert gateway.sessions is not None
    gateway.sessions.draining = True
    try:
        _, error = await converse(gateway, [config()], bearer(tenant.key))
    finally:
        gateway.sessions.draining = False
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE


async def test_key_without_voice_scope_is_permission_denied(
    gateway: Gateway, database: Database, tenant: Tenant
) -> None:
    key = (
        await create_api_key(database.pool, TEST_PEPPER, tenant.org_id, scopes=("billing:read",))
    ).key
    _, error = await converse(gateway, [config()], bearer(key))
    assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_health_and_reflection_need_no_key(gateway: Gateway) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="voicegw.v1.VoiceService")
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        services = []
        async for response in stream:
            services = [s.name for s in response.list_services_response.service]
        assert "voicegw.v1.VoiceService" in services
