//! Jobs, items and their state machine.
//!
//! An item moves `queued → running → succeeded | failed | cancelled` (a running
//! item may also go back to `queued` when its worker shuts down, and a queued
//! item may be cancelled). Terminal states are final. A job's status is derived
//! from its items ([`JobStatus::derive`]); its progress is the mean of its
//! items' progress and, like theirs, never goes down.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::blob_key::BlobKey;
use super::display_name::DisplayName;
use super::ids::{ApiKeyId, ItemId, JobId};
use super::options::{GenerateOptions, ImageKind};

/// Progress in percent, `0..=100`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(try_from = "u8", into = "u8")]
pub struct Progress(u8);

impl Progress {
    /// 0 %.
    pub const ZERO: Progress = Progress(0);
    /// 100 %.
    pub const DONE: Progress = Progress(100);

    /// Clamps any number into `0..=100`.
    #[must_use]
    pub fn clamped(percent: i64) -> Self {
        Self(percent.clamp(0, 100) as u8)
    }

    /// The percentage.
    #[must_use]
    pub fn get(self) -> u8 {
        self.0
    }

    /// The larger of the two: progress never goes down.
    #[must_use]
    pub fn advance(self, to: Progress) -> Progress {
        self.max(to)
    }
}

impl TryFrom<u8> for Progress {
    type Error = &'static str;
    fn try_from(v: u8) -> Result<Self, Self::Error> {
        if v <= 100 {
            Ok(Self(v))
        } else {
            Err("progress must be 0..=100")
        }
    }
}

impl From<Progress> for u8 {
    fn from(p: Progress) -> u8 {
        p.0
    }
}

/// The state of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemStatus {
    /// Waiting for a worker.
    Queued,
    /// A worker holds it under a lease.
    Running,
    /// The model is stored.
    Succeeded,
    /// Generation failed; see the item's error.
    Failed,
    /// Cancelled by its owner or an admin.
    Cancelled,
}

impl ItemStatus {
    /// Whether the state is final.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ItemStatus::Succeeded | ItemStatus::Failed | ItemStatus::Cancelled
        )
    }

    /// Whether the state machine allows moving from `self` to `to`.
    #[must_use]
    pub fn can_become(self, to: ItemStatus) -> bool {
        use ItemStatus::*;
        matches!(
            (self, to),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Running, Queued)
                | (Running, Running)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Cancelled)
                | (Queued, Failed)
        )
    }

    /// The stable text form.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Queued => "queued",
            ItemStatus::Running => "running",
            ItemStatus::Succeeded => "succeeded",
            ItemStatus::Failed => "failed",
            ItemStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the text form.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "queued" => ItemStatus::Queued,
            "running" => ItemStatus::Running,
            "succeeded" => ItemStatus::Succeeded,
            "failed" => ItemStatus::Failed,
            "cancelled" => ItemStatus::Cancelled,
            _ => return None,
        })
    }
}

/// The state of a job, derived from its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// No item has started.
    Queued,
    /// Some item is running, or some are done and others wait.
    Running,
    /// Every item succeeded.
    Succeeded,
    /// All items ended, some succeeded and some did not.
    Partial,
    /// All items ended and none succeeded (at least one failed).
    Failed,
    /// All items ended, none succeeded and the job was cancelled.
    Cancelled,
}

impl JobStatus {
    /// Whether the job has ended.
    #[must_use]
    pub fn is_terminal(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }

    /// The job status implied by its items' statuses.
    #[must_use]
    pub fn derive(items: impl IntoIterator<Item = ItemStatus>) -> JobStatus {
        let (mut queued, mut running, mut succeeded, mut failed, mut cancelled) = (0, 0, 0, 0, 0);
        for s in items {
            match s {
                ItemStatus::Queued => queued += 1,
                ItemStatus::Running => running += 1,
                ItemStatus::Succeeded => succeeded += 1,
                ItemStatus::Failed => failed += 1,
                ItemStatus::Cancelled => cancelled += 1,
            }
        }
        let ended = succeeded + failed + cancelled;
        if running > 0 || (queued > 0 && ended > 0) {
            JobStatus::Running
        } else if queued > 0 || ended == 0 {
            JobStatus::Queued
        } else if succeeded == ended {
            JobStatus::Succeeded
        } else if succeeded > 0 {
            JobStatus::Partial
        } else if failed > 0 {
            JobStatus::Failed
        } else {
            JobStatus::Cancelled
        }
    }

    /// The stable text form.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Partial => "partial",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

/// Why an item failed: a stable code and a message safe to show to its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    /// Stable snake_case code (see `docs/ERRORS.md`).
    pub code: String,
    /// Human-readable explanation; never contains secrets, paths or SQL.
    pub message: String,
}

