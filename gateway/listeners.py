"""Where the gateway and the billing server listen: gRPC (TLS when configured) and HTTP."""

from __future__ import annotations

import asyncio
import ssl

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway import metrics
from gateway.config import Settings


async def metrics_handler(_: web.Request) -> web.Response:
    body = generate_latest(metrics.REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def start_site(
    app: web.Application, host: str, port: int, settings: Settings | None = None
) -> tuple[web.AppRunner, int]:
    """Starts `app` (over TLS with the gRPC certificate when one is configured: browsers allow
    the widget's microphone only on https or localhost); returns its runner and its port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = None
    if settings is not None and settings.tls_cert and settings.tls_key:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        await asyncio.to_thread(context.load_cert_chain, settings.tls_cert, settings.tls_key)
    site = web.TCPSite(runner, host, port, ssl_context=context)
    await site.start()
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    return runner, sockets[0].getsockname()[1] if sockets else port


async def add_port(server: grpc.aio.Server, settings: Settings) -> int:
    """Listens on the configured gRPC address, with TLS when configured; returns the port."""
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    if settings.tls_cert and settings.tls_key:
        key, cert = await asyncio.to_thread(settings.read_tls)
        return server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
    return server.add_insecure_port(address)
