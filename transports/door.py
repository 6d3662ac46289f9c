"""The contract between a door (transport) and the Session that owns the call.

A door brings audio and signalling in and out; it never touches persistence, billing or agents.
It tells the Session what happened on the wire through `CallControl`, and the Session tells the
caller what happened in the call through `Door.send_event`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pipecat.transports.base_transport import BaseTransport

from transports.events import EndRequest, SessionEvent


class CallControl(Protocol):
    """What a door may ask of the Session."""

    def request_end(self, request: EndRequest) -> None:
        """Ends the call (caller hung up, vanished, broke the protocol)."""

    def on_playback_mark(self, utterance_id: int, played_ms: int) -> None:
        """The caller's client reports how much of an agent utterance it has played."""

    def on_barge_in(self, vad_to_interruption_secs: float) -> None:
        """The caller cut the agent off; how long from the VAD's speech start until the door
        told the client to drop its buffer (an observability figure)."""

    def on_inbound_activity(self, *, audio_secs: float = 0.0) -> None:
        """A message arrived from the caller, carrying `audio_secs` of audio (0 for signalling):
        liveness, the billed end of a client that went silent, and the input rate guard."""


@dataclass(frozen=True, slots=True)
class Liveness:
    """A door's own silence limits, enforced by the Session's inbound watchdog on top of its
    general one: how long before the first message from the client, and then how long without
    a signalling message (e.g. a page's pings) or without audio, before `client_timeout`."""

    connect_secs: float
    signal_secs: float
    audio_secs: float


class Door(Protocol):
    """One call's transport as the Session sees it."""

    name: str  # "grpc", "webrtc", "sip", "gsm"
    # None: only the Session's general inbound timeout applies.
    liveness: Liveness | None

    @property
    def transport(self) -> BaseTransport: ...

    def send_event(self, event: SessionEvent) -> None:
        """Queues a session event for the caller, in order with the call's audio; never blocks."""

    async def close(self) -> None:
        """Delivers what is queued, then releases the door; sends nothing more."""

    async def abort(self) -> None:
        """Releases the door at once: the caller is gone, nothing more can reach them."""
