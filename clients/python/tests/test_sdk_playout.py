"""The simulated loudspeaker of `voicegw talk`, driven by explicit time steps."""

from __future__ import annotations

from voicegw_client._playout import Playout

RATE = 8000


def ms_of_audio(ms: int, value: int = 1000) -> bytes:
    return value.to_bytes(2, "little", signed=True) * (RATE * ms // 1000)


def play(playout: Playout, ms: int, step_ms: int = 20) -> None:
    for _ in range(ms // step_ms):
        playout.advance(step_ms / 1000)


def test_plays_in_real_time_and_marks_every_100_ms() -> None:
    playout = Playout(RATE)
    playout.push(1, ms_of_audio(450))
    play(playout, 300)
    assert playout.played_ms == 300
    assert playout.buffered_ms == 150
    assert playout.take_marks() == [(1, 100), (1, 200), (1, 300)]
    play(playout, 400)  # runs dry after 150 ms: a final mark with the exact amount
    assert playout.take_marks() == [(1, 400), (1, 450)]
    assert playout.idle
    assert playout.played_ms == 450


def test_uneven_steps_carry_fractions_of_a_sample() -> None:
    playout = Playout(RATE)
    playout.push(1, ms_of_audio(1000))
    for _ in range(80):
        playout.advance(0.0123456)  # 98.76 samples per step
    assert len(playout.played) // 2 == int(80 * 0.0123456 * RATE)


def test_silence_is_not_owed() -> None:
    playout = Playout(RATE)
    playout.advance(5.0)  # nothing to play: time passes, no debt builds up
    playout.push(1, ms_of_audio(100))
    playout.advance(0.02)
    assert playout.played_ms == 20


def test_interruption_drops_the_buffer_and_reports_what_was_heard() -> None:
    playout = Playout(RATE)
    playout.push(1, ms_of_audio(1000))
    play(playout, 260)
    assert playout.drop() == 740
    assert playout.take_marks() == [(1, 100), (1, 200), (1, 260)]
    assert playout.idle
    playout.push(2, ms_of_audio(120, value=-5))
    play(playout, 200)
    assert playout.take_marks() == [(2, 100), (2, 120)]
    assert playout.played_ms == 380
    assert playout.played[-2:] == (-5).to_bytes(2, "little", signed=True)


def test_next_utterance_closes_the_previous_one() -> None:
    playout = Playout(RATE)
    playout.push(1, ms_of_audio(50))
    playout.push(2, ms_of_audio(150))
    play(playout, 200)
    # Marks carry what was played at the tick that crossed 100 ms: utterance 2 started 10 ms
    # into a 20 ms tick, so its ticks end at 10, 30, ..., 110 ms.
    assert playout.take_marks() == [(1, 50), (2, 110), (2, 150)]
    assert playout.played_ms_of(1) == 50
