"""One call's metering (DESIGN §4 steps 2 and 4): admit, extend ahead, warn, close, finalize.

Every door's call goes through this, so a call never starts unpaid, never runs past what it
holds, and is finalized once. Time is the gateway's monotonic clock from `session_started`.

When billing is unreachable mid-call the call runs on its current authorization: heartbeats
and the final duration go to the durable spool and are applied when billing returns. When the
authorization runs out and nothing more could be granted (money gone, or billing still away)
the caller hears a closing line that ends before the authorization does.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from loguru import logger

from billing.gateway_client import BillingUnavailable, CallBilling
from billing.ledger import LedgerError
from billing.metering import CallBill, CallGrant, Refused
from billing.spool import SpoolRecord, UsageSpool
from gateway import metrics
from gateway.config import Settings
from transports.events import BillingEvent, EndReason, EndRequest

TICK_SECS = 0.25
# The call is ended this long before its authorization runs out: hanging up takes a moment,
# and the caller is not billed a second it was not authorized for.
END_MARGIN_SECS = 0.75


@dataclass(frozen=True, slots=True)
class MeteringPolicy:
    hold_secs: int = 60
    # A call is answered only if at least this much (or the whole first hold, if shorter) can be
    # paid: answering for two seconds to say "your time has run out" helps nobody.
    min_call_secs: int = 15
    extend_lead_secs: float = 20.0
    warning_secs: float = 60.0
    closing_secs: float = 6.0
    heartbeat_secs: float = 15.0
    warning_line: str = "Just so you know, the call time on this account is almost used up."
    closing_line: str = "I'm sorry, the call time on this account has run out. Goodbye."
    outage_line: str = "I'm sorry, we have to end the call now. Please call again later."

    @classmethod
    def from_settings(cls, settings: Settings) -> MeteringPolicy:
        return cls(
            hold_secs=settings.billing_hold_secs,
            min_call_secs=settings.billing_min_call_secs,
            extend_lead_secs=settings.billing_extend_lead_secs,
            warning_secs=settings.billing_warning_secs,
            closing_secs=settings.billing_closing_secs,
            heartbeat_secs=settings.billing_heartbeat_secs,
        )


class AdmissionRefused(Exception):
    """Billing will not admit the call: gRPC code name, message, ErrorInfo reason."""

    def __init__(self, code: str, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


@dataclass(slots=True)
class MeterHooks:
    """What metering may do to its call: tell the caller, say a line, end the call."""

    notify: Callable[[BillingEvent], None]
    say: Callable[[str], None]
    end: Callable[[EndRequest], None]


class CallMetering:
    def __init__(
        self,
        billing: CallBilling,
        spool: UsageSpool | None,
        policy: MeteringPolicy,
        org_id: uuid.UUID,
        call_id: uuid.UUID,
    ) -> None:
        self._billing = billing
        self._spool = spool
        self.policy = policy
        self.org_id = org_id
        self.call_id = call_id
        self.grant: CallGrant | None = None
        self.exhausted = False  # nothing more will be granted: the money is gone
        self.warned = False
        self.closing = False
        self.bill: CallBill | None = None
        # The loop ended the call at its authorization: whatever end reason won the race
        # (a goodbye under way, an error), the caller pays no more than was authorized.
        self.ended_by_meter = False
        self._extensions = 0
        self._task: asyncio.Task[None] | None = None
        self._finished = False

    @property
    def authorized_seconds(self) -> int:
        return self.grant.authorized_seconds if self.grant else 0

    async def admit(self) -> CallGrant:
        """Holds the first `hold_secs` before the call is answered; refuses otherwise."""
        try:
            self.grant = await self._billing.authorize(
                self.org_id,
                self.call_id,
                self.policy.hold_secs,
                min_seconds=min(self.policy.hold_secs, self.policy.min_call_secs),
                key=f"authorize:{self.call_id}",
            )
        except Refused as refused:
            metrics.BILLING_REFUSALS.labels(reason=refused.reason).inc()
            raise AdmissionRefused("RESOURCE_EXHAUSTED", str(refused), refused.reason) from None
        except BillingUnavailable as error:
            # Fails closed: a call nobody can bill is not answered. The authorization may have
            # gone through unseen: a zero-length end releases its hold once billing answers.
            key = f"finalize:{self.call_id}"
            await self._spool_record(SpoolRecord("finalize", str(self.call_id), 0, "error", key))
            raise AdmissionRefused(
                "UNAVAILABLE", f"billing is unreachable; call again later ({error})"
            ) from None
        except LedgerError as error:
            raise AdmissionRefused("FAILED_PRECONDITION", str(error)) from None
        self.exhausted = self.grant.granted_seconds < self.policy.hold_secs
        return self.grant

    def start(self, started_at: float, hooks: MeterHooks) -> None:
        self._task = asyncio.create_task(
            self._watch(started_at, hooks), name=f"metering-{self.call_id}"
        )

    async def _watch(self, started_at: float, hooks: MeterHooks) -> None:
        policy = self.policy
        last_beat = started_at
        outage_since: float | None = None
        while True:
            now = time.monotonic()
            elapsed = now - started_at
            usage_ms = int(elapsed * 1000)
            remaining = self.authorized_seconds - elapsed
            if not self.exhausted and remaining <= policy.extend_lead_secs:
                try:
                    await self._extend(usage_ms)
                    last_beat, outage_since = now, None
                except Exception as error:  # noqa: BLE001 - anything unclear is an outage
                    # The loop must live on whatever happens: it is what ends the call in time.
                    logger.warning(f"call extension failed: {type(error).__name__}: {error}")
                    outage_since = outage_since or now
                    await self._spool_usage(usage_ms)
                remaining = self.authorized_seconds - (time.monotonic() - started_at)
            elif now - last_beat >= policy.heartbeat_secs:
                last_beat = now
                try:
                    await self._billing.heartbeat(self.call_id, usage_ms)
                    outage_since = None
                except LedgerError as error:
                    logger.warning(f"billing heartbeat refused: {error}")
                except Exception as error:  # noqa: BLE001 - anything unclear is an outage
                    logger.warning(f"billing heartbeat failed: {type(error).__name__}: {error}")
                    outage_since = outage_since or now
                    await self._spool_usage(usage_ms)
            more = 0 if self.exhausted else self.grant.more_seconds if self.grant else 0
            left = remaining + (more if more is not None else math.inf)
            if not self.warned and not self.closing and left <= policy.warning_secs:
                self.warned = True
                self._warn(hooks, max(0, int(left)))
            stuck = self.exhausted or outage_since is not None
            if stuck and not self.closing and remaining <= policy.closing_secs:
                # Said while the money still runs; the call is cut when it ends, not after.
                self.closing = True
                hooks.say(policy.closing_line if self.exhausted else policy.outage_line)
            if stuck and remaining <= END_MARGIN_SECS:
                self.ended_by_meter = True
                hooks.end(
                    EndRequest(
                        EndReason.BALANCE_EXHAUSTED if self.exhausted else EndReason.ERROR,
                        "the balance cannot pay for more of this call"
                        if self.exhausted
                        else "billing is unreachable and the call's authorization ran out",
                    )
                )
                return
            await asyncio.sleep(TICK_SECS)

    async def _extend(self, usage_ms: int) -> None:
        # The key moves on only after a definite answer: an attempt whose outcome is unclear
        # is retried under the same key, so it cannot reserve twice.
        key = f"extend:{self.call_id}:{self._extensions + 1}"
        try:
            grant = await self._billing.extend(
                self.call_id,
                self.policy.hold_secs,
                min_seconds=1,
                usage_ms=usage_ms,
                key=key,
            )
        except Refused as refused:
            self._extensions += 1
            metrics.BILLING_REFUSALS.labels(reason=refused.reason).inc()
            logger.info(f"call extension refused: {refused.reason}: {refused}")
            self.exhausted = True
            return
        except LedgerError as error:
            self._extensions += 1
            logger.warning(f"call extension failed: {error}")
            self.exhausted = True
            return
        self._extensions += 1
        self.grant = grant
        if grant.granted_seconds < self.policy.hold_secs:
            self.exhausted = True

    def _warn(self, hooks: MeterHooks, seconds_left: int) -> None:
        grant = self.grant
        on_plan = grant is not None and grant.plan_seconds > 0 and grant.held_minor == 0
        hooks.notify(
            BillingEvent(
                "minutes_left" if on_plan else "low_balance",
                seconds_left=seconds_left,
                balance_minor=grant.available_minor if grant else 0,
                currency=grant.currency if grant else "",
            )
        )
        hooks.say(self.policy.warning_line)

    async def _spool_usage(self, usage_ms: int) -> None:
        # A failed write (a full disk) is logged there: it must not stop the call's own clock.
        await self._spool_record(SpoolRecord("heartbeat", str(self.call_id), usage_ms))

    async def finish(self, duration_ms: int, reason: str) -> CallBill | None:
        """Finalizes once with the call's duration; spools it when billing is away."""
        if self._finished:
            return self.bill
        self._finished = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if reason == EndReason.BALANCE_EXHAUSTED.value or self.ended_by_meter:
            # Our own slowness to hang up (a pipeline slow to stop) is not the caller's to pay.
            duration_ms = min(duration_ms, self.authorized_seconds * 1000)
        key = f"finalize:{self.call_id}"
        try:
            self.bill = await self._billing.finalize(
                self.call_id, duration_ms, reason=reason, key=key
            )
        except LedgerError as error:  # a definite refusal: retrying cannot change it
            logger.error(f"finalizing the call's billing was refused: {error}")
        except Exception as error:  # noqa: BLE001 - unreachable or unclear: the spool retries
            logger.warning(f"finalizing failed ({type(error).__name__}: {error}); usage spooled")
            await self._spool_record(
                SpoolRecord("finalize", str(self.call_id), duration_ms, reason, key)
            )
        return self.bill

    async def _spool_record(self, record: SpoolRecord) -> None:
        if self._spool is None:
            return
        try:
            await asyncio.to_thread(self._spool.put, record)
        except OSError as error:
            logger.error(f"billing spool write failed, usage of {record.call_id} lost: {error}")
