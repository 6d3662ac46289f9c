"""The gRPC door: one `VoiceService.Converse` stream is one call."""

from transports.grpc_stream.transport import GrpcStreamDoor, StreamLimits

__all__ = ["GrpcStreamDoor", "StreamLimits"]
