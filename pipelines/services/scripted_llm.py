"""The scripted secretary as a Pipecat LLM service, so it drops in where a real LLM would go.

It answers ``LLMContextFrame``s like ``services/openai/base_llm.py`` does (response start, text
frames, response end, with TTFB/TTFAT metrics), so the aggregators, TTS and latency observers
treat it as any LLM, and a cloud LLM can later replace it without touching the pipeline.

What to answer is read from the newest context message: a user message is what the caller said;
a developer/system message equal to :data:`UNRECOGNISED_MARKER` is an empty user turn (the user
aggregator adds it through ``EmptyUserTurnConfig``, because our STT finalizes an empty transcript
when it heard nothing); a context without any user message yet is the start of the call, so the
agent greets.

The brain is stateful, so a speculative inference (eager end of turn) would advance it for a turn
that may be withdrawn; the voicegw pipeline does not use eager turn strategies.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
)
from pipecat.processors.aggregators.llm_context import (
    LLMContextMessage,
    LLMSpecificMessage,
    standard_message_text,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings

from pipelines.agent_config import AgentConfig
from pipelines.frames import AgentEndCallFrame, RecognitionModeFrame
from pipelines.scripted_agent import Reply, SecretaryBrain

# Content of the developer message for "the caller's turn had no transcript". Written as an
# instruction so that a context handed to a real LLM still makes sense; matched exactly.
UNRECOGNISED_MARKER = (
    "[voicegw:unrecognised] The caller spoke but nothing was recognised. "
    "Briefly ask them to repeat."
)
END_CALL_REASON = "agent_goodbye"
MODEL_NAME = "scripted"

_Input = Literal["user", "unrecognised", "greet", "none"]
_CHUNK = re.compile(r"\S+\s*")


def classify_context(messages: list[LLMContextMessage]) -> tuple[_Input, str]:
    """What the newest context message asks of the agent, and the caller's text if any.

    Other developer/system messages (a system prompt, say) are skipped; an assistant or tool
    message as the newest means nothing new was said (``"none"``), unless the caller has not
    spoken at all yet, which is the start of the call (``"greet"``).
    """
    for message in reversed(messages):
        if isinstance(message, LLMSpecificMessage):
            continue
        role = message.get("role")
        if role == "user":
            return "user", standard_message_text(message)
        if role in ("developer", "system"):
            if standard_message_text(message).strip() == UNRECOGNISED_MARKER:
                return "unrecognised", ""
            continue
        break
    has_user = any(
        not isinstance(m, LLMSpecificMessage) and m.get("role") == "user" for m in messages
    )
    return ("none", "") if has_user else ("greet", "")


class LocalLLMService(LLMService):
    """An LLM that answers in-process: each context that reaches it is answered by `_respond`.

    It reports TTFB/processing metrics like a real LLM, so latency breakdowns include it.
    """

    def __init__(self, model: str, **kwargs: Any) -> None:
        super().__init__(settings=local_llm_settings(model), **kwargs)

    def can_generate_metrics(self) -> bool:
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self._respond(frame)
        else:
            await self.push_frame(frame, direction)

    async def _respond(self, frame: LLMContextFrame) -> None:
        raise NotImplementedError


def local_llm_settings(model: str) -> LLMSettings:
    """Settings of an LLM that runs here and samples nothing: Pipecat requires every field."""
    return LLMSettings(
        model=model,
        system_instruction=None,
        temperature=None,
        max_tokens=None,
        top_p=None,
        top_k=None,
        frequency_penalty=None,
        presence_penalty=None,
        seed=None,
        filter_incomplete_user_turns=None,
        user_turn_completion_config=None,
        use_provider_thinking_default=False,
    )


def text_chunks(text: str, words_per_chunk: int = 1) -> list[str]:
    """``text`` in chunks of whole words, each carrying its trailing space: they join back to
    ``text`` exactly, as an LLM's streamed tokens do (``LLMTextFrame`` includes its spaces)."""
    words = _CHUNK.findall(text)
    return ["".join(words[i : i + words_per_chunk]) for i in range(0, len(words), words_per_chunk)]


class ScriptedLLMService(LocalLLMService):
    """Streams :class:`SecretaryBrain` replies as an LLM would; one instance per call.

    Besides the text it pushes a :class:`RecognitionModeFrame` upstream (before the text) when the
    reply changes what the STT should listen for, and an :class:`AgentEndCallFrame` downstream
    (after the response end, so it queues behind the closing line) when the reply ends the call.

    Event ``on_reply(service, reply)`` runs before a reply's frames are pushed, in order, so the
    Session can record intents; handlers must be quick, they hold up the reply.
    """

    def __init__(self, config: AgentConfig, words_per_chunk: int = 1, **kwargs: Any) -> None:
        if words_per_chunk < 1:
            raise ValueError("words_per_chunk must be at least 1")
        super().__init__(MODEL_NAME, **kwargs)
        self._brain = SecretaryBrain(config)
        self._words_per_chunk = words_per_chunk
        # What the STT was last told; it starts in grammar mode without capture.
        self._recognition: tuple[str, bool] = ("grammar", False)
        self._register_event_handler("on_reply", sync=True)

    @property
    def brain(self) -> SecretaryBrain:
        return self._brain

    def _decide(self, kind: _Input, text: str) -> Reply:
        if kind == "user":
            return self._brain.on_user_text(text)
        if kind == "unrecognised":
            return self._brain.on_unrecognised()
        return self._brain.greet()

    async def _respond(self, frame: LLMContextFrame) -> None:
        kind, text = classify_context(frame.context.get_messages())
        if kind == "none":
            # E.g. an LLMRunFrame with no new caller turn: an LLM would repeat itself; we don't.
            logger.debug(f"{self}: context has nothing new to answer")
            return
        if frame.speculation:
            logger.warning(f"{self}: speculative inference is not supported; answering anyway")
        await self.push_frame(LLMFullResponseStartFrame())
        await self.start_processing_metrics()
        await self.start_ttfb_metrics()
        reply: Reply | None = None
        try:
            reply = self._decide(kind, text)
            await self._call_event_handler("on_reply", reply)
            recognition = (reply.mode, reply.capture_audio)
            if recognition != self._recognition:
                self._recognition = recognition
                await self.push_frame(
                    RecognitionModeFrame(mode=reply.mode, capture_audio=reply.capture_audio),
                    FrameDirection.UPSTREAM,
                )
            await self.stop_ttfb_metrics()
            for chunk in text_chunks(reply.text, self._words_per_chunk):
                await self._push_llm_text(chunk)
        except Exception as exc:  # noqa: BLE001 - any failure becomes an error frame, the call goes on
            await self.push_error(error_msg=f"scripted agent failed: {exc}", exception=exc)
        finally:
            await self.stop_processing_metrics()
            await self.push_frame(LLMFullResponseEndFrame())
        if reply is not None and reply.end_call:
            await self.push_frame(AgentEndCallFrame(reason=END_CALL_REASON))
