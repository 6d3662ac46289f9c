"""Fixtures of the SDK tests; the fake gateway itself lives in sdk_fake_gateway.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from sdk_fake_gateway import FakeGateway, FakeVoiceService, Script, StartGateway
from voicegw.v1 import voice_pb2_grpc


@pytest.fixture
async def fake_gateway() -> AsyncIterator[StartGateway]:
    """Starts fake gateways on demand (`await fake_gateway(Script(...))`); stops them after."""
    servers: list[grpc.aio.Server] = []

    async def start(script: Script | None = None) -> FakeGateway:
        server = grpc.aio.server()
        service = FakeVoiceService(script or Script())
        voice_pb2_grpc.add_VoiceServiceServicer_to_server(service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        return FakeGateway(f"127.0.0.1:{port}", service)

    yield start
    for server in servers:
        await server.stop(None)
