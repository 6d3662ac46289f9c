"""The ledger benchmark's own correctness on the test database: small, so it stays in `make test`
(speed is `make bench`'s business, not asserted here)."""

from __future__ import annotations

import uuid

import pytest

from billing.ledger import Ledger
from billing.metering import CallMeter
from gateway.db import Database
from tests.bench.doc_sections import carry, put, sections
from tests.bench.ledger import check, run_level


@pytest.mark.parametrize("shape", ["one", "each"])
async def test_a_small_run_leaves_a_consistent_ledger(database: Database, shape: str) -> None:
    level = await run_level(database, 4, shape, calls=24)
    assert (level.pairs, level.errors, level.failed_checks) == (24, [], [])
    assert len(level.authorize_ms) == len(level.finalize_ms) == 24


async def test_the_check_notices_an_unfinished_call_and_a_wrong_charge(database: Database) -> None:
    level = await run_level(database, 2, "one", calls=4)
    assert level.failed_checks == []
    org_id = level.org_ids[0]
    await CallMeter(Ledger(database.pool)).authorize(org_id, uuid.uuid4(), 60, key="left-open")
    failed = await check(database, level.org_ids, level.pairs, level.charge_minor)
    assert failed == ["every call finalized once", "balance == funded - charged"]
    failed = await check(database, level.org_ids, level.pairs, level.charge_minor + 1)
    assert "balance == funded - charged" in failed


def test_sections_survive_a_rewrite_of_the_rest() -> None:
    doc = "# Performance\n\nold calls table\n\n## How to run\n\nmake bench\n"
    doc = put(doc, "ledger", "## Ledger throughput\n\nfirst")
    assert doc.index("first") < doc.index("## How to run")
    doc = put(doc, "ledger", "## Ledger throughput\n\nsecond")
    assert "first" not in doc and doc.count("## Ledger throughput") == 1
    rewritten = carry(doc, "# Performance\n\nnew calls table\n\n## How to run\n\nmake bench\n")
    assert "old calls" not in rewritten and "second" in rewritten
    assert sections(rewritten) == sections(doc)
    assert rewritten.index("second") < rewritten.index("## How to run")
