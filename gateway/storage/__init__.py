"""Persistence: small async repositories over asyncpg, one module per aggregate.

Every function takes a pool or a connection first, so callers compose them inside their own
transactions when they need to. Tenancy is explicit: lookups by name take the organisation id.
"""

from gateway.storage import agents, api_keys, calls, orgs
from gateway.storage.errors import AlreadyExists, NotFound, StorageError

__all__ = ["AlreadyExists", "NotFound", "StorageError", "agents", "api_keys", "calls", "orgs"]
