"""Python SDK for the voicegw voice gateway.

    async with VoiceClient("localhost:50051", api_key) as client:
        async with await client.converse("secretary") as call:
            await call.send_audio(chunk)  # 20 ms of linear16 at 16 kHz
            async for event in call:
                ...

Everything public is importable from here; the submodules are implementation details, except
`voicegw_client.audio` (G.711, resampling, WAV helpers) and `voicegw_client.talk` (the
`voicegw talk` command).
"""

from voicegw_client._events import (
    AgentAudio,
    AudioFormat,
    BillingNotice,
    ErrorEvent,
    Event,
    Interruption,
    Latency,
    SessionEnded,
    SessionStarted,
    Transcript,
    TurnEvent,
)
from voicegw_client._status import CallStatus, ConversationClosed, VoiceGatewayError
from voicegw_client.client import Conversation, VoiceClient, __version__, connect

__all__ = [
    "AgentAudio",
    "AudioFormat",
    "BillingNotice",
    "CallStatus",
    "Conversation",
    "ConversationClosed",
    "ErrorEvent",
    "Event",
    "Interruption",
    "Latency",
    "SessionEnded",
    "SessionStarted",
    "Transcript",
    "TurnEvent",
    "VoiceClient",
    "VoiceGatewayError",
    "__version__",
    "connect",
]
