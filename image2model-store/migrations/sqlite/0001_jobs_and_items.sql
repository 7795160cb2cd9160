-- Jobs and their items. Times are integer milliseconds since the Unix epoch
-- (UTC); ids are ULIDs, so ordering by job_id is ordering by creation time.
CREATE TABLE jobs (
    job_id           TEXT    NOT NULL PRIMARY KEY,
    owner            TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    progress         INTEGER NOT NULL CHECK (progress BETWEEN 0 AND 100),
    model            TEXT    NOT NULL,
    face_limit       INTEGER,
    texture          TEXT    NOT NULL,
    idempotency_key  TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at_ms    INTEGER NOT NULL,
    updated_at_ms    INTEGER NOT NULL
) STRICT;

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
    position            INTEGER NOT NULL,
    filename            TEXT    NOT NULL,
    content_type        TEXT    NOT NULL,
    size_bytes          INTEGER NOT NULL,
    width               INTEGER NOT NULL,
    height              INTEGER NOT NULL,
    upload_key          TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    progress            INTEGER NOT NULL CHECK (progress BETWEEN 0 AND 100),
    error_code          TEXT,
    error_message       TEXT,
    model_key           TEXT,
    preview_key         TEXT,
    remote_request_id   TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    lease_token         TEXT,
    lease_expires_at_ms INTEGER,
    updated_at_ms       INTEGER NOT NULL,
    UNIQUE (job_id, position)
) STRICT;

-- Claiming: the oldest queued (or lease-expired running) item.
CREATE INDEX items_status_job_position ON items (status, job_id, position);
