"""`voicegw serve --workers N` as a real process tree: one parent, N workers on one gRPC port.

Calls go through the shared port on one channel each, as the SDK does, and the kernel spreads the
connections over the workers (each worker's /metrics counts its own calls). SIGTERM to the parent
drains every worker (a call in progress ends with `shutdown` and is stored); a worker killed with
SIGKILL is restarted; workers exit when the parent is killed; workers that cannot start make the
parent give up with a non-zero exit; and without DATABASE_URL the parent runs the embedded server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from voicegw_client import SessionStarted, VoiceClient

from gateway.config import Settings
from gateway.db import Database
from gateway.storage import calls
from gateway.storage.embedded import EmbeddedPostgres, default_base_dir
from gateway.workers import PortPlan, plan_ports, worker_env
from tests.conftest import TEST_PEPPER
from tests.integration.caller import ScriptedCaller
from tests.integration.conftest import make_tenant
from tests.integration.test_process import VOICEGW, free_port

WORKERS = 2


@dataclass
class Served:
    process: asyncio.subprocess.Process
    grpc_port: int
    http_ports: list[int]
    log: Path


def _env(database: Database, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database.dsn,
        "VOICEGW_KEY_PEPPER": TEST_PEPPER,
        "VOICEGW_STATE_DIR": str(tmp_path / "state"),
        "VOICEGW_STT_WORKERS": "1",
        "VOICEGW_SHUTDOWN_GRACE_SECS": "1",
    }


async def _start(database: Database, tmp_path: Path, grpc_port: int, http_port: int) -> Any:
    return await asyncio.create_subprocess_exec(
        VOICEGW,
        "serve",
        "--workers",
        str(WORKERS),
        "--host",
        "127.0.0.1",
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(http_port),
        env=_env(database, tmp_path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=open(tmp_path / "serve.log", "wb"),
    )


def _free_http_base(count: int) -> int:
    """A base port with `count` free ports above it (worker i listens on base + i)."""
    for _ in range(50):
        base = free_port()
        if base + count - 1 <= 65535 and all(_is_free(base + i) for i in range(1, count)):
            return base
    raise AssertionError("no run of free ports")


def _is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def healthz(port: int) -> tuple[int, dict[str, Any]] | None:
    """(status, body) of a worker's /healthz, or None while nothing answers on that port."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            return response.status, await response.json()
    except (aiohttp.ClientError, TimeoutError):
        return None


async def poll(
    condition: Callable[[], Awaitable[Any]],
    what: str,
    process: asyncio.subprocess.Process | None = None,
    timeout: float = 60,
) -> Any:
    """Returns the condition's first truthy value; fails at the deadline or if `process` dies."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if process is not None:
            assert process.returncode is None, f"voicegw exited ({process.returncode}) {what}"
        assert loop.time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.1)  # a polling interval, not a synchronisation


async def worker_pids(served: Served) -> list[int] | None:
    """The pid behind each worker's HTTP port once every one answers /healthz with 200."""
    answers = [await healthz(port) for port in served.http_ports]
    if any(a is None or a[0] != 200 for a in answers):
        return None
    return [a[1]["pid"] for a in answers if a is not None]


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def alive(pid: int) -> bool:
    """Running (a zombie whose new parent has not reaped it yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def environ_of(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def postgres_running(pgdata: Path) -> bool:
    return (pgdata / "postmaster.pid").exists()  # removed when the server stops


async def calls_ended(http_port: int) -> float:
    """Calls this worker ended, whatever the reason (its own process's counter)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{http_port}/metrics") as response,
    ):
        text = await response.text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "voicegw_calls_ended"
        for sample in family.samples
        if sample.name == "voicegw_calls_ended_total"
    )


@pytest.fixture
async def served(database: Database, tmp_path: Path) -> AsyncIterator[Served]:
    grpc_port = free_port()
    base = _free_http_base(WORKERS)
    process = await _start(database, tmp_path, grpc_port, base)
    result = Served(process, grpc_port, [base + i for i in range(WORKERS)], tmp_path / "serve.log")
    try:
        await poll(lambda: worker_pids(result), "while starting", process, timeout=90)
        yield result
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)


