"""The pocketsphinx decoders of one STT worker process, one per open stream.

Creating a decoder loads the acoustic model, dictionary and language model (~0.6-0.8 s of CPU
here), far too slow to do when a call starts, so closed streams return their decoder to a free
list and the worker keeps a few spare ones made while it is idle. A reused decoder must not carry
the previous caller over: its cepstral mean (CMN, which adapts to the line and speaker) is reset
and any grammar the next stream does not want is removed.

Grammar mode is tuned so a caller's very first words are understood and speech outside the
grammar gives "" (the agent then re-prompts). Measured with
``python -m tests.engines.bench_recognition`` (espeak speech, five voices/speeds, first utterance
of a fresh stream): intent accuracy 56% -> 98%, out-of-grammar audio accepted 59% -> 0%.

* **Noise floor.** Digital silence (exact zeros: a quiet line's pre-roll, the service's padding)
  has no log energy, and pocketsphinx's noise removal and silence model fail on it: words next to
  it are dropped or garbled. Every sample gets a fixed noise of RMS :data:`NOISE_FLOOR_RMS`
  (about -61 dBFS, under any real line's hiss) added first.
* **Per-utterance CMN.** pocketsphinx's live CMN normalises an utterance by the mean of the
  *previous* ones, and a fresh stream starts from a built-in guess far from any real line (c0 40;
  espeak measures ~60), so a call's first utterance was decoded against the wrong mean
  ("goodbye" -> ""). In grammar mode a stream now buffers the first :data:`CMN_DELAY_SECS` of
  each utterance, measures that audio's own mean (:meth:`DecoderHost._measure_cmn`), blends in
  what the caller's earlier utterances measured, and only then decodes the buffer and the rest as
  it comes. An utterance shorter than that is decoded whole in ``end()`` (~60 ms for 0.95 s).
  General mode (messages, decoded at ~3x real time: catching up a second would stall the worker)
  starts from the caller's mean measured so far and lets the live CMN adapt during the message.
* **Whole-sentence results.** With lattice rescoring (``bestpath``) the grammar search could
  answer a path that stops mid-sentence ("i want to leave a", "i would like"); the grammar search
  is created without it, so results are sentences of the grammar. That was also most of the time
  ``end()`` took (the lattice of a 3 s utterance cost ~100 ms with ``compallsen``).
* **Out-of-grammar rejection.** A grammar search always answers with *some* sentence, so German
  came back as "yeah fee" ("fee": the prices answer). Decoders score every senone each frame
  (``compallsen``), so the acoustic scores of a path are relative to the best senone of the whole
  model - to an unconstrained recogniser. :func:`_path_score`, the grammar path's score per frame
  of speech, is a log-likelihood ratio against that; below :data:`REJECT_BELOW` the result is "".
  Two cheaper checks catch what the score misses: noise can match a word ("checkup") as well as
  speech does, so an utterance needs :data:`MIN_VOICED_FRAMES` frames with a pitch
  (:class:`_VoicingCounter`); and a few words matched to a piece of foreign speech, the rest
  called silence, must not leave more than :data:`MAX_UNEXPLAINED` of the loud frames outside
  the words (:func:`_unexplained`).

This module is plain synchronous code with no IPC, so it can be tested in-process; the worker
entry point (:mod:`.stt_worker_main`) only translates frames into these calls.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pocketsphinx import Decoder

Mode = Literal["grammar", "general"]
GRAMMAR_SEARCH = "grammar"

SAMPLE_RATE = 16000
_FRAME_SAMPLES = SAMPLE_RATE // 100  # pocketsphinx's 10 ms frame shift

NOISE_FLOOR_RMS = 30.0
"""RMS (16-bit sample units) of the noise added to all audio. Without it (all else unchanged)
first-utterance intent accuracy on the benchmark fell from 98% to 66%; RMS 10 left part of the
loss in exploratory runs."""

CMN_DELAY_SECS = 1.0
"""Grammar mode: audio buffered before decoding starts, to measure its cepstral mean. Measuring
only 0.8 s cost ~2% first-utterance accuracy against the whole utterance's mean; 1.0 s and
1.5 s matched it. Catching up the buffer (~50 ms of decoding) happens while the caller talks."""

PRIOR_WEIGHT_FRAMES = 100.0
"""How much the caller's earlier utterances count in an utterance's CMN, in frames (the
utterance's own frames count one each): it steadies the mean of a short "no" and leaves a long
utterance normalised mostly by its own mean."""

_PRIOR_MAX_FRAMES = 500.0  # the running mean forgets beyond this, like pocketsphinx's live CMN

REJECT_BELOW = -7.5
"""Grammar mode: a result whose :func:`_path_score` is lower is returned as "".

Chosen with ``python -m tests.engines.bench_recognition --sweep``: 245 in-grammar utterances
(five espeak voices/speeds) and 46 out-of-grammar ones (German, French, Spanish, unrelated
English in three voices, reversed speech, noise), each as a fresh stream's first utterance and
as a later one. In-grammar scores: median -6.0, 1st percentile -7.4, lowest -7.65 (3 of 490
below -7.5). Out-of-grammar speech that passes the voicing and coverage checks: -7.56 (reversed
"goodbye", a short Spanish sentence) and below, mostly under -8.3. At -7.5 2% of in-grammar
utterances were lost and no out-of-grammar one accepted; -7.75 let 1-2 of 46 through, -7.25 lost
4-5% of in-grammar ones. The margin is thin: re-measure after changing the grammar's shape, the
acoustic model or the decoder options."""

MIN_VOICED_FRAMES = 4
"""Grammar mode: an utterance with fewer voiced 20 ms frames than this (80 ms) gives "".

Every phrase of the grammar has a vowel; hiss, clicks and breath have no pitch. The grammar path
matched white noise to "checkup" or "fee" with better scores than real speech gets. In-grammar
espeak utterances had 10 or more voiced frames, white noise none (its best pitch correlation
stays ~0.2 against the 0.5 required). Whispered speech has no pitch either and is rejected."""

MAX_UNEXPLAINED = 0.25
"""Grammar mode: when the recognised words leave more than this share of the utterance's loud
frames to silences and fillers (:func:`_unexplained`), the result is "".

The score of a path that matches a short piece of foreign speech with a few words and calls the
rest "silence" mixes those frames with real silence and can look fine ("Ich habe keine Ahnung"
-> "speak to", -6.6). In-grammar utterances left at most 11% of their loud frames unexplained
(99th percentile 8%); such out-of-grammar matches 40-70%."""

_VOICING_WINDOW = 640  # 40 ms: almost three periods of the lowest pitch looked for
_VOICING_HOP = 320  # 20 ms
_VOICING_NFFT = 2048
_PITCH_LAGS = slice(40, 229)  # 400 Hz down to 70 Hz
_VOICED_CORRELATION = 0.5
_VOICED_MIN_RMS = 100.0  # -50 dBFS: quieter frames are not counted (the noise floor is 30)

# The cepstral mean of buffered audio comes from a small extra decoder per worker (no language
# model, a one-word dictionary and grammar, no compallsen: ~6 MB, ~4 ms per second of audio).
# pocketsphinx has no feature-only call, and the search that has to follow the features costs
# ~50 ms per second of audio in a stream's decoder, which scores every senone.
_CMN_SEARCH = "_cmn"
_CMN_JSGF = "#JSGF V1.0;\ngrammar _cmn;\npublic <cmn> = hi;\n"

# Fillers the grammar search may put between words; their frames are not the caller's words.
_NON_WORDS = frozenset({"<s>", "</s>", "<sil>", "[NOISE]", "[SPEECH]", "(NULL)"})
# A silence or filler scoring worse per frame than this covers speech the grammar could not place
# (silences of in-grammar utterances: 99% above -3.3; of out-of-grammar ones: down to -12).
_SPEECHLIKE_FILLER = -4.0
# Word segments from the search itself (bestpath off) carry acoustic scores shifted right by
# SENSCR_SHIFT (10 bits), the search's internal scale; lattice segments carry them unshifted.
_HISTORY_SCORE_SCALE = float(1 << 10)
_LN_FLOOR = -744.0
_LOUD_MIN_RMS = 150.0
_LOUD_BELOW_PEAK = 10 ** (-30 / 20)  # loud: within 30 dB of the utterance's loudest frame


def _frame_rms(pieces: list[np.ndarray]) -> np.ndarray:
    """RMS of each 10 ms frame of the concatenated audio."""
    if not pieces:
        return np.empty(0)
    samples = np.concatenate(pieces).astype(np.float64)
    n = len(samples) // _FRAME_SAMPLES
    frames = samples[: n * _FRAME_SAMPLES].reshape(n, _FRAME_SAMPLES)
    return np.sqrt(
        (frames**2).mean(axis=1)
    )  # ln of the smallest double: the binding's probabilities underflow below it


def _noise_table() -> np.ndarray:
    """A fixed noise sequence (seeded): the same audio always decodes to the same result."""
    samples = np.random.default_rng(20240521).normal(0.0, NOISE_FLOOR_RMS, 48_017)
    return np.round(samples).astype(np.int32)


_NOISE = _noise_table()


def _add_noise_floor(pcm: bytes, offset: int, rms: float) -> bytes:
    """``pcm`` (S16LE) plus the noise table from sample ``offset`` on, scaled to ``rms``."""
    if rms <= 0.0 or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    noise = _NOISE[np.arange(offset, offset + len(samples)) % len(_NOISE)]
    if rms != NOISE_FLOOR_RMS:
        noise = np.round(noise * (rms / NOISE_FLOOR_RMS)).astype(np.int32)
    return np.clip(samples + noise, -32768, 32767).astype("<i2").tobytes()


def _parse_cmn(text: str) -> np.ndarray | None:
    try:
        values = np.array([float(v) for v in text.split(",")], dtype=np.float64)
    except ValueError:
        return None
    return values if values.size and bool(np.all(np.isfinite(values))) else None


def _format_cmn(values: np.ndarray) -> str:
    return ",".join(f"{v:.4f}" for v in values)


def _window_autocorrelation() -> tuple[np.ndarray, np.ndarray]:
    window = np.hanning(_VOICING_WINDOW)
    spectrum = np.fft.rfft(window, _VOICING_NFFT)
    acf = np.fft.irfft(np.abs(spectrum) ** 2, _VOICING_NFFT)[:_VOICING_WINDOW]
    return window, acf / acf[0]


_WINDOW, _WINDOW_ACF = _window_autocorrelation()


class _VoicingCounter:
    """Counts voiced frames (a clear pitch period) in audio fed piecewise.

    Autocorrelation pitch detection, with the window's own autocorrelation divided out (Boersma
    1993) so that long periods are not penalised. Stops computing once ``enough`` were found.
    """

    def __init__(self, enough: int) -> None:
        self.voiced = 0
        self._enough = enough
        self._carry = np.empty(0, dtype=np.float64)

    def add(self, samples: np.ndarray) -> None:
        if self.voiced >= self._enough:
            return
        x = np.concatenate([self._carry, samples.astype(np.float64)])
        count = (len(x) - _VOICING_WINDOW) // _VOICING_HOP + 1
        if count <= 0:
            self._carry = x
            return
        self._carry = x[count * _VOICING_HOP :]
        frames = np.lib.stride_tricks.sliding_window_view(x, _VOICING_WINDOW)[::_VOICING_HOP]
        frames = frames[:count] - frames[:count].mean(axis=1, keepdims=True)
        loud = np.sqrt((frames**2).mean(axis=1)) > _VOICED_MIN_RMS
        if not loud.any():
            return
        spectra = np.fft.rfft(frames[loud] * _WINDOW, _VOICING_NFFT, axis=1)
        acf = np.fft.irfft(np.abs(spectra) ** 2, _VOICING_NFFT, axis=1)
        acf = acf[:, _PITCH_LAGS] / np.maximum(acf[:, :1], 1e-9)
        peaks = (acf / _WINDOW_ACF[_PITCH_LAGS]).max(axis=1)
        self.voiced += int((peaks > _VOICED_CORRELATION).sum())


@dataclass(frozen=True)
class _Seg:
    word: str
    start: int  # first frame
    frames: int
    ln_ascore: float  # natural-log acoustic score of the whole segment


def _segments(decoder: Decoder, scale: float) -> list[_Seg]:
    segs = decoder.seg()
    if segs is None:
        return []
    out = []
    for seg in segs:
        ascore = seg.ascore
        ln_ascore = math.log(ascore) * scale if ascore > 0.0 else _LN_FLOOR * scale
        out.append(_Seg(seg.word, seg.start_frame, seg.end_frame - seg.start_frame + 1, ln_ascore))
    return out


def _path_score(segs: Iterable[_Seg]) -> float | None:
    """Mean acoustic log-score per frame of the recognised words, relative to each frame's best
    senone; None when no word was recognised.

    Silences and fillers count only when they score like speech (:data:`_SPEECHLIKE_FILLER`):
    out-of-grammar speech is often matched by a few words with long "silences" between them.
    """
    frames = 0
    total = 0.0
    words = 0
    for seg in segs:
        if seg.word in _NON_WORDS:
            if seg.word == "(NULL)" or seg.ln_ascore >= _SPEECHLIKE_FILLER * seg.frames:
                continue
        else:
            words += 1
        frames += seg.frames
        total += seg.ln_ascore
    return total / frames if words and frames else None


def _unexplained(segs: Iterable[_Seg], loudness: np.ndarray) -> float | None:
    """The share of the utterance's loud frames that the path put in silences or fillers."""
    if not len(loudness):
        return None
    peak = float(loudness.max())
    loud = loudness > max(_LOUD_MIN_RMS, peak * _LOUD_BELOW_PEAK)
    total = int(loud.sum())
    if not total:
        return None
    covered = 0
    for seg in segs:
        if seg.word not in _NON_WORDS:
            covered += int(loud[seg.start : seg.start + seg.frames].sum())
    return 1.0 - covered / total


