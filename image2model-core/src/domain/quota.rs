//! Per-key quotas: what a key may spend, what it has spent, and what an
//! upload would charge.
//!
//! Money is counted in millionths of a US dollar ([`MicroUsd`]) so that sums
//! are exact. Usage is kept per owner and per UTC day and month; a day's
//! and a month's counts are charged together, in the same transaction that
//! creates the job (see [`crate::ports::JobStore::create_job`]), so two
//! instances on one database can never both spend the last unit.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::{ApiKeyId, ModelName};

/// An amount in millionths of a US dollar.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct MicroUsd(pub u64);

impl MicroUsd {
    /// Parses a dollar amount such as `0.30`, `2` or `0.000001`: at most six
    /// decimals, not negative, at most a trillion dollars.
    ///
    /// # Errors
    /// A message saying what is wrong with `text`.
    pub fn parse_usd(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || (!frac.is_empty() && !digits(frac)) || text.ends_with('.') {
            return Err(format!("{text:?} is not a dollar amount like 0.30"));
        }
        if frac.len() > 6 {
            return Err(format!("{text:?} has more than six decimals"));
        }
        if whole.len() > 12 {
            return Err(format!("{text:?} is over a trillion dollars"));
        }
        let whole: u64 = whole
            .parse()
            .map_err(|_| format!("{text:?} is too large"))?;
        let mut frac_micros: u64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            frac_micros += u64::from(b - b'0') * 10u64.pow(5 - i as u32);
        }
        Ok(Self(whole * 1_000_000 + frac_micros))
    }

    /// The amount in dollars (for display).
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn as_usd(self) -> f64 {
        self.0 as f64 / 1_000_000.0
    }
}

impl fmt::Display for MicroUsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// A key's optional limits. `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KeyLimits {
    /// Items accepted per UTC day.
    pub items_per_day: Option<u64>,
    /// Estimated spend per UTC day.
    pub spend_per_day: Option<MicroUsd>,
    /// Estimated spend per UTC month.
    pub spend_per_month: Option<MicroUsd>,
}

impl KeyLimits {
    /// Whether any limit is set.
    #[must_use]
    pub fn any(&self) -> bool {
        self.items_per_day.is_some()
            || self.spend_per_day.is_some()
            || self.spend_per_month.is_some()
    }

    /// The first limit that `usage` plus `items` items costing `spend`
    /// would pass, if any.
    #[must_use]
    pub fn check(&self, usage: &Usage, items: u64, spend: MicroUsd) -> Option<QuotaExceeded> {
        let over = |limit: QuotaLimit, allowed: Option<u64>, used: u64, requested: u64| {
            allowed
                .filter(|&a| used.saturating_add(requested) > a)
                .map(|allowed| QuotaExceeded {
                    limit,
                    allowed,
                    used,
                    requested,
                })
        };
        over(
            QuotaLimit::ItemsPerDay,
            self.items_per_day,
            usage.day.items,
            items,
        )
        .or_else(|| {
            over(
                QuotaLimit::SpendPerDay,
                self.spend_per_day.map(|m| m.0),
                usage.day.spend.0,
                spend.0,
            )
        })
        .or_else(|| {
            over(
                QuotaLimit::SpendPerMonth,
                self.spend_per_month.map(|m| m.0),
                usage.month.spend.0,
                spend.0,
            )
        })
    }
}

/// Items and estimated spend over one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Items accepted.
    pub items: u64,
    /// Their estimated cost.
    pub spend: MicroUsd,
}

/// A key's use in the current UTC day and month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// The day counted.
    pub day: Counts,
    /// The month counted (the day included).
    pub month: Counts,
}

/// The periods a charge counts in: a UTC day and its month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Periods {
    day: NaiveDate,
}

impl Periods {
    /// The periods of the instant `at`.
    #[must_use]
    pub fn at(at: DateTime<Utc>) -> Self {
        Self {
            day: at.date_naive(),
        }
    }

    /// The day as stored: `YYYY-MM-DD`.
    #[must_use]
    pub fn day_key(&self) -> String {
        self.day.format("%Y-%m-%d").to_string()
    }

    /// The month as stored: `YYYY-MM`.
    #[must_use]
    pub fn month_key(&self) -> String {
        format!("{:04}-{:02}", self.day.year(), self.day.month())
    }

