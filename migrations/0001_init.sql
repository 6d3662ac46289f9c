-- Tenancy, API keys, versioned agents, and the call registry with transcripts and messages.
-- Applied once by gateway.storage.migrate inside a transaction; `schema_migrations` itself is
-- created by the runner, since it must exist before the first migration can be recorded.

CREATE TABLE organizations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE CHECK (name <> ''),
    suspended   boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Only a peppered hash of the secret is stored; `prefix` identifies the key in lists and logs.
CREATE TABLE api_keys (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id        uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    prefix        text NOT NULL UNIQUE,
    secret_hash   text NOT NULL,
    scopes        text[] NOT NULL DEFAULT ARRAY['voice']::text[],
    label         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX api_keys_org_idx ON api_keys (org_id, created_at);

-- An agent's name is unique per organisation; every saved config is a new immutable version and
-- `current_version` points at the one new calls use (calls record the version they ran).
CREATE TABLE agents (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id           uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name             text NOT NULL CHECK (name <> ''),
    current_version  integer NOT NULL CHECK (current_version >= 1),
    public           boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);

CREATE TABLE agent_versions (
    agent_id    uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    version     integer NOT NULL CHECK (version >= 1),
    config      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (agent_id, version)
);

-- Deferred so an agent and its first version can be inserted in one transaction, in any order.
ALTER TABLE agents
    ADD CONSTRAINT agents_current_version_fk
    FOREIGN KEY (id, current_version) REFERENCES agent_versions (agent_id, version)
    DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE calls (
    id               uuid PRIMARY KEY,
    org_id           uuid NOT NULL REFERENCES organizations (id),
    agent_id         uuid REFERENCES agents (id),
    agent_version    integer,
    door             text NOT NULL CHECK (door IN ('grpc', 'webrtc', 'sip', 'gsm')),
    caller_number    text,
    caller_name      text,
    caller_metadata  jsonb NOT NULL DEFAULT '{}'::jsonb,
    input_format     text,
    output_format    text,
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
    started_at       timestamptz NOT NULL DEFAULT now(),
    answered_at      timestamptz,
    ended_at         timestamptz,
    duration_ms      bigint CHECK (duration_ms >= 0),
    end_reason       text,
    end_detail       text,
    -- e.g. {"turns": 4, "user_to_bot_ms_p50": 610, "user_to_bot_ms_max": 940}
    latency          jsonb,
    heartbeat_at     timestamptz,
    replica          text,
    CHECK ((status = 'ended') = (ended_at IS NOT NULL))
);
-- Console lists: newest first per organisation (and per agent), keyset-paginated on (started_at, id).
CREATE INDEX calls_org_started_idx ON calls (org_id, started_at DESC, id DESC);
CREATE INDEX calls_org_agent_started_idx ON calls (org_id, agent_id, started_at DESC);
-- The live registry: only active rows, found by replica and by stale heartbeat.
CREATE INDEX calls_active_idx ON calls (replica, heartbeat_at) WHERE status = 'active';

-- started_ms/ended_ms are offsets from the call's start; heard_text is what the caller actually
-- heard of an interrupted agent turn.
CREATE TABLE transcript_turns (
    call_id      uuid NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    seq          integer NOT NULL CHECK (seq >= 0),
    role         text NOT NULL CHECK (role IN ('user', 'agent')),
    text         text NOT NULL,
    heard_text   text,
    interrupted  boolean NOT NULL DEFAULT false,
    started_ms   integer,
    ended_ms     integer,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (call_id, seq)
);

-- A message taken by the agent (one per call); org_id is copied so an inbox lists without a join.
CREATE TABLE messages (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    call_id         uuid NOT NULL UNIQUE REFERENCES calls (id) ON DELETE CASCADE,
    org_id          uuid NOT NULL REFERENCES organizations (id),
    text            text NOT NULL,
    audio           bytea,
    audio_encoding  text CHECK (audio_encoding IN ('linear16')),
    sample_rate     integer CHECK (sample_rate > 0),
    duration_ms     integer CHECK (duration_ms >= 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_org_created_idx ON messages (org_id, created_at DESC);
