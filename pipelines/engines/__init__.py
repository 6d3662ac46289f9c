"""Offline speech engines, run outside the server process.

pocketsphinx holds the GIL while it decodes and espeak-ng keeps global, thread-unsafe state, so
neither may run on (or beside) the event loop that paces every call's audio. They run in worker
processes the server talks to over pipes:

- :mod:`.espeak` - ctypes binding of espeak-ng (in-process; used by the TTS worker and by tests).
- :mod:`.tts_worker` - :class:`~.tts_worker.TtsWorker`, the one synthesis process.
- :mod:`.stt_pool` - :class:`~.stt_pool.SttWorkerPool` / :class:`~.stt_pool.SttStream`,
  streaming recognition on a few decoder-hosting processes (:mod:`.stt_decoders` inside them).
- :mod:`.ipc` and :mod:`.worker_process` - the frame format and the supervised-process client
  both of them use.
"""
