"""Recognition quality of grammar mode: ``python -m tests.engines.bench_recognition``.

Measures, on deterministic espeak-ng speech, how well the secretary agent's grammar recognises
what callers say, both as the *first* utterance of a fresh stream (a new call: nothing adapted
yet) and as a *later* one (the stream has heard the caller before):

* in-grammar: every FAQ phrase, message trigger phrase and goodbye phrase of the secretary, plus
  a few keyword-only utterances, each in five voices/speeds. Scored as exact text and as the
  agent's intent (``SecretaryBrain.on_user_text(text).intent``, the same as for the phrase).
* out-of-grammar: German, French and Spanish sentences, unrelated English, time-reversed English,
  noise and silence. A false accept is any non-empty transcript; "acted on" counts those the
  agent would answer instead of re-prompting.

Utterances are decoded in-process by :class:`~pipelines.engines.stt_decoders.DecoderHost` (the
code the STT workers run) with the audio framing of the STT service: 300, 150 or 50 ms of silence
before the speech (in turn), 500 ms after it (VAD stop_secs plus the service's trailing
padding), in 100 ms batches. The
``end()`` latency is measured through a real worker pool with audio fed in real time.

Options: ``--after-only`` skips the "before" configuration (pocketsphinx's live CMN, no noise
floor, no rejection); ``--sweep`` prints accuracy / false accepts for a range of rejection
thresholds (how :data:`~pipelines.engines.stt_decoders.REJECT_BELOW` was chosen).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pipelines.agent_config import AgentConfig
from pipelines.engines.stt_decoders import (
    MAX_UNEXPLAINED,
    MIN_VOICED_FRAMES,
    DecoderHost,
    Recognition,
    Tuning,
)
from pipelines.engines.stt_pool import SttWorkerPool
from pipelines.grammar import build_jsgf
from pipelines.scripted_agent import REPROMPT, SecretaryBrain
from tests.audio_helpers import chunks, noise, silence, speech

CONFIG = AgentConfig.default_secretary()
JSGF = build_jsgf(CONFIG)

Voice = tuple[str, int | None]  # espeak voice, words per minute (None: the voice's default)
VOICES: tuple[Voice, ...] = (
    ("en-us", None),
    ("en", None),
    ("en-us", 140),
    ("en-us", 200),
    ("en-gb-x-rp", None),
)
KEYWORDS = ("hours", "prices", "address", "appointment", "message")

FOREIGN = (
    ("de", "Guten Morgen, wie geht es Ihnen heute?"),
    ("de", "Ich möchte gerne mit jemandem sprechen."),
    ("de", "Das Wetter ist heute sehr schön."),
    ("de", "Können Sie mir bitte helfen?"),
    ("fr", "Bonjour, je voudrais parler au directeur."),
    ("fr", "Il fait très beau aujourd'hui."),
    ("fr", "Je ne comprends pas la question."),
    ("fr", "Pouvez-vous répéter, s'il vous plaît?"),
    ("es", "Buenos días, ¿cómo está usted?"),
    ("es", "Me gustaría hablar con alguien, por favor."),
    ("es", "El tren sale a las ocho de la mañana."),
    ("es", "No entiendo lo que dice."),
)
UNRELATED = (
    "the weather is lovely today",
    "my car broke down on the highway",
    "the quick brown fox jumps over the lazy dog",
    "I left my umbrella on the train yesterday",
    "the children played football in the garden",
    "we had pasta and salad for dinner",
    "can you recommend a good restaurant nearby",
    "i need to buy some milk and bread",
)
REVERSED = (
    "the weather is lovely today",
    "my car broke down on the highway",
    "the quick brown fox jumps over the lazy dog",
    "what are your opening hours",
    "i want to leave a message",
    "goodbye",
    "how much does it cost",
)
LEAD_MS, TAIL_MS = 300, 500
# Silence before the speech, in turn: the STT service's 0.5 s pre-roll holds 0.2-0.3 s of speech
# after a quiet line, but less silence when the caller starts right after sending nothing or
# after other sound (seen end to end: 0.14 s).
LEADS_MS = (300, 150, 50)
WARM_UP = "hello"  # what a "later" stream heard first


@dataclass(frozen=True)
class Item:
    label: str
    pcm: bytes  # the speech (or noise) alone; framing is added when decoding
    reference: str | None  # the phrase, None for out-of-grammar audio
    voice: Voice = ("en-us", None)


@functools.cache
def intent(text: str) -> str:
    return SecretaryBrain(CONFIG).on_user_text(text).intent


def in_grammar_phrases() -> list[str]:
    phrases = [p for entry in CONFIG.faq for p in entry.phrases]
    phrases += [*CONFIG.message.trigger_phrases, *CONFIG.goodbye_phrases, *KEYWORDS]
    return list(dict.fromkeys(phrases))


def reversed_speech(text: str) -> bytes:
    samples = np.frombuffer(speech(text), dtype=np.int16)[::-1]
    return samples.tobytes()


def in_grammar_items(
    phrases: Iterable[str] | None = None, voices: Sequence[Voice] = VOICES
) -> list[Item]:
    chosen = list(phrases) if phrases is not None else in_grammar_phrases()
    return [
        Item(f"{v}{'@' + str(r) if r else ''}: {p}", speech(p, voice=v, rate_wpm=r), p, (v, r))
        for v, r in voices
        for p in chosen
    ]


def out_of_grammar_items() -> list[Item]:
    items = [Item(f"{v}: {t}", speech(t, voice=v), None) for v, t in FOREIGN]
    for voice, rate in (("en-us", None), ("en-gb-x-rp", None), ("en-us", 140)):
        name = f"{voice}{'@' + str(rate) if rate else ''}"
        items += [
            Item(f"{name}: {t}", speech(t, voice=voice, rate_wpm=rate), None) for t in UNRELATED
        ]
    items += [Item(f"reversed: {t}", reversed_speech(t), None) for t in REVERSED]
    items += [
        Item("noise rms 300", noise(1500, rms=300, seed=5), None),
        Item("noise rms 3000", noise(1500, rms=3000, seed=6), None),
        Item("silence", silence(1500), None),
    ]
    return items


@dataclass
class Outcome:
    item: Item
    recognition: Recognition

    @property
    def text(self) -> str:
        return self.recognition.text

    @property
    def exact(self) -> bool:
        return self.text == self.item.reference

    @property
    def intent_ok(self) -> bool:
        assert self.item.reference is not None
        return intent(self.text) == intent(self.item.reference)

    @property
    def accepted(self) -> bool:
        return self.text != ""

    @property
    def acted_on(self) -> bool:
        return intent(self.text) != REPROMPT


class Recogniser:
    """A DecoderHost plus the utterance framing of the STT service."""

    def __init__(self, tuning: Tuning, decoder_options: dict[str, Any] | None = None) -> None:
        self.host = DecoderHost(spare=1, decoder_options=decoder_options, tuning=tuning)
        self.host.prewarm()
        self._ids = 0
        self._utterances = 0

    def open(self) -> int:
        self._ids += 1
        self.host.open(self._ids, JSGF)
        return self._ids

    def utterance(self, stream_id: int, pcm: bytes) -> Recognition:
        lead = LEADS_MS[self._utterances % len(LEADS_MS)]
        self._utterances += 1
        self.host.begin(stream_id)
        for batch in chunks(silence(lead) + pcm + silence(TAIL_MS), ms=100):
            self.host.feed(stream_id, batch)
        return self.host.end_detailed(stream_id)

    def first(self, item: Item) -> Outcome:
        """``item`` as the first utterance of a fresh stream (a new call)."""
        stream_id = self.open()
        try:
            return Outcome(item, self.utterance(stream_id, item.pcm))
        finally:
            self.host.close(stream_id)

    def later(self, items: Sequence[Item], warm_up: Voice | None = None) -> list[Outcome]:
        """``items`` in turn on one stream, after a warm-up utterance in ``warm_up``'s voice
        (the first item's by default)."""
        voice, rate = warm_up or items[0].voice
        stream_id = self.open()
        try:
            self.utterance(stream_id, speech(WARM_UP, voice=voice, rate_wpm=rate))
            return [Outcome(item, self.utterance(stream_id, item.pcm)) for item in items]
        finally:
            self.host.close(stream_id)


@dataclass
class Results:
    name: str
    first_in: list[Outcome] = field(default_factory=list)
    first_out: list[Outcome] = field(default_factory=list)
    later_in: list[Outcome] = field(default_factory=list)
    later_out: list[Outcome] = field(default_factory=list)
    secs: float = 0.0


def measure(
    name: str,
    tuning: Tuning,
    in_items: Sequence[Item],
    out_items: Sequence[Item],
    decoder_options: dict[str, Any] | None = None,
) -> Results:
    started = time.perf_counter()
    rec = Recogniser(tuning, decoder_options)
    results = Results(name)
    results.first_in = [rec.first(i) for i in in_items]
    results.first_out = [rec.first(i) for i in out_items]
    by_voice: dict[Voice, list[Item]] = {}
    for item in in_items:
        by_voice.setdefault(item.voice, []).append(item)
    for group in by_voice.values():
        results.later_in += rec.later(group)
    # Out-of-grammar audio after one in-grammar utterance of an en-us caller.
    opener = in_grammar_items(["what are your opening hours"], [("en-us", None)])[0]
    for item in out_items:
        results.later_out.append(rec.later([opener, item])[1])
    results.secs = time.perf_counter() - started
    return results


def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole} {100 * part / whole:5.1f}%" if whole else "-"


