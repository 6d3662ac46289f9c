"""Idempotency keys: a retried request is a lookup, a reused key for another request an error.

The record is a `billing_transactions` row claimed inside the caller's transaction, so the claim
and the work it guards commit (or vanish) together: a refused request leaves no record and can
be retried with the same key. Two concurrent requests with one key serialise on the unique
index; the second sees the first's committed result.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from billing.ledger_errors import IdempotencyConflict


@dataclass(frozen=True, slots=True)
class Claim:
    """`stored` is the earlier result when the key had already done the work, else None."""

    transaction_id: uuid.UUID
    stored: dict[str, Any] | None

    @property
    def replayed(self) -> bool:
        return self.stored is not None


async def claim(
    conn: Any,
    org_id: uuid.UUID | None,
    kind: str,
    key: str,
    digest: str,
    *,
    result: dict[str, Any],
    now: Any,
) -> Claim:
    tx_id = await conn.fetchval(
        """INSERT INTO billing_transactions
               (org_id, kind, idempotency_key, request_hash, result, created_at)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6)
           ON CONFLICT (org_id, kind, idempotency_key) DO NOTHING
           RETURNING id""",
        org_id,
        kind,
        key,
        digest,
        json.dumps(result),
        now,
    )
    if tx_id is not None:
        return Claim(tx_id, None)
    row = await conn.fetchrow(
        """SELECT id, request_hash, result FROM billing_transactions
           WHERE org_id IS NOT DISTINCT FROM $1 AND kind = $2 AND idempotency_key = $3""",
        org_id,
        kind,
        key,
    )
    if row["request_hash"] != digest:
        raise IdempotencyConflict(
            f"idempotency key {key!r} was already used for a different {kind} request"
        )
    return Claim(row["id"], json.loads(row["result"]))


async def record(conn: Any, transaction_id: uuid.UUID, result: dict[str, Any]) -> None:
    """Stores the result a replay of the claimed key will return."""
    await conn.execute(
        "UPDATE billing_transactions SET result = $2::jsonb WHERE id = $1",
        transaction_id,
        json.dumps(result),
    )
