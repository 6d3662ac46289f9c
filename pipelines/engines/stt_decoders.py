"""The pocketsphinx decoders of one STT worker process, one per open stream.

Creating a decoder loads the acoustic model, dictionary and language model (~0.6-0.8 s of CPU
here), far too slow to do when a call starts, so closed streams return their decoder to a free
list and the worker keeps a few spare ones made while it is idle. A reused decoder must not carry
the previous caller over: its cepstral mean (CMN, which adapts to the line and speaker) is reset
and any grammar the next stream does not want is removed.

This module is plain synchronous code with no IPC, so it can be tested in-process; the worker
entry point (:mod:`.stt_worker_main`) only translates frames into these calls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pocketsphinx import Decoder

Mode = Literal["grammar", "general"]
GRAMMAR_SEARCH = "grammar"


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

    def __init__(self, spare: int = 1, decoder_options: dict[str, Any] | None = None) -> None:
        self._spare = spare
        # fwdflat off: its second pass runs inside end_utt() and costs ~7% of the utterance
        # (0.7 s after a 10 s message), long enough to miss the turn-stop strategy's wait for
        # the final transcript; on espeak speech it changed no result. Grammar searches never
        # use it. "FATAL": a phrase outside the grammar is logged as an ERROR otherwise.
        self._options = {"loglevel": "FATAL", "fwdflat": False, **(decoder_options or {})}
        self._free: list[_Slot] = []
        self._streams: dict[int, _Stream] = {}
        self._initial_cmn: str | None = None
        self.stats = DecoderStats()

    # --- decoder supply ------------------------------------------------------------------------

    def _create(self) -> _Slot:
        started = time.perf_counter()
        decoder = Decoder(**self._options)
        self.stats.creation_secs.append(time.perf_counter() - started)
        self.stats.created += 1
        if self._initial_cmn is None:
            self._initial_cmn = decoder.get_cmn()
        return _Slot(decoder)

    def prewarm(self) -> None:
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
                    slot.decoder.add_jsgf_string(GRAMMAR_SEARCH, grammar)
                    slot.grammar = grammar
        except Exception:
            self._free.append(slot)
            raise
        mode: Mode = "grammar" if grammar is not None else "general"
        self._activate(slot, mode)
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
            stream.slot.decoder.end_utt()
        stream.error = None
        self._activate(stream.slot, stream.mode)
        stream.slot.decoder.start_utt()
        stream.in_utterance = True
        stream.audio_bytes = 0

    def feed(self, stream_id: int, pcm: bytes) -> None:
        stream = self._get(stream_id)
        if not stream.in_utterance:
            stream.error = stream.error or "audio fed outside an utterance (begin() missing)"
            return
        try:
            stream.slot.decoder.process_raw(pcm, False, False)
            stream.audio_bytes += len(pcm)
        except Exception as exc:
            stream.error = stream.error or f"decoding failed: {exc}"

    def record_error(self, stream_id: int, message: str) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.error is None:
            stream.error = message

    def end(self, stream_id: int) -> str:
        """Final hypothesis of the utterance, "" when nothing matched."""
        stream = self._get(stream_id)
        if not stream.in_utterance:
            raise StreamError(stream.error or f"stream {stream_id}: end() without begin()")
        stream.in_utterance = False
        stream.slot.decoder.end_utt()
        if stream.error is not None:
            error, stream.error = stream.error, None
            raise StreamError(f"stream {stream_id}: {error}")
        hyp = stream.slot.decoder.hyp()
        return hyp.hypstr.strip() if hyp is not None and hyp.hypstr else ""

    def close(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return
        if stream.in_utterance:
            stream.slot.decoder.end_utt()
        self._free.append(stream.slot)

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    @property
    def free_decoders(self) -> int:
        return len(self._free)