@dataclass(frozen=True)
class Recognition:
    """The outcome of one utterance, with what the rejection decided on (for measurements)."""

    text: str  # what end() returns
    hypothesis: str  # the search's best sentence, before rejection
    score: float | None  # _path_score of the hypothesis (grammar mode), else None
    voiced_frames: int | None  # voiced frames counted, up to MIN_VOICED_FRAMES (grammar mode)
    unexplained: float | None  # _unexplained share of loud frames (grammar mode)
    mode: Mode
    cmn: str  # the cepstral mean the utterance was decoded with
    segments: tuple[tuple[str, int, float], ...] = ()  # (word, frames, acoustic ln-score)


@dataclass(frozen=True)
class Tuning:
    """Recognition settings (the module constants by default); the benchmark varies them."""

    noise_floor_rms: float = NOISE_FLOOR_RMS
    utterance_cmn: bool = True  # False: pocketsphinx's live CMN only
    cmn_delay_secs: float = CMN_DELAY_SECS
    prior_weight_frames: float = PRIOR_WEIGHT_FRAMES
    reject_below: float | None = REJECT_BELOW  # None: no score rejection
    min_voiced_frames: int = MIN_VOICED_FRAMES  # 0: no voicing or coverage check
    max_unexplained: float | None = MAX_UNEXPLAINED  # None: no coverage check
    grammar_bestpath: bool = False

    @classmethod
    def legacy(cls) -> Tuning:
        """The behaviour before these measures (with ``compallsen`` off), for comparisons."""
        return cls(
            noise_floor_rms=0.0,
            utterance_cmn=False,
            reject_below=None,
            min_voiced_frames=0,
            max_unexplained=None,
            grammar_bestpath=True,
        )


