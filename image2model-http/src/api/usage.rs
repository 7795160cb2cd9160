//! `GET /api/v1/usage`: a key's own use today and this month (UTC) against
//! its limits; the shapes the admin's `GET /api/v1/admin/usage` lists too.
//!
//! Items are counted when a job is accepted, with an estimated cost from the
//! price table (`MODEL_PRICES_USD` over fal's public prices); see
//! "Quotas" in `docs/API-NOTES.md`.

use chrono::Utc;
use image2model_core::domain::{ApiKeyId, Counts, KeyLimits, MicroUsd, Periods, Usage};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use crate::api::tags::ApiTags;
use crate::error::ApiError;
use crate::security::auth::UserKey;
use crate::state::AppState;

/// A key's optional limits; `null` is no limit.
#[derive(Debug, Clone, Default, Object)]
#[oai(rename = "KeyLimits", nullable_all)]
pub struct LimitsDto {
    /// Items accepted per UTC day.
    pub items_per_day: Option<u64>,
    /// Estimated spend per UTC day, in US dollars (rounded to the
    /// micro-dollar).
    #[oai(validator(minimum(value = "0")))]
    pub spend_per_day_usd: Option<f64>,
    /// Estimated spend per UTC month, in US dollars (rounded to the
    /// micro-dollar).
    #[oai(validator(minimum(value = "0")))]
    pub spend_per_month_usd: Option<f64>,
}

/// The largest spend limit in micro-dollars, about 9.2 trillion dollars
/// (what the stores keep, as signed 64-bit integers): a larger one is held
/// at it, as good as no limit.
const MAX_SPEND_MICROS: u64 = i64::MAX as u64;

impl From<KeyLimits> for LimitsDto {
    fn from(l: KeyLimits) -> Self {
        Self {
            items_per_day: l.items_per_day,
            spend_per_day_usd: l.spend_per_day.map(MicroUsd::as_usd),
            spend_per_month_usd: l.spend_per_month.map(MicroUsd::as_usd),
        }
    }
}

impl LimitsDto {
    /// The limits these fields give, each spend rounded to the nearest
    /// micro-dollar (a JSON number is a binary fraction: `0.1 + 0.2` is
    /// `0.30000000000000004`, which is 0.3 here, not an error) and held at
    /// about 9.2 trillion dollars; a message naming a spend that is negative or
    /// not finite (which the document's `minimum` already refuses).
    ///
    /// # Errors
    /// The message, for a 400.
    pub fn to_limits(&self) -> Result<KeyLimits, String> {
        let usd = |name: &str, v: Option<f64>| -> Result<Option<MicroUsd>, String> {
            match v {
                None => Ok(None),
                Some(v) if !v.is_finite() || v < 0.0 => {
                    Err(format!("{name} must be a dollar amount of 0 or more"))
                }
                // A float-to-integer `as` saturates: huge amounts end at the cap.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Some(v) => Ok(Some(MicroUsd(
                    ((v * 1_000_000.0).round() as u64).min(MAX_SPEND_MICROS),
                ))),
            }
        };
        Ok(KeyLimits {
            items_per_day: self.items_per_day,
            spend_per_day: usd("spend_per_day_usd", self.spend_per_day_usd)?,
            spend_per_month: usd("spend_per_month_usd", self.spend_per_month_usd)?,
        })
    }
}

/// Use over one period.
#[derive(Debug, Clone, Object)]
#[oai(rename = "PeriodUsage")]
pub struct PeriodUsageDto {
    /// The period: a UTC day `YYYY-MM-DD` or month `YYYY-MM`.
    pub period: String,
    /// Items accepted.
    pub items: u64,
    /// Their estimated cost, in US dollars.
    pub spend_usd: f64,
}

impl PeriodUsageDto {
    fn of(period: String, c: Counts) -> Self {
        Self {
            period,
            items: c.items,
            spend_usd: c.spend.as_usd(),
        }
    }
}

/// A key's use today and this month, and its limits.
#[derive(Debug, Clone, Object)]
#[oai(rename = "KeyUsage")]
pub struct UsageDto {
    /// The key.
    pub key_id: String,
    /// Today (UTC).
    pub day: PeriodUsageDto,
    /// This month (UTC), today included.
    pub month: PeriodUsageDto,
    /// Its limits.
    pub limits: LimitsDto,
}

impl UsageDto {
    /// `owner`'s `usage` over `periods`, with its `limits`.
    #[must_use]
    pub fn of(owner: &ApiKeyId, periods: Periods, usage: Usage, limits: KeyLimits) -> Self {
        Self {
            key_id: owner.to_string(),
            day: PeriodUsageDto::of(periods.day_key(), usage.day),
            month: PeriodUsageDto::of(periods.month_key(), usage.month),
            limits: limits.into(),
        }
    }
}

/// Responses of `GET /api/v1/usage`.
#[derive(Debug, ApiResponse)]
pub enum UsageResponse {
    /// The key's use and limits.
    #[oai(status = 200)]
    Ok(Json<UsageDto>),
}

/// The usage endpoint.
#[derive(Debug, Clone)]
pub struct UsageApi {
    pub(crate) state: AppState,
}

#[OpenApi(tag = "ApiTags::Jobs")]
impl UsageApi {
    /// Your key's use
    ///
    /// Items accepted and their estimated cost today and this month (UTC),
    /// with the key's limits. An upload that would pass a limit is refused
    /// with 429 `quota_exceeded`.
    #[oai(path = "/usage", method = "get", operation_id = "get_usage")]
    async fn usage(&self, auth: UserKey) -> Result<UsageResponse, ApiError> {
        let periods = Periods::at(Utc::now());
        let usage = self
            .state
            .pipeline
            .job_store()
            .usage(&auth.0.key_id, periods)
            .await
            .map_err(image2model_core::PipelineError::from)?;
        Ok(UsageResponse::Ok(Json(UsageDto::of(
            &auth.0.key_id,
            periods,
            usage,
            auth.0.limits,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_in_dollars_are_rounded_to_the_micro_dollar_or_refused() {
        let dto = LimitsDto {
            items_per_day: Some(5),
            spend_per_day_usd: Some(1.5),
            spend_per_month_usd: Some(0.1 + 0.2),
        };
        let limits = dto.to_limits().unwrap();
        assert_eq!(limits.spend_per_day, Some(MicroUsd(1_500_000)));
        assert_eq!(limits.spend_per_month, Some(MicroUsd(300_000)));
        for (asked, kept) in [
            (0.000_000_1, 0),
            (0.000_000_6, 1),
            (1e300, MAX_SPEND_MICROS),
            (-0.0, 0),
        ] {
            let dto = LimitsDto {
                spend_per_day_usd: Some(asked),
                ..LimitsDto::default()
            };
            assert_eq!(
                dto.to_limits().unwrap().spend_per_day,
                Some(MicroUsd(kept)),
                "{asked}"
            );
        }
        for bad in [-1.0, -0.000_000_1, f64::NAN, f64::INFINITY] {
            let dto = LimitsDto {
                spend_per_day_usd: Some(bad),
                ..LimitsDto::default()
            };
            assert!(dto.to_limits().is_err(), "{bad}");
        }
    }
}
