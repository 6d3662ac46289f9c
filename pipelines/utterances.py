"""Numbers the agent's utterances so the caller's client and the gateway can name them.

An utterance is one TTS context (one agent response). The output transport allocates the number
when the context's first audio is played out, and observers look the same context up to tag
transcripts, so both sides of the wire agree on "utterance N" without Pipecat knowing about it.
"""

from __future__ import annotations


class UtteranceRegistry:
    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._next = 1

    def id_for(self, context_id: str | None) -> int:
        """The utterance number of a TTS context, allocated on first sight."""
        key = context_id or ""
        if key not in self._ids:
            self._ids[key] = self._next
            self._next += 1
        return self._ids[key]

    def known(self, context_id: str | None) -> int | None:
        return self._ids.get(context_id or "")
