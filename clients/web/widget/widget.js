/*
 * voicegw browser widget: talk to a voicegw agent from any web page over WebRTC.
 *
 *   <script src="https://gateway.example/widget.js" data-agent="ORG/AGENT"></script>
 *
 * One file, no dependencies, no build step: the script tag is the whole integration. It adds a
 * call button (floating at the bottom right, or in place with `data-inline`), and during a call
 * shows the call's state, live captions of both sides, and a hang-up button.
 *
 * Why it is built the way it is:
 * - The gateway's base URL is the origin of this script's own `src`, so a site on another origin
 *   can embed it without configuration (the gateway allows CORS for the agent's origins).
 * - The UI lives in an open shadow root with its own small stylesheet, so the host page's CSS
 *   cannot break it and its CSS cannot leak into the page. The host element carries the state in
 *   `data-state` (idle, connecting, listening, thinking, speaking, ended) so pages and tests can
 *   follow it; captions are elements with `data-role` "user" or "agent".
 * - Signalling is one HTTP offer/answer without trickle ICE (the gateway takes one complete
 *   offer), so the offer waits for ICE gathering, capped at 2 s: loopback and host candidates
 *   are immediate, and a slow STUN server must not hold the call up.
 * - The first transceiver carries the microphone, then the "events" data channel is created:
 *   the gateway reads the audio from the first m-line and the events from that channel.
 * - The gateway ends a call whose browser went quiet, so the widget pings every second on the
 *   data channel; a closed tab stops pinging and its call (and its bill) ends within seconds.
 * - Agent audio is played by an <audio> element: that is what makes Chromium decode and play a
 *   remote track (WebAudio alone reads silence from an unplayed remote track).
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script || !script.src) {
    return; // loaded as a module or injected without a src: nothing tells us where the gateway is
  }

  var GATEWAY = new URL(script.src, document.baseURI).origin;
  var AGENT = (script.getAttribute("data-agent") || "").trim();
  var TITLE = script.getAttribute("data-title") || "Talk to our assistant";
  var INLINE = script.hasAttribute("data-inline");
  var PING_MS = 1000; // the gateway ends the call after 3 s without a ping
  var ICE_GATHER_CAP_MS = 2000;
  var HANGUP_WAIT_MS = 3000; // after {"type":"hangup"}, how long to wait for session_ended
  var CONNECT_TIMEOUT_MS = 30000; // from the click to session_started
  var THINKING_CAP_MS = 10000;
  var DISCONNECTED_GRACE_MS = 5000; // "disconnected" this long ends the call as failed // a user turn the agent does not answer must not freeze the UI

  var STATUS = {
    idle: TITLE,
    connecting: "Connecting\u2026",
    listening: "Listening\u2026",
    thinking: "Thinking\u2026",
    speaking: "Speaking\u2026",
    ended: "Call ended.",
  };

  // session_ended reasons (the gateway's EndReason values) in words a visitor understands.
  var END_REASONS = {
    caller_hangup: "Call ended.",
    agent_goodbye: "The assistant ended the call.",
    balance_exhausted: "The call ended: this service has no call time left.",
    admin_hangup: "The call was ended by the operator.",
    client_timeout: "The call ended: the connection to the browser was lost.",
    shutdown: "The call ended: the service is restarting. Please call again.",
    error: "The call ended because of an error.",
  };

  var CSS =
    ":host{all:initial;position:fixed;right:20px;bottom:20px;z-index:2147483000;" +
    "font:14px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1b1f24}" +
    ":host([data-inline]){position:static;display:inline-block}" +
    ".vgw-panel{width:320px;max-width:calc(100vw - 40px);background:#fff;border-radius:14px;" +
    "box-shadow:0 6px 24px rgba(0,0,0,.18);overflow:hidden;border:1px solid #e3e6ea}" +
    ".vgw-head{display:flex;align-items:center;gap:10px;padding:12px 14px}" +
    ".vgw-dot{width:10px;height:10px;border-radius:50%;background:#9aa3ad;flex:none}" +
    ".vgw-status{flex:1;min-width:0}" +
    ".vgw-status[data-kind=error]{color:#b42318}" +
    "button{font:inherit;border:0;border-radius:999px;padding:8px 16px;cursor:pointer;color:#fff}" +
    "button:disabled{opacity:.6;cursor:default}" +
    ".vgw-call{background:#12805c}.vgw-call:hover{background:#0e6a4c}" +
    ".vgw-hangup{background:#c4320a}.vgw-hangup:hover{background:#a32a08}" +
    ".vgw-captions{max-height:220px;overflow-y:auto;padding:0 14px 12px;display:flex;" +
    "flex-direction:column;gap:6px}" +
    ".vgw-captions:empty{display:none}" +
    ".vgw-caption{padding:6px 10px;border-radius:10px;max-width:85%;white-space:pre-wrap}" +
    ".vgw-caption[data-role=agent]{background:#eef2f6;align-self:flex-start}" +
    ".vgw-caption[data-role=user]{background:#d9f2e6;align-self:flex-end}" +
    ".vgw-caption[data-final=false]{opacity:.7}" +
    ".vgw-who{display:block;font-size:11px;color:#5b6570}" +
    ":host([data-state=connecting]) .vgw-dot{background:#e0a100}" +
    ":host([data-state=listening]) .vgw-dot{background:#12805c}" +
    ":host([data-state=thinking]) .vgw-dot{background:#3b6fd8}" +
    ":host([data-state=speaking]) .vgw-dot{background:#7a3bd8;animation:vgw-pulse 1s infinite}" +
    ":host([data-state=ended]) .vgw-dot{background:#5b6570}" +
    "@keyframes vgw-pulse{50%{transform:scale(1.5)}}";

  // The widget's DOM ----------------------------------------------------------------------------

  var host = document.createElement("div");
  host.className = "voicegw-widget";
  if (INLINE) {
    host.setAttribute("data-inline", "");
  }
  var root = host.attachShadow({ mode: "open" });
  var style = document.createElement("style");
  style.textContent = CSS;
  root.appendChild(style);

  var panel = el("div", "vgw-panel");
  panel.setAttribute("role", "region");
  panel.setAttribute("aria-label", "Voice assistant");
  var head = el("div", "vgw-head");
  var dot = el("span", "vgw-dot");
  var status = el("span", "vgw-status");
  status.setAttribute("role", "status");
  status.setAttribute("aria-live", "polite");
  var callButton = el("button", "vgw-call");
  callButton.type = "button";
  callButton.textContent = "Call";
  var hangupButton = el("button", "vgw-hangup");
  hangupButton.type = "button";
  hangupButton.textContent = "Hang up";
  hangupButton.hidden = true;
  var captions = el("div", "vgw-captions");
  captions.setAttribute("aria-live", "polite");
  var player = document.createElement("audio");
  player.autoplay = true;
  player.hidden = true;

  head.appendChild(dot);
  head.appendChild(status);
  head.appendChild(callButton);
  head.appendChild(hangupButton);
  panel.appendChild(head);
  panel.appendChild(captions);
  root.appendChild(panel);
  root.appendChild(player);

  if (INLINE && script.parentNode) {
    script.parentNode.insertBefore(host, script.nextSibling);
  } else if (document.body) {
    document.body.appendChild(host);
  } else {
    document.addEventListener("DOMContentLoaded", function () {
      document.body.appendChild(host);
    });
  }

  function el(tag, className) {
    var node = document.createElement(tag);
    node.className = className;
    return node;
  }

  // State ------------------------------------------------------------------------------------------

  var call = null; // the current call's resources; null when idle or ended

  function setState(state, message, isError) {
    host.setAttribute("data-state", state);
    status.textContent = message || STATUS[state];
    if (isError) {
      status.setAttribute("data-kind", "error");
    } else {
      status.removeAttribute("data-kind");
    }
    var inCall = state !== "idle" && state !== "ended";
    callButton.hidden = inCall;
    callButton.textContent = state === "ended" ? "Call again" : "Call";
    hangupButton.hidden = !inCall;
  }

  function setStatusText(message, isError) {
    status.textContent = message;
    if (isError) {
      status.setAttribute("data-kind", "error");
    }
  }

  setState("idle");
  if (!AGENT) {
    callButton.disabled = true;
    setStatusText("This widget has no data-agent attribute.", true);
  }

  // Captions: one element per agent utterance (interim text is replaced by the final one); user
  // transcripts carry no utterance id, so an interim user caption is replaced by the next text.
  function caption(role, text, final, utteranceId) {
    if (role !== "user" && role !== "agent") {
      return;
    }
    var node = null;
    if (utteranceId) {
      node = captions.querySelector(
        '.vgw-caption[data-role="' + role + '"][data-utterance="' + utteranceId + '"]'
      );
    }
    if (!node) {
      var last = captions.lastElementChild;
      if (last && last.getAttribute("data-role") === role && last.getAttribute("data-final") === "false") {
        node = last;
      }
    }
    if (!node) {
      node = el("div", "vgw-caption");
      node.setAttribute("data-role", role);
      var who = el("span", "vgw-who");
      who.textContent = role === "user" ? "You" : "Assistant";
      node.appendChild(who);
      node.appendChild(document.createElement("span"));
      captions.appendChild(node);
    }
    if (utteranceId) {
      node.setAttribute("data-utterance", String(utteranceId));
    }
    node.setAttribute("data-final", final ? "true" : "false");
    node.lastChild.textContent = text;
    captions.scrollTop = captions.scrollHeight;
  }

  // The call ---------------------------------------------------------------------------------------

  callButton.addEventListener("click", function () {
    if (!call) {
      startCall();
    }
  });
  hangupButton.addEventListener("click", function () {
    if (call) {
      hangUp(call);
    }
  });
  window.addEventListener("pagehide", function () {
    if (call) {
      finish(call, "ended", "Call ended.");
    }
  });

  function startCall() {
    var c = {
      pc: null,
      dc: null,
      mic: null,
      ended: false,
      started: false,
      hangingUp: false,
      timers: [],
      hangupTimer: null,
      thinkingTimer: null,
      disconnectedTimer: null,
    };
    call = c;
    captions.textContent = "";
    host.removeAttribute("data-end-reason");
    host.removeAttribute("data-session-id");
    setState("connecting");
    connect(c).catch(function (err) {
      finish(c, "ended", describeFailure(err), true);
    });
  }

  async function connect(c) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new WidgetError(
        "The microphone is only available on secure pages (HTTPS, or http://localhost)."
      );
    }
    try {
      c.mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (err) {
      throw microphoneError(err);
    }
    if (c.ended) {
      return stopMic(c);
    }
    // Timed from here: the visitor may take as long as they like to allow the microphone.
    c.timers.push(
      setTimeout(function () {
        if (!c.started) {
          finish(c, "ended", "Connection failed: the voice service did not answer in time.", true);
        }
      }, CONNECT_TIMEOUT_MS)
    );

    var token = await postJSON("/v1/widget/token", { agent: AGENT }, null);
    if (c.ended) {
      return;
    }

    var pc = new RTCPeerConnection({ iceServers: token.ice_servers || [] });
    c.pc = pc;
    pc.addTransceiver(c.mic.getAudioTracks()[0], { direction: "sendrecv" });
    var dc = pc.createDataChannel("events", { ordered: true });
    c.dc = dc;

    pc.ontrack = function (event) {
      if (event.track.kind !== "audio") {
        return;
      }
      player.srcObject = event.streams && event.streams[0] ? event.streams[0] : new MediaStream([event.track]);
      var playing = player.play();
      if (playing && playing.catch) {
        playing.catch(function () {
          // Autoplay refused (the click that started the call was too long ago): the next click
          // on the widget is a gesture that lets it play.
          setStatusText("Your browser held back the assistant's audio: click here to hear it.", true);
          panel.addEventListener(
            "click",
            function () {
              player.play().catch(function () {});
            },
            { once: true }
          );
        });
      }
    };
    pc.onconnectionstatechange = function () {
      clearTimeout(c.disconnectedTimer);
      if (c.ended) {
        return;
      }
      if (pc.connectionState === "failed") {
        finish(c, "ended", "Connection failed: your browser could not reach the voice service.", true);
      } else if (pc.connectionState === "disconnected") {
        // Chromium reports "failed" only ~30 s after the path died, but the gateway has ended
        // the call long before (no pings for 3 s): give a network blip a few seconds, no more.
        c.disconnectedTimer = setTimeout(function () {
          if (!c.ended && pc.connectionState !== "connected") {
            finish(c, "ended", "Connection failed: the connection to the voice service was lost.", true);
          }
        }, DISCONNECTED_GRACE_MS);
      }
    };
    dc.onopen = function () {
      sendPing(c);
      c.timers.push(
        setInterval(function () {
          sendPing(c);
        }, PING_MS)
      );
    };
    dc.onmessage = function (message) {
      if (typeof message.data !== "string") {
        return;
      }
      var event;
      try {
        event = JSON.parse(message.data);
      } catch (_) {
        return; // not an event (the gateway may answer pings in plain text)
      }
      if (event && typeof event.event === "string") {
        onEvent(c, event);
      } else if (event && event.type === "signalling" && event.message && event.message.type === "peerLeft") {
        // The gateway's WebRTC stack closing the connection; session_ended normally comes first.
        peerGone(c);
      }
    };
    dc.onclose = function () {
      peerGone(c);
    };

    var offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await iceGatheringDone(pc);
    if (c.ended) {
      return;
    }
    var answer = await postJSON(
      "/v1/webrtc/offer",
      { sdp: pc.localDescription.sdp, type: pc.localDescription.type },
      token.token
    );
    if (c.ended) {
      return;
    }
    await pc.setRemoteDescription({ type: answer.type || "answer", sdp: answer.sdp });
  }

  function onEvent(c, event) {
    if (c.ended) {
      return;
    }
    switch (event.event) {
      case "session_started":
        c.started = true;
        if (event.session_id) {
          host.setAttribute("data-session-id", String(event.session_id));
        }
        setState("listening");
        break;
      case "transcript":
        caption(event.role, String(event.text || ""), event.final !== false, event.utterance_id);
        break;
      case "turn":
        onTurn(c, event.kind);
        break;
      case "interruption":
        setState("listening");
        break;
      case "billing":
        // low_balance / minutes_left: the call goes on, but the visitor learns it ends soon.
        if (event.seconds_left > 0) {
          setStatusText("The call will end in about " + event.seconds_left + " seconds.", false);
        }
        break;
      case "error":
        setStatusText(String(event.message || "The voice service reported an error."), true);
        break;
      case "session_ended":
        var reason = String(event.reason || "");
        host.setAttribute("data-end-reason", reason);
        var text = END_REASONS[reason] || "Call ended (" + reason + ").";
        if (event.detail && reason !== "caller_hangup") {
          text += " " + event.detail;
        }
        finish(c, "ended", text, reason !== "caller_hangup" && reason !== "agent_goodbye" && reason !== "");
        break;
      default:
        break; // latency and future events: nothing to show
    }
  }

  function onTurn(c, kind) {
    clearTimeout(c.thinkingTimer);
    switch (kind) {
      case "user_stopped":
        setState("thinking");
        c.thinkingTimer = setTimeout(function () {
          if (!c.ended && host.getAttribute("data-state") === "thinking") {
            setState("listening");
          }
        }, THINKING_CAP_MS);
        break;
      case "bot_started":
        setState("speaking");
        break;
      case "bot_stopped":
        setState("listening");
        break;
      default:
        break; // user_started: still listening
    }
  }

  // The gateway closed the call without (or before) its session_ended: after our own hang-up
  // that is just the end of the call; otherwise the visitor is told the connection was lost.
  function peerGone(c) {
    if (c.ended) {
      return;
    }
    if (c.hangingUp) {
      finish(c, "ended", "Call ended.");
    } else {
      finish(c, "ended", "The connection to the voice service was closed.", true);
    }
  }

  function sendPing(c) {
    if (c.dc && c.dc.readyState === "open") {
      c.dc.send("ping: " + Date.now());
    }
  }

  function hangUp(c) {
    hangupButton.disabled = true;
    c.hangingUp = true;
    if (c.dc && c.dc.readyState === "open") {
      setStatusText("Hanging up\u2026", false);
      c.dc.send(JSON.stringify({ type: "hangup" }));
      // The gateway answers with session_ended; if it does not within 3 s, end locally.
      c.hangupTimer = setTimeout(function () {
        finish(c, "ended", "Call ended.");
      }, HANGUP_WAIT_MS);
    } else {
      finish(c, "ended", "Call cancelled.");
    }
  }

  function finish(c, state, message, isError) {
    if (c.ended) {
      return;
    }
    c.ended = true;
    c.timers.forEach(function (t) {
      clearTimeout(t);
      clearInterval(t);
    });
    clearTimeout(c.hangupTimer);
    clearTimeout(c.thinkingTimer);
    clearTimeout(c.disconnectedTimer);
    if (c.dc) {
      c.dc.onclose = null;
    }
    if (c.pc) {
      c.pc.onconnectionstatechange = null;
      c.pc.close();
    }
    stopMic(c);
    player.srcObject = null;
    hangupButton.disabled = false;
    if (call === c) {
      call = null;
    }
    setState(state, message, isError);
  }

  function stopMic(c) {
    if (c.mic) {
      c.mic.getTracks().forEach(function (t) {
        t.stop();
      });
    }
  }

  // Helpers ----------------------------------------------------------------------------------------

  function WidgetError(message) {
    this.message = message;
  }

  function microphoneError(err) {
    var name = err && err.name;
    if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
      return new WidgetError(
        "Microphone access was refused. Allow the microphone for this page in your browser and call again."
      );
    }
    if (name === "NotFoundError" || name === "DevicesNotFoundError" || name === "OverconstrainedError") {
      return new WidgetError("No microphone was found. Connect one and call again.");
    }
    if (name === "NotReadableError" || name === "AbortError") {
      return new WidgetError("The microphone is in use by another application or could not be started.");
    }
    return new WidgetError("The microphone could not be opened: " + ((err && err.message) || name || err));
  }

  function describeFailure(err) {
    if (err instanceof WidgetError) {
      return err.message;
    }
    return "Connection failed: " + ((err && err.message) || String(err));
  }

  // POSTs JSON to the gateway; an HTTP error becomes a WidgetError with the server's `error` text.
  async function postJSON(path, body, bearer) {
    var headers = { "Content-Type": "application/json" };
    if (bearer) {
      headers.Authorization = "Bearer " + bearer;
    }
    var response;
    try {
      response = await fetch(GATEWAY + path, {
        method: "POST",
        headers: headers,
        body: JSON.stringify(body),
        mode: "cors",
        credentials: "omit",
      });
    } catch (_) {
      throw new WidgetError("Connection failed: the voice service at " + GATEWAY + " could not be reached.");
    }
    var data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      var text = data && typeof data.error === "string" ? data.error : "HTTP " + response.status;
      throw new WidgetError("The voice service refused the call: " + text);
    }
    if (!data) {
      throw new WidgetError("The voice service sent an unreadable answer.");
    }
    return data;
  }

  // Resolves when ICE gathering is complete, or after ICE_GATHER_CAP_MS with what was gathered.
  function iceGatheringDone(pc) {
    if (pc.iceGatheringState === "complete") {
      return Promise.resolve();
    }
    return new Promise(function (resolve) {
      var timer = setTimeout(done, ICE_GATHER_CAP_MS);
      function check() {
        if (pc.iceGatheringState === "complete") {
          done();
        }
      }
      function done() {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
      pc.addEventListener("icegatheringstatechange", check);
    });
  }
})();
