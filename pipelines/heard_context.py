"""Keeps the LLM's memory of an interrupted reply to the words the caller actually heard.

Pipecat's assistant aggregator writes an interrupted reply into the context as the words its
output clock released, which include words still sitting in the client's buffer when the caller
cut in. Just before the next inference (the user's turn has ended, so the client's final
playback mark has long arrived) this processor replaces that message with the heard words, or
removes it when nothing was heard, or adds it when Pipecat released nothing yet the caller heard
a word.
"""

from __future__ import annotations

from typing import Any

from pipecat.frames.frames import Frame, LLMContextFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipelines.utterances import UtteranceRegistry


class HeardTextEditor(FrameProcessor):
    def __init__(self, utterances: UtteranceRegistry, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._utterances = utterances

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame) and direction == FrameDirection.DOWNSTREAM:
            apply_heard_text(frame.context, self._utterances)
        await self.push_frame(frame, direction)


def apply_heard_text(context: LLMContext, utterances: UtteranceRegistry) -> None:
    pending = utterances.take_interrupted()
    if not pending:
        return
    messages: list[Any] = list(context.messages)
    for item in pending:
        heard = utterances.heard_text(item.utterance_id)
        if heard is None:
            continue  # nothing says how much was played: Pipecat's account stands
        released = _normalise(item.released_text)
        index = _last_assistant_with(messages, released) if released else None
        if index is not None:
            if heard:
                messages[index] = {**messages[index], "content": heard}
            else:
                del messages[index]
        elif heard:
            messages.insert(_before_last_user(messages), {"role": "assistant", "content": heard})
    context.set_messages(messages)


def _normalise(text: str) -> str:
    return " ".join(text.split())


def _last_assistant_with(messages: list[Any], text: str) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if (
            isinstance(message, dict)
            and message.get("role") == "assistant"
            and isinstance(message.get("content"), str)
            and _normalise(message["content"]) == text
        ):
            return i
    return None


def _before_last_user(messages: list[Any]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], dict) and messages[i].get("role") == "user":
            return i
    return len(messages)
