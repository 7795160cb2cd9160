//! [`KeyStore`] and [`AuditLog`] for both SQL stores, in the same database
//! (and connection pool) as their jobs: tables `api_keys` and
//! `audit_events` (migrations `0002_keys_and_audit.sql`).
//!
//! The SQL differs between the engines only in its placeholders (`?` and
//! `$n`): one template of statements (`statements!`) and one of the two
//! implementations (`key_store_and_audit_log!`) serve both, and the row
//! shapes and their strict parsing are shared.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use image2model_core::domain::{ApiKeyId, KeyLimits, MicroUsd};
use image2model_core::ports::{AuditEvent, AuditLog, KeyStore, Role, StoreError, StoredKey};

use crate::postgres::PostgresDatabase;
use crate::rows::{Bound, db_error, to_ms};
use crate::sqlite::SqliteDatabase;

/// The most events one `recent` call returns.
const MAX_EVENTS: u32 = 1000;

/// The most events one statement of `prune` removes: each batch is a short
/// write of its own, so other writers wait for one batch, not the whole
/// backlog.
const PRUNE_BATCH: i64 = 500;

/// Runs `batch` (one statement removing at most [`PRUNE_BATCH`] rows, which
/// returns how many it removed) until one comes back short, and returns
/// the total.
async fn in_batches<F, Fut>(mut batch: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut removed = 0;
    loop {
        let n = batch().await?;
        removed += n;
        if n < PRUNE_BATCH.unsigned_abs() {
            return Ok(removed);
        }
    }
}

/// A row of `api_keys`.
#[derive(Debug, Clone, sqlx::FromRow)]
struct KeyRow {
    key_id: String,
    name: String,
    role: String,
    prefix: String,
    hash: String,
    created_at_ms: i64,
    last_used_at_ms: Option<i64>,
    revoked_at_ms: Option<i64>,
    items_per_day: Option<i64>,
    spend_per_day_micros: Option<i64>,
    spend_per_month_micros: Option<i64>,
}

/// A row of `audit_events` (without its sequence number).
#[derive(Debug, Clone, sqlx::FromRow)]
struct EventRow {
    at_ms: i64,
    kind: String,
    actor: Option<String>,
    client_ip: Option<String>,
    request_id: Option<String>,
    detail: String,
}

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {detail}"))
}

fn time_of(ms: i64, what: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(what, "time out of range"))
}

fn limit_stored(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn limit_of(n: Option<i64>, what: &str) -> Result<Option<u64>, StoreError> {
    n.map(|n| u64::try_from(n).map_err(|_| corrupt(what, "a negative limit")))
        .transpose()
}

fn key_id_of(text: &str, what: &str) -> Result<ApiKeyId, StoreError> {
    ApiKeyId::parse(text).map_err(|e| corrupt(what, e))
}

impl KeyRow {
    fn from_key(k: &StoredKey) -> Self {
        Self {
            key_id: k.key_id.as_str().to_owned(),
            name: k.name.clone(),
            role: k.role.as_str().to_owned(),
            prefix: k.prefix.clone(),
            hash: k.hash.clone(),
            created_at_ms: to_ms(k.created_at),
            last_used_at_ms: k.last_used_at.map(to_ms),
            revoked_at_ms: k.revoked_at.map(to_ms),
            items_per_day: k.limits.items_per_day.map(limit_stored),
            spend_per_day_micros: k.limits.spend_per_day.map(|m| limit_stored(m.0)),
            spend_per_month_micros: k.limits.spend_per_month.map(|m| limit_stored(m.0)),
        }
    }

    fn into_key(self) -> Result<StoredKey, StoreError> {
        Ok(StoredKey {
            key_id: key_id_of(&self.key_id, "api_keys.key_id")?,
            role: Role::parse(&self.role)
                .ok_or_else(|| corrupt("api_keys.role", "not user or admin"))?,
            name: self.name,
            prefix: self.prefix,
            hash: self.hash,
            created_at: time_of(self.created_at_ms, "api_keys.created_at_ms")?,
            last_used_at: self
                .last_used_at_ms
                .map(|t| time_of(t, "api_keys.last_used_at_ms"))
                .transpose()?,
            revoked_at: self
                .revoked_at_ms
                .map(|t| time_of(t, "api_keys.revoked_at_ms"))
                .transpose()?,
            limits: KeyLimits {
                items_per_day: limit_of(self.items_per_day, "api_keys.items_per_day")?,
                spend_per_day: limit_of(
                    self.spend_per_day_micros,
                    "api_keys.spend_per_day_micros",
                )?
                .map(MicroUsd),
                spend_per_month: limit_of(
                    self.spend_per_month_micros,
                    "api_keys.spend_per_month_micros",
                )?
                .map(MicroUsd),
            },
        })
    }
}

impl KeyRow {
    /// Binds the row's values to `query`, in `key_columns!()` order.
    fn bind_to<'q, DB>(self, query: Bound<'q, DB>) -> Bound<'q, DB>
    where
        DB: sqlx::Database,
        for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> Option<i64>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    {
        query
            .bind(self.key_id)
            .bind(self.name)
            .bind(self.role)
            .bind(self.prefix)
            .bind(self.hash)
            .bind(self.created_at_ms)
            .bind(self.last_used_at_ms)
            .bind(self.revoked_at_ms)
            .bind(self.items_per_day)
            .bind(self.spend_per_day_micros)
            .bind(self.spend_per_month_micros)
    }
}

