"""Pipecat services voicegw adds: offline engines (pocketsphinx, espeak-ng) and the scripted agent.

Import the modules directly (``pipelines.services.offline_stt`` ...); this package does not
re-export them, so importing one service never drags in another's dependencies.
"""
