#!/usr/bin/env node
/*
 * End-to-end drive of the voicegw widget in a real headless Chromium, over real WebRTC.
 *
 *   node clients/web/tests/widget_e2e.mjs --url http://127.0.0.1:8080/demo \
 *        --wav question.wav --expect "We are open" --screenshot docs/widget.png
 *
 * The microphone is Chromium's fake capture device playing --wav once (%noloop); the page is the
 * demo page with the widget. The driver clicks Call, waits for the call to connect, measures the
 * agent audio that reached the browser (inbound-rtp energy from getStats(), which Chromium only
 * computes for a remote track that is actually played, as the widget's <audio> element does),
 * waits for an agent caption containing --expect, takes a screenshot mid-call, clicks Hang up and
 * waits for the ended state. It prints ONE JSON object on stdout (exit 0 when every step
 * happened, 1 with {"ok": false, "error": ...} otherwise); the caller judges the numbers.
 *
 * Nothing here is mocked. The init script only observes: it keeps a reference to each
 * RTCPeerConnection (for getStats), records what the page sends and receives on data channels,
 * and reports the widget's data-state changes to this process, so every wait is on an event.
 *
 * Why these Chromium flags: Debian's chromium (Playwright's own browser download cannot be used
 * here); this machine's network is closed, so everything that phones home (QUIC, component
 * updates, sync, background networking) is off, or Chromium stalls on refused connections; a fresh
 * --user-data-dir so no profile state leaks between runs; autoplay without a gesture so the
 * agent's audio element plays; the fake UI grants the microphone as a visitor would.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";

const { values: opts } = parseArgs({
  options: {
    url: { type: "string" },
    wav: { type: "string" },
    expect: { type: "string" },
    screenshot: { type: "string" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    // "call" (the whole call), or a call that cannot start: "mic-refused" (the visitor denies
    // the microphone) or "refused" (the gateway answers the token request with an error).
    scenario: { type: "string", default: "call" },
    "timeout-ms": { type: "string", default: "90000" },
  },
});

const t0 = Date.now();
const result = { ok: false, states: [] };

function finish(code) {
  result.elapsed_ms = Date.now() - t0;
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(code);
}

function fail(message) {
  result.error = message;
  finish(1);
}

const SCENARIOS = ["call", "mic-refused", "refused"];
if (!SCENARIOS.includes(opts.scenario)) {
  fail(`--scenario must be one of ${SCENARIOS.join(", ")}`);
}
const FULL_CALL = opts.scenario === "call";
for (const required of FULL_CALL ? ["url", "wav", "expect", "screenshot"] : ["url"]) {
  if (!opts[required]) {
    fail(`missing --${required}`);
  }
}
if (!existsSync(opts.chromium)) {
  fail(`Chromium not found at ${opts.chromium} (Debian: apt-get install chromium)`);
}
if (opts.wav && !existsSync(opts.wav)) {
  fail(`fake microphone WAV not found: ${opts.wav}`);
}

let playwright;
try {
  playwright = await import("playwright-core");
} catch (err) {
  fail(`playwright-core is not installed (run npm ci in clients/web): ${err.message}`);
}

const STEP_MS = Number(opts["timeout-ms"]);

// Observation hooks, installed before any page script runs.
const INIT_SCRIPT = () => {
  window.__vgw = { pcs: [], sent: [], received: [] };
  const Original = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Original {
    constructor(...args) {
      super(...args);
      window.__vgw.pcs.push(this);
    }
  };
  const send = RTCDataChannel.prototype.send;
  RTCDataChannel.prototype.send = function (data) {
    window.__vgw.sent.push({ t: Date.now(), label: this.label, data: String(data) });
    return send.call(this, data);
  };
  const createDataChannel = Original.prototype.createDataChannel;
  Original.prototype.createDataChannel = function (...args) {
    const channel = createDataChannel.apply(this, args);
    channel.addEventListener("message", (m) => {
      window.__vgw.received.push({ t: Date.now(), data: String(m.data) });
    });
    return channel;
  };
  const report = () => {
    const host = document.querySelector(".voicegw-widget");
    if (host && window.vgwState) {
      window.vgwState(host.getAttribute("data-state") || "", host.shadowRoot?.querySelector(".vgw-status")?.textContent || "");
    }
  };
  new MutationObserver(report).observe(document, {
    subtree: true,
    childList: true,
    attributes: true,
    attributeFilter: ["data-state"],
  });
};

// State transitions as this process hears them; waitState resolves on an event, never polls.
const transitions = []; // {state, t, status}
let waiters = [];
function onState(state, status) {
  const last = transitions[transitions.length - 1];
  if (last && last.state === state) {
    return;
  }
  transitions.push({ state, t: Date.now() - t0, status });
  result.states = transitions.map((x) => x.state);
  const ready = waiters.filter((w) => w.check());
  waiters = waiters.filter((w) => !ready.includes(w));
  ready.forEach((w) => w.resolve(transitions.length - 1));
}

/** Resolves with the index of the first transition to `state` at or after index `from`. */
function waitState(state, from, what) {
  const check = () => transitions.findIndex((x, i) => i >= from && x.state === state) >= 0;
  return new Promise((resolveWait, reject) => {
    const timer = setTimeout(() => {
      const last = transitions[transitions.length - 1];
      reject(
        new Error(
          `timed out after ${STEP_MS} ms waiting for ${what} (state "${state}"); ` +
            `states so far ${JSON.stringify(result.states)}, status "${last ? last.status : ""}"`
        )
      );
    }, STEP_MS);
    const done = () => {
      clearTimeout(timer);
      resolveWait(transitions.findIndex((x, i) => i >= from && x.state === state));
    };
    if (check()) {
      done();
    } else {
      waiters.push({ check, resolve: done });
    }
  });
}

