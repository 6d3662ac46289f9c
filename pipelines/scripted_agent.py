"""The offline secretary's decisions, kept apart from Pipecat so every path is unit-testable.

:class:`SecretaryBrain` turns what the caller said (or that nothing was recognised) into the next
:class:`Reply`. It does no I/O and has no clock or randomness: the same config and the same inputs
always give the same replies, which is what lets tests and call logs explain a conversation.

Matching has to survive recognition noise: the grammar-constrained recogniser returns a
grammar sentence that may be the wrong one, and typed or general-model text has extra, missing
and misspelled words. So FAQ entries are scored by keyword hits anywhere in the text (plus a bonus
when one of the entry's example phrases appears whole), words are compared after light stemming
("prices" = "price", "booking" = "book"), and long words tolerate one wrong letter.

Counting misses: a miss is an utterance that matched nothing, or a turn in which nothing was
recognised at all. ``max_misses`` consecutive misses are answered with the re-prompt; the next
consecutive miss ends the call (so the default 2 re-prompts twice and says goodbye on the third).
Anything understood resets the count.

Goodbye phrases end the call only when nothing else in the utterance was understood: "no
thanks, bye" ends it, "thanks, and what are your hours" gets the hours. Hanging up on a question
costs more than asking "anything else?" once more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

from pipelines.agent_config import AgentConfig
from pipelines.frames import RecognitionMode

Phase = Literal["start", "listening", "awaiting_message", "ended"]

GREETING = "greeting"
REPROMPT = "reprompt"
MESSAGE_PROMPT = "message_prompt"
MESSAGE_TAKEN = "message_taken"
MESSAGE_EMPTY = "message_empty"
GOODBYE = "goodbye"
GOODBYE_AFTER_MISSES = "goodbye_after_misses"
ENDED = "ended"
FAQ_PREFIX = "faq:"

_MESSAGE_CANDIDATE = "message"
_NON_WORD = re.compile(r"[^a-z0-9]+")
# Long enough that one wrong letter is a typo rather than another word ("adress", not "cost").
_FUZZY_MIN_LEN = 6


@dataclass(frozen=True, slots=True)
class Reply:
    """What the agent says next, and what it expects to hear afterwards.

    ``mode``/``capture_audio`` describe the caller's NEXT utterance: the general language model
    and audio capture while a message is being left, the agent's grammar otherwise.
    """

    text: str
    end_call: bool = False
    mode: RecognitionMode = "grammar"
    capture_audio: bool = False
    intent: str = ""


@dataclass(frozen=True, slots=True)
class BrainState:
    """A snapshot of the conversation state (for tests, logs and the call record)."""

    phase: Phase = "start"
    misses: int = 0
    """Consecutive misses so far."""
    mode: RecognitionMode = "grammar"
    capture_audio: bool = False
    last_intent: str = ""


def _stem(word: str) -> str:
    """A crude English stem: enough to equate "price"/"prices", "book"/"booking"/"booked"."""
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        word = word[:-1]
    if word.endswith("ing") and len(word) > 5:
        word = word[:-3]
    elif word.endswith("ed") and len(word) > 4:
        word = word[:-2]
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word


def normalise(text: str) -> list[str]:
    """Lowercase words without punctuation; apostrophes dropped so "that's" = "thats"."""
    text = text.lower().replace("'", "").replace("\u2019", "")
    return [w for w in _NON_WORD.split(text) if w]


def _within_one_edit(a: str, b: str) -> bool:
    if abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    if len(a) == len(b):
        return a[i + 1 :] == b[i + 1 :]
    return a[i:] == b[i + 1 :]


class _Pattern:
    """A keyword or phrase, pre-normalised for matching against normalised text."""

    __slots__ = ("stems",)

    def __init__(self, text: str) -> None:
        self.stems = tuple(_stem(w) for w in normalise(text))

    def __len__(self) -> int:
        return len(self.stems)

    def found_in(self, stems: list[str], *, fuzzy: bool) -> bool:
        """Whether the pattern's words occur consecutively in ``stems``."""
        n = len(self.stems)
        if n == 0:
            return False
        for start in range(len(stems) - n + 1):
            if all(
                _word_matches(want, stems[start + k], fuzzy) for k, want in enumerate(self.stems)
            ):
                return True
        return False


def _word_matches(want: str, got: str, fuzzy: bool) -> bool:
    if want == got:
        return True
    return fuzzy and len(want) >= _FUZZY_MIN_LEN and _within_one_edit(want, got)