    /// The day.
    #[must_use]
    pub fn day(&self) -> NaiveDate {
        self.day
    }
}

/// What creating a job charges its owner: written with the job, checked
/// against `limits` in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The periods charged.
    pub periods: Periods,
    /// Items charged.
    pub items: u64,
    /// Their estimated cost.
    pub spend: MicroUsd,
    /// The owner's limits at the time of the upload.
    pub limits: KeyLimits,
}

/// Which limit a refused upload would have passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaLimit {
    /// [`KeyLimits::items_per_day`].
    ItemsPerDay,
    /// [`KeyLimits::spend_per_day`].
    SpendPerDay,
    /// [`KeyLimits::spend_per_month`].
    SpendPerMonth,
}

impl QuotaLimit {
    /// Seconds from `now` until the limit's period ends (what `Retry-After`
    /// says): the next UTC midnight for a daily limit, the first of the
    /// next UTC month for a monthly one.
    #[must_use]
    pub fn seconds_until_reset(self, now: DateTime<Utc>) -> i64 {
        let today = now.date_naive();
        let next = match self {
            QuotaLimit::ItemsPerDay | QuotaLimit::SpendPerDay => today.succ_opt(),
            QuotaLimit::SpendPerMonth => {
                let (y, m) = if today.month() == 12 {
                    (today.year() + 1, 1)
                } else {
                    (today.year(), today.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1)
            }
        };
        next.map_or(1, |d| {
            (d.and_time(chrono::NaiveTime::MIN).and_utc() - now)
                .num_seconds()
                .max(1)
        })
    }

    /// Its name in messages and documents.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaLimit::ItemsPerDay => "items_per_day",
            QuotaLimit::SpendPerDay => "spend_per_day",
            QuotaLimit::SpendPerMonth => "spend_per_month",
        }
    }
}

/// An upload refused because it would pass a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct QuotaExceeded {
    /// The limit.
    pub limit: QuotaLimit,
    /// Its value (items, or micro-dollars for spend).
    pub allowed: u64,
    /// What was used before this upload.
    pub used: u64,
    /// What this upload asked for.
    pub requested: u64,
}

impl QuotaExceeded {
    /// A sentence for the client.
    #[must_use]
    pub fn message(&self) -> String {
        match self.limit {
            QuotaLimit::ItemsPerDay => format!(
                "this key may have {} items a day (UTC); {} are used today and this upload has {}",
                self.allowed, self.used, self.requested
            ),
            QuotaLimit::SpendPerDay | QuotaLimit::SpendPerMonth => format!(
                "this key may spend an estimated {} a {} (UTC); {} is spent and this upload would cost {}",
                MicroUsd(self.allowed),
                if self.limit == QuotaLimit::SpendPerDay {
                    "day"
                } else {
                    "month"
                },
                MicroUsd(self.used),
                MicroUsd(self.requested)
            ),
        }
    }
}

/// One owner's use, as the admin sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerUsage {
    /// The key.
    pub owner: ApiKeyId,
    /// Its use today and this month.
    pub usage: Usage,
}

/// Estimated prices per item, by model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PriceTable {
    prices: BTreeMap<String, MicroUsd>,
}

impl PriceTable {
    /// An empty table: every model free until priced.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a model's price per item.
    pub fn set(&mut self, model: &str, price: MicroUsd) {
        self.prices.insert(model.to_owned(), price);
    }

    /// A model's price per item; zero for a model without one.
    #[must_use]
    pub fn price(&self, model: &ModelName) -> MicroUsd {
        self.prices.get(model.as_str()).copied().unwrap_or_default()
    }

    /// What `items` items of `model` cost.
    #[must_use]
    pub fn cost(&self, model: &ModelName, items: u64) -> MicroUsd {
        MicroUsd(self.price(model).0.saturating_mul(items))
    }

