-- Per-organisation concurrent-call limit (DESIGN §4, admit). NULL means the gateway's setting
-- (`org_max_calls`) applies, so changing the default needs no data migration.
ALTER TABLE organizations
    ADD COLUMN max_concurrent_calls integer CHECK (max_concurrent_calls >= 1);
