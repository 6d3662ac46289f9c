"""A scripted browser for WebRTC tests: a real aiortc peer that behaves as the widget does.

It asks for a widget token with an Origin, offers an audio track (speech when told, silence
otherwise, paced in real time like a microphone) and an `events` data channel, pings on it every
second, and records the server's events; the agent's audio is read off the remote track.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError

RATE = 48000
FRAME = 960  # 20 ms


class Microphone(AudioStreamTrack):
    """Speech when queued, silence otherwise, one 20 ms frame every 20 ms."""

    def __init__(self) -> None:
        super().__init__()
        self._pending = bytearray()
        self._start: float | None = None
        self._pts = 0

    def say(self, pcm16_48k: bytes) -> None:
        self._pending += pcm16_48k

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError  # stopped: the sender stops sending, as a muted tab's would
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME
            await asyncio.sleep(max(0.0, self._start + self._pts / RATE - time.monotonic()))
        chunk = bytes(self._pending[: FRAME * 2]).ljust(FRAME * 2, b"\0")
        del self._pending[: FRAME * 2]
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(chunk)
        frame.pts = self._pts
        frame.sample_rate = RATE
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


class BrowserPeer:
    def __init__(self, base_url: str, origin: str, agent: str) -> None:
        self.base_url = base_url
        self.origin = origin
        self.agent = agent
        self.mic = Microphone()
        self.pc = RTCPeerConnection()
        self.events: list[dict[str, Any]] = []
        self.agent_audio_peak = 0
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[Any]] = []
        self.pinging = True
        self.channel: Any = None
        # e.g. X-Forwarded-For, as a proxy in front of the gateway would add.
        self.extra_headers: dict[str, str] = {}

    async def token(self, http: aiohttp.ClientSession) -> tuple[int, dict[str, Any]]:
        async with http.post(
            f"{self.base_url}/v1/widget/token",
            json={"agent": self.agent},
            headers={"Origin": self.origin, **self.extra_headers},
        ) as response:
            return response.status, await response.json()

    async def offer_sdp(self, *, audio: bool = True) -> str:
        if audio:
            self.pc.addTransceiver(self.mic, direction="sendrecv")
        self.channel = self.pc.createDataChannel("events", ordered=True)
        self.channel.on("message", self._on_message)
        self.channel.on("open", self._on_open)
        self.pc.on("track", self._on_track)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def post_offer(
        self, http: aiohttp.ClientSession, token: str, sdp: str, origin: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        async with http.post(
            f"{self.base_url}/v1/webrtc/offer",
            json={"sdp": sdp, "type": "offer"},
            headers={
                "Origin": origin or self.origin,
                "Authorization": f"Bearer {token}",
                **self.extra_headers,
            },
        ) as response:
            return response.status, await response.json()

    async def connect(self, http: aiohttp.ClientSession) -> None:
        status, body = await self.token(http)
        assert status == 200, body
        sdp = await self.offer_sdp()
        status, answer = await self.post_offer(http, body["token"], sdp)
        assert status == 200, answer
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))

    def _on_open(self) -> None:
        self._tasks.append(asyncio.create_task(self._ping()))

    async def _ping(self) -> None:
        while self.channel.readyState == "open":
            if self.pinging:
                self.channel.send(f"ping: {int(time.time() * 1000)}")
            await asyncio.sleep(1.0)

    def _on_message(self, message: Any) -> None:
        self.events.append(json.loads(message))
        self._tasks.append(asyncio.create_task(self._notify()))

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._tasks.append(asyncio.create_task(self._listen(track)))

    async def _listen(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                samples = np.frombuffer(bytes(frame.planes[0]), dtype=np.int16)
                if samples.size:
                    self.agent_audio_peak = max(self.agent_audio_peak, int(np.abs(samples).max()))
        except Exception:  # noqa: BLE001 - the track ends with the call
            return

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def said(self, role: str) -> list[str]:
        return [
            e["text"]
            for e in self.events
            if e.get("event") == "transcript" and e["role"] == role and e["final"]
        ]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    async def wait_for(self, predicate: Any, timeout: float = 30.0) -> None:
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self))

        await asyncio.wait_for(check(), timeout)

    def hang_up(self) -> None:
        self.channel.send(json.dumps({"type": "hangup"}))

    async def close(self) -> None:
        """Hangs up first when the call is still up, as the widget does on leaving the page."""
        if self.channel is not None and self.channel.readyState == "open":
            if not self.of("session_ended"):
                self.hang_up()
                with contextlib.suppress(TimeoutError):
                    await self.wait_for(lambda p: p.of("session_ended"), timeout=5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pc.close()
