//! The per-key usage ledger of both SQL stores: table `key_usage`
//! (migrations `0004_key_usage_and_limits.sql`), one row per owner and
//! period (a UTC day `YYYY-MM-DD` or month `YYYY-MM`).
//!
//! A charge is two upserts that add to the day's and the month's rows and
//! return the new totals, inside the transaction that inserts the job; the
//! caller rolls the whole transaction back when the totals pass a limit.
//! The upsert takes the row's write lock (Postgres) or runs under the one
//! writer (SQLite), so concurrent charges, from any number of processes,
//! see each other's totals and never both pass the last unit. As in
//! `keys`, the SQL differs between the engines only in its placeholders.

use image2model_core::domain::{
    ApiKeyId, Charge, Counts, MicroUsd, OwnerUsage, Periods, QuotaExceeded, Usage,
};
use image2model_core::ports::StoreError;

use crate::postgres::PostgresDatabase;
use crate::rows::{add_usage_sql, db_error};
use crate::sqlite::SqliteDatabase;

/// A count as stored (SQL integers are signed).
fn stored(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored count; a negative one is corruption.
fn count(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("a negative usage count: {n}")))
}

/// Counts before a charge, from the totals after it.
fn before(after: Counts, charge: &Charge) -> Counts {
    Counts {
        items: after.items.saturating_sub(charge.items),
        spend: MicroUsd(after.spend.0.saturating_sub(charge.spend.0)),
    }
}

/// Groups `(owner, period, items, spend)` rows of one day and its month
/// into each owner's usage; owners without a month row are left out.
fn by_owner(
    rows: Vec<(String, String, i64, i64)>,
    periods: Periods,
) -> Result<Vec<OwnerUsage>, StoreError> {
    let day = periods.day_key();
    let mut out: Vec<OwnerUsage> = Vec::new();
    for (owner, period, items, spend) in rows {
        let owner = ApiKeyId::parse(&owner)
            .map_err(|e| StoreError::Corrupt(format!("a usage row's owner: {e}")))?;
        let counts = Counts {
            items: count(items)?,
            spend: MicroUsd(count(spend)?),
        };
        if out.last().is_none_or(|u| u.owner != owner) {
            out.push(OwnerUsage {
                owner,
                usage: Usage::default(),
            });
        }
        let usage = &mut out.last_mut().expect("pushed above").usage;
        if period == day {
            usage.day = counts;
        } else {
            usage.month = counts;
        }
    }
    out.retain(|u| u.usage.month != Counts::default());
    Ok(out)
}

/// One owner's day and month from its rows.
fn usage_of(rows: Vec<(String, i64, i64)>, periods: Periods) -> Result<Usage, StoreError> {
    let day = periods.day_key();
    let mut usage = Usage::default();
    for (period, items, spend) in rows {
        let counts = Counts {
            items: count(items)?,
            spend: MicroUsd(count(spend)?),
        };
        if period == day {
            usage.day = counts;
        } else {
            usage.month = counts;
        }
    }
    Ok(usage)
}

/// The ledger's statements for one engine, `$p` being its placeholder
/// syntax.
macro_rules! usage_ledger {
    ($db:ty, $conn:ty, $pool:ident, [$p1:literal, $p2:literal, $p3:literal, $p4:literal]) => {
        impl $db {
            /// Adds `charge` to `owner`'s day and month on `conn` (inside
            /// the caller's transaction) and returns the limit it passes,
            /// if any: the caller then rolls back.
            pub(crate) async fn charge_usage(
                conn: &mut $conn,
                owner: &ApiKeyId,
                charge: &Charge,
            ) -> Result<Option<QuotaExceeded>, StoreError> {
                const UPSERT: &str = concat!(
                    add_usage_sql!($p1, $p2, $p3, $p4),
                    " RETURNING items, spend_micros"
                );
                let mut totals = [Counts::default(); 2];
                for (slot, period) in [charge.periods.day_key(), charge.periods.month_key()]
                    .into_iter()
                    .enumerate()
                {
                    let (items, spend): (i64, i64) = sqlx::query_as(UPSERT)
                        .bind(owner.as_str())
                        .bind(period)
                        .bind(stored(charge.items))
                        .bind(stored(charge.spend.0))
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(db_error("charging a key's usage"))?;
                    totals[slot] = Counts {
                        items: count(items)?,
                        spend: MicroUsd(count(spend)?),
                    };
                }
                let was = Usage {
                    day: before(totals[0], charge),
                    month: before(totals[1], charge),
                };
                Ok(charge.limits.check(&was, charge.items, charge.spend))
            }

            /// `owner`'s counts for the day and month of `periods`.
            pub(crate) async fn read_usage(
                &self,
                owner: &ApiKeyId,
                periods: Periods,
            ) -> Result<Usage, StoreError> {
                const READ: &str = concat!(
                    "SELECT period, items, spend_micros FROM key_usage WHERE owner = ",
                    $p1,
                    " AND period IN (",
                    $p2,
                    ", ",
                    $p3,
                    ")"
                );
                let rows: Vec<(String, i64, i64)> = sqlx::query_as(READ)
                    .bind(owner.as_str())
                    .bind(periods.day_key())
                    .bind(periods.month_key())
                    .fetch_all(&self.$pool)
                    .await
                    .map_err(db_error("reading a key's usage"))?;
                usage_of(rows, periods)
            }

            /// Every owner's counts for the day and month of `periods`.
            pub(crate) async fn read_usage_by_owner(
                &self,
                periods: Periods,
            ) -> Result<Vec<OwnerUsage>, StoreError> {
                const READ: &str = concat!(
                    "SELECT owner, period, items, spend_micros FROM key_usage WHERE period IN (",
                    $p1,
                    ", ",
                    $p2,
                    ") ORDER BY owner"
                );
                let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(READ)
                    .bind(periods.day_key())
                    .bind(periods.month_key())
                    .fetch_all(&self.$pool)
                    .await
                    .map_err(db_error("reading every key's usage"))?;
                by_owner(rows, periods)
            }
        }
    };
}

usage_ledger!(
    SqliteDatabase,
    sqlx::SqliteConnection,
    pool,
    ["?", "?", "?", "?"]
);
usage_ledger!(
    PostgresDatabase,
    sqlx::PgConnection,
    pool,
    ["$1", "$2", "$3", "$4"]
);
