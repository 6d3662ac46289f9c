"""Call latency and capacity benchmark: `python -m tests.bench.calls --n 1,10,25,50 [--write]`.

Starts the benchmark gateway (`tests.bench.gateway_proc`: real transport, VAD, pipeline and
sockets, instant engines) pinned to CPU 0, and for each N runs the load generator
(`tests.bench.loadgen`, its own process) with N concurrent calls pinned to CPU 1. It reads the
gateway's CPU, RSS and per-thread CPU from /proc while the calls run and its VAD decisions and
event-loop lateness from the gateway afterwards, then reports per N:

- added response latency: server VAD stop + the agent's turn wait (`user_speech_timeout`) ->
  first agent audio at the client, and acoustic end of speech -> first agent audio;
- barge-in: server VAD start -> `interruption` at the client, and acoustic onset ->
  `interruption`; audio of the interrupted utterance arriving after it (stale);
- CPU % of a core per call, RSS per call, event-loop lateness p99, client-side underruns.

It stops raising N once the aims are clearly missed. `--write` writes docs/PERFORMANCE.md;
`--profile N` also runs N calls under cProfile (event-loop thread) and reports what dominates.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import pstats
import select
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from tests.bench.doc_sections import carry
from tests.bench.gateway_proc import REPO, proc_cpu_rss

DOC = REPO / "docs" / "PERFORMANCE.md"
# Hand-written findings (what the numbers mean, what was tried), included in the generated doc.
NOTES = Path(__file__).with_name("PERFORMANCE_NOTES.md")

# The aims.
AIM_ADDED_P50 = 0.020
AIM_ADDED_P99 = 0.060
AIM_VAD_TO_INTERRUPTION_P95 = 0.030
AIM_ONSET_TO_INTERRUPTION_P95 = 0.300
AIM_CALLS_PER_CORE = 50


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0-100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


class GatewayProcess:
    def __init__(
        self, cpu: int | None, log: IO[str], log_level: str, extra: list[str] | None = None
    ) -> None:
        cmd = [sys.executable, "-m", "tests.bench.gateway_proc", "--log-level", log_level]
        cmd += extra or []
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
        )
        self.pid = self.proc.pid
        self._lock = threading.Lock()
        self.info = self._read(180.0)

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"benchmark gateway did not answer (exit code {self.proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def command(self, line: str, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        with self._lock:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            return self._read(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _thread_cpu(pid: int) -> dict[int, float]:
    ticks = os.sysconf("SC_CLK_TCK")
    result: dict[int, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return result
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        result[int(tid)] = (int(fields[11]) + int(fields[12])) / ticks
    return result


@dataclass
class Sample:
    t: float
    gw_cpu: float
    gw_rss: int
    lg_cpu: float
    threads: dict[int, float]


@dataclass
class Sampler:
    """Reads the gateway's and load generator's CPU and RSS every 0.25 s while calls run."""

    gateway: GatewayProcess
    loadgen_pid: int
    samples: list[Sample] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        last_names = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                gw_cpu, gw_rss = proc_cpu_rss(self.gateway.pid)
                lg_cpu, _ = proc_cpu_rss(self.loadgen_pid)
            except OSError:
                break
            self.samples.append(Sample(now, gw_cpu, gw_rss, lg_cpu, _thread_cpu(self.gateway.pid)))
            if now - last_names > 2.0:
                last_names = now
                reply = self.gateway.command("threads")
                self.names.update({int(k): v for k, v in reply.get("threads", {}).items()})
            self._stop.wait(0.25)

    def stop(self) -> None:
        self._stop.set()

    def at(self, t: float) -> Sample:
        """The sample nearest to `t`."""
        return min(self.samples, key=lambda s: abs(s.t - t))


def thread_group(name: str | None) -> str:
    if name is None:
        return "native threads (gRPC core, onnxruntime)"
    if name == "MainThread":
        return "event loop (main thread)"
    if name.startswith("ThreadPoolExecutor"):
        return "executor threads (Silero VAD inference)"
    if "_poll_wrapper" in name:
        return "gRPC poller thread"
    return "other Python threads"


def run_loadgen(
    gateway: GatewayProcess, n: int, rounds: int, cpu: int | None, ramp: float
) -> tuple[dict[str, Any], Sampler]:
    cmd = [
        sys.executable,
        "-m",
        "tests.bench.loadgen",
        "--target",
        f"127.0.0.1:{gateway.info['grpc_port']}",
        "--key",
        gateway.info["key"],
        "--agent",
        gateway.info["agent"],
        "--calls",
        str(n),
        "--rounds",
        str(rounds),
        "--ramp-secs",
        str(ramp),
    ]
    if cpu is not None:
        cmd += ["--cpu", str(cpu)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    sampler = Sampler(gateway, proc.pid)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    out, _ = proc.communicate()
    sampler.stop()
    thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed with exit code {proc.returncode}")
    report: dict[str, Any] = json.loads(out)
    return report, sampler


@dataclass
class Row:
    n: int
    rounds: int
    added: list[float]
    acoustic_end: list[float]
    vad_to_int: list[float]
    onset_to_int: list[float]
    onset_by_phrase: dict[str, list[float]]  # the same, per barge-in phrase (voice: text)
    barge_ins: int
    stale_chunks: int
    stale_barge_ins: int
    underruns: int
    errors: list[str]
    cpu_core_pct: float  # of one core, whole gateway
    cpu_per_call_pct: float
    rss_per_call_mib: float
    loop_p99: float
    loop_max: float
    loadgen_core_pct: float
    send_late_p99: float
    window_secs: float
    threads: dict[str, float]  # share of gateway CPU per thread group
    vad_windows_per_batch: float  # Silero windows scored per model run (all calls batched)
    vad_model_us_per_window: float  # time inside the model per window
    vad_model_core_pct: float  # model time over the run, % of a core

    def aims(self) -> dict[str, bool]:
        return {
            "added p50 <= 20 ms": pct(self.added, 50) <= AIM_ADDED_P50,
            "added p99 <= 60 ms": pct(self.added, 99) <= AIM_ADDED_P99,
            "VAD start -> interruption p95 <= 30 ms": pct(self.vad_to_int, 95)
            <= AIM_VAD_TO_INTERRUPTION_P95,
            "onset -> interruption p95 <= 300 ms": pct(self.onset_to_int, 95)
            <= AIM_ONSET_TO_INTERRUPTION_P95,
            "no stale audio": self.stale_chunks == 0,
            "no failed calls": not self.errors,
        }

    def meets_latency_aims(self) -> bool:
        return all(self.aims().values())

    def clearly_missed(self) -> bool:
        return (
            pct(self.added, 99) > 4 * AIM_ADDED_P99
            or pct(self.onset_to_int, 95) > 2 * AIM_ONSET_TO_INTERRUPTION_P95
            or len(self.errors) > max(1, self.n // 10)
            or not self.added
        )


def measure(
    gateway: GatewayProcess,
    n: int,
    rounds: int,
    loadgen_cpu: int | None,
    idle_rss: int,
    turn_wait: float,
) -> Row:
    gateway.command("reset")
    before = gateway.command("stats")
    t0 = time.monotonic()
    ramp = min(2.0, 0.05 * n)
    report, sampler = run_loadgen(gateway, n, rounds, loadgen_cpu, ramp)
    stats = gateway.command("stats")
    run_secs = max(1e-6, time.monotonic() - t0)
    vad_windows = stats["vad_windows"] - before["vad_windows"]
    vad_batches = max(1, stats["vad_batches"] - before["vad_batches"])
    vad_secs = stats["vad_model_secs"] - before["vad_model_secs"]
    raw = Path(tempfile.gettempdir()) / f"voicegw-bench-{os.getpid()}-n{n}.json"
    raw.write_text(json.dumps({"loadgen": report, "gateway": stats}))
    vad: dict[str, list[tuple[str, float]]] = {}
    for call_id, kind, t in stats["vad"]:
        vad.setdefault(call_id, []).append((kind, t))

    added, acoustic, vad_to_int, onset_to_int, errors = [], [], [], [], []
    onset_by_phrase: dict[str, list[float]] = {}
    stale_chunks = stale_barge = barge_total = underruns = 0
    for call in report["calls"]:
        errors += [f"call {call['index']}: {e}" for e in call["errors"]]
        events = vad.get(call["call_id"], [])
        underruns += call["underruns"]
        stale_chunks += call["stale_chunks"]
        for r in call["responses"]:
            stops = [t for k, t in events if k == "stop" and r["speech_end"] < t < r["first"]]
            acoustic.append(r["first"] - r["speech_end"])
            if stops:
                added.append(r["first"] - (stops[-1] + turn_wait))
            else:
                errors.append(f"call {call['index']}: no server VAD stop before an answer")
        for b in call["barge_ins"]:
            barge_total += 1
            stale_barge += b["stale_chunks"] > 0
            onset_to_int.append(b["interruption"] - b["onset"])
            phrase = b["phrase"].split(": ", 1)[-1]
            onset_by_phrase.setdefault(phrase, []).append(b["interruption"] - b["onset"])
            starts = [t for k, t in events if k == "start" and b["onset"] < t <= b["interruption"]]
            if starts:
                vad_to_int.append(b["interruption"] - starts[-1])
            else:
                errors.append(f"call {call['index']}: no server VAD start before interruption")

    # CPU over the window in which every call was up (greeted and still in its script).
    calls = report["calls"]
    firsts = [c["first_audio_t"] for c in calls if c["first_audio_t"]]
    ends = [c["script_end_t"] for c in calls if c["script_end_t"]]
    start, end = (max(firsts), min(ends)) if firsts and ends else (0.0, 0.0)
    if end - start < 3.0 and firsts and ends:
        start, end = min(firsts), max(ends)
    a, b = sampler.at(start), sampler.at(end)
    wall = max(1e-6, b.t - a.t)
    cpu = b.gw_cpu - a.gw_cpu
    # Per thread: its CPU at its last sample in the window (a call's VAD executor thread may
    # end inside it) minus its CPU at the window's start (0 when it started later).
    last: dict[int, float] = {}
    for s in sampler.samples:
        if a.t <= s.t <= b.t:
            last.update(s.threads)
    groups: dict[str, float] = {}
    for tid, value in last.items():
        group = thread_group(sampler.names.get(tid))
        groups[group] = groups.get(group, 0.0) + value - a.threads.get(tid, 0.0)
    total_threads = sum(groups.values()) or 1.0
    peak_rss = max((s.gw_rss for s in sampler.samples if a.t <= s.t <= b.t), default=idle_rss)
    return Row(
        n=n,
        rounds=rounds,
        added=added,
        acoustic_end=acoustic,
        vad_to_int=vad_to_int,
        onset_to_int=onset_to_int,
        onset_by_phrase=onset_by_phrase,
        barge_ins=barge_total,
        stale_chunks=stale_chunks,
        stale_barge_ins=stale_barge,
        underruns=underruns,
        errors=errors,
        cpu_core_pct=100 * cpu / wall,
        cpu_per_call_pct=100 * cpu / wall / n,
        rss_per_call_mib=max(0, peak_rss - idle_rss) / n / 2**20,
        loop_p99=stats["loop_lag"]["p99"],
        loop_max=stats["loop_lag"]["max"],
        loadgen_core_pct=100 * (b.lg_cpu - a.lg_cpu) / wall,
        send_late_p99=report["send_late"]["p99"],
        window_secs=wall,
        threads={k: 100 * v / total_threads for k, v in sorted(groups.items())},
        vad_windows_per_batch=vad_windows / vad_batches,
        vad_model_us_per_window=1e6 * vad_secs / max(1, vad_windows),
        vad_model_core_pct=100 * vad_secs / run_secs,
    )


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.0f}"


def table(rows: list[Row]) -> str:
    head = (
        "| N | added p50/p99 ms | acoustic end p50/p99 ms | VAD start→int. p50/p95 ms | "
        "onset→int. p50/p95 ms | stale | CPU %/call | gateway CPU % | RSS MiB/call | "
        "loop late p99 ms | underruns | failures | aims |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        lines.append(
            f"| {r.n} | {ms(pct(r.added, 50))} / {ms(pct(r.added, 99))} "
            f"| {ms(pct(r.acoustic_end, 50))} / {ms(pct(r.acoustic_end, 99))} "
            f"| {ms(pct(r.vad_to_int, 50))} / {ms(pct(r.vad_to_int, 95))} "
            f"| {ms(pct(r.onset_to_int, 50))} / {ms(pct(r.onset_to_int, 95))} "
            f"| {r.stale_chunks} in {r.stale_barge_ins}/{r.barge_ins} "
            f"| {r.cpu_per_call_pct:.1f} | {r.cpu_core_pct:.0f} | {r.rss_per_call_mib:.1f} "
            f"| {r.loop_p99 * 1000:.1f} | {r.underruns} | {len(r.errors)} "
            f"| {'met' if r.meets_latency_aims() else 'missed'} |"
        )
    return head + "\n".join(lines) + "\n"


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "?"

    return {
        "CPU": model,
        "CPUs": str(os.cpu_count()),
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "pipecat-ai": version("pipecat-ai"),
        "grpcio": version("grpcio"),
        "onnxruntime": version("onnxruntime"),
    }


IDLE_FUNCTIONS = ("<method 'poll' of 'select.epoll' objects>",)


def profile_summary(path: Path, top: int = 25) -> tuple[list[tuple[str, float]], list[str]]:
    """Busy event-loop time by package, and the top functions by own time (shares of the busy
    time: the loop's wait in epoll is idle and left out)."""
    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = {
        key: value
        for key, value in stats.stats.items()  # type: ignore[attr-defined]
        if key[2] not in IDLE_FUNCTIONS
    }
    total = sum(v[2] for v in raw.values()) or 1.0
    by_package: dict[str, float] = {}
    for (filename, _, _), value in raw.items():
        package = _package(filename)
        by_package[package] = by_package.get(package, 0.0) + value[2]
    packages = sorted(((k, 100 * v / total) for k, v in by_package.items()), key=lambda x: -x[1])
    functions = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]
    lines = []
    for (f, line, fn), v in functions:
        cumulative = 100 * v[3] / total
        # The loop's own frames (asyncio, selectors, Context.run) contain the idle wait.
        package = _package(f)
        loop_level = package.startswith("stdlib.") or package.startswith("C functions")
        shown = "    - " if loop_level or cumulative > 100 else f"{cumulative:5.1f}%"
        lines.append(
            f"{100 * v[2] / total:5.1f}% own, {shown} cum.  {_package(f)}:{fn} "
            f"({Path(f).name}:{line})"
        )
    return packages, lines


