"""Prometheus metrics of the gateway process (DESIGN §8: observability)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

CALLS_ACTIVE = Gauge("voicegw_calls_active", "Calls in progress", ["door"], registry=REGISTRY)
CALLS_STARTED = Counter(
    "voicegw_calls_started_total", "Calls that started", ["door"], registry=REGISTRY
)
CALLS_ENDED = Counter(
    "voicegw_calls_ended_total",
    "Calls that ended, by reason",
    ["door", "reason"],
    registry=REGISTRY,
)
CALLS_REFUSED = Counter(
    "voicegw_calls_refused_total",
    "Calls refused before starting, by gRPC status",
    ["door", "code"],
    registry=REGISTRY,
)
TURN_LATENCY = Histogram(
    "voicegw_turn_latency_seconds",
    "End of caller speech (VAD stop minus its stop delay) to the first agent audio",
    ["door"],
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0),
    registry=REGISTRY,
)
BARGE_IN_LATENCY = Histogram(
    "voicegw_barge_in_latency_seconds",
    "Caller speech detected (VAD start) while the agent spoke, to `interruption` sent",
    ["door"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5),
    registry=REGISTRY,
)
EVENT_LOOP_LAG = Histogram(
    "voicegw_event_loop_lag_seconds",
    "How late a 20 ms event-loop ticker fires",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
    registry=REGISTRY,
)
BILLING_REFUSALS = Counter(
    "voicegw_billing_refusals_total",
    "Calls (or extensions) refused for money, by ErrorInfo reason",
    ["reason"],
    registry=REGISTRY,
)
BILLING_SECONDS = Counter(
    "voicegw_billing_seconds_total",
    "Call seconds billed (after the plan's rounding), by how the call was settled",
    ["status"],
    registry=REGISTRY,
)
BILLING_HOLDS_OPEN = Gauge(
    "voicegw_billing_holds_open",
    "Metered calls with an open authorization, as the sweeper last counted them",
    registry=REGISTRY,
)
BILLING_SPOOLED = Gauge(
    "voicegw_billing_spooled",
    "Usage records waiting in the local spool for the billing service to return",
    registry=REGISTRY,
)
PAYMENT_WEBHOOKS = Counter(
    "voicegw_payment_webhooks_total",
    "Payment provider webhooks, by what handling them did (credited, duplicate, rejected, ...)",
    ["provider", "outcome"],
    registry=REGISTRY,
)
RECEIVABLES = Counter(
    "voicegw_billing_receivable_minor_total",
    "Debits the balance could not cover, posted to the receivable account (minor units)",
    ["currency"],
    registry=REGISTRY,
)
