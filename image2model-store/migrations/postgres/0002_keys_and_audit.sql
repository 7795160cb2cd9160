-- API keys created through the admin API, and the audit trail. Times are
-- integer milliseconds since the Unix epoch (UTC), as in the jobs tables.

-- A key is stored as an HMAC-SHA256 of its secret under the server's
-- SECRET_KEY (hex), never as the secret itself.
CREATE TABLE api_keys (
    key_id          TEXT   NOT NULL PRIMARY KEY,
    name            TEXT   NOT NULL,
    role            TEXT   NOT NULL CHECK (role IN ('user', 'admin')),
    prefix          TEXT   NOT NULL,
    hash            TEXT   NOT NULL UNIQUE,
    created_at_ms   BIGINT NOT NULL,
    last_used_at_ms BIGINT,
    revoked_at_ms   BIGINT
);

-- Append-only; `seq` orders events recorded in the same millisecond.
CREATE TABLE audit_events (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms      BIGINT NOT NULL,
    kind       TEXT   NOT NULL,
    actor      TEXT,
    client_ip  TEXT,
    request_id TEXT,
    detail     TEXT   NOT NULL
);

-- Reading newest first, optionally before a time.
CREATE INDEX audit_events_at ON audit_events (at_ms, seq);
