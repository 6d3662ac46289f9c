"""The browser door's HTTP side: widget tokens, WebRTC offers, CORS, the widget and its demo.

A page embedding the widget asks `POST /v1/widget/token` for a token (only for an agent its
organisation made public, only from one of that agent's origins), then sends its SDP offer to
`POST /v1/webrtc/offer` with the token and gets the answer; the call then runs through the same
SessionManager (tenancy, admission, billing, persistence) as every other door.

Anonymous visitors are kept from draining an organisation by the agent's own limits (concurrent
calls and a daily budget of call seconds) and a limit per client address. Every refusal is an
HTTP status with `{"error": ...}` and touches no call in progress.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web
from loguru import logger

from gateway import metrics
from gateway.config import Settings
from gateway.session import Session
from gateway.sessions import CallRequest, SessionManager, SessionRefused
from gateway.source_ip import Network, client_address
from gateway.storage import agents
from gateway.storage._db import Queryable
from gateway.widget_tokens import TokenError, WidgetTokens
from transports.events import EndReason, EndRequest
from transports.webrtc import WebRTCDoor, WidgetConnection

WEB_ROOT = Path(__file__).resolve().parents[1] / "clients" / "web"
WIDGET_JS = WEB_ROOT / "widget" / "widget.js"
DEMO_HTML = WEB_ROOT / "demo" / "index.html"
MAX_BODY_BYTES = 64 * 1024
# More remote candidates than any browser sends: each one gets connectivity checks from us.
MAX_CANDIDATES = 32
BUDGET_CHECK_SECS = 2.0
_ORIGIN_RE = re.compile(
    r"^https?://[A-Za-z0-9.\-]+(:\d{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:\d{1,5})?$"
)
_AGENT_RE = re.compile(r"^[^/\x00-\x1f\x7f]{1,200}/[^/\x00-\x1f\x7f]{1,200}$")
IN_RATE, OUT_RATE = 16000, 24000
# A refused session's gRPC code, as the page's HTTP status.
_HTTP_FOR = {
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "NOT_FOUND": 404,
    "PERMISSION_DENIED": 403,
    "INVALID_ARGUMENT": 400,
}
# Money refusals: the page can say "try later" or "this agent cannot take calls now".
_PAYMENT_REASONS = {"INSUFFICIENT_BALANCE", "QUOTA_EXCEEDED"}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class _Live:
    session: Session
    ip: str
    agent: agents.PublicAgent
    started: float  # monotonic


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class WebRTCEndpoints:
    def __init__(self, settings: Settings, db: Queryable, sessions: SessionManager) -> None:
        self._settings = settings
        self._db = db
        self._sessions = sessions
        self.tokens = WidgetTokens(
            settings.resolved_widget_secret(), ttl_secs=settings.widget_token_ttl_secs
        )
        self._proxies: list[Network] = [
            ipaddress.ip_network(cidr, strict=False) for cidr in settings.trusted_proxies
        ]
        self._live: dict[uuid.UUID, _Live] = {}
        self._per_ip: Counter[str] = Counter()
        self._per_agent: Counter[uuid.UUID] = Counter()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._enforcer: asyncio.Task[None] | None = None

    @property
    def live_calls(self) -> int:
        """WebRTC calls this process is running (their limits are held until they end)."""
        return len(self._live)

    async def wait_idle(self) -> None:
        """Returns once no WebRTC call is running here (and every limit is given back)."""
        await self._idle.wait()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.options("/v1/widget/token", self._guard(self._preflight)),
            web.post("/v1/widget/token", self._guard(self._token)),
            web.options("/v1/webrtc/offer", self._guard(self._preflight)),
            web.post("/v1/webrtc/offer", self._guard(self._offer)),
            web.get("/widget.js", self._widget),
            web.get("/demo", self._demo),
        ]

    # Handlers ----------------------------------------------------------------------------

    def _guard(self, handler: Handler) -> Handler:
        """Every refusal as `{"error": ...}` with its status, and CORS for allowed origins."""

        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except HttpError as error:
                metrics.CALLS_REFUSED.labels("webrtc", str(error.status)).inc()
                response = web.json_response({"error": str(error)}, status=error.status)
                origin = _valid_origin(request.headers.get("Origin", ""))
                if origin and await _quietly(agents.is_public_origin(self._db, origin)):
                    _cors(response, origin)
                return response
            except Exception:  # noqa: BLE001 - a bug or a database fault: logged, and a 500
                logger.exception(f"{request.method} {request.path} failed")
                response = web.json_response({"error": "internal error"}, status=500)
                origin = _valid_origin(request.headers.get("Origin", ""))
                if origin:  # so the page can show the error rather than "unreachable"
                    _cors(response, origin)
                return response

        return run

    async def _preflight(self, request: web.Request) -> web.StreamResponse:
        origin = _valid_origin(request.headers.get("Origin", ""))
        if not origin or not await agents.is_public_origin(self._db, origin):
            raise HttpError(403, "this origin may not call any public agent")
        response = web.Response(status=204)
        _cors(response, origin)
        response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "Content-Type, Authorization"
        response.headers["Access-Control-Max-Age"] = "600"
        return response

    async def _token(self, request: web.Request) -> web.StreamResponse:
        origin = _origin(request)
        body = await _json_body(request)
        org_name, agent_name = _agent_name(body.get("agent"))
        agent = await agents.find_public(self._db, org_name, agent_name)
        if agent is None:
            raise HttpError(404, f"no public agent {org_name}/{agent_name}")
        if origin not in agent.origins:
            raise HttpError(
                403, f"agent {org_name}/{agent_name} does not accept calls from {origin}"
            )
        response = web.json_response(
            {
                "token": self.tokens.mint(org_name, agent_name, origin),
                "expires_in": int(self.tokens.ttl_secs),
                "ice_servers": [{"urls": [url]} for url in self._settings.webrtc_ice_servers],
            }
        )
        _cors(response, origin)
        return response

    async def _offer(self, request: web.Request) -> web.StreamResponse:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HttpError(401, "missing widget token: send 'Authorization: Bearer <token>'")
        try:
            grant = self.tokens.verify(token.strip())
        except TokenError as error:
            raise HttpError(401, str(error)) from None
        origin = _origin(request)
        if origin != grant.origin:
            raise HttpError(403, "the token was issued to another origin")
        body = await _json_body(request)
        sdp, kind = body.get("sdp"), body.get("type")
        if kind != "offer" or not isinstance(sdp, str) or not sdp.strip():
            raise HttpError(400, 'the body must be {"sdp": "<offer SDP>", "type": "offer"}')
        lines = sdp.splitlines()
        if not any(line.startswith("m=audio") for line in lines):
            raise HttpError(400, "the offer has no audio (m=audio) section")
        if sum(line.startswith("a=candidate") for line in lines) > MAX_CANDIDATES:
            raise HttpError(400, f"the offer lists more than {MAX_CANDIDATES} ICE candidates")
        agent = await agents.find_public(self._db, grant.org_name, grant.agent)
        if agent is None or origin not in agent.origins:
            raise HttpError(403, f"agent {grant.org_name}/{grant.agent} is no longer public here")
        ip = self._client_ip(request)
        self._reserve(ip, agent)
        try:
            connection, session = await self._admit(agent, origin, sdp)
        except BaseException:
            self._release(ip, agent.agent_id)
            raise
        self._start(session, connection, ip, agent)
        answer = connection.get_answer()
        response = web.json_response(
            {"sdp": answer["sdp"], "type": answer["type"], "pc_id": answer["pc_id"]}
        )
        _cors(response, origin)
        return response

    async def _admit(
        self, agent: agents.PublicAgent, origin: str, sdp: str
    ) -> tuple[WidgetConnection, Session]:
        if await self._budget_left(agent) <= 0:
            raise HttpError(429, "this agent's call time for today is used up")
        connection = WidgetConnection(ice_servers=self._settings.webrtc_ice_servers or None)
        try:
            await connection.initialize(sdp=sdp, type="offer")
        except Exception as error:  # noqa: BLE001 - aiortc's parser raises many kinds
            await connection.close_now()
            raise HttpError(400, f"malformed SDP offer: {error}") from None
        try:
            session = await self._sessions.open(
                CallRequest(
                    org_id=agent.org_id,
                    org_name=agent.org_name,
                    agent_name=agent.name,
                    door="webrtc",
                    input_format=f"opus/{IN_RATE}",
                    output_format=f"opus/{OUT_RATE}",
                    output_rate=OUT_RATE,
                    caller_metadata={"origin": origin},
                )
            )
        except SessionRefused as refused:
            await connection.close_now()
            status = 402 if refused.reason in _PAYMENT_REASONS else _HTTP_FOR.get(refused.code, 400)
            raise HttpError(status, refused.message) from None
        except BaseException:
            await connection.close_now()
            raise
        return connection, session

    async def _widget(self, _: web.Request) -> web.StreamResponse:
        return _file(WIDGET_JS, "application/javascript")

    async def _demo(self, _: web.Request) -> web.StreamResponse:
        return _file(DEMO_HTML, "text/html")

    # Limits and the call -----------------------------------------------------------------

    async def _budget_left(self, agent: agents.PublicAgent) -> float:
        """Seconds of the agent's daily budget left: its ended calls today (from the database)
        and its calls live in this process (known here to be really live)."""
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        ended = await agents.webrtc_seconds_since(self._db, agent.agent_id, midnight)
        now = time.monotonic()
        live = sum(now - c.started for c in self._live.values() if c.agent == agent)
        return agent.daily_budget_secs - ended - live

    async def _enforce_budgets(self) -> None:
        """Ends an agent's live calls once its budget for the day is spent: a check at
        admission alone would let two visitors stay on all day."""
        while self._live:
            for agent in {c.agent for c in self._live.values()}:
                try:
                    left = await self._budget_left(agent)
                except Exception:  # noqa: BLE001 - the database may be away; next round
                    continue
                if left > 0:
                    continue
                for live in [c for c in self._live.values() if c.agent == agent]:
                    live.session.request_end(
                        EndRequest(
                            EndReason.BALANCE_EXHAUSTED,
                            "the agent's web call time for today is used up",
                        )
                    )
            await asyncio.sleep(BUDGET_CHECK_SECS)

    def _client_ip(self, request: web.Request) -> str:
        address = client_address(
            request.remote, request.headers.getall("X-Forwarded-For", []), self._proxies
        )
        if address is None:
            raise HttpError(400, "cannot tell the client's address")
        if address.version == 6:  # one host holds a /64: count it as one address
            return str(ipaddress.ip_network(f"{address}/64", strict=False))
        return str(address)

    def _reserve(self, ip: str, agent: agents.PublicAgent) -> None:
        """Checked and counted with no await between, so a burst of offers cannot slip past;
        held while the call is admitted, given back if it is refused or when it ends."""
        limit = self._settings.webrtc_max_calls_per_ip
        if self._per_ip[ip] >= limit:
            raise HttpError(429, f"at most {limit} calls at once from one address")
        if self._per_agent[agent.agent_id] >= agent.max_concurrent:
            raise HttpError(
                429, f"this agent takes at most {agent.max_concurrent} web calls at once"
            )
        self._per_ip[ip] += 1
        self._per_agent[agent.agent_id] += 1

    def _start(
        self,
        session: Session,
        connection: WidgetConnection,
        ip: str,
        agent: agents.PublicAgent,
    ) -> None:
        self._live[session.call_id] = _Live(session, ip, agent, time.monotonic())
        if self._idle.is_set():
            self._idle.clear()
            self._enforcer = asyncio.create_task(self._enforce_budgets(), name="webrtc-budgets")
        settings = self._settings

        def make_door(control: Any, _utterances: Any) -> WebRTCDoor:
            return WebRTCDoor(
                control,
                connection,
                in_rate=IN_RATE,
                out_rate=OUT_RATE,
                ping_timeout_secs=settings.webrtc_ping_timeout_secs,
                audio_timeout_secs=settings.webrtc_audio_timeout_secs,
            )

        task = asyncio.create_task(session.run(make_door), name=f"webrtc-{session.call_id}")
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._ended(t, session.call_id))

    def _ended(self, task: asyncio.Task[Any], call_id: uuid.UUID) -> None:
        self._tasks.discard(task)
        live = self._live.pop(call_id, None)
        if live is not None:
            self._release(live.ip, live.agent.agent_id)
        if not self._live:
            self._idle.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error(f"webrtc call {call_id} failed: {task.exception()!r}")

    def _release(self, ip: str, agent_id: uuid.UUID) -> None:
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]
        self._per_agent[agent_id] -= 1
        if self._per_agent[agent_id] <= 0:
            del self._per_agent[agent_id]

    async def close(self) -> None:
        """Waits for the calls' tasks (the SessionManager ends them at shutdown)."""
        if self._enforcer is not None:
            self._enforcer.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _cors(response: web.StreamResponse, origin: str) -> None:
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Vary"] = "Origin"


