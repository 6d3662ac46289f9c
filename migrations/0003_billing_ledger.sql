-- The prepaid ledger (DESIGN §7, issue 4): double-entry, integer minor units, one currency per
-- account. Balances are cached on the account and guarded by CHECKs, so no code path (and no
-- race between two of them) can spend what is not there; entries are append-only, and every
-- transaction's legs sum to zero, checked at commit.

CREATE TABLE billing_accounts (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- NULL for the system accounts (revenue, provider clearing, receivables), one per currency.
    org_id        uuid REFERENCES organizations (id) ON DELETE RESTRICT,
    kind          text NOT NULL CHECK (kind IN (
                      'customer', 'revenue', 'clearing_stripe', 'clearing_yookassa', 'receivable')),
    currency      text NOT NULL DEFAULT 'RUB' CHECK (currency ~ '^[A-Z]{3}$'),
    -- Credit-normal: a customer's posted balance is what we owe them in service.
    posted_minor  bigint NOT NULL DEFAULT 0,
    held_minor    bigint NOT NULL DEFAULT 0 CHECK (held_minor >= 0),
    created_at    timestamptz NOT NULL,
    CHECK ((org_id IS NULL) = (kind <> 'customer')),
    -- The guard every authorization relies on: a customer never has more held than posted.
    CONSTRAINT customer_available_non_negative
        CHECK (kind <> 'customer' OR posted_minor - held_minor >= 0),
    UNIQUE NULLS NOT DISTINCT (org_id, kind, currency)
);

-- One row per business operation; the idempotency key makes a retried request a lookup.
CREATE TABLE billing_transactions (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id           uuid REFERENCES organizations (id) ON DELETE RESTRICT,
    kind             text NOT NULL CHECK (kind <> ''),
    idempotency_key  text NOT NULL CHECK (idempotency_key <> ''),
    request_hash     text NOT NULL,
    result           jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL,
    UNIQUE NULLS NOT DISTINCT (org_id, kind, idempotency_key)
);

CREATE TABLE billing_entries (
    id              bigserial PRIMARY KEY,
    transaction_id  uuid NOT NULL REFERENCES billing_transactions (id) ON DELETE RESTRICT,
    account_id      uuid NOT NULL REFERENCES billing_accounts (id) ON DELETE RESTRICT,
    -- Signed: positive credits the account, negative debits it.
    amount_minor    bigint NOT NULL CHECK (amount_minor <> 0),
    created_at      timestamptz NOT NULL
);
CREATE INDEX billing_entries_account_idx ON billing_entries (account_id, id);
CREATE INDEX billing_entries_transaction_idx ON billing_entries (transaction_id);

CREATE FUNCTION billing_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'billing_entries is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER billing_entries_no_change BEFORE UPDATE OR DELETE ON billing_entries
    FOR EACH ROW EXECUTE FUNCTION billing_entries_append_only();

-- Checked when the transaction commits, after all its legs are in.
CREATE FUNCTION billing_entries_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total bigint;
BEGIN
    SELECT coalesce(sum(amount_minor), 0) INTO total
        FROM billing_entries WHERE transaction_id = NEW.transaction_id;
    IF total <> 0 THEN
        RAISE EXCEPTION 'billing transaction % is unbalanced by %', NEW.transaction_id, total;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER billing_entries_sum_to_zero AFTER INSERT ON billing_entries
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION billing_entries_balanced();

-- Money reserved for a call: pending until captured (up to its amount), voided or expired, once.
CREATE TABLE billing_holds (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id      uuid NOT NULL REFERENCES billing_accounts (id) ON DELETE RESTRICT,
    call_id         uuid,
    amount_minor    bigint NOT NULL CHECK (amount_minor > 0),
    status          text NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'captured', 'voided', 'expired')),
    captured_minor  bigint CHECK (captured_minor >= 0 AND captured_minor <= amount_minor),
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    heartbeat_at    timestamptz NOT NULL,
    resolved_at     timestamptz,
    CHECK ((status = 'pending') = (resolved_at IS NULL))
);
CREATE INDEX billing_holds_pending_idx ON billing_holds (expires_at) WHERE status = 'pending';