async function inboundAudio(page) {
  return page.evaluate(async () => {
    const pc = window.__vgw.pcs[window.__vgw.pcs.length - 1];
    if (!pc || pc.signalingState === "closed") {
      return null;
    }
    const stats = await pc.getStats();
    for (const report of stats.values()) {
      if (report.type === "inbound-rtp" && report.kind === "audio") {
        return {
          total_audio_energy: report.totalAudioEnergy ?? 0,
          total_samples_duration: report.totalSamplesDuration ?? 0,
          audio_level: report.audioLevel ?? 0,
          packets_received: report.packetsReceived ?? 0,
          bytes_received: report.bytesReceived ?? 0,
        };
      }
    }
    return { total_audio_energy: 0, total_samples_duration: 0, audio_level: 0, packets_received: 0, bytes_received: 0 };
  });
}

const userDataDir = mkdtempSync(join(tmpdir(), "voicegw-chromium-"));
const args = [
  "--headless",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
  "--use-fake-device-for-media-stream",
];
if (opts.wav) {
  args.push(`--use-file-for-fake-audio-capture=${resolve(opts.wav)}%noloop`);
}
// The fake UI accepts the microphone prompt as a visitor would; denying it is the other answer.
args.push(opts.scenario === "mic-refused" ? "--deny-permission-prompts" : "--use-fake-ui-for-media-stream");
if (process.getuid && process.getuid() === 0) {
  args.push("--no-sandbox");
}

let context;
try {
  context = await playwright.chromium.launchPersistentContext(userDataDir, {
    executablePath: opts.chromium,
    headless: true,
    args,
    viewport: { width: 960, height: 600 },
    timeout: STEP_MS,
  });
} catch (err) {
  rmSync(userDataDir, { recursive: true, force: true });
  fail(`could not launch ${opts.chromium}: ${err.message}`);
}

