"""`voicegw billing serve`: the billing service in a process of its own.

Gateways then meter calls through it (`voicegw serve --billing-target HOST:PORT` with a service
key), so money has one owner however many gateway replicas run, and it keeps running while a
gateway is redeployed. It serves `BillingService` (API keys as everywhere), gRPC health, the
payment webhooks and /metrics, and runs the sweeper that settles calls whose gateway vanished.
"""

from __future__ import annotations

import asyncio
import signal

import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from loguru import logger
from voicegw.v1 import billing_pb2, billing_pb2_grpc

from billing.funds import Funds
from billing.ledger import Ledger
from billing.payments import Payments
from billing.runtime import billing_meter, sweep_forever
from billing.service import BillingServicer
from billing.webhooks import webhook_routes
from gateway.auth import ApiKeyStore
from gateway.config import Settings
from gateway.db import Database
from gateway.grpc_auth import ApiKeyInterceptor
from gateway.health import GatewayHealth
from gateway.listeners import add_port, metrics_handler, start_site

BILLING_SERVICE = billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name


class BillingServer:
    def __init__(self, settings: Settings, database: Database | None = None) -> None:
        self.settings = settings
        self.database = database
        self._owns_database = database is None
        self.grpc_port = 0
        self.http_port = 0
        self.health = GatewayHealth([BILLING_SERVICE])
        self._server: grpc.aio.Server | None = None
        self._http: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.settings
        if self.database is None:
            self.database = await Database.open(settings)
            await self.database.migrate()
        pool = self.database.pool
        meter = billing_meter(Ledger(pool), settings)
        payments = Payments(meter.ledger)
        keys = ApiKeyStore(pool, settings.resolved_key_pepper())
        self._server = grpc.aio.server(
            interceptors=[ApiKeyInterceptor(keys.verify)],
            options=[("grpc.so_reuseport", 0)],
        )
        billing_pb2_grpc.add_BillingServiceServicer_to_server(
            BillingServicer(meter, funds=Funds(meter.ledger), payments=payments), self._server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self._server)
        reflection.enable_server_reflection(
            (BILLING_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self.grpc_port = await add_port(self._server, settings)
        await self._server.start()
        await self.health.start()
        app = web.Application()
        app.router.add_get("/metrics", metrics_handler)
        app.add_routes(webhook_routes(payments))
        self._http, self.http_port = await start_site(
            app, settings.http_host, settings.http_port, settings
        )
        self._sweeper = asyncio.create_task(sweep_forever(meter, settings), name="sweeper")
        logger.info(f"billing listening: grpc={self.grpc_port} http={self.http_port}")

    async def stop(self) -> None:
        await self.health.drain()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self._server is not None:
            await self._server.stop(2.0)
        if self._http is not None:
            await self._http.cleanup()
        if self.database is not None and self._owns_database:
            await self.database.close()


async def serve_until_signalled(server: BillingServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    print(
        f"voicegw billing: grpc localhost:{server.grpc_port}, "
        f"webhooks http://localhost:{server.http_port}/webhooks/",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await server.stop()


def run(settings: Settings) -> int:
    asyncio.run(serve_until_signalled(BillingServer(settings)))
    return 0
