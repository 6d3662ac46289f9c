"""The browser door (WebRTC)."""

from transports.webrtc.door import WebRTCDoor, WidgetConnection, event_json

__all__ = ["WebRTCDoor", "WidgetConnection", "event_json"]
