//! Per-key quotas at the HTTP edge: the audit events and metrics of a
//! refused upload and of one that takes a key near its limit.
//!
//! The counting itself is the core's: an upload charges its owner in the
//! transaction that creates the job ([`image2model_core::pipeline::Upload`]),
//! so it is exact across instances sharing one database.

use image2model_core::domain::{Job, KeyLimits, Periods, QuotaLimit, Usage};
use image2model_core::ports::Principal;
use poem::Request;
use serde_json::json;

use crate::audit::{Entry, kind};
use crate::state::AppState;

/// The share of a limit at which the owner and the admin are warned.
pub const WARN_PERCENT: u64 = 80;

/// Records a refused upload: a metric and a `quota_exceeded` audit event.
pub async fn refused(state: &AppState, who: &Principal, req: &Request, message: &str) {
    metrics::counter!("image2model_quota_refusals_total").increment(1);
    state
        .audit(
            Entry::new(kind::QUOTA_EXCEEDED)
                .actor(&who.key_id)
                .client_ip(state.clients.client_ip(req))
                .detail(json!({ "key_id": who.key_id.as_str(), "message": message })),
        )
        .await;
}

/// The limits an upload of `items` items costing `spend` took from under
/// [`WARN_PERCENT`] to at or over it, given the counts after it.
#[must_use]
pub fn crossed(limits: &KeyLimits, after: &Usage, items: u64, spend: u64) -> Vec<QuotaLimit> {
    let crossed = |allowed: Option<u64>, now: u64, added: u64| {
        allowed.is_some_and(|a| {
            let mark = a.saturating_mul(WARN_PERCENT) / 100;
            now.saturating_sub(added) < mark && now >= mark
        })
    };
    let mut out = Vec::new();
    if crossed(limits.items_per_day, after.day.items, items) {
        out.push(QuotaLimit::ItemsPerDay);
    }
    if crossed(limits.spend_per_day.map(|m| m.0), after.day.spend.0, spend) {
        out.push(QuotaLimit::SpendPerDay);
    }
    if crossed(
        limits.spend_per_month.map(|m| m.0),
        after.month.spend.0,
        spend,
    ) {
        out.push(QuotaLimit::SpendPerMonth);
    }
    out
}

/// After an accepted upload by a key with limits: warns (metric and
/// `quota_nearly_used` audit event) for each limit the upload took past
/// [`WARN_PERCENT`]. A failed read of the counts is logged and skipped.
pub async fn after_upload(state: &AppState, who: &Principal, req: &Request, job: &Job) {
    if !who.limits.any() {
        return;
    }
    let periods = Periods::at(job.created_at);
    let usage = match state.pipeline.job_store().usage(&who.key_id, periods).await {
        Ok(usage) => usage,
        Err(e) => {
            tracing::warn!(error = %e, "could not read a key's usage for its quota warning");
            return;
        }
    };
    let items = job.items.len() as u64;
    let spend = state
        .pipeline
        .config()
        .prices
        .cost(&job.options.model, items)
        .0;
    for limit in crossed(&who.limits, &usage, items, spend) {
        metrics::counter!("image2model_quota_warnings_total", "limit" => limit.as_str())
            .increment(1);
        state
            .audit(
                Entry::new(kind::QUOTA_NEARLY_USED)
                    .actor(&who.key_id)
                    .client_ip(state.clients.client_ip(req))
                    .detail(json!({
                        "key_id": who.key_id.as_str(),
                        "limit": limit.as_str(),
                        "percent": WARN_PERCENT,
                    })),
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image2model_core::domain::{Counts, MicroUsd};

    #[test]
    fn a_warning_is_given_once_when_80_percent_is_crossed() {
        let limits = KeyLimits {
            items_per_day: Some(10),
            spend_per_day: None,
            spend_per_month: Some(MicroUsd(1_000_000)),
        };
        let usage = |items, spend| Usage {
            day: Counts {
                items,
                spend: MicroUsd(spend),
            },
            month: Counts {
                items,
                spend: MicroUsd(spend),
            },
        };
        assert_eq!(crossed(&limits, &usage(7, 0), 1, 0), vec![]);
        assert_eq!(
            crossed(&limits, &usage(8, 0), 1, 0),
            vec![QuotaLimit::ItemsPerDay]
        );
        assert_eq!(
            crossed(&limits, &usage(9, 0), 1, 0),
            vec![],
            "already past: no second warning"
        );
        assert_eq!(
            crossed(&limits, &usage(2, 850_000), 2, 100_000),
            vec![QuotaLimit::SpendPerMonth]
        );
        assert!(crossed(&KeyLimits::default(), &usage(100, 100), 100, 100).is_empty());
    }
}
