"""The input rate guard on synthetic arrival schedules: exact times, no clock, no sleeps.

Each schedule is a list of (arrival time, seconds of audio) as a door would see 20 ms chunks.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest
from pydantic import ValidationError

from gateway.config import Settings
from gateway.rate_guard import InputRateGuard
from gateway.session import SessionPolicy
from gateway.voice_service import stream_limits
from transports.grpc_stream import StreamLimits

CHUNK = 0.02


def steady(speed: float, secs: float, start: float = 0.0) -> list[tuple[float, float]]:
    """`secs` of wall time of 20 ms chunks sent at `speed` x real time."""
    interval = CHUNK / speed
    return [(start + i * interval, CHUNK) for i in range(int(secs / interval))]


def first_verdict(
    guard: InputRateGuard, schedule: Iterable[tuple[float, float]]
) -> tuple[float, float] | None:
    """(arrival time, reported speed) of the first refused chunk, or None."""
    for now, secs in schedule:
        speed = guard.feed(now, secs)
        if speed is not None:
            return now, speed
    return None


def test_real_time_with_jitter_is_accepted_for_ten_minutes() -> None:
    rng = random.Random(7)
    schedule = [(i * CHUNK + rng.uniform(0, 0.015), CHUNK) for i in range(int(600 / CHUNK))]
    schedule.sort()
    assert first_verdict(InputRateGuard(), schedule) is None


@pytest.mark.parametrize("speed", [1.0, 1.2, 1.4])
def test_at_most_the_limit_is_accepted_indefinitely(speed: float) -> None:
    assert first_verdict(InputRateGuard(), steady(speed, 300)) is None


@pytest.mark.parametrize(("speed", "within"), [(3.0, 2.5), (2.0, 5.0), (10.0, 0.6)])
def test_too_fast_is_refused_soon_with_its_speed(speed: float, within: float) -> None:
    verdict = first_verdict(InputRateGuard(), steady(speed, 30))
    assert verdict is not None
    at, reported = verdict
    assert at <= within, f"{speed}x refused only after {at:.2f} s"
    assert reported == pytest.approx(speed, rel=0.05)


def test_three_times_real_time_is_not_refused_in_the_first_second() -> None:
    """The start is lenient (audio captured during call set-up), but not for long."""
    verdict = first_verdict(InputRateGuard(), steady(3.0, 30))
    assert verdict is not None and 1.0 <= verdict[0] <= 2.5


def test_the_slack_bounds_the_sustained_speed_through_the_window() -> None:
    """0.5 s of slack per 2 s window lets up to 1.75x through; a 10 s window, up to 1.55x."""
    assert first_verdict(InputRateGuard(), steady(1.7, 300)) is None
    assert first_verdict(InputRateGuard(), steady(1.8, 300)) is not None
    assert first_verdict(InputRateGuard(window_secs=10), steady(1.6, 300)) is not None
    assert first_verdict(InputRateGuard(window_secs=10), steady(1.5, 300)) is None


def test_bursty_but_real_time_on_average_is_accepted() -> None:
    # Every 2.5 s, the 2.5 s of audio captured since arrives at once (125 chunks back to back).
    schedule = [(burst * 2.5, CHUNK) for burst in range(1, 120) for _ in range(125)]
    assert first_verdict(InputRateGuard(), schedule) is None


def test_a_pause_may_be_caught_up() -> None:
    """10 s on time, a 3 s hiccup, the 3 s backlog at once, then on time again."""
    schedule = steady(1.0, 10)
    schedule += [(13.0, CHUNK)] * int(3 / CHUNK)
    schedule += steady(1.0, 60, start=13.0)
    assert first_verdict(InputRateGuard(), schedule) is None


def test_catch_up_credit_is_bounded() -> None:
    """A client silent for 30 s may not then send 30 s of audio at once."""
    schedule = steady(1.0, 10)
    schedule += [(40.0, CHUNK)] * int(30 / CHUNK)
    # Refused once the backlog exceeds the credit (3 s) plus the window's allowance above real
    # time (0.5 x 2 s) plus the slack (0.5 s), not before.
    guard = InputRateGuard()
    accepted = 0
    for now, secs in schedule:
        if guard.feed(now, secs) is not None:
            break
        accepted += now == 40.0
    assert accepted * CHUNK == pytest.approx(4.5, abs=CHUNK)


def test_audio_buffered_while_the_call_was_set_up_may_arrive_at_once() -> None:
    """The stream opened at 0; we read nothing until 5 s, when 5 s of audio waits for us."""
    schedule = [(5.0, CHUNK)] * int(5 / CHUNK) + steady(1.0, 60, start=5.0)
    assert first_verdict(InputRateGuard(started_at=0.0), schedule) is None
    # Without knowing when the stream opened, that is a 5 s burst.
    assert first_verdict(InputRateGuard(), schedule) is not None


def test_three_times_real_time_behind_a_slow_set_up_is_still_refused() -> None:
    schedule = [(1.0, CHUNK)] * int(3 / CHUNK) + steady(3.0, 30, start=1.0)
    verdict = first_verdict(InputRateGuard(started_at=0.0), schedule)
    assert verdict is not None
    at, reported = verdict
    assert at <= 3.0
    assert reported == pytest.approx(3.0, rel=0.1)


def test_settings_change_the_limit() -> None:
    assert first_verdict(InputRateGuard(max_speed=2.5), steady(2.0, 120)) is None
    assert first_verdict(InputRateGuard(max_speed=1.5), steady(2.0, 120)) is not None
    with pytest.raises(ValueError):
        InputRateGuard(max_speed=0.9)


def test_gateway_settings_become_the_session_policy_and_door_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VOICEGW_INPUT_MAX_SPEED", "2.0")
    monkeypatch.setenv("VOICEGW_CLIENT_STALL_SECS", "3")
    settings = Settings(input_speed_window_secs=4.0)
    policy = SessionPolicy.from_settings(settings)
    assert (policy.input_max_speed, policy.input_speed_window_secs) == (2.0, 4.0)
    assert stream_limits(settings) == StreamLimits(client_stall_secs=3.0)
    monkeypatch.delenv("VOICEGW_INPUT_MAX_SPEED")
    monkeypatch.delenv("VOICEGW_CLIENT_STALL_SECS")
    # The documented defaults.
    assert SessionPolicy.from_settings(Settings()) == SessionPolicy()
    assert (SessionPolicy().input_max_speed, SessionPolicy().input_speed_window_secs) == (1.5, 2)
    assert stream_limits(Settings()) == StreamLimits() == StreamLimits(5.0, 256)
    with pytest.raises(ValidationError):
        Settings(input_max_speed=0.8)  # would refuse every real-time caller
