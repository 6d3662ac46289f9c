-- Public agents for the browser widget (issue 5). An organisation marks an agent public for a
-- list of web origins; anonymous visitors may then call it, within the agent's own concurrent
-- limit and daily budget of WebRTC call seconds, so a visitor cannot drain the organisation.
ALTER TABLE agents
    ADD COLUMN widget_origins text[] NOT NULL DEFAULT '{}'::text[],
    ADD COLUMN widget_max_concurrent integer NOT NULL DEFAULT 2
        CHECK (widget_max_concurrent >= 1),
    ADD COLUMN widget_daily_budget_secs integer NOT NULL DEFAULT 3600
        CHECK (widget_daily_budget_secs >= 0);
-- The budget sums today's WebRTC calls of one agent.
CREATE INDEX calls_agent_door_started_idx ON calls (agent_id, door, started_at);
