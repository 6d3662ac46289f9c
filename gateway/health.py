"""What this process tells load balancers: serving, full, or draining.

A full gateway refuses every new call with RESOURCE_EXHAUSTED, so it reports NOT_SERVING (gRPC
health for "" and each service, and 503 on /healthz) until a call ends: a balancer that checks
health sends new calls to a replica with room instead of to one that can only refuse. Draining
is permanent: once shutdown starts, nothing can make the process SERVING again.

The SessionManager reports its load synchronously (from `open` and from a session's end), but the
grpc health servicer is async; one small task applies the latest state, so a burst of changes
costs at most one pending update and the last state always wins.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Iterable

from grpc_health.v1 import health, health_pb2

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ServingState(enum.StrEnum):
    SERVING = "serving"
    FULL = "full"
    DRAINING = "draining"


class GatewayHealth:
    """Owns the gRPC HealthServicer's statuses and the state /healthz reports."""

    def __init__(self, services: Iterable[str]) -> None:
        self.servicer = health.aio.HealthServicer()
        self._services = ("", *services)
        self.state = ServingState.SERVING
        self._publisher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Publishes the current state for every service (call once the server is up)."""
        self._publish_soon()
        await self.settled()

    def on_load(self, active: int, maximum: int) -> None:
        """The SessionManager's load changed: full at `maximum`, serving again below it."""
        if self.state is ServingState.DRAINING:
            return
        state = ServingState.FULL if active >= maximum else ServingState.SERVING
        if state is not self.state:
            self.state = state
            self._publish_soon()

    async def drain(self) -> None:
        """NOT_SERVING for good: the process is shutting down."""
        self.state = ServingState.DRAINING
        await self.servicer.enter_graceful_shutdown()

    async def settled(self) -> None:
        """Returns once the servicer reports the current state (tests and start-up wait on it)."""
        while self._publisher is not None and not self._publisher.done():
            await asyncio.shield(self._publisher)

    def _publish_soon(self) -> None:
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.get_running_loop().create_task(
                self._publish(), name="health-publish"
            )

    async def _publish(self) -> None:
        # Loops until what it applied is still the state: a change made while it was awaiting
        # the servicer is picked up here rather than by a second task racing this one.
        while True:
            state = self.state
            status = _SERVING if state is ServingState.SERVING else _NOT_SERVING
            for service in self._services:
                await self.servicer.set(service, status)
            if self.state is state:
                return
