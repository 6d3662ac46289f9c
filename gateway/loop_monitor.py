"""Measures event-loop lateness: the health figure that says whether calls are being starved.

A 20 ms ticker records how late each tick fires. Anything CPU-heavy that sneaks onto the loop
(DESIGN §5: pocketsphinx in a thread took p99 to 567 ms) shows up here first.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from gateway import metrics


class LoopLagMonitor:
    def __init__(self, interval_secs: float = 0.02, window: int = 3000) -> None:
        self._interval = interval_secs
        self.samples: deque[float] = deque(maxlen=window)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def reset(self) -> None:
        self.samples.clear()

    def percentile(self, p: float) -> float:
        """Lateness in seconds at percentile p (0–100) of the recorded window."""
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
        return ordered[index]

    async def _run(self) -> None:
        expected = time.monotonic() + self._interval
        while True:
            await asyncio.sleep(max(0.0, expected - time.monotonic()))
            late = max(0.0, time.monotonic() - expected)
            self.samples.append(late)
            metrics.EVENT_LOOP_LAG.observe(late)
            expected = max(expected + self._interval, time.monotonic())
