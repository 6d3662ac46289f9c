"""The browser door (WebRTC)."""

from transports.webrtc.door import WebRTCDoor, event_json

__all__ = ["WebRTCDoor", "event_json"]
