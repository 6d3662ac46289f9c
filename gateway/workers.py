"""`voicegw serve --workers N`: N gateway processes on one machine sharing one gRPC port.

One Python process saturates a core long before the machine does, so a machine runs several.
The parent (the supervisor) serves no calls: it resolves the database once, starts the workers,
restarts one that dies, forwards SIGTERM/SIGINT and waits for every worker's own graceful
shutdown. It imports neither gRPC nor Pipecat, so it stays small.

- Workers are fresh processes (`python -m gateway.cli serve ...`), never forks: gRPC's core and
  its threads do not survive fork, and a fresh interpreter is exactly what `voicegw serve` is.
- They bind the same gRPC port with `SO_REUSEPORT` (the kernel spreads *connections*; HTTP/2
  multiplexes calls on a connection, so a client opens one channel per call to be balanced).
  Worker i serves HTTP (/metrics, /healthz) on `http_port + i`, so each is scraped on its own.
- With `grpc_port = 0` the parent picks a free port and passes it down: every worker must bind
  the same one. Another process could take it in between; the workers then fail to start and
  the parent exits non-zero, as with any port in use.
- Embedded PostgreSQL (no DATABASE_URL) is started and migrated by the parent, which keeps it
  running and hands its URL to the workers as DATABASE_URL (secrets only travel via env).
- Parent and worker share a socketpair: the worker writes one JSON line when it serves (pid,
  ports), and when the parent's end closes (the parent died, even by SIGKILL) the worker drains
  and exits, so no orphan keeps taking connections on the shared port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loguru import logger

from gateway.config import Settings

if TYPE_CHECKING:
    from gateway.db import Database
    from gateway.server import Gateway

BACKOFF_FIRST_SECS = 0.5
BACKOFF_MAX_SECS = 30.0
STABLE_SECS = 60.0  # a worker that served this long starts its next backoff from the beginning
MAX_START_FAILURES = 3  # a worker dying this many times in a row before serving: give up
STOP_MARGIN_SECS = 30.0  # beyond the workers' own shutdown budget, then SIGKILL


@dataclass(frozen=True, slots=True)
class WorkerReady:
    """What a worker reports once it serves (its real ports: `0` may have been asked)."""

    index: int
    pid: int
    grpc_port: int
    http_port: int


@dataclass(frozen=True, slots=True)
class PortPlan:
    grpc_port: int
    http_ports: tuple[int, ...]


def plan_ports(settings: Settings, pick: Callable[[str], int] | None = None) -> PortPlan:
    """The gRPC port all workers share and each worker's HTTP port (`0`: each picks its own)."""
    n = settings.workers
    grpc_port = settings.grpc_port or (pick or free_port)(settings.grpc_host)
    if settings.http_port == 0:
        return PortPlan(grpc_port, (0,) * n)
    http_ports = tuple(settings.http_port + i for i in range(n))
    if http_ports[-1] > 65535:
        raise ValueError(f"{n} workers need HTTP ports {http_ports[0]}-{http_ports[-1]}")
    if grpc_port in http_ports:
        raise ValueError(
            f"the gRPC port {grpc_port} is one of the workers' HTTP ports "
            f"{http_ports[0]}-{http_ports[-1]} (worker i serves HTTP on http_port + i)"
        )
    return PortPlan(grpc_port, http_ports)


