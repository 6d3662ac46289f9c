"""Numbered SQL migrations, each applied once, safely when several replicas start together.

The files are package data of `migrations` (`NNNN_name.sql`), so an installed gateway carries its
schema. A session-level advisory lock serialises runners across processes; each file runs in its
own transaction together with its `schema_migrations` row, so a failure leaves no half-applied
file. The file's SHA-256 is recorded: editing a migration after it was applied is reported
instead of silently diverging from what the database really holds.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

# Any constant works; this one is "voicegw" in ASCII, so it is recognisable in pg_locks.
ADVISORY_LOCK_KEY = 0x766F6963656777
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The migration files or the database's migration history are inconsistent."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def discover(package: str = "migrations") -> list[Migration]:
    """The package's migrations in order; a duplicate version number is an error."""
    found: dict[int, Migration] = {}
    for entry in resources.files(package).iterdir():
        match = _NAME.match(entry.name)
        if not match or not entry.is_file():
            continue
        migration = Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8"))
        if migration.version in found:
            other = found[migration.version].label
            raise MigrationError(f"two migrations numbered {migration.version}: {other}, {entry}")
        found[migration.version] = migration
    return [found[v] for v in sorted(found)]


async def apply_migrations(conn: Any, migrations: list[Migration] | None = None) -> list[str]:
    """Apply what is missing on `conn` (an asyncpg connection); returns the labels applied."""
    pending = discover() if migrations is None else migrations
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(_BOOTSTRAP)
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        done = {row["version"]: row for row in rows}
        for migration in pending:
            row = done.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.label} changed after it was applied to this "
                        f"database; add a new migration instead (or recreate a dev database)"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied.append(migration.label)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    return applied
