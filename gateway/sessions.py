"""The call registry of this process: identify and admit calls, hold them, end them all.

Every door asks `SessionManager.open` for a Session, so capacity limits, tenancy and draining are
decided once, for all doors. Refusals are door-neutral (`SessionRefused` with a gRPC code name and
an ErrorInfo reason); each door maps them to its own protocol.

Capacity is counted in this process: `max_sessions` calls in all, and per organisation its own
limit or `org_max_calls`. The check and the registration happen with no await in between, so
concurrent opens can never overshoot a limit.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from loguru import logger

from billing.gateway_client import CallBilling
from billing.spool import UsageSpool
from gateway.call_metering import AdmissionRefused, CallMetering, MeteringPolicy
from gateway.session import ABANDON_WAIT_SECS, CallIdentity, CallStore, Session, SessionPolicy
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
    # The organisation's own concurrent-call limit; None means the manager's `org_max_calls`.
    org_call_limit: int | None = None


class AgentDirectory(Protocol):
    async def current_agent(self, org_id: uuid.UUID, name: str) -> AgentRecord | None:
        """The agent's current version within one organisation (with the organisation's
        call limit, fetched together so admission costs one query), or None."""


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


LoadListener = Callable[[int, int], None]
"""Told `(active, max_sessions)` whenever either changes; see gateway/health.py."""


class SessionManager:
    def __init__(
        self,
        *,
        engines: Engines,
        store: CallStore,
        agents: AgentDirectory,
        max_sessions: int,
        org_max_calls: int = 20,
        policy: SessionPolicy | None = None,
        on_load: LoadListener | None = None,
        billing: CallBilling | None = None,
        spool: UsageSpool | None = None,
        metering: MeteringPolicy | None = None,
    ) -> None:
        self._engines = engines
        self._store = store
        self._agents = agents
        self._on_load = on_load
        self._max_sessions = max_sessions
        self.org_max_calls = org_max_calls
        self.policy = policy or SessionPolicy()  # for calls opened from now on
        # None: calls are not metered (component tests); the gateway always meters.
        self.billing = billing
        self.spool = spool
        self.metering = metering or MeteringPolicy()
        self.sessions: dict[uuid.UUID, Session] = {}
        self._per_org: dict[uuid.UUID, int] = {}
        self._abandoned: set[asyncio.Task[None]] = set()
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def max_sessions(self) -> int:
        return self._max_sessions

    @max_sessions.setter
    def max_sessions(self, value: int) -> None:
        """Changing the limit at run time re-evaluates "full" for health at once."""
        self._max_sessions = value
        self._report_load()

    def org_calls(self, org_id: uuid.UUID) -> int:
        """Live calls of one organisation in this process."""
        return self._per_org.get(org_id, 0)

    def _report_load(self) -> None:
        if self._on_load is not None:
            self._on_load(len(self.sessions), self._max_sessions)

    async def open(self, request: CallRequest) -> Session:
        """Identify and admit; the Session returned is registered and must be run."""
        if self.draining:
            raise SessionRefused("UNAVAILABLE", "the gateway is shutting down; call again later")
        record = await self._agents.current_agent(request.org_id, request.agent_name)
        if record is None:
            # The same answer for "no such agent" and "another tenant's agent".
            raise SessionRefused("NOT_FOUND", f"agent {request.agent_name!r} not found")
        # From here to the registration below nothing awaits, so the counts checked are the
        # counts registered against. The organisation's own limit comes first: it is the
        # answer its caller can act on, whatever other tenants are doing at that moment.
        org_limit = record.org_call_limit or self.org_max_calls
        if self.org_calls(request.org_id) >= org_limit:
            raise SessionRefused(
                "RESOURCE_EXHAUSTED",
                f"organisation {request.org_name!r} is at its limit of {org_limit} concurrent "
                "calls; try again when a call ends",
                "CAPACITY",
            )
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
            policy=self.policy,
            on_finished=self._forget,
        )
        self.sessions[session.call_id] = session
        self._per_org[request.org_id] = self.org_calls(request.org_id) + 1
        self._idle.clear()
        self._report_load()
        if self.billing is not None:
            # Registered first, so capacity is held while billing is asked (an await).
            metering = CallMetering(
                self.billing, self.spool, self.metering, request.org_id, session.call_id
            )
            try:
                await metering.admit()
            except AdmissionRefused as refused:
                self._forget(session)
                raise SessionRefused(refused.code, refused.message, refused.reason) from None
            except BaseException:
                self._forget(session)
                raise
            session.metering = metering
        return session

    def _forget(self, session: Session) -> None:
        if self.sessions.pop(session.call_id, None) is None:
            return
        org_id = session.identity.org_id
        remaining = self.org_calls(org_id) - 1
        if remaining > 0:
            self._per_org[org_id] = remaining
        else:
            self._per_org.pop(org_id, None)
        if session.abandoned is not None and not session.abandoned.done():
            self._abandoned.add(session.abandoned)
            session.abandoned.add_done_callback(self._abandoned.discard)
        if not self.sessions:
            self._idle.set()
        self._report_load()

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
        await self._reap_abandoned()

    async def _reap_abandoned(self, rounds: int = 3) -> None:
        """Cancels the pipelines calls left behind, again, a bounded number of times.

        Pipecat swallows a first cancellation in places (the runner's shutdown wait, a worker's
        own cancel path), so one that recovered from whatever blocked it may need a few more
        before it is gone. One still stuck is reported: `asyncio.run` cancels leftover tasks at
        exit and waits for them without a bound, so it would hold up the process's exit.
        """
        for _ in range(rounds):
            pending = [t for t in self._abandoned if not t.done()]
            if not pending:
                return
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=ABANDON_WAIT_SECS)
        left = sum(1 for t in self._abandoned if not t.done())
        if left:
            logger.error(f"{left} abandoned call pipeline(s) still running at shutdown")
