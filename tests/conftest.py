"""Shared fixtures: a real PostgreSQL database per test session, organisations and API keys.

The server is `DATABASE_URL` when set (CI, or a developer's own PostgreSQL), else this checkout's
embedded test server, shared by concurrent sessions and kept apart from the development one. On it
every session creates its own database (`vgtest_<pid>_<random>`), migrates it and drops it at the
end, so sessions never see each other's rows. The embedded data dir is not under pytest's tmp
tree: that tree is 0700 and, running as root, the postgres user could not reach it without
loosening permissions there (design §8).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from gateway.auth import IssuedKey, create_api_key
from gateway.db import Database, create_database, drop_database, with_database
from gateway.storage import orgs
from gateway.storage.embedded import EmbeddedPostgres, default_base_dir
from gateway.storage.orgs import Organization

REPO = Path(__file__).resolve().parents[1]
TEST_PEPPER = "test-pepper-" + "x" * 20
_TEST_DB = re.compile(r"^vgtest_(\d+)_[0-9a-f]+$")

MakeDatabase = Callable[[], Awaitable[Database]]


def _test_pgdata() -> Path:
    digest = hashlib.sha256(str(REPO).encode()).hexdigest()[:12]
    return default_base_dir() / f"tests-{digest}" / "pgdata"


@pytest.fixture(scope="session")
async def pg_server() -> AsyncIterator[str]:
    """A superuser DSN of the session's PostgreSQL server (maintenance database)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    embedded = EmbeddedPostgres(_test_pgdata(), durable=False)
    await asyncio.to_thread(embedded.acquire)
    try:
        await _drop_orphans(embedded.dsn())
        yield embedded.dsn()
    finally:
        await asyncio.to_thread(embedded.release)


async def _drop_orphans(server_dsn: str) -> None:
    """Drop databases left by test sessions that were killed (their pid is gone)."""
    conn = await asyncpg.connect(server_dsn)
    try:
        names = [r[0] for r in await conn.fetch("SELECT datname FROM pg_database")]
    finally:
        await conn.close()
    for name in names:
        match = _TEST_DB.match(name)
        if match and not _alive(int(match[1])):
            await drop_database(server_dsn, name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
async def make_database(pg_server: str) -> AsyncIterator[MakeDatabase]:
    """Factory for extra fresh, migrated databases (dropped at session end)."""
    made: list[tuple[str, Database]] = []

    async def make(*, migrate: bool = True) -> Database:
        name = f"vgtest_{os.getpid()}_{secrets.token_hex(4)}"
        await create_database(pg_server, name)
        db = await Database.connect(with_database(pg_server, name), max_size=10)
        made.append((name, db))
        if migrate:
            await db.migrate()
        return db

    yield make
    for name, db in made:
        await db.close()
        await drop_database(pg_server, name)


@pytest.fixture(scope="session")
async def database(make_database: MakeDatabase) -> Database:
    """The session's migrated database (shared by tests: use unique names, e.g. `org`)."""
    return await make_database()


@pytest.fixture
def pepper() -> str:
    return TEST_PEPPER


@pytest.fixture
async def org(database: Database) -> Organization:
    """A fresh organisation per test, so tests sharing the database never collide."""
    return await orgs.create(database.pool, f"org-{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def api_key(database: Database, org: Organization, pepper: str) -> IssuedKey:
    """A `voice` key of `org`, hashed with `pepper`; `.key` is the full secret key."""
    return await create_api_key(database.pool, pepper, org.id, label="test")
