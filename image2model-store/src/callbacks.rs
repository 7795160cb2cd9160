//! The webhook outbox and settings of both SQL stores
//! ([`CallbackStore`]): tables `webhook_deliveries` and `webhook_settings`
//! (migrations `0005_webhooks.sql`).
//!
//! A delivery row is inserted with its job (by the stores' `create_job`,
//! from [`crate::rows::delivery_insert_sql`]) and is claimable once the
//! job's row says it has ended: the job ends in the transaction that writes
//! its last item, so the outbox entry is armed atomically with the end.
//! Claims lease rows with one `UPDATE … RETURNING` (Postgres skips rows that
//! a concurrent claim has locked; SQLite has one writer), and the lease's
//! end is the claim's token for [`CallbackStore::record_attempt`].
//!
//! Both engines run the same SQL (`$n` placeholders, which sqlx's SQLite
//! driver numbers too), but for the claim's row lock.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use image2model_core::domain::{ApiKeyId, CallbackUrl, Delivery, JobId, WebhookSettings};
use image2model_core::ports::{
    AttemptOutcome, CallbackStore, DeliveryClaim, DeliveryQuery, MAX_DELIVERY_PAGE, StoreError,
};

use crate::postgres::PostgresDatabase;
use crate::rows::{DeliveryRow, db_error, lease_until, to_ms};
use crate::sqlite::SqliteDatabase;

/// The claim's statement; `{lock}` is the engine's row lock clause.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE webhook_deliveries SET lease_until_ms = $1 WHERE delivery_id IN (\
             SELECT d.delivery_id FROM webhook_deliveries d JOIN jobs j ON j.job_id = d.job_id \
             WHERE d.status = 'pending' AND d.next_attempt_at_ms <= $2 \
             AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= $2) \
             AND j.status IN ('succeeded', 'partial', 'failed', 'cancelled') \
             ORDER BY d.next_attempt_at_ms, d.delivery_id LIMIT $3",
            $lock,
            ") RETURNING delivery_id, job_id, owner, url, status, attempts, next_attempt_at_ms, \
             lease_until_ms, last_error, last_status_code, delivered_at_ms, created_at_ms, \
             updated_at_ms"
        )
    };
}

/// Whether anything may be due, read without the write lock: most polls
/// find nothing, and a write transaction every poll would queue behind
/// (and hold up) the job writes.
const ANY_DUE_SQL: &str = "SELECT EXISTS (SELECT 1 FROM webhook_deliveries d \
     JOIN jobs j ON j.job_id = d.job_id WHERE d.status = 'pending' \
     AND d.next_attempt_at_ms <= $1 AND (d.lease_until_ms IS NULL OR d.lease_until_ms <= $1) \
     AND j.status IN ('succeeded', 'partial', 'failed', 'cancelled'))";

const SETTINGS_SQL: &str =
    "SELECT default_url, secret_seed, secret_created_at_ms FROM webhook_settings WHERE owner = $1";

const SET_URL_SQL: &str = "INSERT INTO webhook_settings (owner, default_url) VALUES ($1, $2) \
     ON CONFLICT (owner) DO UPDATE SET default_url = excluded.default_url \
     RETURNING default_url, secret_seed, secret_created_at_ms";

const SET_SEED_SQL: &str = "INSERT INTO webhook_settings (owner, secret_seed, secret_created_at_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (owner) DO UPDATE SET secret_seed = excluded.secret_seed, \
     secret_created_at_ms = excluded.secret_created_at_ms \
     RETURNING default_url, secret_seed, secret_created_at_ms";

const DELIVERY_SQL: &str = "SELECT delivery_id, job_id, owner, url, status, attempts, \
     next_attempt_at_ms, lease_until_ms, last_error, last_status_code, delivered_at_ms, \
     created_at_ms, updated_at_ms FROM webhook_deliveries WHERE job_id = $1";

const LIST_SQL: &str = "SELECT delivery_id, job_id, owner, url, status, attempts, \
     next_attempt_at_ms, lease_until_ms, last_error, last_status_code, delivered_at_ms, \
     created_at_ms, updated_at_ms FROM webhook_deliveries \
     WHERE ($1 IS NULL OR owner = $1) AND ($2 IS NULL OR status = $2) \
     AND ($3 IS NULL OR delivery_id < $3) ORDER BY delivery_id DESC LIMIT $4";

const RECORD_SQL: &str = "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, \
     next_attempt_at_ms = $2, last_error = $3, last_status_code = $4, delivered_at_ms = $5, \
     updated_at_ms = $6, lease_until_ms = NULL \
     WHERE delivery_id = $7 AND lease_until_ms = $8 AND status = 'pending'";

type SettingsRow = (Option<String>, Option<String>, Option<i64>);

fn settings_of(row: Option<SettingsRow>) -> Result<WebhookSettings, StoreError> {
    let Some((url, seed, at)) = row else {
        return Ok(WebhookSettings::default());
    };
    let corrupt = |e: String| StoreError::Corrupt(format!("webhook settings: {e}"));
    Ok(WebhookSettings {
        default_url: url
            .map(|u| CallbackUrl::from_stored(&u).map_err(|e| corrupt(e.to_string())))
            .transpose()?,
        secret_seed: seed,
        secret_created_at: at
            .map(|ms| {
                DateTime::from_timestamp_millis(ms)
                    .ok_or_else(|| corrupt("time out of range".into()))
            })
            .transpose()?,
    })
}

