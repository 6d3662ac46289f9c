"""`voicegw`: run the gateway and administer organisations, API keys, agents and billing.

Admin commands print their result on stdout (a new key is the only thing `apikey create` prints,
so `KEY=$(voicegw apikey create --org acme)` works) and a one-line reason on stderr when they
fail. Exit codes: 0 ok, 1 failure, 2 usage error. Admin commands apply pending migrations first:
they are idempotent and locked, and a fresh development database then just works.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import re
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import Settings

if TYPE_CHECKING:
    from gateway.storage.orgs import Organization

Handler = Callable[[argparse.Namespace, list[str]], int]


class CliError(Exception):
    """A failure explained to the user in one line (exit code 1)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args, extra = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_usage(sys.stderr)
        print("voicegw: error: a command is required", file=sys.stderr)
        return 2
    if extra and not getattr(args, "passthrough", False):
        parser.print_usage(sys.stderr)
        print(f"voicegw: error: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
        return 2
    try:
        return handler(args, extra)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        print(f"voicegw: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if getattr(args, "long_running", False):
            raise  # a server crash deserves its traceback
        print(f"voicegw: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__name__ == "ValidationError":  # pydantic
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "value"
        return f"invalid {where}: {first.get('msg')}"
    text = " ".join(str(exc).split())
    if isinstance(exc, (OSError, ValueError, RuntimeError)) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- parser -----------------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicegw", description="Self-hosted voice gateway.")
    parser.add_argument("--config", type=Path, help="TOML config file (default: $VOICEGW_CONFIG)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    for name, handler, text in (
        ("serve", _cmd_serve, "run the gateway"),
        ("dev", _cmd_dev, "run the gateway for development (embedded database, sample agent)"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--host", help="address to listen on (gRPC and HTTP)")
        sub.add_argument("--grpc-port", type=int)
        sub.add_argument("--http-port", type=int)
        sub.add_argument("--tls-cert", type=Path)
        sub.add_argument("--tls-key", type=Path)
        sub.add_argument(
            "--workers",
            type=_positive,
            metavar="N",
            help="gateway processes sharing the gRPC port; worker i serves HTTP on http-port + i",
        )
        sub.add_argument(
            "--billing-target",
            metavar="HOST:PORT",
            help="meter calls through `voicegw billing serve` there (service key in "
            "VOICEGW_BILLING_SERVICE_KEY) instead of in this process",
        )
        sub.set_defaults(handler=handler, long_running=True)
        if name == "serve":  # set by the parent of `--workers N` for each worker it starts
            sub.add_argument("--supervisor-fd", type=int, help=argparse.SUPPRESS)

    talk = commands.add_parser(
        "talk", help="talk to an agent (options: voicegw talk --help)", add_help=False
    )
    talk.set_defaults(handler=_cmd_talk, passthrough=True)

    migrate = commands.add_parser("migrate", help="apply pending database migrations")
    migrate.set_defaults(handler=_cmd_migrate)

    org = commands.add_parser("org", help="organisations").add_subparsers(
        dest="org_command", metavar="ACTION", required=True
    )
    org_create = org.add_parser("create", help="create an organisation")
    org_create.add_argument("name")
    org_create.set_defaults(handler=_cmd_org_create)
    org_limit = org.add_parser(
        "limit", help="show or set an organisation's concurrent-call limit (per gateway process)"
    )
    org_limit.add_argument("name")
    org_limit.add_argument(
        "limit",
        nargs="?",
        type=_call_limit,
        metavar="N|default",
        help="calls at once (>= 1), or 'default' for the gateway's org_max_calls",
    )
    org_limit.set_defaults(handler=_cmd_org_limit)

    key = commands.add_parser("apikey", help="API keys").add_subparsers(
        dest="key_command", metavar="ACTION", required=True
    )
    key_create = key.add_parser("create", help="create a key (printed once)")
    key_create.add_argument("--org", required=True)
    key_create.add_argument("--scope", action="append", dest="scopes", metavar="SCOPE")
    key_create.add_argument("--label")
    key_create.set_defaults(handler=_cmd_key_create)
    key_list = key.add_parser("list", help="list an organisation's keys")
    key_list.add_argument("--org", required=True)
    key_list.set_defaults(handler=_cmd_key_list)
    key_revoke = key.add_parser("revoke", help="revoke a key by its prefix")
    key_revoke.add_argument("prefix")
    key_revoke.set_defaults(handler=_cmd_key_revoke)

    agent = commands.add_parser("agent", help="agents").add_subparsers(
        dest="agent_command", metavar="ACTION", required=True
    )
    agent_show = agent.add_parser("show", help="print an agent's config as TOML")
    agent_show.add_argument("name")
    agent_show.add_argument("--org", default="default")
    agent_show.add_argument("--version", type=int)
    agent_show.set_defaults(handler=_cmd_agent_show)
    agent_set = agent.add_parser("set", help="store a new version of an agent from TOML")
    agent_set.add_argument("name")
    agent_set.add_argument("--file", required=True, type=Path, help="agent TOML ('-' = stdin)")
    agent_set.add_argument("--org", default="default")
    agent_set.set_defaults(handler=_cmd_agent_set)
    agent_list = agent.add_parser("list", help="list an organisation's agents")
    agent_list.add_argument("--org", default="default")
    agent_list.set_defaults(handler=_cmd_agent_list)
    agent_public = agent.add_parser(
        "public", help="let web pages call an agent through the browser widget (or stop: --off)"
    )
    agent_public.add_argument("name")
    agent_public.add_argument("--org", default="default")
    agent_public.add_argument(
        "--origin",
        action="append",
        dest="origins",
        default=[],
        metavar="URL",
        help="a page origin allowed to call it, e.g. https://shop.example (repeatable)",
    )
    agent_public.add_argument("--max-concurrent", type=_positive, default=2, metavar="N")
    agent_public.add_argument("--daily-budget-secs", type=_positive, default=3600, metavar="N")
    agent_public.add_argument("--off", action="store_true", help="no longer public")
    agent_public.set_defaults(handler=_cmd_agent_public)

    # Its own module keeps this one small; imported here, after this module has loaded, since
    # it builds on this module's plumbing.
    from gateway import billing_cli

    billing_cli.add_commands(commands)

    say = commands.add_parser("say", help="speak TEXT with espeak-ng into a WAV (test audio)")
    say.add_argument("text")
    say.add_argument("--out", required=True, type=Path, help="WAV file to write")
    say.add_argument("--voice", default="en-us")
    say.add_argument("--rate", type=int, help="sample rate of the WAV (default: espeak's)")
    say.set_defaults(handler=_cmd_say)
    return parser


# -- plumbing ---------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.load(args.config)


def serve_settings(args: argparse.Namespace) -> Settings:
    """Settings for `serve`/`dev`: config file and environment, then the command-line flags."""
    overrides: dict[str, Any] = {}
    if args.host:
        bare = args.host.strip("[]")
        overrides["grpc_host"] = f"[{bare}]" if ":" in bare else bare  # gRPC wants [v6]
        overrides["http_host"] = bare
    for flag in ("grpc_port", "http_port", "tls_cert", "tls_key", "workers", "billing_target"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    return Settings.load(args.config, **overrides)


def _with_db(args: argparse.Namespace, work: Callable[[Any], Awaitable[int]]) -> int:
    """Open the database (migrated), run `work(db)`, close; all in one short event loop."""
    from gateway.db import Database

    settings = _settings(args)

    async def run() -> int:
        db = await Database.open(settings)
        try:
            await db.migrate()
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(run())


async def _org(db: Any, name: str) -> Organization:
    from gateway.storage import orgs

    org = await orgs.get_by_name(db.pool, name)
    if org is None:
        raise CliError(f"no organisation named {name!r} (create it: voicegw org create {name})")
    return org


async def _org_id(db: Any, name: str) -> uuid.UUID:
    return (await _org(db, name)).id


def _run_entry(fn: Callable[..., Any], *fn_args: Any) -> int:
    """Call an entry point owned elsewhere, sync or async, and turn its result into a code."""
    result = fn(*fn_args)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return int(result or 0)


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


# -- commands ---------------------------------------------------------------------------------


def _cmd_serve(args: argparse.Namespace, _: list[str]) -> int:
    # Looked up at run time: the server (and its Pipecat imports) load only for `serve`, and
    # not in the parent of several workers, which serves nothing.
    if getattr(args, "supervisor_fd", None) is None and serve_settings(args).workers > 1:
        return _run_entry(importlib.import_module("gateway.workers").main_supervise, args)
    return _run_entry(importlib.import_module("gateway.server").main_serve, args)


def _cmd_dev(args: argparse.Namespace, _: list[str]) -> int:
    return _run_entry(importlib.import_module("gateway.dev").main_dev, args)


def _cmd_talk(_: argparse.Namespace, extra: list[str]) -> int:
    from voicegw_client.talk import main as talk_main

    return _run_entry(talk_main, extra)


def _cmd_say(args: argparse.Namespace, _: list[str]) -> int:
    from pipelines.engines.espeak import EspeakError, write_wav

    try:
        synthesis = write_wav(args.out, args.text, voice=args.voice, sample_rate=args.rate)
    except (EspeakError, OSError) as exc:
        raise CliError(str(exc)) from None
    print(f"{args.out}: {synthesis.duration_secs:.2f} s of speech", file=sys.stderr)
    return 0


def _cmd_migrate(args: argparse.Namespace, _: list[str]) -> int:
    from gateway.db import Database

    settings = _settings(args)

    async def run() -> int:
        db = await Database.open(settings)
        try:
            applied = await db.migrate()
        finally:
            await db.close()
        print("applied: " + ", ".join(applied) if applied else "database is up to date")
        return 0

    return asyncio.run(run())


def _cmd_org_create(args: argparse.Namespace, _: list[str]) -> int:
    from gateway.storage import AlreadyExists, orgs

    async def work(db: Any) -> int:
        try:
            org = await orgs.create(db.pool, args.name)
        except AlreadyExists as exc:
            raise CliError(str(exc)) from None
        print(org.id)
        return 0

    return _with_db(args, work)


_DEFAULT_LIMIT = "default"


def _positive(text: str) -> int:
    """argparse type: an integer >= 1 (a usage error otherwise, exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _call_limit(text: str) -> int | str:
    """argparse type: a positive integer, or 'default' (a usage error otherwise, exit 2)."""
    return text if text == _DEFAULT_LIMIT else _positive(text)


def _cmd_org_limit(args: argparse.Namespace, _: list[str]) -> int:
    from gateway.storage import orgs

    async def work(db: Any) -> int:
        org_id = await _org_id(db, args.name)
        if args.limit is not None:
            limit = None if args.limit == _DEFAULT_LIMIT else int(args.limit)
            await orgs.set_call_limit(db.pool, org_id, limit)
        org = await orgs.get(db.pool, org_id)
        if org is None:  # deleted meanwhile
            raise CliError(f"no organisation named {args.name!r}")
        # JSON, so scripts read the limit without parsing prose; null means the default.
        print(json.dumps({"org": org.name, "max_concurrent_calls": org.max_concurrent_calls}))
        return 0

    return _with_db(args, work)


def _cmd_key_create(args: argparse.Namespace, _: list[str]) -> int:
    from gateway.auth import DEFAULT_SCOPES, create_api_key
    from gateway.billing_cli import refuse_gateway_scope

    pepper = _settings(args).resolved_key_pepper()
    scopes = args.scopes or DEFAULT_SCOPES

    async def work(db: Any) -> int:
        org = await _org(db, args.org)
        refuse_gateway_scope(org, scopes)
        issued = await create_api_key(db.pool, pepper, org.id, scopes=scopes, label=args.label)
        print(issued.key)
        print(
            f"created key {issued.record.prefix} for {args.org} "
            f"(scopes: {','.join(issued.record.scopes)}); it will not be shown again",
            file=sys.stderr,
        )
        return 0

    return _with_db(args, work)


def _cmd_key_list(args: argparse.Namespace, _: list[str]) -> int:
    from gateway.storage import api_keys

    async def work(db: Any) -> int:
        keys = await api_keys.list_for_org(db.pool, await _org_id(db, args.org))
        rows = [
            (
                k.prefix,
                ",".join(k.scopes),
                k.label or "",
                _when(k.created_at),
                _when(k.last_used_at),
                "revoked " + _when(k.revoked_at) if k.revoked_at else "active",
            )
            for k in keys
        ]
        _table(("PREFIX", "SCOPES", "LABEL", "CREATED", "LAST USED", "STATUS"), rows)
        return 0

    return _with_db(args, work)


def _cmd_key_revoke(args: argparse.Namespace, _: list[str]) -> int:
    from gateway.auth import parse_api_key
    from gateway.storage import api_keys

    given: str = args.prefix.strip()
    parsed = parse_api_key(given)
    prefix = parsed.prefix if parsed else given.removeprefix("vg_").rstrip("_")

    async def work(db: Any) -> int:
        if not await api_keys.revoke(db.pool, prefix):
            raise CliError(f"no active API key with prefix {prefix!r}")
        print(f"revoked {prefix}")
        return 0

    return _with_db(args, work)


def _cmd_agent_show(args: argparse.Namespace, _: list[str]) -> int:
    from gateway.storage import agents
    from pipelines.agent_config import AgentConfig

    async def work(db: Any) -> int:
        org_id = await _org_id(db, args.org)
        if args.version is None:
            record = await agents.get_current(db.pool, org_id, args.name)
        else:
            record = await agents.get_version(db.pool, org_id, args.name, args.version)
        if record is None:
            version = "" if args.version is None else f" version {args.version}"
            raise CliError(f"no agent {args.name!r}{version} in organisation {args.org!r}")
        sys.stdout.write(_ensure_newline(AgentConfig.model_validate(record.config).to_toml()))
        return 0

    return _with_db(args, work)


def _cmd_agent_set(args: argparse.Namespace, _: list[str]) -> int:
    from gateway.storage import agents
    from pipelines.agent_config import AgentConfig

    path: Path = args.file
    text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    try:
        config = AgentConfig.from_toml(text)
    except (ValueError, TypeError) as exc:  # AgentConfigError and TOML errors are ValueErrors
        raise CliError(f"{path}: invalid agent config: {_one_line(exc)}") from None
    document = config.model_dump(mode="json")

    async def work(db: Any) -> int:
        org_id = await _org_id(db, args.org)
        version = await agents.create_or_new_version(db.pool, org_id, args.name, document)
        print(version)
        return 0

    return _with_db(args, work)


def _cmd_agent_list(args: argparse.Namespace, _: list[str]) -> int:
    from gateway.storage import agents

    async def work(db: Any) -> int:
        found = await agents.list_agents(db.pool, await _org_id(db, args.org))
        rows = [
            (a.name, str(a.current_version), "yes" if a.public else "no", _when(a.updated_at))
            for a in found
        ]
        _table(("NAME", "VERSION", "PUBLIC", "UPDATED"), rows)
        return 0

    return _with_db(args, work)


def _cmd_agent_public(args: argparse.Namespace, _: list[str]) -> int:
    from gateway.storage import agents

    origins = [o.rstrip("/") for o in args.origins]
    if not args.off and not origins:
        raise CliError("give at least one --origin (the pages that may embed the widget)")
    bad = [o for o in origins if not re.match(r"^https?://[^/\s]+$", o)]
    if bad:
        raise CliError(f"an origin is scheme://host[:port] with no path: {', '.join(bad)}")

    async def work(db: Any) -> int:
        org_id = await _org_id(db, args.org)
        found = await agents.set_widget(
            db.pool,
            org_id,
            args.name,
            public=not args.off,
            origins=[] if args.off else origins,
            max_concurrent=args.max_concurrent,
            daily_budget_secs=args.daily_budget_secs,
        )
        if not found:
            raise CliError(f"no agent {args.name!r} in {args.org!r}")
        state = "no longer public" if args.off else f"public for {', '.join(origins)}"
        print(f"{args.org}/{args.name} is {state}")
        return 0

    return _with_db(args, work)


# -- output -----------------------------------------------------------------------------------


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def _ensure_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
