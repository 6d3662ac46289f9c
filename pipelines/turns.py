"""Turn-taking policy for voicegw calls.

Pipecat's `SpeechTimeoutUserTurnStopStrategy` waits for *some text* before ending a user turn, so
an utterance the STT could not recognise (an empty transcript) leaves the caller in silence until
the aggregator's 5 s safety timeout. Our STTs finalize a transcript at every VAD stop, empty or
not, so the right condition is "the transcript is final": the turn then ends as soon as both the
speech timeout and the recogniser are done, and an empty turn reaches the agent, which re-prompts.
"""

from __future__ import annotations

from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy


class FinalTranscriptUserTurnStopStrategy(SpeechTimeoutUserTurnStopStrategy):
    """Ends the user turn after the speech timeout once the STT has finalized, even with no text."""

    async def _maybe_trigger_user_turn_stopped(self) -> None:
        if self._vad_user_speaking:
            return
        if self._wait_for_transcript and not (self._text or self._transcript_finalized):
            return
        if self._user_speech_wait_done and self._stt_wait_done:
            await self.trigger_user_turn_stopped()
