"""One engine worker process seen from the server's event loop: spawn, RPC, supervise, restart.

Engines hold the GIL or global state (pocketsphinx, espeak-ng), so they live in child processes
and the server only moves bytes through pipes. Everything here is asyncio subprocess plumbing -
no threads - and every wait is bounded: a request to a dead worker fails with
:class:`WorkerDiedError`, a stuck worker with :class:`WorkerTimeoutError`, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from pipelines.engines import ipc
from pipelines.engines.ipc import WorkerDiedError, WorkerError, WorkerTimeoutError

# The pipe may hold this much unsent audio before ``send`` makes its caller wait; far above what
# a healthy worker ever lags (1 MiB is ~30 s of 16 kHz audio), so it only bounds a wedged one.
_WRITE_HIGH_WATER = 1 << 20
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])


def _child_env() -> dict[str, str]:
    """The server's environment, with the project importable even when not pip-installed."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    if _PROJECT_ROOT not in path.split(os.pathsep):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, path) if p)
    return env


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class WorkerProcess:
    """A supervised ``python -m <module>`` speaking :mod:`.ipc` frames on stdin/stdout.

    When the process dies, pending requests fail at once with :class:`WorkerDiedError`,
    ``on_exit`` callbacks run (so owners can drop state that lived in the process), and a new
    process is started in the background; requests made meanwhile wait for it.
    """

    def __init__(
        self,
        module: str,
        *,
        name: str | None = None,
        args: tuple[str, ...] = (),
        start_timeout_secs: float = 60.0,
        restart: bool = True,
        nice: int = 0,
    ) -> None:
        self.module = module
        self.name = name or module.rsplit(".", 1)[-1]
        self._args = args
        self._start_timeout = start_timeout_secs
        self._restart = restart
        self._nice = nice
        self._proc: asyncio.subprocess.Process | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._restart_task: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._ready: asyncio.Future[bytes] | None = None
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._ids = itertools.count(1)
        self._alive = False
        self._closing = False
        self.generation = 0  # bumps on every (re)start; owners use it to detect lost state
        self.ready_payload = b""
        self._on_exit: list[Callable[[int, str], None]] = []

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._alive

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._alive else None

    def add_exit_callback(self, callback: Callable[[int, str], None]) -> None:
        """``callback(generation, why)`` runs synchronously when that generation's process dies."""
        self._on_exit.append(callback)

    async def start(self) -> None:
        """Start the process (if not running) and wait until it reports READY."""
        self._closing = False
        await self._ensure_running()

    async def _ensure_running(self) -> None:
        if self._closing:
            raise WorkerDiedError(f"{self.name} worker is closed")
        if self._alive:
            return
        async with self._start_lock:
            if self._alive:
                return
            if self._reader_task is not None:
                # A dead process's reader is still failing its requests; let it finish first
                # so its cleanup cannot touch the new process's state.
                await asyncio.shield(self._reader_task)
            await self._spawn()

    async def _spawn(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            *self._args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=_child_env(),
        )
        assert proc.stdin is not None
        if self._nice:
            # Set from here rather than in a preexec hook (unsafe when the server has threads).
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, proc.pid, self._nice)
        proc.stdin.transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        loop = asyncio.get_running_loop()
        self._proc, self._ready = proc, loop.create_future()
        self.generation += 1
        self._alive = True
        self._reader_task = asyncio.create_task(
            self._read_loop(proc, self.generation), name=f"{self.name}-reader"
        )
        try:
            self.ready_payload = await asyncio.wait_for(
                asyncio.shield(self._ready), self._start_timeout
            )
        except TimeoutError:
            self._kill(proc)
            raise WorkerTimeoutError(
                f"{self.name} worker did not become ready in {self._start_timeout:.0f}s"
            ) from None
        logger.debug(f"{self.name} worker ready (pid {proc.pid}, generation {self.generation})")

    async def close(self) -> None:
        """Stop the process: close its stdin (it exits at EOF), kill it if it lingers."""
        self._closing = True
        if self._restart_task is not None:
            self._restart_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restart_task
            self._restart_task = None
        proc = self._proc
        if proc is not None and proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                self._kill(proc)
                await proc.wait()
        if self._reader_task is not None:
            with contextlib.suppress(Exception):
                await self._reader_task
            self._reader_task = None
        self._proc = None

    def kill(self) -> None:
        """Kill the process now (tests use it to simulate a crash)."""
        if self._proc is not None:
            self._kill(self._proc)

    @staticmethod
    def _kill(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    # --- requests ------------------------------------------------------------------------------

    async def request(
        self, op: int, payload: bytes = b"", timeout_secs: float | None = 30.0
    ) -> bytes:
        """Send a request and wait for its reply payload.

        Raises :class:`WorkerError` with the worker's message if it failed the request,
        :class:`WorkerDiedError` if the process died first, :class:`WorkerTimeoutError` (after
        killing the process, which is then restarted) if it took longer than ``timeout_secs``.
        """
        await self._ensure_running()
        request_id = next(self._ids)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._write(request_id, op, payload)
            try:
                return await asyncio.wait_for(asyncio.shield(future), timeout_secs)
            except TimeoutError:
                if self._proc is not None:
                    self._kill(self._proc)
                raise WorkerTimeoutError(
                    f"{self.name} worker did not answer op {op} in {timeout_secs}s; killed it"
                ) from None
        finally:
            self._pending.pop(request_id, None)

    async def send(self, op: int, payload: bytes) -> None:
        """Send a frame that gets no reply; returns once it is in the pipe's buffer."""
        if not self._alive:
            raise WorkerDiedError(f"{self.name} worker is not running")
        await self._write(0, op, payload)

    async def _write(self, request_id: int, op: int, payload: bytes) -> None:
        proc = self._proc
        if not self._alive or proc is None or proc.stdin is None:
            raise WorkerDiedError(f"{self.name} worker is not running")
        try:
            proc.stdin.write(ipc.encode(request_id, op, payload))
            await proc.stdin.drain()
        except (ConnectionError, BrokenPipeError) as exc:
            raise WorkerDiedError(f"{self.name} worker pipe closed: {exc}") from exc

    # --- reader / supervision ------------------------------------------------------------------

    async def _read_loop(self, proc: asyncio.subprocess.Process, generation: int) -> None:
        assert proc.stdout is not None
        reason = "died"
        try:
            while True:
                frame = await ipc.read_frame(proc.stdout)
                self._dispatch(frame)
        except asyncio.IncompleteReadError:
            pass
        except ipc.ProtocolError as exc:
            reason = f"broke the protocol ({exc}) and was killed"
            self._kill(proc)
        finally:
            self._alive = False
            ready = self._ready
            was_ready = ready is not None and ready.done() and ready.exception() is None
            try:
                code = await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                self._kill(proc)
                code = await proc.wait()
            self._fail_pending(generation, f"(pid {proc.pid}) {reason}: {_describe_exit(code)}")
        # A process that died before READY would die again: restarting it here would loop.
        if not self._closing and self._restart and was_ready:
            self._restart_task = asyncio.create_task(
                self._restart_soon(), name=f"{self.name}-restart"
            )

    def _dispatch(self, frame: ipc.Frame) -> None:
        if frame.request_id == 0:
            if frame.op == ipc.OP_READY and self._ready is not None and not self._ready.done():
                self._ready.set_result(frame.payload)
            return
        future = self._pending.get(frame.request_id)
        if future is None or future.done():
            return  # the requester timed out or was cancelled; nothing waits for this reply
        if frame.op == ipc.OP_OK:
            future.set_result(frame.payload)
        else:
            future.set_exception(WorkerError(frame.payload.decode(errors="replace")))

    def _fail_pending(self, generation: int, what: str) -> None:
        error = WorkerDiedError(f"{self.name} worker {what}")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # mark retrieved: start() may not be waiting any more
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        if not self._closing:
            logger.warning(str(error))
        for callback in self._on_exit:
            callback(generation, str(error))

    async def _restart_soon(self) -> None:
        try:
            await self._ensure_running()
        except WorkerError as exc:
            # Next request retries (and raises if it still cannot start); no crash loop here.
            logger.error(f"{self.name} worker restart failed: {exc}")
