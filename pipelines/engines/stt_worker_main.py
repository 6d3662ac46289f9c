"""Entry point of an STT worker process: ``python -m pipelines.engines.stt_worker_main``.

Translates :mod:`.ipc` frames into :class:`~pipelines.engines.stt_decoders.DecoderHost` calls.
Audio, mode changes and utterance starts arrive without a reply (request id 0) so streaming
costs no round trips; their failures are reported by the stream's next ``END``.
"""

from __future__ import annotations

import argparse
import json

from pipelines.engines import ipc
from pipelines.engines.stt_decoders import DecoderHost
from pipelines.engines.stt_protocol import (
    OP_AUDIO,
    OP_BEGIN,
    OP_CLOSE,
    OP_END,
    OP_MODE,
    OP_OPEN,
    OP_STATS,
    STREAM_ID,
)


class _Worker:
    def __init__(self, host: DecoderHost) -> None:
        self.host = host

    def handle(self, frame: ipc.Frame) -> bytes | None:
        (stream_id,) = STREAM_ID.unpack_from(frame.payload) if frame.payload else (0,)
        body = frame.payload[STREAM_ID.size :]
        try:
            return self._dispatch(frame.op, stream_id, body)
        except Exception as exc:
            if frame.request_id == 0:
                # Nobody waits for this frame: keep the failure for the stream's next end().
                self.host.record_error(stream_id, f"{type(exc).__name__}: {exc}")
                return None
            raise

    def _dispatch(self, op: int, stream_id: int, body: bytes) -> bytes | None:
        host = self.host
        if op == OP_AUDIO:
            host.feed(stream_id, body)
        elif op == OP_BEGIN:
            host.begin(stream_id)
        elif op == OP_MODE:
            host.set_mode(stream_id, body.decode())  # type: ignore[arg-type]
        elif op == OP_END:
            return host.end(stream_id).encode()
        elif op == OP_OPEN:
            host.open(stream_id, body.decode() if body else None)
        elif op == OP_CLOSE:
            host.close(stream_id)
        elif op == OP_STATS:
            stats = {
                **host.stats.as_dict(),
                "open_streams": host.open_streams,
                "free_decoders": host.free_decoders,
            }
            return json.dumps(stats).encode()
        else:
            raise ValueError(f"unknown op {op}")
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spare", type=int, default=1)
    parser.add_argument("--options", type=json.loads, default=None, help="pocketsphinx Config")
    args = parser.parse_args()
    host = DecoderHost(spare=args.spare, decoder_options=args.options)
    host.prewarm()  # before READY: the pool's start() pays for the first decoders, not a call
    # Spare decoders are made only after a quiet spell: a creation blocks this worker for most
    # of a second, and audio batches arrive every 100 ms while anyone talks.
    ipc.serve(_Worker(host).handle, idle=host.idle, idle_after_secs=0.25)


if __name__ == "__main__":
    main()
