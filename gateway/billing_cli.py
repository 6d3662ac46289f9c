"""`voicegw billing ...`: an operator's view of balances, plans and usage, and the service key.

Every command prints JSON on stdout so scripts read it without parsing prose: one object for
`balance` and `plan`, JSON lines (one object per call, nothing for none) for `usage`, which can
then be piped to `head` or `jq` a line at a time. `service-key` prints only the key, like
`apikey create`. Money is integer minor units (kopecks) with its currency, as in the ledger.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.cli import CliError, _org, _positive, _settings, _with_db
from gateway.storage.orgs import Organization

PLAN_CODES = ("payg", "basic", "pro", "enterprise")
SERVICE_ORG = "voicegw-service"
# Acts for the gateway (authorize, extend and finalize any tenant's calls): never a tenant's.
GATEWAY_SCOPE = "billing:gateway"
SERVICE_SCOPES = (GATEWAY_SCOPE, "billing:read", "billing:admin")
USAGE_LIMIT = 50


def add_commands(commands: Any) -> None:
    """Registers `billing` and its actions on the top-level subparsers."""
    billing = commands.add_parser("billing", help="balances, plans and usage").add_subparsers(
        dest="billing_command", metavar="ACTION", required=True
    )
    balance = billing.add_parser("balance", help="an organisation's money, plan and minutes")
    balance.add_argument("--org", required=True)
    balance.set_defaults(handler=cmd_balance)

    plan = billing.add_parser("plan", help="change an organisation's plan from the next period")
    plan.add_argument("--org", required=True)
    plan.add_argument("--plan", required=True, choices=PLAN_CODES)
    plan.add_argument(
        "--now",
        action="store_true",
        help="operators: switch for the current period at once, charging no fee",
    )
    plan.set_defaults(handler=cmd_plan)

    usage = billing.add_parser("usage", help="billed calls, newest first, as JSON lines")
    usage.add_argument("--org", required=True)
    usage.add_argument("--limit", type=_positive, default=USAGE_LIMIT, metavar="N")
    usage.set_defaults(handler=cmd_usage)

    key = billing.add_parser(
        "service-key", help=f"a new API key of the service organisation {SERVICE_ORG!r}"
    )
    key.add_argument("--label")
    key.set_defaults(handler=cmd_service_key)

    adjust = billing.add_parser(
        "adjust", help="credit (positive) or debit (negative) a balance by hand, with a reason"
    )
    adjust.add_argument("--org", required=True)
    adjust.add_argument("--amount-minor", type=int, required=True, metavar="N")
    adjust.add_argument("--reason", required=True)
    adjust.add_argument(
        "--key",
        help="idempotency key: the same key and request adjust once (default: a fresh one)",
    )
    adjust.set_defaults(handler=cmd_adjust)

    serve = billing.add_parser(
        "serve", help="run the billing service alone (gateways use --billing-target)"
    )
    serve.add_argument("--host", help="address to listen on (gRPC and HTTP)")
    serve.add_argument("--grpc-port", type=int)
    serve.add_argument("--http-port", type=int)
    serve.add_argument("--tls-cert", type=Path)
    serve.add_argument("--tls-key", type=Path)
    serve.set_defaults(handler=cmd_serve, long_running=True, workers=None, billing_target=None)


def refuse_gateway_scope(org: Organization, scopes: Iterable[str]) -> None:
    """A tenant holding billing:gateway could finalize its own calls at zero seconds."""
    if not org.service and any(s.strip() == GATEWAY_SCOPE for s in scopes):
        raise CliError(
            f"scope {GATEWAY_SCOPE} is for the service organisation only, not {org.name!r} "
            "(use: voicegw billing service-key)"
        )


# -- commands -----------------------------------------------------------------------------------


def cmd_balance(args: argparse.Namespace, _: list[str]) -> int:
    async def work(db: Any) -> int:
        org = await _org(db, args.org)
        _print(await balance_report(db, org))
        return 0

    return _with_db(args, work)


def cmd_plan(args: argparse.Namespace, _: list[str]) -> int:
    from billing.ledger import Ledger
    from billing.plans import Plans

    async def work(db: Any) -> int:
        org = await _org(db, args.org)
        plans = Plans(Ledger(db.pool))
        if args.now:
            sub = await plans.switch_now(org.id, args.plan)
        else:
            sub = await plans.change_plan(org.id, args.plan)
        _print(
            {
                "organisation": org.name,
                "plan": sub.plan_code,
                "next_plan": sub.next_plan_code,
                "period_start": sub.period_start.isoformat(),
                "included_seconds": sub.included_seconds,
                "used_seconds": sub.used_seconds,
                "held_seconds": sub.held_seconds,
            }
        )
        return 0

    return _with_db(args, work)


def cmd_usage(args: argparse.Namespace, _: list[str]) -> int:
    async def work(db: Any) -> int:
        org = await _org(db, args.org)
        for call in await billed_calls(db, org.id, args.limit):
            _print(call)
        return 0

    return _with_db(args, work)


def cmd_service_key(args: argparse.Namespace, _: list[str]) -> int:
    from gateway.auth import create_api_key

    pepper = _settings(args).resolved_key_pepper()

    async def work(db: Any) -> int:
        org = await service_org(db)
        label = args.label or "billing service key"
        issued = await create_api_key(db.pool, pepper, org.id, scopes=SERVICE_SCOPES, label=label)
        print(issued.key)
        print(
            f"created service key {issued.record.prefix} for {SERVICE_ORG} "
            f"(scopes: {','.join(issued.record.scopes)}); it will not be shown again",
            file=sys.stderr,
        )
        return 0

    return _with_db(args, work)


def cmd_adjust(args: argparse.Namespace, _: list[str]) -> int:
    from billing.funds import Funds
    from billing.ledger import Ledger

    if args.amount_minor == 0 or not args.reason.strip():
        raise CliError("--amount-minor must be non-zero and --reason must say why")

    async def work(db: Any) -> int:
        org = await _org(db, args.org)
        ledger = Ledger(db.pool)
        report = await balance_report(db, org)  # rolls the period over; gives the currency
        currency = report["currency"]
        funds = Funds(ledger)
        body = {"amount": args.amount_minor, "currency": currency, "reason": args.reason}
        operation = funds.credit if args.amount_minor > 0 else funds.debit
        posted = await operation(
            org.id,
            abs(args.amount_minor),
            currency,
            source="adjustment",
            key=args.key or f"cli-{uuid.uuid4()}",
            request=body,
        )
        _print({**await balance_report(db, org), "replayed": posted.replayed})
        return 0

    return _with_db(args, work)


def cmd_serve(args: argparse.Namespace, _: list[str]) -> int:
    from billing.server import run
    from gateway.cli import serve_settings
    from gateway.logs import configure_logging

    settings = serve_settings(args)
    configure_logging(settings.log_level, json=settings.log_json)
    return run(settings)


# -- queries ------------------------------------------------------------------------------------


async def balance_report(db: Any, org: Organization) -> dict[str, Any]:
    """The organisation's money and minutes in the current period.

    Reading the subscription rolls a new month's period over first (and charges its fee), as
    any other touch would: a report of last month's minutes as if current would mislead.
    """
    from billing.funds import Funds
    from billing.ledger import Ledger
    from billing.plans import Plans
    from gateway.storage import orgs

    ledger = Ledger(db.pool)
    plans = Plans(ledger)
    sub = await plans.subscription(org.id)
    plan = await plans.plan(sub.plan_code)
    account = await ledger.customer_account(org.id, plan.currency)
    current = await orgs.get(db.pool, org.id)  # the rollover may have suspended it
    return {
        "organisation": org.name,
        "currency": account.currency,
        "balance_minor": account.posted_minor,
        "held_minor": account.held_minor,
        "available_minor": account.available_minor,
        "plan": sub.plan_code,
        "next_plan": sub.next_plan_code,
        "period_start": sub.period_start.isoformat(),
        "included_seconds": sub.included_seconds,
        "used_seconds": sub.used_seconds,
        "held_seconds": sub.held_seconds,
        "billing_suspended": bool(current and current.billing_suspended),
        "outstanding_minor": await Funds(ledger).outstanding(org.id, account.currency),
    }


async def billed_calls(db: Any, org_id: uuid.UUID, limit: int) -> list[dict[str, Any]]:
    """Finalized and expired calls, newest first; open calls have no bill yet."""
    rows = await db.pool.fetch(
        """SELECT call_id, status, created_at, duration_ms, billed_seconds,
                  plan_used_seconds AS plan_seconds, charged_minor, currency, end_reason
           FROM billing_calls WHERE org_id = $1 AND status <> 'open'
           ORDER BY created_at DESC, call_id DESC LIMIT $2""",
        org_id,
        limit,
    )
    return [{k: _json(v) for k, v in row.items()} for row in rows]


async def service_org(db: Any) -> Organization:
    """The service organisation, created on first use; never a tenant that took its name."""
    from gateway.storage import AlreadyExists, orgs

    org = await orgs.get_by_name(db.pool, SERVICE_ORG)
    if org is None:
        try:
            org = await orgs.create(db.pool, SERVICE_ORG, service=True)
        except AlreadyExists:  # created concurrently
            org = await orgs.get_by_name(db.pool, SERVICE_ORG)
    if org is None or not org.service:
        raise CliError(
            f"organisation {SERVICE_ORG!r} exists but is a tenant, not a service organisation"
        )
    return org


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _print(document: dict[str, Any]) -> None:
    print(json.dumps(document))
