"""espeak-ng speech as a Pipecat TTS service, synthesised in the shared TTS worker process.

Each sentence is synthesised whole (espeak runs at hundreds of times real time, so streaming
partial audio would only add IPC), then resampled once, by the base class's stream resampler,
from espeak's 22050 Hz straight to the pipeline's output rate - which the Session sets to the
client's rate, so a PCMU caller's audio goes 22050 -> 8000 and nothing else.

Word timestamps from espeak's word events feed ``add_word_timestamps``, so the base class emits
one ``TTSTextFrame`` per word, timed by the server's output clock; a ``SpokenWordsFrame`` carries
the same offsets to the gateway, which works out what a caller who barged in actually heard.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from pipecat.audio.utils import create_stream_resampler
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    StartFrame,
)
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

from pipelines.engines.espeak import Synthesis
from pipelines.engines.ipc import WorkerError
from pipelines.engines.tts_worker import TtsWorker
from pipelines.frames import SpokenWordsFrame

__all__ = ["EspeakTTSService"]

_CHUNK_SECS = 0.25  # audio frames per sentence: small enough to interrupt promptly


class EspeakTTSService(TTSService):
    """Synthesises through a shared :class:`TtsWorker`; the voice is an espeak-ng voice name.

    Change the voice at runtime with ``TTSUpdateSettingsFrame(delta=TTSSettings(voice=...))``.
    ``rate_wpm`` is espeak's speaking rate (None = its default, 175 words per minute).
    """

    def __init__(
        self,
        worker: TtsWorker,
        voice: str = "en-us",
        *,
        rate_wpm: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("settings", TTSSettings(model="espeak-ng", voice=voice, language=None))
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            push_text_frames=False,  # words come from add_word_timestamps instead
            **kwargs,
        )
        self._worker = worker
        self._rate_wpm = rate_wpm
        # Seconds of audio already synthesised per audio context. The sentences of one LLM reply
        # share a context whose word clock starts at its first audio, while espeak times each
        # sentence from 0, so later sentences are shifted by what came before them.
        self._context_offsets: dict[str, float] = {}

    def can_generate_metrics(self) -> bool:
        return True

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        if self.sample_rate <= 8000:
            # Telephone band: the default very-high-quality filter costs CPU for detail that
            # an 8 kHz channel cannot carry.
            self._resampler = create_stream_resampler(quality="MQ")

    async def on_audio_context_completed(self, context_id: str) -> None:
        # Also reached when a context times out and is recreated: its word clock restarts too.
        self._context_offsets.pop(context_id, None)
        await super().on_audio_context_completed(context_id)

    async def on_audio_context_interrupted(self, context_id: str) -> None:
        self._context_offsets.pop(context_id, None)
        await super().on_audio_context_interrupted(context_id)

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        voice = str(self._settings.voice or "en-us")
        try:
            synthesis = await self._worker.synthesize(text, voice=voice, rate_wpm=self._rate_wpm)
        except WorkerError as exc:
            yield ErrorFrame(error=f"{self}: espeak synthesis failed: {exc}")
            return
        await self.start_tts_usage_metrics(text)

        async for frame in self._stream_audio_frames_from_iterator(
            _chunks(synthesis), in_sample_rate=synthesis.sample_rate, context_id=context_id
        ):
            yield frame

        offset = self._context_offsets.get(context_id, 0.0)
        words = [(w.word, offset + w.start_ms / 1000) for w in synthesis.words]
        await self.add_word_timestamps(words, context_id)
        end = offset + synthesis.duration_secs
        self._context_offsets[context_id] = end
        yield SpokenWordsFrame(context_id=context_id, words=words, end_secs=end)


async def _chunks(synthesis: Synthesis) -> AsyncIterator[bytes]:
    step = int(synthesis.sample_rate * _CHUNK_SECS) * 2
    for i in range(0, len(synthesis.pcm), step):
        yield synthesis.pcm[i : i + step]
