//! The [`AuditLog`] conformance checks: one `pub async fn` per clause of the
//! contract, each taking a fresh, empty log.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::Check;
use crate::domain::ApiKeyId;
use crate::ports::{AuditEvent, AuditLog};

/// The list of checks, shared by the test macro and [`CHECKS`].
#[doc(hidden)]
#[macro_export]
macro_rules! __audit_log_checks {
    ($mode:ident ($($args:tt)*)) => {
        $crate::__conformance_expand! {$mode audit_log ($($args)*) [
            an_empty_log_has_no_events,
            events_round_trip_with_every_field,
            recent_is_newest_first_by_time_not_by_insertion,
            recent_returns_at_most_limit_events,
            recent_caps_the_limit_at_1000,
            before_returns_only_older_events,
            prune_removes_only_older_events_and_counts_them,
        ]}
    };
}

/// Every check, by name.
pub const CHECKS: &[Check<dyn AuditLog>] = crate::__audit_log_checks!(array());

// ---------------------------------------------------------------- helpers

/// A time `minutes_ago` minutes ago, at the millisecond precision the SQL
/// stores keep.
fn minutes_ago(minutes: i64) -> DateTime<Utc> {
    let t = Utc::now() - Duration::minutes(minutes);
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("a time in range")
}

/// An event of `kind` at `at`, with no actor.
#[must_use]
pub fn event(kind: &str, at: DateTime<Utc>) -> AuditEvent {
    AuditEvent {
        at,
        kind: kind.to_owned(),
        actor: None,
        client_ip: None,
        request_id: None,
        detail: json!({}),
    }
}

// ---------------------------------------------------------------- checks

/// A new log has nothing to show.
pub async fn an_empty_log_has_no_events(log: Arc<dyn AuditLog>) {
    assert!(log.recent(10, None).await.expect("recent").is_empty());
}

/// Every field, including nested JSON details and absent optional fields,
/// reads back as written.
pub async fn events_round_trip_with_every_field(log: Arc<dyn AuditLog>) {
    let full = AuditEvent {
        at: minutes_ago(2),
        kind: "key_created".into(),
        actor: Some(ApiKeyId::bootstrap_admin()),
        client_ip: Some("192.0.2.7".into()),
        request_id: Some("req-123".into()),
        detail: json!({"key_id": "key_x", "role": "user", "nested": {"n": [1, 2, 3]}, "ok": true}),
    };
    let bare = event("auth_failed", minutes_ago(1));
    log.record(full.clone()).await.expect("record full");
    log.record(bare.clone()).await.expect("record bare");

    let read = log.recent(10, None).await.expect("recent");

    assert_eq!(read, vec![bare, full]);
}

/// Events come newest first by their time, whatever order they were recorded in.
pub async fn recent_is_newest_first_by_time_not_by_insertion(log: Arc<dyn AuditLog>) {
    let middle = event("middle", minutes_ago(5));
    let newest = event("newest", minutes_ago(1));
    let oldest = event("oldest", minutes_ago(9));
    for e in [middle.clone(), newest.clone(), oldest.clone()] {
        log.record(e).await.expect("record");
    }

    let read = log.recent(10, None).await.expect("recent");

    let kinds: Vec<&str> = read.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["newest", "middle", "oldest"]);
}

/// `limit` bounds the answer, keeping the newest events.
pub async fn recent_returns_at_most_limit_events(log: Arc<dyn AuditLog>) {
    for n in 0..5 {
        log.record(event(&format!("e{n}"), minutes_ago(10 - n)))
            .await
            .expect("record");
    }

    let read = log.recent(2, None).await.expect("recent");

    let kinds: Vec<&str> = read.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["e4", "e3"]);
}

/// A limit above 1000 returns at most 1000 events.
pub async fn recent_caps_the_limit_at_1000(log: Arc<dyn AuditLog>) {
    let at = minutes_ago(1);
    for _ in 0..1001 {
        log.record(event("many", at)).await.expect("record");
    }

    let read = log.recent(5000, None).await.expect("recent");

    assert_eq!(read.len(), 1000);
}

/// With `before`, only strictly older events are returned, newest first.
pub async fn before_returns_only_older_events(log: Arc<dyn AuditLog>) {
    let times: Vec<DateTime<Utc>> = (0..4).map(|n| minutes_ago(40 - 10 * n)).collect();
    for (n, at) in times.iter().enumerate() {
        log.record(event(&format!("e{n}"), *at))
            .await
            .expect("record");
    }

    let read = log.recent(10, Some(times[2])).await.expect("recent");

    let kinds: Vec<&str> = read.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["e1", "e0"], "strictly before, newest first");
}

/// `prune(t)` removes exactly the events from before `t`, says how many,
/// and leaves the rest readable; a second prune finds nothing. More old
/// events than one batch of the SQL stores (500), so that every batch is
/// counted and none is left behind.
pub async fn prune_removes_only_older_events_and_counts_them(log: Arc<dyn AuditLog>) {
    const OLD: i64 = 1203;
    let cutoff = minutes_ago(60);
    for n in 0..OLD {
        log.record(event("old", minutes_ago(61 + n % 500)))
            .await
            .expect("record old");
    }
    let at_cutoff = event("at_cutoff", cutoff);
    let recent = event("recent", minutes_ago(1));
    log.record(at_cutoff.clone())
        .await
        .expect("record at cutoff");
    log.record(recent.clone()).await.expect("record recent");

    let removed = log.prune(cutoff).await.expect("prune");

    assert_eq!(removed, OLD as u64, "every older event");
    assert_eq!(
        log.recent(10, None).await.expect("recent"),
        vec![recent, at_cutoff]
    );
    assert_eq!(log.prune(cutoff).await.expect("prune again"), 0);
}