/// One image of a job and the model made from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The item's id.
    pub item_id: ItemId,
    /// The client's file name, for display only.
    pub filename: DisplayName,
    /// The image's kind, from its bytes.
    pub content_type: ImageKind,
    /// The image's size in bytes.
    pub size_bytes: u64,
    /// Width of the image in pixels, from its header.
    pub width: u32,
    /// Height of the image in pixels, from its header.
    pub height: u32,
    /// Where the uploaded image is stored.
    pub upload_key: BlobKey,
    /// The item's state.
    pub status: ItemStatus,
    /// Its progress, never going down.
    pub progress: Progress,
    /// Why it failed, when it did.
    pub error: Option<ItemError>,
    /// Where its model is stored, once it succeeded.
    pub model_key: Option<BlobKey>,
    /// Where the model's preview image is stored, when the generator made one.
    pub preview_key: Option<BlobKey>,
    /// The generator's own id of the remote request (e.g. FAL's `request_id`),
    /// persisted before polling so that a restarted worker resumes it.
    pub remote_request_id: Option<String>,
    /// How many times a worker has claimed it.
    pub attempts: u32,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A job: one upload of one or more images, owned by the key that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    pub job_id: JobId,
    /// The key that created it; only this key (and admins) may see it.
    pub owner: ApiKeyId,
    /// The state derived from its items.
    pub status: JobStatus,
    /// Mean progress of its items, never going down.
    pub progress: Progress,
    /// Generation options.
    pub options: GenerateOptions,
    /// The client's idempotency key, when one was sent.
    pub idempotency_key: Option<String>,
    /// Whether a cancel was requested.
    pub cancel_requested: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Its items, in upload order.
    pub items: Vec<Item>,
}

impl Job {
    /// Recomputes `status` and `progress` from the items (progress only moves up).
    pub fn refresh(&mut self) {
        self.status = JobStatus::derive(self.items.iter().map(|i| i.status));
        let mean = mean_progress(self.items.iter().map(|i| i.progress));
        self.progress = if self.status.is_terminal() {
            Progress::DONE
        } else {
            self.progress.advance(mean)
        };
    }

    /// The item with this id.
    #[must_use]
    pub fn item(&self, id: ItemId) -> Option<&Item> {
        self.items.iter().find(|i| i.item_id == id)
    }
}

/// The mean of some progress values (0 for none), rounded down.
#[must_use]
pub fn mean_progress(values: impl IntoIterator<Item = Progress>) -> Progress {
    let (sum, n) = values
        .into_iter()
        .fold((0u64, 0u64), |(s, n), p| (s + u64::from(p.get()), n + 1));
    Progress::clamped(sum.checked_div(n).map_or(0, |m| m as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ItemStatus::*;
    use proptest::prelude::*;

    #[test]
    fn job_status_follows_items() {
        assert_eq!(JobStatus::derive([Queued, Queued]), JobStatus::Queued);
        assert_eq!(JobStatus::derive([Running, Queued]), JobStatus::Running);
        assert_eq!(JobStatus::derive([Succeeded, Queued]), JobStatus::Running);
        assert_eq!(
            JobStatus::derive([Succeeded, Succeeded]),
            JobStatus::Succeeded
        );
        assert_eq!(JobStatus::derive([Succeeded, Failed]), JobStatus::Partial);
        assert_eq!(
            JobStatus::derive([Succeeded, Cancelled]),
            JobStatus::Partial
        );
        assert_eq!(JobStatus::derive([Failed, Cancelled]), JobStatus::Failed);
        assert_eq!(
            JobStatus::derive([Cancelled, Cancelled]),
            JobStatus::Cancelled
        );
    }

    #[test]
    fn terminal_items_never_move() {
        for from in [Succeeded, Failed, Cancelled] {
            for to in [Queued, Running, Succeeded, Failed, Cancelled] {
                assert!(!from.can_become(to), "{from:?} -> {to:?}");
            }
        }
    }

    fn status() -> impl Strategy<Value = ItemStatus> {
        prop_oneof![
            Just(Queued),
            Just(Running),
            Just(Succeeded),
            Just(Failed),
            Just(Cancelled)
        ]
    }

    proptest! {
        #[test]
        fn progress_never_goes_down(steps in proptest::collection::vec(0u8..=100, 0..50)) {
            let mut p = Progress::ZERO;
            for s in steps {
                let next = p.advance(Progress::try_from(s).unwrap());
                prop_assert!(next >= p);
                p = next;
            }
        }

        #[test]
        fn a_job_is_terminal_exactly_when_all_items_are(items in proptest::collection::vec(status(), 1..10)) {
            let job = JobStatus::derive(items.iter().copied());
            prop_assert_eq!(job.is_terminal(), items.iter().all(|s| s.is_terminal()));
            if job == JobStatus::Succeeded { prop_assert!(items.iter().all(|s| *s == Succeeded)); }
            if job == JobStatus::Partial { prop_assert!(items.contains(&Succeeded)); }
        }
    }
}
