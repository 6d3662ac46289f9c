"""ScriptedLLMService in a running Pipecat pipeline (pipecat.tests.utils.run_test)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
)
from pipecat.metrics.metrics import TTFATMetricsData, TTFBMetricsData
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.aggregators.llm_context import LLMContext, LLMContextMessage
from pipecat.tests.utils import run_test

from pipelines.agent_config import AgentConfig
from pipelines.frames import AgentEndCallFrame, RecognitionModeFrame
from pipelines.scripted_agent import Reply
from pipelines.services.scripted_llm import (
    UNRECOGNISED_MARKER,
    ScriptedLLMService,
    classify_context,
    text_chunks,
)

SYSTEM: LLMContextMessage = {"role": "system", "content": "You are a receptionist."}


def _user(text: str) -> LLMContextMessage:
    return {"role": "user", "content": text}


def _assistant(text: str) -> LLMContextMessage:
    return {"role": "assistant", "content": text}


UNRECOGNISED: LLMContextMessage = {"role": "developer", "content": UNRECOGNISED_MARKER}


def _turns(*histories: list[LLMContextMessage]) -> list[Frame]:
    """One LLMContextFrame per history, as the user aggregator sends them turn after turn."""
    return [LLMContextFrame(LLMContext(list(messages))) for messages in histories]


def _responses(frames: Sequence[Frame]) -> list[str]:
    """The text of each response (start .. end) among ``frames``."""
    responses: list[str] = []
    current: list[str] | None = None
    for frame in frames:
        if isinstance(frame, LLMFullResponseStartFrame):
            current = []
        elif isinstance(frame, LLMTextFrame):
            assert current is not None, "text outside a response"
            current.append(frame.text)
        elif isinstance(frame, LLMFullResponseEndFrame):
            assert current is not None
            responses.append("".join(current))
            current = None
    assert current is None, "unfinished response"
    return responses


def _kinds(frames: Sequence[Frame]) -> list[type]:
    wanted = (
        LLMFullResponseStartFrame,
        LLMTextFrame,
        LLMFullResponseEndFrame,
        AgentEndCallFrame,
    )
    return [type(f) for f in frames if isinstance(f, wanted)]


def _modes(frames: Sequence[Frame]) -> list[RecognitionModeFrame]:
    return [f for f in frames if isinstance(f, RecognitionModeFrame)]


def _answer(config: AgentConfig, faq_id: str) -> str:
    entry = next(e for e in config.faq if e.id == faq_id)
    return f"{entry.answer} {config.anything_else}"


async def _run(service: ScriptedLLMService, frames: list[Frame], **kwargs: Any) -> tuple:
    return await run_test(service, frames_to_send=frames, **kwargs)


async def test_user_message_streams_the_answer_word_by_word(secretary: AgentConfig) -> None:
    service = ScriptedLLMService(secretary)
    down, up = await _run(service, _turns([SYSTEM, _user("what are your opening hours")]))
    answer = _answer(secretary, "hours")
    kinds = _kinds(down)
    assert kinds[0] is LLMFullResponseStartFrame and kinds[-1] is LLMFullResponseEndFrame
    texts = [f.text for f in down if isinstance(f, LLMTextFrame)]
    assert len(texts) == len(answer.split()) and "".join(texts) == answer
    assert _modes(up) == []  # grammar mode throughout: nothing to tell the STT
    assert service.brain.state.last_intent == "faq:hours"


async def test_chunks_of_several_words(secretary: AgentConfig) -> None:
    down, _ = await _run(
        ScriptedLLMService(secretary, words_per_chunk=4), _turns([_user("prices")])
    )
    texts = [f.text for f in down if isinstance(f, LLMTextFrame)]
    answer = _answer(secretary, "prices")
    assert "".join(texts) == answer and len(texts) == -(-len(answer.split()) // 4)


async def test_greets_when_no_one_has_spoken(secretary: AgentConfig) -> None:
    down, _ = await _run(ScriptedLLMService(secretary), _turns([], [SYSTEM]))
    assert _responses(down) == [secretary.greeting, secretary.greeting]


async def test_unrecognised_marker_reprompts(secretary: AgentConfig) -> None:
    down, _ = await _run(
        ScriptedLLMService(secretary),
        _turns(
            [SYSTEM, _assistant(secretary.greeting), UNRECOGNISED],
            [SYSTEM, UNRECOGNISED],  # an empty turn before the caller said anything
        ),
    )
    assert _responses(down) == [secretary.reprompt, secretary.reprompt]


async def test_message_trigger_switches_the_stt_upstream(secretary: AgentConfig) -> None:
    history = [SYSTEM, _assistant(secretary.greeting), _user("i want to leave a message")]
    taken = [*history, _assistant(secretary.message.prompt), _user("hi this is bob")]
    down, up = await _run(ScriptedLLMService(secretary), _turns(history, taken))
    modes = _modes(up)
    assert [(f.mode, f.capture_audio) for f in modes] == [("general", True), ("grammar", False)]
    assert _responses(down) == [
        secretary.message.prompt,
        f"{secretary.message.confirmation} {secretary.anything_else}",
    ]
    # Each switch precedes its reply's text (frame ids grow with creation).
    texts = [f for f in down if isinstance(f, LLMTextFrame)]
    prompt_words = len(secretary.message.prompt.split())
    assert modes[0].id < texts[0].id
    assert texts[prompt_words - 1].id < modes[1].id < texts[prompt_words].id


async def test_goodbye_ends_the_call_after_the_closing_line(secretary: AgentConfig) -> None:
    down, _ = await _run(ScriptedLLMService(secretary), _turns([_user("no thank you goodbye")]))
    kinds = _kinds(down)
    assert kinds[-2:] == [LLMFullResponseEndFrame, AgentEndCallFrame]
    assert AgentEndCallFrame not in kinds[:-1]
    end = next(f for f in down if isinstance(f, AgentEndCallFrame))
    assert end.reason == "agent_goodbye"
    assert _responses(down) == [secretary.goodbye]


async def test_goodbye_after_misses(secretary: AgentConfig) -> None:
    down, _ = await _run(
        ScriptedLLMService(secretary), _turns([UNRECOGNISED], [UNRECOGNISED], [_user("purple")])
    )
    assert _responses(down) == [secretary.reprompt] * 2 + [secretary.goodbye_after_misses]
    assert _kinds(down)[-1] is AgentEndCallFrame


async def test_nothing_new_gets_no_response(secretary: AgentConfig) -> None:
    stale = [_user("hours"), _assistant("We are open.")]
    down, up = await _run(ScriptedLLMService(secretary), _turns(stale))
    assert _kinds(down) == [] and _modes(up) == []


async def test_on_reply_reports_each_reply_in_order(secretary: AgentConfig) -> None:
    service = ScriptedLLMService(secretary)
    seen: list[Reply] = []

    @service.event_handler("on_reply")
    async def on_reply(_service: ScriptedLLMService, reply: Reply) -> None:
        seen.append(reply)

    await _run(service, _turns([], [_user("where are you")], [_user("bye")]))
    assert [r.intent for r in seen] == ["greeting", "faq:address", "goodbye"]


async def test_reports_ttfb_and_ttfat_metrics(secretary: AgentConfig) -> None:
    down, _ = await _run(
        ScriptedLLMService(secretary),
        _turns([_user("hours")]),
        pipeline_params=PipelineParams(enable_metrics=True),
    )
    data = [d for f in down if isinstance(f, MetricsFrame) for d in f.data]
    assert any(isinstance(d, TTFBMetricsData) for d in data)
    assert any(isinstance(d, TTFATMetricsData) for d in data)


def test_classify_context() -> None:
    assert classify_context([]) == ("greet", "")
    assert classify_context([SYSTEM]) == ("greet", "")
    assert classify_context([SYSTEM, _user("hi")]) == ("user", "hi")
    assert classify_context([_user("hi"), UNRECOGNISED]) == ("unrecognised", "")
    assert classify_context([_user("hi"), UNRECOGNISED, SYSTEM]) == ("unrecognised", "")
    assert classify_context([_user("hi"), {"role": "developer", "content": "x"}]) == ("user", "hi")
    assert classify_context([_user("hi"), _assistant("hello")]) == ("none", "")
    assert classify_context([_assistant("hello")]) == ("greet", "")
    multipart: LLMContextMessage = {
        "role": "user",
        "content": [{"type": "text", "text": "opening"}, {"type": "text", "text": "hours"}],
    }
    assert classify_context([multipart]) == ("user", "opening hours")


def test_text_chunks() -> None:
    assert text_chunks("Hello there.  How are you?") == [
        "Hello ",
        "there.  ",
        "How ",
        "are ",
        "you?",
    ]
    assert text_chunks("a b c", 2) == ["a b ", "c"]
    assert text_chunks("") == []
    with pytest.raises(ValueError):
        ScriptedLLMService(AgentConfig.default_secretary(), words_per_chunk=0)