async def _hangup_call(port: int, key: str, database: Database | None) -> None:
    """One call on its own channel: greeting heard, hang up, ended and stored as a hangup."""
    async with VoiceClient(f"127.0.0.1:{port}", key) as client:
        caller = await ScriptedCaller(client, "secretary").start()
        await caller.wait_for(lambda log: bool(log.audio_bytes()))
        await caller.hangup()
        log = await caller.wait_end(timeout=30)
        await caller.close()
    assert log.ended is not None and log.ended.reason == "caller_hangup", caller.summary()
    assert log.status_code == "OK"
    if database is not None:
        call_id = uuid.UUID(log.of(SessionStarted)[0].session_id)
        record = await calls.get_call(database.pool, call_id)
        assert record is not None and record.status == "ended"


async def test_workers_are_children_sharing_the_port_and_serve_calls(
    served: Served, database: Database
) -> None:
    pids = await worker_pids(served)
    assert pids is not None and len(set(pids)) == WORKERS
    assert all(parent_of(pid) == served.process.pid for pid in pids)
    tenant = await make_tenant(database)
    # One channel per call, so one connection per call: the kernel picks a worker for each.
    # Keep calling until both have served one (each call: 1/2 chance; 12 calls: all but sure).
    made = 0
    while made < 3 or 0 in [await calls_ended(port) for port in served.http_ports]:
        assert made < 12, "every call went to the same worker"
        await _hangup_call(served.grpc_port, tenant.key, database)
        made += 1
    per_worker = [await calls_ended(port) for port in served.http_ports]
    assert sum(per_worker) == made and all(n >= 1 for n in per_worker)
    assert served.process.returncode is None


async def test_sigterm_drains_every_worker_and_the_call_ends_with_shutdown(
    served: Served, database: Database
) -> None:
    pids = await worker_pids(served)
    assert pids is not None
    tenant = await make_tenant(database)
    async with VoiceClient(f"127.0.0.1:{served.grpc_port}", tenant.key) as client:
        caller = await ScriptedCaller(client, "secretary").start()
        await caller.wait_for(lambda log: bool(log.audio_bytes()))  # mid-greeting
        served.process.send_signal(signal.SIGTERM)
        log = await caller.wait_end(timeout=30)
        await caller.close()
    assert log.ended is not None and log.ended.reason == "shutdown", caller.summary()
    assert log.status_code == "OK"
    assert await asyncio.wait_for(served.process.wait(), 60) == 0  # 0: every worker exited 0
    assert not any(alive(pid) for pid in pids)
    call_id = uuid.UUID(log.of(SessionStarted)[0].session_id)
    record = await calls.get_call(database.pool, call_id)
    assert record is not None and record.status == "ended" and record.end_reason == "shutdown"
    text = served.log.read_text()
    assert "SIGTERM: stopping 2 workers" in text and "exited unexpectedly" not in text


async def test_a_killed_worker_is_restarted(served: Served, database: Database) -> None:
    pids = await worker_pids(served)
    assert pids is not None
    victim, survivor = pids
    os.kill(victim, signal.SIGKILL)

    async def replaced() -> int | None:
        answer = await healthz(served.http_ports[0])
        if answer is None or answer[0] != 200 or answer[1]["pid"] == victim:
            return None
        return int(answer[1]["pid"])

    new_pid = await poll(replaced, "while restarting the killed worker", served.process)
    assert parent_of(new_pid) == served.process.pid
    assert await worker_pids(served) == [new_pid, survivor]  # the other worker was left alone
    assert "killed by SIGKILL" in served.log.read_text()
    tenant = await make_tenant(database)
    await _hangup_call(served.grpc_port, tenant.key, database)  # still one gateway, still serving


async def test_workers_drain_and_exit_when_the_parent_is_killed(served: Served) -> None:
    pids = await worker_pids(served)
    assert pids is not None
    served.process.kill()  # SIGKILL: nothing is forwarded, only the socketpair closes
    await served.process.wait()

    async def all_gone() -> bool:
        return not any(alive(pid) for pid in pids)

    await poll(all_gone, "waiting for the orphaned workers to exit", timeout=30)
    assert served.log.read_text().count("supervisor gone: shutting down") == WORKERS


