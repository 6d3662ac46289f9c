-- Payments (issue 4): top-ups and plan-fee checkouts at Stripe and YooKassa, and the webhook inbox.
-- A payment row exists before the provider is asked, so its id is the stable idempotency key we
-- give the provider: a retried request can never open a second checkout. Money only moves when a
-- verified webhook says so, and once per provider payment (the ledger key is that payment's id).

-- Manual adjustments (the admin AdjustBalance RPC) need a counter-account of their own, so they are
-- never confused with money that came through a provider.
ALTER TABLE billing_accounts
    DROP CONSTRAINT billing_accounts_kind_check,
    ADD CONSTRAINT billing_accounts_kind_check CHECK (kind IN (
        'customer', 'revenue', 'clearing_stripe', 'clearing_yookassa', 'receivable',
        'adjustment'));

CREATE TABLE billing_payments (
    id                       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id                   uuid NOT NULL REFERENCES organizations (id) ON DELETE RESTRICT,
    provider                 text NOT NULL CHECK (provider IN ('stripe', 'yookassa')),
    -- Stripe: the Checkout Session id; YooKassa: the payment id. NULL until the provider answered.
    provider_payment_id      text,
    -- Stripe only: the PaymentIntent behind the session, which refunds and disputes name.
    provider_intent_id       text,
    purpose                  text NOT NULL CHECK (purpose IN ('topup', 'plan_fee')),
    plan_code                text REFERENCES billing_plans (code),
    amount_minor             bigint NOT NULL CHECK (amount_minor > 0),
    currency                 text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status                   text NOT NULL DEFAULT 'created' CHECK (status IN (
                                 'created', 'pending', 'succeeded', 'canceled',
                                 'partially_refunded', 'refunded')),
    -- Refunds already debited, so a provider's cumulative "refunded so far" becomes a delta.
    refunded_minor           bigint NOT NULL DEFAULT 0,
    idempotency_key          text NOT NULL CHECK (idempotency_key <> ''),
    request_hash             text NOT NULL,
    redirect_url             text,
    credited_transaction_id  uuid REFERENCES billing_transactions (id) ON DELETE RESTRICT,
    created_at               timestamptz NOT NULL,
    updated_at               timestamptz NOT NULL,
    CHECK ((purpose = 'plan_fee') = (plan_code IS NOT NULL)),
    CHECK (refunded_minor >= 0 AND refunded_minor <= amount_minor),
    UNIQUE (org_id, idempotency_key),
    UNIQUE (provider, provider_payment_id)
);
CREATE UNIQUE INDEX billing_payments_intent_idx ON billing_payments (provider, provider_intent_id)
    WHERE provider_intent_id IS NOT NULL;

-- Every verified notification, so a redelivered one is recognised. Stripe events carry an id;
-- YooKassa's carry none, so theirs is "<event>:<object id>" (e.g. payment.succeeded:2d8f...).
CREATE TABLE billing_webhook_events (
    provider     text NOT NULL CHECK (provider IN ('stripe', 'yookassa')),
    event_id     text NOT NULL CHECK (event_id <> ''),
    event_type   text NOT NULL,
    received_at  timestamptz NOT NULL,
    -- What handling it did: credited, debited, ignored, rejected: <why>, ...
    outcome      text NOT NULL,
    payload      jsonb NOT NULL,
    PRIMARY KEY (provider, event_id)
);
