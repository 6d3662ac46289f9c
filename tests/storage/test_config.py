"""Settings: VOICEGW_ environment, DATABASE_URL, an optional TOML file, secrets from env only."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.config import ConfigFileError, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "VOICEGW_CONFIG", "VOICEGW_KEY_PEPPER", "VOICEGW_GRPC_PORT"):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = Settings()
    assert (settings.grpc_host, settings.grpc_port, settings.http_port) == ("[::]", 50051, 8080)
    assert settings.database_dsn() is None and settings.log_json is True
    assert settings.max_sessions == 8 and settings.shutdown_grace_secs == 10
    assert settings.stt_workers >= 1 and settings.state_dir == Path(".voicegw")


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw-5ecr3t@db/voicegw")
    monkeypatch.setenv("VOICEGW_GRPC_PORT", "6000")
    monkeypatch.setenv("VOICEGW_LOG_LEVEL", "debug")
    monkeypatch.setenv("VOICEGW_WIDGET_SECRET", "widget-key-5ecr3t-0123456789")
    settings = Settings()
    assert settings.database_dsn() == "postgresql://u:pw-5ecr3t@db/voicegw"
    assert "5ecr3t" not in repr(settings)  # neither the DSN's password nor the widget key
    assert (settings.grpc_port, settings.log_level) == (6000, "DEBUG")


def test_toml_file_below_the_environment(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "voicegw.toml"
    config.write_text("grpc_port = 7000\nhttp_port = 9000\nlog_json = false\n")
    monkeypatch.setenv("VOICEGW_CONFIG", str(config))
    monkeypatch.setenv("VOICEGW_GRPC_PORT", "6000")
    settings = Settings()
    assert (settings.grpc_port, settings.http_port, settings.log_json) == (6000, 9000, False)
    assert Settings.load(None).http_port == 9000
    other = tmp_path / "other.toml"
    other.write_text("http_port = 9100\n")
    assert Settings.load(other).http_port == 9100


@pytest.mark.parametrize("secret", ['key_pepper = "x"', 'database_url = "postgresql://a/b"'])
def test_secrets_in_the_file_are_refused(tmp_path: Path, secret: str) -> None:
    config = tmp_path / "voicegw.toml"
    config.write_text(secret + "\n")
    with pytest.raises(ConfigFileError, match="environment only"):
        Settings.load(config)


def test_unknown_keys_and_bad_values_are_errors(tmp_path: Path) -> None:
    config = tmp_path / "voicegw.toml"
    config.write_text("grpc_prot = 1\n")
    with pytest.raises(ValidationError, match="grpc_prot"):
        Settings.load(config)
    with pytest.raises(ValidationError, match="tls_cert and tls_key"):
        Settings(tls_cert=Path("cert.pem"))
    with pytest.raises(ConfigFileError, match="cannot read"):
        Settings.load(tmp_path / "missing.toml")


def test_admission_and_watchdog_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert (settings.org_max_calls, settings.max_sessions) == (8, 8)
    assert (settings.end_graceful_timeout_secs, settings.end_cancel_timeout_secs) == (30, 5)
    monkeypatch.setenv("VOICEGW_ORG_MAX_CALLS", "3")
    monkeypatch.setenv("VOICEGW_END_CANCEL_TIMEOUT_SECS", "0.5")
    settings = Settings()
    assert (settings.org_max_calls, settings.end_cancel_timeout_secs) == (3, 0.5)
    for bad in ({"org_max_calls": 0}, {"end_graceful_timeout_secs": 0}):
        with pytest.raises(ValidationError):
            Settings(**bad)


def test_workers_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().workers == 1  # one process owns its port unless asked otherwise
    monkeypatch.setenv("VOICEGW_WORKERS", "4")
    assert Settings().workers == 4
    with pytest.raises(ValidationError):
        Settings(workers=0)
