"""The browser door end to end: the demo page's widget in a real headless Chromium, over WebRTC.

Debian's `chromium`, driven by Playwright (`clients/web/tests/widget_e2e.mjs`), opens the demo
page served by an in-process gateway, and its fake microphone plays an espeak-ng WAV: silence
while the greeting plays, then a question. Real ICE/DTLS/SRTP on loopback, real Opus, real
pocketsphinx and espeak on the gateway. The driver reports what the page saw (states, captions,
getStats() of the agent's audio, data-channel traffic) as JSON; this test judges it, then checks
the stored call.

Missing Chromium or node_modules FAIL the test (with how to install them) rather than skip it:
a skipped browser test would let CI pass with the browser door untested.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
import wave
from pathlib import Path
from typing import Any

import aiohttp

from gateway.db import Database
from gateway.dev import DEFAULT_AGENT, ensure_default_tenant
from gateway.server import Gateway
from gateway.storage import agents, calls
from pipelines.agent_config import AgentConfig
from pipelines.engines.espeak import synthesize
from tests.audio_helpers import silence, speech

REPO = Path(__file__).resolve().parents[2]
WEB = REPO / "clients" / "web"
DRIVER = WEB / "tests" / "widget_e2e.mjs"
CHROMIUM = Path(os.environ.get("VOICEGW_CHROMIUM", "/usr/bin/chromium"))
# The mid-call screenshot goes to the test's tmp dir; VOICEGW_WIDGET_SCREENSHOT=docs/widget.png
# refreshes the README's picture (kept out of ordinary runs so tests leave the tree clean).
SCREENSHOT_ENV = "VOICEGW_WIDGET_SCREENSHOT"
QUESTION = "what are your opening hours"
WAV_RATE = 48000  # the browser's own capture rate: Chromium plays the file without resampling
# After the greeting ends, before the question starts: the connection takes one to two seconds, and
# the question must not barge into the greeting (that is another test's subject).
LEAD_MARGIN_MS = 6000

# The fields of each data-channel event: `voicegw talk --events` lines without t_ms.
EVENT_FIELDS = {
    "session_started": {
        "event",
        "session_id",
        "agent",
        "agent_version",
        "input_format",
        "output_format",
    },
    "transcript": {"event", "role", "text", "final", "utterance_id"},
    "turn": {"event", "kind", "utterance_id"},
    "interruption": {"event", "utterance_id"},
    "billing": {"event", "kind", "seconds_left", "balance_minor", "currency"},
    "error": {"event", "message", "code"},
    "session_ended": {"event", "reason", "billed_seconds", "detail"},
}


def require_browser() -> str:
    """The node binary; fails (not skips) with the install command when a part is missing."""
    node = shutil.which("node")
    assert node, "node is not installed: run .ci/run as root (apt-get install nodejs npm)"
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run .ci/run as root (apt-get chromium)"
    assert (WEB / "node_modules" / "playwright-core").is_dir(), (
        "clients/web/node_modules is missing: run `make install` (npm ci in clients/web)"
    )
    return node


def fake_microphone_wav(path: Path, greeting: str) -> None:
    """Silence for the greeting's length plus a margin, then the question, then silence.

    Chromium starts the file when the page opens the microphone, a moment before the call
    connects; the greeting's length is espeak's own, the same engine the gateway speaks with.
    """
    greeting_ms = int(synthesize(greeting).duration_secs * 1000)
    pcm = (
        silence(greeting_ms + LEAD_MARGIN_MS, WAV_RATE)
        + speech(QUESTION, WAV_RATE)
        + silence(1000, WAV_RATE)
    )
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(WAV_RATE)
        wav.writeframes(pcm)


def screenshot_path(tmp_path: Path) -> Path:
    """Absolute (the driver runs in clients/web): $VOICEGW_WIDGET_SCREENSHOT, else tmp."""
    return Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "widget.png").resolve()


async def drive(node: str, *args: str) -> dict[str, Any]:
    """Runs the Playwright driver; its one stdout line is the result (or says what failed)."""
    proc = await asyncio.create_subprocess_exec(
        node,
        str(DRIVER),
        "--chromium",
        str(CHROMIUM),
        *args,
        cwd=WEB,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 240)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError("the browser driver did not finish within 240 s") from None
    lines = out.decode().strip().splitlines()
    assert lines, f"the driver printed nothing (exit {proc.returncode}); stderr:\n{err.decode()}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert result["ok"] and proc.returncode == 0, (
        f"browser run failed: {result.get('error')}\nresult: {json.dumps(result, indent=1)}\n"
        f"stderr:\n{err.decode()[-4000:]}"
    )
    print("browser result:", json.dumps(result))  # shown by pytest when an assertion fails
    return result


async def make_demo_agent_public(database: Database, origin: str) -> Any:
    """The demo page's agent, default/secretary, callable from `origin` (as `make run` does)."""
    org = await ensure_default_tenant(database)
    assert await agents.set_widget(
        database.pool,
        org.id,
        DEFAULT_AGENT,
        public=True,
        origins=[origin],
        max_concurrent=2,
        daily_budget_secs=3600,
    )
    return org


