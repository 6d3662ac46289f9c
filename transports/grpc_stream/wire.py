"""Mapping between voice.proto messages and the door-neutral session vocabulary."""

from __future__ import annotations

from typing import Any

from voicegw.v1 import voice_pb2 as pb

from transports.codecs.formats import AudioSpec, Encoding, FormatError
from transports.events import (
    BillingEvent,
    EndReason,
    ErrorEvent,
    InterruptionEvent,
    LatencyEvent,
    SessionEndedEvent,
    SessionEvent,
    SessionStartedEvent,
    TranscriptEvent,
    TurnEvent,
    TurnKind,
)

_ENCODINGS = {
    pb.AUDIO_ENCODING_LINEAR16: Encoding.LINEAR16,
    pb.AUDIO_ENCODING_PCMU: Encoding.PCMU,
    pb.AUDIO_ENCODING_PCMA: Encoding.PCMA,
}
_ENCODINGS_BACK = {v: k for k, v in _ENCODINGS.items()}

_TURNS = {
    TurnKind.USER_STARTED: pb.TURN_EVENT_KIND_USER_STARTED,
    TurnKind.USER_STOPPED: pb.TURN_EVENT_KIND_USER_STOPPED,
    TurnKind.BOT_STARTED: pb.TURN_EVENT_KIND_BOT_STARTED,
    TurnKind.BOT_STOPPED: pb.TURN_EVENT_KIND_BOT_STOPPED,
}

_END_REASONS: dict[EndReason, Any] = {
    reason: pb.EndReason.Value(f"END_REASON_{reason.name}") for reason in EndReason
}


def spec_from_proto(fmt: pb.AudioFormat, what: str) -> AudioSpec:
    """Validates a requested format against the format table; FormatError says what is allowed."""
    encoding = _ENCODINGS.get(fmt.encoding)
    if encoding is None:
        raise FormatError(f"{what}: audio encoding must be LINEAR16, PCMU or PCMA")
    rate = fmt.sample_rate_hz
    if rate == 0 and encoding is not Encoding.LINEAR16:
        rate = 8000
    try:
        return AudioSpec(encoding, rate)
    except FormatError as e:
        raise FormatError(f"{what}: {e}") from None


def spec_to_proto(spec: AudioSpec) -> pb.AudioFormat:
    return pb.AudioFormat(encoding=_ENCODINGS_BACK[spec.encoding], sample_rate_hz=spec.sample_rate)


def event_to_proto(event: SessionEvent) -> pb.ConverseResponse:
    match event:
        case SessionStartedEvent():
            return pb.ConverseResponse(
                session_started=pb.SessionStarted(
                    session_id=event.session_id,
                    agent=event.agent,
                    agent_version=event.agent_version,
                )
            )
        case TranscriptEvent():
            role = pb.ROLE_USER if event.role == "user" else pb.ROLE_AGENT
            return pb.ConverseResponse(
                transcript=pb.Transcript(
                    role=role, text=event.text, final=event.final, utterance_id=event.utterance_id
                )
            )
        case InterruptionEvent():
            return pb.ConverseResponse(
                interruption=pb.Interruption(utterance_id=event.utterance_id)
            )
        case TurnEvent():
            return pb.ConverseResponse(
                turn=pb.TurnEvent(kind=_TURNS[event.kind], utterance_id=event.utterance_id)
            )
        case LatencyEvent():
            return pb.ConverseResponse(
                latency=pb.LatencyReport(
                    user_to_bot_ms=event.user_to_bot_ms,
                    stt_ms=event.stt_ms,
                    llm_ttfb_ms=event.llm_ttfb_ms,
                    tts_ttfb_ms=event.tts_ttfb_ms,
                )
            )
        case BillingEvent():
            kind: Any = pb.BillingNoticeKind.Value(f"BILLING_NOTICE_KIND_{event.kind.upper()}")
            return pb.ConverseResponse(
                billing=pb.BillingNotice(
                    kind=kind,
                    seconds_left=event.seconds_left,
                    balance_minor=event.balance_minor,
                    currency=event.currency,
                )
            )
        case ErrorEvent():
            return pb.ConverseResponse(error=pb.ErrorEvent(message=event.message, code=event.code))
        case SessionEndedEvent():
            return pb.ConverseResponse(
                session_ended=pb.SessionEnded(
                    reason=_END_REASONS[event.reason],
                    billed_seconds=event.billed_seconds,
                    detail=event.detail,
                )
            )
    raise TypeError(f"no wire mapping for {event!r}")
