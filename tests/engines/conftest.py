"""Engine fixtures: one TTS worker and one two-worker STT pool shared by the engine tests.

Tests that kill a worker make their own, so a deliberate crash never disturbs another test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pipelines.engines.stt_pool import SttWorkerPool
from pipelines.engines.tts_worker import TtsWorker


@pytest.fixture(scope="session")
async def tts_worker() -> AsyncIterator[TtsWorker]:
    worker = TtsWorker()
    await worker.start()
    yield worker
    await worker.close()


@pytest.fixture(scope="session")
async def stt_pool() -> AsyncIterator[SttWorkerPool]:
    pool = SttWorkerPool(2, spare_decoders=2)
    await pool.start()
    yield pool
    await pool.close()
