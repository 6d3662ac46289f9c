"""What every repository accepts: an asyncpg pool or a connection (e.g. inside a transaction).

asyncpg ships no type information, so `Queryable` is an alias for readability, not a check.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg

Queryable: TypeAlias = Any  # asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy


@asynccontextmanager
async def transaction(db: Queryable) -> AsyncIterator[Any]:
    """One transaction on a connection: borrowed from a pool, or nested in the caller's."""
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with db.transaction():
            yield db
