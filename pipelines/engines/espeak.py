"""In-process espeak-ng synthesis through ctypes, with word timings.

The library comes from ``espeakng-loader`` (it ships ``libespeak-ng.so`` and the voice data but no
``espeak-ng`` command), so there is nothing to install system-wide and no process to spawn per
sentence. The gateway itself never calls this module on its event loop: it goes through
:class:`pipelines.engines.tts_worker.TtsWorker`, whose worker process is the only caller there.
Tests and test-audio generation call it directly.

espeak-ng keeps its state (current voice, rate, the synthesis callback, output buffers) in
process-wide globals and is not thread-safe, so every call here holds one module lock for the
whole voice-set + synthesis sequence. Two threads can call :func:`synthesize`; they just take
turns.
"""

from __future__ import annotations

import ctypes
import re
import threading
import wave
from dataclasses import dataclass, field
from pathlib import Path

import espeakng_loader

__all__ = [
    "DEFAULT_RATE_WPM",
    "EspeakError",
    "Synthesis",
    "WordMark",
    "resample_pcm16",
    "synthesize",
    "write_wav",
]

# speak_lib.h constants. Only the ones used here.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return errors instead of calling exit() inside the library
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EE_OK = 0

DEFAULT_RATE_WPM = 175  # espeakRATE_NORMAL
_RATE_MIN, _RATE_MAX = 80, 450


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    ]


