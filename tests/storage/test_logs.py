"""JSON logs carry the call id and never a caller's full phone number."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from loguru import logger as loguru_logger

from gateway.logs import call_context, configure_logging, mask_phone, mask_phones_in


@contextmanager
def configured(level: str) -> Iterator[io.StringIO]:
    """`configure_logging(level)` into a buffer, undone afterwards for the other tests."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    try:
        configure_logging(level, json=True, stream=out)
        yield out
    finally:
        for handler in list(root.handlers):
            if handler not in saved[0]:
                root.removeHandler(handler)
        root.setLevel(saved[1])
        loguru_logger.remove()
        loguru_logger.add(sys.stderr)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    with configured("DEBUG") as out:
        yield out


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    """Our records only (asyncio logs its selector at DEBUG when a loop starts)."""
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    return [line for line in lines if line["logger"] != "asyncio"]


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+14155550123", "+1415*****23"),
        ("+441632960961", "+4416******61"),
        ("+12345678", "+12****78"),
        ("14155550123", "1415*****23"),
        ("anonymous", "anonymous"),
    ],
)
def test_mask_phone(number: str, masked: str) -> None:
    assert mask_phone(number) == masked


def test_masking_in_text_spares_other_numbers() -> None:
    text = "from +14155550123 (sip:+441632960961@pbx) order 12345678901 v+1234567890x +1234567"
    assert mask_phones_in(text) == (
        "from +1415*****23 (sip:+4416******61@pbx) order 12345678901 v+1234567890x +1234567"
    )


async def test_records_carry_the_call_id_across_tasks(stream: io.StringIO) -> None:
    log = logging.getLogger("voicegw.test")
    log.info("before")

    async def in_task() -> None:
        log.info("inside a task")

    with call_context("call-123"):
        log.info("during")
        await asyncio.create_task(in_task())
    log.info("after")
    lines = _lines(stream)
    assert [line.get("call_id") for line in lines] == [None, "call-123", "call-123", None]
    assert lines[1]["level"] == "info" and lines[1]["logger"] == "voicegw.test"


def test_phone_numbers_are_masked_everywhere(stream: io.StringIO) -> None:
    log = logging.getLogger("voicegw.test")
    log.info("caller %s connected", "+14155550123", extra={"peer": "tel:+14155550123"})
    try:
        raise ValueError("bad number +14155550123")
    except ValueError:
        log.exception("failed for +14155550123")
    text = stream.getvalue()
    assert "4155550123" not in text
    first, second = _lines(stream)
    assert first["msg"] == "caller +1415*****23 connected"
    assert first["peer"] == "tel:+1415*****23"
    assert "ValueError: bad number +1415*****23" in str(second["exc"])


def _as_pipecat(record: Any) -> None:
    record["name"] = "pipecat.pipeline.task"  # what Pipecat's own modules log as


def test_loguru_goes_through_the_same_pipeline(stream: io.StringIO) -> None:
    with call_context("call-9"):
        loguru_logger.bind(door="sip").info("loguru from +14155550123")
        pipecat = loguru_logger.patch(_as_pipecat)
        pipecat.debug("per-frame noise")
        pipecat.info("Pipecat banner")
        pipecat.warning("pipecat warning")
    lines = _lines(stream)
    assert [line["msg"] for line in lines] == ["loguru from +1415*****23", "pipecat warning"]
    assert all(line["call_id"] == "call-9" for line in lines)
    assert lines[0]["door"] == "sip" and lines[1]["logger"] == "pipecat.pipeline.task"


def test_configure_is_idempotent(stream: io.StringIO) -> None:
    configure_logging("INFO", json=True, stream=stream)
    logging.getLogger("voicegw.test").info("once")
    assert len(_lines(stream)) == 1


def test_loguru_skips_records_no_filter_would_pass() -> None:
    """Below the lowest level any filter passes, loguru must not even build the record: at
    call volume, Pipecat's per-frame debug lines cost a measurable share of a core."""
    evaluated: list[str] = []

    def expensive() -> str:
        evaluated.append("debug")
        return "x"

    with configured("INFO"):
        loguru_logger.opt(lazy=True).debug("{}", expensive)
        assert evaluated == []
        loguru_logger.opt(lazy=True).info("{}", expensive)
        assert evaluated == ["debug"]