def free_port(host: str) -> int:
    """A port free right now on `host` (gRPC's "[::]" spelling accepted)."""
    bare = host.strip("[]")
    family, kind, proto, _, address = socket.getaddrinfo(
        bare, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as sock:
        sock.bind(address)
        return int(sock.getsockname()[1])


def worker_argv(args: Any, ports: PortPlan, index: int, fd: int) -> list[str]:
    """The worker's command line: `serve` with the parent's flags and its own ports."""
    argv = [sys.executable, "-m", "gateway.cli"]
    if getattr(args, "config", None) is not None:
        argv += ["--config", str(args.config)]
    argv += ["serve", "--grpc-port", str(ports.grpc_port)]
    argv += ["--http-port", str(ports.http_ports[index]), "--supervisor-fd", str(fd)]
    for flag in ("host", "tls_cert", "tls_key"):
        value = getattr(args, flag, None)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", str(value)]
    return argv


def worker_env(settings: Settings, database_url: str | None) -> dict[str, str]:
    """The parent's environment plus what the workers must agree on."""
    env = dict(os.environ)
    env["VOICEGW_WORKERS"] = str(settings.workers)  # a worker knows it shares its port
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    if "stt_workers" not in settings.model_fields_set:
        # The default is one recogniser process per CPU; N workers would start N times that.
        env["VOICEGW_STT_WORKERS"] = str(max(1, settings.stt_workers // settings.workers))
    return env


# -- the parent -------------------------------------------------------------------------------


@dataclass
class _Slot:
    index: int
    process: asyncio.subprocess.Process | None = None
    pid: int | None = None  # of the current or last process
    ready: WorkerReady | None = None
    clean: bool = True  # every exit so far was one we asked for


class Supervisor:
    """Keeps `settings.workers` worker processes running until told to stop."""

    def __init__(
        self,
        settings: Settings,
        argv: Callable[[int, int], list[str]],
        env: dict[str, str],
        stop: asyncio.Event,
        on_all_ready: Callable[[list[WorkerReady]], None] | None = None,
    ) -> None:
        self.settings = settings
        self._argv = argv
        self._env = env
        self._stop = stop
        self._on_all_ready = on_all_ready
        self._slots = [_Slot(i) for i in range(settings.workers)]
        self._gave_up = False

    def signal_all(self, sig: int) -> None:
        for slot in self._slots:
            if slot.process is not None and slot.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(sig)

    async def run(self) -> int:
        """Runs until `stop` is set (or a worker cannot start); 0 if every worker exited 0."""
        tasks = [asyncio.create_task(self._keep_running(slot)) for slot in self._slots]
        stopper = asyncio.create_task(self._stop_on_request())
        try:
            await asyncio.gather(*tasks)
        finally:
            stopper.cancel()
            self.signal_all(signal.SIGKILL)  # only if we get here by an error or cancellation
        clean = not self._gave_up and all(slot.clean for slot in self._slots)
        return 0 if clean else 1

    async def _stop_on_request(self) -> None:
        await self._stop.wait()
        # The workers drain on their own: grace period, then the end watchdog, then storing.
        s = self.settings
        budget = s.shutdown_grace_secs + s.end_graceful_timeout_secs + s.end_cancel_timeout_secs
        await asyncio.sleep(budget + STOP_MARGIN_SECS)
        logger.error(f"workers still running {budget + STOP_MARGIN_SECS:.0f} s after stop: killed")
        self.signal_all(signal.SIGKILL)  # their exit codes make ours non-zero

    async def _keep_running(self, slot: _Slot) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        backoff = BACKOFF_FIRST_SECS
        while not self._stop.is_set():
            started = loop.time()
            code, ready = await self._run_once(slot)
            if self._stop.is_set():
                # Killed by the forwarded signal before it installed its handlers: not a fault.
                early = ready is None and code in (-signal.SIGTERM, -signal.SIGINT)
                slot.clean = slot.clean and (code == 0 or early)
                return
            failures = 0 if ready is not None else failures + 1
            if failures >= MAX_START_FAILURES:
                logger.error(
                    f"worker {slot.index} died {failures} times in a row while starting "
                    f"(last exit {_describe(code)}); giving up"
                )
                self._gave_up = True
                self._stop.set()
                self.signal_all(signal.SIGTERM)  # the others drain and exit
                return
            if ready is not None and loop.time() - started >= STABLE_SECS:
                backoff = BACKOFF_FIRST_SECS
            logger.error(
                f"worker {slot.index} (pid {slot.pid}) exited unexpectedly "
                f"({_describe(code)}); restarting it in {backoff:g} s"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_SECS)

    async def _run_once(self, slot: _Slot) -> tuple[int, WorkerReady | None]:
        """Start the worker, note when it serves, wait for it to exit: (code, ready report)."""
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv(slot.index, theirs.fileno()),
                env=self._env,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        slot.process, slot.pid, slot.ready = process, process.pid, None
        if self._stop.is_set():  # the stop signal came while we were starting it
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        reader, writer = await asyncio.open_connection(sock=ours)
        exited = asyncio.ensure_future(process.wait())
        try:
            # Its report, or its exit: EOF alone could wait on a grandchild holding the socket.
            report = asyncio.ensure_future(reader.readline())
            await asyncio.wait((report, exited), return_when=asyncio.FIRST_COMPLETED)
            ready = _parse_ready(slot.index, report.result()) if report.done() else None
            report.cancel()
            if ready is not None:
                slot.ready = ready
                logger.info(
                    f"worker {slot.index} serving: pid={ready.pid} "
                    f"grpc={ready.grpc_port} http={ready.http_port}"
                )
                self._maybe_all_ready()
            code = await exited
        finally:
            exited.cancel()  # only if we are cancelled ourselves
            writer.close()  # the worker reads EOF: only matters if it still runs
        slot.process = None
        return code, ready

    def _maybe_all_ready(self) -> None:
        if self._on_all_ready is None or any(s.ready is None for s in self._slots):
            return
        callback, self._on_all_ready = self._on_all_ready, None  # the first time only
        callback([s.ready for s in self._slots if s.ready is not None])


def _parse_ready(index: int, line: bytes) -> WorkerReady | None:
    if not line:
        return None  # EOF: it died before serving
    data = json.loads(line)
    return WorkerReady(index, int(data["pid"]), int(data["grpc_port"]), int(data["http_port"]))


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


async def supervise_async(
    args: Any,
    settings: Settings,
    prepare: Callable[[Database], Awaitable[None]] | None = None,
    on_all_ready: Callable[[list[WorkerReady]], None] | None = None,
) -> int:
    """Resolve the database once, then run the workers until SIGTERM/SIGINT.

    `prepare` runs on the migrated database before any worker starts (`voicegw dev` creates its
    default organisation and key there, once rather than once per worker).
    """
    stop = asyncio.Event()
    supervisor: Supervisor | None = None
    loop = asyncio.get_running_loop()

    def on_signal(sig: int) -> None:
        if not stop.is_set():
            logger.info(f"{signal.Signals(sig).name}: stopping {settings.workers} workers")
        stop.set()
        if supervisor is not None:
            supervisor.signal_all(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    try:
        ports = plan_ports(settings)
    except ValueError as exc:
        from gateway.cli import CliError

        raise CliError(str(exc)) from None  # a configuration mistake: one line, exit 1
    settings.resolved_key_pepper()  # fail here, not N times; creates the pepper file once
    database: Database | None = None
    database_url: str | None = None
    if settings.database_dsn() is None or prepare is not None:
        from gateway.db import Database

        database = await Database.open(settings)
    try:
        if database is not None:
            await database.migrate()
            if prepare is not None:
                await prepare(database)
            if settings.database_dsn() is None:
                database_url = database.dsn  # the embedded server, kept running by us
            else:
                await database.close()
                database = None
        if stop.is_set():
            return 0
        env = worker_env(settings, database_url)
        logger.info(f"starting {settings.workers} workers on grpc port {ports.grpc_port}")
        supervisor = Supervisor(
            settings,
            lambda index, fd: worker_argv(args, ports, index, fd),
            env,
            stop,
            on_all_ready,
        )
        return await supervisor.run()
    finally:
        if database is not None:
            await database.close()


def main_supervise(args: Any) -> int:
    """`voicegw serve --workers N` with N > 1 (the parent process)."""
    from gateway.cli import serve_settings
    from gateway.logs import configure_logging

    settings = serve_settings(args)
    configure_logging(settings.log_level, json=settings.log_json)

    def announce(ready: list[WorkerReady]) -> None:
        http = ", ".join(str(r.http_port) for r in ready)
        logger.info(f"{len(ready)} workers serving on grpc port {ready[0].grpc_port}; http {http}")

    return asyncio.run(supervise_async(args, settings, on_all_ready=announce))


# -- the worker -------------------------------------------------------------------------------


def run_worker(gateway: Gateway, fd: int) -> int:
    """`voicegw serve` as worker of a supervisor whose end of the socketpair `fd` is."""
    return asyncio.run(_serve_as_worker(gateway, fd))


async def _serve_as_worker(gateway: Gateway, fd: int) -> int:
    from gateway.server import run_until_signalled

    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
    stop = asyncio.Event()

    async def watch_supervisor() -> None:
        while await reader.read(4096):
            pass
        if not stop.is_set():
            logger.warning("supervisor gone: shutting down")
            stop.set()

    def report(running: Gateway) -> None:
        ready = {"pid": os.getpid(), "grpc_port": running.grpc_port, "http_port": running.http_port}
        writer.write(json.dumps(ready).encode() + b"\n")

    watcher = asyncio.create_task(watch_supervisor())
    try:
        await run_until_signalled(gateway, report, stop)
    finally:
        watcher.cancel()
        writer.close()
    return 0
