"""`make bench`: every benchmark, each printing its own table.

Engine speed and IPC (tests/engines/bench_engines.py), recognition quality
(tests/engines/bench_recognition.py), call latency and capacity (tests/bench/calls.py), which
rewrites docs/PERFORMANCE.md, then ledger throughput (tests/bench/ledger.py), which rewrites only
its own section of it. Arguments after `--` go to the calls benchmark, e.g.
`python -m tests.bench.run -- --n 1,10 --profile 10`; `--calls-only` runs just the calls
benchmark; `--ledger-only` runs just the ledger benchmark, and the other arguments go to it
(`--ledger-only --n 1,4 --seconds 2`).
"""

from __future__ import annotations

import runpy
import sys

BENCHMARKS = ("tests.engines.bench_engines", "tests.engines.bench_recognition")
CALLS = "tests.bench.calls"
CALLS_DEFAULT_ARGS = ["--n", "1,5,10,15,25,50", "--all", "--write"]
LEDGER = "tests.bench.ledger"
LEDGER_DEFAULT_ARGS = ["--write"]


def _run(module: str, args: list[str]) -> int:
    """Runs one benchmark as `python -m module args`; its exit code (the others still run)."""
    print(f"\n== {module} ==", flush=True)
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__")
    except SystemExit as exc:
        if exc.code:
            print(f"{module} exited with {exc.code}", flush=True)
            return exc.code if isinstance(exc.code, int) else 1
    return 0


def _with_write(args: list[str], default: list[str]) -> list[str]:
    if not args:
        return default
    return args if "--write" in args else [*args, "--write"]


def main() -> int:
    args = sys.argv[1:]
    calls_only = "--calls-only" in args
    ledger_only = "--ledger-only" in args
    args = [a for a in args if a not in ("--calls-only", "--ledger-only", "--")]
    if ledger_only:
        return _run(LEDGER, _with_write(args, LEDGER_DEFAULT_ARGS))
    codes = [] if calls_only else [_run(module, []) for module in BENCHMARKS]
    codes.append(_run(CALLS, _with_write(args, CALLS_DEFAULT_ARGS)))
    if not calls_only:
        codes.append(_run(LEDGER, LEDGER_DEFAULT_ARGS))
    return max(codes)


if __name__ == "__main__":
    raise SystemExit(main())