@dataclass(frozen=True)
class _Candidate:
    """Something an utterance can ask for: an FAQ entry, or leaving a message."""

    key: str
    keywords: tuple[_Pattern, ...]
    phrases: tuple[_Pattern, ...]

    def score(self, stems: list[str]) -> int:
        """Keyword hits (a multi-word keyword counts each of its words), plus the length of the
        longest example phrase found whole: a phrase of this entry must win for this entry."""
        hits = sum(len(k) for k in self.keywords if k.found_in(stems, fuzzy=True))
        phrase = max((len(p) for p in self.phrases if p.found_in(stems, fuzzy=False)), default=0)
        return hits + phrase


class SecretaryBrain:
    """Conversation logic of the scripted secretary for one call; see the module docstring."""

    def __init__(self, config: AgentConfig) -> None:
        self._config = config
        self._answers = {entry.id: entry.answer for entry in config.faq}
        # Config order is the tie-break order: FAQ entries as listed, then the message trigger.
        self._candidates = tuple(
            [
                _Candidate(
                    entry.id,
                    tuple(_Pattern(k) for k in entry.keywords),
                    tuple(_Pattern(p) for p in entry.phrases),
                )
                for entry in config.faq
            ]
            + [
                _Candidate(
                    _MESSAGE_CANDIDATE,
                    tuple(_Pattern(k) for k in config.message.trigger_keywords),
                    tuple(_Pattern(p) for p in config.message.trigger_phrases),
                )
            ]
        )
        self._goodbyes = tuple(_Pattern(p) for p in config.goodbye_phrases)
        self._state = BrainState()

    @property
    def config(self) -> AgentConfig:
        return self._config

    @property
    def state(self) -> BrainState:
        return self._state

    # --- inputs --------------------------------------------------------------------------------

    def greet(self) -> Reply:
        """The opening line. Calling it again (a re-run before the caller spoke) repeats it."""
        if self._state.phase == "ended":
            return self._ended()
        return self._say(Reply(self._config.greeting, intent=GREETING), phase="listening")

    def on_user_text(self, text: str) -> Reply:
        """The caller said ``text`` (a final transcript)."""
        phase = self._state.phase
        if phase == "ended":
            return self._ended()
        if phase == "awaiting_message":
            # Whatever was recognised, even nothing, is the message: its audio is what counts.
            message = self._config.message
            return self._say(
                Reply(self._then_anything_else(message.confirmation), intent=MESSAGE_TAKEN),
                phase="listening",
                misses=0,
            )
        stems = [_stem(w) for w in normalise(text)]
        if not stems:
            return self._miss()
        best_key, best_score = "", 0
        for candidate in self._candidates:
            score = candidate.score(stems)
            if score > best_score:  # strict: ties keep the earlier candidate
                best_key, best_score = candidate.key, score
        if best_key == _MESSAGE_CANDIDATE:
            return self._say(
                Reply(
                    self._config.message.prompt,
                    mode="general",
                    capture_audio=True,
                    intent=MESSAGE_PROMPT,
                ),
                phase="awaiting_message",
                misses=0,
            )
        if best_key:
            answer = self._then_anything_else(self._answers[best_key])
            return self._say(
                Reply(answer, intent=FAQ_PREFIX + best_key), phase="listening", misses=0
            )
        if any(g.found_in(stems, fuzzy=False) for g in self._goodbyes):
            return self._say(
                Reply(self._config.goodbye, end_call=True, intent=GOODBYE), phase="ended", misses=0
            )
        return self._miss()

    def on_unrecognised(self) -> Reply:
        """The caller's turn ended and nothing at all was recognised."""
        phase = self._state.phase
        if phase == "ended":
            return self._ended()
        if phase == "awaiting_message":
            text = self._then_anything_else(self._config.message.empty_message)
            return self._say(Reply(text, intent=MESSAGE_EMPTY), phase="listening")
        return self._miss()

    # --- helpers -------------------------------------------------------------------------------

    def _miss(self) -> Reply:
        misses = self._state.misses + 1
        if misses > self._config.max_misses:
            reply = Reply(
                self._config.goodbye_after_misses, end_call=True, intent=GOODBYE_AFTER_MISSES
            )
            return self._say(reply, phase="ended", misses=misses)
        return self._say(Reply(self._config.reprompt, intent=REPROMPT), misses=misses)

    def _ended(self) -> Reply:
        """After the closing line there is nothing left to say; repeat the wish to hang up."""
        return self._say(Reply("", end_call=True, intent=ENDED))

    def _then_anything_else(self, text: str) -> str:
        return f"{text} {self._config.anything_else}"

    def _say(self, reply: Reply, *, phase: Phase | None = None, misses: int | None = None) -> Reply:
        self._state = replace(
            self._state,
            phase=self._state.phase if phase is None else phase,
            misses=self._state.misses if misses is None else misses,
            mode=reply.mode,
            capture_audio=reply.capture_audio,
            last_intent=reply.intent,
        )
        return reply
