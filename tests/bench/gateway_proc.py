"""The benchmark's gateway: the production `Gateway` with `InstantEngines`, in its own process.

    python -m tests.bench.gateway_proc [--cpu 0] [--log-level INFO]

Embedded PostgreSQL as `voicegw dev` uses it (its own data directory, database `voicegw_bench`),
an organisation `bench` with the built-in secretary agent (its tuned turn settings) and a fresh
API key. When listening it writes one JSON line to stdout (ports, key, pid, turn settings), then
answers commands, one per stdin line, with one JSON line each:

- `stats`: VAD decisions since the last call (call id, kind, monotonic time), event-loop
  lateness percentiles since `reset`, the barge-in histogram, process CPU seconds and RSS.
- `reset`: forget loop-lateness samples and VAD decisions.
- `threads`: native thread id -> Python thread name, so per-thread CPU can be attributed.
- `profile-start` / `profile-stop PATH`: cProfile of the event-loop thread, dumped to PATH.
- `quit` (or end of stdin): stop the gateway and exit.

Logs go to stderr (JSON, the production format and level unless --log-level says otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

REPO = Path(__file__).resolve().parents[2]
BENCH_ORG = "bench"
BENCH_AGENT = "secretary"
BENCH_DATABASE = "voicegw_bench"
BENCH_PEPPER = "bench-pepper-" + "b" * 24


def proc_cpu_rss(pid: int | str = "self") -> tuple[float, int]:
    """(user+system CPU seconds, resident bytes) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def _percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(samples)

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    return {"count": len(ordered), "p50": at(50), "p99": at(99), "max": ordered[-1]}


def bench_agent(vad_start_secs: float | None) -> Any:
    """The secretary, optionally with another VAD start time."""
    from pipelines.agent_config import AgentConfig

    agent = AgentConfig.default_secretary()
    if vad_start_secs is not None:
        agent = agent.model_copy(
            update={"turn": agent.turn.model_copy(update={"vad_start_secs": vad_start_secs})}
        )
    return agent


async def _setup_tenant(database: Any, agent: Any) -> str:
    from billing.ledger import Ledger
    from billing.plans import Plans
    from gateway.auth import create_api_key
    from gateway.storage import agents, orgs

    org = await orgs.get_by_name(database.pool, BENCH_ORG)
    if org is None:
        org = await orgs.create(database.pool, BENCH_ORG)
    config = agent.to_dict()
    current = await agents.get_current(database.pool, org.id, BENCH_AGENT)
    if current is None or current.config != config:
        await agents.create_or_new_version(database.pool, org.id, BENCH_AGENT, config)
    # Metered like any call, on unlimited minutes: the bench measures the voice path.
    await Plans(Ledger(database.pool)).switch_now(org.id, "enterprise")
    issued = await create_api_key(database.pool, BENCH_PEPPER, org.id, label="bench")
    return issued.key


async def _serve(args: argparse.Namespace, out: TextIO) -> None:
    from gateway import metrics
    from gateway.config import Settings
    from gateway.db import Database
    from gateway.loop_monitor import LoopLagMonitor
    from gateway.server import Gateway
    from tests.bench.fake_engines import InstantEngines

    settings = Settings.load(
        None,
        grpc_host="127.0.0.1",
        grpc_port=0,
        http_host="127.0.0.1",
        http_port=0,
        state_dir=Path(args.state_dir),
        key_pepper=BENCH_PEPPER,
        max_sessions=args.max_sessions,
        org_max_calls=args.max_sessions,
        log_level=args.log_level,
    )
    database = await Database.open(settings, database=BENCH_DATABASE)
    try:
        await database.migrate()
        agent = bench_agent(args.vad_start_secs)
        key = await _setup_tenant(database, agent)
        engines = InstantEngines()
        gateway = Gateway(settings, database=database, engines=engines)
        gateway.loop_monitor = LoopLagMonitor(window=200_000)
        await gateway.start()
        turn = agent.turn
        ready = {
            "grpc_port": gateway.grpc_port,
            "http_port": gateway.http_port,
            "key": key,
            "agent": BENCH_AGENT,
            "pid": os.getpid(),
            "turn": turn.model_dump(),
        }
        out.write(json.dumps(ready) + "\n")
        out.flush()

        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        profiler: cProfile.Profile | None = None
        from pipelines.vad_batch import batcher_for

        vad = batcher_for(loop)
        try:
            while True:
                line = (await reader.readline()).decode().strip()
                if not line or line == "quit":
                    break
                command, _, arg = line.partition(" ")
                reply: dict[str, Any] = {"ok": True}
                if command == "reset":
                    gateway.loop_monitor.reset()
                    engines.vad_log.take()
                elif command == "stats":
                    cpu, rss = proc_cpu_rss()
                    reply.update(
                        vad=engines.vad_log.take(),
                        loop_lag=_percentiles(list(gateway.loop_monitor.samples)),
                        barge_in_buckets=_histogram(
                            metrics.REGISTRY, "voicegw_barge_in_latency_seconds"
                        ),
                        cpu_secs=cpu,
                        rss_bytes=rss,
                        tts_cache_misses=engines.tts_worker.misses,
                        active_calls=len(gateway.sessions.sessions) if gateway.sessions else 0,
                        vad_batches=vad.batches,
                        vad_windows=vad.windows,
                        vad_model_secs=vad.model_secs,
                    )
                elif command == "threads":
                    reply["threads"] = {
                        str(t.native_id): t.name for t in threading.enumerate() if t.native_id
                    }
                elif command == "profile-start":
                    profiler = cProfile.Profile()
                    profiler.enable()
                elif command == "profile-stop" and profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(arg)
                    profiler = None
                else:
                    reply = {"ok": False, "error": f"unknown command {line!r}"}
                out.write(json.dumps(reply) + "\n")
                out.flush()
        finally:
            await gateway.stop(grace_secs=2)
    finally:
        await database.close()


def _histogram(registry: Any, name: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) pairs of a histogram of the gateway's registry."""
    pairs = []
    for metric in registry.collect():
        if metric.name == name:
            for sample in metric.samples:
                if sample.name == f"{name}_bucket":
                    pairs.append((float(sample.labels["le"]), float(sample.value)))
    return pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--max-sessions", type=int, default=1000, help="and per-org limit")
    parser.add_argument("--state-dir", default=str(REPO / ".voicegw" / "bench"))
    parser.add_argument(
        "--vad-start-secs",
        type=float,
        default=None,
        help="the bench agent's [turn] vad_start_secs (default: the secretary's)",
    )
    args = parser.parse_args()
    if args.cpu is not None:
        # Before anything starts a thread: threads inherit the affinity of their creator.
        os.sched_setaffinity(0, {args.cpu})
    # stdout carries the protocol only; anything a library prints goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    from gateway.logs import configure_logging

    configure_logging(args.log_level, json=True)
    asyncio.run(_serve(args, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
