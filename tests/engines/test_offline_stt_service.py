"""PocketsphinxSTTService in a running Pipecat pipeline, with real decoding in the pool."""

from __future__ import annotations

from pipecat.frames.frames import (
    ErrorFrame,
    InputAudioRawFrame,
    MetricsFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData
from pipecat.pipeline.worker import PipelineParams

from pipelines.engines.stt_pool import SttWorkerPool
from pipelines.frames import RecognitionModeFrame, RecordedUtteranceFrame
from pipelines.services.offline_stt import PocketsphinxSTTService
from tests.audio_helpers import noise, silence, speech
from tests.engines.faq import FAQ_JSGF
from tests.engines.stt_harness import Segment, SttHarness


def _speech(text: str) -> Segment:
    return Segment(speech(text), speech=True)


def _gap(ms: int = 600) -> Segment:
    return Segment(silence(ms))


async def test_one_finalized_transcript_per_vad_stop(stt_pool: SttWorkerPool) -> None:
    stt = PocketsphinxSTTService(stt_pool, FAQ_JSGF)
    async with SttHarness(stt) as h:
        await h.play(
            [
                _gap(),
                _speech("where are you located"),
                _gap(),
                Segment(noise(800, rms=200), speech=True),  # the VAD fired on nothing useful
                _gap(),
                _speech("how much does it cost"),
                _gap(),
            ]
        )
        await h.transcripts(3)
        # A VAD stop with no start before it (e.g. the STT was muted at the start).
        await h.send_upstream(VADUserStoppedSpeakingFrame(stop_secs=0.2))
        transcripts = await h.transcripts(4)

    assert [t.text for t in transcripts] == [
        "where are you located",
        "",
        "how much does it cost",
        "",
    ]
    assert all(t.finalized for t in transcripts)
    assert len(h.down.of_type(TranscriptionFrame)) == 4, "no extra transcripts at the end"
    # Nothing swallowed: all audio went on downstream, VAD frames went on upstream.
    assert len(h.down.of_type(InputAudioRawFrame)) == h.vad.audio_seen
    assert len(h.up.of_type(VADUserStartedSpeakingFrame)) == 3
    assert len(h.up.of_type(VADUserStoppedSpeakingFrame)) == 4
    ttfb = [
        d
        for m in h.down.of_type(MetricsFrame)
        for d in m.data  # type: ignore[attr-defined]
        if isinstance(d, TTFBMetricsData) and d.processor == str(stt)
    ]
    assert ttfb, "STT TTFB (VAD stop to final transcript) is reported"


async def test_recognition_mode_and_capture(stt_pool: SttWorkerPool) -> None:
    stt = PocketsphinxSTTService(stt_pool, FAQ_JSGF)
    async with SttHarness(stt) as h:
        await h.send_upstream(RecognitionModeFrame(mode="general", capture_audio=True))
        assert stt.mode == "general"
        message = speech("please call me back tomorrow morning")
        await h.play([_gap(), Segment(message, speech=True), _gap()])
        [general] = await h.transcripts(1)

        await h.send_upstream(RecognitionModeFrame(mode="grammar", capture_audio=False))
        await h.play([_speech("what are your opening hours"), _gap()])
        transcripts = await h.transcripts(2)

    assert general.text.strip() != ""
    assert transcripts[1].text == "what are your opening hours"
    [recorded] = h.down.of_type(RecordedUtteranceFrame)
    assert isinstance(recorded, RecordedUtteranceFrame)
    assert recorded.text == general.text
    assert recorded.sample_rate == 16000
    # Pre-roll + the message + the VAD's stop_secs of trailing audio, whole 20 ms frames.
    assert len(message) < len(recorded.audio) < len(message) + 16000 * 2 * 1
    # The recording comes right after its transcript.
    order = [
        f for f in h.down.frames if isinstance(f, (TranscriptionFrame, RecordedUtteranceFrame))
    ]
    assert [type(f) for f in order] == [
        TranscriptionFrame,
        RecordedUtteranceFrame,
        TranscriptionFrame,
    ]


async def test_a_dead_worker_costs_one_empty_transcript_not_the_call() -> None:
    pool = SttWorkerPool(1, spare_decoders=1)
    await pool.start()
    try:
        stt = PocketsphinxSTTService(pool, FAQ_JSGF)
        async with SttHarness(stt) as h:
            await h.play([_gap(), _speech("where are you located")])
            pool.kill_worker(0)  # mid-utterance: VAD start seen, VAD stop not yet
            await h.play([_gap()])
            [lost] = await h.transcripts(1)
            await h.play([_speech("how much does it cost"), _gap()])
            transcripts = await h.transcripts(2)
    finally:
        await pool.close()
    assert lost.text == "" and lost.finalized
    assert transcripts[1].text == "how much does it cost"
    assert h.up.of_type(ErrorFrame), "the failure is reported upstream, non-fatally"


async def test_wrong_input_rate_is_refused_loudly(stt_pool: SttWorkerPool) -> None:
    stt = PocketsphinxSTTService(stt_pool, FAQ_JSGF)
    params = PipelineParams(audio_in_sample_rate=8000)
    async with SttHarness(stt, params=params) as h:
        await h.send_upstream(VADUserStoppedSpeakingFrame(stop_secs=0.2))
        [transcript] = await h.transcripts(1)
    assert transcript.text == "" and transcript.finalized
    errors = h.up.of_type(ErrorFrame)
    assert any("16000" in e.error for e in errors if isinstance(e, ErrorFrame))
