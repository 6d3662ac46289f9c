"""API keys `vg_<prefix>_<secret>`: shown once, stored as a peppered hash, checked in constant time.

The prefix is a public identifier (listed, logged, used to revoke and to find the row with one
indexed lookup); only the secret authenticates. The stored hash is HMAC-SHA-256 keyed with a
pepper kept outside the database, so a leaked table (a backup, a replica) does not let anyone
test guesses offline. The secret has 256 bits of entropy, so no slow password hash is needed.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.storage import api_keys as key_rows
from gateway.storage._db import Queryable
from gateway.storage.api_keys import ApiKeyRecord
from gateway.storage.errors import AlreadyExists

KEY_PREFIX = "vg"
DEFAULT_SCOPES: tuple[str, ...] = ("voice",)
_PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # base32, lower case: readable, no '_'
_PREFIX_LEN = 8
_SECRET_BYTES = 32
_KEY_RE = re.compile(r"^vg_([a-z2-7]{8})_([A-Za-z0-9_-]{43,128})$")
_SCOPE_RE = re.compile(r"^[a-z][a-z0-9_.-]*(:[a-z][a-z0-9_.-]*)*$")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the organisation and the key, with what the key may do."""

    org_id: uuid.UUID
    org_name: str
    key_id: uuid.UUID
    scopes: tuple[str, ...]
    # A service organisation's key: the gateway itself (or `voicegw billing serve`'s client).
    service: bool = False

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True, slots=True)
class ParsedKey:
    prefix: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key: `key` is the only time the secret exists outside the caller's hands."""

    key: str = field(repr=False)
    record: ApiKeyRecord


def generate_api_key() -> tuple[str, ParsedKey]:
    """A fresh `vg_<prefix>_<secret>` and its parts."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(_PREFIX_LEN))
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    return f"{KEY_PREFIX}_{prefix}_{secret}", ParsedKey(prefix, secret)


def parse_api_key(key: str) -> ParsedKey | None:
    """Split a presented key; None when it cannot be one of ours (no database lookup)."""
    match = _KEY_RE.match(key.strip()) if isinstance(key, str) else None
    return ParsedKey(match[1], match[2]) if match else None


def hash_secret(pepper: str | bytes, secret: str) -> str:
    key = pepper.encode() if isinstance(pepper, str) else pepper
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def validate_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Deduplicated, well-formed scope names (`voice`, `billing:read`, ...), order kept."""
    result = tuple(dict.fromkeys(s.strip() for s in scopes))
    bad = [s for s in result if not _SCOPE_RE.match(s)]
    if bad or not result:
        raise ValueError(f"invalid scopes: {bad or 'none given'}")
    return result


async def create_api_key(
    db: Queryable,
    pepper: str | bytes,
    org_id: uuid.UUID,
    *,
    scopes: Iterable[str] = DEFAULT_SCOPES,
    label: str | None = None,
) -> IssuedKey:
    """Create and store a key for `org_id`; the returned `key` is never retrievable again."""
    checked = validate_scopes(scopes)
    for _ in range(5):  # 40-bit prefixes: a collision is rare, five in a row is a broken RNG
        key, parts = generate_api_key()
        try:
            record = await key_rows.insert(
                db,
                org_id=org_id,
                prefix=parts.prefix,
                secret_hash=hash_secret(pepper, parts.secret),
                scopes=checked,
                label=label,
            )
        except AlreadyExists:
            continue
        return IssuedKey(key, record)
    raise RuntimeError("could not draw an unused API key prefix")


class ApiKeyStore:
    """Verifies presented keys against the database, with a short positive cache.

    The cache (default 10 s) spares a query per call for busy keys; the price is that a key
    revoked on another replica or by the CLI keeps working for at most `cache_ttl` seconds.
    Failures are never cached, so a newly created key works at once.
    """

    def __init__(
        self,
        db: Queryable,
        pepper: str | bytes,
        *,
        cache_ttl: float = 10.0,
        cache_size: int = 4096,
    ) -> None:
        if not pepper:
            raise ValueError("an empty pepper would store plain SHA-256 hashes")
        self._db = db
        self._pepper = pepper
        self._ttl = cache_ttl
        self._size = cache_size
        self._cache: OrderedDict[tuple[str, str], tuple[float, Principal]] = OrderedDict()

    async def verify(self, key: str) -> Principal | None:
        """The principal for a valid, active key of an active organisation; otherwise None."""
        parts = parse_api_key(key)
        if parts is None:
            return None
        digest = hash_secret(self._pepper, parts.secret)
        cache_key = (parts.prefix, digest)
        cached = self._cache.get(cache_key)
        if cached is not None:
            if cached[0] > time.monotonic():
                return cached[1]
            del self._cache[cache_key]
        found = await key_rows.find_with_org(self._db, parts.prefix)
        if found is None or found.key.revoked or found.org_suspended:
            return None
        if not hmac.compare_digest(digest, found.key.secret_hash):
            return None
        principal = Principal(
            found.key.org_id,
            found.org_name,
            found.key.id,
            found.key.scopes,
            found.org_service,
        )
        await key_rows.touch_last_used(self._db, found.key.id)
        if self._ttl > 0:
            self._cache[cache_key] = (time.monotonic() + self._ttl, principal)
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return principal

    async def create(
        self,
        org_id: uuid.UUID,
        *,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        label: str | None = None,
    ) -> IssuedKey:
        return await create_api_key(self._db, self._pepper, org_id, scopes=scopes, label=label)

    async def revoke(self, prefix: str, *, org_id: uuid.UUID | None = None) -> bool:
        """Revoke and forget any cached verification of it in this process."""
        revoked = await key_rows.revoke(self._db, prefix, org_id=org_id)
        self._cache = OrderedDict((k, v) for k, v in self._cache.items() if k[0] != prefix)
        return revoked

    def clear_cache(self) -> None:
        self._cache.clear()