def print_table(all_results: Sequence[Results]) -> None:
    header = (
        f"{'configuration':<10} {'utterance':<7} {'in-grammar exact':>18} "
        f"{'in-grammar intent':>18} {'OOG accepted':>16} {'OOG acted on':>16}"
    )
    print(header)
    print("-" * len(header))
    for r in all_results:
        for label, ins, outs in (
            ("first", r.first_in, r.first_out),
            ("later", r.later_in, r.later_out),
        ):
            print(
                f"{r.name:<10} {label:<7} "
                f"{_pct(sum(o.exact for o in ins), len(ins)):>18} "
                f"{_pct(sum(o.intent_ok for o in ins), len(ins)):>18} "
                f"{_pct(sum(o.accepted for o in outs), len(outs)):>16} "
                f"{_pct(sum(o.acted_on for o in outs), len(outs)):>16}"
            )


def print_misses(results: Results) -> None:
    print(f"\n{results.name}: in-grammar intent misses / out-of-grammar accepts")
    for label, ins, outs in (
        ("first", results.first_in, results.first_out),
        ("later", results.later_in, results.later_out),
    ):
        for o in ins:
            if not o.intent_ok:
                print(f"  {label} IN  {o.item.label!r:55} -> {o.text!r} {_score(o)}")
        for o in outs:
            if o.accepted:
                print(f"  {label} OUT {o.item.label!r:55} -> {o.text!r} {_score(o)}")


