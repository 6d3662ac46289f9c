"""What an operator relies on: metrics, JSON logs with call ids and masked numbers, TLS, the
development key of `make run`, agent versions recorded per call, and the `say` helper."""

from __future__ import annotations

import datetime
import io
import ipaddress
import json
import logging
import os
import ssl
import stat
import uuid
import wave
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from voicegw_client import SessionStarted, VoiceClient, VoiceGatewayError

from gateway.cli import main as cli_main
from gateway.config import Settings
from gateway.db import Database
from gateway.dev import ensure_default_tenant, ensure_dev_key
from gateway.logs import configure_logging
from gateway.server import Gateway
from gateway.storage import agents, calls
from pipelines.agent_config import AgentConfig
from tests.conftest import TEST_PEPPER
from tests.integration.caller import ScriptedCaller
from tests.integration.conftest import Tenant


async def one_call(gateway: Gateway, key: str, **kwargs: object) -> tuple[uuid.UUID, str]:
    async with VoiceClient(f"127.0.0.1:{gateway.grpc_port}", key) as client:
        caller = await ScriptedCaller(client, "secretary", **kwargs).start()  # type: ignore[arg-type]
        await caller.wait_for(lambda log: bool(log.audio_bytes()))
        await caller.hangup()
        log = await caller.wait_end()
        await caller.close()
    started = log.of(SessionStarted)[0]
    return uuid.UUID(started.session_id), log.ended.reason if log.ended else ""


async def test_metrics_count_calls_by_door_and_reason(gateway: Gateway, tenant: Tenant) -> None:
    url = f"http://127.0.0.1:{gateway.http_port}/metrics"

    async def ended_hangups(session: aiohttp.ClientSession) -> float:
        async with session.get(url) as response:
            assert response.status == 200
            text = await response.text()
        for line in text.splitlines():
            if line.startswith('voicegw_calls_ended_total{door="grpc",reason="caller_hangup"}'):
                return float(line.split()[-1])
        return 0.0

    async with aiohttp.ClientSession() as http:
        before = await ended_hangups(http)
        await one_call(gateway, tenant.key)
        after = await ended_hangups(http)
        async with http.get(url) as response:
            text = await response.text()
    assert after == before + 1
    for name in (
        "voicegw_calls_active",
        "voicegw_calls_started_total",
        "voicegw_turn_latency_seconds",
    ):
        assert name in text


async def test_logs_are_json_with_call_id_and_masked_numbers(
    gateway: Gateway, tenant: Tenant
) -> None:
    stream = io.StringIO()
    handler = configure_logging("INFO", json=True, stream=stream)
    try:
        call_id, _ = await one_call(gateway, tenant.key, caller_number="+14155550123")
    finally:
        logging.getLogger().removeHandler(handler)
    records = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    mine = [r for r in records if r.get("call_id") == str(call_id)]
    assert any("call started" in r["msg"] and "caller=+1415" in r["msg"] for r in mine)
    assert any("call ended" in r["msg"] for r in mine)
    assert "4155550123" not in stream.getvalue()


async def test_calls_record_the_agent_version_they_used(
    gateway: Gateway, tenant: Tenant, database: Database
) -> None:
    first, _ = await one_call(gateway, tenant.key)
    data = AgentConfig.default_secretary().to_dict()
    data["greeting"] = "Hello from version two."
    version = await agents.create_or_new_version(database.pool, tenant.org_id, "secretary", data)
    second, _ = await one_call(gateway, tenant.key)
    assert version == 2
    record_1 = await calls.get_call(database.pool, first)
    record_2 = await calls.get_call(database.pool, second)
    assert record_1 is not None and record_2 is not None
    assert (record_1.agent_version, record_2.agent_version) == (1, 2)
    turns = await calls.list_turns(database.pool, second)
    assert turns[0].text == "Hello from version two."


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_serving(database: Database, tenant: Tenant, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    settings = Settings.load(
        None,
        grpc_host="127.0.0.1",
        grpc_port=0,
        http_host="127.0.0.1",
        http_port=0,
        state_dir=tmp_path / "state",
        key_pepper=TEST_PEPPER,
        stt_workers=1,
        tls_cert=cert,
        tls_key=key,
    )
    gw = Gateway(settings, database=database)
    await gw.start()
    try:
        target = f"localhost:{gw.grpc_port}"
        async with VoiceClient(target, tenant.key, root_certificates=cert.read_bytes()) as client:
            caller = await ScriptedCaller(client, "secretary").start()
            await caller.wait_for(lambda log: bool(log.of(SessionStarted)))
            await caller.hangup()
            log = await caller.wait_end()
            await caller.close()
        assert log.status_code == "OK"
        # A plaintext client cannot talk to the TLS port.
        async with VoiceClient(target, tenant.key) as plain:
            with pytest.raises(VoiceGatewayError) as refused:
                caller = await ScriptedCaller(plain, "secretary").start()
                await caller.wait_end(timeout=30)
                raise caller.log.error or AssertionError("plaintext call was not refused")
        assert refused.value.code == "UNAVAILABLE"
        # The HTTP side (widget, offers, metrics) is served over TLS with the same certificate.
        context = ssl.create_default_context(cafile=str(cert))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://localhost:{gw.http_port}/healthz", ssl=context) as ok:
                assert ok.status == 200
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://localhost:{gw.http_port}/healthz") as plain_http:
                    await plain_http.read()
    finally:
        await gw.stop(grace_secs=1)


async def test_dev_key_written_once_0600_and_reused(make_database: object, tmp_path: Path) -> None:
    database: Database = await make_database()  # type: ignore[operator]
    settings = Settings.load(None, state_dir=tmp_path / "state", key_pepper=TEST_PEPPER)
    org = await ensure_default_tenant(database)
    again = await ensure_default_tenant(database)
    assert again.id == org.id
    path, created = await ensure_dev_key(database, settings, org.id)
    assert created and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = path.read_text().strip()
    path_2, created_2 = await ensure_dev_key(database, settings, org.id)
    assert path_2 == path and not created_2 and path.read_text().strip() == key
    record = await agents.get_current(database.pool, org.id, "secretary")
    assert record is not None and record.version == 1


def test_say_writes_speech_wav(tmp_path: Path) -> None:
    out = tmp_path / "q.wav"
    assert (
        cli_main(["say", "what are your opening hours", "--out", str(out), "--rate", "8000"]) == 0
    )
    with wave.open(str(out)) as wav:
        assert wav.getframerate() == 8000 and wav.getnchannels() == 1
        assert 0.8 < wav.getnframes() / 8000 < 3.0
