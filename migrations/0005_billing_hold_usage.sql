-- A pending hold carries the usage its call last reported (its heartbeat), so a sweeper that
-- finds the call's gateway gone can charge what was used, no more and no less.
ALTER TABLE billing_holds
    ADD COLUMN usage_minor bigint NOT NULL DEFAULT 0 CHECK (usage_minor >= 0),
    ADD CONSTRAINT billing_holds_usage_within_amount CHECK (usage_minor <= amount_minor);
CREATE INDEX billing_holds_heartbeat_idx ON billing_holds (heartbeat_at) WHERE status = 'pending';
