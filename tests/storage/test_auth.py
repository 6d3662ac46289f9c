"""API keys: shown once, hashed with a pepper at rest, verified, revoked, scoped."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from gateway.auth import (
    ApiKeyStore,
    IssuedKey,
    create_api_key,
    generate_api_key,
    parse_api_key,
)
from gateway.config import Settings
from gateway.storage import api_keys, orgs
from gateway.storage.orgs import Organization


def test_generated_keys_have_the_documented_shape() -> None:
    key, parts = generate_api_key()
    assert key == f"vg_{parts.prefix}_{parts.secret}"
    assert len(parts.prefix) == 8 and len(parts.secret) >= 43  # 32 random bytes, urlsafe
    assert parse_api_key(key) == parts
    assert parts.secret not in repr(parts)


async def test_create_then_verify(database, org: Organization, api_key: IssuedKey, pepper) -> None:
    principal = await ApiKeyStore(database.pool, pepper).verify(api_key.key)
    assert principal is not None
    assert (principal.org_id, principal.org_name) == (org.id, org.name)
    assert principal.key_id == api_key.record.id
    assert principal.scopes == ("voice",) and principal.has_scope("voice")
    assert api_key.key not in repr(api_key)


async def test_the_secret_never_reaches_the_table(database, api_key: IssuedKey) -> None:
    secret = parse_api_key(api_key.key).secret  # type: ignore[union-attr]
    rows = await database.pool.fetch("SELECT * FROM api_keys")
    dump = " ".join(str(v) for row in rows for v in row.values())
    assert secret not in dump and api_key.key not in dump
    stored = await api_keys.find_by_prefix(database.pool, api_key.record.prefix)
    assert stored is not None and len(stored.secret_hash) == 64


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),  # wrong secret, right prefix
        lambda k: "vg_aaaaaaaa_" + k.split("_", 2)[2],  # unknown prefix
        lambda k: "",
        lambda k: "not a key",
        lambda k: k.replace("vg_", "sk_"),
        lambda k: k[:20],  # truncated
        lambda k: k + " trailing junk",
    ],
)
async def test_wrong_or_malformed_keys_are_refused(database, api_key, pepper, mangle) -> None:
    assert await ApiKeyStore(database.pool, pepper).verify(mangle(api_key.key)) is None


async def test_another_pepper_does_not_verify(database, api_key: IssuedKey) -> None:
    assert await ApiKeyStore(database.pool, "another-pepper").verify(api_key.key) is None


async def test_revoked_keys_stop_working_at_once(database, api_key: IssuedKey, pepper) -> None:
    store = ApiKeyStore(database.pool, pepper)
    assert await store.verify(api_key.key) is not None  # now cached
    assert await store.revoke(api_key.record.prefix)
    assert await store.verify(api_key.key) is None
    assert not await store.revoke(api_key.record.prefix)  # already revoked
    # A fresh store (another replica) agrees, and the row keeps its history.
    assert await ApiKeyStore(database.pool, pepper, cache_ttl=0).verify(api_key.key) is None
    row = await api_keys.find_by_prefix(database.pool, api_key.record.prefix)
    assert row is not None and row.revoked


async def test_suspended_organisation_is_refused(database, org, api_key, pepper) -> None:
    store = ApiKeyStore(database.pool, pepper, cache_ttl=0)
    await orgs.set_suspended(database.pool, org.id, True)
    assert await store.verify(api_key.key) is None
    await orgs.set_suspended(database.pool, org.id, False)
    assert await store.verify(api_key.key) is not None


async def test_scopes_list_and_last_used(database, org: Organization, pepper) -> None:
    issued = await create_api_key(
        database.pool, pepper, org.id, scopes=["voice", "billing:read", "voice"], label="ops"
    )
    assert issued.record.scopes == ("voice", "billing:read")
    with pytest.raises(ValueError, match="invalid scopes"):
        await create_api_key(database.pool, pepper, org.id, scopes=["Bad Scope"])
    principal = await ApiKeyStore(database.pool, pepper).verify(issued.key)
    assert principal is not None and principal.has_scope("billing:read")
    listed = await api_keys.list_for_org(database.pool, org.id)
    assert [(k.prefix, k.label) for k in listed] == [(issued.record.prefix, "ops")]
    assert listed[0].last_used_at is not None


async def test_keys_are_isolated_per_organisation(database, org, api_key, pepper) -> None:
    other = await orgs.create(database.pool, f"{org.name}-other")
    assert await api_keys.list_for_org(database.pool, other.id) == []
    assert not await api_keys.revoke(database.pool, api_key.record.prefix, org_id=other.id)
    assert await ApiKeyStore(database.pool, pepper).verify(api_key.key) is not None


def test_pepper_file_is_created_once_private_and_reused(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", key_pepper=None)
    peppers: list[str] = []
    threads = [
        threading.Thread(target=lambda: peppers.append(settings.resolved_key_pepper()))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(peppers)) == 1 and len(peppers[0]) >= 32
    path = tmp_path / "state" / "key-pepper"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert Settings(state_dir=tmp_path / "state").resolved_key_pepper() == peppers[0]
    assert sorted(os.listdir(tmp_path / "state")) == ["key-pepper"]


def test_pepper_from_the_environment_wins(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("VOICEGW_KEY_PEPPER", "from-env")
    assert Settings(state_dir=tmp_path).resolved_key_pepper() == "from-env"
    assert not (tmp_path / "key-pepper").exists()
