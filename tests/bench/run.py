"""`make bench`: the benchmarks that exist so far, each printing its own table.

Engine speed and IPC (tests/engines/bench_engines.py) and recognition quality
(tests/engines/bench_recognition.py). The call-latency and capacity benchmark is issue 3's.
"""

from __future__ import annotations

import runpy
import sys

BENCHMARKS = ("tests.engines.bench_engines", "tests.engines.bench_recognition")


def main() -> int:
    for module in BENCHMARKS:
        print(f"\n== {module} ==", flush=True)
        sys.argv = [module]
        runpy.run_module(module, run_name="__main__")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
