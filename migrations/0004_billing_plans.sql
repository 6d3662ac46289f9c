-- Plans and subscriptions (issue 4). Included minutes are held like money: a guarded update
-- on `used + held + n <= included`, so concurrent calls cannot overspend a plan either.

CREATE TABLE billing_plans (
    code               text PRIMARY KEY CHECK (code ~ '^[a-z]+$'),
    currency           text NOT NULL DEFAULT 'RUB' CHECK (currency ~ '^[A-Z]{3}$'),
    monthly_fee_minor  bigint NOT NULL CHECK (monthly_fee_minor >= 0),
    -- NULL: unlimited minutes.
    included_seconds   bigint CHECK (included_seconds >= 0),
    per_minute_minor   bigint NOT NULL CHECK (per_minute_minor >= 0),
    rounding           text NOT NULL DEFAULT 'per_started_minute'
                           CHECK (rounding IN ('per_second', 'per_started_minute', '60_6'))
);

INSERT INTO billing_plans (code, monthly_fee_minor, included_seconds, per_minute_minor) VALUES
    ('payg',       0,      0,     1000),
    ('basic',      99000,  6000,  800),
    ('pro',        299000, 30000, 600),
    ('enterprise', 999000, NULL,  0);

CREATE TABLE billing_subscriptions (
    org_id            uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE RESTRICT,
    plan_code         text NOT NULL REFERENCES billing_plans (code),
    -- A plan change takes effect at the next period.
    next_plan_code    text REFERENCES billing_plans (code),
    -- First instant of the current period (a UTC calendar month).
    period_start      timestamptz NOT NULL,
    -- The plan's allowance, copied at period start (NULL: unlimited).
    included_seconds  bigint CHECK (included_seconds >= 0),
    used_seconds      bigint NOT NULL DEFAULT 0 CHECK (used_seconds >= 0),
    held_seconds      bigint NOT NULL DEFAULT 0 CHECK (held_seconds >= 0),
    CONSTRAINT plan_minutes_not_overspent
        CHECK (included_seconds IS NULL OR used_seconds + held_seconds <= included_seconds)
);
