"""Ops of the STT worker protocol, shared by the pool (server side) and the worker.

Every payload starts with the stream id (u32), then the op's body: nothing, UTF-8 text (grammar,
mode, hypothesis) or raw 16 kHz S16LE audio.
"""

from __future__ import annotations

import struct

from pipelines.engines.ipc import FIRST_USER_OP

STREAM_ID = struct.Struct("<I")

OP_OPEN = FIRST_USER_OP  # reply: empty. Body: JSGF text, or empty for general-only
OP_MODE = FIRST_USER_OP + 1  # no reply. Body: "grammar" | "general"
OP_BEGIN = FIRST_USER_OP + 2  # no reply
OP_AUDIO = FIRST_USER_OP + 3  # no reply. Body: PCM
OP_END = FIRST_USER_OP + 4  # reply: hypothesis text
OP_CLOSE = FIRST_USER_OP + 5  # reply: empty
OP_STATS = FIRST_USER_OP + 6  # reply: JSON decoder statistics (stream id ignored)


def payload(stream_id: int, body: bytes = b"") -> bytes:
    return STREAM_ID.pack(stream_id) + body
