"""Observer delivery that does not cost a core: no audio frames, no per-hop process events.

Pipecat's `WorkerObserver` hands every frame push and every frame *processed* at every processor
to every observer, each through its own queue and task. A call carries 50 caller audio frames and
50 agent audio frames a second, each crossing several processors, so that is hundreds of queue
hand-offs a second per observer, per call, for frames no observer of ours reads. The benchmark
found this routing to be the largest single cost of a call (docs/PERFORMANCE.md).

`CallObserverHub` keeps Pipecat's contract for everything observers actually use (control, text,
speaking and metrics frames, in order) and filters the rest before it is queued:

- caller audio never reaches observers;
- agent audio reaches them once per utterance (its first frame), which is all
  `UserBotLatencyObserver` needs for its first-audio moment;
- `on_process_frame` events are delivered only if some observer overrides it.
"""

from __future__ import annotations

from typing import Any

from pipecat.frames.frames import (
    InputAudioRawFrame,
    OutputAudioRawFrame,
    TTSStartedFrame,
)
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.pipeline.worker import PipelineWorker
from pipecat.pipeline.worker_observer import WorkerObserver


class CallObserverHub(WorkerObserver):
    """A `WorkerObserver` that drops what none of a call's observers read."""

    def __init__(self, *, observers: list[BaseObserver] | None = None, **kwargs: Any) -> None:
        super().__init__(observers=observers, **kwargs)
        self._audio_sources_pending: set[int] = set()  # TTS processors owing a first frame
        self._process_events_wanted = self._any_reads_process_events()

    def _any_reads_process_events(self) -> bool:
        return any(
            type(observer).on_process_frame is not BaseObserver.on_process_frame
            for observer in self._observers
        )

    def add_observer(self, observer: BaseObserver) -> None:
        super().add_observer(observer)
        self._process_events_wanted = self._any_reads_process_events()

    async def on_process_frame(self, data: FrameProcessed) -> None:
        # Asked once per frame per processor: the answer is kept, not recomputed.
        if self._process_events_wanted:
            await super().on_process_frame(data)

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        if isinstance(frame, InputAudioRawFrame):
            return
        if isinstance(frame, OutputAudioRawFrame):
            source = id(data.source)
            if source not in self._audio_sources_pending:
                return
            self._audio_sources_pending.discard(source)
        elif isinstance(frame, TTSStartedFrame):
            self._audio_sources_pending.add(id(data.source))
        await super().on_push_frame(data)


class CallWorker(PipelineWorker):
    """A `PipelineWorker` whose observers are fed through `CallObserverHub`.

    Pipecat builds its `WorkerObserver` inside `PipelineWorker.__init__` with no hook to choose
    another; the hub replaces it before anything (setup, the StartFrame) has seen it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        replaced: WorkerObserver = self._observer
        self._observer = CallObserverHub(observers=list(replaced._observers))
