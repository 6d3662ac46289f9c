"""One call from start to end, the same for every door (DESIGN §4).

identify → admit → converse → end. The Session owns the call's pipeline, its runner, its record
and its ending: whatever ends the call (the caller, the agent, an error, a vanished client, a
shutdown), the pipeline is stopped, the call row with its transcript and message is written once,
and the caller is told how it ended.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from loguru import logger
from pipecat.frames.frames import EndFrame, LLMRunFrame, TTSSpeakFrame
from pipecat.observers.user_bot_latency_observer import UserBotLatencyObserver
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.workers.runner import WorkerRunner

from gateway import metrics
from gateway.call_metering import CallMetering, MeterHooks
from gateway.config import Settings
from gateway.logs import call_context, mask_phone
from gateway.rate_guard import DEFAULT_MAX_SPEED, DEFAULT_WINDOW_SECS, InputRateGuard
from pipelines.agent_config import AgentConfig
from pipelines.builder import Engines, build_call_pipeline
from pipelines.recorder import CallRecorder, RecordedMessage, TurnRecord
from pipelines.utterances import UtteranceRegistry
from transports.door import Door, Liveness
from transports.events import (
    EndReason,
    EndRequest,
    LatencyEvent,
    SessionEndedEvent,
    SessionEvent,
    SessionStartedEvent,
)

# After the watchdog has cancelled the runner and its task, how long it still waits for them.
# A pipeline that swallows cancellation (an engine that catches CancelledError and keeps
# waiting, a processor blocked on a lost reply) is abandoned after this: the call is stored and
# the caller told, whatever the pipeline does.
ABANDON_WAIT_SECS = 2.0


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How every call treats its caller and its ending, whatever the door (from Settings)."""

    # No message from the client for this long ends the call with client_timeout.
    inbound_timeout_secs: float = 10.0
    # How long an ending pipeline may take before the watchdog cancels it (Pipecat's EndFrame
    # wait has no timeout, #4647). A graceful end plays out the last words first.
    graceful_end_timeout_secs: float = 30.0
    cancel_end_timeout_secs: float = 5.0
    # Caller audio faster than this over the window ends the call (gateway/rate_guard.py).
    input_max_speed: float = DEFAULT_MAX_SPEED
    input_speed_window_secs: float = DEFAULT_WINDOW_SECS

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionPolicy:
        return cls(
            inbound_timeout_secs=settings.inbound_timeout_secs,
            graceful_end_timeout_secs=settings.end_graceful_timeout_secs,
            cancel_end_timeout_secs=settings.end_cancel_timeout_secs,
            input_max_speed=settings.input_max_speed,
            input_speed_window_secs=settings.input_speed_window_secs,
        )


@dataclass(frozen=True, slots=True)
class CallIdentity:
    """Who is calling whom: the result of the identify step."""

    org_id: uuid.UUID
    org_name: str
    agent_id: uuid.UUID
    agent_name: str
    agent_version: int
    agent: AgentConfig
    caller_number: str = ""
    caller_name: str = ""
    caller_metadata: dict[str, str] = field(default_factory=dict)
    language: str = ""


@dataclass(slots=True)
class CallSummary:
    """Everything stored about a call when it ends."""

    call_id: uuid.UUID
    identity: CallIdentity
    door: str
    input_format: str
    output_format: str
    started_at: datetime
    ended_at: datetime
    duration_ms: int
    billed_seconds: int
    end_reason: EndReason
    end_detail: str
    latency: dict[str, Any]
    turns: list[TurnRecord]
    message: RecordedMessage | None


class CallStore(Protocol):
    """Persistence the Session needs; transports never see it."""

    async def call_started(
        self,
        call_id: uuid.UUID,
        identity: CallIdentity,
        door: str,
        input_format: str,
        output_format: str,
        started_at: datetime,
    ) -> None: ...

    async def call_finished(self, summary: CallSummary) -> None: ...