impl EventRow {
    /// Binds the row's values to `query`, in `event_columns!()` order.
    fn bind_to<'q, DB>(self, query: Bound<'q, DB>) -> Bound<'q, DB>
    where
        DB: sqlx::Database,
        for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> Option<String>: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    {
        query
            .bind(self.at_ms)
            .bind(self.kind)
            .bind(self.actor)
            .bind(self.client_ip)
            .bind(self.request_id)
            .bind(self.detail)
    }

    fn from_event(e: &AuditEvent) -> Self {
        Self {
            at_ms: to_ms(e.at),
            kind: e.kind.clone(),
            actor: e.actor.as_ref().map(|a| a.as_str().to_owned()),
            client_ip: e.client_ip.clone(),
            request_id: e.request_id.clone(),
            detail: e.detail.to_string(),
        }
    }

    fn into_event(self) -> Result<AuditEvent, StoreError> {
        Ok(AuditEvent {
            at: time_of(self.at_ms, "audit_events.at_ms")?,
            kind: self.kind,
            actor: self
                .actor
                .map(|a| key_id_of(&a, "audit_events.actor"))
                .transpose()?,
            client_ip: self.client_ip,
            request_id: self.request_id,
            detail: serde_json::from_str(&self.detail)
                .map_err(|e| corrupt("audit_events.detail", e))?,
        })
    }
}

/// Like [`db_error`], but a unique violation is [`StoreError::Conflict`].
fn insert_error(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict("a key with this id or secret exists".into())
        }
        _ => db_error(context)(e),
    }
}

fn keys_of(rows: Vec<KeyRow>) -> Result<Vec<StoredKey>, StoreError> {
    rows.into_iter().map(KeyRow::into_key).collect()
}

fn events_of(rows: Vec<EventRow>) -> Result<Vec<AuditEvent>, StoreError> {
    rows.into_iter().map(EventRow::into_event).collect()
}

// ------------------------------------------------ both engines, one template

/// Fills in a column list (`key_columns!()` / `event_columns!()`) so the
/// statements below stay constant text.
macro_rules! key_columns {
    () => {
        "key_id, name, role, prefix, hash, created_at_ms, last_used_at_ms, revoked_at_ms, \
         items_per_day, spend_per_day_micros, spend_per_month_micros"
    };
}
macro_rules! event_columns {
    () => {
        "at_ms, kind, actor, client_ip, request_id, detail"
    };
}

