from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_LINEAR16: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_PCMU: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_PCMA: _ClassVar[AudioEncoding]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_USER: _ClassVar[Role]
    ROLE_AGENT: _ClassVar[Role]

class TurnEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TURN_EVENT_KIND_UNSPECIFIED: _ClassVar[TurnEventKind]
    TURN_EVENT_KIND_USER_STARTED: _ClassVar[TurnEventKind]
    TURN_EVENT_KIND_USER_STOPPED: _ClassVar[TurnEventKind]
    TURN_EVENT_KIND_BOT_STARTED: _ClassVar[TurnEventKind]
    TURN_EVENT_KIND_BOT_STOPPED: _ClassVar[TurnEventKind]

class BillingNoticeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BILLING_NOTICE_KIND_UNSPECIFIED: _ClassVar[BillingNoticeKind]
    BILLING_NOTICE_KIND_LOW_BALANCE: _ClassVar[BillingNoticeKind]
    BILLING_NOTICE_KIND_MINUTES_LEFT: _ClassVar[BillingNoticeKind]

class EndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    END_REASON_UNSPECIFIED: _ClassVar[EndReason]
    END_REASON_CALLER_HANGUP: _ClassVar[EndReason]
    END_REASON_AGENT_GOODBYE: _ClassVar[EndReason]
    END_REASON_BALANCE_EXHAUSTED: _ClassVar[EndReason]
    END_REASON_ADMIN_HANGUP: _ClassVar[EndReason]
    END_REASON_CLIENT_TIMEOUT: _ClassVar[EndReason]
    END_REASON_SHUTDOWN: _ClassVar[EndReason]
    END_REASON_ERROR: _ClassVar[EndReason]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
AUDIO_ENCODING_LINEAR16: AudioEncoding
AUDIO_ENCODING_PCMU: AudioEncoding
AUDIO_ENCODING_PCMA: AudioEncoding
ROLE_UNSPECIFIED: Role
ROLE_USER: Role
ROLE_AGENT: Role
TURN_EVENT_KIND_UNSPECIFIED: TurnEventKind
TURN_EVENT_KIND_USER_STARTED: TurnEventKind
TURN_EVENT_KIND_USER_STOPPED: TurnEventKind
TURN_EVENT_KIND_BOT_STARTED: TurnEventKind
TURN_EVENT_KIND_BOT_STOPPED: TurnEventKind
BILLING_NOTICE_KIND_UNSPECIFIED: BillingNoticeKind
BILLING_NOTICE_KIND_LOW_BALANCE: BillingNoticeKind
BILLING_NOTICE_KIND_MINUTES_LEFT: BillingNoticeKind
END_REASON_UNSPECIFIED: EndReason
END_REASON_CALLER_HANGUP: EndReason
END_REASON_AGENT_GOODBYE: EndReason
END_REASON_BALANCE_EXHAUSTED: EndReason
END_REASON_ADMIN_HANGUP: EndReason
END_REASON_CLIENT_TIMEOUT: EndReason
END_REASON_SHUTDOWN: EndReason
END_REASON_ERROR: EndReason

class AudioFormat(_message.Message):
    __slots__ = ("encoding", "sample_rate_hz")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    encoding: AudioEncoding
    sample_rate_hz: int
    def __init__(self, encoding: _Optional[_Union[AudioEncoding, str]] = ..., sample_rate_hz: _Optional[int] = ...) -> None: ...

