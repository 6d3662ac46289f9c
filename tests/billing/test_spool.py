"""The usage spool on a real directory: durable records, superseded heartbeats, and no record
lost or applied twice when threads and workers put and apply at once."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

from billing.spool import SpoolRecord, UsageSpool


def test_a_finalize_supersedes_the_heartbeat_and_finalizes_come_first(tmp_path: Path) -> None:
    spool = UsageSpool(tmp_path / "spool")
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    spool.put(SpoolRecord("heartbeat", a, 1000))
    spool.put(SpoolRecord("heartbeat", b, 2000))
    spool.put(SpoolRecord("finalize", a, 1500, "caller_hangup", f"finalize:{a}"))
    assert [(r.kind, r.call_id) for r in spool.pending()] == [("finalize", a), ("heartbeat", b)]
    # A new process sees the same records (they are files, not memory).
    assert UsageSpool(tmp_path / "spool").pending() == spool.pending()


def test_done_keeps_a_newer_heartbeat_written_while_the_old_one_was_applied(
    tmp_path: Path,
) -> None:
    spool = UsageSpool(tmp_path / "spool")
    call = str(uuid.uuid4())
    old = SpoolRecord("heartbeat", call, 1000)
    spool.put(old)
    applying = spool.pending()[0]
    spool.put(SpoolRecord("heartbeat", call, 5000))  # arrives meanwhile
    spool.done(applying)
    assert [r.usage_ms for r in spool.pending()] == [5000]


def test_concurrent_puts_and_applies_raise_nothing_and_set_nothing_aside(tmp_path: Path) -> None:
    spool = UsageSpool(tmp_path / "spool")
    calls = [str(uuid.uuid4()) for _ in range(4)]
    errors: list[BaseException] = []

    def churn(call: str) -> None:
        try:
            for usage in range(200):
                spool.put(SpoolRecord("heartbeat", call, usage))
                for record in spool.pending():
                    spool.done(record)
        except BaseException as error:  # noqa: BLE001 - collected for the assertion
            errors.append(error)

    threads = [threading.Thread(target=churn, args=(c,)) for c in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert list((tmp_path / "spool" / "failed").iterdir()) == []


def test_an_unreadable_record_is_set_aside_not_lost(tmp_path: Path) -> None:
    spool = UsageSpool(tmp_path / "spool")
    bad = tmp_path / "spool" / f"{uuid.uuid4()}.finalize.json"
    bad.write_text("{not json")
    assert spool.pending() == []
    assert [p.name for p in (tmp_path / "spool" / "failed").iterdir()] == [bad.name]
