"""Structured logs: one JSON object per line on stderr, tagged with the call they belong to.

Two logging systems meet here: our code and the libraries use `logging`, Pipecat uses loguru.
Both end in the same stdlib handler, so every line has the same shape, the same `call_id` (a
ContextVar, so it follows the call's tasks without being passed around) and the same masking of
phone numbers: callers' numbers are personal data and logs are kept, copied and shipped.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import loguru

call_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("call_id", default=None)

# "+" then 8-15 digits, not glued to other digits or word characters (so "v+12345678x" and ids
# are left alone, while "tel:+14155550123" and "from +441632960961," are masked).
_E164 = re.compile(r"(?<![\w+])\+\d{8,15}(?![\d])")

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "call_id", "taskName"}
)

_HANDLER_MARK = "_voicegw_handler"


def mask_phone(number: str) -> str:
    """Keep enough of a number to tell calls apart (country/area and last two digits), no more."""
    digits = "".join(ch for ch in number if ch.isdigit())
    if not digits:
        return number
    n = len(digits)
    head = min(4, max(0, n - 6))
    tail = 2 if n > 2 else 0
    masked = digits[:head] + "*" * (n - head - tail) + digits[n - tail :]
    return ("+" if number.lstrip().startswith("+") else "") + masked


def mask_phones_in(text: str) -> str:
    """Mask every E.164-looking number inside free text."""
    return _E164.sub(lambda m: mask_phone(m.group(0)), text)


def set_call_id(call_id: str | None) -> contextvars.Token[str | None]:
    """Tag this context's log records with `call_id`; pass the token to `reset_call_id`."""
    return call_id_var.set(call_id)


def reset_call_id(token: contextvars.Token[str | None]) -> None:
    call_id_var.reset(token)


@contextmanager
def call_context(call_id: str | None) -> Iterator[None]:
    """Every record logged inside the block (and in tasks it creates) carries `call_id`."""
    token = call_id_var.set(call_id)
    try:
        yield
    finally:
        call_id_var.reset(token)


class ContextFilter(logging.Filter):
    """Adds `call_id` and masks phone numbers; on the handler so it covers every logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "call_id", None) is None:
            record.call_id = call_id_var.get()
        message = record.getMessage()
        masked = mask_phones_in(message)
        if masked != message or record.args:
            # Freeze the formatted, masked text so no later formatter sees the raw args.
            record.msg, record.args = masked, None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, key, mask_phones_in(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra fields passed with `extra=` become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None)
        if call_id is not None:
            entry["call_id"] = call_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = mask_phones_in(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exc"] = mask_phones_in(record.exc_text)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal (`log_json = false`)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s%(call)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        call_id = getattr(record, "call_id", None)
        record.call = f" [{call_id}]" if call_id else ""
        text = super().format(record)
        return mask_phones_in(text) if record.exc_info else text


def configure_logging(
    level: str | int = "INFO",
    json: bool = True,
    *,
    pipecat_level: str = "WARNING",
    stream: TextIO | None = None,
) -> logging.Handler:
    """Install the single stderr handler (idempotent) and route loguru into it.

    Pipecat is held at WARNING by default: its INFO/DEBUG output (the banner, per-frame chatter)
    would otherwise dwarf the gateway's own lines at any real call volume.
    """
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, _HANDLER_MARK, False):
            root.removeHandler(existing)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    _route_loguru(root.level, pipecat_level.upper())
    return handler


def _route_loguru(level: int, pipecat_level: str) -> None:
    try:
        from loguru import logger
    except ImportError:  # the gateway always has it through Pipecat; keep logs usable without
        return
    logger.remove()
    # The sink's own level is the lowest any filter lets through: loguru skips building a
    # record below it (frame lookup, timestamp, formatting), which at level 0 cost ~5% of a
    # core per call on Pipecat's per-frame debug lines that the filter then threw away.
    floor = min(level, logging.getLevelNamesMapping().get(pipecat_level, logging.WARNING))
    logger.add(
        _loguru_sink,
        level=floor,
        format="{message}",
        filter={"": level, "pipecat": pipecat_level},
        backtrace=False,
        diagnose=False,  # diagnose would print local variables (keys, numbers) into tracebacks
    )


def _loguru_sink(message: loguru.Message) -> None:
    """Re-emit a loguru record as a stdlib record, so one handler formats and masks everything."""
    record = message.record
    stdlib = logging.LogRecord(
        name=record["name"] or "loguru",
        level=record["level"].no,
        pathname=record["file"].path,
        lineno=record["line"],
        msg=record["message"],
        args=None,
        exc_info=None,
        func=record["function"],
    )
    stdlib.levelname = record["level"].name  # loguru's SUCCESS/TRACE have no stdlib name
    stdlib.created = record["time"].timestamp()
    exception = record["exception"]
    if exception is not None and exception.type is not None:
        stdlib.exc_text = "".join(
            traceback.format_exception(exception.type, exception.value, exception.traceback)
        ).rstrip()
    for key, value in record["extra"].items():
        if key not in _STANDARD_ATTRS:
            setattr(stdlib, key, value)
    logging.getLogger(stdlib.name).handle(stdlib)
