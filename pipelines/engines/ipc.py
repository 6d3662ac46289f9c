"""Length-prefixed binary frames between the server and its engine worker processes.

Why a hand-rolled format: requests carry raw PCM both ways (tens of frames per second per call),
so anything that encodes bytes as text (JSON, base64) or pickles would cost CPU on the event loop
for nothing. A frame is a fixed header plus an opaque payload::

    <u32 payload length> <u32 request id> <u8 op> <payload>

Request id 0 means "no reply wanted" (streamed audio) or, from the worker, an unsolicited
message (the READY handshake). Any other id gets exactly one reply, ``OP_OK`` or ``OP_ERROR``,
carrying the same id, so several requests can be in flight on one pipe.

This module has both ends: the async reader used by :mod:`.worker_process` in the server, and the
blocking reader/writer and :func:`serve` loop used inside a worker (where blocking is the point:
the worker has nothing else to do).
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import struct
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HEADER = struct.Struct("<IIB")
MAX_PAYLOAD = 64 * 1024 * 1024  # anything larger is a corrupted stream, not a real message

# Ops shared by every worker. Worker-specific ops start at 16.
OP_OK = 0
OP_ERROR = 1
OP_READY = 2
OP_PING = 3
FIRST_USER_OP = 16


class WorkerError(RuntimeError):
    """The worker ran the request and reported a failure (its message is the worker's)."""


class WorkerDiedError(WorkerError):
    """The worker process exited (or could not be reached) before it answered."""


class WorkerTimeoutError(WorkerError):
    """The worker did not answer in time; it has been killed so the next request gets a new one."""


class ProtocolError(WorkerError):
    """The byte stream is not a sequence of valid frames (a stray write to the IPC pipe)."""


@dataclass(frozen=True)
class Frame:
    request_id: int
    op: int
    payload: bytes


def encode(request_id: int, op: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(len(payload), request_id, op) + payload


def _check_length(length: int) -> None:
    if length > MAX_PAYLOAD:
        raise ProtocolError(f"frame announces {length} bytes; the stream is corrupted")


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """Read one frame; raises ``asyncio.IncompleteReadError`` at end of stream."""
    header = await reader.readexactly(HEADER.size)
    length, request_id, op = HEADER.unpack(header)
    _check_length(length)
    payload = await reader.readexactly(length) if length else b""
    return Frame(request_id, op, payload)


# --- JSON header + binary blob, for messages mixing a few fields with audio --------------------

_U32 = struct.Struct("<I")


def pack_meta(meta: dict[str, Any], blob: bytes = b"") -> bytes:
    """A small JSON object followed by raw bytes (no base64 for the audio part)."""
    head = json.dumps(meta, separators=(",", ":")).encode()
    return _U32.pack(len(head)) + head + blob


def unpack_meta(payload: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = _U32.unpack_from(payload)
    return json.loads(payload[4 : 4 + n]), payload[4 + n :]


# --- Worker side -------------------------------------------------------------------------------


class SyncFrameReader:
    """Blocking frame reader on a raw fd, with a timeout so the worker can do idle-time chores.

    Buffers itself rather than using ``sys.stdin.buffer`` because ``select`` cannot see data
    already sitting in a Python buffer.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buf = bytearray()

    def _complete_frame(self) -> Frame | None:
        if len(self._buf) < HEADER.size:
            return None
        length, request_id, op = HEADER.unpack_from(self._buf)
        _check_length(length)
        end = HEADER.size + length
        if len(self._buf) < end:
            return None
        payload = bytes(self._buf[HEADER.size : end])
        del self._buf[:end]
        return Frame(request_id, op, payload)

    def read(self, timeout: float | None = None) -> Frame | None:
        """Next frame, or None if none completed within ``timeout``; EOFError at end of input."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            frame = self._complete_frame()
            if frame is not None:
                return frame
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([self._fd], [], [], remaining)[0]:
                    return None
            chunk = os.read(self._fd, 1 << 16)
            if not chunk:
                raise EOFError
            self._buf += chunk


class SyncFrameWriter:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, request_id: int, op: int, payload: bytes = b"") -> None:
        view = memoryview(encode(request_id, op, payload))
        while view:
            written = os.write(self._fd, view)
            view = view[written:]


def claim_stdio() -> tuple[int, int]:
    """Take stdin/stdout for frames and point fd 1 at stderr.

    Native libraries (pocketsphinx, espeak-ng) and stray ``print`` calls write to fd 1; if that
    were the IPC pipe, one log line would corrupt the frame stream.
    """
    in_fd = os.dup(0)
    out_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return in_fd, out_fd


Handler = Callable[[Frame], bytes | None]


def serve(
    handler: Handler,
    *,
    ready_payload: bytes = b"",
    idle: Callable[[], None] | None = None,
    idle_after_secs: float = 0.05,
) -> None:
    """Run a worker: announce READY, then answer frames until stdin closes.

    ``handler`` gets every non-PING frame and returns the OK payload (or raises for an ERROR
    reply). For request id 0 nothing is sent back; an exception there is the handler's to record
    (and report on a later request) - this loop only logs it. ``idle`` runs whenever no frame
    has arrived for ``idle_after_secs``, for slow housekeeping that must not delay a request.
    """
    in_fd, out_fd = claim_stdio()
    reader, writer = SyncFrameReader(in_fd), SyncFrameWriter(out_fd)
    writer.write(0, OP_READY, ready_payload)
    while True:
        try:
            frame = reader.read(idle_after_secs if idle else None)
        except EOFError:
            return
        if frame is None:
            assert idle is not None
            idle()
            continue
        if frame.op == OP_PING:
            writer.write(frame.request_id, OP_OK, frame.payload)
            continue
        try:
            result = handler(frame)
        except Exception as exc:  # noqa: BLE001 - the handler's failure goes back to the caller
            if frame.request_id:
                writer.write(frame.request_id, OP_ERROR, f"{type(exc).__name__}: {exc}".encode())
            else:
                traceback.print_exc(file=sys.stderr)
            continue
        if frame.request_id:
            writer.write(frame.request_id, OP_OK, result or b"")
