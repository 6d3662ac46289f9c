"""Organisations' concurrent-call limits: stored, validated, and read with the agent."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from gateway.db import Database
from gateway.storage import agents, orgs
from gateway.storage.orgs import Organization


async def test_call_limit_round_trip(database: Database, org: Organization) -> None:
    assert org.max_concurrent_calls is None
    assert await orgs.set_call_limit(database.pool, org.id, 4)
    stored = await orgs.get(database.pool, org.id)
    assert stored is not None and stored.max_concurrent_calls == 4
    assert await orgs.set_call_limit(database.pool, org.id, None)
    stored = await orgs.get_by_name(database.pool, org.name)
    assert stored is not None and stored.max_concurrent_calls is None


async def test_call_limit_of_an_unknown_org_is_false(database: Database) -> None:
    assert not await orgs.set_call_limit(database.pool, uuid.uuid4(), 2)


async def test_call_limit_below_one_is_refused(database: Database, org: Organization) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        await orgs.set_call_limit(database.pool, org.id, 0)
    # The database holds the same line for anyone writing it directly.
    with pytest.raises(asyncpg.CheckViolationError):
        await database.pool.execute(
            "UPDATE organizations SET max_concurrent_calls = 0 WHERE id = $1", org.id
        )


async def test_current_agent_carries_its_organisations_limit(
    database: Database, org: Organization
) -> None:
    await agents.create_or_new_version(database.pool, org.id, "desk", {"name": "desk"})
    record = await agents.get_current(database.pool, org.id, "desk")
    assert record is not None and record.org_max_concurrent_calls is None
    await orgs.set_call_limit(database.pool, org.id, 7)
    record = await agents.get_current(database.pool, org.id, "desk")
    assert record is not None and record.org_max_concurrent_calls == 7