def _score(o: Outcome) -> str:
    r = o.recognition
    return "" if r.score is None else f"(hyp {r.hypothesis!r}, score {r.score:.2f})"


def print_sweep(results: Results, thresholds: Iterable[float]) -> None:
    """Accuracy and false accepts had the rejection threshold been ``t`` (scores are kept)."""
    print(f"\n{results.name}: rejection threshold sweep (intent accuracy / OOG accepted)")

    def text_at(o: Outcome, t: float) -> str:
        return _text_at(o.recognition, t)

    for t in thresholds:
        cells = []
        for label, ins, outs in (
            ("first", results.first_in, results.first_out),
            ("later", results.later_in, results.later_out),
        ):
            ok = sum(intent(text_at(o, t)) == intent(o.item.reference or "") for o in ins)
            fa = sum(text_at(o, t) != "" for o in outs)
            cells.append(f"{label} {_pct(ok, len(ins))} / {_pct(fa, len(outs))}")
        print(f"  {t:6.2f}: " + "   ".join(cells))
    scores = [o.recognition.score for o in results.first_in + results.later_in]
    valid = sorted(s for s in scores if s is not None)
    if valid:
        pcts = np.percentile(valid, [1, 2, 5, 10, 50]).round(2).tolist()
        print(f"  in-grammar score percentiles 1/2/5/10/50: {pcts}")
    oog = sorted(
        round(o.recognition.score, 2)
        for o in results.first_out + results.later_out
        if o.recognition.score is not None
    )
    print(f"  out-of-grammar scores: {oog}")


async def _end_latency(
    pool: SttWorkerPool, pcm: bytes, warm_up: bool, lead_ms: int = LEAD_MS
) -> float:
    stream = pool.open_stream(JSGF)
    try:
        await stream.open()
        loop = asyncio.get_running_loop()
        utterances = ([speech("what are your opening hours")] if warm_up else []) + [pcm]
        elapsed = 0.0
        for utterance in utterances:
            await stream.begin()
            started = loop.time()
            audio = silence(lead_ms) + utterance + silence(TAIL_MS)
            for i, frame in enumerate(chunks(audio)):
                await asyncio.sleep(max(0.0, started + i * 0.02 - loop.time()))
                await stream.feed(frame)
            t0 = time.perf_counter()
            await stream.end()
            elapsed = time.perf_counter() - t0
        return elapsed
    finally:
        await stream.close()


