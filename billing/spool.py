"""A durable local spool for usage that billing could not take when it happened.

When the database (or `voicegw billing serve`) is unreachable mid-call, the call runs on what it
already holds and its heartbeats and its final duration are written here, one file per call and
kind, each replaced atomically and fsynced, so neither a crash nor a restart loses them. A
replay applies them once the billing side answers again: a heartbeat only raises the recorded
usage, and a finalize is idempotent by call, so replaying twice (two workers sharing the
directory, a crash between applying and deleting) charges nothing twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from loguru import logger

from billing.gateway_client import BillingUnavailable, CallBilling
from billing.ledger import LedgerError
from billing.metering import UnknownCall
from gateway import metrics

Kind = Literal["heartbeat", "finalize"]


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    kind: Kind
    call_id: str
    usage_ms: int
    reason: str = ""
    key: str = ""


class UsageSpool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.directory / "failed").mkdir(exist_ok=True, mode=0o700)
        self._count()

    def put(self, record: SpoolRecord) -> None:
        """Writes `record` durably (blocking: call it in a thread from the event loop)."""
        path = self._path(record.call_id, record.kind)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w") as handle:
            json.dump(asdict(record), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        if record.kind == "finalize":  # the final duration supersedes any heartbeat
            self._path(record.call_id, "heartbeat").unlink(missing_ok=True)
        self._sync_dir()
        self._count()

    def pending(self) -> list[SpoolRecord]:
        """Finalizes first: they settle money; heartbeats only keep holds alive."""
        records = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue  # applied (or superseded) meanwhile by another thread or worker
            try:
                records.append(SpoolRecord(**json.loads(text)))
            except (ValueError, TypeError):
                logger.error(f"unreadable billing spool record {path.name}; set aside")
                with contextlib.suppress(FileNotFoundError):
                    path.replace(self.directory / "failed" / path.name)
        return sorted(records, key=lambda r: r.kind != "finalize")

    def done(self, record: SpoolRecord) -> None:
        """Removes the record that was applied, and only it: a newer heartbeat written while
        this one was being applied stays for the next replay."""
        path = self._path(record.call_id, record.kind)
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
            if SpoolRecord(**json.loads(path.read_text())) == record:
                path.unlink(missing_ok=True)
        self._count()

    def _count(self) -> None:
        metrics.BILLING_SPOOLED.set(sum(1 for _ in self.directory.glob("*.json")))

    async def replay(self, billing: CallBilling) -> int:
        """Applies what is spooled; stops at the first sign billing is still away. Returns how
        many records were applied."""
        applied = 0
        for record in self.pending():
            call_id = uuid.UUID(record.call_id)
            try:
                if record.kind == "finalize":
                    await billing.finalize(
                        call_id, record.usage_ms, reason=record.reason, key=record.key
                    )
                else:
                    await billing.heartbeat(call_id, record.usage_ms)
            except BillingUnavailable:
                break
            except UnknownCall:
                # A zero-length end spooled for an admission whose answer was lost: there was
                # no call after all. Any other record of an unknown call is kept for a person.
                if record.kind == "finalize" and record.usage_ms == 0:
                    self.done(record)
                    continue
                self._set_aside(record, "billing does not know the call")
                continue
            except LedgerError as error:
                if record.kind == "heartbeat":  # the call was settled since: nothing to keep
                    self.done(record)
                    continue
                # Billing answered and refused: keep the record for an operator, out of the way.
                self._set_aside(record, str(error))
                continue
            self.done(record)
            applied += 1
        if applied:
            logger.info(f"billing spool: {applied} record(s) applied")
        return applied

    def _set_aside(self, record: SpoolRecord, why: str) -> None:
        logger.error(f"billing refused spooled {record.kind} of {record.call_id}: {why}")
        path = self._path(record.call_id, record.kind)
        with contextlib.suppress(FileNotFoundError):
            path.replace(self.directory / "failed" / path.name)

    def _path(self, call_id: str, kind: Kind) -> Path:
        return self.directory / f"{uuid.UUID(call_id)}.{kind}.json"

    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
