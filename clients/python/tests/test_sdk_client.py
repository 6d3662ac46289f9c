"""VoiceClient and Conversation against the fake gateway over a real socket."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import voicegw_client
from sdk_fake_gateway import API_KEY, Script, StartGateway, pcm16, tone
from voicegw.v1 import voice_pb2 as pb
from voicegw_client import (
    AgentAudio,
    AudioFormat,
    ConversationClosed,
    SessionEnded,
    SessionStarted,
    TurnEvent,
    VoiceClient,
    VoiceGatewayError,
)
from voicegw_client._events import event_from_proto

CHUNK_16K = pcm16(tone(440, 20, 16000))
SILENCE_16K = bytes(640)  # 20 ms; silence does not barge into the greeting


async def test_config_goes_first_then_audio_with_the_bearer_key(
    fake_gateway: StartGateway,
) -> None:
    gw = await fake_gateway(Script(greeting_ms=100, answer=False))
    async with VoiceClient(gw.target, API_KEY) as client:
        conversation = await client.converse(
            "secretary",
            language="en-US",
            caller_number="+15550100",
            caller_name="Ann",
            metadata={"ticket": "42"},
        )
        async with conversation:
            await conversation.send_audio(SILENCE_16K)
            await conversation.send_text("hello")
            await conversation.send_dtmf("12#")
            await conversation.send_playback_mark(1, 40)
            events = []
            async for event in conversation:
                events.append(event)
                if isinstance(event, TurnEvent) and event.kind == "bot_stopped":
                    await conversation.hangup()
    call = gw.call
    assert call.metadata["authorization"] == f"Bearer {API_KEY}"
    assert call.kinds == ["config", "audio", "text", "dtmf", "playback_mark", "hangup"]
    assert call.config is not None
    assert call.config.agent == "secretary"
    assert call.config.input_format.encoding == pb.AUDIO_ENCODING_LINEAR16
    assert call.config.input_format.sample_rate_hz == 16000
    assert not call.config.HasField("output_format")  # None means "same as input"
    assert call.config.language == "en-US"
    assert call.config.caller.phone_number == "+15550100"
    assert dict(call.config.caller.metadata) == {"ticket": "42"}
    assert call.chunks[0].encoded == SILENCE_16K
    assert (call.texts, call.dtmf, call.marks) == (["hello"], ["12#"], [(1, 40)])

    started = events[0]
    assert isinstance(started, SessionStarted)
    assert started.agent_version == 3
    assert started.output_format == AudioFormat("linear16", 16000)
    assert [e.kind for e in events if isinstance(e, TurnEvent)] == ["bot_started", "bot_stopped"]
    assert sum(len(e.data) for e in events if isinstance(e, AgentAudio)) == 3200  # 100 ms
    assert events[-1] == SessionEnded("caller_hangup", billed_seconds=1)
    assert conversation.status is not None
    assert conversation.status.ok


async def test_unknown_agent_is_a_not_found_error(fake_gateway: StartGateway) -> None:
    gw = await fake_gateway()
    async with VoiceClient(gw.target, API_KEY) as client:
        conversation = None
        with pytest.raises(VoiceGatewayError) as caught:
            conversation = await client.converse("nobody")
            async for _ in conversation:
                pass
    assert caught.value.code == "NOT_FOUND"
    assert "nobody" in caught.value.message
    if conversation is not None:
        assert conversation.status is not None
        assert conversation.status.code == "NOT_FOUND"


async def test_wrong_key_is_unauthenticated(fake_gateway: StartGateway) -> None:
    gw = await fake_gateway()
    async with VoiceClient(gw.target, "vg_wrong_key") as client:
        with pytest.raises(VoiceGatewayError) as caught:
            async for _ in await client.converse("secretary"):
                pass
    assert caught.value.code == "UNAUTHENTICATED"


async def test_refusal_reason_comes_from_error_info(fake_gateway: StartGateway) -> None:
    gw = await fake_gateway(
        Script(
            refuse=(grpc.StatusCode.RESOURCE_EXHAUSTED, "balance too low", "INSUFFICIENT_BALANCE")
        )
    )
    async with VoiceClient(gw.target, API_KEY) as client:
        with pytest.raises(VoiceGatewayError) as caught:
            async for _ in await client.converse("secretary"):
                pass
    assert caught.value.code == "RESOURCE_EXHAUSTED"
    assert caught.value.reason == "INSUFFICIENT_BALANCE"
    assert caught.value.status.reason == "INSUFFICIENT_BALANCE"


async def test_nothing_can_be_sent_after_hangup(fake_gateway: StartGateway) -> None:
    gw = await fake_gateway(Script(greeting_ms=0))
    async with VoiceClient(gw.target, API_KEY) as client:
        conversation = await client.converse("secretary")
        await conversation.send_audio(CHUNK_16K)
        await conversation.hangup()
        await conversation.hangup()  # idempotent
        with pytest.raises(ConversationClosed):
            await conversation.send_audio(CHUNK_16K)
        with pytest.raises(ConversationClosed):
            await conversation.send_playback_mark(1, 100)
        events = [event async for event in conversation]
        assert isinstance(events[-1], SessionEnded)
        assert events[-1].reason == "caller_hangup"
        # After the stream ended, sends still fail cleanly rather than with a grpc error.
        with pytest.raises(ConversationClosed):
            await conversation.send_text("hello?")
    assert gw.call.kinds == ["config", "audio", "hangup"]


async def test_concurrent_senders_are_serialised(fake_gateway: StartGateway) -> None:
    gw = await fake_gateway(Script(greeting_ms=0))
    async with VoiceClient(gw.target, API_KEY) as client:
        conversation = await client.converse("secretary")

        async def audio() -> None:
            for _ in range(30):
                await conversation.send_audio(CHUNK_16K)

        async def marks() -> None:
            for i in range(30):
                await conversation.send_playback_mark(1, i * 10)

        await asyncio.gather(audio(), marks())
        await conversation.hangup()
        assert [e async for e in conversation][-1].reason == "caller_hangup"  # type: ignore[union-attr]
    assert gw.call.kinds.count("audio") == 30
    assert [ms for _, ms in gw.call.marks] == [i * 10 for i in range(30)]


async def test_closing_the_client_cancels_open_calls(fake_gateway: StartGateway) -> None:
    gw = await fake_gateway(Script(greeting_ms=0))
    client = VoiceClient(gw.target, API_KEY)
    conversation = await client.converse("secretary")
    received: list[object] = []

    async def consume() -> None:
        async for event in conversation:
            received.append(event)

    consumer = asyncio.create_task(consume())
    await conversation.send_audio(CHUNK_16K)
    await client.close()
    with pytest.raises(VoiceGatewayError) as caught:
        await consumer
    assert caught.value.code == "CANCELLED"
    with pytest.raises(ConversationClosed):
        await conversation.send_audio(CHUNK_16K)
    with pytest.raises(ConversationClosed):
        await client.converse("secretary")


async def test_send_validation() -> None:
    client = VoiceClient("127.0.0.1:1", API_KEY)
    try:
        with pytest.raises(ValueError, match="agent"):
            await client.converse("")
    finally:
        await client.close()
    with pytest.raises(ValueError):
        AudioFormat("opus", 48000)
    assert AudioFormat("pcmu") == AudioFormat("pcmu", 8000)
    assert AudioFormat().label() == "linear16/16000"


async def test_unreachable_gateway_is_unavailable() -> None:
    async with VoiceClient("127.0.0.1:1", API_KEY) as client:
        with pytest.raises(VoiceGatewayError) as caught:
            async for _ in await client.converse("secretary"):
                pass
    assert caught.value.code == "UNAVAILABLE"


def test_enum_names_are_short_and_forward_compatible() -> None:
    event = event_from_proto(pb.ConverseResponse(session_ended=pb.SessionEnded(reason=99)))
    assert event == SessionEnded("unknown_99", 0)
    event = event_from_proto(
        pb.ConverseResponse(billing=pb.BillingNotice(kind=pb.BILLING_NOTICE_KIND_MINUTES_LEFT))
    )
    assert event is not None and event.kind == "minutes_left"  # type: ignore[union-attr]
    assert event_from_proto(pb.ConverseResponse()) is None


def test_public_api() -> None:
    assert set(voicegw_client.__all__) >= {
        "VoiceClient",
        "Conversation",
        "AudioFormat",
        "VoiceGatewayError",
        "connect",
    }


async def test_refusal_status_survives_racing_writes(fake_gateway: StartGateway) -> None:
    """A refusal that meets audio writes in flight is still reported as the gateway sent it.

    grpc.aio alone reports a share of these as "INTERNAL: Internal error from Core"
    (grpc/grpc#36066); 100 calls make that share show up reliably.
    """
    gw = await fake_gateway()
    codes: set[str] = set()
    async with VoiceClient(gw.target, API_KEY) as client:
        for _ in range(100):
            try:
                conversation = await client.converse("nobody")
                for _ in range(100):
                    await conversation.send_audio(SILENCE_16K)
            except VoiceGatewayError as e:
                codes.add(e.code)
            except ConversationClosed:
                pass
            with pytest.raises(VoiceGatewayError) as caught:
                async for _ in conversation:
                    pass
            codes.add(caught.value.code)
    assert codes == {"NOT_FOUND"}
