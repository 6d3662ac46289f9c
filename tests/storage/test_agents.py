"""Agents: immutable versions, a current pointer, and names scoped to one organisation."""

from __future__ import annotations

import asyncio

import pytest

from gateway.storage import agents, orgs
from gateway.storage.orgs import Organization


async def test_each_save_is_a_new_current_version(database, org: Organization) -> None:
    pool = database.pool
    assert await agents.create_or_new_version(pool, org.id, "reception", {"greeting": "Hi"}) == 1
    assert await agents.create_or_new_version(pool, org.id, "reception", {"greeting": "Hey"}) == 2
    current = await agents.get_current(pool, org.id, "reception")
    assert current is not None
    assert (current.name, current.version, current.config) == ("reception", 2, {"greeting": "Hey"})
    first = await agents.get_version(pool, org.id, "reception", 1)
    assert first is not None and first.config == {"greeting": "Hi"} and first.id == current.id
    assert await agents.get_version(pool, org.id, "reception", 3) is None


async def test_rollback_then_save_continues_numbering(database, org: Organization) -> None:
    pool = database.pool
    for n in range(3):
        await agents.create_or_new_version(pool, org.id, "a", {"n": n})
    assert await agents.set_current_version(pool, org.id, "a", 1)
    assert (await agents.get_current(pool, org.id, "a")).config == {"n": 0}  # type: ignore[union-attr]
    assert not await agents.set_current_version(pool, org.id, "a", 9)
    assert await agents.create_or_new_version(pool, org.id, "a", {"n": 3}) == 4
    assert [v for v, _ in await agents.list_versions(pool, org.id, "a")] == [1, 2, 3, 4]


async def test_concurrent_saves_get_distinct_versions(database, org: Organization) -> None:
    saves = [
        agents.create_or_new_version(database.pool, org.id, "busy", {"i": i}) for i in range(8)
    ]
    versions = await asyncio.gather(*saves)
    assert sorted(versions) == list(range(1, 9))
    current = await agents.get_current(database.pool, org.id, "busy")
    assert current is not None and current.version == 8


async def test_nested_config_round_trips(database, org: Organization) -> None:
    config = {
        "greeting": "Привет",
        "faq": [{"keywords": ["hours", "open"], "answer": "9 to 5"}],
        "voice": {"rate": 170, "enabled": True, "pitch": None},
    }
    await agents.create_or_new_version(database.pool, org.id, "ru", config)
    current = await agents.get_current(database.pool, org.id, "ru")
    assert current is not None and current.config == config


async def test_another_organisations_agent_is_not_found(database, org: Organization) -> None:
    other = await orgs.create(database.pool, f"{org.name}-other")
    await agents.create_or_new_version(database.pool, org.id, "private", {"x": 1})
    assert await agents.get_current(database.pool, other.id, "private") is None
    assert await agents.get_version(database.pool, other.id, "private", 1) is None
    assert await agents.list_agents(database.pool, other.id) == []
    assert not await agents.set_current_version(database.pool, other.id, "private", 1)
    # Same name in another organisation is another agent.
    assert await agents.create_or_new_version(database.pool, other.id, "private", {"x": 2}) == 1
    mine = await agents.get_current(database.pool, org.id, "private")
    assert mine is not None and mine.config == {"x": 1}


async def test_list_agents(database, org: Organization) -> None:
    for name in ("zeta", "alpha", "alpha"):
        await agents.create_or_new_version(database.pool, org.id, name, {})
    listed = await agents.list_agents(database.pool, org.id)
    assert [(a.name, a.current_version, a.public) for a in listed] == [
        ("alpha", 2, False),
        ("zeta", 1, False),
    ]


async def test_empty_name_is_rejected(database, org: Organization) -> None:
    with pytest.raises(ValueError):
        await agents.create_or_new_version(database.pool, org.id, " ", {})