fn claims(rows: Vec<DeliveryRow>) -> Result<Vec<DeliveryClaim>, StoreError> {
    let mut out = rows
        .into_iter()
        .map(|row| {
            let lease_until_ms = row.lease_until_ms.unwrap_or_default();
            Ok(DeliveryClaim {
                delivery: row.into_delivery()?,
                lease_until_ms,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    out.sort_by_key(|c| (c.delivery.next_attempt_at, c.delivery.delivery_id));
    Ok(out)
}

/// The [`CallbackStore`] of one engine: `$db` its store, `$lock` the row
/// lock of its claim.
macro_rules! callback_store {
    ($db:ty, $lock:literal) => {
        #[async_trait]
        impl CallbackStore for $db {
            async fn webhook_settings(
                &self,
                owner: &ApiKeyId,
            ) -> Result<WebhookSettings, StoreError> {
                let row: Option<SettingsRow> = sqlx::query_as(SETTINGS_SQL)
                    .bind(owner.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_error("reading webhook settings"))?;
                settings_of(row)
            }

            async fn set_default_callback(
                &self,
                owner: &ApiKeyId,
                url: Option<&CallbackUrl>,
            ) -> Result<WebhookSettings, StoreError> {
                let mut tx = self.write().await?;
                let row: SettingsRow = sqlx::query_as(SET_URL_SQL)
                    .bind(owner.as_str())
                    .bind(url.map(|u| u.as_str().to_owned()))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_error("setting a default callback URL"))?;
                tx.commit()
                    .await
                    .map_err(db_error("committing webhook settings"))?;
                settings_of(Some(row))
            }

            async fn set_webhook_secret_seed(
                &self,
                owner: &ApiKeyId,
                seed: &str,
                at: DateTime<Utc>,
            ) -> Result<WebhookSettings, StoreError> {
                let mut tx = self.write().await?;
                let row: SettingsRow = sqlx::query_as(SET_SEED_SQL)
                    .bind(owner.as_str())
                    .bind(seed)
                    .bind(to_ms(at))
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db_error("setting a webhook secret"))?;
                tx.commit()
                    .await
                    .map_err(db_error("committing webhook settings"))?;
                settings_of(Some(row))
            }

            async fn delivery(&self, job: JobId) -> Result<Option<Delivery>, StoreError> {
                let row: Option<DeliveryRow> = sqlx::query_as(DELIVERY_SQL)
                    .bind(job.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_error("reading a webhook delivery"))?;
                row.map(DeliveryRow::into_delivery).transpose()
            }

            async fn claim_deliveries(
                &self,
                now: DateTime<Utc>,
                lease: Duration,
                limit: u32,
            ) -> Result<Vec<DeliveryClaim>, StoreError> {
                let any: bool = sqlx::query_scalar(ANY_DUE_SQL)
                    .bind(to_ms(now))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db_error("looking for due webhook deliveries"))?;
                if !any {
                    return Ok(Vec::new());
                }
                let mut tx = self.write().await?;
                let rows: Vec<DeliveryRow> = sqlx::query_as(claim_sql!($lock))
                    .bind(to_ms(lease_until(now, lease)))
                    .bind(to_ms(now))
                    .bind(i64::from(limit))
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(db_error("claiming webhook deliveries"))?;
                tx.commit().await.map_err(db_error("committing a claim"))?;
                claims(rows)
            }

            async fn record_attempt(
                &self,
                claim: &DeliveryClaim,
                outcome: &AttemptOutcome,
                at: DateTime<Utc>,
            ) -> Result<bool, StoreError> {
                let mut after = claim.delivery.clone();
                after.apply(outcome, at);
                let mut tx = self.write().await?;
                let done = sqlx::query(RECORD_SQL)
                    .bind(after.status.as_str())
                    .bind(to_ms(after.next_attempt_at))
                    .bind(after.last_error)
                    .bind(after.last_status_code.map(i64::from))
                    .bind(after.delivered_at.map(to_ms))
                    .bind(to_ms(at))
                    .bind(after.delivery_id.to_string())
                    .bind(claim.lease_until_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error("recording a webhook attempt"))?;
                tx.commit()
                    .await
                    .map_err(db_error("committing an attempt"))?;
                Ok(done.rows_affected() == 1)
            }

            async fn list_deliveries(
                &self,
                query: &DeliveryQuery,
            ) -> Result<Vec<Delivery>, StoreError> {
                let rows: Vec<DeliveryRow> = sqlx::query_as(LIST_SQL)
                    .bind(query.owner.as_ref().map(|o| o.as_str().to_owned()))
                    .bind(query.status.map(|s| s.as_str().to_owned()))
                    .bind(query.before.map(|b| b.to_string()))
                    .bind(i64::from(query.limit.min(MAX_DELIVERY_PAGE)))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(db_error("listing webhook deliveries"))?;
                rows.into_iter().map(DeliveryRow::into_delivery).collect()
            }
        }
    };
}

callback_store!(SqliteDatabase, "");
callback_store!(PostgresDatabase, " FOR UPDATE OF d SKIP LOCKED");