async def test_workers_that_cannot_start_make_the_parent_give_up(
    database: Database, tmp_path: Path
) -> None:
    # Something else owns the port without SO_REUSEPORT: no worker can bind it, ever.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        process = await _start(database, tmp_path, port, 0)
        try:
            code = await asyncio.wait_for(process.wait(), 120)
        finally:
            if process.returncode is None:
                process.kill()
    assert code == 1
    assert "times in a row while starting" in (tmp_path / "serve.log").read_text()


async def test_dev_workers_share_the_parents_embedded_database(tmp_path: Path) -> None:
    # No DATABASE_URL: the parent starts the embedded server (its own data directory here, under
    # the world-traversable base the development server uses) and hands the workers its URL.
    pgdata = default_base_dir() / f"tests-workers-{uuid.uuid4().hex[:8]}" / "pgdata"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "VOICEGW_DATABASE_URL")}
    env |= {
        "VOICEGW_STATE_DIR": str(tmp_path / "state"),
        "VOICEGW_PG_DATA_DIR": str(pgdata),
        "VOICEGW_STT_WORKERS": "1",
        "VOICEGW_SHUTDOWN_GRACE_SECS": "1",
        "VOICEGW_WORKERS": str(WORKERS),
    }
    grpc_port, base = free_port(), _free_http_base(WORKERS)
    process = await asyncio.create_subprocess_exec(
        VOICEGW,
        "dev",
        "--host",
        "127.0.0.1",
        "--grpc-port",
        str(grpc_port),
        "--http-port",
        str(base),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=open(tmp_path / "dev.log", "wb"),
    )
    served = Served(process, grpc_port, [base + i for i in range(WORKERS)], tmp_path / "dev.log")
    try:
        pids = await poll(lambda: worker_pids(served), "while starting", process, timeout=120)
        assert process.stdout is not None
        banner = (await asyncio.wait_for(process.stdout.readuntil(b"Ctrl-C"), 30)).decode()
        assert f"localhost:{grpc_port}" in banner and f"localhost:{base + 1}/metrics" in banner
        for pid in pids:
            assert parent_of(pid) == process.pid
            url = environ_of(pid)["DATABASE_URL"]
            assert "host=" in url and url.endswith("port=5432")  # the embedded server's socket
        key = (tmp_path / "state" / "dev-api-key").read_text().strip()
        await _hangup_call(grpc_port, key, None)  # the default organisation, made once
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0
        assert not postgres_running(pgdata)  # the parent stopped it on its way out
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await asyncio.to_thread(EmbeddedPostgres(pgdata).remove)


# -- the plan, without processes ---------------------------------------------------------------


def _settings(**values: Any) -> Settings:
    return Settings.load(None, **({"key_pepper": TEST_PEPPER} | values))


def test_port_plan() -> None:
    assert plan_ports(_settings(workers=3, grpc_port=7000, http_port=9000)) == PortPlan(
        7000, (9000, 9001, 9002)
    )
    # HTTP port 0: every worker picks its own; gRPC port 0: the parent picks one for all.
    plan = plan_ports(_settings(workers=2, grpc_port=0, http_port=0), pick=lambda host: 4242)
    assert plan == PortPlan(4242, (0, 0))
    assert plan_ports(_settings(workers=2, grpc_port=0, grpc_host="127.0.0.1")).grpc_port > 0
    with pytest.raises(ValueError, match="HTTP ports"):
        plan_ports(_settings(workers=2, grpc_port=9001, http_port=9000))
    with pytest.raises(ValueError, match="65535"):
        plan_ports(_settings(workers=2, http_port=65535))


def test_worker_env_splits_the_default_recognisers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOICEGW_STT_WORKERS", raising=False)
    env = worker_env(_settings(workers=2, stt_workers=8), "postgresql://x")
    assert env["VOICEGW_WORKERS"] == "2" and env["DATABASE_URL"] == "postgresql://x"
    assert "VOICEGW_STT_WORKERS" not in env  # set explicitly: every worker gets that many
    default = _settings(workers=2)
    env = worker_env(default, None)
    assert env["VOICEGW_STT_WORKERS"] == str(max(1, default.stt_workers // 2))
    assert "DATABASE_URL" not in env or env["DATABASE_URL"] == os.environ.get("DATABASE_URL")