class StreamError(RuntimeError):
    """A stream operation failed; the message names the stream and the cause."""


@dataclass
class _Slot:
    """A decoder plus what it currently holds, so reuse can skip redundant work."""

    decoder: Decoder
    grammar: str | None = None  # the JSGF text loaded as GRAMMAR_SEARCH, if any


@dataclass
class _Stream:
    slot: _Slot
    mode: Mode
    in_utterance: bool = False
    error: str | None = None  # first failure of a no-reply op, reported by the next end()
    audio_bytes: int = 0
    # The current utterance: its mode, whether the decoder has started on it (grammar mode
    # buffers first), the buffered audio, samples seen (the noise table's offset), an odd
    # trailing byte kept for the next feed, the mean it is decoded with, its voicing.
    utterance_mode: Mode = "grammar"
    decoding: bool = False
    pending: bytearray = field(default_factory=bytearray)
    samples: int = 0
    odd_byte: bytes = b""
    cmn_used: str = ""
    voicing: _VoicingCounter | None = None
    loudness: list[np.ndarray] = field(default_factory=list)  # per-frame RMS (grammar mode)
    # The caller's cepstral mean so far, measured on their grammar-mode utterances.
    prior: np.ndarray | None = None
    prior_frames: float = 0.0


@dataclass
class DecoderStats:
    created: int = 0
    creation_secs: list[float] = field(default_factory=list)
    reused: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"created": self.created, "creation_secs": self.creation_secs, "reused": self.reused}


