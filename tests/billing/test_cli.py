"""`voicegw billing ...` as a real process against the session's database (DATABASE_URL): what
an operator sees after money and metered calls went through the ledger."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from billing.ledger import Ledger
from billing.metering import CallMeter
from billing.plans import Plans
from gateway.auth import ApiKeyStore, parse_api_key
from gateway.db import Database
from gateway.dev import ensure_default_tenant
from gateway.storage import orgs
from tests.billing.helpers import FakeClock, fund

VOICEGW = str(Path(sys.executable).parent / "voicegw")
PEPPER = "billing-cli-test-pepper-0123456789"


class Cli:
    """Runs `voicegw` with the test database and pepper, as an operator's shell would."""

    def __init__(self, database: Database, state_dir: Path) -> None:
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "VOICEGW_CONFIG"},
            "DATABASE_URL": database.dsn,
            "VOICEGW_KEY_PEPPER": PEPPER,
            "VOICEGW_STATE_DIR": str(state_dir),
        }

    async def run(self, *argv: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            VOICEGW,
            *argv,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()

    async def json(self, *argv: str) -> Any:
        code, out, err = await self.run(*argv)
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(database: Database, tmp_path: Path) -> Cli:
    return Cli(database, tmp_path / "state")


def _meter(database: Database) -> tuple[CallMeter, FakeClock]:
    """A meter on a clock inside the real current month: the CLI reads with the real clock,
    and must find the period these calls were billed in already started."""
    clock = FakeClock(datetime.now(UTC).replace(day=1, hour=12, minute=0, second=0))
    ledger = Ledger(database.pool, clock)
    return CallMeter(ledger, Plans(ledger)), clock


async def _org(database: Database) -> orgs.Organization:
    return await orgs.create(database.pool, f"cli-bill-{uuid.uuid4().hex[:10]}")


async def test_balance_of_a_new_organisation(cli: Cli, database: Database) -> None:
    org = await _org(database)
    report = await cli.json("billing", "balance", "--org", org.name)
    period = datetime.fromisoformat(report.pop("period_start"))
    now = datetime.now(UTC)
    assert (period.year, period.month, period.day) == (now.year, now.month, 1)
    assert report == {
        "organisation": org.name,
        "currency": "RUB",
        "balance_minor": 0,
        "held_minor": 0,
        "available_minor": 0,
        "plan": "payg",
        "next_plan": None,
        "included_seconds": 0,
        "used_seconds": 0,
        "held_seconds": 0,
        "billing_suspended": False,
        "outstanding_minor": 0,
    }


async def test_balance_after_funding_and_metered_calls(cli: Cli, database: Database) -> None:
    meter, clock = _meter(database)
    org = await _org(database)
    await fund(meter.ledger, org.id, 5000)
    done = uuid.uuid4()
    await meter.authorize(org.id, done, 120, key="a1")
    bill = await meter.finalize(done, 61_500, key="f1")  # two started minutes at 1000 each
    assert bill.charged_minor == 2000
    clock.moment += timedelta(seconds=1)
    await meter.authorize(org.id, uuid.uuid4(), 60, key="a2")  # still open: 1000 held

    report = await cli.json("billing", "balance", "--org", org.name)
    assert {k: report[k] for k in ("balance_minor", "held_minor", "available_minor")} == {
        "balance_minor": 3000,
        "held_minor": 1000,
        "available_minor": 2000,
    }
    assert (report["plan"], report["outstanding_minor"], report["billing_suspended"]) == (
        "payg",
        0,
        False,
    )


async def test_outstanding_is_the_organisations_own_shortfall(cli: Cli, database: Database) -> None:
    meter, _ = _meter(database)
    owing, other = await _org(database), await _org(database)
    for org, funded, duration_ms in ((owing, 1000, 150_000), (other, 1000, 90_000)):
        await fund(meter.ledger, org.id, funded)
        call = uuid.uuid4()
        await meter.authorize(org.id, call, 60, key=f"a-{call}")
        await meter.finalize(call, duration_ms, key=f"f-{call}")
    # 150 s bill 180 s = 3000 against 1000 of money: 2000 receivable; 90 s: 1000 receivable.

    report = await cli.json("billing", "balance", "--org", owing.name)
    assert (report["balance_minor"], report["outstanding_minor"]) == (0, 2000)
    assert report["billing_suspended"] is True
    report = await cli.json("billing", "balance", "--org", other.name)
    assert report["outstanding_minor"] == 1000


async def test_usage_lists_billed_calls_newest_first(cli: Cli, database: Database) -> None:
    meter, clock = _meter(database)
    org = await _org(database)
    await fund(meter.ledger, org.id, 10_000)
    billed = []
    for n, duration_ms in enumerate((30_000, 61_000)):
        call = uuid.uuid4()
        await meter.authorize(org.id, call, 120, key=f"a{n}")
        await meter.finalize(call, duration_ms, key=f"f{n}", reason="hangup")
        billed.append((call, clock.now()))
        clock.moment += timedelta(seconds=5)
    await meter.authorize(org.id, uuid.uuid4(), 60, key="open")  # no bill yet: not listed

    code, out, err = await cli.run("billing", "usage", "--org", org.name)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    (newest_id, newest_at), (oldest_id, oldest_at) = billed[1], billed[0]
    assert lines == [
        {
            "call_id": str(newest_id),
            "status": "finalized",
            "created_at": newest_at.isoformat(),
            "duration_ms": 61_000,
            "billed_seconds": 120,
            "plan_seconds": 0,
            "charged_minor": 2000,
            "currency": "RUB",
            "end_reason": "hangup",
        },
        {
            "call_id": str(oldest_id),
            "status": "finalized",
            "created_at": oldest_at.isoformat(),
            "duration_ms": 30_000,
            "billed_seconds": 60,
            "plan_seconds": 0,
            "charged_minor": 1000,
            "currency": "RUB",
            "end_reason": "hangup",
        },
    ]
    code, out, _ = await cli.run("billing", "usage", "--org", org.name, "--limit", "1")
    assert code == 0 and [json.loads(line)["call_id"] for line in out.splitlines()] == [
        str(newest_id)
    ]


async def test_plan_change_waits_for_the_next_period(cli: Cli, database: Database) -> None:
    org = await _org(database)
    sub = await cli.json("billing", "plan", "--org", org.name, "--plan", "basic")
    assert (sub["plan"], sub["next_plan"], sub["included_seconds"]) == ("payg", "basic", 0)
    report = await cli.json("billing", "balance", "--org", org.name)
    assert (report["plan"], report["next_plan"]) == ("payg", "basic")


async def test_plan_now_switches_at_once_without_a_fee(cli: Cli, database: Database) -> None:
    meter, _ = _meter(database)
    org = await _org(database)
    await fund(meter.ledger, org.id, 500)
    await cli.json("billing", "plan", "--org", org.name, "--plan", "basic")
    sub = await cli.json("billing", "plan", "--org", org.name, "--plan", "pro", "--now")
    # The operator's switch replaces the requested change rather than following it.
    assert (sub["plan"], sub["next_plan"], sub["included_seconds"]) == ("pro", None, 30000)

    call = uuid.uuid4()
    await meter.authorize(org.id, call, 7200, key="long")
    bill = await meter.finalize(call, 7_200_000, key="long-end")
    assert (bill.plan_seconds, bill.charged_minor) == (7200, 0)
    # Down to basic's 6000 s with 7200 s already used: the used seconds stay covered.
    sub = await cli.json("billing", "plan", "--org", org.name, "--plan", "basic", "--now")
    assert (sub["plan"], sub["included_seconds"], sub["used_seconds"]) == ("basic", 7200, 7200)
    sub = await cli.json("billing", "plan", "--org", org.name, "--plan", "enterprise", "--now")
    assert (sub["plan"], sub["included_seconds"]) == ("enterprise", None)

    report = await cli.json("billing", "balance", "--org", org.name)
    assert (report["balance_minor"], report["outstanding_minor"]) == (500, 0)
    assert report["billing_suspended"] is False
    fees = await database.pool.fetchval(
        "SELECT count(*) FROM billing_transactions WHERE org_id = $1 AND kind = 'debit:plan_fee'",
        org.id,
    )
    assert fees == 0


async def test_plan_refuses_an_unknown_plan_and_organisation(cli: Cli, database: Database) -> None:
    org = await _org(database)
    code, out, err = await cli.run("billing", "plan", "--org", org.name, "--plan", "gold")
    assert (code, out) == (2, "") and "invalid choice: 'gold'" in err
    code, out, err = await cli.run("billing", "balance", "--org", "no-such-org")
    assert (code, out) == (1, "") and "no organisation named 'no-such-org'" in err
    assert err.count("\n") == 1


async def test_service_key_acts_for_the_gateway(make_database: Any, tmp_path: Path) -> None:
    database: Database = await make_database()  # its own: the service name is global
    cli = Cli(database, tmp_path / "state")
    keys = []
    for label in ("gw-1", "gw-2"):
        code, out, err = await cli.run("billing", "service-key", "--label", label)
        assert code == 0 and out.count("\n") == 1, err
        keys.append(out.strip())
        parts = parse_api_key(keys[-1])
        assert parts is not None and parts.prefix in err and keys[-1] not in err

    store = ApiKeyStore(database.pool, PEPPER)
    principals = [p for key in keys if (p := await store.verify(key)) is not None]
    assert len(principals) == 2 and len({p.org_id for p in principals}) == 1
    for principal in principals:
        assert principal.service
        assert principal.org_name == "voicegw-service"
        assert principal.scopes == ("billing:gateway", "billing:read", "billing:admin")

    # The service organisation may be given billing:gateway by hand too; a tenant may not.
    code, out, _ = await cli.run(
        "apikey", "create", "--org", "voicegw-service", "--scope", "billing:gateway"
    )
    assert code == 0 and parse_api_key(out.strip()) is not None
    tenant = await _org(database)
    code, out, err = await cli.run(
        "apikey", "create", "--org", tenant.name, "--scope", "voice", "--scope", "billing:gateway"
    )
    assert (code, out) == (1, "") and err.count("\n") == 1
    assert "billing:gateway is for the service organisation only" in err
    count = await database.pool.fetchval(
        "SELECT count(*) FROM api_keys WHERE org_id = $1", tenant.id
    )
    assert count == 0
    code, out, _ = await cli.run(
        "apikey", "create", "--org", tenant.name, "--scope", "billing:read"
    )
    assert code == 0 and parse_api_key(out.strip()) is not None


async def test_service_key_refuses_a_tenant_that_took_the_name(
    make_database: Any, tmp_path: Path
) -> None:
    database: Database = await make_database()
    await orgs.create(database.pool, "voicegw-service")
    code, out, err = await Cli(database, tmp_path / "state").run("billing", "service-key")
    assert (code, out) == (1, "") and "is a tenant, not a service organisation" in err
    org = await orgs.get_by_name(database.pool, "voicegw-service")
    assert org is not None and not org.service


async def test_dev_puts_the_default_organisation_on_enterprise(make_database: Any) -> None:
    database: Database = await make_database()
    org = await ensure_default_tenant(database)
    plans = Plans(Ledger(database.pool))
    await plans.change_plan(org.id, "payg")  # by hand, between two starts
    await ensure_default_tenant(database)
    sub = await plans.subscription(org.id)
    assert (sub.plan_code, sub.next_plan_code, sub.included_seconds) == ("enterprise", None, None)
    account = await plans.ledger.customer_account(org.id)
    assert account.posted_minor == 0  # no fee was charged
    granted = await CallMeter(plans.ledger, plans).authorize(org.id, uuid.uuid4(), 600, key="d")
    assert (granted.authorized_seconds, granted.held_minor) == (600, 0)


async def test_adjust_credits_and_debits_once_per_key(cli: Cli, database: Database) -> None:
    org = await orgs.create(database.pool, f"adj-{uuid.uuid4().hex[:8]}")
    args = ("billing", "adjust", "--org", org.name, "--reason", "goodwill", "--key", "a1")
    credited = await cli.json(*args, "--amount-minor", "5000")
    assert (credited["balance_minor"], credited["replayed"]) == (5000, False)
    again = await cli.json(*args, "--amount-minor", "5000")
    assert (again["balance_minor"], again["replayed"]) == (5000, True)
    code, _, err = await cli.run(*args, "--amount-minor", "7000")  # same key, other request
    assert code == 1 and "already used" in err
    debited = await cli.json(
        "billing", "adjust", "--org", org.name, "--reason", "fee", "--amount-minor", "-6000"
    )
    assert (debited["balance_minor"], debited["outstanding_minor"]) == (0, 1000)
    assert debited["billing_suspended"] is True
    code, _, err = await cli.run(
        "billing", "adjust", "--org", org.name, "--reason", " ", "--amount-minor", "10"
    )
    assert code != 0 and "reason" in err