DoorFactory = Callable[["Session", UtteranceRegistry], Door]


class Session:
    """One call. Doors talk to it through the `CallControl` methods."""

    def __init__(
        self,
        identity: CallIdentity,
        engines: Engines,
        store: CallStore,
        *,
        door_name: str,
        input_format: str,
        output_format: str,
        output_rate: int,
        policy: SessionPolicy | None = None,
        on_finished: Callable[[Session], None] | None = None,
        call_id: uuid.UUID | None = None,
    ) -> None:
        self.call_id = call_id or uuid.uuid4()
        self.identity = identity
        self.door_name = door_name
        self._engines = engines
        self._store = store
        self._input_format = input_format
        self._output_format = output_format
        self._output_rate = output_rate
        self._on_finished = on_finished
        self._end: asyncio.Future[EndRequest] = asyncio.get_running_loop().create_future()
        self._door: Door | None = None
        self._latencies_ms: list[int] = []
        self._pending_latency_ms: int | None = None
        self._engine_names: dict[str, str] = {}
        self.utterances = UtteranceRegistry()
        self.context: LLMContext | None = None  # the call's LLM context, for inspection
        self.policy = policy or SessionPolicy()
        self._inbound_timeout = self.policy.inbound_timeout_secs
        self._graceful_end_timeout = self.policy.graceful_end_timeout_secs
        self._cancel_end_timeout = self.policy.cancel_end_timeout_secs
        self._rate_guard: InputRateGuard | None = None  # started with the call (see _run)
        self.last_inbound = time.monotonic()
        self.last_inbound_audio: float | None = None
        self.last_inbound_signal: float | None = None
        self.first_inbound: float | None = None
        self.outcome: EndRequest | None = None
        # A pipeline task that ignored cancellation and was left running (see `_abandon`).
        self.abandoned: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()  # set once the call is stored and the door closed
        # Set by the SessionManager once billing admitted the call (None: not metered).
        self.metering: CallMetering | None = None
        self._spoken: set[asyncio.Task[None]] = set()

    # CallControl ------------------------------------------------------------------------------

    def request_end(self, request: EndRequest) -> None:
        """First request wins: the reason a call ended is what ended it first."""
        if not self._end.done():
            self._end.set_result(request)

    def on_playback_mark(self, utterance_id: int, played_ms: int) -> None:
        self.utterances.client_mark(utterance_id, played_ms)

    def on_barge_in(self, vad_to_interruption_secs: float) -> None:
        metrics.BARGE_IN_LATENCY.labels(self.door_name).observe(vad_to_interruption_secs)

    def on_inbound_activity(self, *, audio_secs: float = 0.0) -> None:
        now = time.monotonic()
        self.last_inbound = now
        if self.first_inbound is None:
            self.first_inbound = now
        if audio_secs <= 0:
            self.last_inbound_signal = now
            return
        self.last_inbound_audio = now
        if self._rate_guard is not None:
            speed = self._rate_guard.feed(now, audio_secs)
            if speed is not None:
                self.request_end(
                    EndRequest(
                        EndReason.ERROR,
                        f"audio arrives faster than real time ({speed:.1f}x)",
                        status_code="INVALID_ARGUMENT",
                    )
                )

    async def _watch_inbound(self, liveness: Liveness | None) -> None:
        """Ends the call when its client has gone quiet: a frozen process (SIGSTOP, a hung
        app) keeps its TCP connection open (the kernel still acknowledges), so only the
        silence tells it apart from a live one. A door with its own `Liveness` (a browser
        page that pings) adds tighter limits: aiortc alone notices a vanished peer after ~30 s."""
        started = time.monotonic()
        while not self._end.done():
            expired, wait = self._silence(time.monotonic(), started, liveness)
            if expired:
                self.request_end(EndRequest(EndReason.CLIENT_TIMEOUT, expired, caller_gone=True))
                return
            await asyncio.sleep(wait)

    def _silence(
        self, now: float, started: float, liveness: Liveness | None
    ) -> tuple[str | None, float]:
        """The first silence limit exceeded (its detail), else how long until one could be."""
        first = self.first_inbound
        limits: list[tuple[float, float, str]] = []
        if liveness is not None and first is None:
            # The first message of this call is still to come (ICE and DTLS take a moment).
            limits.append((started, liveness.connect_secs, "no contact from the client"))
        else:
            limits.append((self.last_inbound, self._inbound_timeout, "no message from the client"))
            if liveness is not None:
                assert first is not None
                signal = self.last_inbound_signal or first
                audio = self.last_inbound_audio or first
                limits.append((signal, liveness.signal_secs, "no signal from the client"))
                limits.append((audio, liveness.audio_secs, "no audio from the client"))
        wait = math.inf
        for since, limit, what in limits:
            left = since + limit - now
            if left <= 0:
                return f"{what} for {limit:g} s", 0.0
            wait = min(wait, left)
        return None, wait

    # Lifecycle --------------------------------------------------------------------------------

    def _emit(self, event: SessionEvent) -> None:
        if self._door is not None:
            self._door.send_event(event)

    def _on_agent_end(self, reason: str) -> None:
        self.request_end(EndRequest(EndReason(reason), "agent ended the call"))

    async def run(self, make_door: DoorFactory) -> EndRequest:
        """Runs the call to its end and stores it; returns what ended it."""
        with call_context(str(self.call_id)):
            try:
                return await self._run(make_door)
            finally:
                self.finished.set()
                if self._on_finished is not None:
                    self._on_finished(self)

    async def _run(self, make_door: DoorFactory) -> EndRequest:
        identity = self.identity
        utterances = self.utterances
        door = make_door(self, utterances)
        # Started with the door: audio buffered while the call is set up is our delay.
        self._rate_guard = InputRateGuard(
            self.policy.input_max_speed,
            self.policy.input_speed_window_secs,
            started_at=time.monotonic(),
        )
        self._door = door
        started_at = datetime.now(UTC)
        try:
            await self._store.call_started(
                self.call_id,
                identity,
                door.name,
                self._input_format,
                self._output_format,
                started_at,
            )
        except Exception as failure:  # noqa: BLE001 - no call row: the call must not go on
            # Nothing was said to the caller yet; release the door and the money held for it.
            logger.exception("storing the call's start failed; ending it")
            request = EndRequest(EndReason.ERROR, f"internal error: {type(failure).__name__}")
            self.request_end(request)
            self.outcome = request
            self._door = None
            if self.metering is not None:
                await asyncio.shield(self.metering.finish(0, request.reason.value))
            await door.abort()
            return request
        metrics.CALLS_STARTED.labels(door.name).inc()
        metrics.CALLS_ACTIVE.labels(door.name).inc()
        logger.info(
            f"call started: org={identity.org_name} agent={identity.agent_name} "
            f"v{identity.agent_version} door={door.name} "
            f"caller={mask_phone(identity.caller_number) if identity.caller_number else '-'}"
        )
        # Billable time starts when the caller is told the call started (DESIGN §4, issue 4).
        self._emit(
            SessionStartedEvent(
                str(self.call_id),
                identity.agent_name,
                identity.agent_version,
                self._input_format,
                self._output_format,
            )
        )
        t_start = time.monotonic()
        recorder: CallRecorder | None = None
        try:
            call = build_call_pipeline(
                identity.agent,
                self._engines,
                door.transport,
                output_rate=self._output_rate,
                utterances=utterances,
                conversation_id=str(self.call_id),
            )
            self.context = call.context
            recorder = CallRecorder(
                stt=call.stt,
                tts=call.tts,
                output=door.transport.output(),
                user_aggregator=call.user_aggregator,
                utterances=utterances,
                emit=self._emit,
                on_agent_end=self._on_agent_end,
            )
            self._engine_names = {call.stt.name: "stt", call.llm.name: "llm", call.tts.name: "tts"}
            latency = UserBotLatencyObserver()
            latency.add_event_handler("on_latency_measured", self._on_latency)
            latency.add_event_handler("on_latency_breakdown", self._on_latency_breakdown)
            call.worker.add_observer(recorder)
            call.worker.add_observer(latency)
            await call.worker.queue_frame(LLMRunFrame())  # the greeting
            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(call.worker)
            run_task = asyncio.create_task(runner.run(), name=f"call-{self.call_id}")
            if self.metering is not None:
                self.metering.start(t_start, self._meter_hooks(call.worker))
            self.last_inbound = time.monotonic()
            watch = asyncio.create_task(
                self._watch_inbound(door.liveness), name=f"inbound-{self.call_id}"
            )
            waiters: set[asyncio.Future[Any]] = {run_task, self._end}
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                watch.cancel()
            if self._end.done():
                request = self._end.result()
            else:
                error = run_task.exception() if not run_task.cancelled() else None
                request = EndRequest(EndReason.ERROR, f"pipeline stopped: {error or 'finished'}")
                self.request_end(request)
            await self._stop_pipeline(request, call.worker, runner, run_task)
        except asyncio.CancelledError:
            request = EndRequest(EndReason.ERROR, "session task cancelled")
            self.request_end(request)
            raise
        except Exception as e:  # noqa: BLE001 - any failure still ends the call properly
            logger.exception("call failed")
            request = EndRequest(EndReason.ERROR, f"internal error: {type(e).__name__}")
            self.request_end(request)
        finally:
            self.outcome = self._end.result() if self._end.done() else None
            await self._finish(door, recorder, started_at, t_start)
        return self.outcome or request

    def _meter_hooks(self, worker: Any) -> MeterHooks:
        def say(text: str) -> None:
            # Not part of the conversation the agent reasons about: a notice from the operator.
            frame = TTSSpeakFrame(text, append_to_context=False)
            task = asyncio.create_task(worker.queue_frame(frame))
            self._spoken.add(task)
            task.add_done_callback(self._spoken.discard)

        return MeterHooks(notify=self._emit, say=say, end=self.request_end)

    async def _stop_pipeline(
        self,
        request: EndRequest,
        worker: Any,
        runner: WorkerRunner,
        run_task: asyncio.Task[None],
    ) -> None:
        if run_task.done():
            return
        if request.reason is EndReason.AGENT_GOODBYE:
            # EndFrame is ordered: the closing line plays out before the pipeline stops.
            await worker.queue_frame(EndFrame())
            timeout = self._graceful_end_timeout
        else:
            await worker.cancel(reason=request.reason.value)
            timeout = self._cancel_end_timeout
        try:
            await asyncio.wait_for(asyncio.shield(run_task), timeout)
        except TimeoutError:
            logger.warning(f"pipeline did not stop within {timeout:g} s; cancelling it")
            await self._abandon(runner, run_task)
        except Exception as e:  # noqa: BLE001 - the pipeline's own failure is logged, not raised
            logger.warning(f"pipeline ended with {type(e).__name__}: {e}")

    async def _abandon(self, runner: WorkerRunner, run_task: asyncio.Task[None]) -> None:
        """Cancels the runner and its task, waiting a bounded time: the call row must be
        written even when the pipeline ignores cancellation (its task is then left behind,
        logged, rather than holding the call and its capacity forever)."""
        await runner.cancel()
        run_task.cancel()
        done, _ = await asyncio.wait({run_task}, timeout=ABANDON_WAIT_SECS)
        if not done:
            logger.error(
                f"pipeline ignored cancellation for {ABANDON_WAIT_SECS:g} s; abandoning it "
                "and ending the call anyway"
            )
            run_task.add_done_callback(_consume_outcome)
            self.abandoned = run_task
            return
        _consume_outcome(run_task)

    async def _finish(
        self,
        door: Door,
        recorder: CallRecorder | None,
        started_at: datetime,
        t_start: float,
    ) -> None:
        request = self.outcome or EndRequest(EndReason.ERROR, "unknown")
        end_mono = time.monotonic()
        if request.reason is EndReason.CLIENT_TIMEOUT:
            # A client that went silent is billed to its last audio, not to when we noticed.
            end_mono = min(end_mono, self.last_inbound_audio or t_start)
        duration_ms = max(0, int((end_mono - t_start) * 1000))
        billed_seconds = math.ceil(duration_ms / 1000)
        if self.metering is not None:
            # Finalized before session_ended, so the caller is told what the plan billed.
            try:
                bill = await asyncio.shield(self.metering.finish(duration_ms, request.reason.value))
            except Exception:  # noqa: BLE001 - the call is still stored and its door closed
                logger.exception("finalizing the call's billing failed")
                bill = None
            if bill is not None:
                billed_seconds = bill.billed_seconds
        if recorder is not None:
            recorder.finish()
        summary = CallSummary(
            call_id=self.call_id,
            identity=self.identity,
            door=door.name,
            input_format=self._input_format,
            output_format=self._output_format,
            started_at=started_at,
            ended_at=datetime.now(UTC),
            duration_ms=duration_ms,
            billed_seconds=billed_seconds,
            end_reason=request.reason,
            end_detail=request.detail,
            latency=self._latency_summary(recorder),
            turns=recorder.turns if recorder else [],
            message=recorder.message if recorder else None,
        )
        try:
            await asyncio.shield(self._store.call_finished(summary))
        except Exception:  # noqa: BLE001 - a failed write is logged; the caller still hears the end
            logger.exception("storing the call failed")
        metrics.CALLS_ACTIVE.labels(door.name).dec()
        metrics.CALLS_ENDED.labels(door.name, request.reason.value).inc()
        logger.info(
            f"call ended: reason={request.reason.value} duration_ms={duration_ms} "
            f"turns={len(summary.turns)}"
        )
        self._emit(SessionEndedEvent(request.reason, billed_seconds, request.detail))
        self._door = None
        if request.caller_gone:
            await door.abort()
        else:
            await door.close()

    async def _on_latency(self, _observer: Any, latency_secs: float) -> None:
        ms = int(latency_secs * 1000)
        self._latencies_ms.append(ms)
        self._pending_latency_ms = ms
        metrics.TURN_LATENCY.labels(self.door_name).observe(latency_secs)

    async def _on_latency_breakdown(self, _observer: Any, breakdown: Any) -> None:
        """One latency report per answered turn, with each engine's time to first byte."""
        total = self._pending_latency_ms
        self._pending_latency_ms = None
        if total is None:
            return  # the greeting: measured from connect, not from the caller's speech
        ttfb = {"stt": 0, "llm": 0, "tts": 0}
        for entry in breakdown.ttfb:
            engine = self._engine_names.get(entry.processor)
            if engine is not None:
                ttfb[engine] = int(entry.duration_secs * 1000)
        self._emit(
            LatencyEvent(
                user_to_bot_ms=total,
                stt_ms=ttfb["stt"],
                llm_ttfb_ms=ttfb["llm"],
                tts_ttfb_ms=ttfb["tts"],
            )
        )

    def _latency_summary(self, recorder: CallRecorder | None) -> dict[str, Any]:
        values = self._latencies_ms
        summary: dict[str, Any] = {"turns": len(values)}
        if values:
            summary["user_to_bot_ms_p50"] = int(statistics.median(values))
            summary["user_to_bot_ms_max"] = max(values)
            summary["user_to_bot_ms"] = values
        if recorder is not None:
            summary["unrecognised_turns"] = recorder.unrecognised_turns
        return summary


def _consume_outcome(task: asyncio.Task[None]) -> None:
    """Logs how a cancelled pipeline task ended (and marks its exception retrieved)."""
    if not task.cancelled() and task.exception() is not None:
        logger.warning(f"cancelled pipeline ended with {task.exception()!r}")
