-- Per-key quotas. Each key's use is counted per UTC day (`period` =
-- 'YYYY-MM-DD') and per UTC month ('YYYY-MM'), charged in the transaction
-- that creates the job; spend is an estimate in millionths of a dollar.
CREATE TABLE key_usage (
    owner        TEXT    NOT NULL,
    period       TEXT    NOT NULL,
    items        BIGINT NOT NULL,
    spend_micros BIGINT NOT NULL,
    PRIMARY KEY (owner, period)
);

-- Optional limits of admin-created keys (NULL: no limit).
ALTER TABLE api_keys ADD COLUMN items_per_day          BIGINT;
ALTER TABLE api_keys ADD COLUMN spend_per_day_micros   BIGINT;
ALTER TABLE api_keys ADD COLUMN spend_per_month_micros BIGINT;