/// The statements of the key store and audit log for one engine: they
/// differ only in their placeholders (`?` or `$n`), given as `p1`…`p8`.
macro_rules! statements {
    ($p1:literal, $p2:literal, $p3:literal, $p4:literal, $p5:literal, $p6:literal, $p7:literal, $p8:literal, $p9:literal, $p10:literal, $p11:literal) => {
        Statements {
            create_key: concat!(
                "INSERT INTO api_keys (",
                key_columns!(),
                ") VALUES (",
                $p1,
                ", ",
                $p2,
                ", ",
                $p3,
                ", ",
                $p4,
                ", ",
                $p5,
                ", ",
                $p6,
                ", ",
                $p7,
                ", ",
                $p8,
                ", ",
                $p9,
                ", ",
                $p10,
                ", ",
                $p11,
                ")"
            ),
            list_keys: concat!(
                "SELECT ",
                key_columns!(),
                " FROM api_keys ORDER BY created_at_ms, key_id"
            ),
            find_key: concat!(
                "SELECT ",
                key_columns!(),
                " FROM api_keys WHERE hash = ",
                $p1,
                " AND revoked_at_ms IS NULL"
            ),
            find_key_by_id: concat!(
                "SELECT ",
                key_columns!(),
                " FROM api_keys WHERE key_id = ",
                $p1
            ),
            revoke_key: concat!(
                "UPDATE api_keys SET revoked_at_ms = COALESCE(revoked_at_ms, ",
                $p1,
                ") WHERE key_id = ",
                $p2
            ),
            touch_key: concat!(
                "UPDATE api_keys SET last_used_at_ms = ",
                $p1,
                " WHERE key_id = ",
                $p2
            ),
            set_key_limits: concat!(
                "UPDATE api_keys SET items_per_day = ",
                $p1,
                ", spend_per_day_micros = ",
                $p2,
                ", spend_per_month_micros = ",
                $p3,
                " WHERE key_id = ",
                $p4
            ),
            record_event: concat!(
                "INSERT INTO audit_events (",
                event_columns!(),
                ") VALUES (",
                $p1,
                ", ",
                $p2,
                ", ",
                $p3,
                ", ",
                $p4,
                ", ",
                $p5,
                ", ",
                $p6,
                ")"
            ),
            recent_events: concat!(
                "SELECT ",
                event_columns!(),
                " FROM audit_events WHERE at_ms < ",
                $p1,
                " ORDER BY at_ms DESC, seq DESC LIMIT ",
                $p2
            ),
            prune_events: concat!(
                "DELETE FROM audit_events WHERE seq IN (SELECT seq FROM audit_events \
                 WHERE at_ms < ",
                $p1,
                " ORDER BY at_ms, seq LIMIT ",
                $p2,
                ")"
            ),
        }
    };
}

/// One engine's statements (see `statements!`).
struct Statements {
    create_key: &'static str,
    list_keys: &'static str,
    find_key: &'static str,
    find_key_by_id: &'static str,
    revoke_key: &'static str,
    touch_key: &'static str,
    set_key_limits: &'static str,
    record_event: &'static str,
    recent_events: &'static str,
    prune_events: &'static str,
}

const SQLITE: Statements = statements!("?", "?", "?", "?", "?", "?", "?", "?", "?", "?", "?");
const POSTGRES: Statements = statements!(
    "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11"
);

