"""Call outcome and errors, independent of grpc's exception types.

The gateway puts a `google.rpc.ErrorInfo` reason (CAPACITY, INSUFFICIENT_BALANCE,
QUOTA_EXCEEDED) in the `grpc-status-details-bin` trailer so clients can tell "try later" from
"top up". Decoding it with googleapis-common-protos would add a dependency to an SDK that
promises only grpcio and protobuf, so the three message layers involved (Status → Any →
ErrorInfo) are read with a minimal protobuf wire-format parser instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

STATUS_DETAILS_KEY = "grpc-status-details-bin"
_ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"


@dataclass(frozen=True, slots=True)
class CallStatus:
    """How a Converse stream ended: the gRPC code name ("OK", "NOT_FOUND", ...) and details."""

    code: str
    details: str = ""
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.code == "OK"


class VoiceGatewayError(Exception):
    """The call failed with a non-OK gRPC status (refused, or broken off by the gateway).

    `code` is the status code name, `reason` the gateway's ErrorInfo reason when it gave one
    (e.g. "INSUFFICIENT_BALANCE" with RESOURCE_EXHAUSTED).
    """

    def __init__(self, code: str, message: str, reason: str | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.reason = reason

    @property
    def status(self) -> CallStatus:
        return CallStatus(self.code, self.message, self.reason)


class ConversationClosed(RuntimeError):
    """Sending on a conversation that was hung up, closed, or has already ended."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of one serialised message; varints as int, the rest as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        value: int | bytes
        if wire_type == 0:
            value, pos = _varint(buf, pos)
        elif wire_type == 2:
            length, pos = _varint(buf, pos)
            value = buf[pos : pos + length]
            if len(value) != length:
                raise ValueError("truncated field")
            pos += length
        elif wire_type == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire_type == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        yield number, value


def error_info_reason(status_details: bytes) -> str | None:
    """The ErrorInfo reason inside a serialised google.rpc.Status, if any."""
    try:
        for number, detail in _fields(status_details):
            if number != 3 or not isinstance(detail, bytes):  # Status.details (repeated Any)
                continue
            any_fields = dict(_fields(detail))
            type_url, value = any_fields.get(1), any_fields.get(2)
            if type_url == _ERROR_INFO_TYPE.encode() and isinstance(value, bytes):
                reason = dict(_fields(value)).get(1)  # ErrorInfo.reason
                if isinstance(reason, bytes):
                    return reason.decode("utf-8", "replace")
    except (ValueError, IndexError):
        return None
    return None


def reason_from_metadata(metadata: Iterable[Any] | None) -> str | None:
    """The ErrorInfo reason carried in trailing metadata."""
    for item in metadata or ():
        key, value = item[0], item[1]
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return error_info_reason(value)
    return None
