"""What a call tells its caller, independent of the door it came through.

The Session produces these; each door maps them onto its own wire (gRPC messages, a WebRTC data
channel, nothing at all for a GSM caller). Keeping them door-neutral is what lets every door share
one Session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class EndReason(StrEnum):
    CALLER_HANGUP = "caller_hangup"
    AGENT_GOODBYE = "agent_goodbye"
    BALANCE_EXHAUSTED = "balance_exhausted"
    ADMIN_HANGUP = "admin_hangup"
    CLIENT_TIMEOUT = "client_timeout"
    SHUTDOWN = "shutdown"
    ERROR = "error"


class TurnKind(StrEnum):
    USER_STARTED = "user_started"
    USER_STOPPED = "user_stopped"
    BOT_STARTED = "bot_started"
    BOT_STOPPED = "bot_stopped"


@dataclass(frozen=True, slots=True)
class SessionStartedEvent:
    session_id: str
    agent: str
    agent_version: int
    input_format: str
    output_format: str


@dataclass(frozen=True, slots=True)
class TranscriptEvent:
    role: str  # "user" | "agent"
    text: str
    final: bool = True
    utterance_id: int = 0


@dataclass(frozen=True, slots=True)
class InterruptionEvent:
    utterance_id: int


@dataclass(frozen=True, slots=True)
class TurnEvent:
    kind: TurnKind
    utterance_id: int = 0


@dataclass(frozen=True, slots=True)
class LatencyEvent:
    user_to_bot_ms: int
    stt_ms: int = 0
    llm_ttfb_ms: int = 0
    tts_ttfb_ms: int = 0


@dataclass(frozen=True, slots=True)
class BillingEvent:
    kind: str
    seconds_left: int = 0
    balance_minor: int = 0
    currency: str = ""


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    message: str
    code: str = ""


@dataclass(frozen=True, slots=True)
class SessionEndedEvent:
    reason: EndReason
    billed_seconds: int = 0
    detail: str = ""


SessionEvent = (
    SessionStartedEvent
    | TranscriptEvent
    | InterruptionEvent
    | TurnEvent
    | LatencyEvent
    | BillingEvent
    | ErrorEvent
    | SessionEndedEvent
)


@dataclass(slots=True)
class EndRequest:
    """A door's (or the agent's, or an operator's) request to end the call."""

    reason: EndReason
    detail: str = ""
    # A protocol violation ends the call with this status after session_ended (gRPC code name).
    status_code: str | None = None
    # The caller's connection is gone: nothing more can be delivered to it.
    caller_gone: bool = False
    extra: dict[str, str] = field(default_factory=dict)
