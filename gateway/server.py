"""App assembly: database, engine processes, session registry, gRPC server, HTTP /metrics.

`Gateway` is what `voicegw serve` runs and what integration tests start in-process on free
ports, so tests exercise exactly the production wiring.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from typing import Any

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from loguru import logger
from voicegw.v1 import billing_pb2, billing_pb2_grpc, voice_pb2, voice_pb2_grpc

from billing.funds import Funds
from billing.gateway_client import CallBilling, LocalBilling, RemoteBilling
from billing.ledger import Ledger
from billing.metering import CallMeter
from billing.payments import Payments
from billing.runtime import billing_meter, replay_forever, sweep_forever
from billing.service import BillingServicer
from billing.spool import UsageSpool
from billing.webhooks import webhook_routes
from gateway.auth import ApiKeyStore
from gateway.call_metering import MeteringPolicy
from gateway.call_store import PgAgentDirectory, PgCallStore
from gateway.config import Settings
from gateway.db import Database
from gateway.grpc_auth import ApiKeyInterceptor
from gateway.health import GatewayHealth, ServingState
from gateway.listeners import add_port, metrics_handler, start_site
from gateway.loop_monitor import LoopLagMonitor
from gateway.session import SessionPolicy
from gateway.sessions import SessionManager
from gateway.voice_service import VoiceService, stream_limits
from gateway.webrtc_http import WebRTCEndpoints
from pipelines.builder import Engines, OfflineEngines
from pipelines.vad_batch import silero_session

VOICE_SERVICE = voice_pb2.DESCRIPTOR.services_by_name["VoiceService"].full_name
BILLING_SERVICE = billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name


class Gateway:
    def __init__(
        self,
        settings: Settings,
        database: Database | None = None,
        engines: Engines | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self._owns_database = database is None
        self.grpc_port = 0
        self.http_port = 0
        self.loop_monitor = LoopLagMonitor()
        self.sessions: SessionManager | None = None
        # Built from VOICEGW_ payment settings at start unless injected; an unconfigured
        # provider's webhook answers 503 (billing/webhooks.py).
        self.payments: Payments | None = None
        self._server: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self.health = GatewayHealth([VOICE_SERVICE])
        self._engines: Engines = engines or OfflineEngines(settings.stt_workers)
        self.meter: CallMeter | None = None
        self.billing: CallBilling | None = None
        self.spool: UsageSpool | None = None
        self._background: list[asyncio.Task[None]] = []
        self.webrtc: WebRTCEndpoints | None = None

    async def start(self) -> None:
        settings = self.settings
        if self.database is None:
            self.database = await Database.open(settings)
            await self.database.migrate()
        # The shared VAD model loads here, not inside the first call's set-up on the loop.
        await asyncio.gather(self._engines.start(), asyncio.to_thread(silero_session))
        pool = self.database.pool
        self.meter = billing_meter(Ledger(pool), settings)
        if self.payments is None:
            self.payments = Payments(self.meter.ledger)
        self.spool = UsageSpool(settings.state_dir / "billing-spool")
        remote = None
        if settings.billing_target and settings.billing_service_key:
            service_key = settings.billing_service_key.get_secret_value()
            remote = RemoteBilling(settings.billing_target, service_key)
        self.billing = remote or LocalBilling(self.meter)
        self.sessions = SessionManager(
            engines=self._engines,
            store=PgCallStore(pool),
            agents=PgAgentDirectory(pool),
            max_sessions=settings.max_sessions,
            org_max_calls=settings.org_max_calls,
            policy=SessionPolicy.from_settings(settings),
            on_load=self.health.on_load,
            billing=self.billing,
            spool=self.spool,
            metering=MeteringPolicy.from_settings(settings),
        )
        keys = ApiKeyStore(pool, settings.resolved_key_pepper())
        self._server = grpc.aio.server(
            interceptors=[ApiKeyInterceptor(keys.verify)],
            options=[
                # One process owns its port unless several workers share it on purpose (§8):
                # grpcio sets SO_REUSEPORT by default, so a second `voicegw serve` on the same
                # port would silently take half the connections instead of failing to start.
                ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.keepalive_timeout_ms", 5_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        voice_pb2_grpc.add_VoiceServiceServicer_to_server(
            VoiceService(self.sessions, limits=stream_limits(settings)), self._server
        )
        billing_pb2_grpc.add_BillingServiceServicer_to_server(
            BillingServicer(self.meter, funds=Funds(self.meter.ledger), payments=self.payments),
            self._server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self._server)
        reflection.enable_server_reflection(
            (VOICE_SERVICE, BILLING_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME),
            self._server,
        )
        self.grpc_port = await add_port(self._server, settings)
        await self._server.start()
        await self.health.start()
        await self._start_http()
        self.loop_monitor.start()
        if remote is None:  # the billing process sweeps when billing runs apart
            self._background.append(
                asyncio.create_task(sweep_forever(self.meter, settings), name="billing-sweeper")
            )
        self._background.append(
            asyncio.create_task(
                replay_forever(self.spool, self.billing, settings), name="billing-spool"
            )
        )
        logger.info(f"gateway listening: grpc={self.grpc_port} http={self.http_port}")

    async def _start_http(self) -> None:
        async def healthz(_: web.Request) -> web.Response:
            state = self.health.state
            if self.sessions is None or self.sessions.draining:
                state = ServingState.DRAINING
            status = 200 if state is ServingState.SERVING else 503
            # The pid tells apart workers sharing a machine (`--workers N`), e.g. after a restart.
            body = {"status": state.value, "pid": os.getpid()}
            return web.json_response(body, status=status)

        app = web.Application()
        app.router.add_get("/metrics", metrics_handler)
        app.router.add_get("/healthz", healthz)
        if self.payments is None and self.database is not None:
            self.payments = Payments(Ledger(self.database.pool))
        if self.payments is not None:
            app.add_routes(webhook_routes(self.payments))
        if self.sessions is not None and self.database is not None:
            self.webrtc = WebRTCEndpoints(self.settings, self.database.pool, self.sessions)
            app.add_routes(self.webrtc.routes())
        self._http, self.http_port = await start_site(
            app, self.settings.http_host, self.settings.http_port, self.settings
        )

    async def stop(self, grace_secs: float | None = None) -> None:
        """Drain: NOT_SERVING, refuse new calls, let calls finish, end the rest, stop."""
        grace = self.settings.shutdown_grace_secs if grace_secs is None else grace_secs
        await self.health.drain()
        if self.sessions is not None:
            await self.sessions.shutdown(grace)
        if self.webrtc is not None:
            await self.webrtc.close()
        if self._server is not None:
            await self._server.stop(1.0)
        if self._http is not None:
            await self._http.cleanup()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.spool is not None and self.billing is not None:
            await self.spool.replay(self.billing)  # what can still be applied, before closing
        if isinstance(self.billing, RemoteBilling):
            await self.billing.close()
        await self.loop_monitor.stop()
        await self._engines.close()
        if self.database is not None and self._owns_database:
            await self.database.close()


async def run_until_signalled(
    gateway: Gateway,
    on_ready: Callable[[Gateway], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serves until SIGTERM/SIGINT (or until `stop` is set), then shuts down gracefully."""
    stop = asyncio.Event() if stop is None else stop
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    if on_ready is not None:
        on_ready(gateway)
    try:
        await stop.wait()
        logger.info("shutting down")
    finally:
        await gateway.stop()


def main_serve(args: Any) -> int:
    """`voicegw serve`: the production entry point (DATABASE_URL, TLS, env secrets)."""
    from gateway.cli import serve_settings
    from gateway.logs import configure_logging

    settings = serve_settings(args)
    configure_logging(settings.log_level, json=settings.log_json)
    if getattr(args, "supervisor_fd", None) is not None:
        from gateway.workers import run_worker

        return run_worker(Gateway(settings), args.supervisor_fd)
    asyncio.run(run_until_signalled(Gateway(settings)))
    return 0
