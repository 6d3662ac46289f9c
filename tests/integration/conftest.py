"""A real gateway in the test process: real PostgreSQL, engine worker processes, gRPC on a port."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from voicegw_client import VoiceClient

from billing.ledger import Ledger
from billing.plans import Plans
from gateway.auth import IssuedKey, create_api_key
from gateway.config import Settings
from gateway.db import Database
from gateway.server import Gateway
from gateway.storage import agents, orgs
from pipelines.agent_config import AgentConfig
from tests.conftest import TEST_PEPPER


@dataclass
class Tenant:
    org_id: uuid.UUID
    name: str
    key: str


def gateway_settings(state_dir: Path, **overrides: Any) -> Settings:
    """Settings of an in-process test gateway: loopback, free ports, the test pepper."""
    values: dict[str, Any] = {
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "http_host": "127.0.0.1",
        "http_port": 0,
        "state_dir": state_dir,
        "key_pepper": TEST_PEPPER,
        "stt_workers": 2,
        "max_sessions": 20,
    }
    return Settings.load(None, **(values | overrides))


@pytest.fixture(scope="session")
async def gateway(
    database: Database, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    settings = gateway_settings(Path(tmp_path_factory.mktemp("state")))
    gw = Gateway(settings, database=database)
    await gw.start()
    yield gw
    await gw.stop(grace_secs=1)


async def make_tenant(database: Database, agent_config: AgentConfig | None = None) -> Tenant:
    org = await orgs.create(database.pool, f"org-{uuid.uuid4().hex[:10]}")
    config = agent_config or AgentConfig.default_secretary()
    await agents.create_or_new_version(database.pool, org.id, "secretary", config.to_dict())
    issued: IssuedKey = await create_api_key(database.pool, TEST_PEPPER, org.id, label="test")
    # Unlimited minutes: tests about anything but money should not run out of it.
    await Plans(Ledger(database.pool)).switch_now(org.id, "enterprise")
    return Tenant(org.id, org.name, issued.key)


@pytest.fixture
async def tenant(database: Database) -> Tenant:
    """A fresh organisation with the secretary agent and a voice key."""
    return await make_tenant(database)


@pytest.fixture
async def client(gateway: Gateway, tenant: Tenant) -> AsyncIterator[VoiceClient]:
    async with VoiceClient(f"127.0.0.1:{gateway.grpc_port}", tenant.key) as c:
        yield c
