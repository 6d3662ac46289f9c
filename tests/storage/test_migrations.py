"""Migrations apply once, atomically, and refuse silent drift."""

from __future__ import annotations

import asyncio

import pytest

from gateway.storage.migrate import Migration, MigrationError, apply_migrations, discover


def test_discover_finds_the_numbered_files_in_order() -> None:
    found = discover()
    assert [m.label for m in found][:2] == ["0001_init", "0002_org_call_limit"]
    assert [m.version for m in found] == sorted(m.version for m in found)


async def test_concurrent_migrate_applies_each_file_once(make_database) -> None:
    first = await make_database(migrate=False)
    # A second pool on the same database: two "replicas" starting at the same moment.
    from gateway.db import Database

    second = await Database.connect(first.dsn, max_size=2)
    try:
        results = await asyncio.gather(first.migrate(), second.migrate(), first.migrate())
    finally:
        await second.close()
    applied = [label for result in results for label in result]
    assert applied == [m.label for m in discover()]
    rows = await first.pool.fetch("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in rows] == [m.version for m in discover()]
    assert await first.migrate() == []


async def test_a_failing_migration_leaves_nothing_behind(make_database) -> None:
    db = await make_database(migrate=False)
    good = Migration(1, "good", "CREATE TABLE good_table (id int)")
    bad = Migration(2, "bad", "CREATE TABLE half_table (id int); SELECT 1 / 0")
    async with db.pool.acquire() as conn:
        with pytest.raises(Exception, match="division by zero"):
            await apply_migrations(conn, [good, bad])
        assert await conn.fetchval("SELECT to_regclass('good_table') IS NOT NULL")
        assert await conn.fetchval("SELECT to_regclass('half_table')") is None
        versions = await conn.fetch("SELECT version FROM schema_migrations")
        assert [r["version"] for r in versions] == [1]
        # The advisory lock was released despite the failure: another runner gets through.
        assert await apply_migrations(conn, [good]) == []


async def test_editing_an_applied_migration_is_reported(make_database) -> None:
    db = await make_database(migrate=False)
    async with db.pool.acquire() as conn:
        await apply_migrations(conn, [Migration(1, "one", "CREATE TABLE t1 (id int)")])
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await apply_migrations(conn, [Migration(1, "one", "CREATE TABLE t1 (id bigint)")])


async def test_call_limit_migration_upgrades_existing_organisations(make_database) -> None:
    """An organisation created before 0002 keeps working: its limit is NULL (the default)."""
    db = await make_database(migrate=False)
    init, *rest = discover()
    async with db.pool.acquire() as conn:
        await apply_migrations(conn, [init])
        org_id = await conn.fetchval("INSERT INTO organizations (name) VALUES ('old') RETURNING id")
        await apply_migrations(conn, [init, *rest])
        row = await conn.fetchrow(
            "SELECT max_concurrent_calls FROM organizations WHERE id = $1", org_id
        )
    assert row is not None and row["max_concurrent_calls"] is None
