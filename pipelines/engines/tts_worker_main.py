"""Entry point of the synthesis worker process: ``python -m pipelines.engines.tts_worker_main``."""

from __future__ import annotations

from pipelines.engines import espeak, ipc
from pipelines.engines.tts_worker import OP_SYNTHESIZE, encode_synthesis


def _handle(frame: ipc.Frame) -> bytes:
    if frame.op != OP_SYNTHESIZE:
        raise ValueError(f"unknown op {frame.op}")
    meta, _ = ipc.unpack_meta(frame.payload)
    synthesis = espeak.synthesize(meta["text"], voice=meta["voice"], rate_wpm=meta["rate_wpm"])
    return encode_synthesis(synthesis)


def main() -> None:
    # Load the library and the default voice before READY, so the first caller's sentence
    # does not pay for initialisation.
    espeak.synthesize("ready")
    ipc.serve(_handle)


if __name__ == "__main__":
    main()
