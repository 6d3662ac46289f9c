"""API-key authentication for every gRPC method except health and reflection.

An interceptor wraps each method handler so the check runs with the call's context: the key
comes from `authorization: Bearer <key>` or `x-api-key`, and the verified principal is available
to servicers through `current_principal()`.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from gateway.auth import Principal

EXEMPT_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "voicegw_principal", default=None
)

Verifier = Callable[[str], Awaitable[Principal | None]]


def current_principal() -> Principal:
    principal = _principal.get()
    if principal is None:
        raise RuntimeError("no authenticated principal in this context")
    return principal


def key_from_metadata(metadata: Any) -> str | None:
    for item in metadata or ():
        key, value = item[0].lower(), item[1]
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        if key == "x-api-key" and isinstance(value, str) and value.strip():
            return value.strip()
    return None


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, verify: Verifier) -> None:
        self._verify = verify

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(EXEMPT_SERVICES):
            return handler
        return _wrap(handler, self._authenticate)

    async def _authenticate(self, context: grpc.aio.ServicerContext) -> Principal:
        key = key_from_metadata(context.invocation_metadata())
        if key is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing API key: send 'authorization: Bearer <key>' or 'x-api-key'",
            )
        principal = await self._verify(key) if key else None
        if principal is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid or revoked API key")
        assert principal is not None
        return principal


def _wrap(
    handler: grpc.RpcMethodHandler,
    authenticate: Callable[[grpc.aio.ServicerContext], Awaitable[Principal]],
) -> grpc.RpcMethodHandler:
    def wrap_behavior(behavior: Callable[..., Any], streaming_response: bool) -> Callable[..., Any]:
        if streaming_response and inspect.isasyncgenfunction(behavior):

            async def stream_wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
                token = _principal.set(await authenticate(context))
                try:
                    async for item in behavior(request, context):
                        yield item
                finally:
                    _principal.reset(token)

            return stream_wrapper

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            token = _principal.set(await authenticate(context))
            try:
                return await behavior(request, context)
            finally:
                _principal.reset(token)

        return wrapper

    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            wrap_behavior(handler.unary_unary, False),
            handler.request_deserializer,
            handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap_behavior(handler.unary_stream, True),
            handler.request_deserializer,
            handler.response_serializer,
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            wrap_behavior(handler.stream_unary, False),
            handler.request_deserializer,
            handler.response_serializer,
        )
    return grpc.stream_stream_rpc_method_handler(
        wrap_behavior(handler.stream_stream, True),
        handler.request_deserializer,
        handler.response_serializer,
    )