async def bench_latency() -> None:
    pool = SttWorkerPool(1, spare_decoders=1)
    await pool.start()
    try:
        two_secs = speech("can i cancel my appointment please")
        short = speech("no")
        cases = (
            (f"{len(two_secs) / 32000:.1f} s utterance, first", two_secs, False, LEAD_MS),
            (f"{len(two_secs) / 32000:.1f} s utterance, later", two_secs, True, LEAD_MS),
            # Framed to just under CMN_DELAY_SECS: all of it is decoded inside end().
            (f"{len(short) / 32000:.2f} s utterance, first", short, False, 100),
        )
        for label, pcm, warm, lead_ms in cases:
            samples = [await _end_latency(pool, pcm, warm, lead_ms) for _ in range(5)]
            total = len(pcm) / 32000 + (lead_ms + TAIL_MS) / 1000
            print(
                f"end() latency, {label} ({total:.2f} s of audio fed in real time): "
                f"median {statistics.median(samples) * 1e3:.0f} ms, "
                f"max {max(samples) * 1e3:.0f} ms"
            )
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--after-only", action="store_true")
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--misses", action="store_true", help="list every miss")
    parser.add_argument("--dump", help="write every outcome of the last configuration as JSON")
    args = parser.parse_args()

    in_items, out_items = in_grammar_items(), out_of_grammar_items()
    print(f"{len(in_items)} in-grammar utterances ({len(VOICES)} voices), {len(out_items)} out")
    configs: list[tuple[str, Tuning, dict[str, Any] | None]] = []
    if not args.after_only:
        configs.append(("before", Tuning.legacy(), {"compallsen": False}))
    after = Tuning()
    configs.append(("after", replace(after, reject_below=None) if args.sweep else after, None))
    all_results = []
    for name, tuning, options in configs:
        results = measure(name, tuning, in_items, out_items, options)
        if args.sweep and name == "after":  # measured without the threshold: sweep, then apply
            threshold = after.reject_below
            assert threshold is not None
            print_sweep(results, [-6.5, -6.75, -7.0, -7.25, -7.5, -7.75, -8.0, -8.5])
            results = _with_threshold(results, threshold)
        all_results.append(results)
        print(f"({name}: {results.secs:.0f} s)")
    if args.dump:
        _dump(all_results[-1], args.dump)
    print()
    print_table(all_results)
    if args.misses:
        for results in all_results:
            print_misses(results)
    print()
    asyncio.run(bench_latency())


def _dump(results: Results, path: str) -> None:
    rows = []
    for label, outcomes in (
        ("first_in", results.first_in),
        ("first_out", results.first_out),
        ("later_in", results.later_in),
        ("later_out", results.later_out),
    ):
        for o in outcomes:
            r = o.recognition
            rows.append(
                {
                    "condition": label,
                    "label": o.item.label,
                    "reference": o.item.reference,
                    "hypothesis": r.hypothesis,
                    "score": r.score,
                    "segments": r.segments,
                    "voiced_frames": r.voiced_frames,
                    "unexplained": r.unexplained,
                }
            )
    with open(path, "w") as f:
        json.dump(rows, f, indent=0)


def _text_at(r: Recognition, threshold: float) -> str:
    """What end() would have returned with rejection threshold ``threshold``."""
    voiced = r.voiced_frames is None or r.voiced_frames >= MIN_VOICED_FRAMES
    covered = r.unexplained is None or r.unexplained <= MAX_UNEXPLAINED
    keep = voiced and covered and r.score is not None and r.score >= threshold
    return r.hypothesis if keep else ""


def _with_threshold(results: Results, threshold: float) -> Results:
    def apply(outcomes: list[Outcome]) -> list[Outcome]:
        out = []
        for o in outcomes:
            r = o.recognition
            out.append(Outcome(o.item, replace(r, text=_text_at(r, threshold))))
        return out

    return Results(
        results.name,
        apply(results.first_in),
        apply(results.first_out),
        apply(results.later_in),
        apply(results.later_out),
        results.secs,
    )


if __name__ == "__main__":
    main()
