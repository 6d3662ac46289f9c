"""The gateway's PostgreSQL: a configured server in production, an embedded one in development.

`Database.open(settings)` is the only entry point the app needs. With `DATABASE_URL` it connects
there; without it, it starts (or joins) the embedded server of this project and uses its
`voicegw` database, so `make run` works on a fresh clone with no setup. JSON columns are mapped
to Python objects on every pooled connection, so repositories pass dicts, never JSON strings.
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from gateway.config import Settings
from gateway.storage.embedded import EmbeddedPostgres, default_pg_data_dir
from gateway.storage.migrate import apply_migrations

DEFAULT_DATABASE = "voicegw"


async def init_connection(conn: asyncpg.Connection) -> None:
    """Codecs every connection needs; pass as `init=` if you create a connection yourself."""
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name,
            encoder=lambda value: json.dumps(value, separators=(",", ":")),
            decoder=json.loads,
            schema="pg_catalog",
        )


def with_database(dsn: str, database: str) -> str:
    """The same server URL pointing at another database (query options such as host= kept)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + quote(database, safe="")))


async def create_database(server_dsn: str, name: str) -> bool:
    """Create database `name` unless it exists; returns whether this call created it."""
    conn = await asyncpg.connect(server_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        try:
            await conn.execute(f'CREATE DATABASE "{_ident(name)}"')
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            return False  # another process created it between our check and our CREATE
        return True
    finally:
        await conn.close()


async def drop_database(server_dsn: str, name: str) -> None:
    """Drop database `name`, disconnecting anyone still using it."""
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{_ident(name)}" WITH (FORCE)')
    finally:
        await conn.close()


def _ident(name: str) -> str:
    if not name or '"' in name or "\x00" in name:
        raise ValueError(f"unsupported database name: {name!r}")
    return name


class Database:
    """A connection pool plus, in development, the embedded server it keeps alive."""

    def __init__(
        self, pool: asyncpg.Pool, dsn: str, embedded: EmbeddedPostgres | None = None
    ) -> None:
        self.pool = pool
        self.dsn = dsn
        self.embedded = embedded

    @classmethod
    async def open(cls, settings: Settings, *, database: str = DEFAULT_DATABASE) -> Database:
        """Connect to `DATABASE_URL`, or start/join the embedded server (database `database`)."""
        dsn = settings.database_dsn()
        if dsn:
            return await cls.connect(dsn, max_size=settings.db_pool_size)
        pgdata = settings.pg_data_dir or default_pg_data_dir(settings.state_dir)
        embedded = EmbeddedPostgres(pgdata)
        await asyncio.to_thread(embedded.acquire)
        try:
            await create_database(embedded.dsn(), database)
            return await cls.connect(
                embedded.dsn(database), max_size=settings.db_pool_size, embedded=embedded
            )
        except BaseException:
            await asyncio.to_thread(embedded.release)
            raise

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        embedded: EmbeddedPostgres | None = None,
    ) -> Database:
        pool = await asyncpg.create_pool(
            dsn, min_size=min(min_size, max_size), max_size=max_size, init=init_connection
        )
        return cls(pool, dsn, embedded)

    async def migrate(self) -> list[str]:
        """Apply pending migrations; returns the labels applied (empty when up to date)."""
        async with self.pool.acquire() as conn:
            applied: list[str] = await apply_migrations(conn)
            return applied

    async def close(self) -> None:
        await self.pool.close()
        if self.embedded is not None:
            embedded, self.embedded = self.embedded, None
            await asyncio.to_thread(embedded.release)

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


__all__ = [
    "DEFAULT_DATABASE",
    "Database",
    "create_database",
    "drop_database",
    "init_connection",
    "with_database",
]