const consoleErrors = [];
try {
  await run(context);
  result.ok = true;
} catch (err) {
  result.error = err.message.split("\n")[0];
} finally {
  result.console_errors = consoleErrors;
  await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
finish(result.ok ? 0 : 1);

/** The scenario, step by step; throws with what it was waiting for when a step does not come. */
async function run(context) {
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => {
    if (m.type() === "error") {
      consoleErrors.push(m.text());
    }
  });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  await page.exposeFunction("vgwState", onState);
  await page.addInitScript(INIT_SCRIPT);
  await page.goto(opts.url, { timeout: STEP_MS });

  const host = page.locator(".voicegw-widget");
  await waitState("idle", 0, "the widget to appear");

  if (!FULL_CALL) {
    // A call that cannot start: it must end at once, saying why, without a peer connection
    // when the microphone was refused.
    await host.getByRole("button", { name: "Call", exact: true }).click();
    const ended = await waitState("ended", 0, "the call to fail");
    result.end_status = transitions[ended].status;
    result.status_is_error = await host.evaluate(
      (h) => h.shadowRoot.querySelector(".vgw-status").getAttribute("data-kind") === "error"
    );
    result.peer_connections = await page.evaluate(() => window.__vgw.pcs.length);
    result.call_again = await host.getByRole("button", { name: "Call again" }).isVisible();
    return;
  }

  // Call; "listening" comes with session_started on the data channel: the call is up.
  await host.getByRole("button", { name: "Call", exact: true }).click();
  const connecting = await waitState("connecting", 0, "the click to start connecting");
  const connected = await waitState("listening", connecting, "session_started");
  result.connect_ms = transitions[connected].t - transitions[connecting].t;
  result.connection_state = await page.evaluate(() => window.__vgw.pcs.at(-1)?.connectionState);
  result.session_id = await host.getAttribute("data-session-id");
  const atConnect = await inboundAudio(page);

  // The greeting: speaking (bot_started) and back to listening (bot_stopped).
  const greetingStart = await waitState("speaking", connected, "the greeting to start");
  const greetingEnd = await waitState("listening", greetingStart, "the greeting to end");
  const afterGreeting = await inboundAudio(page);
  result.greeting_ms = transitions[greetingEnd].t - transitions[greetingStart].t;
  result.audio = {
    at_connect: atConnect,
    after_greeting: afterGreeting,
    greeting_energy: afterGreeting.total_audio_energy - atConnect.total_audio_energy,
    greeting_samples_secs: afterGreeting.total_samples_duration - atConnect.total_samples_duration,
  };

  // The spoken question (later in the WAV) is answered: its caption appears.
  const answer = host.locator('[data-role="agent"]', { hasText: opts.expect });
  await answer.first().waitFor({ state: "visible", timeout: STEP_MS });
  result.answer_caption = await answer.first().evaluate((n) => n.lastChild.textContent);
  result.thinking_seen = transitions.some((x, i) => i > greetingEnd && x.state === "thinking");
  // Mid-call: the answer is being (or about to be) spoken.
  const answerSpeaking = await waitState("speaking", greetingEnd, "the answer to be spoken");
  result.state_at_screenshot = transitions[transitions.length - 1].state;
  mkdirSync(dirname(resolve(opts.screenshot)), { recursive: true });
  await page.screenshot({ path: opts.screenshot });
  result.screenshot = opts.screenshot;
  result.screenshot_bytes = statSync(opts.screenshot).size;
  result.audio.during_answer = await inboundAudio(page);

  result.captions = await host.locator("[data-role]").evaluateAll((nodes) =>
    nodes.map((n) => ({ role: n.getAttribute("data-role"), text: n.lastChild.textContent }))
  );

  // Hang up; the widget sends {"type":"hangup"} and ends on session_ended (or after 3 s).
  const hangupAt = Date.now();
  await host.getByRole("button", { name: "Hang up" }).click();
  const ended = await waitState("ended", answerSpeaking, "the call to end after hang-up");
  result.hangup_to_ended_ms = Date.now() - hangupAt;
  result.end_reason = await host.getAttribute("data-end-reason");
  result.end_status = transitions[ended].status;
  result.after_hangup = await page.evaluate(() => ({
    connection_state: window.__vgw.pcs.at(-1)?.connectionState,
  }));

  const traffic = await page.evaluate(() => window.__vgw);
  const pings = traffic.sent.filter((m) => m.label === "events" && m.data.startsWith("ping: "));
  const gaps = pings.slice(1).map((p, i) => p.t - pings[i].t);
  result.pings = {
    count: pings.length,
    max_gap_ms: gaps.length ? Math.max(...gaps) : null,
    well_formed: pings.every((p) => /^ping: \d+$/.test(p.data)),
  };
  result.hangup_sent = traffic.sent.some((m) => m.label === "events" && m.data === '{"type":"hangup"}');
  const received = traffic.received.map((m) => {
    try {
      return JSON.parse(m.data);
    } catch {
      return { unparsed: m.data };
    }
  });
  // Session events (without latency reports, whose numbers vary), and anything else the gateway
  // sent on the channel (its WebRTC stack's own signalling), kept apart.
  result.events = received.filter((e) => typeof e.event === "string" && e.event !== "latency");
  result.other_messages = received.filter((e) => typeof e.event !== "string");
}
