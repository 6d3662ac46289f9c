"""Typed, protobuf-free views of what the gateway sends, and the audio format type.

Applications should not have to know protobuf oneofs or enum prefixes to write a client, and the
generated classes would leak into their type signatures. Enum values become lowercase names
without the enum prefix (`END_REASON_CALLER_HANGUP` → "caller_hangup"), the same vocabulary as
the gateway's logs and `voicegw talk`'s JSON lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeAlias

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from voicegw.v1 import voice_pb2 as pb

from voicegw_client.audio import ENCODINGS

_ENCODING_TO_PB = {
    "linear16": pb.AUDIO_ENCODING_LINEAR16,
    "pcmu": pb.AUDIO_ENCODING_PCMU,
    "pcma": pb.AUDIO_ENCODING_PCMA,
}
_DEFAULT_RATES = {"linear16": 16000, "pcmu": 8000, "pcma": 8000}


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """One direction's audio: `linear16`, `pcmu` or `pcma`, always mono.

    A rate of 0 picks the encoding's usual rate (16 kHz for linear16, 8 kHz for G.711), so
    `AudioFormat("pcmu")` is complete. Which combinations are accepted is the gateway's decision
    (it answers INVALID_ARGUMENT), so only the encoding name is checked here.
    """

    encoding: str = "linear16"
    sample_rate_hz: int = 0

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(
                f"unknown encoding {self.encoding!r}; expected one of {', '.join(ENCODINGS)}"
            )
        if self.sample_rate_hz < 0:
            raise ValueError(f"invalid sample rate {self.sample_rate_hz}")
        if self.sample_rate_hz == 0:
            object.__setattr__(self, "sample_rate_hz", _DEFAULT_RATES[self.encoding])

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding == "linear16" else 1

    def bytes_for_ms(self, ms: int) -> int:
        """Payload size of `ms` milliseconds of audio in this format."""
        return self.sample_rate_hz * ms // 1000 * self.bytes_per_sample

    def label(self) -> str:
        return f"{self.encoding}/{self.sample_rate_hz}"

    def to_proto(self) -> pb.AudioFormat:
        return pb.AudioFormat(
            encoding=_ENCODING_TO_PB[self.encoding], sample_rate_hz=self.sample_rate_hz
        )

    @classmethod
    def from_proto(cls, fmt: pb.AudioFormat) -> AudioFormat | None:
        """None for an unset or unknown format, so callers fall back to what they asked for."""
        for name, value in _ENCODING_TO_PB.items():
            if fmt.encoding == value:
                return cls(name, fmt.sample_rate_hz)
        return None

    def as_dict(self) -> dict[str, Any]:
        return {"encoding": self.encoding, "sample_rate_hz": self.sample_rate_hz}


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """The call was admitted; billable time starts now. Formats are None if the gateway omits
    them, in which case the requested ones apply."""

    session_id: str
    agent: str
    agent_version: int
    input_format: AudioFormat | None = None
    output_format: AudioFormat | None = None


@dataclass(frozen=True, slots=True)
class AgentAudio:
    """Agent speech in the output format; `utterance_id` ties it to interruptions and marks."""

    data: bytes = field(repr=False)
    utterance_id: int


@dataclass(frozen=True, slots=True)
class Transcript:
    """Recognised caller speech (`role` "user", partial or final) or agent text ("agent")."""

    role: str
    text: str
    final: bool
    utterance_id: int = 0


@dataclass(frozen=True, slots=True)
class Interruption:
    """The caller barged in: drop every buffered sample of this utterance now."""

    utterance_id: int


@dataclass(frozen=True, slots=True)
class TurnEvent:
    """`kind`: user_started, user_stopped, bot_started or bot_stopped."""

    kind: str
    utterance_id: int = 0


@dataclass(frozen=True, slots=True)
class Latency:
    """One user turn's latency breakdown, in milliseconds (0 when not measured)."""

    user_to_bot_ms: int
    stt_ms: int = 0
    llm_ttfb_ms: int = 0
    tts_ttfb_ms: int = 0


@dataclass(frozen=True, slots=True)
class BillingNotice:
    """`kind`: low_balance or minutes_left. Money is in minor units of `currency`."""

    kind: str
    seconds_left: int = 0
    balance_minor: int = 0
    currency: str = ""


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """Informational and non-fatal; the call goes on."""

    message: str
    code: str = ""


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The last event of a started call. `reason`: caller_hangup, agent_goodbye,
    balance_exhausted, admin_hangup, client_timeout, shutdown or error."""

    reason: str
    billed_seconds: int
    detail: str = ""


Event: TypeAlias = (
    SessionStarted
    | AgentAudio
    | Transcript
    | Interruption
    | TurnEvent
    | Latency
    | BillingNotice
    | ErrorEvent
    | SessionEnded
)


def enum_name(enum: EnumTypeWrapper, value: int, prefix: str) -> str:
    """`END_REASON_CALLER_HANGUP` → "caller_hangup"; values newer than this SDK stay readable."""
    try:
        name = enum.Name(value)
    except ValueError:
        return f"unknown_{value}"
    return name.removeprefix(prefix).lower()


def event_from_proto(response: pb.ConverseResponse) -> Event | None:
    """The typed event of one response; None for a kind this SDK does not know yet."""
    kind = response.WhichOneof("response")
    if kind == "audio":
        return AgentAudio(response.audio.data, response.audio.utterance_id)
    if kind == "session_started":
        s = response.session_started
        return SessionStarted(
            session_id=s.session_id,
            agent=s.agent,
            agent_version=s.agent_version,
            input_format=AudioFormat.from_proto(s.input_format),
            output_format=AudioFormat.from_proto(s.output_format),
        )
    if kind == "transcript":
        t = response.transcript
        return Transcript(
            role=enum_name(pb.Role, t.role, "ROLE_"),
            text=t.text,
            final=t.final,
            utterance_id=t.utterance_id,
        )
    if kind == "interruption":
        return Interruption(response.interruption.utterance_id)
    if kind == "turn":
        return TurnEvent(
            kind=enum_name(pb.TurnEventKind, response.turn.kind, "TURN_EVENT_KIND_"),
            utterance_id=response.turn.utterance_id,
        )
    if kind == "latency":
        lat = response.latency
        return Latency(lat.user_to_bot_ms, lat.stt_ms, lat.llm_ttfb_ms, lat.tts_ttfb_ms)
    if kind == "billing":
        b = response.billing
        return BillingNotice(
            kind=enum_name(pb.BillingNoticeKind, b.kind, "BILLING_NOTICE_KIND_"),
            seconds_left=b.seconds_left,
            balance_minor=b.balance_minor,
            currency=b.currency,
        )
    if kind == "error":
        return ErrorEvent(response.error.message, response.error.code)
    if kind == "session_ended":
        e = response.session_ended
        return SessionEnded(
            reason=enum_name(pb.EndReason, e.reason, "END_REASON_"),
            billed_seconds=e.billed_seconds,
            detail=e.detail,
        )
    return None