    /// Every priced model, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, MicroUsd)> {
        self.prices.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// Applies overrides written `model=usd,model=usd` (e.g.
    /// `trellis=0.02,tripo3d-v2.5=0.30`).
    ///
    /// # Errors
    /// A message naming the entry that does not parse.
    pub fn apply_overrides(&mut self, text: &str) -> Result<(), String> {
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (model, usd) = entry
                .split_once('=')
                .ok_or_else(|| format!("{entry:?} is not model=price"))?;
            let model = ModelName::parse(model.trim()).map_err(|e| format!("{entry:?}: {e}"))?;
            let price = MicroUsd::parse_usd(usd)?;
            self.set(model.as_str(), price);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_amounts_parse_exactly() {
        assert_eq!(MicroUsd::parse_usd("0.30"), Ok(MicroUsd(300_000)));
        assert_eq!(MicroUsd::parse_usd("2"), Ok(MicroUsd(2_000_000)));
        assert_eq!(MicroUsd::parse_usd("0.000001"), Ok(MicroUsd(1)));
        assert_eq!(MicroUsd(1_234_567).to_string(), "$1.234567");
        for bad in [
            "",
            "-1",
            "1.",
            ".5",
            "0.0000001",
            "1e3",
            "abc",
            "1.2.3",
            "9999999999999",
        ] {
            assert!(MicroUsd::parse_usd(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_first_limit_passed_is_named() {
        let limits = KeyLimits {
            items_per_day: Some(10),
            spend_per_day: Some(MicroUsd(1_000_000)),
            spend_per_month: Some(MicroUsd(5_000_000)),
        };
        let mut usage = Usage::default();
        usage.day.items = 9;
        assert_eq!(limits.check(&usage, 1, MicroUsd(0)), None);
        let over = limits.check(&usage, 2, MicroUsd(0)).expect("over");
        assert_eq!(
            (over.limit, over.allowed, over.used, over.requested),
            (QuotaLimit::ItemsPerDay, 10, 9, 2)
        );
        usage.day.items = 0;
        usage.day.spend = MicroUsd(900_000);
        let over = limits.check(&usage, 1, MicroUsd(200_000)).expect("over");
        assert_eq!(over.limit, QuotaLimit::SpendPerDay);
        assert!(over.message().contains("$1.000000"), "{}", over.message());
        usage.day.spend = MicroUsd(0);
        usage.month.spend = MicroUsd(4_900_000);
        assert_eq!(
            limits.check(&usage, 1, MicroUsd(200_000)).map(|o| o.limit),
            Some(QuotaLimit::SpendPerMonth)
        );
        assert_eq!(
            KeyLimits::default().check(&usage, 1_000_000, MicroUsd(u64::MAX)),
            None
        );
    }

    #[test]
    fn limits_reset_at_the_next_utc_day_or_month() {
        let at = "2026-12-31T23:59:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(QuotaLimit::ItemsPerDay.seconds_until_reset(at), 60);
        assert_eq!(QuotaLimit::SpendPerMonth.seconds_until_reset(at), 60);
        let mid = "2026-11-15T12:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(QuotaLimit::SpendPerDay.seconds_until_reset(mid), 12 * 3600);
        assert_eq!(
            QuotaLimit::SpendPerMonth.seconds_until_reset(mid),
            (15 * 24 + 12) * 3600
        );
    }

    #[test]
    fn periods_are_the_utc_day_and_month() {
        let at = "2026-12-31T23:59:59Z".parse::<DateTime<Utc>>().unwrap();
        let p = Periods::at(at);
        assert_eq!(p.day_key(), "2026-12-31");
        assert_eq!(p.month_key(), "2026-12");
    }

    #[test]
    fn price_overrides_replace_and_add() {
        let mut t = PriceTable::new();
        t.set("trellis", MicroUsd(20_000));
        t.apply_overrides("trellis=0.05, relief=0").unwrap();
        assert_eq!(
            t.price(&ModelName::parse("trellis").unwrap()),
            MicroUsd(50_000)
        );
        assert_eq!(t.price(&ModelName::parse("relief").unwrap()), MicroUsd(0));
        assert_eq!(t.price(&ModelName::parse("unknown").unwrap()), MicroUsd(0));
        assert_eq!(
            t.cost(&ModelName::parse("trellis").unwrap(), 3),
            MicroUsd(150_000)
        );
        assert!(t.apply_overrides("trellis").is_err());
        assert!(t.apply_overrides("Bad Name=1").is_err());
        assert!(t.apply_overrides("trellis=-1").is_err());
    }
}