def _package(filename: str) -> str:
    if filename.startswith("~") or filename.startswith("<"):
        return "C functions (builtins, extension methods)"
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        if rest and rest[0] == "pipecat" and len(rest) > 2:
            return f"pipecat.{rest[1]}"
        return rest[0].removesuffix(".py") if rest else filename
    try:
        rel = path.relative_to(REPO)
        return rel.parts[0]
    except ValueError:
        pass
    if "python3" in filename:
        return "stdlib." + (parts[-2] if parts[-2] != "python3.11" else path.stem)
    return filename


def write_doc(
    rows: list[Row],
    turn: dict[str, Any],
    args: argparse.Namespace,
    profile: tuple[int, list[tuple[str, float]], list[str], Row] | None,
) -> None:
    info = machine()
    met = [r.n for r in rows if r.meets_latency_aims()]
    best = max(met) if met else None
    onset_aim = "onset -> interruption p95 <= 300 ms"
    met_gateway = [r.n for r in rows if all(ok for k, ok in r.aims().items() if k != onset_aim)]
    best_gateway = max(met_gateway) if met_gateway else None
    lines = [
        "# Performance",
        "",
        "Generated by `make bench` (`python -m tests.bench.calls"
        f" {' '.join(sys.argv[1:])}`) on {time.strftime('%Y-%m-%d')}."
        + (" **Preliminary**: small N only, on a shared machine." if args.preliminary else ""),
        "",
        "## What is measured",
        "",
        "The gateway runs in its own process with zero-latency fake STT/LLM/TTS "
        "(`tests/bench/fake_engines.py`) but the real gRPC transport, Silero VAD, turn "
        "strategies, Pipecat pipeline, Session, PostgreSQL writes and sockets. The load generator "
        "(`tests/bench/loadgen.py`) is a separate process with one gRPC channel per call, "
        "sending 20 ms linear16/16 kHz chunks in real time; its speech is espeak-ng, with "
        "acoustic onset/end taken from the samples. Each call: barge in over the agent 0.8–1.6 s "
        "after it starts speaking, then (after the answer plays out) ask a question; repeated "
        "for the rounds listed per N below.",
        "",
        "- **added**: server VAD stop + the turn wait (`user_speech_timeout`) → first agent "
        "audio at the client; what the gateway adds beyond the policy's deliberate waits.",
        "- **acoustic end**: last speech sample → first agent audio (includes VAD stop_secs, "
        "the turn wait and the 20 ms packetisation).",
        "- **VAD start→int.**: server VAD start decision → `interruption` at the client.",
        "- **onset→int.**: first speech sample → `interruption` at the client (includes the VAD's "
        "start_secs and Silero's confidence ramp).",
        "- **stale**: chunks of an interrupted utterance arriving after its `interruption`, "
        "in how many of the barge-ins.",
        "- **CPU %/call**: gateway process CPU (all threads) over the window in which all calls "
        "were up, per call, in % of one core; **gateway CPU %**: the whole process.",
        "- **RSS MiB/call**: (peak RSS during the run − idle RSS after a warm-up call) / N.",
        "- **loop late p99**: lateness of a 20 ms event-loop ticker in the gateway.",
        "- **underruns**: agent audio arriving > 40 ms after a real-time loudspeaker needed it.",
        "",
        "Server times are `time.monotonic()` in the gateway (VAD decisions as the STT sees "
        "them); client times are `time.monotonic()` in the load generator; both are the "
        "machine's CLOCK_MONOTONIC.",
        "",
        "## Machine and settings",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    pinning = "no pinning" if args.no_pin else "gateway pinned to CPU 0, load generator to CPU 1"
    lines += [
        f"- {pinning}; one gateway process; logs at {args.log_level} (JSON, as `voicegw serve`)"
        + (f"; gateway options {' '.join(args.gateway_arg)}" if args.gateway_arg else ""),
        "- agent: the built-in secretary; turn settings "
        + ", ".join(f"{k} {v}" for k, v in turn.items()),
        "",
        "## Results",
        "",
        table(rows),
        "Aims: added p50 ≤ 20 ms and p99 ≤ 60 ms; VAD start → interruption p95 ≤ 30 ms; "
        "onset → interruption p95 ≤ 300 ms; no stale audio; ≥ 50 calls per core.",
        "",
    ]
    for r in rows:
        missed = [k for k, ok in r.aims().items() if not ok]
        lines.append(
            f"- N={r.n}: {r.rounds} rounds per call, {len(r.added)} answers, "
            f"{r.barge_ins} barge-ins, window "
            f"{r.window_secs:.0f} s; "
            + ("all latency aims met" if not missed else "missed: " + ", ".join(missed))
            + f"; load generator {r.loadgen_core_pct:.0f}% of its core, send lateness p99 "
            f"{r.send_late_p99 * 1000:.1f} ms"
            + (f"; failures: {'; '.join(r.errors[:3])}" if r.errors else "")
        )
    projected = [100 / r.cpu_per_call_pct for r in rows if r.cpu_per_call_pct > 0]
    lines += [
        "",
        f"**Largest N per core meeting all latency aims: {best if best is not None else 'none'}** "
        f"(of N tried: {', '.join(str(r.n) for r in rows)}). Meeting every aim but acoustic "
        f"onset → interruption (which the barge-in phrases' acoustics decide at any N, see the "
        f"per-phrase table): **{best_gateway if best_gateway is not None else 'none'}**. "
        "CPU per call projects to "
        + (f"~{min(projected):.0f}–{max(projected):.0f}" if projected else "?")
        + f" calls per core at 100% of a core; the aim is ≥ {AIM_CALLS_PER_CORE}.",
        "",
        "## What dominates the cost",
        "",
        "Gateway CPU by thread over the measured window (share of the process's CPU):",
        "",
        "| N | " + " | ".join(sorted({g for r in rows for g in r.threads})) + " |",
        "|---|" + "---|" * len({g for r in rows for g in r.threads}),
    ]
    groups = sorted({g for r in rows for g in r.threads})
    for r in rows:
        lines.append(
            f"| {r.n} | " + " | ".join(f"{r.threads.get(g, 0.0):.0f}%" for g in groups) + " |"
        )
    phrases = sorted({p for r in rows for p in r.onset_by_phrase})
    lines += [
        "",
        "Acoustic onset → `interruption` by barge-in phrase (all voices), p50 / max ms: the VAD "
        "needs `vad_start_secs` of continuous speech, so how a phrase begins decides most of it:",
        "",
        "| N | " + " | ".join(f"“{p}”" for p in phrases) + " |",
        "|---|" + "---|" * len(phrases),
    ]
    for r in rows:
        cells = []
        for p in phrases:
            values = r.onset_by_phrase.get(p, [])
            cells.append(f"{ms(pct(values, 50))} / {ms(max(values) if values else math.nan)}")
        lines.append(f"| {r.n} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Silero VAD (one model shared by all calls, windows ready together scored in one run):",
        "",
        "| N | windows per model run | model µs per window | model time, % of a core |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.n} | {r.vad_windows_per_batch:.1f} | {r.vad_model_us_per_window:.0f} | "
            f"{r.vad_model_core_pct:.1f}% |"
        )
    if profile is not None:
        n, packages, functions, prow = profile
        lines += [
            "",
            f"cProfile of the event-loop thread at N={n} (profiling inflates the time; shares "
            f"are what matters; that run's CPU was {prow.cpu_per_call_pct:.1f}% of a core per "
            "call). Own time by package:",
            "",
            "| package | share of event-loop time |",
            "|---|---|",
        ]
        lines += [f"| {p} | {share:.1f}% |" for p, share in packages[:15]]
        lines += ["", "Top functions by own time:", "", "```", *functions, "```"]
    if NOTES.exists():
        lines += ["", NOTES.read_text().strip()]
    lines += [
        "",
        "## How to run",
        "",
        "`make bench` runs the engine benchmarks, this one (N = 1, 5, 10, 15, 25, 50, every "
        "N even past the aims) and the ledger's, and rewrites this file; `make bench "
        "BENCH_ARGS=--calls-only` runs only this one (~7 minutes), `--ledger-only` only the "
        "ledger's (~1 minute), each keeping the other's section. Alone: `.venv/bin/python -m "
        "tests.bench.calls --n 1,10,25,50 --write [--all] [--profile 10] "
        "[--gateway-arg=--vad-start-secs=0.1]` (without `--all` it stops once the aims are "
        "clearly missed). Run it on an otherwise idle machine with at least 2 CPUs.",
        "",
    ]
    # Sections other benchmarks own (the ledger's) are carried over, not regenerated here.
    DOC.write_text(carry(DOC.read_text() if DOC.exists() else "", "\n".join(lines)))
    print(f"wrote {DOC}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="1,10,25,50", help="concurrent calls, comma-separated")
    parser.add_argument("--rounds", type=int, default=0, help="script rounds per call (0: auto)")
    parser.add_argument("--write", action="store_true", help="write docs/PERFORMANCE.md")
    parser.add_argument("--preliminary", action="store_true", help="mark the doc preliminary")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--profile", type=int, default=0, help="also profile a run with N calls")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--all", action="store_true", help="run every N even past the aims")
    parser.add_argument(
        "--gateway-arg",
        action="append",
        default=[],
        help="extra argument for tests.bench.gateway_proc (repeatable), e.g. --vad-start-secs=0.1",
    )
    args = parser.parse_args()
    ns = [int(x) for x in args.n.split(",") if x.strip()]
    gw_cpu, lg_cpu = (None, None) if args.no_pin else (0, 1)
    if not args.no_pin and len(os.sched_getaffinity(0)) < 2:
        print("fewer than 2 CPUs: running without pinning", file=sys.stderr)
        gw_cpu = lg_cpu = None
    if lg_cpu is not None:
        os.sched_setaffinity(0, {lg_cpu})  # the orchestrator's /proc reading stays off CPU 0

    log_path = Path(tempfile.gettempdir()) / f"voicegw-bench-gateway-{os.getpid()}.log"
    rows: list[Row] = []
    profile = None
    with open(log_path, "w") as log:
        gateway = GatewayProcess(gw_cpu, log, args.log_level, args.gateway_arg)
        try:
            turn = gateway.info["turn"]
            turn_wait = float(turn["user_speech_timeout"])
            print(f"gateway pid {gateway.pid}, logs in {log_path}; warm-up call", flush=True)
            run_loadgen(gateway, 1, 1, lg_cpu, 0.0)
            time.sleep(1.0)
            idle_rss = proc_cpu_rss(gateway.pid)[1]
            for n in ns:
                rounds = args.rounds or max(2, min(6, math.ceil(24 / n)))
                print(f"N={n}: {rounds} rounds per call ...", flush=True)
                row = measure(gateway, n, rounds, lg_cpu, idle_rss, turn_wait)
                rows.append(row)
                print(table([row]), flush=True)
                print(
                    f"  VAD: {row.vad_windows_per_batch:.1f} windows per model run, "
                    f"{row.vad_model_us_per_window:.0f} us per window, "
                    f"{row.vad_model_core_pct:.1f}% of a core; threads: "
                    + ", ".join(f"{k} {v:.0f}%" for k, v in row.threads.items()),
                    flush=True,
                )
                if row.clearly_missed() and not args.all:
                    print(f"aims clearly missed at N={n}; not going higher", flush=True)
                    break
            if args.profile:
                n = args.profile
                gateway.command("profile-start")
                row = measure(gateway, n, 2, lg_cpu, idle_rss, turn_wait)
                prof = Path(tempfile.gettempdir()) / f"voicegw-bench-{os.getpid()}.prof"
                gateway.command(f"profile-stop {prof}", timeout=120)
                packages, functions = profile_summary(prof)
                profile = (n, packages, functions, row)
                print(f"profile at N={n} ({prof}):")
                for name, share in packages[:15]:
                    print(f"  {share:5.1f}%  {name}")
                print("\n".join(functions))
        finally:
            gateway.close()
    print("\n" + table(rows))
    if args.write and rows:
        write_doc(rows, turn, args, profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
