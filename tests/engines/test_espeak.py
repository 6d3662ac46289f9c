"""The in-process espeak-ng binding: audio, word marks, voices, WAV output."""

from __future__ import annotations

import re
import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from pipelines.engines.espeak import EspeakError, synthesize, write_wav

TEXT = "Hello, thank you for calling. We are open from nine to five, Monday to Friday!"


def _words(text: str) -> list[str]:
    return text.split()


def test_synthesis_is_audible_pcm_at_espeaks_rate() -> None:
    result = synthesize(TEXT)
    assert result.sample_rate == 22050
    assert len(result.pcm) % 2 == 0
    samples = np.frombuffer(result.pcm, dtype=np.int16)
    assert 3.0 < result.duration_secs < 8.0
    assert np.abs(samples).max() > 5000


def test_word_marks_cover_the_text_in_order() -> None:
    result = synthesize(TEXT)
    assert [m.word for m in result.words] == _words(TEXT)
    starts = [m.start_ms for m in result.words]
    assert starts == sorted(starts)
    assert len(set(starts)) == len(starts), "each word should start at its own time"
    assert starts[-1] < result.duration_secs * 1000
    for mark in result.words:
        assert TEXT[mark.text_offset :].startswith(mark.word)


def test_words_espeak_merges_still_get_marks() -> None:
    # espeak reports no word event for "am" in "I am" or "the" in "of the".
    text = "Yes I am here, it is a test of the system"
    result = synthesize(text)
    assert [m.word for m in result.words] == text.split()
    starts = [m.start_ms for m in result.words]
    assert starts == sorted(starts)
    by_word = {m.word: m.start_ms for m in result.words}
    assert by_word["I"] < by_word["am"] < by_word["here,"]
    assert by_word["of"] < by_word["the"] < by_word["system"]


def test_punctuation_tokens_are_not_words() -> None:
    result = synthesize("yes - no ... maybe")
    assert [m.word for m in result.words] == ["yes", "no", "maybe"]


def test_word_marks_use_character_offsets_for_non_ascii_text() -> None:
    text = "Привет, как дела? Всё хорошо."
    result = synthesize(text, voice="ru")
    assert [m.word for m in result.words] == _words(text)
    assert [m.text_offset for m in result.words] == [m.start() for m in re.finditer(r"\S+", text)]


def test_numbers_keep_their_written_form() -> None:
    result = synthesize("call 1234 now")
    assert [m.word for m in result.words] == ["call", "1234", "now"]


def test_rate_changes_duration_and_does_not_stick() -> None:
    normal = synthesize("what are your opening hours").duration_secs
    fast = synthesize("what are your opening hours", rate_wpm=350).duration_secs
    again = synthesize("what are your opening hours").duration_secs
    assert fast < normal * 0.75
    assert again == pytest.approx(normal, abs=0.005)


def test_unknown_voice_is_a_clear_error() -> None:
    with pytest.raises(EspeakError, match="no voice named 'no-such-voice'"):
        synthesize("hello", voice="no-such-voice")
    assert synthesize("hello").pcm  # the previous voice is still usable


def test_concurrent_threads_take_turns() -> None:
    # espeak-ng's output varies by a sample or so between calls (its wave generator keeps state
    # across utterances), so compare what matters: words, timing, length.
    expected = synthesize(TEXT)
    results = []

    def run() -> None:
        results.append(synthesize(TEXT))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    for result in results:
        assert [(m.word, m.text_offset) for m in result.words] == [
            (m.word, m.text_offset) for m in expected.words
        ]
        for got, want in zip(result.words, expected.words, strict=True):
            assert abs(got.start_ms - want.start_ms) <= 25
        assert result.duration_secs == pytest.approx(expected.duration_secs, abs=0.03)


def test_write_wav_resamples(tmp_path: Path) -> None:
    path = tmp_path / "hello.wav"
    result = write_wav(path, "hello there", sample_rate=8000)
    with wave.open(str(path)) as wav:
        assert wav.getframerate() == 8000
        assert wav.getnchannels() == 1
        assert wav.getsampwidth() == 2
        assert wav.getnframes() == pytest.approx(result.duration_secs * 8000, abs=2)
