"""Short-lived widget tokens: a visitor's page may start one call to one public agent.

The page gets a token from `POST /v1/widget/token` (checked against the agent's origins) and
presents it with its WebRTC offer. The token is an HMAC over (organisation, agent, origin,
expiry) with a key from the environment, so any replica can verify it without a database row;
it is bound to the origin that asked for it, so a token lifted from one site is useless on
another, and it lives about a minute.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass


class TokenError(Exception):
    """Missing, malformed, forged or expired; the message says which."""


@dataclass(frozen=True, slots=True)
class WidgetGrant:
    org_name: str
    agent: str
    origin: str
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class WidgetTokens:
    def __init__(self, secret: str | bytes, ttl_secs: float = 60.0) -> None:
        key = secret.encode() if isinstance(secret, str) else secret
        if len(key) < 16:
            raise ValueError("the widget token secret must be at least 16 bytes")
        self._key = key
        self.ttl_secs = ttl_secs
        # Nonces of tokens already used, until they expire (per process: a replay to another
        # replica within the token's minute is not caught).
        self._used: dict[str, float] = {}

    def mint(self, org_name: str, agent: str, origin: str, *, now: float | None = None) -> str:
        claims = {
            "org": org_name,
            "agent": agent,
            "origin": origin,
            "exp": round((now or time.time()) + self.ttl_secs, 3),
            "n": secrets.token_urlsafe(8),
        }
        body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{self._sign(body)}"

    def verify(self, token: str, *, now: float | None = None) -> WidgetGrant:
        """The token's grant, once: a token starts one call (replays are refused here)."""
        body, _, signature = token.partition(".")
        if not body or not signature or not token.isascii():
            raise TokenError("malformed widget token")
        if not hmac.compare_digest(signature, self._sign(body)):
            raise TokenError("invalid widget token")
        try:
            claims = json.loads(_unb64(body))
            grant = WidgetGrant(
                str(claims["org"]),
                str(claims["agent"]),
                str(claims["origin"]),
                float(claims["exp"]),
            )
        except (ValueError, KeyError, TypeError):
            raise TokenError("malformed widget token") from None
        moment = now or time.time()
        if moment > grant.expires_at:
            raise TokenError("the widget token has expired; ask for a new one")
        nonce = str(claims.get("n", ""))
        self._used = {n: exp for n, exp in self._used.items() if exp >= moment}
        if nonce in self._used:
            raise TokenError("the widget token was already used; ask for a new one")
        self._used[nonce] = grant.expires_at
        return grant

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())
