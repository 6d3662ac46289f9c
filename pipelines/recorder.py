"""Watches one call's frames and turns them into what the Session reports and stores.

Transcript turns, turn events, latency reports and the recorded message are read off the frames
the pipeline already produces, so no processor has to know about persistence or the wire. The
recorder only collects; the Session decides what to send and when to write.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterruptionFrame,
    TranscriptionFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipelines.frames import AgentEndCallFrame, RecordedUtteranceFrame, SpokenWordsFrame
from pipelines.utterances import UtteranceRegistry
from transports.events import (
    SessionEvent,
    TranscriptEvent,
    TurnEvent,
    TurnKind,
)


@dataclass(slots=True)
class TurnRecord:
    role: str  # "user" | "agent"
    text: str
    started_ms: int
    ended_ms: int
    heard_text: str | None = None
    interrupted: bool = False
    utterance_id: int = 0


@dataclass(slots=True)
class RecordedMessage:
    text: str
    audio: bytes
    sample_rate: int

    @property
    def duration_ms(self) -> int:
        return int(len(self.audio) / 2 / self.sample_rate * 1000)


@dataclass(slots=True)
class _AgentUtterance:
    context_id: str
    utterance_id: int
    started_ms: int
    words: list[str] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)
    generated: bool = False  # the TTS has produced all of it
    playing: bool = False
    done: bool = False


class CallRecorder(BaseObserver):
    """Collects a call's transcript and signals from the frames of its pipeline."""

    def __init__(
        self,
        *,
        stt: FrameProcessor,
        tts: FrameProcessor,
        output: FrameProcessor,
        user_aggregator: FrameProcessor,
        utterances: UtteranceRegistry,
        emit: Callable[[SessionEvent], None],
        on_agent_end: Callable[[str], None],
    ) -> None:
        super().__init__()
        self._stt = stt
        self._tts = tts
        self._output = output
        self._user_aggregator = user_aggregator
        self._utterances = utterances
        self._emit = emit
        self._on_agent_end = on_agent_end
        self._t0 = time.monotonic()
        self.turns: list[TurnRecord] = []
        self.message: RecordedMessage | None = None
        self.unrecognised_turns = 0
        self._agent: dict[str, _AgentUtterance] = {}
        self._playing: _AgentUtterance | None = None
        self._user_started_ms: int | None = None
        self._seen: set[int] = set()

    def _now_ms(self) -> int:
        return int((time.monotonic() - self._t0) * 1000)

    async def on_push_frame(self, data: FramePushed) -> None:
        frame = data.frame
        source = data.source
        if isinstance(frame, TTSTextFrame):
            self._on_tts_text(frame, source)
        elif isinstance(frame, TranscriptionFrame):
            if frame.id not in self._seen:
                self._seen.add(frame.id)
                self._on_user_text(frame)
        elif isinstance(frame, SpokenWordsFrame) and source is self._tts:
            self._utterances.add_words(frame.context_id, frame.words or [], frame.end_secs)
        elif isinstance(frame, TTSStartedFrame) and source is self._tts:
            self._agent_utterance(frame.context_id)
        elif isinstance(frame, TTSStoppedFrame) and source is self._tts:
            self._on_tts_stopped(frame.context_id)
        elif data.direction != FrameDirection.DOWNSTREAM:
            return
        elif isinstance(frame, BotStartedSpeakingFrame) and source is self._output:
            self._on_bot_started()
        elif isinstance(frame, BotStoppedSpeakingFrame) and source is self._output:
            self._on_bot_stopped(interrupted=False)
        elif isinstance(frame, InterruptionFrame) and source is self._output:
            self._on_bot_stopped(interrupted=True)
        elif isinstance(frame, UserStartedSpeakingFrame) and source is self._user_aggregator:
            self._user_started_ms = self._now_ms()
            self._emit(TurnEvent(TurnKind.USER_STARTED))
        elif isinstance(frame, UserStoppedSpeakingFrame) and source is self._user_aggregator:
            self._emit(TurnEvent(TurnKind.USER_STOPPED))
        elif isinstance(frame, RecordedUtteranceFrame) and source is self._stt:
            self.message = RecordedMessage(frame.text, frame.audio, frame.sample_rate)
        elif isinstance(frame, AgentEndCallFrame) and frame.id not in self._seen:
            self._seen.add(frame.id)
            self._on_agent_end(frame.reason)

    # Agent side -------------------------------------------------------------------------------

    def _agent_utterance(self, context_id: str | None) -> _AgentUtterance:
        key = context_id or ""
        utterance = self._agent.get(key)
        if utterance is None:
            utterance = _AgentUtterance(key, self._utterances.id_for(key), self._now_ms())
            self._agent[key] = utterance
        return utterance

    def _on_tts_text(self, frame: TTSTextFrame, source: FrameProcessor) -> None:
        utterance = self._agent_utterance(frame.context_id)
        if source is self._tts:
            utterance.words.append(frame.text)
        elif source is self._output and not utterance.done:
            utterance.heard.append(frame.text)

    def _on_tts_stopped(self, context_id: str | None) -> None:
        utterance = self._agent_utterance(context_id)
        if utterance.generated:
            return
        utterance.generated = True
        text = _join(utterance.words)
        if text:
            self._emit(TranscriptEvent("agent", text, True, utterance.utterance_id))

    def _on_bot_started(self) -> None:
        # The utterance being played is the newest one the TTS has started.
        pending = [u for u in self._agent.values() if not u.done]
        if not pending:
            return
        utterance = pending[0]
        utterance.playing = True
        self._playing = utterance
        self._emit(TurnEvent(TurnKind.BOT_STARTED, utterance.utterance_id))

    def _on_bot_stopped(self, *, interrupted: bool) -> None:
        utterance = self._playing
        if utterance is None:
            return
        self._playing = None
        utterance.done = True
        text = _join(utterance.words)
        # Provisional for an interruption: `finish` replaces it with what the caller heard.
        heard = _join(utterance.heard) if interrupted else text
        if interrupted:
            self._utterances.interrupted(utterance.utterance_id, heard)
        self.turns.append(
            TurnRecord(
                role="agent",
                text=text,
                heard_text=heard,
                interrupted=interrupted,
                started_ms=utterance.started_ms,
                ended_ms=self._now_ms(),
                utterance_id=utterance.utterance_id,
            )
        )
        self._emit(TurnEvent(TurnKind.BOT_STOPPED, utterance.utterance_id))

    # User side --------------------------------------------------------------------------------

    def _on_user_text(self, frame: TranscriptionFrame) -> None:
        if not frame.finalized:
            return
        text = frame.text.strip()
        if not text:
            self.unrecognised_turns += 1
            return
        now = self._now_ms()
        started = self._user_started_ms if self._user_started_ms is not None else now
        self.turns.append(TurnRecord("user", text, started_ms=started, ended_ms=now))
        self._emit(TranscriptEvent("user", text, True))

    def finish(self) -> None:
        """Closes an agent utterance cut off by the end of the call; settles what was heard."""
        if self._playing is not None:
            self._on_bot_stopped(interrupted=True)
        for turn in self.turns:
            if turn.role == "agent" and turn.interrupted:
                heard = self._utterances.heard_text(turn.utterance_id)
                if heard is not None:
                    turn.heard_text = heard
        self.turns.sort(key=lambda t: t.started_ms)


def _join(words: list[str]) -> str:
    return " ".join(w.strip() for w in words if w.strip())
