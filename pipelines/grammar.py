"""The recognition grammar of a scripted agent, and the vocabulary check that keeps it loadable.

pocketsphinx's general language model fails on telephone and synthetic speech, but a JSGF grammar
of the few things a caller can ask this agent made recognition usable (DESIGN §5). The grammar is
built from the agent's own config, so every edit of an FAQ entry updates what can be recognised.

A grammar-constrained recogniser always answers with some sentence of the grammar, so the grammar
also holds a few common non-requests ("yes", "hello", ...): without them such utterances would be
forced onto the nearest FAQ entry, or worse onto a goodbye phrase that ends the call.

pocketsphinx refuses a whole grammar (``ValueError: Failed to parse JSGF``) when any of its words
is missing from the pronunciation dictionary, so :func:`validate_vocabulary` finds those words
when an agent is saved rather than when its first call starts.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipelines.agent_config import AgentConfig

GRAMMAR_NAME = "agent"
ROOT_RULE = "utterance"

# Optional words before a request. Short, common openings only: every alternative widens the
# search and costs recognition accuracy.
LEAD_PHRASES: tuple[str, ...] = (
    "um",
    "uh",
    "so",
    "and",
    "well",
    "hi",
    "hello",
    "yes",
    "yeah",
    "okay",
    "please",
    "i want to",
    "i'd like to",
    "i would like to",
    "can you tell me",
    "could you tell me",
    "tell me",
)
# Optional words after a request.
TAIL_PHRASES: tuple[str, ...] = ("please", "thanks", "thank you")
# Utterances that are no request at all; the agent answers them with its re-prompt.
OTHER_PHRASES: tuple[str, ...] = ("yes", "yeah", "okay", "hello", "hi", "sorry", "what", "hmm")

_WORD_SPLIT = re.compile(r"[^\w'-]+")
_KEY_END = re.compile(rb"[ \t\r\n]")


def spoken_words(text: str) -> list[str]:
    """The words of ``text`` as the pronunciation dictionary spells them.

    Lowercase, punctuation dropped, but apostrophes and hyphens inside a word kept: the
    dictionary has "that's" and "check-up" as words of their own.
    """
    words = (w.strip("'-_") for w in _WORD_SPLIT.split(text.lower()))
    return [w for w in words if w]


def dictionary_path() -> Path:
    """pocketsphinx's default en-US dictionary, the one the STT workers' decoders load."""
    from pocketsphinx import get_model_path

    return Path(get_model_path()) / "en-us" / "cmudict-en-us.dict"


class PronunciationDictionary:
    """Word lookup in a sorted pocketsphinx dictionary file, without parsing it.

    Parsing all 126k entries into a set takes ~0.9 s and ~11 MB; configs are validated inside the
    gateway's event loop (every call start loads its agent), so lookups binary-search the raw
    bytes instead (microseconds each). cmudict lists its words in byte order, alternate
    pronunciations ("word(2)") right after the word; a test checks the shipped file still is.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        # Agents share most words and are validated at every call start: remember answers.
        self._known: dict[str, bool] = {}

    @classmethod
    def load(cls, path: Path) -> PronunciationDictionary:
        return cls(path.read_bytes())

    def _key_at(self, start: int) -> tuple[bytes, int]:
        """The base word of the line starting at ``start``, and the next line's start."""
        data = self._data
        line_end = data.find(b"\n", start)
        if line_end < 0:
            line_end = len(data)
        match = _KEY_END.search(data, start, line_end)
        key = data[start : match.start() if match else line_end]
        paren = key.find(b"(")
        if paren > 0:
            key = key[:paren]
        return key, line_end + 1

    def __contains__(self, word: object) -> bool:
        if not isinstance(word, str) or not word:
            return False
        known = self._known.get(word)
        if known is None:
            if len(self._known) >= 100_000:
                self._known.clear()
            known = self._known[word] = self._lookup(word.encode("utf-8"))
        return known

    def _lookup(self, target: bytes) -> bool:
        data = self._data
        lo, hi = 0, len(data)
        while lo < hi:
            mid = (lo + hi) // 2
            start = data.rfind(b"\n", 0, mid) + 1
            start = max(start, lo)
            key, next_start = self._key_at(start)
            if key < target:
                lo = next_start
            else:
                hi = start
        return lo < len(data) and self._key_at(lo)[0] == target