class DecoderHost:
    """Decoders by stream id, with a free list of ready-made ones.

    ``spare`` is how many unused decoders :meth:`idle` keeps ready; the worker calls it only
    when no stream is mid-utterance, because a creation blocks this process for most of a second.
    """

    def __init__(
        self,
        spare: int = 1,
        decoder_options: dict[str, Any] | None = None,
        tuning: Tuning | None = None,
    ) -> None:
        self._spare = spare
        # fwdflat off: its second pass runs inside end_utt() and costs ~7% of the utterance
        # (0.7 s after a 10 s message), long enough to miss the turn-stop strategy's wait for
        # the final transcript; on espeak speech it changed no result. Grammar searches never
        # use it. "FATAL": a phrase outside the grammar is logged as an ERROR otherwise.
        # compallsen: every senone is scored each frame, so path scores are relative to the whole
        # model's best, the rejection's reference (without it the scores did not separate
        # out-of-grammar speech). Grammar decoding drops from ~37x to ~20x real time; general
        # mode stays ~3x (it has most senones active anyway).
        self._options: dict[str, Any] = {
            "loglevel": "FATAL",
            "fwdflat": False,
            "compallsen": True,
            **(decoder_options or {}),
        }
        self.tuning = tuning or Tuning()
        self._free: list[_Slot] = []
        self._streams: dict[int, _Stream] = {}
        self._initial_cmn: str | None = None
        self._cmn_decoder: Decoder | None = None
        self.stats = DecoderStats()
        self.last: Recognition | None = None  # the latest end()'s details

    # --- decoder supply ------------------------------------------------------------------------

    def _create(self) -> _Slot:
        started = time.perf_counter()
        decoder = Decoder(**self._options)
        self.stats.creation_secs.append(time.perf_counter() - started)
        self.stats.created += 1
        if self._initial_cmn is None:
            self._initial_cmn = decoder.get_cmn()
        return _Slot(decoder)

    def _cmn_meter(self) -> Decoder:
        if self._cmn_decoder is None:
            options = {**self._options, "lm": None, "dict": None, "compallsen": False}
            decoder = Decoder(**options)
            decoder.add_word("hi", "HH AY", True)
            decoder.add_jsgf_string(_CMN_SEARCH, _CMN_JSGF)
            decoder.activate_search(_CMN_SEARCH)
            self._cmn_decoder = decoder
        return self._cmn_decoder

    def prewarm(self) -> None:
        if self.tuning.utterance_cmn:
            self._cmn_meter()
        while len(self._free) < self._spare:
            self._free.append(self._create())

    @property
    def busy(self) -> bool:
        return any(s.in_utterance for s in self._streams.values())

    def idle(self) -> None:
        """Top the free list up, one decoder per call, while no caller is talking."""
        if len(self._free) < self._spare and not self.busy:
            self._free.append(self._create())

    def _take(self, grammar: str | None) -> _Slot:
        if not self._free:
            return self._create()
        self.stats.reused += 1
        for i, slot in enumerate(self._free):
            if slot.grammar == grammar:
                return self._free.pop(i)
        return self._free.pop()

    def _add_grammar(self, decoder: Decoder, grammar: str) -> None:
        """Load ``grammar`` as GRAMMAR_SEARCH, without lattice best-path rescoring.

        ``bestpath`` is read when a search is created, so switching it off around this call
        leaves the general language model's search as configured.
        """
        config = decoder.config
        saved = config["bestpath"]
        config["bestpath"] = self.tuning.grammar_bestpath
        try:
            decoder.add_jsgf_string(GRAMMAR_SEARCH, grammar)
        finally:
            config["bestpath"] = saved

    # --- stream operations ---------------------------------------------------------------------

    def open(self, stream_id: int, grammar: str | None) -> None:
        if stream_id in self._streams:
            raise StreamError(f"stream {stream_id} is already open")
        slot = self._take(grammar)
        try:
            if slot.grammar != grammar:
                slot.decoder.activate_search()  # the default LM, so the old grammar is inactive
                if slot.grammar is not None:
                    slot.decoder.remove_search(GRAMMAR_SEARCH)
                    slot.grammar = None
                if grammar is not None:
                    self._add_grammar(slot.decoder, grammar)
                    slot.grammar = grammar
        except Exception:
            self._free.append(slot)
            raise
        mode: Mode = "grammar" if grammar is not None else "general"
        if self._initial_cmn is not None:
            slot.decoder.set_cmn(self._initial_cmn)
        self._streams[stream_id] = _Stream(slot=slot, mode=mode)

    def _get(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamError(f"stream {stream_id} is not open")
        return stream

    @staticmethod
    def _activate(slot: _Slot, mode: Mode) -> None:
        want = GRAMMAR_SEARCH if mode == "grammar" and slot.grammar is not None else None
        if slot.decoder.current_search() != (want or "_default"):
            slot.decoder.activate_search(want)

    def set_mode(self, stream_id: int, mode: Mode) -> None:
        """Takes effect at the next :meth:`begin`; a grammarless stream stays general."""
        if mode not in ("grammar", "general"):
            raise StreamError(f"unknown recognition mode {mode!r}")
        self._get(stream_id).mode = mode

    def begin(self, stream_id: int) -> None:
        stream = self._get(stream_id)
        if stream.in_utterance:  # a lost end(): finish the old utterance rather than fail
            self._abandon(stream)
        stream.error = None
        stream.in_utterance = True
        stream.audio_bytes = 0
        stream.samples = 0
        stream.odd_byte = b""
        grammar = stream.mode == "grammar" and stream.slot.grammar is not None
        stream.utterance_mode = "grammar" if grammar else "general"
        enough = self.tuning.min_voiced_frames
        stream.voicing = _VoicingCounter(enough) if grammar and enough else None
        stream.loudness = []
        if not (grammar and self.tuning.utterance_cmn):
            # Decoded as the audio comes, from this caller's mean so far.
            self._start_decoding(stream, self._cmn_for(stream, None, 0))

    def feed(self, stream_id: int, pcm: bytes) -> None:
        stream = self._get(stream_id)
        if not stream.in_utterance:
            stream.error = stream.error or "audio fed outside an utterance (begin() missing)"
            return
        try:
            self._feed(stream, pcm)
            stream.audio_bytes += len(pcm)
        except Exception as exc:  # noqa: BLE001 - nobody waits for a feed: the next end() reports
            stream.error = stream.error or f"decoding failed: {exc}"

    def _feed(self, stream: _Stream, pcm: bytes) -> None:
        if stream.odd_byte:
            pcm = stream.odd_byte + pcm
        stream.odd_byte = pcm[len(pcm) & ~1 :]
        pcm = pcm[: len(pcm) & ~1]
        if not pcm:
            return
        audio = _add_noise_floor(pcm, stream.samples, self.tuning.noise_floor_rms)
        stream.samples += len(pcm) // 2
        if stream.voicing is not None:
            samples = np.frombuffer(audio, dtype="<i2")
            stream.voicing.add(samples)
            stream.loudness.append(samples)
        if stream.decoding:
            stream.slot.decoder.process_raw(audio, False, False)
            return
        stream.pending += audio
        if len(stream.pending) >= int(self.tuning.cmn_delay_secs * SAMPLE_RATE) * 2:
            self._start_buffered(stream)

    def _start_buffered(self, stream: _Stream) -> None:
        """Grammar mode: normalise by the buffered audio's own mean, then decode the buffer."""
        pending = bytes(stream.pending)
        stream.pending.clear()
        samples = len(pending) // 2
        measured = self._measure_cmn(self._cmn_meter(), pending)
        self._start_decoding(stream, self._cmn_for(stream, measured, samples))
        if measured is not None:
            self._update_prior(stream, measured, samples)
        if pending:
            stream.slot.decoder.process_raw(pending, False, False)

    @staticmethod
    def _measure_cmn(decoder: Decoder, pcm: bytes) -> np.ndarray | None:
        """The cepstral mean of ``pcm``, from pocketsphinx's own front end.

        A whole-utterance ``process_raw`` right after ``reinit_feat`` runs pocketsphinx's batch
        CMN, which leaves the mean of exactly that audio behind (a streamed one only nudges the
        running mean); ``reinit_feat`` also restarts the noise estimate, so nothing of the
        previous measurement (another caller's) leaks into this one.
        """
        if len(pcm) < 2 * _FRAME_SAMPLES * 2:
            return None
        decoder.reinit_feat()
        decoder.start_utt()
        try:
            decoder.process_raw(pcm, True, True)
            measured = _parse_cmn(decoder.get_cmn())
        finally:
            decoder.end_utt()
        return measured

    def _cmn_for(self, stream: _Stream, measured: np.ndarray | None, samples: int) -> str | None:
        """The mean to decode with: the utterance's own, steadied by the caller's earlier ones;
        None to keep the decoder's live mean (nothing measured on this stream yet)."""
        prior = stream.prior
        if measured is None:
            return None if prior is None else _format_cmn(prior)
        if prior is None:
            return _format_cmn(measured)
        frames = samples / _FRAME_SAMPLES
        weight = min(self.tuning.prior_weight_frames, stream.prior_frames)
        return _format_cmn((weight * prior + frames * measured) / (weight + frames))

    @staticmethod
    def _update_prior(stream: _Stream, measured: np.ndarray, samples: int) -> None:
        frames = samples / _FRAME_SAMPLES
        if stream.prior is None:
            stream.prior, stream.prior_frames = measured, frames
            return
        total = stream.prior_frames + frames
        stream.prior = (stream.prior_frames * stream.prior + frames * measured) / total
        stream.prior_frames = min(total, _PRIOR_MAX_FRAMES)

    def _start_decoding(self, stream: _Stream, cmn: str | None) -> None:
        decoder = stream.slot.decoder
        self._activate(stream.slot, stream.utterance_mode)
        if self.tuning.utterance_cmn:
            # A fresh front end: pocketsphinx's noise removal keeps an estimate across
            # utterances, which would carry the previous utterance (or caller) into this one
            # (measured: ~1% fewer first utterances understood). It resets the CMN too.
            cmn = cmn if cmn is not None else decoder.get_cmn()
            decoder.reinit_feat()
        if cmn is not None:
            decoder.set_cmn(cmn)
        decoder.start_utt()
        stream.cmn_used = cmn if cmn is not None else decoder.get_cmn()
        stream.decoding = True

    def _abandon(self, stream: _Stream) -> None:
        if stream.decoding:
            stream.slot.decoder.end_utt()
        stream.decoding = False
        stream.in_utterance = False
        stream.pending.clear()

    def record_error(self, stream_id: int, message: str) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.error is None:
            stream.error = message

    def end(self, stream_id: int) -> str:
        """Final hypothesis of the utterance, "" when nothing (of the grammar) was recognised."""
        return self.end_detailed(stream_id).text

    def end_detailed(self, stream_id: int) -> Recognition:
        """:meth:`end`, with the scores the result was accepted or rejected on."""
        stream = self._get(stream_id)
        if not stream.in_utterance:
            raise StreamError(stream.error or f"stream {stream_id}: end() without begin()")
        try:
            if not stream.decoding and stream.error is None:
                self._start_buffered(stream)  # shorter than the delay: decoded now, whole
        except Exception as exc:  # noqa: BLE001 - raised below, after the decoder is reset
            stream.error = stream.error or f"decoding failed: {exc}"
        self._abandon(stream)  # ends the decoder's utterance
        if stream.error is not None:
            error, stream.error = stream.error, None
            raise StreamError(f"stream {stream_id}: {error}")
        decoder = stream.slot.decoder
        hyp = decoder.hyp()
        hypothesis = hyp.hypstr.strip() if hyp is not None and hyp.hypstr else ""
        text, score, voiced, unexplained = hypothesis, None, None, None
        segs: list[_Seg] = []
        if hypothesis and stream.utterance_mode == "grammar":
            scale = 1.0 if self.tuning.grammar_bestpath else _HISTORY_SCORE_SCALE
            segs = _segments(decoder, scale)
            score = _path_score(segs)
            threshold = self.tuning.reject_below
            if threshold is not None and (score is None or score < threshold):
                text = ""
            if stream.voicing is not None:
                unexplained = _unexplained(segs, _frame_rms(stream.loudness))
                voiced = stream.voicing.voiced
                if voiced < self.tuning.min_voiced_frames:
                    text = ""
                limit = self.tuning.max_unexplained
                if limit is not None and unexplained is not None and unexplained > limit:
                    text = ""
        self.last = Recognition(
            text=text,
            hypothesis=hypothesis,
            score=score,
            voiced_frames=voiced,
            unexplained=unexplained,
            mode=stream.utterance_mode,
            cmn=stream.cmn_used,
            segments=tuple((s.word, s.frames, s.ln_ascore) for s in segs),
        )
        return self.last

    def close(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        self._abandon(stream)
        self._free.append(stream.slot)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def free_decoders(self) -> int:
        return len(self._free)
