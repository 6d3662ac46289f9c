"""Agents and their immutable config versions, per organisation.

Saving a config always creates a new version and makes it current; calls record the version they
ran, so what an old call did stays explainable after the agent changes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.storage._db import Queryable, transaction


@dataclass(frozen=True, slots=True)
class AgentRecord:
    """One version of an agent: what a call needs to build its pipeline."""

    id: uuid.UUID
    name: str
    version: int
    config: dict[str, Any]
    org_id: uuid.UUID
    public: bool
    # The owning organisation's concurrent-call limit (None: the gateway default), read in the
    # same query so admitting a call costs one round trip.
    org_max_concurrent_calls: int | None = None


@dataclass(frozen=True, slots=True)
class AgentSummary:
    id: uuid.UUID
    name: str
    current_version: int
    public: bool
    created_at: datetime
    updated_at: datetime


def _record(row: Any) -> AgentRecord:
    return AgentRecord(
        id=row["id"],
        name=row["name"],
        version=row["version"],
        config=row["config"],
        org_id=row["org_id"],
        public=row["public"],
        org_max_concurrent_calls=row.get("max_concurrent_calls"),
    )


async def create_or_new_version(
    db: Queryable, org_id: uuid.UUID, name: str, config: dict[str, Any]
) -> int:
    """Store `config` as the next version of agent `name` (creating the agent); returns it.

    The upsert locks the agent row first; the next number is read by a later statement, whose
    fresh snapshot sees versions committed by whoever held the lock before us. (Computing it
    inside the upsert would use the snapshot from before the wait and collide.)
    """
    if not name.strip():
        raise ValueError("agent name must not be empty")
    async with transaction(db) as conn:
        agent_id = await conn.fetchval(
            """
            INSERT INTO agents (org_id, name, current_version) VALUES ($1, $2, 1)
            ON CONFLICT (org_id, name) DO UPDATE SET current_version = agents.current_version
            RETURNING id
            """,
            org_id,
            name,
        )
        version: int = await conn.fetchval(
            "SELECT coalesce(max(version), 0) + 1 FROM agent_versions WHERE agent_id = $1",
            agent_id,
        )
        await conn.execute(
            "INSERT INTO agent_versions (agent_id, version, config) VALUES ($1, $2, $3)",
            agent_id,
            version,
            config,
        )
        await conn.execute(
            "UPDATE agents SET current_version = $2 WHERE id = $1", agent_id, version
        )
    return version


async def get_current(db: Queryable, org_id: uuid.UUID, name: str) -> AgentRecord | None:
    """The current version of `name` in `org_id`; another organisation's agent is not found."""
    row = await db.fetchrow(
        """
        SELECT a.id, a.name, a.org_id, a.public, v.version, v.config, o.max_concurrent_calls
        FROM agents a JOIN agent_versions v ON v.agent_id = a.id AND v.version = a.current_version
        JOIN organizations o ON o.id = a.org_id
        WHERE a.org_id = $1 AND a.name = $2
        """,
        org_id,
        name,
    )
    return _record(row) if row else None


async def get_version(
    db: Queryable, org_id: uuid.UUID, name: str, version: int
) -> AgentRecord | None:
    row = await db.fetchrow(
        """
        SELECT a.id, a.name, a.org_id, a.public, v.version, v.config
        FROM agents a JOIN agent_versions v ON v.agent_id = a.id AND v.version = $3
        WHERE a.org_id = $1 AND a.name = $2
        """,
        org_id,
        name,
        version,
    )
    return _record(row) if row else None


async def set_current_version(db: Queryable, org_id: uuid.UUID, name: str, version: int) -> bool:
    """Roll back or forward to an existing version; False if the agent or version is unknown."""
    status = await db.execute(
        """
        UPDATE agents a SET current_version = $3
        WHERE a.org_id = $1 AND a.name = $2
          AND EXISTS (SELECT 1 FROM agent_versions v WHERE v.agent_id = a.id AND v.version = $3)
        """,
        org_id,
        name,
        version,
    )
    return bool(status != "UPDATE 0")


