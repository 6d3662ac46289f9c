"""Refuses caller audio that arrives faster than real time.

A caller streams what a microphone produces, so over any stretch of seconds it cannot send much
more audio than time has passed. A client that sends faster (a file pushed as fast as the socket
allows, a runaway loop) would have the gateway transcribe, and the tenant pay for, speech nobody
said in this call, and its calls would take CPU from everyone else's. Real networks are not
that tidy, though: chunks arrive with jitter, and after a hiccup (a Wi-Fi handover, a stalled
event loop on either side) a client that fell behind sends its backlog in a burst. So the guard
accounts two things:

- **catch-up credit**: wall time that passed without the matching audio arriving (the client is
  behind real time). Audio covered by it is on time or catching up. It is capped at
  `catch_up_secs` (3 s), so a client silent for a minute cannot then send a minute at once.
- **excess**: audio beyond that credit, i.e. ahead of real time. Over the last `window_secs`
  (2 s) it may add up to `(max_speed - 1) * window_secs + slack_secs` (0.5 s + 0.5 s of slack
  for jitter): at most `max_speed * window_secs + slack_secs` seconds of audio in any window
  (3.5 s in 2 s), plus whatever the client had fallen behind. The slack also lets a sustained
  speed up to `max_speed + slack_secs / window_secs` (1.75x) through; a longer window narrows
  that, a shorter one reacts faster.

The credit starts full: a client may have captured audio before its stream was up and send it at
once. Audio that waited in the door's buffers while *we* set the call up (a door reads only once
the pipeline runs) arrives as one burst too; that delay is ours, not the client's, so the
Session starts the guard with the call, and the first read may catch up all of it. The Session
owns the guard, fed by every door through `CallControl.on_inbound_activity`, so a SIP peer
flooding RTP meets the same rule as a gRPC client. A client sending at
3x real time is still refused within about 2.5 s.
"""

from __future__ import annotations

from collections import deque

DEFAULT_MAX_SPEED = 1.5
DEFAULT_WINDOW_SECS = 2.0
DEFAULT_SLACK_SECS = 0.5
DEFAULT_CATCH_UP_SECS = 3.0


class InputRateGuard:
    """Fed each inbound chunk's arrival time and duration; says when the input is too fast.

    Pure arithmetic on the times it is given (no clock of its own), so it is exact to test and
    cheap per chunk: O(1) amortised, plus a deque of the chunks of one window (a few hundred at
    most before a verdict).
    """

    def __init__(
        self,
        max_speed: float = DEFAULT_MAX_SPEED,
        window_secs: float = DEFAULT_WINDOW_SECS,
        *,
        slack_secs: float = DEFAULT_SLACK_SECS,
        catch_up_secs: float = DEFAULT_CATCH_UP_SECS,
        started_at: float | None = None,
    ) -> None:
        """`started_at`: monotonic time the client could start sending (the stream opened);
        without it, the first chunk's arrival."""
        if max_speed < 1.0:
            raise ValueError("max_speed below 1 would refuse a real-time caller")
        if window_secs <= 0:
            raise ValueError("window_secs must be positive")
        self.max_speed = max_speed
        self.window_secs = window_secs
        self._excess_allowed = (max_speed - 1.0) * window_secs + slack_secs
        self._catch_up_cap = catch_up_secs
        self._credit = catch_up_secs
        self._start = started_at
        self._last = started_at
        self._fed = False
        # (arrival, secs, excess secs) of the chunks within the last window, and their sums.
        self._recent: deque[tuple[float, float, float]] = deque()
        self._recent_secs = 0.0
        self._recent_excess = 0.0

    def feed(self, now: float, secs: float) -> float | None:
        """Accounts `secs` of audio that arrived at monotonic time `now`.

        Returns None while the input is acceptable, else the speed (x real time) measured over
        the last window, for the error message. After a verdict the caller is expected to stop.
        """
        if self._start is None:
            self._start = now - secs
        if self._last is not None:
            elapsed = max(0.0, now - self._last)
            # Before the first read, the client waited on us: all of that time may be caught up.
            # (Credit above the cap from that first wait is spent, never cut.)
            cap = self._catch_up_cap if self._fed else max(self._catch_up_cap, elapsed)
            self._credit = max(self._credit, min(cap, self._credit + elapsed))
        self._last = now
        self._fed = True
        covered = min(self._credit, secs)
        self._credit -= covered
        self._remember(now, secs, secs - covered)
        # Exactly at the limit is within it, despite float sums.
        if self._recent_excess > self._excess_allowed + 1e-9:
            return self.speed(now)
        return None

    def speed(self, now: float) -> float:
        """Audio received over the last window (or since the start, if shorter), as a multiple
        of real time."""
        start = self._start if self._start is not None else now
        span = max(min(self.window_secs, now - start), 1e-3)
        return self._recent_secs / span

    def _remember(self, now: float, secs: float, excess: float) -> None:
        self._recent.append((now, secs, excess))
        self._recent_secs += secs
        self._recent_excess += excess
        while self._recent and self._recent[0][0] <= now - self.window_secs:
            _, old_secs, old_excess = self._recent.popleft()
            self._recent_secs -= old_secs
            self._recent_excess -= old_excess
