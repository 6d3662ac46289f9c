"""Organisations: the tenants. Every other row belongs to exactly one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.storage._db import Queryable
from gateway.storage.errors import AlreadyExists

_COLUMNS = "id, name, suspended, created_at, max_concurrent_calls, billing_suspended, service"


@dataclass(frozen=True, slots=True)
class Organization:
    id: uuid.UUID
    name: str
    suspended: bool
    created_at: datetime
    # None: the gateway's `org_max_calls` setting applies.
    max_concurrent_calls: int | None = None
    # Owes money: new calls are refused, but its keys still work so that it can pay.
    billing_suspended: bool = False
    # Its keys act for the gateway (billing:gateway), not for a tenant.
    service: bool = False


def _row(row: Any) -> Organization:
    return Organization(
        row["id"],
        row["name"],
        row["suspended"],
        row["created_at"],
        row["max_concurrent_calls"],
        row["billing_suspended"],
        row["service"],
    )


async def create(db: Queryable, name: str, *, service: bool = False) -> Organization:
    """Create an organisation (a `service` one acts for the gateway); `AlreadyExists` if the
    name is taken."""
    if not name.strip():
        raise ValueError("organisation name must not be empty")
    try:
        row = await db.fetchrow(
            f"INSERT INTO organizations (name, service) VALUES ($1, $2) RETURNING {_COLUMNS}",
            name,
            service,
        )
    except asyncpg.UniqueViolationError:
        raise AlreadyExists(f"organisation {name!r} already exists") from None
    return _row(row)


async def get(db: Queryable, org_id: uuid.UUID) -> Organization | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM organizations WHERE id = $1", org_id)
    return _row(row) if row else None


async def get_by_name(db: Queryable, name: str) -> Organization | None:
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM organizations WHERE name = $1", name)
    return _row(row) if row else None


async def set_suspended(db: Queryable, org_id: uuid.UUID, suspended: bool) -> bool:
    """Suspend or reinstate; a suspended organisation's keys stop verifying. False if unknown."""
    status = await db.execute(
        "UPDATE organizations SET suspended = $2 WHERE id = $1", org_id, suspended
    )
    return bool(status != "UPDATE 0")


async def set_call_limit(db: Queryable, org_id: uuid.UUID, limit: int | None) -> bool:
    """Set the organisation's concurrent-call limit; None returns it to the gateway's default.

    Takes effect for the next call each replica admits (the limit is read with the agent when a
    call opens), so no restart is needed. False if the organisation is unknown.
    """
    if limit is not None and limit < 1:
        raise ValueError("a concurrent-call limit must be at least 1")
    status = await db.execute(
        "UPDATE organizations SET max_concurrent_calls = $2 WHERE id = $1", org_id, limit
    )
    return bool(status != "UPDATE 0")
