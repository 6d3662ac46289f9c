"""Silero VAD with one ONNX session per process instead of one per call.

Pipecat's `SileroVADAnalyzer` loads the model into a new `onnxruntime.InferenceSession` for each
analyzer, i.e. for each call. The model file is 2.2 MiB, but a session costs about 10 MiB of
native memory (graph, kernels, arena; measured: 10 analyzers, +97 MiB RSS), and creating and
dropping one per call left the process ~215 MiB larger after 300 calls: the allocator does not
give all of it back. Ten analyzers over the shared session add nothing measurable.

A session holds no per-stream state: Silero's recurrent state and its 64-sample context are
inputs and outputs of `run`, kept by `SileroOnnxModel` in Python. So every call can share one
session and keep its own `SileroOnnxModel` state; onnxruntime allows concurrent `run` calls on
one session (each analyzer still runs the model on its own executor thread).
"""

from __future__ import annotations

import functools
import threading
from importlib import resources

import onnxruntime
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams

_MODEL_PACKAGE = "pipecat.audio.vad.data"
_MODEL_NAME = "silero_vad.onnx"
_lock = threading.Lock()


@functools.cache
def _session_unlocked() -> onnxruntime.InferenceSession:
    path = resources.files(_MODEL_PACKAGE).joinpath(_MODEL_NAME)
    opts = onnxruntime.SessionOptions()
    # One thread per run, as Pipecat configures it: calls run in parallel on their own
    # executor threads, and a single 32 ms window is too small to gain from intra-op threads.
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(
        path.read_bytes(), providers=["CPUExecutionProvider"], sess_options=opts
    )


def shared_silero_session() -> onnxruntime.InferenceSession:
    """The process's Silero session, loaded on first use."""
    with _lock:
        return _session_unlocked()


class _CallSileroModel(SileroOnnxModel):
    """Pipecat's model wrapper (state, context, input checks) over the shared session.

    `SileroOnnxModel.__init__` would build a session of its own, so it is not called; this sets
    exactly the attributes it sets.
    """

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self.session = session
        self.reset_states()
        self.sample_rates = [8000, 16000]


class SharedSileroVADAnalyzer(SileroVADAnalyzer):
    """A `SileroVADAnalyzer` whose model state is its own but whose ONNX session is shared.

    `SileroVADAnalyzer.__init__` loads the model, so it is skipped; the per-analyzer state it
    sets (model wrapper and reset counters) is set here. tests/engines/test_shared_vad.py checks
    that this gives exactly the confidences of Pipecat's own analyzer.
    """

    def __init__(self, *, sample_rate: int | None = None, params: VADParams | None = None):
        VADAnalyzer.__init__(self, sample_rate=sample_rate, params=params)
        self._model = _CallSileroModel(shared_silero_session())
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
