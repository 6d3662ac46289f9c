"""`voicegw talk`: one scripted phone call to an agent, from a WAV file.

    voicegw talk --target HOST:PORT --api-key KEY --agent NAME --wav IN.wav
        [--encoding linear16|pcmu|pcma] [--rate HZ] [--out OUT.wav] [--events FILE.jsonl]
        [--barge-in-at SECONDS] [--timeout SECONDS] [--tls] [--ca-cert PEM]

It behaves like a live caller, because the gateway expects one: audio flows every 20 ms in real
time for the whole call (silence before and after the WAV), the agent's audio is "played" on a
simulated real-time loudspeaker that reports playback marks and obeys interruptions, and the
call is hung up once the agent has answered. Other tools (benchmarks, end-to-end tests) drive
the gateway through this command and read its JSON lines, so the flags, the JSON lines and the
exit codes are a contract:

* Speech starts when the greeting has finished: the first `bot_stopped` has arrived and the
  greeting's buffered audio has been played. With `--barge-in-at S` it starts S seconds after
  the first agent audio arrived instead (to interrupt the greeting).
* After the WAV: silence until the agent has answered, i.e. a `bot_stopped` after a
  `user_stopped` that followed the start of our speech (with no user turn open since), and the
  answer has finished playing; then hang up and read events until the stream ends.
* `--timeout` (default 30 s) bounds the whole call from the moment the stream opens.
* OUT.wav (linear16 at the output rate) holds exactly what was played, back to back: silence
  while nothing was buffered is omitted, audio dropped by an interruption is not there. After a
  normal end by the gateway (e.g. agent_goodbye) the buffered rest is played out first.
* FILE.jsonl: one object per received event, `{"t_ms": ms since the stream opened,
  "event": name, ...fields}`, names session_started, audio, transcript, interruption, turn,
  latency, billing, error, session_ended; the last line is always `status` (gRPC code name and
  message), even when the call was refused.
* Exit status: 0 the call ended normally (status OK); 2 timeout (also when the gateway did not
  close the stream within 5 s of our hangup); 3 RPC error (any non-OK status, including an
  unreachable gateway); 1 local problem (bad arguments, unreadable WAV, unwritable output).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

from voicegw_client import audio
from voicegw_client._events import (
    AgentAudio,
    AudioFormat,
    BillingNotice,
    ErrorEvent,
    Event,
    Interruption,
    Latency,
    SessionEnded,
    SessionStarted,
    Transcript,
    TurnEvent,
)
from voicegw_client._playout import Playout
from voicegw_client._status import CallStatus, ConversationClosed, VoiceGatewayError
from voicegw_client.client import Conversation, VoiceClient

EXIT_OK = 0
EXIT_LOCAL_ERROR = 1
EXIT_TIMEOUT = 2
EXIT_RPC_ERROR = 3

CHUNK_MS = 20
TICK_SECS = CHUNK_MS / 1000
# How far behind schedule the sender may fall before it stops catching up: catching up means
# sending faster than real time, which the gateway refuses beyond ~1.5x.
MAX_LAG_SECS = 0.1
HANGUP_GRACE_SECS = 5.0
API_KEY_ENV = "VOICEGW_API_KEY"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    # argparse exits with status 2 on bad usage, which here means "timeout".
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="voicegw talk",
        description="Call an agent with a WAV file as the caller's voice.",
    )
    parser.add_argument("--target", required=True, help="gateway address, HOST:PORT")
    parser.add_argument("--api-key", help=f"API key (default: ${API_KEY_ENV})")
    parser.add_argument("--agent", required=True, help="agent name")
    parser.add_argument("--wav", required=True, type=Path, help="caller speech (any WAV)")
    parser.add_argument("--encoding", choices=audio.ENCODINGS, default="linear16")
    parser.add_argument(
        "--rate", type=int, help="linear16 sample rate (default 16000; pcmu/pcma use 8000)"
    )
    parser.add_argument("--out", type=Path, help="write what was played of the agent's audio")
    parser.add_argument("--events", type=Path, help="write received events as JSON lines")
    parser.add_argument(
        "--barge-in-at",
        type=float,
        metavar="SECONDS",
        help="start speaking this long after the first agent audio instead of after greeting",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="whole-call limit (s)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--ca-cert", type=Path, help="PEM root certificates (implies --tls)")
    return parser


@dataclass(frozen=True, slots=True)
class TalkOptions:
    target: str
    api_key: str
    agent: str
    wav: Path
    input_format: AudioFormat
    out: Path | None
    events: Path | None
    barge_in_at: float | None
    timeout: float
    tls: bool
    root_certificates: bytes | None


def parse_options(argv: Sequence[str]) -> TalkOptions:
    args = list(argv)
    if args[:1] == ["talk"]:  # tolerate being handed the subcommand itself
        args = args[1:]
    ns = build_parser().parse_args(args)
    api_key = ns.api_key or os.environ.get(API_KEY_ENV, "")
    if not api_key:
        raise _UsageError(f"an API key is required: --api-key or ${API_KEY_ENV}")
    rate = (ns.rate or 16000) if ns.encoding == "linear16" else 8000
    if ns.encoding != "linear16" and ns.rate not in (None, 8000):
        _say(f"note: {ns.encoding} is always 8000 Hz; ignoring --rate {ns.rate}")
    if rate <= 0:
        raise _UsageError(f"invalid --rate {ns.rate}")
    if ns.timeout <= 0:
        raise _UsageError("--timeout must be positive")
    if ns.barge_in_at is not None and ns.barge_in_at < 0:
        raise _UsageError("--barge-in-at must not be negative")
    roots = ns.ca_cert.read_bytes() if ns.ca_cert else None
    return TalkOptions(
        target=ns.target,
        api_key=api_key,
        agent=ns.agent,
        wav=ns.wav,
        input_format=AudioFormat(ns.encoding, rate),
        out=ns.out,
        events=ns.events,
        barge_in_at=ns.barge_in_at,
        timeout=ns.timeout,
        tls=ns.tls or roots is not None,
        root_certificates=roots,
    )


def prepare_speech(path: Path, fmt: AudioFormat) -> bytes:
    """The WAV converted to the wire format: mono, resampled, encoded."""
    pcm, rate = audio.read_wav(path)
    return audio.encode(audio.resample(pcm, rate, fmt.sample_rate_hz), fmt.encoding)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def event_record(event: Event, requested: tuple[AudioFormat, AudioFormat]) -> dict[str, Any]:
    """The JSON line fields of one event (without t_ms); formats the gateway left unset are
    the requested ones, which is what it then uses."""
    match event:
        case SessionStarted():
            return {
                "event": "session_started",
                "session_id": event.session_id,
                "agent": event.agent,
                "agent_version": event.agent_version,
                "input_format": (event.input_format or requested[0]).as_dict(),
                "output_format": (event.output_format or requested[1]).as_dict(),
            }
        case AgentAudio():
            return {"event": "audio", "bytes": len(event.data), "utterance_id": event.utterance_id}
        case Transcript():
            return {
                "event": "transcript",
                "role": event.role,
                "text": event.text,
                "final": event.final,
                "utterance_id": event.utterance_id,
            }
        case Interruption():
            return {"event": "interruption", "utterance_id": event.utterance_id}
        case TurnEvent():
            return {"event": "turn", "kind": event.kind, "utterance_id": event.utterance_id}
        case Latency():
            return {
                "event": "latency",
                "user_to_bot_ms": event.user_to_bot_ms,
                "stt_ms": event.stt_ms,
                "llm_ttfb_ms": event.llm_ttfb_ms,
                "tts_ttfb_ms": event.tts_ttfb_ms,
            }
        case BillingNotice():
            return {
                "event": "billing",
                "kind": event.kind,
                "seconds_left": event.seconds_left,
                "balance_minor": event.balance_minor,
                "currency": event.currency,
            }
        case ErrorEvent():
            return {"event": "error", "message": event.message, "code": event.code}
        case SessionEnded():
            return {
                "event": "session_ended",
                "reason": event.reason,
                "billed_seconds": event.billed_seconds,
                "detail": event.detail,
            }
    raise TypeError(f"unexpected event {event!r}")


class _Call:
    """The state of one talk call, shared by its reader, sender and player tasks."""

    def __init__(
        self,
        conversation: Conversation,
        options: TalkOptions,
        speech: bytes,
        t_open: float,
        events_out: IO[str] | None,
    ) -> None:
        self.conv = conversation
        self.opts = options
        self.speech = speech
        self.t_open = t_open
        self.events_out = events_out
        fmt = options.input_format
        self.chunk_bytes = fmt.bytes_for_ms(CHUNK_MS)
        self.silence = audio.encode(
            bytes(2 * (self.chunk_bytes // fmt.bytes_per_sample)), fmt.encoding
        )
        self.output_format = conversation.output_format
        self.playout = Playout(self.output_format.sample_rate_hz)
        # Conversation milestones, in the order they normally happen.
        self.first_audio_at: float | None = None
        self.greeting_done = False
        self.speech_started = False
        self.speech_done = asyncio.Event()
        self.user_turn_open = False
        self.user_turn_ended = False  # a user_stopped arrived after our speech began
        self.answered = asyncio.Event()
        self.idle = asyncio.Event()  # the playout buffer is empty
        self.idle.set()
        self.ended: SessionEnded | None = None
        self.interrupted: set[int] = set()
        self.interruptions = 0
        self.stop_sending = False
        self.stop_playing = False
        self.send_marks = True

    # JSON lines ---------------------------------------------------------------------------------

    def t_ms(self) -> int:
        return int((time.monotonic() - self.t_open) * 1000)

    def log(self, record: dict[str, Any]) -> None:
        if self.events_out is not None:
            line = {"t_ms": self.t_ms(), **record}
            self.events_out.write(json.dumps(line, ensure_ascii=False) + "\n")

    # Reader -------------------------------------------------------------------------------------

    async def read_events(self) -> None:
        try:
            requested = (self.opts.input_format, self.output_format)
            async for event in self.conv:
                self.log(event_record(event, requested))
                self.on_event(event)
        except VoiceGatewayError:
            pass  # the status is on the conversation; the caller reports it

    def on_event(self, event: Event) -> None:
        match event:
            case SessionStarted():
                if event.output_format and event.output_format != self.output_format:
                    self.output_format = event.output_format
                    self.playout = Playout(event.output_format.sample_rate_hz)
                _say(
                    f"session {event.session_id}: agent {event.agent} v{event.agent_version}, "
                    f"in {self.opts.input_format.label()}, out {self.output_format.label()}"
                )
            case AgentAudio():
                if self.first_audio_at is None:
                    self.first_audio_at = time.monotonic()
                # The gateway stops an interrupted utterance, but a chunk already in flight
                # must not be played after the barge-in either.
                if event.utterance_id and event.utterance_id in self.interrupted:
                    return
                try:
                    pcm = audio.decode(event.data, self.output_format.encoding)
                except audio.AudioError as e:
                    _say(f"skipping malformed agent audio: {e}")
                    return
                self.playout.push(event.utterance_id, pcm)
                if not self.playout.idle:
                    self.idle.clear()
            case Transcript(final=True):
                _say(f"{event.role}: {event.text}")
            case Interruption():
                self.interruptions += 1
                if event.utterance_id:
                    self.interrupted.add(event.utterance_id)
                dropped = self.playout.drop()
                self.idle.set()
                if dropped:
                    _say(f"(interrupted: dropped {dropped} ms of agent audio)")
            case TurnEvent():
                self.on_turn(event.kind)
            case BillingNotice():
                _say(
                    f"billing: {event.kind} ({event.seconds_left} s left, "
                    f"balance {event.balance_minor} {event.currency})"
                )
            case ErrorEvent():
                _say(f"gateway error (non-fatal): {event.message}")
            case SessionEnded():
                self.ended = event
                _say(f"call ended: {event.reason}, billed {event.billed_seconds} s")

    def on_turn(self, kind: str) -> None:
        if kind == "bot_stopped":
            self.greeting_done = True
            if self.speech_started and self.user_turn_ended and not self.user_turn_open:
                self.answered.set()
        elif kind == "user_started" and self.speech_started:
            self.user_turn_open = True
            self.answered.clear()  # a new user turn needs a new answer
        elif kind == "user_stopped" and self.speech_started:
            self.user_turn_open = False
            self.user_turn_ended = True

    # Sender -------------------------------------------------------------------------------------

    def _may_speak(self, now: float) -> bool:
        if self.opts.barge_in_at is None:
            # A caller answers a greeting they have heard: bot_stopped arrives while up to
            # ~200 ms of it is still buffered, and speaking over that tail would make the
            # gateway treat it as a barge-in and cut the greeting short.
            return self.greeting_done and self.playout.idle
        return (
            self.first_audio_at is not None and now >= self.first_audio_at + self.opts.barge_in_at
        )

    async def send_audio(self) -> None:
        """Live-caller audio: a 20 ms chunk every 20 ms, silence except for the WAV."""
        position = 0
        next_at = time.monotonic()
        while not self.stop_sending:
            now = time.monotonic()
            chunk = self.silence
            if not self.speech_done.is_set() and self._may_speak(now):
                if not self.speech_started:
                    self.speech_started = True
                    _say(
                        f"(speaking {len(self.speech) / self.chunk_bytes * CHUNK_MS / 1000:.2f} s)"
                    )
                chunk = self.speech[position : position + self.chunk_bytes]
                position += self.chunk_bytes
                if len(chunk) < self.chunk_bytes:  # pad the last one so every chunk is 20 ms
                    chunk += self.silence[len(chunk) :]
                if position >= len(self.speech):
                    self.speech_done.set()
            try:
                await self.conv.send_audio(chunk)
            except (ConversationClosed, VoiceGatewayError):
                return  # the call ended; the reader reports how
            next_at += TICK_SECS
            delay = next_at - time.monotonic()
            if delay < -MAX_LAG_SECS:
                next_at = time.monotonic()
            elif delay > 0:
                await asyncio.sleep(delay)  # real-time pacing, the behaviour of a live caller

    # Player -------------------------------------------------------------------------------------

    async def play(self) -> None:
        """Drains the playout at real-time rate and reports playback marks."""
        last = time.monotonic()
        while not self.stop_playing:
            await asyncio.sleep(TICK_SECS)  # real-time pacing of the simulated loudspeaker
            now = time.monotonic()
            self.playout.advance(now - last)
            last = now
            marks = self.playout.take_marks()
            if self.playout.idle:
                self.idle.set()
            if not self.send_marks:
                continue
            for utterance_id, played_ms in marks:
                try:
                    await self.conv.send_playback_mark(utterance_id, played_ms)
                except (ConversationClosed, VoiceGatewayError):
                    self.send_marks = False
                    break

    # Orchestration ------------------------------------------------------------------------------

    async def _answered_and_played(self) -> None:
        await self.speech_done.wait()
        while True:
            await self.answered.wait()
            await self.idle.wait()
            if self.answered.is_set():  # still no new user turn while the answer played out
                return

    async def run(self) -> tuple[bool, CallStatus]:
        """Runs the call; returns (timed out, final status)."""
        deadline = self.t_open + self.opts.timeout
        reader = asyncio.create_task(self.read_events(), name="talk-reader")
        sender = asyncio.create_task(self.send_audio(), name="talk-sender")
        player = asyncio.create_task(self.play(), name="talk-player")
        completed = asyncio.create_task(self._answered_and_played(), name="talk-completed")
        timed_out = False
        try:
            done, _ = await asyncio.wait(
                {reader, completed},
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            timed_out = not done
            if timed_out:
                _say(f"timeout: no complete answer within {self.opts.timeout:g} s; hanging up")
            self.stop_sending = True
            await sender
            if reader.done():
                # The gateway ended the call: play out what is buffered, as a phone would,
                # but the stream is closed so no marks can be sent.
                self.send_marks = False
                remaining = deadline - time.monotonic()
                if remaining > 0 and not self.playout.idle:
                    try:
                        await asyncio.wait_for(self.idle.wait(), remaining)
                    except TimeoutError:
                        pass
                self.stop_playing = True
                await player
            else:
                self.stop_playing = True
                await player
                await self.conv.hangup()
                done, _ = await asyncio.wait({reader}, timeout=HANGUP_GRACE_SECS)
                if not done:
                    _say(f"the gateway did not end the call within {HANGUP_GRACE_SECS:g} s")
                    timed_out = True
                    await self.conv.close()
                    await reader
        finally:
            completed.cancel()
            for task in (reader, sender, player, completed):
                if not task.done():
                    task.cancel()
            await asyncio.gather(reader, sender, player, completed, return_exceptions=True)
        status = self.conv.status or CallStatus("UNKNOWN", "the stream ended without a status")
        return timed_out, status


async def _talk(options: TalkOptions, speech: bytes, events_out: IO[str] | None) -> int:
    t_open = time.monotonic()

    def write_status(status: CallStatus) -> None:
        if events_out is not None:
            line = {
                "t_ms": int((time.monotonic() - t_open) * 1000),
                "event": "status",
                "code": status.code,
                "message": status.details,
            }
            if status.reason:
                line["reason"] = status.reason
            events_out.write(json.dumps(line, ensure_ascii=False) + "\n")

    played = b""
    output_rate = options.input_format.sample_rate_hz
    async with VoiceClient(
        options.target,
        options.api_key,
        tls=options.tls,
        root_certificates=options.root_certificates,
    ) as client:
        timed_out = False
        try:
            # Bounded too: connecting to an unreachable host can take longer than the call.
            conversation = await asyncio.wait_for(
                client.converse(options.agent, input_format=options.input_format), options.timeout
            )
        except VoiceGatewayError as e:
            status = e.status
        except TimeoutError:
            status = CallStatus("DEADLINE_EXCEEDED", "the call could not be started in time")
            timed_out = True
        else:
            async with conversation:
                call = _Call(conversation, options, speech, t_open, events_out)
                timed_out, status = await call.run()
                played = bytes(call.playout.played)
                output_rate = call.playout.sample_rate
                _say(
                    f"played {call.playout.played_ms / 1000:.2f} s of agent audio"
                    f" ({call.interruptions} interruption(s))"
                )
    write_status(status)
    if options.out is not None:
        await asyncio.to_thread(audio.write_wav, options.out, played, output_rate)
    if timed_out:
        _say(f"status {status.code}; timed out")
        return EXIT_TIMEOUT
    if not status.ok:
        reason = f" ({status.reason})" if status.reason else ""
        _say(f"call failed: {status.code}{reason}: {status.details}")
        return EXIT_RPC_ERROR
    _say("status OK")
    return EXIT_OK


def _prepare(argv: Sequence[str]) -> tuple[TalkOptions, bytes, IO[str] | None] | int:
    """Everything local before the call (arguments, WAV conversion, output file), or an exit
    status. Runs in a worker thread: converting a long WAV takes a while in pure Python."""
    try:
        options = parse_options(argv)
    except _UsageError as e:
        _say(f"voicegw talk: error: {e}")
        return EXIT_LOCAL_ERROR
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else EXIT_LOCAL_ERROR
    except OSError as e:
        _say(f"voicegw talk: cannot read {e.filename}: {e.strerror}")
        return EXIT_LOCAL_ERROR
    try:
        speech = prepare_speech(options.wav, options.input_format)
    except OSError as e:
        _say(f"voicegw talk: cannot read {options.wav}: {e.strerror}")
        return EXIT_LOCAL_ERROR
    except audio.AudioError as e:
        _say(f"voicegw talk: {options.wav}: {e}")
        return EXIT_LOCAL_ERROR
    events_out = None
    if options.events is not None:
        try:
            # Line-buffered so the lines written so far survive an interrupted run.
            events_out = open(options.events, "w", encoding="utf-8", buffering=1)
        except OSError as e:
            _say(f"voicegw talk: cannot write {options.events}: {e.strerror}")
            return EXIT_LOCAL_ERROR
    return options, speech, events_out


async def run(argv: Sequence[str]) -> int:
    """`voicegw talk` inside a running event loop (for embedding and tests); see `main`."""
    prepared = await asyncio.to_thread(_prepare, list(argv))
    if isinstance(prepared, int):
        return prepared
    options, speech, events_out = prepared
    try:
        return await _talk(options, speech, events_out)
    except OSError as e:
        _say(f"voicegw talk: {e}")
        return EXIT_LOCAL_ERROR
    finally:
        if events_out is not None:
            events_out.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `voicegw talk`; `argv` are the options (a leading "talk" is ignored)."""
    try:
        return asyncio.run(run(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        return 130
