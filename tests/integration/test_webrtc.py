"""The browser door with a real aiortc peer: a call through the same Session as gRPC, and every
bad request refused with its status while a call in progress carries on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from gateway.db import Database
from gateway.server import Gateway
from gateway.storage import agents
from tests.audio_helpers import speech
from tests.integration.conftest import Tenant, gateway_settings, make_tenant
from tests.integration.test_conversation import HOURS_ANSWER, short_secretary
from tests.integration.webrtc_peer import RATE, BrowserPeer

ORIGIN = "https://shop.example"


@pytest.fixture(scope="module")
async def web_gateway(
    database: Database, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    settings = gateway_settings(
        Path(tmp_path_factory.mktemp("webrtc-state")),
        webrtc_max_calls_per_ip=2,
        # Only a proxy at 127.0.0.2 is believed; the tests' own requests come from 127.0.0.1.
        trusted_proxies=["127.0.0.2/32"],
        widget_secret="test-widget-secret-0123456789",
    )
    gw = Gateway(settings, database=database)
    await gw.start()
    yield gw
    await gw.stop(grace_secs=1)


@pytest.fixture(autouse=True)
async def no_call_left_behind(web_gateway: Gateway) -> AsyncIterator[None]:
    """Each test starts with no live WebRTC call: limits are counted per address and agent."""
    yield
    assert web_gateway.webrtc is not None
    await asyncio.wait_for(web_gateway.webrtc.wait_idle(), 15)


async def _public(database: Database, **limits: int) -> Tenant:
    tenant = await make_tenant(database, short_secretary())
    await agents.set_widget(
        database.pool, tenant.org_id, "secretary", public=True, origins=[ORIGIN], **limits
    )
    return tenant


def _peer(gw: Gateway, tenant: Tenant, origin: str = ORIGIN) -> BrowserPeer:
    return BrowserPeer(f"http://127.0.0.1:{gw.http_port}", origin, f"{tenant.name}/secretary")


async def _ended_row(database: Database, tenant: Tenant, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = await database.pool.fetchrow(
            "SELECT door, status, end_reason, end_detail FROM calls WHERE org_id = $1",
            tenant.org_id,
        )
        if row is not None and row["status"] == "ended":
            return dict(row)
        await asyncio.sleep(0.1)
    raise AssertionError("the call was not stored as ended")


async def test_a_browser_call_is_answered_through_the_same_session(
    web_gateway: Gateway, database: Database
) -> None:
    tenant = await _public(database)
    peer = _peer(web_gateway, tenant)
    async with aiohttp.ClientSession() as http:
        try:
            await peer.connect(http)
            await peer.wait_for(lambda p: p.of("session_started"))
            await peer.wait_for(lambda p: "bot_stopped" in [e["kind"] for e in p.of("turn")])
            assert peer.agent_audio_peak > 1000  # the greeting was heard, not just announced
            peer.mic.say(speech("what are your opening hours", RATE))
            await peer.wait_for(lambda p: any(HOURS_ANSWER in t for t in p.said("agent")))
            assert any("hours" in t for t in peer.said("user"))
            peer.hang_up()
            await peer.wait_for(lambda p: p.of("session_ended"))
        finally:
            await peer.close()
    ended = peer.of("session_ended")[0]
    assert ended["reason"] == "caller_hangup" and ended["billed_seconds"] > 0
    started = peer.of("session_started")[0]
    assert started["agent"] == "secretary" and started["input_format"]["encoding"] == "opus"
    row = await _ended_row(database, tenant)
    assert (row["door"], row["end_reason"]) == ("webrtc", "caller_hangup")


def _stop_pinging(peer: BrowserPeer) -> None:
    peer.pinging = False  # a frozen tab: the connection stays up, the pings stop


def _stop_microphone(peer: BrowserPeer) -> None:
    peer.mic.stop()  # the microphone track ends; the page still pings


@pytest.mark.parametrize(
    ("silence", "detail"),
    [
        (_stop_pinging, "no signal from the client for 3 s"),
        (_stop_microphone, "no audio from the client for 5 s"),
    ],
    ids=["no-pings", "no-audio"],
)
async def test_a_page_that_goes_quiet_is_timed_out(
    web_gateway: Gateway, database: Database, silence: Callable[[BrowserPeer], None], detail: str
) -> None:
    tenant = await _public(database)
    peer = _peer(web_gateway, tenant)
    async with aiohttp.ClientSession() as http:
        try:
            await peer.connect(http)
            await peer.wait_for(lambda p: p.of("session_started"))
            silence(peer)
            row = await _ended_row(database, tenant)
        finally:
            await peer.close()
    assert (row["end_reason"], row["end_detail"]) == ("client_timeout", detail)


async def test_bad_requests_get_their_status_and_a_live_call_carries_on(
    web_gateway: Gateway, database: Database
) -> None:
    tenant = await _public(database, max_concurrent=4)
    base = f"http://127.0.0.1:{web_gateway.http_port}"
    assert web_gateway.webrtc is not None
    tokens = web_gateway.webrtc.tokens
    agent = f"{tenant.name}/secretary"
    live = _peer(web_gateway, tenant)
    async with aiohttp.ClientSession() as http:
        try:
            await live.connect(http)
            await live.wait_for(lambda p: p.of("session_started"))

            async def post(path: str, body: object, **headers: str) -> int:
                async with http.post(f"{base}{path}", json=body, headers=headers) as response:
                    payload = await response.json()
                    assert "error" in payload or response.status == 200
                    return response.status

            def fresh() -> str:  # a token starts one call: each attempt gets its own
                return tokens.mint(tenant.name, "secretary", ORIGIN)

            def auth() -> dict[str, str]:
                return {"Origin": ORIGIN, "Authorization": f"Bearer {fresh()}"}

            good = fresh()
            probe = BrowserPeer(base, ORIGIN, agent)
            sdp = await probe.offer_sdp()
            no_audio = BrowserPeer(base, ORIGIN, agent)
            data_only = await no_audio.offer_sdp(audio=False)
            expired = tokens.mint(tenant.name, "secretary", ORIGIN, now=time.time() - 120)
            forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
            cases = [
                (
                    "token from a foreign origin",
                    "/v1/widget/token",
                    {"agent": agent},
                    {"Origin": "https://evil.example"},
                    403,
                ),
                ("token without an Origin", "/v1/widget/token", {"agent": agent}, {}, 403),
                (
                    "token for no such agent",
                    "/v1/widget/token",
                    {"agent": f"{tenant.name}/nobody"},
                    {"Origin": ORIGIN},
                    404,
                ),
                (
                    "token with a bad agent name",
                    "/v1/widget/token",
                    {"agent": "x"},
                    {"Origin": ORIGIN},
                    400,
                ),
                (
                    "offer without a token",
                    "/v1/webrtc/offer",
                    {"sdp": sdp, "type": "offer"},
                    {"Origin": ORIGIN},
                    401,
                ),
                (
                    "offer with an expired token",
                    "/v1/webrtc/offer",
                    {"sdp": sdp, "type": "offer"},
                    {"Origin": ORIGIN, "Authorization": f"Bearer {expired}"},
                    401,
                ),
                (
                    "offer with a forged token",
                    "/v1/webrtc/offer",
                    {"sdp": sdp, "type": "offer"},
                    {"Origin": ORIGIN, "Authorization": f"Bearer {forged}"},
                    401,
                ),
                (
                    "offer from another origin than the token's",
                    "/v1/webrtc/offer",
                    {"sdp": sdp, "type": "offer"},
                    {"Origin": "https://evil.example", "Authorization": f"Bearer {fresh()}"},
                    403,
                ),
                (
                    "malformed SDP",
                    "/v1/webrtc/offer",
                    {"sdp": "v=0\r\nm=audio garbage\r\n", "type": "offer"},
                    auth(),
                    400,
                ),
                (
                    "an offer without audio",
                    "/v1/webrtc/offer",
                    {"sdp": data_only, "type": "offer"},
                    auth(),
                    400,
                ),
                ("not an offer", "/v1/webrtc/offer", {"sdp": sdp, "type": "answer"}, auth(), 400),
            ]
            for what, path, body, headers, expected in cases:
                assert await post(path, body, **headers) == expected, what
            async with http.post(
                f"{base}/v1/webrtc/offer", data=b"{not json", headers=auth()
            ) as response:
                assert response.status == 400
            # A token starts one call: the same token again is refused.
            once = auth()
            async with http.post(
                f"{base}/v1/webrtc/offer", json={"sdp": "x", "type": "answer"}, headers=once
            ) as response:
                assert response.status == 400  # used up by a bad offer all the same
            async with http.post(
                f"{base}/v1/webrtc/offer", json={"sdp": sdp, "type": "offer"}, headers=once
            ) as response:
                assert response.status == 401 and "already used" in (await response.json())["error"]
            # Hostile bytes get their 4xx, never a 500.
            odd = {"Origin": ORIGIN, "Authorization": "Bearer abc.d\u00e9f"}
            assert await post("/v1/webrtc/offer", {"sdp": sdp, "type": "offer"}, **odd) == 401
            assert await post("/v1/widget/token", {"agent": "a\u0000b/c"}, Origin=ORIGIN) == 400

            # An offer whose body arrives in pieces (a real network, a proxy) is read whole.
            async def pieces() -> AsyncIterator[bytes]:
                body = json.dumps({"agent": agent}).encode()
                yield body[:5]
                await asyncio.sleep(0.2)  # the second segment comes later, as over a network
                yield body[5:]

            async with http.post(
                f"{base}/v1/widget/token", data=pieces(), headers={"Origin": ORIGIN}
            ) as response:
                assert response.status == 200
            await probe.close()
            await no_audio.close()

            # Limits: this address has one call; a second fills the per-IP limit of 2.
            second = _peer(web_gateway, tenant)
            try:
                await second.connect(http)
                third = BrowserPeer(base, ORIGIN, agent)
                status, body = await third.post_offer(http, fresh(), await third.offer_sdp())
                assert status == 429 and "at most 2 calls at once" in body["error"]
                await third.close()
                # A forwarded address from a peer that is not a trusted proxy changes nothing.
                spoofed = BrowserPeer(base, ORIGIN, agent)
                spoofed.extra_headers = {"X-Forwarded-For": "203.0.113.7"}
                status, body = await spoofed.post_offer(http, fresh(), await spoofed.offer_sdp())
                assert status == 429
                await spoofed.close()
                # Through the trusted proxy, the forwarded address is the caller: its own count.
                proxied = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
                async with aiohttp.ClientSession(connector=proxied) as via_proxy:
                    fourth = _peer(web_gateway, tenant)
                    fourth.extra_headers = {"X-Forwarded-For": "203.0.113.7"}
                    try:
                        await fourth.connect(via_proxy)
                        await fourth.wait_for(lambda p: p.of("session_started"))
                    finally:
                        await fourth.close()
            finally:
                await second.close()

            # The call in progress heard none of that.
            live.mic.say(speech("what are your opening hours", RATE))
            await live.wait_for(lambda p: any(HOURS_ANSWER in t for t in p.said("agent")))
            live.hang_up()
            await live.wait_for(lambda p: p.of("session_ended"))
        finally:
            await live.close()
    assert live.of("session_ended")[0]["reason"] == "caller_hangup"


async def test_an_agent_over_its_budget_or_concurrency_is_refused(
    web_gateway: Gateway, database: Database
) -> None:
    tenant = await _public(database, daily_budget_secs=0)
    peer = _peer(web_gateway, tenant)
    async with aiohttp.ClientSession() as http:
        try:
            status, body = await peer.token(http)
            assert status == 200
            code, refused = await peer.post_offer(http, body["token"], await peer.offer_sdp())
        finally:
            await peer.close()
    assert code == 429 and "used up" in refused["error"]

    busy = await _public(database, max_concurrent=1)
    first, second = _peer(web_gateway, busy), _peer(web_gateway, busy)
    async with aiohttp.ClientSession() as http:
        try:
            await first.connect(http)
            status, body = await second.token(http)
            code, refused = await second.post_offer(http, body["token"], await second.offer_sdp())
            assert code == 429 and "at most 1 web calls at once" in refused["error"]
        finally:
            await first.close()
            await second.close()


async def test_a_call_is_ended_when_the_agents_budget_runs_out_mid_call(
    web_gateway: Gateway, database: Database
) -> None:
    tenant = await _public(database, daily_budget_secs=3)
    peer = _peer(web_gateway, tenant)
    async with aiohttp.ClientSession() as http:
        try:
            await peer.connect(http)
            await peer.wait_for(lambda p: p.of("session_ended"), timeout=20)
        finally:
            await peer.close()
    ended = peer.of("session_ended")[0]
    assert ended["reason"] == "balance_exhausted"
    assert "web call time for today is used up" in ended["detail"]
    row = await _ended_row(database, tenant)
    assert row["end_reason"] == "balance_exhausted"


async def test_cors_preflight_answers_only_public_origins(
    web_gateway: Gateway, database: Database
) -> None:
    await _public(database)  # some agent accepts ORIGIN
    base = f"http://127.0.0.1:{web_gateway.http_port}"
    async with aiohttp.ClientSession() as http:
        headers = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
        async with http.options(f"{base}/v1/webrtc/offer", headers=headers) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
            assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
        headers["Origin"] = "https://evil.example"
        async with http.options(f"{base}/v1/widget/token", headers=headers) as response:
            assert response.status == 403
            assert "Access-Control-Allow-Origin" not in response.headers


async def test_a_call_whose_row_cannot_be_written_releases_the_peer_and_the_hold(
    web_gateway: Gateway, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transports.webrtc import WidgetConnection

    tenant = await _public(database)
    assert web_gateway.sessions is not None and web_gateway.webrtc is not None

    async def broken(*_: object) -> None:  # the database refuses the call row
        raise RuntimeError("calls table unavailable")

    monkeypatch.setattr(web_gateway.sessions._store, "call_started", broken)
    closed: list[str] = []
    close_now = WidgetConnection.close_now

    async def spy(self: WidgetConnection) -> None:  # records, then really closes
        closed.append(self.pc_id)
        await close_now(self)

    monkeypatch.setattr(WidgetConnection, "close_now", spy)
    peer = _peer(web_gateway, tenant)
    async with aiohttp.ClientSession() as http:
        try:
            await peer.connect(http)
            await asyncio.wait_for(web_gateway.webrtc.wait_idle(), 15)
        finally:
            await peer.close()
    assert len(closed) == 1  # the gateway closed the peer connection itself
    assert not peer.of("session_started")  # the caller was never told the call started
    bill = await database.pool.fetchrow(
        "SELECT status, charged_minor FROM billing_calls WHERE org_id = $1", tenant.org_id
    )
    assert (bill["status"], bill["charged_minor"]) == ("finalized", 0)
