"""API key rows. Only the prefix (an identifier) and a peppered hash of the secret are stored.

The key format, generation and hashing live in `gateway.auth`; this module never sees a secret.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from gateway.storage._db import Queryable
from gateway.storage.errors import AlreadyExists

_COLUMNS = (
    "k.id, k.org_id, k.prefix, k.secret_hash, k.scopes, k.label, k.created_at, k.revoked_at, "
    "k.last_used_at"
)


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: uuid.UUID
    org_id: uuid.UUID
    prefix: str
    scopes: tuple[str, ...]
    label: str | None
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    secret_hash: str = field(repr=False)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class KeyWithOrg:
    """What verification needs in one round trip: the key and its organisation's state."""

    key: ApiKeyRecord
    org_name: str
    org_suspended: bool
    org_service: bool = False


def _row(row: Any) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row["id"],
        org_id=row["org_id"],
        prefix=row["prefix"],
        scopes=tuple(row["scopes"]),
        label=row["label"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        secret_hash=row["secret_hash"],
    )


async def insert(
    db: Queryable,
    *,
    org_id: uuid.UUID,
    prefix: str,
    secret_hash: str,
    scopes: tuple[str, ...] | list[str],
    label: str | None = None,
) -> ApiKeyRecord:
    """Store a key; `AlreadyExists` when the prefix collides (the caller draws a new one)."""
    try:
        row = await db.fetchrow(
            f"""
            INSERT INTO api_keys AS k (org_id, prefix, secret_hash, scopes, label)
            VALUES ($1, $2, $3, $4, $5)
            RETURNING {_COLUMNS}
            """,
            org_id,
            prefix,
            secret_hash,
            list(scopes),
            label,
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(f"API key prefix {prefix!r} is taken") from None
    return _row(row)


async def list_for_org(
    db: Queryable, org_id: uuid.UUID, *, include_revoked: bool = True
) -> list[ApiKeyRecord]:
    rows = await db.fetch(
        f"""
        SELECT {_COLUMNS} FROM api_keys k
        WHERE k.org_id = $1 AND ($2 OR k.revoked_at IS NULL)
        ORDER BY k.created_at, k.prefix
        """,
        org_id,
        include_revoked,
    )
    return [_row(r) for r in rows]


async def find_by_prefix(db: Queryable, prefix: str) -> ApiKeyRecord | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM api_keys k WHERE k.prefix = $1", prefix)
    return _row(row) if row else None


async def find_with_org(db: Queryable, prefix: str) -> KeyWithOrg | None:
    row = await db.fetchrow(
        f"""
        SELECT {_COLUMNS}, o.name AS org_name, o.suspended AS org_suspended,
               o.service AS org_service
        FROM api_keys k JOIN organizations o ON o.id = k.org_id
        WHERE k.prefix = $1
        """,
        prefix,
    )
    if row is None:
        return None
    return KeyWithOrg(_row(row), row["org_name"], row["org_suspended"], row["org_service"])


async def revoke(db: Queryable, prefix: str, *, org_id: uuid.UUID | None = None) -> bool:
    """Revoke an active key (optionally only within `org_id`); False if none was active."""
    status = await db.execute(
        """
        UPDATE api_keys SET revoked_at = now()
        WHERE prefix = $1 AND revoked_at IS NULL AND ($2::uuid IS NULL OR org_id = $2)
        """,
        prefix,
        org_id,
    )
    return bool(status != "UPDATE 0")


async def touch_last_used(db: Queryable, key_id: uuid.UUID, *, min_interval_s: int = 60) -> None:
    """Record use, at most once per interval: a write per call would be a hot row per key."""
    await db.execute(
        """
        UPDATE api_keys SET last_used_at = now()
        WHERE id = $1
          AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $2))
        """,
        key_id,
        min_interval_s,
    )
