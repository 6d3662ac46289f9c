"""`voicegw dev` (what `make run` starts): the gateway with everything a newcomer needs.

Embedded PostgreSQL (unless DATABASE_URL is set), migrations, the organisation `default` with
the built-in secretary agent on the unlimited `enterprise` plan, and a development API key written
once to `.voicegw/dev-api-key` (mode 0600) and reused on later runs, so the README's
`voicegw talk` line just works.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from billing.ledger import Ledger
from billing.plans import Plans
from gateway.auth import ApiKeyStore
from gateway.config import Settings
from gateway.db import Database
from gateway.storage import agents, orgs
from pipelines.agent_config import AgentConfig

if TYPE_CHECKING:
    from gateway.server import Gateway
    from gateway.workers import WorkerReady

DEFAULT_ORG = "default"
DEFAULT_AGENT = "secretary"
DEV_KEY_FILE = "dev-api-key"
DEV_PLAN = "enterprise"


def demo_origins(settings: Settings) -> list[str]:
    """The pages allowed to call the default agent from the browser: the demo page itself,
    on every worker's HTTP port (browsers allow the microphone on http://localhost)."""
    ports = [settings.http_port + i for i in range(settings.workers)]
    return [f"http://{host}:{port}" for port in ports for host in ("localhost", "127.0.0.1")]


async def ensure_default_tenant(db: Database, origins: list[str] | None = None) -> Any:
    """Organisation `default` with the secretary agent; leaves existing versions alone.

    The organisation is put on `enterprise` at every start, as `voicegw billing plan --now`
    does (no fee): it has no money, so on `payg` its calls would be refused, and a month's
    fee it cannot pay would suspend it. A plan set by hand on `default` therefore lasts until
    the next start; try billing on another organisation.
    """
    org = await orgs.get_by_name(db.pool, DEFAULT_ORG)
    if org is None:
        org = await orgs.create(db.pool, DEFAULT_ORG)
    if await agents.get_current(db.pool, org.id, DEFAULT_AGENT) is None:
        config = AgentConfig.default_secretary()
        await agents.create_or_new_version(db.pool, org.id, DEFAULT_AGENT, config.to_dict())
    await Plans(Ledger(db.pool)).switch_now(org.id, DEV_PLAN)
    if origins:
        await agents.set_widget(db.pool, org.id, DEFAULT_AGENT, public=True, origins=origins)
    return org


async def ensure_dev_key(db: Database, settings: Settings, org_id: Any) -> tuple[Path, bool]:
    """The development key file; a new key only when there is none or it no longer verifies."""
    path = Path(settings.state_dir) / DEV_KEY_FILE
    store = ApiKeyStore(db.pool, settings.resolved_key_pepper())
    if path.exists():
        existing = path.read_text().strip()
        if await store.verify(existing) is not None:
            return path, False
        logger.warning(f"{path} holds a key this database does not know; writing a new one")
    issued = await store.create(org_id, label="development key (make run)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(issued.key + "\n")
    os.chmod(path, 0o600)
    return path, True


def _banner(grpc_port: int, http_ports: list[int], key_path: Path, created: bool) -> str:
    state = "wrote a new" if created else "reusing the"
    metrics = ", ".join(f"http://localhost:{port}/metrics" for port in http_ports)
    workers = f" ({len(http_ports)} workers, one metrics port each)" if len(http_ports) > 1 else ""
    return (
        f"\nvoicegw is running (offline secretary agent){workers}.\n"
        f"  gRPC:     localhost:{grpc_port}\n"
        f"  metrics:  {metrics}\n"
        f"  widget:   http://localhost:{http_ports[0]}/demo (the browser door's demo page)\n"
        f"  API key:  {state} development key in {key_path}\n"
        f"  talk:     .venv/bin/voicegw talk --target localhost:{grpc_port} "
        f'--api-key "$(cat {key_path})" --agent {DEFAULT_AGENT} --wav question.wav '
        f"--out answer.wav\n"
        f"Press Ctrl-C to stop.\n"
    )


async def _dev(settings: Settings) -> None:
    # Imported here: the parent of several workers serves nothing and needs no gRPC or Pipecat.
    from gateway.server import Gateway, run_until_signalled

    database = await Database.open(settings)
    try:
        await database.migrate()
        org = await ensure_default_tenant(database, demo_origins(settings))
        key_path, created = await ensure_dev_key(database, settings, org.id)
        gateway = Gateway(settings, database=database)

        def announce(running: Gateway) -> None:
            print(_banner(running.grpc_port, [running.http_port], key_path, created), flush=True)

        await run_until_signalled(gateway, announce)
    finally:
        await database.close()


def _dev_workers(args: Any, settings: Settings) -> int:
    """The development setup once, in the parent; the workers are plain `serve` processes."""
    from gateway.workers import supervise_async

    key: list[tuple[Path, bool]] = []

    async def prepare(database: Database) -> None:
        org = await ensure_default_tenant(database, demo_origins(settings))
        key.append(await ensure_dev_key(database, settings, org.id))

    def announce(ready: list[WorkerReady]) -> None:
        ports = [r.http_port for r in ready]
        print(_banner(ready[0].grpc_port, ports, *key[0]), flush=True)

    return asyncio.run(supervise_async(args, settings, prepare, announce))


def main_dev(args: Any) -> int:
    from gateway.cli import serve_settings
    from gateway.logs import configure_logging

    settings = serve_settings(args)
    configure_logging(settings.log_level, json=settings.log_json)
    if settings.workers > 1:
        return _dev_workers(args, settings)
    asyncio.run(_dev(settings))
    return 0