@functools.cache
def default_dictionary() -> PronunciationDictionary:
    """The dictionary of :func:`dictionary_path`, read once per process (3 MB)."""
    return PronunciationDictionary.load(dictionary_path())


def _grammar_sources(config: AgentConfig) -> Iterator[tuple[str, str]]:
    """Every config text that becomes grammar words, with where it is in the config."""
    for entry in config.faq:
        for i, keyword in enumerate(entry.keywords):
            yield keyword, f"faq[{entry.id}].keywords[{i}]"
        for i, phrase in enumerate(entry.phrases):
            yield phrase, f"faq[{entry.id}].phrases[{i}]"
    for i, keyword in enumerate(config.message.trigger_keywords):
        yield keyword, f"message.trigger_keywords[{i}]"
    for i, phrase in enumerate(config.message.trigger_phrases):
        yield phrase, f"message.trigger_phrases[{i}]"
    for i, phrase in enumerate(config.goodbye_phrases):
        yield phrase, f"goodbye_phrases[{i}]"


def vocabulary_problems(
    config: AgentConfig, dictionary: PronunciationDictionary | None = None
) -> list[tuple[str, str]]:
    """``(word, where)`` for each grammar word the dictionary lacks, in config order."""
    known = dictionary if dictionary is not None else default_dictionary()
    problems: list[tuple[str, str]] = []
    for text, where in _grammar_sources(config):
        problems.extend((word, where) for word in spoken_words(text) if word not in known)
    return problems


def validate_vocabulary(
    config: AgentConfig, dictionary: PronunciationDictionary | None = None
) -> list[str]:
    """The grammar words of ``config`` that pocketsphinx cannot pronounce (sorted, unique).

    Empty means :func:`build_jsgf` yields a grammar the decoder loads.
    """
    return sorted({word for word, _ in vocabulary_problems(config, dictionary)})


def _alternatives(texts: Iterable[str]) -> list[str]:
    """Normalised, de-duplicated alternatives, first occurrence first (stable output)."""
    seen: dict[str, None] = {}
    for text in texts:
        words = " ".join(spoken_words(text))
        if words:
            seen.setdefault(words, None)
    return list(seen)


def _rule(name: str, texts: Iterable[str], *, public: bool = False) -> str:
    alternatives = _alternatives(texts)
    if not alternatives:
        raise ValueError(f"grammar rule <{name}> has no words")
    prefix = "public " if public else ""
    return f"{prefix}<{name}> = " + " | ".join(alternatives) + ";"


def build_jsgf(config: AgentConfig) -> str:
    """A JSGF grammar of everything ``config``'s agent understands, for pocketsphinx.

    One rule per FAQ entry (its example phrases and each keyword on its own, so a caller who
    says just "prices?" is recognised too), one for the message triggers, one for the goodbye
    phrases, and :data:`OTHER_PHRASES`; all optionally framed by :data:`LEAD_PHRASES` and
    :data:`TAIL_PHRASES`. Deterministic: the same config gives the same text, so the STT
    workers can reuse a decoder that already holds it.
    """
    request_rules: list[str] = []
    rules: list[str] = []
    for entry in config.faq:
        name = f"faq_{entry.id}"
        request_rules.append(f"<{name}>")
        rules.append(_rule(name, [*entry.phrases, *entry.keywords]))
    request_rules += ["<message>", "<goodbye>", "<other>"]
    rules.append(
        _rule("message", [*config.message.trigger_phrases, *config.message.trigger_keywords])
    )
    rules.append(_rule("goodbye", config.goodbye_phrases))
    rules.append(_rule("other", OTHER_PHRASES))
    rules.append(_rule("lead", LEAD_PHRASES))
    rules.append(_rule("tail", TAIL_PHRASES))
    lines = [
        "#JSGF V1.0;",
        "",
        f"grammar {GRAMMAR_NAME};",
        "",
        f"public <{ROOT_RULE}> = [<lead>] <request> [<tail>];",
        "<request> = " + " | ".join(request_rules) + ";",
        *rules,
        "",
    ]
    return "\n".join(lines)
