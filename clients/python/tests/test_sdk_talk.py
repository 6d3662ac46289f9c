"""`voicegw talk` end to end against the fake gateway: real sockets, real-time pacing.

Calls are kept short (a 0.4 s greeting, 0.4 s of caller tone, a 0.3 s answer) instead of
speeding up the clock, so what is tested is exactly what users run. Nothing here asserts
wall-clock timings: order, counts and durations of audio are checked instead.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import wave
from pathlib import Path
from typing import Any

import grpc
import pytest
from sdk_fake_gateway import (
    API_KEY,
    CallRecord,
    FakeGateway,
    Script,
    StartGateway,
    dominant_frequency,
    rms,
    tone,
    write_wav,
)
from voicegw.v1 import voice_pb2 as pb
from voicegw_client import talk

EVENT_NAMES = {
    "session_started",
    "audio",
    "transcript",
    "interruption",
    "turn",
    "latency",
    "billing",
    "error",
    "session_ended",
    "status",
}


class Result:
    def __init__(self, code: int, tmp_path: Path) -> None:
        self.code = code
        events = tmp_path / "events.jsonl"
        self.events: list[dict[str, Any]] = (
            [json.loads(line) for line in events.read_text().splitlines()]
            if events.exists()
            else []
        )
        out = tmp_path / "out.wav"
        self.out_rate = 0
        self.out_frames = 0
        if out.exists():
            with wave.open(str(out)) as w:
                self.out_rate, self.out_frames = w.getframerate(), w.getnframes()

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]

    def turns(self) -> list[tuple[str, int]]:
        return [(e["kind"], e["utterance_id"]) for e in self.named("turn")]

    @property
    def played_ms(self) -> float:
        return self.out_frames * 1000 / self.out_rate

    def received_ms(self, bytes_per_ms: float) -> float:
        return sum(e["bytes"] for e in self.named("audio")) / bytes_per_ms


def caller_wav(tmp_path: Path, rate: int = 22050, channels: int = 2, ms: int = 400) -> Path:
    path = tmp_path / "caller.wav"
    write_wav(str(path), tone(440, ms, rate, amplitude=8000), rate, channels)
    return path


async def run_talk(gw: FakeGateway, tmp_path: Path, *extra: str, wav: Path | None = None) -> Result:
    argv = [
        "--target",
        gw.target,
        "--api-key",
        API_KEY,
        "--agent",
        "secretary",
        "--wav",
        str(wav or caller_wav(tmp_path)),
        "--out",
        str(tmp_path / "out.wav"),
        "--events",
        str(tmp_path / "events.jsonl"),
        "--timeout",
        "10",
        *extra,
    ]
    return Result(await talk.run(argv), tmp_path)


def check_marks(call: CallRecord, result: Result) -> dict[int, int]:
    """Marks are monotonic, about one per 100 ms played, and add up to what was played."""
    assert call.marks_monotonic
    final: dict[int, int] = {}
    counts: dict[int, int] = {}
    for utterance, ms in call.marks:
        final[utterance] = ms
        counts[utterance] = counts.get(utterance, 0) + 1
    assert sum(final.values()) == pytest.approx(result.played_ms, abs=2 * len(final))
    for utterance, played in final.items():
        expected = math.ceil(played / 100)  # one per 100 ms crossed, plus the exact final one
        assert expected - 1 <= counts[utterance] <= expected + 2, (utterance, played, counts)
    return final


def check_json_lines(result: Result) -> None:
    times = [e["t_ms"] for e in result.events]
    assert times == sorted(times)
    assert all(isinstance(t, int) for t in times)
    assert {e["event"] for e in result.events} <= EVENT_NAMES
    assert result.events[-1]["event"] == "status"
    for e in result.named("audio"):
        assert isinstance(e["bytes"], int) and isinstance(e["utterance_id"], int)
    for e in result.named("transcript"):
        assert e["role"] in ("user", "agent") and isinstance(e["final"], bool) and e["text"]
    for e in result.named("turn"):
        assert e["kind"] in ("user_started", "user_stopped", "bot_started", "bot_stopped")


async def test_full_call_linear16(fake_gateway: StartGateway, tmp_path: Path) -> None:
    gw = await fake_gateway(Script())
    result = await run_talk(gw, tmp_path)
    assert result.code == 0
    check_json_lines(result)

    started = result.events[0]
    assert started["event"] == "session_started"
    assert started["session_id"] == "call-1"
    assert (started["agent"], started["agent_version"]) == ("secretary", 3)
    assert started["input_format"] == {"encoding": "linear16", "sample_rate_hz": 16000}
    assert started["output_format"] == {"encoding": "linear16", "sample_rate_hz": 16000}
    assert result.turns() == [
        ("bot_started", 1),
        ("bot_stopped", 1),
        ("user_started", 0),
        ("user_stopped", 0),
        ("bot_started", 2),
        ("bot_stopped", 2),
    ]
    assert [(e["role"], e["text"]) for e in result.named("transcript")] == [
        ("agent", "Hello, how can I help?"),
        ("user", "hello there"),
        ("agent", "Nice to meet you."),
    ]
    assert result.named("latency") == [
        {
            "t_ms": result.named("latency")[0]["t_ms"],
            "event": "latency",
            "user_to_bot_ms": 420,
            "stt_ms": 90,
            "llm_ttfb_ms": 0,
            "tts_ttfb_ms": 0,
        }
    ]
    ended = result.events[-2]
    assert ended["event"] == "session_ended"
    assert ended["reason"] == "caller_hangup"
    assert isinstance(ended["billed_seconds"], int) and ended["billed_seconds"] >= 1
    assert {k: result.events[-1][k] for k in ("code", "message")} == {"code": "OK", "message": ""}

    call = gw.call
    assert call.kinds[0] == "config" and call.kinds[-1] == "hangup"
    assert call.odd_chunks == 0
    # Speech started only after the greeting's bot_stopped, and after the client reported
    # having played all of it; the WAV is 0.4 s = 20 chunks.
    speech = call.speech_chunks
    assert speech and all(chunk.after_greeting for chunk in speech)
    assert call.timeline.index(("mark", 1, 400)) < call.timeline.index(("speech",))
    assert 19 <= len(speech) <= 21
    assert call.chunks[0].speech is False  # silence before speaking: a live caller
    tone_pcm = [s for chunk in speech[1:-1] for s in chunk.pcm]
    assert dominant_frequency(tone_pcm, 16000) == pytest.approx(440, abs=15)

    # Nothing was interrupted, and the answer was played out before hanging up.
    assert result.out_rate == 16000
    assert result.played_ms == pytest.approx(result.received_ms(32), abs=1)
    assert result.played_ms == pytest.approx(700, abs=1)
    assert check_marks(call, result) == {1: 400, 2: 300}


async def test_barge_in_drops_the_buffer(fake_gateway: StartGateway, tmp_path: Path) -> None:
    # The agent sends its 2 s greeting up to 1.5 s ahead, so a lot is buffered at the barge-in.
    gw = await fake_gateway(Script(greeting_ms=2000, lead_ms=1500))
    result = await run_talk(gw, tmp_path, "--barge-in-at", "0.3")
    assert result.code == 0
    check_json_lines(result)
    call = gw.call
    assert call.interruptions == [1]
    assert [e["utterance_id"] for e in result.named("interruption")] == [1]
    # We spoke into the greeting, not after it.
    assert not call.speech_chunks[0].after_greeting
    # The interrupted greeting's bot_stopped (while the caller was still talking) is not taken
    # as the answer: the call goes on until the reply was heard.
    kinds = [kind for kind, _ in result.turns()]
    assert kinds.index("user_started") < kinds.index("bot_stopped") < kinds.index("user_stopped")
    assert result.turns()[-1] == ("bot_stopped", 2)

    received = result.received_ms(32)
    assert result.played_ms < received - 500
    final = check_marks(call, result)
    assert final[2] == 300  # the answer was played in full
    assert 200 <= final[1] < call.sent_audio_ms[1] - 500  # the greeting was cut short


async def test_pcmu_input_is_valid_mu_law_at_8khz(
    fake_gateway: StartGateway, tmp_path: Path
) -> None:
    gw = await fake_gateway(Script(greeting_ms=200, reply_ms=200))
    result = await run_talk(
        gw, tmp_path, "--encoding", "pcmu", wav=caller_wav(tmp_path, 16000, channels=1)
    )
    assert result.code == 0
    call = gw.call
    assert call.config is not None
    assert call.config.input_format == pb.AudioFormat(
        encoding=pb.AUDIO_ENCODING_PCMU, sample_rate_hz=8000
    )
    assert call.odd_chunks == 0 and all(len(chunk.encoded) == 160 for chunk in call.chunks)
    speech = call.speech_chunks
    assert 19 <= len(speech) <= 21
    pcm = [s for chunk in speech[1:-1] for s in chunk.pcm]  # decoded by the fake's own formula
    assert dominant_frequency(pcm, 8000) == pytest.approx(440, abs=15)
    assert rms(pcm) == pytest.approx(8000 / math.sqrt(2), rel=0.05)
    assert result.events[0]["input_format"] == {"encoding": "pcmu", "sample_rate_hz": 8000}
    assert result.out_rate == 8000
    assert result.played_ms == pytest.approx(400, abs=1)


async def test_no_answer_times_out(fake_gateway: StartGateway, tmp_path: Path) -> None:
    gw = await fake_gateway(Script(greeting_ms=200, answer=False))
    result = await run_talk(gw, tmp_path, "--timeout", "1.5")
    assert result.code == 2
    assert result.events[-2]["event"] == "session_ended"  # we hung up; the call ended properly
    assert result.events[-1]["code"] == "OK"
    assert gw.call.kinds[-1] == "hangup"


async def test_agent_goodbye_ends_normally(fake_gateway: StartGateway, tmp_path: Path) -> None:
    gw = await fake_gateway(Script(greeting_ms=200, goodbye_after_reply=True))
    result = await run_talk(gw, tmp_path)
    assert result.code == 0
    assert result.events[-2]["reason"] == "agent_goodbye"
    assert "hangup" not in gw.call.kinds
    # What was still buffered when the gateway closed the stream was played out.
    assert result.played_ms == pytest.approx(500, abs=1)


async def test_rpc_error_mid_call_exits_3(fake_gateway: StartGateway, tmp_path: Path) -> None:
    gw = await fake_gateway(
        Script(greeting_ms=100, abort_after_greeting=(grpc.StatusCode.INTERNAL, "boom"))
    )
    result = await run_talk(gw, tmp_path)
    assert result.code == 3
    assert result.events[-1] == {
        "t_ms": result.events[-1]["t_ms"],
        "event": "status",
        "code": "INTERNAL",
        "message": "boom",
    }


async def test_refusal_reason_is_in_the_status_line(
    fake_gateway: StartGateway, tmp_path: Path
) -> None:
    gw = await fake_gateway(
        Script(refuse=(grpc.StatusCode.RESOURCE_EXHAUSTED, "no minutes", "QUOTA_EXCEEDED"))
    )
    result = await run_talk(gw, tmp_path)
    assert result.code == 3
    assert [(e["event"], e["code"], e["reason"]) for e in result.events] == [
        ("status", "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED")
    ]
    assert result.out_frames == 0


async def test_cli_entry_point_unknown_agent(fake_gateway: StartGateway, tmp_path: Path) -> None:
    """The real command in a subprocess, with the key from the environment."""
    gw = await fake_gateway()
    env = {**os.environ, "VOICEGW_API_KEY": API_KEY}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voicegw_client",
        "talk",
        "--target",
        gw.target,
        "--agent",
        "nobody",
        "--wav",
        str(caller_wav(tmp_path)),
        "--events",
        str(tmp_path / "events.jsonl"),
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    assert process.returncode == 3, stderr.decode()
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["event"], e["code"]) for e in lines] == [("status", "NOT_FOUND")]
    assert "NOT_FOUND" in stderr.decode()


async def test_usage_errors_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("VOICEGW_API_KEY", raising=False)
    wav = str(caller_wav(tmp_path))
    base = ["--target", "127.0.0.1:1", "--agent", "a"]
    assert await talk.run([*base, "--wav", wav]) == 1  # no key anywhere
    assert "API key" in capsys.readouterr().err
    assert await talk.run([*base, "--api-key", "k", "--wav", str(tmp_path / "none.wav")]) == 1
    assert await talk.run([*base, "--api-key", "k", "--wav", wav, "--encoding", "opus"]) == 1
    assert await talk.run(["--help"]) == 0
    assert "--barge-in-at" in capsys.readouterr().out
