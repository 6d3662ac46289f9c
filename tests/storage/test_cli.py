"""`voicegw` admin commands end to end against the session's database (via DATABASE_URL)."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import tomllib
import types
import uuid
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from pydantic import BaseModel, ConfigDict

from gateway.auth import ApiKeyStore, parse_api_key
from gateway.cli import main
from gateway.storage import api_keys, orgs

PEPPER = "cli-test-pepper-0123456789"


@pytest.fixture
def env(database, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", database.dsn)
    monkeypatch.setenv("VOICEGW_KEY_PEPPER", PEPPER)
    monkeypatch.setenv("VOICEGW_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("VOICEGW_CONFIG", raising=False)


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run the CLI in a thread: it owns its event loop, as it does in a real process."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _name() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


async def test_org_create(env, database, capsys) -> None:
    name = _name()
    code, out, _ = await run(capsys, "org", "create", name)
    assert code == 0
    org = await orgs.get_by_name(database.pool, name)
    assert org is not None and out.strip() == str(org.id)
    code, out, err = await run(capsys, "org", "create", name)
    assert (code, out) == (1, "") and "already exists" in err and err.count("\n") == 1


async def test_org_limit_shows_sets_and_resets(env, database, capsys) -> None:
    name = _name()
    await run(capsys, "org", "create", name)
    org = await orgs.get_by_name(database.pool, name)
    assert org is not None

    code, out, _ = await run(capsys, "org", "limit", name)
    assert code == 0 and json.loads(out) == {"org": name, "max_concurrent_calls": None}
    code, out, _ = await run(capsys, "org", "limit", name, "3")
    assert code == 0 and json.loads(out) == {"org": name, "max_concurrent_calls": 3}
    stored = await orgs.get(database.pool, org.id)
    assert stored is not None and stored.max_concurrent_calls == 3
    code, out, _ = await run(capsys, "org", "limit", name)
    assert json.loads(out)["max_concurrent_calls"] == 3

    code, out, _ = await run(capsys, "org", "limit", name, "default")
    assert code == 0 and json.loads(out) == {"org": name, "max_concurrent_calls": None}
    stored = await orgs.get(database.pool, org.id)
    assert stored is not None and stored.max_concurrent_calls is None


@pytest.mark.parametrize("value", ["0", "-2", "many", "1.5"])
async def test_org_limit_rejects_what_is_not_a_limit(env, database, capsys, value: str) -> None:
    name = _name()
    await run(capsys, "org", "create", name)
    code, out, err = await run(capsys, "org", "limit", name, value)
    assert (code, out) == (2, "") and "limit" in err
    org = await orgs.get_by_name(database.pool, name)
    assert org is not None and org.max_concurrent_calls is None


async def test_org_limit_of_an_unknown_org_fails(env, capsys) -> None:
    code, out, err = await run(capsys, "org", "limit", "no-such-org", "2")
    assert (code, out) == (1, "") and "no organisation named 'no-such-org'" in err


async def test_api_key_lifecycle(env, database, capsys) -> None:
    name = _name()
    await run(capsys, "org", "create", name)
    code, out, err = await run(
        capsys, "apikey", "create", "--org", name, "--scope", "voice", "--scope", "billing:read",
        "--label", "ci",
    )  # fmt: skip
    assert code == 0 and out.count("\n") == 1
    key = out.strip()
    parts = parse_api_key(key)
    assert parts is not None and parts.prefix in err and key not in err

    principal = await ApiKeyStore(database.pool, PEPPER).verify(key)
    assert principal is not None and principal.org_name == name
    assert principal.scopes == ("voice", "billing:read")
    stored = await api_keys.find_by_prefix(database.pool, parts.prefix)
    assert stored is not None and parts.secret not in repr(stored) + stored.secret_hash

    code, out, _ = await run(capsys, "apikey", "list", "--org", name)
    assert code == 0 and parts.prefix in out and "ci" in out and "active" in out
    assert parts.secret not in out

    code, out, _ = await run(capsys, "apikey", "revoke", parts.prefix)
    assert code == 0 and parts.prefix in out
    assert await ApiKeyStore(database.pool, PEPPER).verify(key) is None
    code, _, err = await run(capsys, "apikey", "revoke", parts.prefix)
    assert code == 1 and "no active API key" in err
    code, out, _ = await run(capsys, "apikey", "list", "--org", name)
    assert "revoked" in out


async def test_failures_are_one_line_with_exit_code_1(env, capsys) -> None:
    code, out, err = await run(capsys, "apikey", "create", "--org", "no-such-org")
    assert (code, out) == (1, "")
    assert err.startswith("voicegw: no organisation named 'no-such-org' (create it: voicegw org")
    assert err.count("\n") == 1
    code, _, err = await run(capsys, "apikey", "create", "--org", "x", "--scope", "Bad Scope")
    assert code == 1 and err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["apikey"],
        ["apikey", "create"],
        ["org", "create"],
        ["migrate", "--bogus"],
        ["nope"],
        ["serve", "--workers", "0"],
        ["dev", "--workers", "two"],
    ],
)
async def test_usage_errors_exit_2(argv: list[str], capsys) -> None:
    code, _, err = await run(capsys, *argv)
    assert code == 2 and err


async def test_help_exits_0(capsys) -> None:
    code, out, _ = await run(capsys, "--help")
    assert code == 0 and "apikey" in out and "talk" in out


async def test_migrate_reports_up_to_date(env, capsys) -> None:
    code, out, _ = await run(capsys, "migrate")
    assert (code, out) == (0, "database is up to date\n")


class _StubAgentConfig(BaseModel):
    """Stands in for pipelines.agent_config.AgentConfig until that module exists."""

    model_config = ConfigDict(extra="forbid")
    name: str = "secretary"
    greeting: str = "Hello"

    @classmethod
    def from_toml(cls, text: str) -> _StubAgentConfig:
        return cls.model_validate(tomllib.loads(text))

    def to_toml(self) -> str:
        return tomli_w.dumps(self.model_dump(mode="json"))

    @classmethod
    def default_secretary(cls) -> _StubAgentConfig:
        return cls()


@pytest.fixture
def agent_config(monkeypatch: pytest.MonkeyPatch) -> Any:
    try:
        return importlib.import_module("pipelines.agent_config").AgentConfig
    except ImportError:
        stub = types.ModuleType("pipelines.agent_config")
        stub.AgentConfig = _StubAgentConfig  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "pipelines.agent_config", stub)
        return _StubAgentConfig


async def test_agent_set_and_show(env, agent_config, capsys, tmp_path: Path) -> None:
    org = _name()
    await run(capsys, "org", "create", org)
    config = agent_config.default_secretary()
    path = tmp_path / "agent.toml"
    path.write_text(config.to_toml())

    save = ("agent", "set", "front-desk", "--file", str(path), "--org", org)
    assert await run(capsys, *save) == (0, "1\n", "")
    assert await run(capsys, *save) == (0, "2\n", "")

    code, out, _ = await run(capsys, "agent", "show", "front-desk", "--org", org)
    assert code == 0
    assert agent_config.from_toml(out) == config
    code, out, _ = await run(capsys, "agent", "show", "front-desk", "--org", org, "--version", "1")
    assert code == 0 and agent_config.from_toml(out) == config
    code, out, _ = await run(capsys, "agent", "list", "--org", org)
    assert code == 0 and "front-desk" in out

    code, _, err = await run(capsys, "agent", "show", "front-desk", "--org", org, "--version", "3")
    assert code == 1 and "no agent 'front-desk' version 3" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("this is = = not toml")
    code, _, err = await run(capsys, "agent", "set", "x", "--file", str(bad), "--org", org)
    assert code == 1 and "invalid agent config" in err and err.count("\n") == 1


async def test_talk_hands_its_arguments_to_the_sdk(monkeypatch, capsys) -> None:
    seen: list[list[str]] = []

    def talk_main(argv: list[str]) -> int:
        seen.append(argv)
        return 3

    module = types.ModuleType("voicegw_client.talk")
    module.main = talk_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "voicegw_client.talk", module)
    argv = ["--agent", "secretary", "--help", "hello.wav", "--config", "x"]
    code, _, _ = await run(capsys, "talk", *argv)
    assert code == 3 and seen == [argv]


@pytest.mark.parametrize(("command", "module", "attr"), [
    ("serve", "gateway.server", "main_serve"),
    ("dev", "gateway.dev", "main_dev"),
])  # fmt: skip
async def test_serve_and_dev_call_their_entry_points(monkeypatch, capsys, command, module, attr):
    received: list[Any] = []

    async def entry(args: Any) -> int:
        received.append(args)
        return 0

    fake = types.ModuleType(module)
    setattr(fake, attr, entry)
    monkeypatch.setitem(sys.modules, module, fake)
    argv = [command, "--grpc-port", "6001", "--http-port", "0", "--host", "127.0.0.1"]
    code, _, _ = await run(capsys, *argv, "--tls-cert", "c.pem", "--tls-key", "k.pem")
    assert code == 0
    (args,) = received
    assert (args.grpc_port, args.http_port, args.host) == (6001, 0, "127.0.0.1")
    assert (args.tls_cert, args.tls_key) == (Path("c.pem"), Path("k.pem"))


def test_serve_flags_override_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.cli import _build_parser, serve_settings

    monkeypatch.setenv("VOICEGW_GRPC_PORT", "7000")
    args = _build_parser().parse_args(["serve", "--host", "::1", "--http-port", "0"])
    settings = serve_settings(args)
    assert (settings.grpc_host, settings.http_host) == ("[::1]", "::1")
    assert (settings.grpc_port, settings.http_port) == (7000, 0)


@pytest.mark.parametrize("how", ["flag", "env"])
async def test_serve_with_workers_runs_the_supervisor_not_a_gateway(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    received: list[Any] = []

    async def entry(args: Any) -> int:
        received.append(args)
        return 0

    fake = types.ModuleType("gateway.workers")
    fake.main_supervise = entry  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gateway.workers", fake)
    monkeypatch.setitem(sys.modules, "gateway.server", types.ModuleType("gateway.server"))
    argv = ["serve", "--workers", "3"] if how == "flag" else ["serve"]
    if how == "env":
        monkeypatch.setenv("VOICEGW_WORKERS", "3")
    code, _, _ = await run(capsys, *argv)
    assert code == 0 and len(received) == 1
    from gateway.cli import serve_settings

    assert serve_settings(received[0]).workers == 3


async def test_agent_public_marks_and_unmarks_an_agent_for_the_widget(
    env, database, agent_config, capsys, tmp_path: Path
) -> None:
    from gateway.storage import agents

    org = _name()
    await run(capsys, "org", "create", org)
    path = tmp_path / "agent.toml"
    path.write_text(agent_config.default_secretary().to_toml())
    await run(capsys, "agent", "set", "desk", "--file", str(path), "--org", org)
    code, _, err = await run(capsys, "agent", "public", "desk", "--org", org)
    assert code == 1 and "--origin" in err
    code, _, err = await run(
        capsys, "agent", "public", "desk", "--org", org, "--origin", "https://a.example/page"
    )
    assert code == 1 and "no path" in err
    code, out, _ = await run(
        capsys,
        "agent", "public", "desk", "--org", org,
        "--origin", "https://a.example/", "--origin", "http://localhost:8080",
        "--max-concurrent", "3",
    )  # fmt: skip
    assert code == 0 and "public for https://a.example, http://localhost:8080" in out
    found = await agents.find_public(database.pool, org, "desk")
    assert found is not None
    assert (found.origins, found.max_concurrent, found.daily_budget_secs) == (
        ("https://a.example", "http://localhost:8080"),
        3,
        3600,
    )
    code, out, _ = await run(capsys, "agent", "public", "desk", "--org", org, "--off")
    assert code == 0 and await agents.find_public(database.pool, org, "desk") is None
    code, _, err = await run(capsys, "agent", "public", "nobody", "--org", org, "--off")
    assert code == 1 and "no agent" in err