def _valid_origin(value: str) -> str | None:
    """`scheme://host[:port]` as browsers send it, else None (nothing else reaches the DB)."""
    origin = value.strip().rstrip("/")
    return origin if _ORIGIN_RE.match(origin) else None


def _origin(request: web.Request) -> str:
    origin = _valid_origin(request.headers.get("Origin", ""))
    if origin is None:
        raise HttpError(403, "the request has no valid Origin: only web pages may use the widget")
    return origin


async def _quietly(check: Awaitable[bool]) -> bool:
    """A CORS decision on an error path: a failing lookup means no CORS, not a second error."""
    try:
        return await check
    except Exception:  # noqa: BLE001
        return False


def _agent_name(value: Any) -> tuple[str, str]:
    if not isinstance(value, str) or not _AGENT_RE.match(value):
        raise HttpError(400, '"agent" must be "ORGANISATION/AGENT" (printable, no slashes)')
    org_name, agent_name = value.split("/")
    return org_name, agent_name


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise HttpError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        raw = await request.read()  # the whole body, however it arrives in segments
    except web.HTTPRequestEntityTooLarge:
        raise HttpError(413, f"the body is larger than {MAX_BODY_BYTES} bytes") from None
    if len(raw) > MAX_BODY_BYTES:
        raise HttpError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object")
    return body


def _file(path: Path, content_type: str) -> web.StreamResponse:
    if not path.is_file():
        raise web.HTTPNotFound(text=f"{path.name} is not installed")
    return web.FileResponse(path, headers={"Content-Type": content_type})
