"""Rich gRPC statuses: a code, a message, and an ErrorInfo reason clients can branch on."""

from __future__ import annotations

from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "voicegw.dev"


def status_with_reason(code: str, message: str, reason: str | None) -> status_pb2.Status:
    """A rich status; with a reason it carries google.rpc.ErrorInfo so clients can branch on it."""
    status = status_pb2.Status(code=code_pb2.Code.Value(code), message=message)
    if reason:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
        status.details.append(detail)
    return status
