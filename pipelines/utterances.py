"""The agent's utterances: their numbers on the wire, their words, and how much the caller heard.

An utterance is one TTS context (one agent response). The output transport numbers it when its
first audio is played out, and observers look the same context up to tag transcripts, so both
sides of the wire agree on "utterance N" without Pipecat knowing about it.

After a barge-in the agent must remember only what the caller actually heard. Pipecat alone knows
which words its output clock released, which runs ahead of the caller's loudspeaker by the
transport's lead and the client's buffer. So each utterance keeps the TTS's word timestamps
(offsets from its first audio sample) and the amount played: the client's own `playback_mark`s
when it sends them (exact), else the door's accounting of audio sent minus audio still buffered
at the client when the interruption came. A word counts as heard when at least half of it was
played.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Utterance:
    id: int
    # (word, seconds from the utterance's first audio sample to the word's start), in order.
    words: list[tuple[str, float]] = field(default_factory=list)
    end_secs: float = 0.0  # audio synthesised so far, i.e. where the last word ends
    client_played_ms: int | None = None
    estimated_played_ms: int | None = None

    @property
    def played_ms(self) -> int | None:
        """What the caller heard: the client's word when it gave one, else our estimate."""
        if self.client_played_ms is not None:
            return self.client_played_ms
        return self.estimated_played_ms

    def heard_words(self, played_ms: int) -> list[str]:
        heard: list[str] = []
        for i, (word, start) in enumerate(self.words):
            end = self.words[i + 1][1] if i + 1 < len(self.words) else self.end_secs
            end = max(end, start)
            if round((start + end) * 500) > played_ms:  # the word's midpoint, in ms
                break
            heard.append(word)
        return heard


@dataclass(slots=True)
class Interrupted:
    """An interrupted utterance whose text in the LLM context is still to be cut to the heard."""

    utterance_id: int
    released_text: str  # what Pipecat's output clock released, i.e. what its aggregator wrote


class UtteranceRegistry:
    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._by_id: dict[int, Utterance] = {}
        self._next = 1
        self._interrupted: list[Interrupted] = []

    def id_for(self, context_id: str | None) -> int:
        """The utterance number of a TTS context, allocated on first sight."""
        key = context_id or ""
        if key not in self._ids:
            self._ids[key] = self._next
            self._by_id[self._next] = Utterance(self._next)
            self._next += 1
        return self._ids[key]

    def known(self, context_id: str | None) -> int | None:
        return self._ids.get(context_id or "")

    def get(self, utterance_id: int) -> Utterance | None:
        return self._by_id.get(utterance_id)

    # What was said and what was played -------------------------------------------------------

    def add_words(
        self, context_id: str | None, words: list[tuple[str, float]], end_secs: float
    ) -> None:
        """Word timestamps of one more stretch of an utterance's audio, from its TTS."""
        utterance = self._by_id[self.id_for(context_id)]
        utterance.words.extend(words)
        utterance.end_secs = max(utterance.end_secs, end_secs)

    def client_mark(self, utterance_id: int, played_ms: int) -> None:
        utterance = self._by_id.get(utterance_id)
        if utterance is None or played_ms < 0:
            return  # a mark for an utterance we never sent: nothing to learn from it
        utterance.client_played_ms = max(played_ms, utterance.client_played_ms or 0)

    def estimate_played(self, utterance_id: int, played_ms: int) -> None:
        """The door's own account of what was played when the utterance was cut off."""
        utterance = self._by_id.get(utterance_id)
        if utterance is not None:
            utterance.estimated_played_ms = max(0, played_ms)

    def heard_text(self, utterance_id: int) -> str | None:
        """The words the caller heard of an utterance, or None when nothing says how much."""
        utterance = self._by_id.get(utterance_id)
        if utterance is None or utterance.played_ms is None or not utterance.words:
            return None
        return " ".join(utterance.heard_words(utterance.played_ms))

    # The LLM context -------------------------------------------------------------------------

    def interrupted(self, utterance_id: int, released_text: str) -> None:
        self._interrupted.append(Interrupted(utterance_id, released_text))

    def take_interrupted(self) -> list[Interrupted]:
        taken, self._interrupted = self._interrupted, []
        return taken
