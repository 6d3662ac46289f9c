"""Why a ledger operation was refused; shared by the ledger and the modules built on it."""


class LedgerError(Exception):
    """A refused ledger operation; the message says why."""


class InsufficientBalance(LedgerError):
    pass


class IdempotencyConflict(LedgerError):
    """The key was used before for a different request."""


class HoldNotPending(LedgerError):
    """The hold was already captured, voided or expired."""
