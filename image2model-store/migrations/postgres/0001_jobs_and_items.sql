-- Jobs and their items. Times are integer milliseconds since the Unix epoch
-- (UTC), as in the SQLite store; ids are ULIDs, so ordering by job_id is
-- ordering by creation time.
CREATE TABLE jobs (
    job_id           TEXT    NOT NULL PRIMARY KEY,
    owner            TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    progress         BIGINT  NOT NULL CHECK (progress BETWEEN 0 AND 100),
    model            TEXT    NOT NULL,
    face_limit       BIGINT,
    texture          TEXT    NOT NULL,
    idempotency_key  TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    created_at_ms    BIGINT  NOT NULL,
    updated_at_ms    BIGINT  NOT NULL
);

-- An idempotency key is unique per owner.
CREATE UNIQUE INDEX jobs_owner_idempotency_key
    ON jobs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Listing one owner's jobs newest first.
CREATE INDEX jobs_owner_job_id ON jobs (owner, job_id);
-- Cleanup: ended jobs by last update.
CREATE INDEX jobs_status_updated ON jobs (status, updated_at_ms);

CREATE TABLE items (
    item_id             TEXT    NOT NULL PRIMARY KEY,
    job_id              TEXT    NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
    position            BIGINT  NOT NULL,
    filename            TEXT    NOT NULL,
    content_type        TEXT    NOT NULL,
    size_bytes          BIGINT  NOT NULL,
    width               BIGINT  NOT NULL,
    height              BIGINT  NOT NULL,
    upload_key          TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    progress            BIGINT  NOT NULL CHECK (progress BETWEEN 0 AND 100),
    error_code          TEXT,
    error_message       TEXT,
    model_key           TEXT,
    preview_key         TEXT,
    remote_request_id   TEXT,
    attempts            BIGINT  NOT NULL DEFAULT 0,
    lease_token         TEXT,
    lease_expires_at_ms BIGINT,
    updated_at_ms       BIGINT  NOT NULL,
    UNIQUE (job_id, position)
);

-- Claiming: the oldest queued (or lease-expired running) item.
CREATE INDEX items_claimable ON items (job_id, position)
    WHERE status IN ('queued', 'running');
CREATE INDEX items_status ON items (status);
