"""A durable local spool for usage that billing could not take when it happened.

When the database (or `voicegw billing serve`) is unreachable mid-call, the call runs on what it
already holds and its heartbeats and its final duration are written here, one file per call and
kind, each replaced atomically and fsynced, so neither a crash nor a restart loses them. A
replay applies them once the billing side answers again: a heartbeat only raises the recorded
usage, and a finalize is idempotent by call, so replaying twice (two workers sharing the
directory, a crash between applying and deleting) charges nothing twice.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from loguru import logger

from billing.gateway_client import BillingUnavailable, CallBilling
from billing.ledger import LedgerError
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
        metrics.BILLING_SPOOLED.set(len(self.pending()))

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
        metrics.BILLING_SPOOLED.set(len(self.pending()))

    def pending(self) -> list[SpoolRecord]:
        """Finalizes first: they settle money; heartbeats only keep holds alive."""
        records = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                records.append(SpoolRecord(**json.loads(path.read_text())))
            except (ValueError, TypeError, OSError):
                logger.error(f"unreadable billing spool record {path.name}; set aside")
                path.replace(self.directory / "failed" / path.name)
        return sorted(records, key=lambda r: r.kind != "finalize")

    def done(self, record: SpoolRecord) -> None:
        self._path(record.call_id, record.kind).unlink(missing_ok=True)
        metrics.BILLING_SPOOLED.set(len(self.pending()))

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
            except LedgerError as error:
                # Billing answered and refused: keep the record for an operator, out of the way.
                logger.error(f"billing refused spooled {record.kind} of {call_id}: {error}")
                path = self._path(record.call_id, record.kind)
                if path.exists():
                    path.replace(self.directory / "failed" / path.name)
                continue
            self.done(record)
            applied += 1
        if applied:
            logger.info(f"billing spool: {applied} record(s) applied")
        return applied

    def _path(self, call_id: str, kind: Kind) -> Path:
        return self.directory / f"{uuid.UUID(call_id)}.{kind}.json"

    def _sync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