class _Event(ctypes.Structure):
    """``espeak_EVENT`` from speak_lib.h."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based, in characters (not bytes)
        ("length", ctypes.c_int),  # word length in characters
        ("audio_position", ctypes.c_int),  # ms from the start of this synthesis
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


class EspeakError(RuntimeError):
    """espeak-ng refused a request (unknown voice, failed initialisation, synthesis error)."""


@dataclass(frozen=True)
class WordMark:
    """Where a word of the input text starts in the synthesised audio.

    ``text_offset`` is a 0-based index into the Python string that was synthesised, so callers
    can map a mark back to their own text without re-tokenising it.
    """

    word: str
    start_ms: int
    text_offset: int


@dataclass(frozen=True)
class Synthesis:
    """Synthesised speech: 16-bit little-endian mono PCM at espeak's own rate."""

    pcm: bytes
    sample_rate: int
    words: list[WordMark] = field(default_factory=list)

    @property
    def duration_secs(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate if self.sample_rate else 0.0


class _Engine:
    """The loaded library plus the state of the synthesis in progress.

    One instance per process, created on first use: initialising espeak-ng loads phoneme data
    (~tens of ms), which callers that never synthesise should not pay on import.
    """

    def __init__(self) -> None:
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        self._lib.espeak_SetSynthCallback.restype = None
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetVoiceByName.restype = ctypes.c_int
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_SetParameter.restype = ctypes.c_int
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        self._lib.espeak_Synth.restype = ctypes.c_int

        data_path = espeakng_loader.get_data_path().encode()
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}) with data at {data_path!r}")
        self.sample_rate = rate
        # Kept as an attribute: ctypes does not hold a reference to the callback, and the
        # library would call freed memory once the function object was collected.
        self._callback = _SynthCallback(self._on_synth)
        self._lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None
        self._chunks: list[bytes] = []
        self._events: list[tuple[int, int, int]] = []

    def _on_synth(
        self,
        wav: ctypes._Pointer[ctypes.c_short] | None,
        num_samples: int,
        events: ctypes._Pointer[_Event],
    ) -> int:
        if wav and num_samples > 0:
            self._chunks.append(ctypes.string_at(wav, num_samples * 2))
        i = 0
        while events and events[i].type != _EVENT_LIST_TERMINATED:
            ev = events[i]
            if ev.type == _EVENT_WORD:
                self._events.append((ev.text_position, ev.length, ev.audio_position))
            i += 1
        return 0  # 0 = continue synthesis

    def synthesize(self, text: str, voice: str, rate_wpm: int | None) -> Synthesis:
        if voice != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise EspeakError(f"espeak-ng has no voice named {voice!r}")
            self._voice = voice
        # Rate is global and sticky: set it on every call so one caller's rate never leaks
        # into the next caller's speech.
        rate = DEFAULT_RATE_WPM if rate_wpm is None else max(_RATE_MIN, min(_RATE_MAX, rate_wpm))
        self._lib.espeak_SetParameter(_PARAM_RATE, rate, 0)

        self._chunks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        err = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != _EE_OK:
            raise EspeakError(f"espeak_Synth failed ({err})")
        pcm = b"".join(self._chunks)
        words = _word_marks(text, self._events, len(pcm) * 1000 // (2 * self.sample_rate))
        self._chunks, self._events = [], []
        return Synthesis(pcm=pcm, sample_rate=self.sample_rate, words=words)


_TOKEN = re.compile(r"\S+")


def _word_marks(text: str, events: list[tuple[int, int, int]], duration_ms: int) -> list[WordMark]:
    """One mark per written word of ``text``, from espeak's (1-based position, length, ms) events.

    Words are cut from the caller's text, not espeak's normalised form, so "5" stays "5" and
    downstream word matching sees the text it sent. espeak reports no event for some words it
    merges with a neighbour ("I am", "of the") and several for one token ("1234"); merged words
    get a time interpolated by character position between their timed neighbours, and a token
    keeps its first event, so marks stay one per word and in order. Tokens with no letter or
    digit ("-", "...") are not words and get no mark.
    """
    tokens = [m for m in _TOKEN.finditer(text) if any(c.isalnum() for c in m.group())]
    times: list[int | None] = [None] * len(tokens)
    t = 0
    for position, _length, audio_ms in sorted(events, key=lambda e: e[0]):
        offset = position - 1
        while t < len(tokens) and tokens[t].end() <= offset:
            t += 1
        if t < len(tokens) and tokens[t].start() <= offset and times[t] is None:
            times[t] = audio_ms

    marks: list[WordMark] = []
    last_ms, last_offset = 0, 0
    for i, token in enumerate(tokens):
        ms = times[i]
        if ms is None:
            nxt = next((j for j in range(i + 1, len(tokens)) if times[j] is not None), None)
            next_ms = times[nxt] if nxt is not None else duration_ms
            next_offset = tokens[nxt].start() if nxt is not None else len(text)
            assert next_ms is not None
            span = max(1, next_offset - last_offset)
            ms = last_ms + (max(next_ms, last_ms) - last_ms) * (token.start() - last_offset) // span
        ms = max(ms, last_ms)
        marks.append(WordMark(word=token.group(), start_ms=ms, text_offset=token.start()))
        last_ms, last_offset = ms, token.start()
    return marks


_lock = threading.Lock()
_engine: _Engine | None = None


def synthesize(text: str, voice: str = "en-us", rate_wpm: int | None = None) -> Synthesis:
    """Synthesise ``text`` with an espeak-ng voice; blocks for the whole synthesis.

    ``rate_wpm`` is clamped to espeak's 80..450 words per minute; None means its default (175).
    Raises :class:`EspeakError` for an unknown voice.
    """
    global _engine
    with _lock:
        if _engine is None:
            _engine = _Engine()
        return _engine.synthesize(text, voice, rate_wpm)


def resample_pcm16(pcm: bytes, from_rate: int, to_rate: int, quality: str = "HQ") -> bytes:
    """Resample whole-buffer S16LE mono PCM (soxr); a no-op when the rates match."""
    if from_rate == to_rate or not pcm:
        return pcm
    # Imported here: numpy costs the synthesis worker ~0.4 s of start-up and it never resamples.
    import numpy as np
    import soxr

    samples = np.frombuffer(pcm, dtype=np.int16)
    out = soxr.resample(samples, from_rate, to_rate, quality=quality)
    return np.asarray(out, dtype=np.int16).tobytes()


def write_wav(
    path: str | Path,
    text: str,
    voice: str = "en-us",
    sample_rate: int | None = None,
    rate_wpm: int | None = None,
) -> Synthesis:
    """Synthesise ``text`` into a mono 16-bit WAV file, resampled if ``sample_rate`` is given.

    Returns the synthesis at espeak's own rate (word marks are in ms, so they stay valid for the
    resampled file).
    """
    synthesis = synthesize(text, voice=voice, rate_wpm=rate_wpm)
    rate = sample_rate or synthesis.sample_rate
    pcm = resample_pcm16(synthesis.pcm, synthesis.sample_rate, rate)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return synthesis
