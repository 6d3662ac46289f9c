"""End to end through the real gateway: gRPC socket → Silero VAD → pocketsphinx → secretary →
espeak → back, with calls, turns and messages stored in PostgreSQL.

The agent is the built-in secretary with shorter lines, so each call takes seconds; recognition
uses the same FAQ grammar as the default agent.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from voicegw_client import AudioFormat, Latency, SessionStarted, VoiceClient

from gateway.db import Database
from gateway.server import Gateway
from gateway.storage import calls
from pipelines.agent_config import AgentConfig
from tests.audio_helpers import speech
from tests.integration.caller import CallLog, ScriptedCaller
from tests.integration.conftest import Tenant, make_tenant

SHORT = {
    "greeting": "Hello, Acme Dental. How can I help?",
    "anything_else": "Anything else?",
}
HOURS_ANSWER = "We are open from eight to six."
ADDRESS_ANSWER = "We are at 42 Harbor Street."


def said(log: CallLog, text: str) -> bool:
    return any(text in t for t in log.transcripts("agent"))


def short_secretary() -> AgentConfig:
    config = AgentConfig.default_secretary()
    data = config.to_dict()
    data.update(SHORT)
    for entry in data["faq"]:
        if entry["id"] == "hours":
            entry["answer"] = HOURS_ANSWER
        if entry["id"] == "address":
            entry["answer"] = ADDRESS_ANSWER
    return AgentConfig.model_validate(data)


@pytest.fixture
async def short_tenant(database: Database) -> Tenant:
    return await make_tenant(database, short_secretary())


async def start_call(
    gateway: Gateway, tenant: Tenant, **kwargs: object
) -> tuple[VoiceClient, ScriptedCaller]:
    client = VoiceClient(f"127.0.0.1:{gateway.grpc_port}", tenant.key)
    caller = await ScriptedCaller(client, "secretary", **kwargs).start()  # type: ignore[arg-type]
    return client, caller


async def finish(client: VoiceClient, caller: ScriptedCaller) -> CallLog:
    await caller.hangup()
    log = await caller.wait_end()
    await caller.close()
    await client.close()
    return log


async def stored(database: Database, log: CallLog) -> calls.CallRecord:
    started = log.of(SessionStarted)[0]
    call_id = uuid.UUID(started.session_id)
    record = await calls.get_call(database.pool, call_id)
    assert record is not None
    return record


async def test_greeting_arrives_first(
    gateway: Gateway, short_tenant: Tenant, database: Database
) -> None:
    client, caller = await start_call(gateway, short_tenant)
    await caller.wait_bot_stopped(1)
    log = await finish(client, caller)
    started = log.of(SessionStarted)
    assert started and started[0].agent == "secretary" and started[0].agent_version == 1
    assert log.transcripts("agent")[0] == SHORT["greeting"]
    greeting_audio = log.audio_bytes(utterance_id=1)
    # espeak speaks the greeting in well over a second; all of it arrived, as 16 kHz PCM.
    assert len(greeting_audio) / 32000 > 1.0
    assert log.turns()[:2] == ["bot_started", "bot_stopped"]
    assert log.ended is not None and log.ended.reason == "caller_hangup"
    assert log.status_code == "OK"
    record = await stored(database, log)
    assert record.end_reason == "caller_hangup" and record.status == "ended"
    assert record.agent_version == 1 and record.door == "grpc"


async def test_spoken_faq_question_gets_its_answer(
    gateway: Gateway, short_tenant: Tenant, database: Database
) -> None:
    client, caller = await start_call(gateway, short_tenant)
    await caller.wait_bot_stopped(1)
    await caller.say(speech("what are your opening hours"), 16000)
    await caller.wait_for(lambda log: said(log, HOURS_ANSWER))
    await caller.wait_bot_stopped(2)
    log = await finish(client, caller)
    user = log.transcripts("user")
    assert user and "hours" in user[0]
    answer_audio = log.audio_bytes(utterance_id=2)
    assert len(answer_audio) / 32000 > 1.0
    latency = log.of(Latency)
    assert len(latency) == 1 and 0 < latency[0].user_to_bot_ms < 5000
    record = await stored(database, log)
    turns = await calls.list_turns(database.pool, record.id)
    roles = [(t.role, t.text) for t in turns]
    assert roles[0] == ("agent", SHORT["greeting"])
    assert roles[1][0] == "user" and "hours" in roles[1][1]
    assert roles[2][0] == "agent" and roles[2][1].startswith(HOURS_ANSWER)
    assert record.latency and record.latency["turns"] >= 1


async def test_unintelligible_utterance_gets_the_reprompt(
    gateway: Gateway, short_tenant: Tenant
) -> None:
    client, caller = await start_call(gateway, short_tenant)
    await caller.wait_bot_stopped(1)
    # Speech-like sound that is not English: espeak's German voice.
    # Speech-like sound that is not English, as the caller's first words: espeak's German voice.
    await caller.say(speech("Guten Morgen, wie geht es Ihnen heute?", voice="de"), 16000)
    reprompt = short_secretary().reprompt
    await caller.wait_for(lambda log: said(log, reprompt))
    await finish(client, caller)


async def test_left_message_is_stored_as_text_and_audio(
    gateway: Gateway, short_tenant: Tenant, database: Database
) -> None:
    config = short_secretary()
    client, caller = await start_call(gateway, short_tenant)
    await caller.wait_bot_stopped(1)
    await caller.say(speech("i want to leave a message"), 16000)
    await caller.wait_for(lambda log: said(log, config.message.prompt))
    await caller.wait_bot_stopped(2)
    message = "hello this is john please call me back tomorrow morning"
    spoken = speech(message)
    await caller.say(spoken, 16000)
    await caller.wait_for(lambda log: said(log, config.message.confirmation))
    log = await finish(client, caller)
    record = await stored(database, log)
    stored_message = await calls.get_message(database.pool, record.id)
    assert stored_message is not None
    assert stored_message.text.strip()  # transcribed with the general model
    assert stored_message.sample_rate == 16000
    # The stored audio holds the whole utterance (VAD pre-roll and stop delay included).
    assert stored_message.audio is not None
    assert len(stored_message.audio) / 32000 >= len(spoken) / 32000 * 0.9


async def test_goodbye_ends_the_call(
    gateway: Gateway, short_tenant: Tenant, database: Database
) -> None:
    config = short_secretary()
    client, caller = await start_call(gateway, short_tenant)
    await caller.wait_bot_stopped(1)
    await caller.say(speech("goodbye"), 16000)  # the caller's first words
    log = await caller.wait_end()
    await caller.close()
    await client.close()
    assert log.ended is not None and log.ended.reason == "agent_goodbye"
    assert log.status_code == "OK"
    assert said(log, config.goodbye)
    # The closing line was played out before the call ended.
    assert len(log.audio_bytes(utterance_id=2)) / 32000 > 1.0  # greeting is 1, goodbye 2
    record = await stored(database, log)
    assert record.end_reason == "agent_goodbye"


async def test_two_concurrent_calls_never_mix(
    gateway: Gateway, short_tenant: Tenant, database: Database
) -> None:
    # The other tenant's agent answers the same question differently, so any mixing shows.
    other_config = short_secretary().to_dict()
    for entry in other_config["faq"]:
        if entry["id"] == "hours":
            entry["answer"] = ADDRESS_ANSWER
    other = await make_tenant(database, AgentConfig.model_validate(other_config))
    (client_a, a), (client_b, b) = await asyncio.gather(
        start_call(gateway, short_tenant), start_call(gateway, other)
    )
    gateway.loop_monitor.reset()
    await asyncio.gather(a.wait_bot_stopped(1), b.wait_bot_stopped(1))
    await a.say(speech("what are your opening hours"), 16000)
    await b.say(speech("what are your opening hours"), 16000)
    await asyncio.gather(a.wait_bot_stopped(2), b.wait_bot_stopped(2))
    lateness_p99 = gateway.loop_monitor.percentile(99)
    log_a, log_b = await asyncio.gather(finish(client_a, a), finish(client_b, b))
    assert said(log_a, HOURS_ANSWER) and not said(log_a, ADDRESS_ANSWER)
    assert said(log_b, ADDRESS_ANSWER) and not said(log_b, HOURS_ANSWER)
    record_a, record_b = await stored(database, log_a), await stored(database, log_b)
    assert record_a.org_id == short_tenant.org_id and record_b.org_id == other.org_id
    turns_a = await calls.list_turns(database.pool, record_a.id)
    turns_b = await calls.list_turns(database.pool, record_b.id)
    assert any(HOURS_ANSWER in t.text for t in turns_a)
    assert not any(HOURS_ANSWER in t.text for t in turns_b)
    # Engines run in worker processes: the event loop stays on time while two callers talk.
    # Decoding on the loop or in a thread measured p99 ~570 ms; the bound leaves room for a busy
    # 2-core CI machine (the benchmark publishes the real figure).
    assert lateness_p99 < 0.050, f"event-loop lateness p99 {lateness_p99 * 1000:.1f} ms"


FORMATS = [
    AudioFormat("linear16", 8000),
    AudioFormat("linear16", 16000),
    AudioFormat("linear16", 24000),
    AudioFormat("linear16", 48000),
    AudioFormat("pcmu", 8000),
    AudioFormat("pcma", 8000),
]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.label())
async def test_each_format_round_trips(
    gateway: Gateway, short_tenant: Tenant, fmt: AudioFormat
) -> None:
    """Caller audio in the format reaches the VAD and STT; agent audio comes back in it."""
    from voicegw_client import audio as sdk_audio

    client, caller = await start_call(gateway, short_tenant, input_format=fmt)
    await caller.wait_bot_stopped(1)
    await caller.say(speech("what are your opening hours", fmt.sample_rate_hz), fmt.sample_rate_hz)
    if fmt.sample_rate_hz >= 16000:
        await caller.wait_for(lambda log: said(log, HOURS_ANSWER))
    else:
        # The offline model is wideband: telephone-band audio is heard (a user turn, and the
        # agent answers it) but not reliably recognised; see docs/issues/0002-foundation.md.
        await caller.wait_for(lambda log: "user_stopped" in log.turns())
        await caller.wait_bot_stopped(2)
    log = await finish(client, caller)
    greeting = sdk_audio.decode(log.audio_bytes(1), fmt.encoding)
    # The TTS speaks sentence by sentence; the greeting is two.
    reference = speech("Hello, Acme Dental.", fmt.sample_rate_hz) + speech(
        "How can I help?", fmt.sample_rate_hz
    )
    # The greeting arrived whole, at the caller's rate and in the caller's encoding.
    assert abs(len(greeting) - len(reference)) / len(reference) < 0.05
    assert len(log.audio_bytes(2)) > 0  # and so did the answer to the caller's turn
