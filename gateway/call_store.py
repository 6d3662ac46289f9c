"""The Session's persistence, on PostgreSQL: the adapters between `gateway.session` and storage."""

from __future__ import annotations

import uuid
from datetime import datetime

from gateway.session import CallIdentity, CallSummary
from gateway.sessions import AgentRecord
from gateway.storage import agents, calls
from gateway.storage._db import Queryable


class PgCallStore:
    def __init__(self, db: Queryable) -> None:
        self._db = db

    async def call_started(
        self,
        call_id: uuid.UUID,
        identity: CallIdentity,
        door: str,
        input_format: str,
        output_format: str,
        started_at: datetime,
    ) -> None:
        await calls.start_call(
            self._db,
            call_id=call_id,
            org_id=identity.org_id,
            door=door,
            agent_id=identity.agent_id,
            agent_version=identity.agent_version,
            caller_number=identity.caller_number or None,
            caller_name=identity.caller_name or None,
            caller_metadata=identity.caller_metadata,
            input_format=input_format,
            output_format=output_format,
            started_at=started_at,
        )

    async def call_finished(self, summary: CallSummary) -> None:
        await calls.finish_call(
            self._db,
            summary.call_id,
            ended_at=summary.ended_at,
            duration_ms=summary.duration_ms,
            end_reason=summary.end_reason.value,
            end_detail=summary.end_detail or None,
            latency=summary.latency,
            turns=summary.turns,
            message=summary.message,
        )


class PgAgentDirectory:
    def __init__(self, db: Queryable) -> None:
        self._db = db

    async def current_agent(self, org_id: uuid.UUID, name: str) -> AgentRecord | None:
        record = await agents.get_current(self._db, org_id, name)
        if record is None:
            return None
        return AgentRecord(
            record.id,
            record.name,
            record.version,
            dict(record.config),
            org_call_limit=record.org_max_concurrent_calls,
        )