async def stored_call(gateway: Gateway, database: Database, call_id: uuid.UUID) -> Any:
    """The call's row once the gateway has stored it (a live session sets `finished` then)."""
    assert gateway.sessions is not None
    session = gateway.sessions.sessions.get(call_id)
    if session is not None:
        await asyncio.wait_for(session.finished.wait(), 15)
    return await calls.get_call(database.pool, call_id)


async def test_widget_call_in_a_real_browser(
    gateway: Gateway, database: Database, tmp_path: Path
) -> None:
    node = require_browser()
    origin = f"http://127.0.0.1:{gateway.http_port}"
    org = await make_demo_agent_public(database, origin)
    config = AgentConfig.default_secretary()
    hours_answer = next(entry.answer for entry in config.faq if entry.id == "hours")
    expect = " ".join(hours_answer.split()[:5])  # "We are open Monday to"
    wav = tmp_path / "question.wav"
    fake_microphone_wav(wav, config.greeting)

    result = await drive(
        node,
        *("--url", f"{origin}/demo", "--wav", str(wav), "--expect", expect),
        *("--screenshot", str(screenshot_path(tmp_path))),
    )

    # Connected: ICE+DTLS up and session_started received.
    assert result["connection_state"] == "connected"
    states = result["states"]
    assert states[:5] == ["idle", "connecting", "listening", "speaking", "listening"], states
    assert states[-1] == "ended", states
    assert "thinking" in states[5:], states  # the question's user_stopped turn

    # The greeting was heard: the played remote track carried energy, and there was none before.
    audio = result["audio"]
    greeting_secs = synthesize(config.greeting).duration_secs
    assert abs(result["greeting_ms"] / 1000 - greeting_secs) < 3, result["greeting_ms"]
    assert audio["greeting_energy"] > 0.01, audio
    assert audio["at_connect"]["total_audio_energy"] < audio["greeting_energy"] / 10, audio
    assert audio["greeting_samples_secs"] > greeting_secs - 2, audio

    # The spoken question was recognised and answered, in the captions.
    captions = result["captions"]
    assert captions[0] == {"role": "agent", "text": config.greeting}, captions
    user = [c["text"] for c in captions if c["role"] == "user"]
    assert user and "hours" in user[0], captions
    assert result["answer_caption"].startswith(hours_answer), result
    assert result["state_at_screenshot"] == "speaking"
    assert result["screenshot_bytes"] > 10_000

    # The data channel: a well-formed ping every second, the hang-up, the gateway's events with
    # exactly `voicegw talk`'s fields, ended by the hang-up (not by the widget's own 3 s timer).
    pings = result["pings"]
    assert pings["well_formed"] and pings["count"] >= result["greeting_ms"] / 1000, pings
    assert pings["max_gap_ms"] < 1500, pings
    assert result["hangup_sent"]
    events = result["events"]
    for event in events:
        assert set(event) == EVENT_FIELDS[event["event"]], event
    names = [e["event"] for e in events]
    assert names[0] == "session_started" and names[-1] == "session_ended", names
    assert events[0]["session_id"] == result["session_id"]
    assert events[-1]["reason"] == "caller_hangup"
    assert result["end_reason"] == "caller_hangup" and result["hangup_to_ended_ms"] < 3000
    assert result["after_hangup"]["connection_state"] == "closed"

    # The stored call came through the WebRTC door and ended with the hang-up.
    record = await stored_call(gateway, database, uuid.UUID(result["session_id"]))
    assert record is not None
    assert record.door == "webrtc"
    assert record.org_id == org.id and record.status == "ended"
    assert record.end_reason == "caller_hangup"
    assert record.caller_metadata.get("origin") == origin


async def test_widget_says_why_a_call_cannot_start(gateway: Gateway, database: Database) -> None:
    node = require_browser()
    allowed = f"http://127.0.0.1:{gateway.http_port}"
    await make_demo_agent_public(database, allowed)

    # The visitor says no to the microphone: the widget asks the gateway for nothing.
    mic = await drive(node, "--scenario", "mic-refused", "--url", f"{allowed}/demo")
    assert mic["states"] == ["idle", "connecting", "ended"], mic
    assert mic["end_status"].startswith("Microphone access was refused"), mic
    assert mic["status_is_error"] and mic["call_again"]
    assert mic["peer_connections"] == 0

    # The same page on an origin the agent does not accept: the gateway's own reason is shown.
    other = f"http://localhost:{gateway.http_port}"
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{allowed}/v1/widget/token",
            json={"agent": "default/secretary"},
            headers={"Origin": other},
        ) as response,
    ):
        assert response.status == 403
        reason = (await response.json())["error"]
    refused = await drive(node, "--scenario", "refused", "--url", f"{other}/demo")
    assert refused["states"] == ["idle", "connecting", "ended"], refused
    assert refused["end_status"] == f"The voice service refused the call: {reason}", refused
    assert refused["status_is_error"] and refused["call_again"]
    assert refused["peer_connections"] == 0
