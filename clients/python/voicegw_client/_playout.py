"""A simulated loudspeaker: what a phone would have played of the agent's audio, and when.

The gateway sends audio up to ~200 ms ahead of real time, so what was *received* is not what the
caller *heard*: after a barge-in the unplayed remainder is dropped, and the agent must only
remember the words that were played. This class keeps that account without a sound card. It is
driven by elapsed time (`advance`) rather than a clock of its own, so tests can run it
deterministically and `voicegw talk` can drive it from the event loop's monotonic clock.
"""

from __future__ import annotations

from collections import deque

MARK_INTERVAL_MS = 100


class Playout:
    """Playout buffer drained at real-time rate, producing playback marks.

    Marks are (utterance_id, ms of that utterance played so far): one each time an utterance's
    played time crosses a multiple of `mark_interval_ms`, plus a final one when its playback
    stops (it ran out, the next utterance began, or it was dropped) with the exact amount, so
    the gateway learns precisely where a barge-in cut the agent off.
    """

    def __init__(self, sample_rate: int, mark_interval_ms: int = MARK_INTERVAL_MS) -> None:
        if sample_rate <= 0:
            raise ValueError(f"invalid sample rate {sample_rate}")
        self.sample_rate = sample_rate
        self._interval = mark_interval_ms
        self._queue: deque[tuple[int, bytes]] = deque()  # (utterance id, unplayed pcm16)
        self._buffered = 0  # samples in the queue
        self._carry = 0.0  # fraction of a sample owed to the next advance
        self._current: int | None = None  # utterance playing (or last played, until it stops)
        self._played_samples: dict[int, int] = {}
        self._last_mark: dict[int, int] = {}
        self._marks: list[tuple[int, int]] = []
        self.played = bytearray()  # everything played, back to back (silence gaps omitted)
        self.dropped_samples = 0

    @property
    def buffered_ms(self) -> float:
        return self._buffered * 1000 / self.sample_rate

    @property
    def idle(self) -> bool:
        return self._buffered == 0

    @property
    def played_ms(self) -> float:
        return len(self.played) / 2 * 1000 / self.sample_rate

    def played_ms_of(self, utterance_id: int) -> int:
        return self._played_samples.get(utterance_id, 0) * 1000 // self.sample_rate

    def push(self, utterance_id: int, pcm16: bytes) -> None:
        """Queues received agent audio (mono pcm16 at `sample_rate`) behind what is queued."""
        usable = len(pcm16) - len(pcm16) % 2
        if usable:
            self._queue.append((utterance_id, bytes(pcm16[:usable])))
            self._buffered += usable // 2

    def advance(self, seconds: float) -> None:
        """Plays `seconds` worth of the buffer; time with nothing to play is silence, not debt."""
        owed = seconds * self.sample_rate + self._carry
        samples = int(owed)
        self._carry = owed - samples
        while samples > 0 and self._queue:
            utterance, pcm = self._queue[0]
            if utterance != self._current:
                self._stop_current()
                self._current = utterance
            take = min(samples, len(pcm) // 2)
            self.played += pcm[: 2 * take]
            if take * 2 < len(pcm):
                self._queue[0] = (utterance, pcm[2 * take :])
            else:
                self._queue.popleft()
            samples -= take
            self._buffered -= take
            self._played_samples[utterance] = self._played_samples.get(utterance, 0) + take
            played_ms = self.played_ms_of(utterance)
            if played_ms // self._interval > self._last_mark.get(utterance, 0) // self._interval:
                self._mark(utterance, played_ms)
        if not self._queue:
            self._carry = 0.0
            self._stop_current()

    def drop(self) -> int:
        """Discards everything buffered (a barge-in); returns how many ms were dropped."""
        dropped = self._buffered
        self._queue.clear()
        self._buffered = 0
        self._carry = 0.0
        self.dropped_samples += dropped
        self._stop_current()
        return dropped * 1000 // self.sample_rate

    def take_marks(self) -> list[tuple[int, int]]:
        """Marks produced since the last call, oldest first."""
        marks, self._marks = self._marks, []
        return marks

    def _mark(self, utterance: int, played_ms: int) -> None:
        self._last_mark[utterance] = played_ms
        self._marks.append((utterance, played_ms))

    def _stop_current(self) -> None:
        if self._current is None:
            return
        played_ms = self.played_ms_of(self._current)
        if played_ms > self._last_mark.get(self._current, 0):
            self._mark(self._current, played_ms)
        self._current = None