/// The [`KeyStore`] and [`AuditLog`] of one SQL store: `$sql` its
/// statements, `$turn` the method that waits for this process's write turn
/// (held for the write), `$writer` the method giving the pool writes go to.
macro_rules! key_store_and_audit_log {
    ($store:ty, $sql:expr, turn: $turn:ident, writer: $writer:ident) => {
        #[async_trait]
        impl KeyStore for $store {
            async fn create_key(&self, key: StoredKey) -> Result<(), StoreError> {
                let _turn = self.$turn().await;
                KeyRow::from_key(&key)
                    .bind_to(sqlx::query($sql.create_key))
                    .execute(self.$writer())
                    .await
                    .map_err(insert_error("creating a key"))?;
                Ok(())
            }

            async fn list_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
                let rows: Vec<KeyRow> = sqlx::query_as($sql.list_keys)
                    .fetch_all(self.pool())
                    .await
                    .map_err(db_error("listing keys"))?;
                keys_of(rows)
            }

            async fn find_key_by_hash(&self, hash: &str) -> Result<Option<StoredKey>, StoreError> {
                let row: Option<KeyRow> = sqlx::query_as($sql.find_key)
                    .bind(hash)
                    .fetch_optional(self.pool())
                    .await
                    .map_err(db_error("finding a key"))?;
                row.map(KeyRow::into_key).transpose()
            }

            async fn find_key(&self, key_id: &ApiKeyId) -> Result<Option<StoredKey>, StoreError> {
                let row: Option<KeyRow> = sqlx::query_as($sql.find_key_by_id)
                    .bind(key_id.as_str())
                    .fetch_optional(self.pool())
                    .await
                    .map_err(db_error("finding a key by id"))?;
                row.map(KeyRow::into_key).transpose()
            }

            async fn revoke_key(&self, key_id: &ApiKeyId) -> Result<bool, StoreError> {
                let _turn = self.$turn().await;
                let done = sqlx::query($sql.revoke_key)
                    .bind(to_ms(Utc::now()))
                    .bind(key_id.as_str())
                    .execute(self.$writer())
                    .await
                    .map_err(db_error("revoking a key"))?;
                Ok(done.rows_affected() > 0)
            }

            async fn set_key_limits(
                &self,
                key_id: &ApiKeyId,
                limits: KeyLimits,
            ) -> Result<bool, StoreError> {
                let _turn = self.$turn().await;
                let done = sqlx::query($sql.set_key_limits)
                    .bind(limits.items_per_day.map(limit_stored))
                    .bind(limits.spend_per_day.map(|m| limit_stored(m.0)))
                    .bind(limits.spend_per_month.map(|m| limit_stored(m.0)))
                    .bind(key_id.as_str())
                    .execute(self.$writer())
                    .await
                    .map_err(db_error("changing a key's limits"))?;
                Ok(done.rows_affected() > 0)
            }

            async fn touch_key(
                &self,
                key_id: &ApiKeyId,
                at: DateTime<Utc>,
            ) -> Result<(), StoreError> {
                let _turn = self.$turn().await;
                sqlx::query($sql.touch_key)
                    .bind(to_ms(at))
                    .bind(key_id.as_str())
                    .execute(self.$writer())
                    .await
                    .map_err(db_error("recording a key's use"))?;
                Ok(())
            }
        }

        #[async_trait]
        impl AuditLog for $store {
            async fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
                let _turn = self.$turn().await;
                EventRow::from_event(&event)
                    .bind_to(sqlx::query($sql.record_event))
                    .execute(self.$writer())
                    .await
                    .map_err(db_error("recording an audit event"))?;
                Ok(())
            }

            async fn recent(
                &self,
                limit: u32,
                before: Option<DateTime<Utc>>,
            ) -> Result<Vec<AuditEvent>, StoreError> {
                let rows: Vec<EventRow> = sqlx::query_as($sql.recent_events)
                    .bind(before.map_or(i64::MAX, to_ms))
                    .bind(i64::from(limit.min(MAX_EVENTS)))
                    .fetch_all(self.pool())
                    .await
                    .map_err(db_error("reading audit events"))?;
                events_of(rows)
            }

            async fn prune(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
                in_batches(|| async {
                    let _turn = self.$turn().await;
                    sqlx::query($sql.prune_events)
                        .bind(to_ms(before))
                        .bind(PRUNE_BATCH)
                        .execute(self.$writer())
                        .await
                        .map(|done| done.rows_affected())
                        .map_err(db_error("pruning audit events"))
                })
                .await
            }
        }
    };
}

impl PostgresDatabase {
    /// Postgres writers need no turn of this process: row locks and
    /// transactions order them.
    async fn no_turn(&self) {}
}

key_store_and_audit_log!(SqliteDatabase, SQLITE, turn: write_turn, writer: writer);
key_store_and_audit_log!(PostgresDatabase, POSTGRES, turn: no_turn, writer: pool);