class CallerInfo(_message.Message):
    __slots__ = ("phone_number", "display_name", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PHONE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    phone_number: str
    display_name: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, phone_number: _Optional[str] = ..., display_name: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SessionConfig(_message.Message):
    __slots__ = ("agent", "input_format", "output_format", "language", "caller")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    INPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    agent: str
    input_format: AudioFormat
    output_format: AudioFormat
    language: str
    caller: CallerInfo
    def __init__(self, agent: _Optional[str] = ..., input_format: _Optional[_Union[AudioFormat, _Mapping]] = ..., output_format: _Optional[_Union[AudioFormat, _Mapping]] = ..., language: _Optional[str] = ..., caller: _Optional[_Union[CallerInfo, _Mapping]] = ...) -> None: ...

class AudioInput(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class TextInput(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class DtmfInput(_message.Message):
    __slots__ = ("digits",)
    DIGITS_FIELD_NUMBER: _ClassVar[int]
    digits: str
    def __init__(self, digits: _Optional[str] = ...) -> None: ...

class PlaybackMark(_message.Message):
    __slots__ = ("utterance_id", "played_ms")
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PLAYED_MS_FIELD_NUMBER: _ClassVar[int]
    utterance_id: int
    played_ms: int
    def __init__(self, utterance_id: _Optional[int] = ..., played_ms: _Optional[int] = ...) -> None: ...

class HangupRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConverseRequest(_message.Message):
    __slots__ = ("config", "audio", "text", "dtmf", "playback_mark", "hangup")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DTMF_FIELD_NUMBER: _ClassVar[int]
    PLAYBACK_MARK_FIELD_NUMBER: _ClassVar[int]
    HANGUP_FIELD_NUMBER: _ClassVar[int]
    config: SessionConfig
    audio: AudioInput
    text: TextInput
    dtmf: DtmfInput
    playback_mark: PlaybackMark
    hangup: HangupRequest
    def __init__(self, config: _Optional[_Union[SessionConfig, _Mapping]] = ..., audio: _Optional[_Union[AudioInput, _Mapping]] = ..., text: _Optional[_Union[TextInput, _Mapping]] = ..., dtmf: _Optional[_Union[DtmfInput, _Mapping]] = ..., playback_mark: _Optional[_Union[PlaybackMark, _Mapping]] = ..., hangup: _Optional[_Union[HangupRequest, _Mapping]] = ...) -> None: ...

class SessionStarted(_message.Message):
    __slots__ = ("session_id", "input_format", "output_format", "agent", "agent_version")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    input_format: AudioFormat
    output_format: AudioFormat
    agent: str
    agent_version: int
    def __init__(self, session_id: _Optional[str] = ..., input_format: _Optional[_Union[AudioFormat, _Mapping]] = ..., output_format: _Optional[_Union[AudioFormat, _Mapping]] = ..., agent: _Optional[str] = ..., agent_version: _Optional[int] = ...) -> None: ...

class AgentAudio(_message.Message):
    __slots__ = ("data", "utterance_id")
    DATA_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    utterance_id: int
    def __init__(self, data: _Optional[bytes] = ..., utterance_id: _Optional[int] = ...) -> None: ...

class Transcript(_message.Message):
    __slots__ = ("role", "text", "final", "utterance_id")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    role: Role
    text: str
    final: bool
    utterance_id: int
    def __init__(self, role: _Optional[_Union[Role, str]] = ..., text: _Optional[str] = ..., final: _Optional[bool] = ..., utterance_id: _Optional[int] = ...) -> None: ...

class Interruption(_message.Message):
    __slots__ = ("utterance_id",)
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    utterance_id: int
    def __init__(self, utterance_id: _Optional[int] = ...) -> None: ...

class TurnEvent(_message.Message):
    __slots__ = ("kind", "utterance_id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    kind: TurnEventKind
    utterance_id: int
    def __init__(self, kind: _Optional[_Union[TurnEventKind, str]] = ..., utterance_id: _Optional[int] = ...) -> None: ...

class LatencyReport(_message.Message):
    __slots__ = ("user_to_bot_ms", "stt_ms", "llm_ttfb_ms", "tts_ttfb_ms")
    USER_TO_BOT_MS_FIELD_NUMBER: _ClassVar[int]
    STT_MS_FIELD_NUMBER: _ClassVar[int]
    LLM_TTFB_MS_FIELD_NUMBER: _ClassVar[int]
    TTS_TTFB_MS_FIELD_NUMBER: _ClassVar[int]
    user_to_bot_ms: int
    stt_ms: int
    llm_ttfb_ms: int
    tts_ttfb_ms: int
    def __init__(self, user_to_bot_ms: _Optional[int] = ..., stt_ms: _Optional[int] = ..., llm_ttfb_ms: _Optional[int] = ..., tts_ttfb_ms: _Optional[int] = ...) -> None: ...

class BillingNotice(_message.Message):
    __slots__ = ("kind", "seconds_left", "balance_minor", "currency")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SECONDS_LEFT_FIELD_NUMBER: _ClassVar[int]
    BALANCE_MINOR_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    kind: BillingNoticeKind
    seconds_left: int
    balance_minor: int
    currency: str
    def __init__(self, kind: _Optional[_Union[BillingNoticeKind, str]] = ..., seconds_left: _Optional[int] = ..., balance_minor: _Optional[int] = ..., currency: _Optional[str] = ...) -> None: ...

class ErrorEvent(_message.Message):
    __slots__ = ("message", "code")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    message: str
    code: str
    def __init__(self, message: _Optional[str] = ..., code: _Optional[str] = ...) -> None: ...

class SessionEnded(_message.Message):
    __slots__ = ("reason", "billed_seconds", "detail")
    REASON_FIELD_NUMBER: _ClassVar[int]
    BILLED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    reason: EndReason
    billed_seconds: int
    detail: str
    def __init__(self, reason: _Optional[_Union[EndReason, str]] = ..., billed_seconds: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class ConverseResponse(_message.Message):
    __slots__ = ("session_started", "audio", "transcript", "interruption", "turn", "latency", "billing", "error", "session_ended")
    SESSION_STARTED_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTION_FIELD_NUMBER: _ClassVar[int]
    TURN_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    BILLING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SESSION_ENDED_FIELD_NUMBER: _ClassVar[int]
    session_started: SessionStarted
    audio: AgentAudio
    transcript: Transcript
    interruption: Interruption
    turn: TurnEvent
    latency: LatencyReport
    billing: BillingNotice
    error: ErrorEvent
    session_ended: SessionEnded
    def __init__(self, session_started: _Optional[_Union[SessionStarted, _Mapping]] = ..., audio: _Optional[_Union[AgentAudio, _Mapping]] = ..., transcript: _Optional[_Union[Transcript, _Mapping]] = ..., interruption: _Optional[_Union[Interruption, _Mapping]] = ..., turn: _Optional[_Union[TurnEvent, _Mapping]] = ..., latency: _Optional[_Union[LatencyReport, _Mapping]] = ..., billing: _Optional[_Union[BillingNotice, _Mapping]] = ..., error: _Optional[_Union[ErrorEvent, _Mapping]] = ..., session_ended: _Optional[_Union[SessionEnded, _Mapping]] = ...) -> None: ...
