"""`make bench`: every benchmark, each printing its own table.

Engine speed and IPC (tests/engines/bench_engines.py), recognition quality
(tests/engines/bench_recognition.py), then call latency and capacity (tests/bench/calls.py), which
rewrites docs/PERFORMANCE.md. Arguments after `--` go to the calls benchmark, e.g.
`python -m tests.bench.run -- --n 1,10 --profile 10`; `--calls-only` skips the engine benchmarks.
"""

from __future__ import annotations

import runpy
import sys

BENCHMARKS = ("tests.engines.bench_engines", "tests.engines.bench_recognition")
CALLS = "tests.bench.calls"
CALLS_DEFAULT_ARGS = ["--n", "1,5,10,15,25,50", "--all", "--write"]


def main() -> int:
    args = sys.argv[1:]
    calls_only = "--calls-only" in args
    args = [a for a in args if a not in ("--calls-only", "--")]
    if not calls_only:
        for module in BENCHMARKS:
            print(f"\n== {module} ==", flush=True)
            sys.argv = [module]
            runpy.run_module(module, run_name="__main__")
    print(f"\n== {CALLS} ==", flush=True)
    sys.argv = [CALLS, *(args or CALLS_DEFAULT_ARGS)]
    if args and "--write" not in args:
        sys.argv.append("--write")
    runpy.run_module(CALLS, run_name="__main__")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
