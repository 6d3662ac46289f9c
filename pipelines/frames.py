"""Frames voicegw adds to Pipecat's vocabulary.

They carry the few facts that cross processor boundaries and that Pipecat has no frame for:
which recognition mode the STT should use (the scripted agent decides, the STT obeys), the audio
of a caller's recorded message (the STT has it, the Session stores it), and the agent's decision to
end the call (the agent decides, the Session records the reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipecat.frames.frames import ControlFrame, DataFrame, SystemFrame

RecognitionMode = Literal["grammar", "general"]


@dataclass
class RecognitionModeFrame(SystemFrame):
    """Switches the STT between the agent's phrase grammar and the general language model.

    Pushed upstream by the agent when its reply changes what it expects next (e.g. it has just
    asked the caller to leave a message). A system frame so an interruption cannot drop it.
    """

    mode: RecognitionMode = "grammar"
    capture_audio: bool = False


@dataclass
class RecordedUtteranceFrame(DataFrame):
    """The audio and final text of one caller utterance recognised with capture on.

    Emitted by the STT right after that utterance's final TranscriptionFrame; the Session keeps it
    as the call's recorded message.
    """

    text: str = ""
    audio: bytes = b""
    sample_rate: int = 16000


@dataclass
class AgentEndCallFrame(ControlFrame):
    """The agent has said its closing line and wants the call ended with this reason.

    Ordered behind the closing line's text, so the goodbye is spoken before the call ends.
    """

    reason: str = "agent_goodbye"


@dataclass
class SpokenWordsFrame(DataFrame):
    """Where each word of a stretch of TTS audio starts, relative to its utterance's first sample.

    Pipecat turns word timestamps into TTSTextFrames timed by the server's output clock, which
    runs ahead of the caller's loudspeaker; the gateway needs the offsets themselves to tell
    which words a barge-in left unheard. Pushed by the TTS right after the audio it describes.
    """

    context_id: str | None = None
    words: list[tuple[str, float]] | None = None
    end_secs: float = 0.0
