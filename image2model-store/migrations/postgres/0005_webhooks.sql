-- Signed webhooks to integrators (docs/WEBHOOKS.md). Times are integer
-- milliseconds since the Unix epoch (UTC), as in the jobs tables.

-- A key's webhook settings: the callback URL of its uploads that name none,
-- and the random seed its signing secret is derived from under SECRET_KEY
-- (never the secret itself).
CREATE TABLE webhook_settings (
    owner                TEXT    NOT NULL PRIMARY KEY,
    default_url          TEXT,
    secret_seed          TEXT,
    secret_created_at_ms BIGINT
);

-- The outbox: one delivery per job that named a callback, written in the
-- transaction that creates the job and claimable once the job has ended (a
-- job ends in the transaction that writes its last item), so no crash can
-- lose one. A claim leases it (lease_until_ms, also the claim's token).
CREATE TABLE webhook_deliveries (
    delivery_id        TEXT    NOT NULL PRIMARY KEY,
    job_id             TEXT    NOT NULL UNIQUE REFERENCES jobs (job_id) ON DELETE CASCADE,
    owner              TEXT    NOT NULL,
    url                TEXT    NOT NULL,
    status             TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts           BIGINT NOT NULL,
    next_attempt_at_ms BIGINT NOT NULL,
    lease_until_ms     BIGINT,
    last_error         TEXT,
    last_status_code   BIGINT,
    delivered_at_ms    BIGINT,
    created_at_ms      BIGINT NOT NULL,
    updated_at_ms      BIGINT NOT NULL
);

-- Claiming: pending deliveries by when they are due.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at_ms);
-- Listing one owner's deliveries newest first.
CREATE INDEX webhook_deliveries_owner ON webhook_deliveries (owner, delivery_id);
