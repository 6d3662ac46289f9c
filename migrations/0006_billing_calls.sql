-- Metered calls (issue 4). A call's authorization is the sum of its parts: included plan
-- seconds held on the subscription and money held on the ledger (billing_holds.call_id). The
-- row is the unit the gateway heartbeats, finalizes exactly once and the sweeper settles.

CREATE TABLE billing_calls (
    call_id             uuid PRIMARY KEY,
    org_id              uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- The plan's terms when the call was admitted: a plan change never re-prices a live call.
    plan_code           text NOT NULL REFERENCES billing_plans (code),
    rounding            text NOT NULL
                            CHECK (rounding IN ('per_second', 'per_started_minute', '60_6')),
    per_minute_minor    bigint NOT NULL CHECK (per_minute_minor >= 0),
    status              text NOT NULL DEFAULT 'open'
                            CHECK (status IN ('open', 'finalized', 'expired')),
    -- Call seconds covered so far, and how many of them are included plan seconds.
    authorized_seconds  bigint NOT NULL DEFAULT 0 CHECK (authorized_seconds >= 0),
    plan_held_seconds   bigint NOT NULL DEFAULT 0 CHECK (plan_held_seconds >= 0),
    -- The duration the gateway last reported (heartbeat): what a crashed call is billed.
    usage_ms            bigint NOT NULL DEFAULT 0 CHECK (usage_ms >= 0),
    created_at          timestamptz NOT NULL,
    heartbeat_at        timestamptz NOT NULL,
    finalized_at        timestamptz,
    duration_ms         bigint CHECK (duration_ms >= 0),
    billed_seconds      bigint CHECK (billed_seconds >= 0),
    plan_used_seconds   bigint CHECK (plan_used_seconds >= 0),
    charged_minor       bigint CHECK (charged_minor >= 0),
    -- Charged after the holds were gone (a late finalize, an overrun): shortfall goes to
    -- the receivable account.
    late_minor          bigint NOT NULL DEFAULT 0 CHECK (late_minor >= 0),
    end_reason          text,
    CHECK ((status = 'open') = (finalized_at IS NULL))
);
CREATE INDEX billing_calls_open_idx ON billing_calls (heartbeat_at) WHERE status = 'open';
CREATE INDEX billing_calls_org_idx ON billing_calls (org_id, created_at DESC, call_id DESC);
CREATE INDEX billing_holds_call_idx ON billing_holds (call_id) WHERE call_id IS NOT NULL;

-- Owing money refuses new calls but keeps the organisation's keys working, so it can still see
-- its balance and pay; `suspended` (keys stop verifying) stays an operator's decision.
ALTER TABLE organizations
    ADD COLUMN billing_suspended boolean NOT NULL DEFAULT false,
    -- A service organisation's keys act for the gateway (scope billing:gateway), never a tenant.
    ADD COLUMN service boolean NOT NULL DEFAULT false;
