"""Ledger throughput: `python -m tests.bench.ledger [--n 1,4,16,64] [--seconds 5 | --calls K]`.

N concurrent workers (asyncio tasks sharing one asyncpg pool of N + 2 connections) each run
metered calls back to back: `CallMeter.authorize` for 60 s, then `finalize` after 30 s of talk,
on the `payg` plan (1000 kopecks a started minute), against embedded PostgreSQL as `voicegw dev`
runs it (its own data directory under `.voicegw/bench`, database `voicegw_bench_ledger`; or
DATABASE_URL). Two shapes per N: every worker billing one organisation (one hot account row
and subscription row: the worst case for a tenant with many calls at once) and one organisation
per worker (no shared rows but the revenue account). Reported per N: authorize+finalize pairs
per second, p50/p99 latency of each operation, this process's CPU, and a correctness check over
the ledger afterwards: entries sum to the cached balances, every call was finalized exactly once,
and each balance is what was funded minus what its calls were charged.

`--write` puts the results in docs/PERFORMANCE.md's "Ledger throughput" section, leaving the rest
of the file (the call benchmark's) alone.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from billing.ledger import Ledger
from billing.metering import CallMeter, billable_seconds, money_due
from billing.plans import DEFAULT_PLAN
from gateway.db import Database
from gateway.storage import orgs
from tests.bench.calls import DOC, pct
from tests.bench.doc_sections import put
from tests.bench.gateway_proc import REPO
from tests.billing.helpers import fund

BENCH_DATABASE = "voicegw_bench_ledger"
SECTION = "ledger"
AUTHORIZE_SECONDS = 60
CALL_MS = 30_000
# Ample for any run: a refusal for money would measure the refusal path instead.
FUNDING = 10**12
SHAPES = ("one", "each")
# Hand-written findings (what the numbers mean), included in the generated section.
NOTES = Path(__file__).with_name("LEDGER_NOTES.md")


@dataclass
class Level:
    workers: int
    shape: str  # "one": all workers bill one organisation; "each": one organisation per worker
    pairs: int = 0
    wall_secs: float = 0.0
    cpu_secs: float = 0.0
    authorize_ms: list[float] = field(default_factory=list)
    finalize_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    org_ids: list[uuid.UUID] = field(default_factory=list)
    charge_minor: int = 0

    @property
    def calls_per_sec(self) -> float:
        return self.pairs / self.wall_secs if self.wall_secs else 0.0

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu_secs / self.wall_secs if self.wall_secs else 0.0


async def run_level(
    db: Database,
    workers: int,
    shape: str,
    *,
    calls: int | None = None,
    seconds: float | None = None,
) -> Level:
    """Runs `calls` pairs in all, or as many as start within `seconds`, then checks the ledger."""
    if (calls is None) == (seconds is None):
        raise ValueError("give calls or seconds")
    meter = CallMeter(Ledger(db.pool))
    plan = await meter.plans.plan(DEFAULT_PLAN)
    charge = money_due(billable_seconds(CALL_MS, plan.rounding), 0, plan.per_minute_minor)
    org_ids = [
        (await orgs.create(db.pool, f"ledger-bench-{uuid.uuid4().hex[:12]}")).id
        for _ in range(workers if shape == "each" else 1)
    ]
    for org_id in org_ids:
        await fund(meter.ledger, org_id, FUNDING)
    level = Level(workers, shape, org_ids=org_ids, charge_minor=charge)
    loop = asyncio.get_running_loop()
    deadline = None if seconds is None else loop.time() + seconds
    started = 0

    def claim() -> bool:
        nonlocal started
        if calls is not None and started >= calls:
            return False
        if deadline is not None and loop.time() >= deadline:
            return False
        started += 1
        return True

    async def worker(org_id: uuid.UUID) -> None:
        while claim():
            call_id = uuid.uuid4()
            try:
                t0 = time.perf_counter()
                await meter.authorize(org_id, call_id, AUTHORIZE_SECONDS, key=f"a-{call_id}")
                t1 = time.perf_counter()
                await meter.finalize(call_id, CALL_MS, key=f"f-{call_id}", reason="bench")
                t2 = time.perf_counter()
            except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
                level.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            level.authorize_ms.append((t1 - t0) * 1000)
            level.finalize_ms.append((t2 - t1) * 1000)
            level.pairs += 1

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(org_ids[i % len(org_ids)]) for i in range(workers)))
    level.wall_secs = time.perf_counter() - wall0
    level.cpu_secs = time.process_time() - cpu0
    level.failed_checks = await check(db, org_ids, level.pairs, charge)
    return level


async def check(db: Database, org_ids: list[uuid.UUID], pairs: int, charge: int) -> list[str]:
    """The invariants the run must leave behind; returns the ones that do not hold."""
    pool = db.pool
    failed: list[str] = []
    drift = await pool.fetchval(
        """SELECT count(*) FROM billing_accounts a WHERE posted_minor <>
               (SELECT coalesce(sum(amount_minor), 0) FROM billing_entries e
                WHERE e.account_id = a.id)
             OR held_minor <> (SELECT coalesce(sum(amount_minor), 0) FROM billing_holds h
                WHERE h.account_id = a.id AND h.status = 'pending')"""
    )
    unbalanced = await pool.fetchval(
        """SELECT count(*) FROM (SELECT transaction_id FROM billing_entries
           GROUP BY transaction_id HAVING sum(amount_minor) <> 0) t"""
    )
    if drift or unbalanced:
        failed.append("entries sum to cached balances")
    calls = await pool.fetchrow(
        """SELECT count(*) AS calls,
                  count(*) FILTER (WHERE status = 'finalized') AS finalized,
                  coalesce(sum(charged_minor), 0) AS charged
           FROM billing_calls WHERE org_id = ANY($1)""",
        org_ids,
    )
    kinds = dict(
        await pool.fetch(
            """SELECT kind, count(*) FROM billing_transactions WHERE org_id = ANY($1)
               GROUP BY kind""",
            org_ids,
        )
    )
    holds = dict(
        await pool.fetch(
            """SELECT h.status, count(*) FROM billing_holds h
               JOIN billing_accounts a ON a.id = h.account_id
               WHERE a.org_id = ANY($1) GROUP BY h.status""",
            org_ids,
        )
    )
    once = (
        calls["calls"] == calls["finalized"] == pairs
        and kinds.get("call_finalize", 0) == kinds.get("capture", 0) == pairs
        and holds == ({"captured": pairs} if pairs else {})
    )
    if not once:
        failed.append("every call finalized once")
    balances = await pool.fetch(
        """SELECT a.posted_minor, a.held_minor,
                  (SELECT coalesce(sum(charged_minor), 0) FROM billing_calls c
                   WHERE c.org_id = a.org_id) AS charged
           FROM billing_accounts a WHERE a.org_id = ANY($1) AND a.kind = 'customer'""",
        org_ids,
    )
    paid = len(balances) == len(org_ids) and all(
        row["posted_minor"] == FUNDING - row["charged"] and row["held_minor"] == 0
        for row in balances
    )
    if not paid or calls["charged"] != pairs * charge:
        failed.append("balance == funded - charged")
    return failed


# -- report -------------------------------------------------------------------------------------


def table(levels: list[Level]) -> str:
    lines = [
        "| organisations | N | pairs | calls/s | authorize p50/p99 ms | finalize p50/p99 ms "
        "| bench process CPU % | errors | check |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for lv in levels:
        shape = "one shared" if lv.shape == "one" else "one per worker"
        lines.append(
            f"| {shape} | {lv.workers} | {lv.pairs} | {lv.calls_per_sec:.0f} | "
            f"{pct(lv.authorize_ms, 50):.1f} / {pct(lv.authorize_ms, 99):.1f} | "
            f"{pct(lv.finalize_ms, 50):.1f} / {pct(lv.finalize_ms, 99):.1f} | "
            f"{lv.cpu_pct:.0f} | {len(lv.errors)} | "
            + ("ok" if not lv.failed_checks else "FAILED: " + ", ".join(lv.failed_checks))
            + " |"
        )
    return "\n".join(lines) + "\n"


def section(levels: list[Level], server: dict[str, str], argv: list[str]) -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    settings = ", ".join(f"{k} {v}" for k, v in server.items())
    return "\n".join(
        [
            "## Ledger throughput",
            "",
            f"Generated by `python -m tests.bench.ledger {' '.join(argv)}` on "
            f"{time.strftime('%Y-%m-%d')}.",
            "",
            "Each of N workers (asyncio tasks in one process, sharing an asyncpg pool of N + 2 "
            "connections) runs metered calls back to back: `CallMeter.authorize` for "
            f"{AUTHORIZE_SECONDS} s, then `finalize` at {CALL_MS // 1000} s, on `payg`. A pair "
            "is both; **calls/s** counts pairs over the run's wall time. Latencies are each "
            "operation as its caller sees it (pool wait included). **one shared**: every worker "
            "bills the same organisation, so each operation takes that account's and "
            "subscription's row locks in turn; **one per worker**: only the revenue account is "
            "shared. **check**: afterwards every cached balance equals its entries, every "
            "transaction balances, every call was finalized exactly once (one finalize record, "
            "one captured hold, no pending hold) and each balance is its funding minus what its "
            "calls were charged.",
            "",
            f"Machine: a noisy 2-vCPU VM ({cpu}, kernel {platform.release()}, Python "
            f"{platform.python_version()}), nothing pinned: the benchmark process and PostgreSQL "
            f"share both CPUs. PostgreSQL: {settings}. Repeated runs move cells by tens of "
            "per cent; read the shape, not the digits.",
            "",
            table(levels),
            *([NOTES.read_text().strip(), ""] if NOTES.exists() else []),
            "Run it alone with `make bench BENCH_ARGS=--ledger-only` (or `.venv/bin/python -m "
            "tests.bench.ledger --write [--n 1,4,16,64] [--seconds 5 | --calls K]`).",
        ]
    )


async def server_settings(db: Database) -> dict[str, str]:
    names = ("server_version", "fsync", "synchronous_commit", "shared_buffers", "max_connections")
    return {name: str(await db.pool.fetchval(f"SHOW {name}")) for name in names}


async def run(args: argparse.Namespace) -> list[Level]:
    from gateway.config import Settings

    ns = [int(x) for x in args.n.split(",") if x.strip()]
    settings = Settings.load(None, state_dir=REPO / ".voicegw" / "bench", db_pool_size=max(ns) + 2)
    db = await Database.open(settings, database=BENCH_DATABASE)
    levels: list[Level] = []
    try:
        await db.migrate()
        print("warm-up ...", flush=True)
        await run_level(db, max(ns), "each", calls=2 * max(ns))  # fill the pool, warm caches
        for n in ns:
            for shape in SHAPES:
                level = await run_level(db, n, shape, calls=args.calls, seconds=args.seconds)
                levels.append(level)
                print(table([level]).splitlines()[-1], flush=True)
                for error in level.errors[:3]:
                    print(f"  error: {error}", flush=True)
        server = await server_settings(db)
    finally:
        await db.close()
    print("\n" + table(levels))
    if args.write:
        argv = args.argv
        text = DOC.read_text() if DOC.exists() else "# Performance\n"
        DOC.write_text(put(text, SECTION, section(levels, server, argv)))
        print(f"wrote the ledger section of {DOC}")
    return levels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="1,4,16,64", help="concurrent workers, comma-separated")
    parser.add_argument("--seconds", type=float, help="run each level this long (default 5)")
    parser.add_argument("--calls", type=int, help="run each level for this many pairs instead")
    parser.add_argument("--write", action="store_true", help="write docs/PERFORMANCE.md")
    args = parser.parse_args(argv)
    if args.calls is None and args.seconds is None:
        args.seconds = 5.0
    args.argv = list(argv if argv is not None else sys.argv[1:])
    levels = asyncio.run(run(args))
    return 0 if all(not lv.failed_checks and not lv.errors for lv in levels) else 1


if __name__ == "__main__":
    raise SystemExit(main())
