"""Barge-in end to end: the caller cuts the agent off mid-greeting and is heard at once; the agent
remembers only the words the caller heard; a cough does not cut it off.

The caller is a simulated phone (tests/integration/caller.py): it plays agent audio in real time,
drops its buffer on `interruption` and, unless told not to, reports playback marks. What it
played is the reference for what was heard; the greeting's word timings come from espeak-ng in
this process, independently of the gateway.
"""

from __future__ import annotations

import re
import uuid

import pytest
from voicegw_client import AgentAudio, Interruption, SessionStarted, TurnEvent

from gateway import metrics
from gateway.db import Database
from gateway.server import Gateway
from gateway.session import Session
from gateway.storage import calls
from pipelines.agent_config import AgentConfig
from pipelines.engines.espeak import synthesize
from tests.audio_helpers import cough, speech
from tests.integration.caller import CallLog, ScriptedCaller
from tests.integration.conftest import Tenant, make_tenant
from tests.integration.test_conversation import finish, short_secretary, start_call, stored

GREETING = "Hello, Acme Dental. How can I help?"


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def expected_heard(played_ms: int) -> list[str]:
    """The greeting's words at least half played after `played_ms`, timed by espeak itself.

    The agent streams the greeting sentence by sentence, each synthesised on its own, back to
    back in one utterance.
    """
    timed: list[tuple[str, float, float]] = []
    offset = 0.0
    for sentence in re.findall(r"[^.?!]+[.?!]", GREETING):
        synthesis = synthesize(sentence.strip())
        marks = synthesis.words
        for i, mark in enumerate(marks):
            start = mark.start_ms / 1000
            end = marks[i + 1].start_ms / 1000 if i + 1 < len(marks) else synthesis.duration_secs
            timed.append((mark.word, offset + start, offset + end))
        offset += synthesis.duration_secs
    heard = [w for w, start, end in timed if (start + end) / 2 * 1000 <= played_ms]
    return words_of(" ".join(heard))


async def live_session(gateway: Gateway, caller: ScriptedCaller) -> Session:
    await caller.wait_for(lambda log: bool(log.of(SessionStarted)))
    call_id = uuid.UUID(caller.log.of(SessionStarted)[0].session_id)
    assert gateway.sessions is not None
    return gateway.sessions.sessions[call_id]


def barge_in_count() -> float:
    value = metrics.REGISTRY.get_sample_value(
        "voicegw_barge_in_latency_seconds_count", {"door": "grpc"}
    )
    return value or 0.0


def audio_ms(log: CallLog, utterance_id: int, rate: int = 16000) -> float:
    return len(log.audio_bytes(utterance_id)) / 2 / rate * 1000


def stale_audio_after_interruption(log: CallLog, utterance_id: int) -> int:
    seen_interruption = False
    stale = 0
    for recorded in log.events:
        event = recorded.event
        if isinstance(event, Interruption) and event.utterance_id == utterance_id:
            seen_interruption = True
        elif seen_interruption and isinstance(event, AgentAudio):
            stale += event.utterance_id == utterance_id
    return stale


@pytest.mark.parametrize("playback_marks", [True, False], ids=["client-marks", "server-account"])
async def test_barge_in_during_greeting_keeps_only_what_was_heard(
    gateway: Gateway, database: Database, playback_marks: bool
) -> None:
    tenant = await make_tenant(database, short_secretary())
    barge_ins = barge_in_count()
    client, caller = await start_call(gateway, tenant, playback_marks=playback_marks)
    session = await live_session(gateway, caller)
    # Speak over the greeting once most of its first sentence has arrived.
    await caller.wait_for(lambda log: audio_ms(log, 1) >= 900)
    await caller.say(speech("what are your opening hours"), 16000)
    await caller.wait_for(lambda log: any(e.utterance_id == 1 for e in log.of(Interruption)))
    # The agent answers the question it heard, then we hang up.
    await caller.wait_for(lambda log: log.turns().count("bot_stopped") >= 2)
    assert caller.playout is not None
    played_ms = caller.playout.played_ms_of(1)
    context_messages = list(session.context.messages) if session.context else []
    log = await finish(client, caller)

    assert stale_audio_after_interruption(log, 1) == 0
    assert barge_in_count() == barge_ins + 1  # the latency histogram saw exactly this one
    record = await stored(database, log)
    turns = await calls.list_turns(database.pool, record.id)
    greeting = next(t for t in turns if t.role == "agent" and words_of(t.text)[:1] == ["hello"])
    assert greeting.interrupted
    heard = words_of(greeting.heard_text or "")
    assert heard, f"nothing heard of {greeting.text!r} after {played_ms} ms played"
    assert heard == words_of(GREETING)[: len(heard)], f"{heard} is not a prefix of the greeting"
    assert len(heard) < len(words_of(GREETING))
    expected = expected_heard(played_ms)
    assert abs(len(heard) - len(expected)) <= 1, f"heard {heard}, played {expected}"
    # The LLM's memory of the greeting is the same truncated text.
    assistant = [m["content"] for m in context_messages if m.get("role") == "assistant"]
    assert assistant and words_of(assistant[0]) == heard, assistant


async def test_cough_during_agent_speech_does_not_interrupt(
    gateway: Gateway, database: Database
) -> None:
    tenant = await make_tenant(database, short_secretary())
    client, caller = await start_call(gateway, tenant)
    await caller.wait_for(lambda log: audio_ms(log, 1) >= 300)
    await caller.say(cough(300), 16000)
    await caller.wait_bot_stopped(1)
    log = await finish(client, caller)
    assert not log.of(Interruption), "a cough cut the agent off"
    assert "user_started" not in log.turns()
    record = await stored(database, log)
    turns = await calls.list_turns(database.pool, record.id)
    assert [t.interrupted for t in turns if t.role == "agent"] == [False]


async def test_agent_without_interruptions_finishes_its_line(
    gateway: Gateway, database: Database
) -> None:
    data = short_secretary().to_dict()
    data["turn"]["interruptions"] = False
    tenant: Tenant = await make_tenant(database, AgentConfig.model_validate(data))
    client, caller = await start_call(gateway, tenant)
    await caller.wait_for(lambda log: audio_ms(log, 1) >= 300)
    await caller.say(speech("what are your opening hours"), 16000)
    await caller.wait_for(lambda log: log.turns().count("bot_stopped") >= 1)
    log = await finish(client, caller)
    assert not [e for e in log.of(Interruption) if e.utterance_id == 1]
    first_stop = next(e for e in log.of(TurnEvent) if e.kind == "bot_stopped")
    assert first_stop.utterance_id == 1
    assert audio_ms(log, 1) >= 1500  # the whole greeting was sent
