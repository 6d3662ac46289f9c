"""Gateway settings: environment first, then an optional TOML file, then defaults.

Secrets (the key pepper, and the database URL because it may carry a password) are accepted from
the environment only, so a config file can be committed, copied into an image or shown in a bug
report without leaking anything. A secret found in the TOML file is an error, not silently
ignored, so nobody believes a secret is set when it is not.
"""

from __future__ import annotations

import contextvars
import os
import secrets
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

CONFIG_ENV = "VOICEGW_CONFIG"
PEPPER_FILE = "key-pepper"
SECRET_FIELDS = frozenset({"key_pepper", "database_url", "widget_secret", "billing_service_key"})
WIDGET_SECRET_FILE = "widget-secret"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

# Set by `Settings.load(config=...)` for the duration of one construction: pydantic-settings
# builds its sources in a classmethod, so an explicit path has to reach it out of band.
_config_override: contextvars.ContextVar[Path | None] = contextvars.ContextVar(
    "voicegw_config_override", default=None
)


def _default_workers() -> int:
    """CPUs this process may actually use (a container's cpuset, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS has no sched_getaffinity
        return max(1, os.cpu_count() or 1)


class ConfigFileError(ValueError):
    """The TOML config file is unreadable or holds something it must not."""


class _TomlFileSource(PydanticBaseSettingsSource):
    """Reads `Settings.load(config=...)` or `$VOICEGW_CONFIG`, refusing secrets in it."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = _config_override.get()
        if path is None and os.environ.get(CONFIG_ENV):
            path = Path(os.environ[CONFIG_ENV])
        self._data: dict[str, Any] = self._read(path) if path is not None else {}

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            data = tomllib.loads(path.expanduser().read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigFileError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigFileError(f"config file {path} is not valid TOML: {exc}") from exc
        leaked = sorted(SECRET_FIELDS & data.keys())
        if leaked:
            names = ", ".join(leaked)
            raise ConfigFileError(
                f"config file {path} sets {names}: secrets are read from the environment only"
            )
        return data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class Settings(BaseSettings):
    """Everything the gateway process is configured with."""

    model_config = SettingsConfigDict(
        env_prefix="VOICEGW_",
        extra="forbid",
        validate_default=True,
        populate_by_name=True,
    )

    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "VOICEGW_DATABASE_URL", "database_url"),
        description="PostgreSQL URL; when unset an embedded server is started (development).",
    )
    state_dir: Path = Path(".voicegw")
    pg_data_dir: Path | None = None
    db_pool_size: int = Field(default=10, ge=1)

    grpc_host: str = "[::]"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    http_host: str = "0.0.0.0"
    http_port: int = Field(default=8080, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None

    key_pepper: SecretStr | None = None

    log_level: LogLevel = "INFO"
    log_json: bool = True

    # Gateway processes sharing the gRPC port on this machine (`serve --workers N`): one Python
    # process saturates a core long before the machine does. Worker i serves HTTP on http_port + i.
    workers: int = Field(default=1, ge=1, le=256)
    stt_workers: int = Field(default_factory=_default_workers, ge=1)
    # Admission (DESIGN §4): calls this process holds at once, and calls one organisation may
    # hold at once on this process unless its `max_concurrent_calls` says otherwise. 8 is from
    # `make bench` (docs/PERFORMANCE.md): one process met the latency aims at 5 calls, missed
    # p99 at 10 in most runs and saturated its core at 15; run one worker per core for more.
    max_sessions: int = Field(default=8, ge=1)
    org_max_calls: int = Field(default=8, ge=1)
    shutdown_grace_secs: float = Field(default=10.0, ge=0)
    # A call with no message from its client for this long ends with client_timeout: a frozen
    # or vanished client must not keep a call (or a bill) open.
    inbound_timeout_secs: float = Field(default=10.0, gt=0)
    # The end watchdog: Pipecat's EndFrame wait has no timeout (#4647), so an ending pipeline
    # gets this long to play out the agent's last words, or this long to stop once cancelled,
    # before it is abandoned and the call is stored anyway.
    end_graceful_timeout_secs: float = Field(default=30.0, gt=0)
    end_cancel_timeout_secs: float = Field(default=5.0, gt=0)
    # Caller audio faster than this many times real time over the window (plus 0.5 s of slack
    # for jitter and up to 3 s of catch-up after falling behind) ends the call with
    # INVALID_ARGUMENT: nobody speaks faster than time passes, and such input costs CPU and
    # billed transcription (gateway/rate_guard.py).
    input_max_speed: float = Field(default=1.5, ge=1.0)
    input_speed_window_secs: float = Field(default=2.0, gt=0)
    # A client that has not taken a response for this long while we have one for it ends with
    # client_timeout: HTTP/2 flow control would otherwise hold its call and queue forever.
    client_stall_secs: float = Field(default=5.0, gt=0)

    # Billing (DESIGN §7, issue 4). In this process by default; `billing_target` sends the
    # gateway's metering to `voicegw billing serve` with a service key from the environment.
    billing_target: str | None = None
    billing_service_key: SecretStr | None = None
    # A call is admitted for `billing_hold_secs` and extended that much again when less than
    # `billing_extend_lead_secs` is left; the caller is warned when about `billing_warning_secs`
    # of money or minutes are left, and the closing line starts `billing_closing_secs` before
    # the money ends, so the call never runs past it.
    billing_hold_secs: int = Field(default=60, ge=1, le=3600)
    # Money for less than this (or than the first hold, if shorter) and the call is refused.
    billing_min_call_secs: int = Field(default=15, ge=1, le=3600)
    billing_extend_lead_secs: float = Field(default=20.0, gt=0)
    billing_warning_secs: float = Field(default=60.0, ge=0)
    billing_closing_secs: float = Field(default=6.0, gt=0)
    billing_heartbeat_secs: float = Field(default=15.0, gt=0)
    # The sweeper settles a call whose heartbeat is older than the TTL, at its last heartbeat.
    # The TTL outlasts the spool's replay retries, and a real end arriving later than the sweep
    # is still charged within the grace period.
    billing_hold_ttl_secs: float = Field(default=600.0, gt=0)
    billing_late_grace_secs: float = Field(default=86400.0, ge=0)
    billing_sweep_interval_secs: float = Field(default=30.0, gt=0)
    billing_spool_retry_secs: float = Field(default=2.0, gt=0)

    # The browser door (issue 5): widget tokens signed with this key (from the environment; a
    # state-dir file in development), valid this long; ICE servers handed to browsers (none on
    # loopback or a LAN; STUN/TURN URLs for real deployments); concurrent WebRTC calls per
    # client IP; a call ends with client_timeout after this long without a data-channel ping or
    # without audio (aiortc alone notices a vanished peer only after ~30 s).
    widget_secret: SecretStr | None = None
    widget_token_ttl_secs: float = Field(default=60.0, gt=0, le=600)
    webrtc_ice_servers: list[str] = Field(default_factory=list)
    webrtc_max_calls_per_ip: int = Field(default=3, ge=1)
    # At most 3: Pipecat's connection treats a peer 3 s without a ping as gone (audio dropped).
    webrtc_ping_timeout_secs: float = Field(default=3.0, gt=0, le=3.0)
    webrtc_audio_timeout_secs: float = Field(default=5.0, gt=0)
    # Proxies whose X-Forwarded-For is believed when taking a client's address (CIDRs).
    trusted_proxies: list[str] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # No dotenv and no secrets dir: one place for secrets (the environment) is easier to audit.
        return (init_settings, env_settings, _TomlFileSource(settings_cls))

    @classmethod
    def load(cls, config: Path | None = None, **overrides: Any) -> Settings:
        """Build settings, reading `config` (instead of `$VOICEGW_CONFIG`) when given."""
        token = _config_override.set(config)
        try:
            return cls(**overrides)
        finally:
            _config_override.reset(token)

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        if self.billing_target and not self.billing_service_key:
            raise ValueError("billing_target needs VOICEGW_BILLING_SERVICE_KEY (a service key)")
        return self

    def read_tls(self) -> tuple[bytes, bytes]:
        """The TLS key and certificate, as gRPC wants them (blocking: run it in a thread)."""
        if self.tls_key is None or self.tls_cert is None:
            raise ValueError("TLS is not configured")
        return self.tls_key.read_bytes(), self.tls_cert.read_bytes()

    def database_dsn(self) -> str | None:
        """The configured PostgreSQL URL in clear, or None for the embedded server."""
        return self.database_url.get_secret_value() if self.database_url else None

    def resolved_key_pepper(self) -> str:
        """The pepper for API-key hashes: `VOICEGW_KEY_PEPPER`, else a per-state-dir file.

        The file fallback exists so development keys keep working across restarts without any
        setup; production sets the variable, identical on every replica.
        """
        if self.key_pepper is not None:
            value = self.key_pepper.get_secret_value()
            if not value:
                raise ValueError("VOICEGW_KEY_PEPPER is set but empty")
            return value
        return _file_secret(self.state_dir, PEPPER_FILE)

    def resolved_widget_secret(self) -> str:
        """The widget tokens' HMAC key: `VOICEGW_WIDGET_SECRET`, else a per-state-dir file
        (every replica verifying another's tokens needs the variable, the same on all)."""
        if self.widget_secret is not None:
            value = self.widget_secret.get_secret_value()
            if len(value) < 16:
                raise ValueError("VOICEGW_WIDGET_SECRET must be at least 16 characters")
            return value
        return _file_secret(self.state_dir, WIDGET_SECRET_FILE)


def ensure_state_dir(state_dir: Path) -> Path:
    """Create the state directory private to this user (it holds the pepper and dev keys)."""
    path = state_dir.expanduser()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _file_secret(state_dir: Path, name: str) -> str:
    path = ensure_state_dir(state_dir) / name
    try:
        return _read_pepper(path)
    except FileNotFoundError:
        pass
    # Write a private temporary file, then link it into place: link() fails if the name exists,
    # so when two processes start together exactly one pepper wins and nobody reads a half file.
    tmp = path.with_name(f".{name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read_pepper(path)


def _read_pepper(path: Path) -> str:
    value = path.read_text(encoding="ascii").strip()
    if not value:
        raise ValueError(f"pepper file {path} is empty; delete it to create a new one")
    return value
