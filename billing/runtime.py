"""Billing's long-running parts, shared by the gateway and `voicegw billing serve`."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from loguru import logger

from billing.gateway_client import CallBilling
from billing.ledger import Ledger
from billing.metering import CallMeter
from billing.spool import UsageSpool
from gateway.config import Settings


def billing_meter(ledger: Ledger, settings: Settings) -> CallMeter:
    return CallMeter(
        ledger,
        hold_ttl=timedelta(seconds=settings.billing_hold_ttl_secs),
        late_grace=timedelta(seconds=settings.billing_late_grace_secs),
    )


async def sweep_forever(meter: CallMeter, settings: Settings) -> None:
    """Settles calls whose gateway stopped heartbeating (crashed, cut off)."""
    while True:
        try:
            settled = await meter.sweep()
            if settled:
                logger.warning(f"billing sweeper settled {settled} silent call(s)")
        except Exception as error:  # noqa: BLE001 - the next round retries
            logger.warning(f"billing sweep failed: {type(error).__name__}: {error}")
        await asyncio.sleep(settings.billing_sweep_interval_secs)


async def replay_forever(spool: UsageSpool, billing: CallBilling, settings: Settings) -> None:
    """Applies spooled usage as soon as billing answers again."""
    while True:
        try:
            if await asyncio.to_thread(spool.pending):
                await spool.replay(billing)
        except Exception as error:  # noqa: BLE001 - the next round retries
            logger.warning(f"billing spool replay failed: {type(error).__name__}: {error}")
        await asyncio.sleep(settings.billing_spool_retry_secs)
