"""The call registry: a row per call from start to end, its transcript and its message.

A call is inserted 'active' when it starts, so every replica can list and hang up live calls, and
finished exactly once: the end state, transcript turns and message are one transaction guarded
by `status = 'active'`, so a retried or concurrent finish never writes a second transcript.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from gateway.storage._db import Queryable, transaction
from gateway.storage.errors import NotFound

DOORS = frozenset({"grpc", "webrtc", "sip", "gsm"})


class TurnData(Protocol):
    """A transcript turn as the session's recorder produces it (attributes, not a class)."""

    @property
    def role(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def started_ms(self) -> int: ...
    @property
    def ended_ms(self) -> int: ...
    @property
    def heard_text(self) -> str | None: ...
    @property
    def interrupted(self) -> bool: ...


class MessageData(Protocol):
    """A message taken during the call: its text and, optionally, the caller's recording."""

    @property
    def text(self) -> str: ...
    @property
    def audio(self) -> bytes | None: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def duration_ms(self) -> int: ...


@dataclass(frozen=True, slots=True)
class TurnRecord:
    role: str  # "user" | "agent"
    text: str
    started_ms: int
    ended_ms: int
    heard_text: str | None = None
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class MessageRecord:
    text: str
    audio: bytes | None
    sample_rate: int
    duration_ms: int
    audio_encoding: str = "linear16"


@dataclass(frozen=True, slots=True)
class StoredTurn:
    seq: int
    role: str
    text: str
    heard_text: str | None
    interrupted: bool
    started_ms: int | None
    ended_ms: int | None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: uuid.UUID
    call_id: uuid.UUID
    org_id: uuid.UUID
    text: str
    audio: bytes | None
    audio_encoding: str | None
    sample_rate: int | None
    duration_ms: int | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CallRecord:
    id: uuid.UUID
    org_id: uuid.UUID
    agent_id: uuid.UUID | None
    agent_version: int | None
    door: str
    caller_number: str | None
    caller_name: str | None
    caller_metadata: dict[str, Any]
    input_format: str | None
    output_format: str | None
    status: str
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime | None
    duration_ms: int | None
    end_reason: str | None
    end_detail: str | None
    latency: dict[str, Any] | None
    heartbeat_at: datetime | None
    replica: str | None


_CALL_COLUMNS = ", ".join(CallRecord.__dataclass_fields__)


def _call(row: Any) -> CallRecord:
    return CallRecord(**{name: row[name] for name in CallRecord.__dataclass_fields__})


async def start_call(
    db: Queryable,
    *,
    org_id: uuid.UUID,
    door: str,
    call_id: uuid.UUID | None = None,
    agent_id: uuid.UUID | None = None,
    agent_version: int | None = None,
    caller_number: str | None = None,
    caller_name: str | None = None,
    caller_metadata: dict[str, Any] | None = None,
    input_format: str | None = None,
    output_format: str | None = None,
    started_at: datetime | None = None,
    replica: str | None = None,
) -> uuid.UUID:
    """Register a live call; returns its id (the caller's, so logs can use it before this)."""
    if door not in DOORS:
        raise ValueError(f"unknown door {door!r}")
    call_id = call_id or uuid.uuid4()
    await db.execute(
        """
        INSERT INTO calls (id, org_id, agent_id, agent_version, door, caller_number, caller_name,
                           caller_metadata, input_format, output_format, status, started_at,
                           heartbeat_at, replica)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'active', coalesce($11, now()),
                now(), $12)
        """,
        call_id,
        org_id,
        agent_id,
        agent_version,
        door,
        caller_number,
        caller_name,
        caller_metadata or {},
        input_format,
        output_format,
        started_at,
        replica,
    )
    return call_id


async def mark_answered(db: Queryable, call_id: uuid.UUID, at: datetime | None = None) -> None:
    await db.execute(
        "UPDATE calls SET answered_at = coalesce($2, now()) WHERE id = $1 AND answered_at IS NULL",
        call_id,
        at,
    )


async def heartbeat(db: Queryable, call_ids: Sequence[uuid.UUID]) -> int:
    """Refresh the heartbeat of this replica's live calls; returns how many were still active."""
    status: str = await db.execute(
        "UPDATE calls SET heartbeat_at = now() WHERE id = ANY($1::uuid[]) AND status = 'active'",
        list(call_ids),
    )
    return int(status.rsplit(" ", 1)[-1])


async def finish_call(
    db: Queryable,
    call_id: uuid.UUID,
    *,
    ended_at: datetime,
    duration_ms: int,
    end_reason: str,
    end_detail: str | None = None,
    latency: dict[str, Any] | None = None,
    turns: Sequence[TurnData] = (),
    message: MessageData | None = None,
) -> bool:
    """End the call and store its transcript and message, all or nothing, exactly once.

    Returns True when this call wrote the end, False when the call had already ended (the
    second finish is a no-op). `NotFound` if no such call was started.
    """
    async with transaction(db) as conn:
        org_id = await conn.fetchval(
            """
            UPDATE calls
            SET status = 'ended', ended_at = $2, duration_ms = $3, end_reason = $4,
                end_detail = $5, latency = $6
            WHERE id = $1 AND status = 'active'
            RETURNING org_id
            """,
            call_id,
            ended_at,
            duration_ms,
            end_reason,
            end_detail,
            latency,
        )
        if org_id is None:
            if await conn.fetchval("SELECT 1 FROM calls WHERE id = $1", call_id) is None:
                raise NotFound(f"no call {call_id}")
            return False
        if turns:
            await conn.execute(
                """
                INSERT INTO transcript_turns
                    (call_id, seq, role, text, heard_text, interrupted, started_ms, ended_ms)
                SELECT $1, t.* FROM unnest($2::int[], $3::text[], $4::text[], $5::text[],
                                           $6::bool[], $7::int[], $8::int[]) AS t
                """,
                call_id,
                list(range(len(turns))),
                [t.role for t in turns],
                [t.text for t in turns],
                [t.heard_text for t in turns],
                [t.interrupted for t in turns],
                [t.started_ms for t in turns],
                [t.ended_ms for t in turns],
            )
        if message is not None:
            await conn.execute(
                """
                INSERT INTO messages (call_id, org_id, text, audio, audio_encoding, sample_rate,
                                      duration_ms)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                """,
                call_id,
                org_id,
                message.text,
                message.audio or None,
                getattr(message, "audio_encoding", "linear16") if message.audio else None,
                message.sample_rate if message.audio else None,
                message.duration_ms if message.audio else None,
            )
        return True


async def get_call(
    db: Queryable, call_id: uuid.UUID, *, org_id: uuid.UUID | None = None
) -> CallRecord | None:
    """A call by id; with `org_id`, another organisation's call is not found."""
    row = await db.fetchrow(
        f"SELECT {_CALL_COLUMNS} FROM calls WHERE id = $1 AND ($2::uuid IS NULL OR org_id = $2)",
        call_id,
        org_id,
    )
    return _call(row) if row else None


async def list_calls(
    db: Queryable,
    org_id: uuid.UUID,
    *,
    limit: int = 50,
    before: tuple[datetime, uuid.UUID] | None = None,
    agent_id: uuid.UUID | None = None,
    status: str | None = None,
) -> list[CallRecord]:
    """Newest first; pass the last row's (started_at, id) as `before` for the next page."""
    before_at, before_id = before if before else (None, None)
    rows = await db.fetch(
        f"""
        SELECT {_CALL_COLUMNS} FROM calls
        WHERE org_id = $1
          AND ($2::timestamptz IS NULL OR (started_at, id) < ($2, $3::uuid))
          AND ($4::uuid IS NULL OR agent_id = $4)
          AND ($5::text IS NULL OR status = $5)
        ORDER BY started_at DESC, id DESC
        LIMIT $6
        """,
        org_id,
        before_at,
        before_id,
        agent_id,
        status,
        limit,
    )
    return [_call(r) for r in rows]


async def list_turns(db: Queryable, call_id: uuid.UUID) -> list[StoredTurn]:
    rows = await db.fetch(
        """
        SELECT seq, role, text, heard_text, interrupted, started_ms, ended_ms
        FROM transcript_turns WHERE call_id = $1 ORDER BY seq
        """,
        call_id,
    )
    return [StoredTurn(**dict(r)) for r in rows]


async def get_message(db: Queryable, call_id: uuid.UUID) -> StoredMessage | None:
    row = await db.fetchrow(
        """
        SELECT id, call_id, org_id, text, audio, audio_encoding, sample_rate, duration_ms,
               created_at
        FROM messages WHERE call_id = $1
        """,
        call_id,
    )
    return StoredMessage(**dict(row)) if row else None