async def list_agents(db: Queryable, org_id: uuid.UUID) -> list[AgentSummary]:
    rows = await db.fetch(
        """
        SELECT a.id, a.name, a.current_version, a.public, a.created_at,
               v.created_at AS updated_at
        FROM agents a JOIN agent_versions v ON v.agent_id = a.id AND v.version = a.current_version
        WHERE a.org_id = $1
        ORDER BY a.name
        """,
        org_id,
    )
    return [
        AgentSummary(
            r["id"], r["name"], r["current_version"], r["public"], r["created_at"], r["updated_at"]
        )
        for r in rows
    ]


async def list_versions(db: Queryable, org_id: uuid.UUID, name: str) -> list[tuple[int, datetime]]:
    rows = await db.fetch(
        """
        SELECT v.version, v.created_at
        FROM agents a JOIN agent_versions v ON v.agent_id = a.id
        WHERE a.org_id = $1 AND a.name = $2
        ORDER BY v.version
        """,
        org_id,
        name,
    )
    return [(r["version"], r["created_at"]) for r in rows]


@dataclass(frozen=True, slots=True)
class PublicAgent:
    """An agent anonymous web visitors may call, and the limits that protect its owner."""

    agent_id: uuid.UUID
    org_id: uuid.UUID
    org_name: str
    name: str
    origins: tuple[str, ...]
    max_concurrent: int
    daily_budget_secs: int


async def set_widget(
    db: Queryable,
    org_id: uuid.UUID,
    name: str,
    *,
    public: bool,
    origins: list[str] | tuple[str, ...] = (),
    max_concurrent: int = 2,
    daily_budget_secs: int = 3600,
) -> bool:
    """Marks an agent public (or not) for the browser widget; False if there is no such agent."""
    status = await db.execute(
        """UPDATE agents SET public = $3, widget_origins = $4::text[],
                  widget_max_concurrent = $5, widget_daily_budget_secs = $6
           WHERE org_id = $1 AND name = $2""",
        org_id,
        name,
        public,
        [o.rstrip("/") for o in origins],
        max_concurrent,
        daily_budget_secs,
    )
    return bool(status == "UPDATE 1")


async def find_public(db: Queryable, org_name: str, name: str) -> PublicAgent | None:
    """The public agent `name` of organisation `org_name` (None when absent or not public,
    one answer for both, so the widget endpoint cannot be used to probe names)."""
    row = await db.fetchrow(
        """SELECT a.id, a.org_id, o.name AS org_name, a.name, a.widget_origins,
                  a.widget_max_concurrent, a.widget_daily_budget_secs
           FROM agents a JOIN organizations o ON o.id = a.org_id
           WHERE o.name = $1 AND a.name = $2 AND a.public AND NOT o.suspended""",
        org_name,
        name,
    )
    if row is None:
        return None
    return PublicAgent(
        row["id"],
        row["org_id"],
        row["org_name"],
        row["name"],
        tuple(row["widget_origins"]),
        row["widget_max_concurrent"],
        row["widget_daily_budget_secs"],
    )


async def is_public_origin(db: Queryable, origin: str) -> bool:
    """Whether any public agent accepts `origin` (CORS preflight, before the agent is known)."""
    return bool(
        await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM agents WHERE public AND $1 = ANY (widget_origins))",
            origin.rstrip("/"),
        )
    )


async def webrtc_seconds_since(db: Queryable, agent_id: uuid.UUID, since: datetime) -> int:
    """Seconds of the agent's ended WebRTC calls that started since `since`.

    Live calls are the caller's to add (it knows which are really live): a row left `active` by
    a crashed process must not eat the budget for the rest of the day.
    """
    value = await db.fetchval(
        """SELECT COALESCE(SUM(duration_ms), 0) / 1000 FROM calls
           WHERE agent_id = $1 AND door = 'webrtc' AND started_at >= $2 AND status = 'ended'""",
        agent_id,
        since,
    )
    return int(value or 0)
