"""The call registry of this process: identify and admit calls, hold them, end them all.

Every door asks `SessionManager.open` for a Session, so capacity limits, tenancy and draining are
decided once, for all doors. Refusals are door-neutral (`SessionRefused` with a gRPC code name and
an ErrorInfo reason); each door maps them to its own protocol.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.session import CallIdentity, CallStore, Session
from pipelines.agent_config import AgentConfig
from pipelines.builder import Engines
from transports.events import EndReason, EndRequest


class SessionRefused(Exception):
    """A call refused before it started."""

    def __init__(self, code: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code  # gRPC status code name, e.g. "NOT_FOUND"
        self.message = message
        self.reason = reason  # google.rpc.ErrorInfo reason, e.g. "CAPACITY"


@dataclass(frozen=True, slots=True)
class AgentRecord:
    agent_id: uuid.UUID
    name: str
    version: int
    config: dict[str, Any]


class AgentDirectory(Protocol):
    async def current_agent(self, org_id: uuid.UUID, name: str) -> AgentRecord | None:
        """The agent's current version within one organisation, or None."""


@dataclass(slots=True)
class CallRequest:
    org_id: uuid.UUID
    org_name: str
    agent_name: str
    door: str
    input_format: str
    output_format: str
    output_rate: int
    caller_number: str = ""
    caller_name: str = ""
    caller_metadata: dict[str, str] = field(default_factory=dict)
    language: str = ""


class SessionManager:
    def __init__(
        self,
        *,
        engines: Engines,
        store: CallStore,
        agents: AgentDirectory,
        max_sessions: int,
        inbound_timeout_secs: float = 10.0,
    ) -> None:
        self._engines = engines
        self._store = store
        self._agents = agents
        self.max_sessions = max_sessions
        self.inbound_timeout_secs = inbound_timeout_secs
        self.sessions: dict[uuid.UUID, Session] = {}
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def open(self, request: CallRequest) -> Session:
        """Identify and admit; the Session returned is registered and must be run."""
        if self.draining:
            raise SessionRefused("UNAVAILABLE", "the gateway is shutting down; call again later")
        record = await self._agents.current_agent(request.org_id, request.agent_name)
        if record is None:
            # The same answer for "no such agent" and "another tenant's agent".
            raise SessionRefused("NOT_FOUND", f"agent {request.agent_name!r} not found")
        if len(self.sessions) >= self.max_sessions:
            raise SessionRefused(
                "RESOURCE_EXHAUSTED",
                f"the gateway is at capacity ({self.max_sessions} calls); try again shortly",
                "CAPACITY",
            )
        identity = CallIdentity(
            org_id=request.org_id,
            org_name=request.org_name,
            agent_id=record.agent_id,
            agent_name=record.name,
            agent_version=record.version,
            agent=AgentConfig.model_validate(record.config),
            caller_number=request.caller_number,
            caller_name=request.caller_name,
            caller_metadata=request.caller_metadata,
            language=request.language,
        )
        session = Session(
            identity,
            self._engines,
            self._store,
            door_name=request.door,
            input_format=request.input_format,
            output_format=request.output_format,
            output_rate=request.output_rate,
            inbound_timeout_secs=self.inbound_timeout_secs,
            on_finished=self._forget,
        )
        self.sessions[session.call_id] = session
        self._idle.clear()
        return session

    def _forget(self, session: Session) -> None:
        self.sessions.pop(session.call_id, None)
        if not self.sessions:
            self._idle.set()

    def hang_up(self, call_id: uuid.UUID, reason: EndReason, detail: str = "") -> bool:
        session = self.sessions.get(call_id)
        if session is None:
            return False
        session.request_end(EndRequest(reason, detail))
        return True

    async def shutdown(self, grace_secs: float) -> None:
        """Stops admitting; calls get `grace_secs` to finish, then end with `shutdown`."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), grace_secs)
        except TimeoutError:
            pass
        for session in list(self.sessions.values()):
            session.request_end(EndRequest(EndReason.SHUTDOWN, "gateway shutting down"))
        await self._idle.wait()
