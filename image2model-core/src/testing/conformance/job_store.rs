//! The [`JobStore`] conformance checks: one `pub async fn` per clause of the
//! contract, each taking a fresh, empty store.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::Check;
use crate::domain::{
    ApiKeyId, BlobKey, CallbackUrl, Charge, DeliveryStatus, DisplayName, GenerateOptions,
    ImageKind, ItemError, ItemId, ItemStatus, Job, JobId, JobStatus, KeyLimits, MicroUsd,
    ModelName, NewCallback, Periods, Progress, QuotaLimit, Texture, Usage,
};
use crate::ports::{
    AttemptOutcome, CallbackStore, Claim, ClaimOptions, CreateOutcome, DeliveryClaim,
    DeliveryQuery, ItemOutcome, JobStore, LeaseToken, ListQuery, NewItem, NewJob, QueueStats,
};

/// The list of checks, shared by the test macro and [`CHECKS`].
#[doc(hidden)]
#[macro_export]
macro_rules! __job_store_checks {
    ($mode:ident ($($args:tt)*)) => {
        $crate::__conformance_expand! {$mode job_store ($($args)*) [
            create_returns_the_queued_job_with_items_in_upload_order,
            get_of_a_missing_job_is_none,
            same_owner_and_idempotency_key_returns_the_existing_job,
            another_owner_may_reuse_an_idempotency_key,
            concurrent_creates_with_one_idempotency_key_create_one_job,
            list_is_newest_first_and_filters_by_owner,
            list_pages_with_limit_and_cursor,
            list_caps_the_limit_at_100,
            list_active_only_leaves_out_ended_jobs,
            claim_on_an_empty_store_is_none,
            claim_takes_the_oldest_job_first_and_items_in_upload_order,
            claim_sets_running_lease_and_attempts,
            concurrent_claims_take_each_item_exactly_once,
            expired_lease_is_reclaimed_with_a_new_token,
            renewed_lease_is_not_reclaimed,
            lease_expired_max_attempts_times_fails_the_item_with_worker_lost,
            claim_with_models_takes_only_those_models_oldest_first,
            claim_leaves_an_expired_item_of_another_model_alone,
            renew_leases_renews_held_leases_and_returns_the_lost_ones,
            renew_leases_of_no_leases_is_empty,
            renew_leases_renews_a_batch_larger_than_one_chunk,
            stale_token_returns_false_and_changes_nothing,
            progress_rises_but_never_falls,
            job_status_and_progress_follow_the_items,
            succeeded_item_records_its_keys,
            failed_item_records_its_error,
            release_requeues_keeping_progress_and_remote_request,
            terminal_items_never_change,
            cancel_cancels_queued_and_running_items_and_leaves_ended_ones,
            items_of_a_cancelled_job_are_never_claimed,
            cancel_or_delete_of_a_missing_job_is_none,
            delete_returns_the_job_and_removes_it,
            ended_jobs_before_lists_ended_jobs_oldest_first,
            stats_count_queued_and_running_items_and_jobs,
            ping_answers,
            charges_count_by_owner_day_and_month,
            a_create_over_a_limit_creates_and_counts_nothing,
            concurrent_charged_creates_never_pass_a_limit,
            a_delivery_is_claimable_only_once_its_job_has_ended,
            record_attempt_applies_the_outcome_only_under_the_lease,
            an_expired_delivery_lease_is_claimed_again,
            concurrent_delivery_claims_take_each_delivery_once,
            cancel_arms_a_delivery_and_delete_removes_it,
            webhook_settings_are_per_owner_and_kept_apart,
            list_deliveries_filters_by_owner_and_status_newest_first,
        ]}
    };
}

/// Every check, by name.
pub const CHECKS: &[Check<dyn JobStore>] = crate::__job_store_checks!(array());

// ---------------------------------------------------------------- helpers

/// A claim option set with a long lease (no expiry during a check).
const LONG: ClaimOptions = ClaimOptions {
    lease: Duration::from_secs(60),
    max_attempts: 3,
    models: None,
};

/// A short lease for expiry checks.
const SHORT_LEASE: Duration = Duration::from_millis(250);
/// Sleeping this long lets a [`SHORT_LEASE`] expire.
const PAST_SHORT_LEASE: Duration = Duration::from_millis(450);

fn owner(name: &str) -> ApiKeyId {
    ApiKeyId::parse(name).expect("test owner ids are valid")
}

/// `n` fresh job ids in ascending (creation) order.
fn job_ids(n: usize) -> Vec<JobId> {
    let mut ids: Vec<JobId> = (0..n).map(|_| JobId::new()).collect();
    ids.sort();
    ids
}

/// A new job with `items` items. Item ids are given in *descending* order so
/// that a store ordering items by id instead of upload order is caught.
#[must_use]
pub fn new_job(job_id: JobId, owner: &ApiKeyId, items: usize) -> NewJob {
    let mut item_ids: Vec<ItemId> = (0..items).map(|_| ItemId::new()).collect();
    item_ids.sort();
    item_ids.reverse();
    NewJob {
        job_id,
        owner: owner.clone(),
        options: GenerateOptions {
            model: ModelName::parse("tripo3d-v2.5").expect("valid model"),
            face_limit: Some(crate::domain::FaceLimit::new(20_000).expect("valid limit")),
            texture: Texture::Hd,
        },
        idempotency_key: None,
        items: item_ids
            .into_iter()
            .enumerate()
            .map(|(n, item_id)| NewItem {
                item_id,
                filename: DisplayName::sanitize(&format!("photo {n}.png")),
                content_type: ImageKind::Png,
                size_bytes: 1000 + n as u64,
                width: 640 + n as u32,
                height: 480,
                upload_key: BlobKey::upload(job_id, item_id, ImageKind::Png),
            })
            .collect(),
        charge: None,
        callback: None,
    }
}

/// [`new_job`] for `model` instead of the default one.
fn new_job_of(job_id: JobId, owner: &ApiKeyId, items: usize, model: &str) -> NewJob {
    let mut new = new_job(job_id, owner, items);
    new.options.model = ModelName::parse(model).expect("test model names are valid");
    new
}

/// Claim options with a long lease for jobs of `models` only.
fn long_for(models: &[&str]) -> ClaimOptions {
    ClaimOptions {
        models: Some(
            models
                .iter()
                .map(|m| ModelName::parse(m).expect("test model names are valid"))
                .collect(),
        ),
        ..LONG
    }
}

fn item_ids(job: &Job) -> Vec<ItemId> {
    job.items.iter().map(|i| i.item_id).collect()
}

async fn create(store: &Arc<dyn JobStore>, new: NewJob) -> Job {
    match store.create_job(new).await.expect("create_job") {
        CreateOutcome::Created(job) => job,
        CreateOutcome::Existing(job) => {
            panic!("create_job returned Existing({}) for a new job", job.job_id)
        }
        CreateOutcome::OverQuota(over) => panic!("create_job refused a job without limits: {over}"),
    }
}

/// Creates `n` jobs of `items` items for `owner`, oldest first.
async fn create_jobs(
    store: &Arc<dyn JobStore>,
    owner: &ApiKeyId,
    n: usize,
    items: usize,
) -> Vec<Job> {
    let mut jobs = Vec::with_capacity(n);
    for id in job_ids(n) {
        jobs.push(create(store, new_job(id, owner, items)).await);
    }
    jobs
}

async fn get(store: &Arc<dyn JobStore>, id: JobId) -> Job {
    store
        .get_job(id)
        .await
        .expect("get_job")
        .unwrap_or_else(|| panic!("job {id} should exist"))
}

async fn claim(store: &Arc<dyn JobStore>, options: ClaimOptions) -> Claim {
    store
        .claim_next(options)
        .await
        .expect("claim_next")
        .expect("claim_next should find a claimable item")
}

async fn assert_nothing_claimable(store: &Arc<dyn JobStore>, why: &str) {
    if let Some(c) = store.claim_next(LONG).await.expect("claim_next") {
        panic!("claim_next claimed item {} but {why}", c.item.item_id);
    }
}

fn progress(p: u8) -> Progress {
    Progress::try_from(p).expect("test progress is in range")
}

fn model_key(job: &Job, idx: usize) -> BlobKey {
    BlobKey::model(job.job_id, job.items[idx].item_id)
}

fn job_ids_of(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.job_id).collect()
}

fn assert_refreshed(job: &Job, context: &str) {
    let mut expected = job.clone();
    expected.refresh();
    assert_eq!(
        job.status, expected.status,
        "{context}: job status must be derived from its items (JobStatus::derive)"
    );
    assert!(
        job.progress >= expected.progress,
        "{context}: job progress {} is below what its items imply ({})",
        job.progress.get(),
        expected.progress.get()
    );
}

// ---------------------------------------------------------------- create and get

/// `create_job` stores a queued job whose items keep upload order, and
/// `get_job` returns exactly what `create_job` returned.
pub async fn create_returns_the_queued_job_with_items_in_upload_order(store: Arc<dyn JobStore>) {
    let owner = owner("alice");
    let new = new_job(JobId::new(), &owner, 3);
    let expected_items: Vec<ItemId> = new.items.iter().map(|i| i.item_id).collect();

    let job = create(&store, new.clone()).await;

    assert_eq!(job.job_id, new.job_id);
    assert_eq!(job.owner, owner);
    assert_eq!(job.status, JobStatus::Queued, "a new job is queued");
    assert_eq!(job.progress, Progress::ZERO, "a new job has progress 0");
    assert_eq!(job.options, new.options, "options are kept");
    assert!(!job.cancel_requested);
    assert_eq!(job.idempotency_key, None);
    let got_items: Vec<ItemId> = job.items.iter().map(|i| i.item_id).collect();
    assert_eq!(got_items, expected_items, "items keep upload order");
    for (item, n) in job.items.iter().zip(&new.items) {
        assert_eq!(item.status, ItemStatus::Queued);
        assert_eq!(item.progress, Progress::ZERO);
        assert_eq!(item.attempts, 0);
        assert_eq!(item.filename, n.filename);
        assert_eq!(item.content_type, n.content_type);
        assert_eq!(item.size_bytes, n.size_bytes);
        assert_eq!((item.width, item.height), (n.width, n.height));
        assert_eq!(item.upload_key, n.upload_key);
        assert_eq!(item.error, None);
        assert_eq!(item.model_key, None);
        assert_eq!(item.preview_key, None);
        assert_eq!(item.remote_request_id, None);
    }
    let age = Utc::now() - job.created_at;
    assert!(
        age.num_seconds().abs() < 60,
        "created_at should be about now, is {}",
        job.created_at
    );
    assert_eq!(
        get(&store, job.job_id).await,
        job,
        "get_job must return the job exactly as create_job returned it"
    );
}

/// `get_job` of an unknown id is `None`, not an error.
pub async fn get_of_a_missing_job_is_none(store: Arc<dyn JobStore>) {
    let got = store.get_job(JobId::new()).await.expect("get_job");
    assert!(got.is_none(), "an unknown job id must give None");
}

/// A second create with the same owner and idempotency key creates nothing and
/// returns the first job.
pub async fn same_owner_and_idempotency_key_returns_the_existing_job(store: Arc<dyn JobStore>) {
    let owner = owner("alice");
    let ids = job_ids(2);
    let mut first = new_job(ids[0], &owner, 1);
    first.idempotency_key = Some("key-1".into());
    let mut second = new_job(ids[1], &owner, 2);
    second.idempotency_key = Some("key-1".into());
    let created = create(&store, first).await;

    let outcome = store.create_job(second).await.expect("create_job");

    match outcome {
        CreateOutcome::Existing(job) => assert_eq!(job, created, "Existing carries the first job"),
        CreateOutcome::OverQuota(over) => panic!("no limits were set: {over}"),
        CreateOutcome::Created(job) => panic!(
            "a reused idempotency key created job {} instead of returning Existing",
            job.job_id
        ),
    }
    assert!(
        store.get_job(ids[1]).await.expect("get_job").is_none(),
        "the second job must not have been created"
    );
    assert_eq!(store.stats().await.expect("stats").jobs, 1);
    assert_eq!(store.stats().await.expect("stats").queued, 1);
    let found = store
        .find_by_idempotency_key(&owner, "key-1")
        .await
        .expect("find_by_idempotency_key");
    assert_eq!(found, Some(created));
    let other = store
        .find_by_idempotency_key(&owner, "key-2")
        .await
        .expect("find_by_idempotency_key");
    assert!(other.is_none(), "an unused key finds nothing");
}

/// Idempotency keys are unique per owner, not globally.
pub async fn another_owner_may_reuse_an_idempotency_key(store: Arc<dyn JobStore>) {
    let (alice, bob) = (owner("alice"), owner("bob"));
    let ids = job_ids(2);
    let mut a = new_job(ids[0], &alice, 1);
    a.idempotency_key = Some("same".into());
    let mut b = new_job(ids[1], &bob, 1);
    b.idempotency_key = Some("same".into());

    let job_a = create(&store, a).await;
    let job_b = create(&store, b).await;

    assert_ne!(job_a.job_id, job_b.job_id);
    let found_b = store
        .find_by_idempotency_key(&bob, "same")
        .await
        .expect("find_by_idempotency_key");
    assert_eq!(found_b.map(|j| j.job_id), Some(job_b.job_id));
    let found_a = store
        .find_by_idempotency_key(&alice, "same")
        .await
        .expect("find_by_idempotency_key");
    assert_eq!(found_a.map(|j| j.job_id), Some(job_a.job_id));
}

/// Racing creates with one owner and key: exactly one is `Created`, the others
/// get that same job as `Existing`.
pub async fn concurrent_creates_with_one_idempotency_key_create_one_job(store: Arc<dyn JobStore>) {
    let owner = owner("alice");
    let tasks: Vec<_> = job_ids(6)
        .into_iter()
        .map(|id| {
            let store = store.clone();
            let mut new = new_job(id, &owner, 2);
            new.idempotency_key = Some("race".into());
            tokio::spawn(async move { store.create_job(new).await.expect("create_job") })
        })
        .collect();

    let mut created = Vec::new();
    let mut existing = Vec::new();
    for t in tasks {
        match t.await.expect("create task") {
            CreateOutcome::Created(j) => created.push(j.job_id),
            CreateOutcome::Existing(j) => existing.push(j.job_id),
            CreateOutcome::OverQuota(over) => panic!("no limits were set: {over}"),
        }
    }

    assert_eq!(created.len(), 1, "exactly one racing create may succeed");
    assert!(
        existing.iter().all(|id| *id == created[0]),
        "every other racing create must return the created job"
    );
    assert_eq!(store.stats().await.expect("stats").jobs, 1);
}

// ---------------------------------------------------------------- list

/// `list_jobs` is newest first; `owner` filters, `None` lists every owner.
pub async fn list_is_newest_first_and_filters_by_owner(store: Arc<dyn JobStore>) {
    let (alice, bob) = (owner("alice"), owner("bob"));
    let ids = job_ids(4);
    let owners = [&alice, &bob, &alice, &bob];
    for (id, o) in ids.iter().zip(owners) {
        create(&store, new_job(*id, o, 1)).await;
    }

    let all = store
        .list_jobs(&ListQuery {
            owner: None,
            limit: 10,
            cursor: None,
            active_only: false,
        })
        .await
        .expect("list_jobs");
    let alices = store
        .list_jobs(&ListQuery {
            owner: Some(alice.clone()),
            limit: 10,
            cursor: None,
            active_only: false,
        })
        .await
        .expect("list_jobs");
    let nobody = store
        .list_jobs(&ListQuery {
            owner: Some(owner("carol")),
            limit: 10,
            cursor: None,
            active_only: false,
        })
        .await
        .expect("list_jobs");

    assert_eq!(
        job_ids_of(&all.jobs),
        vec![ids[3], ids[2], ids[1], ids[0]],
        "all jobs, newest first"
    );
    assert_eq!(all.next_cursor, None, "one page holds them all");
    assert_eq!(
        job_ids_of(&alices.jobs),
        vec![ids[2], ids[0]],
        "only alice's jobs, newest first"
    );
    assert!(alices.jobs.iter().all(|j| j.owner == alice));
    assert!(nobody.jobs.is_empty() && nobody.next_cursor.is_none());
    assert_eq!(all.jobs[0].items.len(), 1, "listed jobs carry their items");
}

/// Paging with `limit` and `cursor` visits every job once, newest first, and
/// the last page (even a full one) has no `next_cursor`.
pub async fn list_pages_with_limit_and_cursor(store: Arc<dyn JobStore>) {
    let (alice, bob) = (owner("alice"), owner("bob"));
    let alice_jobs = job_ids_of(&create_jobs(&store, &alice, 5, 1).await);
    create_jobs(&store, &bob, 2, 1).await;
    let page = |cursor| ListQuery {
        owner: Some(alice.clone()),
        limit: 2,
        cursor,
        active_only: false,
    };

    let p1 = store.list_jobs(&page(None)).await.expect("list_jobs");
    let p2 = store
        .list_jobs(&page(p1.next_cursor))
        .await
        .expect("list_jobs");
    let p3 = store
        .list_jobs(&page(p2.next_cursor))
        .await
        .expect("list_jobs");

    assert_eq!(job_ids_of(&p1.jobs), vec![alice_jobs[4], alice_jobs[3]]);
    assert_eq!(
        p1.next_cursor,
        Some(alice_jobs[3]),
        "cursor is the page's last job"
    );
    assert_eq!(job_ids_of(&p2.jobs), vec![alice_jobs[2], alice_jobs[1]]);
    assert_eq!(job_ids_of(&p3.jobs), vec![alice_jobs[0]]);
    assert_eq!(p3.next_cursor, None, "the last page has no next_cursor");

    // A last page that is exactly full also ends the listing.
    let exact = store
        .list_jobs(&ListQuery {
            owner: Some(alice.clone()),
            limit: 5,
            cursor: None,
            active_only: false,
        })
        .await
        .expect("list_jobs");
    assert_eq!(exact.jobs.len(), 5);
    assert_eq!(
        exact.next_cursor, None,
        "a page that holds the remaining jobs exactly is the last page"
    );
    let after_last = store
        .list_jobs(&page(Some(alice_jobs[0])))
        .await
        .expect("list_jobs");
    assert!(
        after_last.jobs.is_empty(),
        "nothing is older than the oldest job"
    );
}

/// A limit above 100 is capped at 100.
pub async fn list_caps_the_limit_at_100(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    create_jobs(&store, &alice, 101, 1).await;

    let page = store
        .list_jobs(&ListQuery {
            owner: None,
            limit: 1000,
            cursor: None,
            active_only: false,
        })
        .await
        .expect("list_jobs");

    assert_eq!(page.jobs.len(), 100, "the store caps the page at 100 jobs");
    assert!(
        page.next_cursor.is_some(),
        "one job is left for a next page"
    );
}

/// `active_only` lists the jobs that have not ended (queued or running),
/// newest first, and pages like any listing.
pub async fn list_active_only_leaves_out_ended_jobs(store: Arc<dyn JobStore>) {
    let (alice, bob) = (owner("alice"), owner("bob"));
    let jobs = job_ids_of(&create_jobs(&store, &alice, 4, 1).await);
    create_jobs(&store, &bob, 1, 1).await;
    // jobs[0] ends (cancelled), jobs[1] runs, jobs[2] and jobs[3] wait.
    store
        .cancel_job(jobs[0])
        .await
        .expect("cancel_job")
        .expect("the job exists");
    let claim = store
        .claim_next(LONG)
        .await
        .expect("claim_next")
        .expect("something to claim");
    assert_eq!(
        claim.job.job_id, jobs[1],
        "the oldest queued job is claimed"
    );
    let query = |cursor| ListQuery {
        owner: Some(alice.clone()),
        limit: 2,
        cursor,
        active_only: true,
    };

    let p1 = store.list_jobs(&query(None)).await.expect("list_jobs");
    let p2 = store
        .list_jobs(&query(p1.next_cursor))
        .await
        .expect("list_jobs");

    assert_eq!(job_ids_of(&p1.jobs), vec![jobs[3], jobs[2]]);
    assert_eq!(
        job_ids_of(&p2.jobs),
        vec![jobs[1]],
        "the cancelled job is left out"
    );
    assert_eq!(p2.next_cursor, None);
    assert!(
        p1.jobs
            .iter()
            .chain(&p2.jobs)
            .all(|j| !j.status.is_terminal()),
        "only jobs that have not ended"
    );
    assert_eq!(p2.jobs[0].status, JobStatus::Running);
}

// ---------------------------------------------------------------- claim

/// An empty store has nothing to claim.
pub async fn claim_on_an_empty_store_is_none(store: Arc<dyn JobStore>) {
    assert_nothing_claimable(&store, "the store is empty").await;
}

/// Claims take the oldest job's items first, in upload order, then the next job.
pub async fn claim_takes_the_oldest_job_first_and_items_in_upload_order(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    let ids = job_ids(2);
    // Create the newer job first: order comes from the jobs' age, not insertion.
    let newer = create(&store, new_job(ids[1], &alice, 2)).await;
    let older = create(&store, new_job(ids[0], &alice, 2)).await;
    let expected: Vec<ItemId> = older
        .items
        .iter()
        .chain(&newer.items)
        .map(|i| i.item_id)
        .collect();

    let mut claimed = Vec::new();
    for _ in 0..4 {
        claimed.push(claim(&store, LONG).await.item.item_id);
    }

    assert_eq!(
        claimed, expected,
        "claims go oldest job first, items in upload order"
    );
    assert_nothing_claimable(&store, "every item is running under a live lease").await;
}

/// A claim sets the item running with a fresh token, `attempts + 1` and a
/// lease of `now + lease`; the returned job already shows it.
pub async fn claim_sets_running_lease_and_attempts(store: Arc<dyn JobStore>) {
    let job = create(&store, new_job(JobId::new(), &owner("alice"), 2)).await;
    let before = Utc::now();

    let c = claim(&store, LONG).await;

    let after = Utc::now();
    assert_eq!(c.item.item_id, job.items[0].item_id);
    assert_eq!(c.item.status, ItemStatus::Running);
    assert_eq!(c.item.attempts, 1, "a claim counts an attempt");
    assert!(!c.token.as_str().is_empty(), "the token is not empty");
    let lease = chrono::Duration::from_std(LONG.lease).expect("lease fits");
    let tolerance = chrono::Duration::seconds(1);
    assert!(
        c.lease_expires_at >= before + lease - tolerance
            && c.lease_expires_at <= after + lease + tolerance,
        "lease_expires_at {} should be now + {:?}",
        c.lease_expires_at,
        LONG.lease
    );
    assert_eq!(c.job.job_id, job.job_id);
    assert_eq!(
        c.job.item(c.item.item_id).map(|i| i.status),
        Some(ItemStatus::Running),
        "the claim's job shows the item running"
    );
    assert_eq!(c.job.status, JobStatus::Running, "the job is running");
    let stored = get(&store, job.job_id).await;
    assert_eq!(stored.items[0].status, ItemStatus::Running);
    assert_eq!(stored.items[0].attempts, 1);
    assert_eq!(stored.items[1].status, ItemStatus::Queued);
    assert_eq!(stored.status, JobStatus::Running);
}

/// Eight workers claiming twenty items at once: each item is claimed once.
pub async fn concurrent_claims_take_each_item_exactly_once(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    let jobs = create_jobs(&store, &alice, 5, 4).await;
    let all: HashSet<ItemId> = jobs
        .iter()
        .flat_map(|j| j.items.iter().map(|i| i.item_id))
        .collect();

    let workers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while let Some(c) = store.claim_next(LONG).await.expect("claim_next") {
                    mine.push(c.item.item_id);
                }
                mine
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for w in workers {
        claimed.extend(w.await.expect("worker task"));
    }

    let unique: HashSet<ItemId> = claimed.iter().copied().collect();
    assert_eq!(
        claimed.len(),
        unique.len(),
        "an item was claimed twice under live leases"
    );
    assert_eq!(unique, all, "every item is claimed");
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.queued, stats.running), (0, 20));
}

/// A running item whose lease expired is claimable again: a new token,
/// `attempts + 1`, and the old token no longer holds it.
pub async fn expired_lease_is_reclaimed_with_a_new_token(store: Arc<dyn JobStore>) {
    let job = create(&store, new_job(JobId::new(), &owner("alice"), 1)).await;
    let short = ClaimOptions {
        lease: SHORT_LEASE,
        max_attempts: 3,
        models: None,
    };
    let first = claim(&store, short.clone()).await;
    assert_nothing_claimable(&store, "the only item's lease has not expired").await;

    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let second = claim(&store, short.clone()).await;

    assert_eq!(second.item.item_id, first.item.item_id);
    assert_eq!(second.item.attempts, 2, "the reclaim counts an attempt");
    assert_ne!(second.token, first.token, "the reclaim has a new token");
    let item = first.item.item_id;
    let old = &first.token;
    assert!(
        !store
            .renew_lease(item, old, LONG.lease)
            .await
            .expect("renew_lease")
    );
    assert!(
        !store
            .record_progress(item, old, progress(50))
            .await
            .expect("record_progress")
    );
    assert!(
        !store
            .record_remote_request(item, old, "r")
            .await
            .expect("record_remote_request")
    );
    let done = ItemOutcome::Succeeded {
        model_key: model_key(&job, 0),
        preview_key: None,
    };
    assert!(
        !store
            .finish_item(item, old, done.clone())
            .await
            .expect("finish_item")
    );
    assert!(
        store
            .finish_item(item, &second.token, done)
            .await
            .expect("finish_item"),
        "the new token holds the item"
    );
}

/// Renewing a lease keeps the item from being reclaimed after the original
/// lease would have expired.
pub async fn renewed_lease_is_not_reclaimed(store: Arc<dyn JobStore>) {
    create(&store, new_job(JobId::new(), &owner("alice"), 1)).await;
    let c = claim(
        &store,
        ClaimOptions {
            lease: Duration::from_millis(300),
            max_attempts: 3,
            models: None,
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let renewed = store
        .renew_lease(c.item.item_id, &c.token, Duration::from_secs(30))
        .await
        .expect("renew_lease");
    tokio::time::sleep(Duration::from_millis(400)).await;

    assert!(renewed, "the holder may renew");
    assert_nothing_claimable(&store, "the lease was renewed").await;
}

/// An item whose lease expired after `max_attempts` claims is failed with
/// `worker_lost` instead of being claimed again; the claim moves on.
pub async fn lease_expired_max_attempts_times_fails_the_item_with_worker_lost(
    store: Arc<dyn JobStore>,
) {
    let job = create(&store, new_job(JobId::new(), &owner("alice"), 2)).await;
    let opts = ClaimOptions {
        lease: SHORT_LEASE,
        max_attempts: 2,
        models: None,
    };
    let first = claim(&store, opts.clone()).await;
    assert_eq!(first.item.item_id, job.items[0].item_id);
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let second = claim(&store, opts.clone()).await;
    assert_eq!(second.item.item_id, job.items[0].item_id, "first reclaim");
    assert_eq!(second.item.attempts, 2);
    tokio::time::sleep(PAST_SHORT_LEASE).await;

    let counted = store.worker_lost_count();
    let third = claim(
        &store,
        ClaimOptions {
            lease: LONG.lease,
            max_attempts: 2,
            models: None,
        },
    )
    .await;
    if let Some(before) = counted {
        // Other stores of the kind in this process may count too: at least
        // this one failure.
        let after = store
            .worker_lost_count()
            .expect("a store that counts keeps counting");
        assert!(
            after > before,
            "a claim that failed an item as worker_lost moved the count ({before} → {after})"
        );
    }

    assert_eq!(
        third.item.item_id, job.items[1].item_id,
        "the lost item is not claimed a third time; the next one is"
    );
    let stored = get(&store, job.job_id).await;
    let lost = &stored.items[0];
    assert_eq!(lost.status, ItemStatus::Failed, "the lost item has failed");
    assert_eq!(
        lost.error.as_ref().map(|e| e.code.as_str()),
        Some("worker_lost"),
        "its error code is worker_lost"
    );
    assert!(
        !store
            .record_progress(lost.item_id, &second.token, progress(10))
            .await
            .expect("record_progress"),
        "the lost item's last token no longer holds it"
    );
    assert_eq!(stored.status, JobStatus::Running);
    assert_refreshed(&stored, "after worker_lost");
}

/// With `models` set, a claim takes only items of jobs with one of those
/// models, oldest job first and in upload order, passing over older jobs of
/// other models (which stay queued, untouched); with `None` any model's
/// items are claimable, again oldest first.
pub async fn claim_with_models_takes_only_those_models_oldest_first(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    let ids = job_ids(4);
    let other_old = create(&store, new_job_of(ids[0], &alice, 2, "other-model")).await;
    let tripo = create(&store, new_job_of(ids[1], &alice, 2, "tripo3d-v2.5")).await;
    let other_new = create(&store, new_job_of(ids[2], &alice, 1, "other-model")).await;
    let relief = create(&store, new_job_of(ids[3], &alice, 2, "relief")).await;
    let filter = long_for(&["relief", "tripo3d-v2.5"]);

    let mut claimed = Vec::new();
    while let Some(c) = store.claim_next(filter.clone()).await.expect("claim_next") {
        let model = c.job.options.model.as_str().to_owned();
        assert!(
            model == "tripo3d-v2.5" || model == "relief",
            "claimed item {} of model {model}, outside the filter",
            c.item.item_id
        );
        claimed.push(c.item.item_id);
    }

    let expected: Vec<ItemId> = item_ids(&tripo)
        .into_iter()
        .chain(item_ids(&relief))
        .collect();
    assert_eq!(
        claimed, expected,
        "the filtered models' items, oldest job first, in upload order"
    );
    for job in [&other_old, &other_new] {
        assert_eq!(
            &get(&store, job.job_id).await,
            job,
            "a job of another model is left as it was"
        );
    }
    let none = store
        .claim_next(long_for(&["no-such-model"]))
        .await
        .expect("claim_next");
    assert!(none.is_none(), "no job has that model");

    let mut rest = Vec::new();
    while let Some(c) = store.claim_next(LONG).await.expect("claim_next") {
        rest.push(c.item.item_id);
    }
    let expected: Vec<ItemId> = item_ids(&other_old)
        .into_iter()
        .chain(item_ids(&other_new))
        .collect();
    assert_eq!(
        rest, expected,
        "models: None claims any model, oldest first"
    );
}

/// A running item of a model outside the filter whose lease expired is
/// neither reclaimed nor failed as `worker_lost` by a filtered claim, even
/// at `max_attempts`; a claim that includes its model does fail it.
pub async fn claim_leaves_an_expired_item_of_another_model_alone(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    let ids = job_ids(2);
    let other = create(&store, new_job_of(ids[0], &alice, 1, "other-model")).await;
    let tripo = create(&store, new_job_of(ids[1], &alice, 2, "tripo3d-v2.5")).await;
    let lost = claim(
        &store,
        ClaimOptions {
            lease: SHORT_LEASE,
            max_attempts: 1,
            models: None,
        },
    )
    .await;
    assert_eq!(lost.item.item_id, other.items[0].item_id);
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let running = get(&store, other.job_id).await;

    // Reclaimable by attempts (3 > 1), but not of a filtered model.
    let first = claim(&store, long_for(&["tripo3d-v2.5"])).await;
    // At max_attempts (1), but not of a filtered model.
    let second = claim(
        &store,
        ClaimOptions {
            max_attempts: 1,
            ..long_for(&["tripo3d-v2.5"])
        },
    )
    .await;
    let none = store
        .claim_next(ClaimOptions {
            max_attempts: 1,
            ..long_for(&["tripo3d-v2.5"])
        })
        .await
        .expect("claim_next");

    assert_eq!(
        vec![first.item.item_id, second.item.item_id],
        item_ids(&tripo),
        "the filtered claims take the newer job of the filtered model"
    );
    assert!(none.is_none(), "nothing else of that model is claimable");
    let after = get(&store, other.job_id).await;
    assert_eq!(
        after, running,
        "the expired item of another model was neither claimed nor failed"
    );
    assert_eq!(after.items[0].status, ItemStatus::Running);
    assert_eq!(after.items[0].error, None);

    // The same claim with its model does fail it: the check above is live.
    let control = store
        .claim_next(ClaimOptions {
            max_attempts: 1,
            ..long_for(&["other-model", "tripo3d-v2.5"])
        })
        .await
        .expect("claim_next");
    assert!(control.is_none(), "the lost item is failed, not claimed");
    let failed = get(&store, other.job_id).await;
    assert_eq!(failed.items[0].status, ItemStatus::Failed);
    assert_eq!(
        failed.items[0].error.as_ref().map(|e| e.code.as_str()),
        Some("worker_lost")
    );
}

/// `renew_leases` renews every lease its token still holds (those items are
/// not reclaimable after their old expiry, and nothing a client sees
/// changes) and returns exactly the others: an item of a cancelled job, one
/// reclaimed by another token after its lease expired, one of a deleted
/// job, an unknown one. The reclaimer's lease is left alone.
pub async fn renew_leases_renews_held_leases_and_returns_the_lost_ones(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    // The reclaimed item's job is the oldest, so that it is the one
    // reclaimed after every lease has expired.
    let ids = job_ids(4);
    let reclaimed_job = create(&store, new_job(ids[0], &alice, 1)).await;
    let held_job = create(&store, new_job(ids[1], &alice, 2)).await;
    let cancelled_job = create(&store, new_job(ids[2], &alice, 1)).await;
    let deleted_job = create(&store, new_job(ids[3], &alice, 1)).await;
    let short = ClaimOptions {
        lease: SHORT_LEASE,
        max_attempts: 3,
        models: None,
    };
    let mut claims = Vec::new();
    for _ in 0..5 {
        claims.push(claim(&store, short.clone()).await);
    }
    let [reclaimed, held_a, held_b, cancelled, deleted] =
        <[Claim; 5]>::try_from(claims).expect("five claims");
    assert_eq!(reclaimed.job.job_id, reclaimed_job.job_id);
    assert_eq!(held_a.job.job_id, held_job.job_id);
    assert_eq!(held_b.job.job_id, held_job.job_id);
    assert_eq!(cancelled.job.job_id, cancelled_job.job_id);
    assert_eq!(deleted.job.job_id, deleted_job.job_id);
    store
        .cancel_job(cancelled_job.job_id)
        .await
        .expect("cancel_job");
    store
        .delete_job(deleted_job.job_id)
        .await
        .expect("delete_job");
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let taker = claim(&store, LONG).await;
    assert_eq!(
        taker.item.item_id, reclaimed.item.item_id,
        "the oldest expired item is reclaimed"
    );
    let held_before = get(&store, held_job.job_id).await;
    let cancelled_before = get(&store, cancelled_job.job_id).await;
    let reclaimed_before = get(&store, reclaimed_job.job_id).await;
    let unknown = ItemId::new();

    let leases = vec![
        (held_a.item.item_id, held_a.token.clone()),
        (reclaimed.item.item_id, reclaimed.token.clone()),
        (cancelled.item.item_id, cancelled.token.clone()),
        (unknown, LeaseToken::generate()),
        (deleted.item.item_id, deleted.token.clone()),
        (held_b.item.item_id, held_b.token.clone()),
    ];
    let mut lost = store
        .renew_leases(&leases, LONG.lease)
        .await
        .expect("renew_leases");

    lost.sort();
    let mut expected = vec![
        reclaimed.item.item_id,
        cancelled.item.item_id,
        unknown,
        deleted.item.item_id,
    ];
    expected.sort();
    assert_eq!(
        lost, expected,
        "exactly the leases not held are returned, each once"
    );
    assert_nothing_claimable(
        &store,
        "the held leases were renewed past their old expiry (and the others are taken or ended)",
    )
    .await;
    assert_eq!(
        get(&store, held_job.job_id).await,
        held_before,
        "a renewal changes nothing a client sees, updated_at included"
    );
    assert_eq!(
        get(&store, cancelled_job.job_id).await,
        cancelled_before,
        "the cancelled item is left as it was"
    );
    assert_eq!(
        get(&store, reclaimed_job.job_id).await,
        reclaimed_before,
        "the reclaimed item is left as it was"
    );
    assert!(
        store
            .get_job(deleted_job.job_id)
            .await
            .expect("get")
            .is_none()
    );
    for c in [&held_a, &held_b] {
        assert!(
            store
                .record_progress(c.item.item_id, &c.token, progress(10))
                .await
                .expect("record_progress"),
            "the renewed lease's token still holds its item"
        );
    }
    assert!(
        store
            .record_progress(taker.item.item_id, &taker.token, progress(10))
            .await
            .expect("record_progress"),
        "the reclaimer's token still holds its item"
    );
}

/// `renew_leases` of no leases returns no items.
pub async fn renew_leases_of_no_leases_is_empty(store: Arc<dyn JobStore>) {
    create(&store, new_job(JobId::new(), &owner("alice"), 1)).await;
    claim(&store, LONG).await;

    let lost = store
        .renew_leases(&[], LONG.lease)
        .await
        .expect("renew_leases of nothing");

    assert!(lost.is_empty(), "nothing to renew, nothing lost: {lost:?}");
}

/// A batch of 1,200 leases across 40 jobs (more than the SQL stores renew
/// with one statement), in the reverse of the claims' order, is renewed whole:
/// here to a zero lease, after which every held item, and only those, is
/// claimable again. One job is cancelled first: its items, which straddle
/// the stores' 500-lease chunk boundary, are returned as lost.
pub async fn renew_leases_renews_a_batch_larger_than_one_chunk(store: Arc<dyn JobStore>) {
    const JOBS: usize = 40;
    const ITEMS: usize = 30;
    let alice = owner("alice");
    let jobs = create_jobs(&store, &alice, JOBS, ITEMS).await;
    let mut leases = Vec::with_capacity(JOBS * ITEMS);
    while let Some(c) = store.claim_next(LONG).await.expect("claim_next") {
        leases.push((c.item.item_id, c.token));
    }
    assert_eq!(leases.len(), JOBS * ITEMS, "every item is claimed");
    // Newest job first, each job's items last to first.
    leases.reverse();
    // Its items are leases 480..=509 now: across the first 500-lease chunk's
    // end.
    let cancelled = &jobs[23];
    store
        .cancel_job(cancelled.job_id)
        .await
        .expect("cancel_job");

    let mut lost = store
        .renew_leases(&leases, Duration::ZERO)
        .await
        .expect("renew_leases");

    lost.sort();
    let mut expected = item_ids(cancelled);
    expected.sort();
    assert_eq!(lost, expected, "only the cancelled job's items are lost");
    let mut reclaimed = HashSet::new();
    while let Some(c) = store.claim_next(LONG).await.expect("claim_next") {
        assert_eq!(c.item.attempts, 2, "a reclaim of a renewed lease");
        assert!(reclaimed.insert(c.item.item_id), "claimed twice");
    }
    let expected: HashSet<ItemId> = jobs
        .iter()
        .filter(|j| j.job_id != cancelled.job_id)
        .flat_map(item_ids)
        .collect();
    assert_eq!(
        reclaimed.len(),
        expected.len(),
        "every renewed lease, in every chunk, now ends at once"
    );
    assert_eq!(reclaimed, expected);
}

/// A token that does not hold the item gets `Ok(false)` from every call and
/// changes nothing.
pub async fn stale_token_returns_false_and_changes_nothing(store: Arc<dyn JobStore>) {
    let job = create(&store, new_job(JobId::new(), &owner("alice"), 2)).await;
    let c = claim(&store, LONG).await;
    let before = get(&store, job.job_id).await;
    let wrong = LeaseToken::generate();
    let item = c.item.item_id;
    let queued_item = job.items[1].item_id;

    let renewed = store
        .renew_lease(item, &wrong, LONG.lease)
        .await
        .expect("renew_lease");
    let progressed = store
        .record_progress(item, &wrong, progress(70))
        .await
        .expect("record_progress");
    let remote = store
        .record_remote_request(item, &wrong, "x")
        .await
        .expect("record_remote_request");
    let finished = store
        .finish_item(
            item,
            &wrong,
            ItemOutcome::Failed(ItemError {
                code: "x".into(),
                message: "x".into(),
            }),
        )
        .await
        .expect("finish_item");
    let released = store
        .finish_item(item, &wrong, ItemOutcome::Release)
        .await
        .expect("finish_item");
    let on_queued = store
        .finish_item(queued_item, &c.token, ItemOutcome::Release)
        .await
        .expect("finish_item");
    let on_missing = store
        .record_progress(ItemId::new(), &c.token, progress(5))
        .await
        .expect("record_progress");

    assert!(!renewed, "renew_lease with a wrong token");
    assert!(!progressed, "record_progress with a wrong token");
    assert!(!remote, "record_remote_request with a wrong token");
    assert!(!finished, "finish_item with a wrong token");
    assert!(!released, "release with a wrong token");
    assert!(!on_queued, "a token of another item");
    assert!(!on_missing, "an unknown item");
    assert_eq!(
        get(&store, job.job_id).await,
        before,
        "calls with a stale token must change nothing"
    );
}

/// Item progress only rises (a lower value is ignored), and the job's progress
/// follows the mean of its items without ever falling.
pub async fn progress_rises_but_never_falls(store: Arc<dyn JobStore>) {
    let job = create(&store, new_job(JobId::new(), &owner("alice"), 2)).await;
    let c = claim(&store, LONG).await;
    let item = c.item.item_id;

    assert!(
        store
            .record_progress(item, &c.token, progress(40))
            .await
            .expect("record_progress")
    );
    let at_40 = get(&store, job.job_id).await;
    assert!(
        store
            .record_progress(item, &c.token, progress(20))
            .await
            .expect("record_progress"),
        "a lower value with a valid token is accepted (and ignored)"
    );
    let after_lower = get(&store, job.job_id).await;
    assert!(
        store
            .record_progress(item, &c.token, progress(60))
            .await
            .expect("record_progress")
    );
    let at_60 = get(&store, job.job_id).await;

    assert_eq!(at_40.items[0].progress, progress(40));
    assert_eq!(
        at_40.progress,
        progress(20),
        "job progress is the mean of its items"
    );
    assert_eq!(
        after_lower.items[0].progress,
        progress(40),
        "item progress never falls"
    );
    assert_eq!(
        after_lower.progress,
        progress(20),
        "job progress never falls"
    );
    assert_eq!(at_60.items[0].progress, progress(60));
    assert_eq!(at_60.progress, progress(30));

    // Releasing and reclaiming keeps progress; the job never goes back.
    assert!(
        store
            .finish_item(item, &c.token, ItemOutcome::Release)
            .await
            .expect("release")
    );
    let released = get(&store, job.job_id).await;
    assert_eq!(
        released.items[0].progress,
        progress(60),
        "release keeps progress"
    );
    assert!(
        released.progress >= at_60.progress,
        "job progress never falls"
    );
}

/// Job status and progress are recomputed on every item change.
pub async fn job_status_and_progress_follow_the_items(store: Arc<dyn JobStore>) {
    let job = create(&store, new_job(JobId::new(), &owner("alice"), 2)).await;

    let c0 = claim(&store, LONG).await;
    store
        .record_progress(c0.item.item_id, &c0.token, progress(50))
        .await
        .expect("progress");
    let half = get(&store, job.job_id).await;
    store
        .finish_item(
            c0.item.item_id,
            &c0.token,
            ItemOutcome::Succeeded {
                model_key: model_key(&job, 0),
                preview_key: None,
            },
        )
        .await
        .expect("finish_item");
    let one_done = get(&store, job.job_id).await;
    let c1 = claim(&store, LONG).await;
    store
        .finish_item(
            c1.item.item_id,
            &c1.token,
            ItemOutcome::Failed(ItemError {
                code: "generation_failed".into(),
                message: "no mesh".into(),
            }),
        )
        .await
        .expect("finish_item");
    let ended = get(&store, job.job_id).await;

    assert_eq!(half.status, JobStatus::Running);
    assert_eq!(half.progress, progress(25));
    assert_eq!(
        one_done.items[0].progress,
        Progress::DONE,
        "a succeeded item is at 100"
    );
    assert_eq!(one_done.status, JobStatus::Running, "one item still waits");
    assert_eq!(one_done.progress, progress(50));
    assert_eq!(
        ended.status,
        JobStatus::Partial,
        "one succeeded, one failed"
    );
    assert_eq!(ended.progress, Progress::DONE, "an ended job is at 100");
    for (j, ctx) in [(&half, "half"), (&one_done, "one done"), (&ended, "ended")] {
        assert_refreshed(j, ctx);
    }
    assert!(
        ended.updated_at >= half.updated_at,
        "updated_at moves forward"
    );
}

/// A succeeded item keeps its model and preview keys; the job succeeds.
pub async fn succeeded_item_records_its_keys(store: Arc<dyn JobStore>) {
    let job = create(&store, new_job(JobId::new(), &owner("alice"), 1)).await;
    let c = claim(&store, LONG).await;
    let preview = BlobKey::preview(job.job_id, c.item.item_id, ImageKind::Webp);

    let ok = store
        .finish_item(
            c.item.item_id,
            &c.token,
            ItemOutcome::Succeeded {
                model_key: model_key(&job, 0),
                preview_key: Some(preview.clone()),
            },
        )
        .await
        .expect("finish_item");

    assert!(ok);
    let stored = get(&store, job.job_id).await;
    let item = &stored.items[0];
    assert_eq!(item.status, ItemStatus::Succeeded);
    assert_eq!(item.model_key, Some(model_key(&job, 0)));
    assert_eq!(item.preview_key, Some(preview));
    assert_eq!(item.error, None);
    assert_eq!(stored.status, JobStatus::Succeeded);
    assert_eq!(stored.progress, Progress::DONE);
}

/// A failed item keeps its error; a job with only failed items fails.
pub async fn failed_item_records_its_error(store: Arc<dyn JobStore>) {
    let job = create(&store, new_job(JobId::new(), &owner("alice"), 1)).await;
    let c = claim(&store, LONG).await;
    let error = ItemError {
        code: "generation_failed".into(),
        message: "the generator found no object".into(),
    };

    let ok = store
        .finish_item(c.item.item_id, &c.token, ItemOutcome::Failed(error.clone()))
        .await
        .expect("finish_item");

    assert!(ok);
    let stored = get(&store, job.job_id).await;
    assert_eq!(stored.items[0].status, ItemStatus::Failed);
    assert_eq!(stored.items[0].error, Some(error));
    assert_eq!(stored.items[0].model_key, None);
    assert_eq!(stored.status, JobStatus::Failed);
    assert_eq!(stored.progress, Progress::DONE);
}

/// `Release` makes the item queued again with its progress and remote request
/// id; the old token is revoked and the next claim counts another attempt.
pub async fn release_requeues_keeping_progress_and_remote_request(store: Arc<dyn JobStore>) {
    let job = create(&store, new_job(JobId::new(), &owner("alice"), 1)).await;
    let c = claim(&store, LONG).await;
    let item = c.item.item_id;
    assert!(
        store
            .record_remote_request(item, &c.token, "req-42")
            .await
            .expect("remote")
    );
    assert!(
        store
            .record_progress(item, &c.token, progress(30))
            .await
            .expect("progress")
    );

    let released = store
        .finish_item(item, &c.token, ItemOutcome::Release)
        .await
        .expect("release");

    assert!(released);
    let stored = get(&store, job.job_id).await;
    assert_eq!(
        stored.items[0].status,
        ItemStatus::Queued,
        "a released item is queued"
    );
    assert_eq!(
        stored.items[0].progress,
        progress(30),
        "release keeps progress"
    );
    assert_eq!(stored.items[0].remote_request_id.as_deref(), Some("req-42"));
    assert!(
        !store
            .renew_lease(item, &c.token, LONG.lease)
            .await
            .expect("renew"),
        "release revokes the lease"
    );
    let again = claim(&store, LONG).await;
    assert_eq!(again.item.item_id, item);
    assert_eq!(again.item.attempts, 2);
    assert_eq!(
        again.item.remote_request_id.as_deref(),
        Some("req-42"),
        "a resumed worker sees the remote id"
    );
    assert_eq!(again.item.progress, progress(30));
}

/// Ended items never change: not by their old token, not by a cancel.
pub async fn terminal_items_never_change(store: Arc<dyn JobStore>) {
    let job = create(&store, new_job(JobId::new(), &owner("alice"), 1)).await;
    let c = claim(&store, LONG).await;
    let item = c.item.item_id;
    let done = ItemOutcome::Succeeded {
        model_key: model_key(&job, 0),
        preview_key: None,
    };
    assert!(
        store
            .finish_item(item, &c.token, done.clone())
            .await
            .expect("finish")
    );
    let ended = get(&store, job.job_id).await;

    let again = store
        .finish_item(item, &c.token, done)
        .await
        .expect("finish");
    let fail = store
        .finish_item(
            item,
            &c.token,
            ItemOutcome::Failed(ItemError {
                code: "x".into(),
                message: "x".into(),
            }),
        )
        .await
        .expect("finish");
    let release = store
        .finish_item(item, &c.token, ItemOutcome::Release)
        .await
        .expect("release");
    let progressed = store
        .record_progress(item, &c.token, progress(5))
        .await
        .expect("progress");
    let cancelled = store
        .cancel_job(job.job_id)
        .await
        .expect("cancel_job")
        .expect("job exists");

    assert!(
        !again && !fail && !release && !progressed,
        "the token of an ended item holds nothing"
    );
    assert_eq!(
        cancelled.items[0], ended.items[0],
        "cancel leaves an ended item alone"
    );
    assert_eq!(cancelled.status, JobStatus::Succeeded);
    assert_eq!(get(&store, job.job_id).await.items[0], ended.items[0]);
    assert_nothing_claimable(&store, "the only item has ended").await;
}

/// `cancel_job` sets `cancel_requested`, cancels queued and running items
/// (revoking their leases) and leaves ended ones.
pub async fn cancel_cancels_queued_and_running_items_and_leaves_ended_ones(
    store: Arc<dyn JobStore>,
) {
    let job = create(&store, new_job(JobId::new(), &owner("alice"), 3)).await;
    let c0 = claim(&store, LONG).await;
    let done = ItemOutcome::Succeeded {
        model_key: model_key(&job, 0),
        preview_key: None,
    };
    assert!(
        store
            .finish_item(c0.item.item_id, &c0.token, done)
            .await
            .expect("finish")
    );
    let c1 = claim(&store, LONG).await;

    let cancelled = store
        .cancel_job(job.job_id)
        .await
        .expect("cancel_job")
        .expect("job exists");

    assert!(cancelled.cancel_requested, "cancel_requested is set");
    let statuses: Vec<ItemStatus> = cancelled.items.iter().map(|i| i.status).collect();
    assert_eq!(
        statuses,
        vec![
            ItemStatus::Succeeded,
            ItemStatus::Cancelled,
            ItemStatus::Cancelled
        ],
        "ended stays, running and queued become cancelled"
    );
    assert_eq!(cancelled.status, JobStatus::Partial);
    assert_eq!(cancelled.progress, Progress::DONE);
    assert_eq!(
        get(&store, job.job_id).await,
        cancelled,
        "cancel_job returns the job after it"
    );
    assert!(
        !store
            .record_progress(c1.item.item_id, &c1.token, progress(50))
            .await
            .expect("progress"),
        "cancel revokes the running item's lease"
    );
    assert!(
        !store
            .finish_item(c1.item.item_id, &c1.token, ItemOutcome::Release)
            .await
            .expect("release"),
        "a cancelled item cannot be released back to the queue"
    );
    let again = store
        .cancel_job(job.job_id)
        .await
        .expect("cancel_job")
        .expect("job exists");
    assert_eq!(
        again, cancelled,
        "cancelling an ended job changes nothing, updated_at included"
    );
    assert_nothing_claimable(&store, "the job was cancelled").await;
}

/// Cancelled jobs' items are never claimed, even a running one whose lease
/// expired; other jobs' items still are.
pub async fn items_of_a_cancelled_job_are_never_claimed(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    let jobs = create_jobs(&store, &alice, 2, 2).await;
    let c = claim(
        &store,
        ClaimOptions {
            lease: SHORT_LEASE,
            max_attempts: 3,
            models: None,
        },
    )
    .await;
    assert_eq!(c.job.job_id, jobs[0].job_id);

    store.cancel_job(jobs[0].job_id).await.expect("cancel_job");
    tokio::time::sleep(PAST_SHORT_LEASE).await;
    let mut claimed = Vec::new();
    while let Some(c) = store.claim_next(LONG).await.expect("claim_next") {
        claimed.push(c.item.item_id);
    }

    let expected: Vec<ItemId> = jobs[1].items.iter().map(|i| i.item_id).collect();
    assert_eq!(claimed, expected, "only the other job's items are claimed");
    let stored = get(&store, jobs[0].job_id).await;
    assert!(
        stored
            .items
            .iter()
            .all(|i| i.status == ItemStatus::Cancelled)
    );
    assert_eq!(stored.status, JobStatus::Cancelled);
}

/// Cancelling or deleting an unknown job gives `None`.
pub async fn cancel_or_delete_of_a_missing_job_is_none(store: Arc<dyn JobStore>) {
    let cancelled = store.cancel_job(JobId::new()).await.expect("cancel_job");
    let deleted = store.delete_job(JobId::new()).await.expect("delete_job");
    assert!(cancelled.is_none(), "cancel of a missing job");
    assert!(deleted.is_none(), "delete of a missing job");
}

/// `delete_job` returns the job as it was and removes it with its items.
pub async fn delete_returns_the_job_and_removes_it(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    let ids = job_ids(2);
    let mut new = new_job(ids[0], &alice, 2);
    new.idempotency_key = Some("k".into());
    create(&store, new).await;
    let kept = create(&store, new_job(ids[1], &alice, 1)).await;
    let c = claim(&store, LONG).await;
    let before = get(&store, ids[0]).await;

    let deleted = store.delete_job(ids[0]).await.expect("delete_job");

    assert_eq!(
        deleted,
        Some(before),
        "delete_job returns the job as it was"
    );
    assert!(store.get_job(ids[0]).await.expect("get_job").is_none());
    assert!(
        !store
            .record_progress(c.item.item_id, &c.token, progress(10))
            .await
            .expect("progress"),
        "a deleted item's token holds nothing"
    );
    assert!(
        store
            .delete_job(ids[0])
            .await
            .expect("delete_job")
            .is_none(),
        "second delete"
    );
    assert!(
        store
            .find_by_idempotency_key(&alice, "k")
            .await
            .expect("find")
            .is_none()
    );
    let listed = store
        .list_jobs(&ListQuery {
            owner: None,
            limit: 10,
            cursor: None,
            active_only: false,
        })
        .await
        .expect("list_jobs");
    assert_eq!(job_ids_of(&listed.jobs), vec![kept.job_id]);
    assert_eq!(
        store.stats().await.expect("stats"),
        QueueStats {
            queued: 1,
            running: 0,
            jobs: 1
        }
    );
    assert_eq!(
        claim(&store, LONG).await.item.item_id,
        kept.items[0].item_id
    );
}

/// `ended_jobs_before` lists ended jobs last updated before the time, oldest
/// update first, at most `limit`.
pub async fn ended_jobs_before_lists_ended_jobs_oldest_first(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    let jobs = create_jobs(&store, &alice, 4, 1).await;
    // End job 2 (failed), then job 0 (failed), then job 3 (cancelled); job 1
    // stays running.
    let first = claim(&store, LONG).await; // job 0
    let second = claim(&store, LONG).await; // job 1
    let third = claim(&store, LONG).await; // job 2
    assert_eq!(
        [first.job.job_id, second.job.job_id, third.job.job_id],
        [jobs[0].job_id, jobs[1].job_id, jobs[2].job_id]
    );
    let fail = || {
        ItemOutcome::Failed(ItemError {
            code: "x".into(),
            message: "x".into(),
        })
    };
    store
        .finish_item(third.item.item_id, &third.token, fail())
        .await
        .expect("finish");
    tokio::time::sleep(Duration::from_millis(20)).await;
    store
        .finish_item(first.item.item_id, &first.token, fail())
        .await
        .expect("finish");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    store.cancel_job(jobs[3].job_id).await.expect("cancel_job");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let later = Utc::now() + chrono::Duration::seconds(1);

    let all = store
        .ended_jobs_before(later, 10)
        .await
        .expect("ended_jobs_before");
    let early = store
        .ended_jobs_before(between, 10)
        .await
        .expect("ended_jobs_before");
    let one = store
        .ended_jobs_before(later, 1)
        .await
        .expect("ended_jobs_before");

    assert_eq!(
        job_ids_of(&all),
        vec![jobs[2].job_id, jobs[0].job_id, jobs[3].job_id],
        "ended jobs (failed, failed, cancelled), oldest update first; running job 1 is left out"
    );
    assert_eq!(
        job_ids_of(&early),
        vec![jobs[2].job_id, jobs[0].job_id],
        "only jobs updated before the time"
    );
    assert_eq!(job_ids_of(&one), vec![jobs[2].job_id], "at most limit");
    assert!(all.iter().all(|j| j.status.is_terminal()));
}

/// `stats` counts queued items, running items and jobs.
pub async fn stats_count_queued_and_running_items_and_jobs(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    let empty = store.stats().await.expect("stats");
    let jobs = create_jobs(&store, &alice, 2, 3).await;
    let c = claim(&store, LONG).await;
    claim(&store, LONG).await;
    let done = ItemOutcome::Succeeded {
        model_key: model_key(&jobs[0], 0),
        preview_key: None,
    };
    store
        .finish_item(c.item.item_id, &c.token, done)
        .await
        .expect("finish");

    let stats = store.stats().await.expect("stats");

    assert_eq!(empty, QueueStats::default(), "an empty store");
    assert_eq!(
        stats,
        QueueStats {
            queued: 4,
            running: 1,
            jobs: 2
        },
        "6 items: 1 succeeded, 1 running, 4 queued"
    );
}

/// `ping` answers on a working store.
pub async fn ping_answers(store: Arc<dyn JobStore>) {
    store.ping().await.expect("ping of a working store");
}

// ---------------------------------------------------------------- usage

fn periods_of(day: &str) -> Periods {
    Periods::at(
        format!("{day}T12:00:00Z")
            .parse()
            .expect("test days are valid"),
    )
}

fn charged(
    job_id: JobId,
    owner: &ApiKeyId,
    items: usize,
    day: &str,
    spend: u64,
    limits: KeyLimits,
) -> NewJob {
    let mut new = new_job(job_id, owner, items);
    new.charge = Some(Charge {
        periods: periods_of(day),
        items: items as u64,
        spend: MicroUsd(spend),
        limits,
    });
    new
}

/// Charged creates add to their owner's day and month; another day of the
/// month counts in the month only; other owners are apart; an idempotent
/// replay charges nothing; uncharged creates count nothing.
pub async fn charges_count_by_owner_day_and_month(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    let bob = owner("bob");
    let none = KeyLimits::default();
    let ids = job_ids(5);
    create(
        &store,
        charged(ids[0], &alice, 2, "2026-12-03", 600_000, none),
    )
    .await;
    create(
        &store,
        charged(ids[1], &alice, 1, "2026-12-01", 20_000, none),
    )
    .await;
    create(&store, charged(ids[2], &bob, 3, "2026-12-03", 0, none)).await;
    create(&store, new_job(ids[3], &alice, 4)).await;
    let mut replay = charged(ids[4], &alice, 2, "2026-12-03", 600_000, none);
    replay.idempotency_key = Some("once".into());
    create(&store, replay).await;
    let mut again = charged(JobId::new(), &alice, 2, "2026-12-03", 600_000, none);
    again.idempotency_key = Some("once".into());
    assert!(matches!(
        store.create_job(again).await.expect("replay"),
        CreateOutcome::Existing(_)
    ));

    let today = periods_of("2026-12-03");
    let a = store.usage(&alice, today).await.expect("usage");
    assert_eq!(
        (a.day.items, a.day.spend),
        (4, MicroUsd(1_200_000)),
        "alice's day"
    );
    assert_eq!(
        (a.month.items, a.month.spend),
        (5, MicroUsd(1_220_000)),
        "alice's month"
    );
    let b = store.usage(&bob, today).await.expect("usage");
    assert_eq!((b.day.items, b.month.items), (3, 3));
    let next_month = store
        .usage(&alice, periods_of("2027-01-01"))
        .await
        .expect("usage");
    assert_eq!(next_month, Usage::default(), "a new month starts at zero");

    let mut all = store.usage_by_owner(today).await.expect("usage_by_owner");
    all.sort_by(|x, y| x.owner.cmp(&y.owner));
    assert_eq!(
        all.iter()
            .map(|u| (u.owner.as_str(), u.usage.month.items))
            .collect::<Vec<_>>(),
        vec![("alice", 5), ("bob", 3)]
    );
    assert!(
        store
            .usage_by_owner(periods_of("2027-01-01"))
            .await
            .expect("usage_by_owner")
            .is_empty()
    );
}

/// A charged create that would pass a limit returns `OverQuota`, stores no
/// job and leaves the counts as they were; one that fits still goes in.
pub async fn a_create_over_a_limit_creates_and_counts_nothing(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    let limits = KeyLimits {
        items_per_day: Some(3),
        spend_per_day: None,
        spend_per_month: Some(MicroUsd(1_000_000)),
    };
    let day = "2026-12-03";
    let ids = job_ids(4);
    create(&store, charged(ids[0], &alice, 2, day, 500_000, limits)).await;
    match store
        .create_job(charged(ids[1], &alice, 2, day, 0, limits))
        .await
        .expect("create")
    {
        CreateOutcome::OverQuota(over) => {
            assert_eq!(over.limit, QuotaLimit::ItemsPerDay);
            assert_eq!((over.allowed, over.used, over.requested), (3, 2, 2));
        }
        other => panic!("expected OverQuota, got {other:?}"),
    }
    match store
        .create_job(charged(ids[2], &alice, 1, day, 600_000, limits))
        .await
        .expect("create")
    {
        CreateOutcome::OverQuota(over) => assert_eq!(over.limit, QuotaLimit::SpendPerMonth),
        other => panic!("expected OverQuota, got {other:?}"),
    }
    assert!(store.get_job(ids[1]).await.expect("get").is_none());
    assert!(store.get_job(ids[2]).await.expect("get").is_none());
    let usage = store.usage(&alice, periods_of(day)).await.expect("usage");
    assert_eq!((usage.day.items, usage.month.spend), (2, MicroUsd(500_000)));
    create(&store, charged(ids[3], &alice, 1, day, 500_000, limits)).await;
    let usage = store.usage(&alice, periods_of(day)).await.expect("usage");
    assert_eq!(
        (usage.day.items, usage.month.spend),
        (3, MicroUsd(1_000_000))
    );
}

/// Racing charged creates against a limit of N items: exactly N go in.
pub async fn concurrent_charged_creates_never_pass_a_limit(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    let limits = KeyLimits {
        items_per_day: Some(5),
        ..KeyLimits::default()
    };
    let tasks: Vec<_> = job_ids(12)
        .into_iter()
        .map(|id| {
            let store = store.clone();
            let new = charged(id, &alice, 1, "2026-12-03", 0, limits);
            tokio::spawn(async move { store.create_job(new).await.expect("create_job") })
        })
        .collect();
    let mut created = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.expect("create task") {
            CreateOutcome::Created(_) => created += 1,
            CreateOutcome::OverQuota(_) => refused += 1,
            CreateOutcome::Existing(j) => panic!("no idempotency key was given: {}", j.job_id),
        }
    }
    assert_eq!((created, refused), (5, 7));
    let usage = store
        .usage(&alice, periods_of("2026-12-03"))
        .await
        .expect("usage");
    assert_eq!(usage.day.items, 5);
    assert_eq!(store.stats().await.expect("stats").jobs, 5);
}

// ---------------------------------------------------------------- callbacks

fn callbacks(store: &Arc<dyn JobStore>) -> Arc<dyn CallbackStore> {
    store
        .callbacks()
        .expect("this job store keeps webhook deliveries (JobStore::callbacks)")
}

fn hook_url(n: usize) -> CallbackUrl {
    CallbackUrl::parse(&format!("https://hooks.example.com/i2m/{n}?token=t"), false)
        .expect("valid callback URL")
}

/// Creates a job of `items` items with a callback to [`hook_url`]`(n)`.
async fn create_with_callback(
    store: &Arc<dyn JobStore>,
    owner: &ApiKeyId,
    items: usize,
    n: usize,
) -> (Job, NewCallback) {
    let mut new = new_job(JobId::new(), owner, items);
    let callback = NewCallback::to(hook_url(n));
    new.callback = Some(callback.clone());
    (create(store, new).await, callback)
}

/// Claims and ends every item of the store's queue (succeeded).
async fn finish_all(store: &Arc<dyn JobStore>) {
    while let Some(c) = store.claim_next(LONG).await.expect("claim_next") {
        let done = ItemOutcome::Succeeded {
            model_key: BlobKey::model(c.job.job_id, c.item.item_id),
            preview_key: None,
        };
        assert!(
            store
                .finish_item(c.item.item_id, &c.token, done)
                .await
                .expect("finish_item")
        );
    }
}

async fn claim_deliveries(
    store: &Arc<dyn JobStore>,
    at: chrono::DateTime<Utc>,
    lease: Duration,
) -> Vec<DeliveryClaim> {
    callbacks(store)
        .claim_deliveries(at, lease, 100)
        .await
        .expect("claim_deliveries")
}

fn later(seconds: i64) -> chrono::DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(seconds)
}

/// A job created with a callback has a pending delivery at once; it is not
/// claimable while the job runs, becomes claimable in the write that ends
/// the job's last item, and a live lease keeps other claimers off it. Jobs
/// without a callback have none.
pub async fn a_delivery_is_claimable_only_once_its_job_has_ended(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    let (job, callback) = create_with_callback(&store, &alice, 2, 1).await;
    let plain = create(&store, new_job(JobId::new(), &alice, 1)).await;
    let d = callbacks(&store)
        .delivery(job.job_id)
        .await
        .expect("delivery")
        .expect("a job created with a callback has a delivery");
    assert_eq!(d.delivery_id, callback.delivery_id);
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 0));
    assert_eq!(d.url, hook_url(1));
    assert_eq!(d.owner, alice);
    assert!(
        callbacks(&store)
            .delivery(plain.job_id)
            .await
            .expect("delivery")
            .is_none(),
        "a job without a callback has no delivery"
    );
    assert!(
        claim_deliveries(&store, later(3600), LONG.lease)
            .await
            .is_empty(),
        "a queued job's delivery was claimable"
    );
    // One item ends: the job runs on.
    let c = claim(&store, LONG).await;
    let done = ItemOutcome::Succeeded {
        model_key: BlobKey::model(c.job.job_id, c.item.item_id),
        preview_key: None,
    };
    assert!(
        store
            .finish_item(c.item.item_id, &c.token, done)
            .await
            .expect("finish_item")
    );
    assert!(
        claim_deliveries(&store, later(3600), LONG.lease)
            .await
            .is_empty(),
        "a running job's delivery was claimable"
    );
    finish_all(&store).await;
    let claims = claim_deliveries(&store, Utc::now(), LONG.lease).await;
    assert_eq!(
        claims.len(),
        1,
        "the ended job's delivery (and only it) is claimable"
    );
    assert_eq!(claims[0].delivery.delivery_id, callback.delivery_id);
    assert!(
        claim_deliveries(&store, Utc::now(), LONG.lease)
            .await
            .is_empty(),
        "a leased delivery was claimed twice"
    );
}

/// `record_attempt` counts the attempt and applies its outcome while the
/// claim's lease holds it, and changes nothing for a stale claim: a retry
/// waits for its time, a delivered one is never claimed again, a failed one
/// neither.
pub async fn record_attempt_applies_the_outcome_only_under_the_lease(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    let (job, _) = create_with_callback(&store, &alice, 1, 1).await;
    let (other, _) = create_with_callback(&store, &alice, 1, 2).await;
    finish_all(&store).await;
    let cb = callbacks(&store);
    // Leased for days, so that the second stays held while the first is
    // claimed again hours later.
    let days = Duration::from_secs(3 * 86_400);
    let mut claims = claim_deliveries(&store, Utc::now(), days).await;
    assert_eq!(claims.len(), 2);
    claims.sort_by_key(|c| c.delivery.job_id != job.job_id);
    let (first, second) = (claims[0].clone(), claims[1].clone());
    let retry_at = later(3600);
    let retry = AttemptOutcome::Retry {
        error: "HTTP 500".into(),
        status_code: Some(500),
        next_attempt_at: retry_at,
    };
    assert!(
        cb.record_attempt(&first, &retry, Utc::now())
            .await
            .expect("record_attempt")
    );
    assert!(
        !cb.record_attempt(&first, &retry, Utc::now())
            .await
            .expect("record_attempt"),
        "a claim recorded twice: its lease should be released by the first record"
    );
    let d = cb
        .delivery(job.job_id)
        .await
        .expect("delivery")
        .expect("kept");
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 1));
    assert_eq!(d.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(d.last_status_code, Some(500));
    assert_eq!(d.next_attempt_at.timestamp(), retry_at.timestamp());
    assert!(
        claim_deliveries(&store, Utc::now(), LONG.lease)
            .await
            .is_empty(),
        "a retry was claimed before its time"
    );
    let again = claim_deliveries(&store, later(7200), LONG.lease).await;
    assert_eq!(again.len(), 1, "a due retry is claimable");
    let delivered = AttemptOutcome::Delivered { status_code: 204 };
    assert!(
        cb.record_attempt(&again[0], &delivered, Utc::now())
            .await
            .expect("record_attempt")
    );
    let d = cb
        .delivery(job.job_id)
        .await
        .expect("delivery")
        .expect("kept");
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 2));
    assert!(d.delivered_at.is_some());
    assert_eq!(d.last_error, None);
    let failed = AttemptOutcome::Failed {
        error: "blocked address".into(),
        status_code: None,
    };
    assert!(
        cb.record_attempt(&second, &failed, Utc::now())
            .await
            .expect("record_attempt")
    );
    let d = cb
        .delivery(other.job_id)
        .await
        .expect("delivery")
        .expect("kept");
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Failed, 1));
    assert!(
        claim_deliveries(&store, later(100_000), LONG.lease)
            .await
            .is_empty(),
        "a delivered or failed delivery was claimed again"
    );
}

/// A claim whose lease lapsed (its claimer died) is claimed again, and the
/// lapsed claim can record nothing.
pub async fn an_expired_delivery_lease_is_claimed_again(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    create_with_callback(&store, &alice, 1, 1).await;
    finish_all(&store).await;
    let now = Utc::now();
    let first = claim_deliveries(&store, now, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 1);
    assert!(
        claim_deliveries(&store, now + chrono::Duration::seconds(5), LONG.lease)
            .await
            .is_empty(),
        "a live lease was taken over"
    );
    let second = claim_deliveries(&store, now + chrono::Duration::seconds(11), LONG.lease).await;
    assert_eq!(second.len(), 1, "a lapsed lease is claimed again");
    let delivered = AttemptOutcome::Delivered { status_code: 200 };
    let cb = callbacks(&store);
    assert!(
        !cb.record_attempt(&first[0], &delivered, Utc::now())
            .await
            .expect("record_attempt"),
        "a lapsed claim recorded an attempt"
    );
    assert!(
        cb.record_attempt(&second[0], &delivered, Utc::now())
            .await
            .expect("record_attempt")
    );
}

/// Claimers racing over many due deliveries take each exactly once.
pub async fn concurrent_delivery_claims_take_each_delivery_once(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    for n in 0..12 {
        create_with_callback(&store, &alice, 1, n).await;
    }
    finish_all(&store).await;
    let now = Utc::now();
    let claimers = (0..4).map(|_| {
        let store = store.clone();
        async move {
            let mut got = Vec::new();
            loop {
                let claims = store
                    .callbacks()
                    .expect("callbacks")
                    .claim_deliveries(now, LONG.lease, 2)
                    .await
                    .expect("claim_deliveries");
                if claims.is_empty() {
                    return got;
                }
                got.extend(claims.into_iter().map(|c| c.delivery.delivery_id));
            }
        }
    });
    let all: Vec<_> = futures::future::join_all(claimers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let distinct: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 12, "every delivery claimed once: {all:?}");
    assert_eq!(distinct.len(), 12, "a delivery was claimed twice");
}

/// Cancelling a job ends it, which arms its delivery; deleting a job
/// removes its delivery.
pub async fn cancel_arms_a_delivery_and_delete_removes_it(store: Arc<dyn JobStore>) {
    let alice = owner("alice");
    let (job, _) = create_with_callback(&store, &alice, 2, 1).await;
    store.cancel_job(job.job_id).await.expect("cancel_job");
    let claims = claim_deliveries(&store, Utc::now(), LONG.lease).await;
    assert_eq!(claims.len(), 1, "a cancelled job's delivery is claimable");
    store.delete_job(job.job_id).await.expect("delete_job");
    let cb = callbacks(&store);
    assert!(cb.delivery(job.job_id).await.expect("delivery").is_none());
    let all = DeliveryQuery {
        owner: None,
        status: None,
        limit: 100,
        before: None,
    };
    assert!(cb.list_deliveries(&all).await.expect("list").is_empty());
    let delivered = AttemptOutcome::Delivered { status_code: 200 };
    assert!(
        !cb.record_attempt(&claims[0], &delivered, Utc::now())
            .await
            .expect("record_attempt"),
        "an attempt was recorded for a deleted job"
    );
}

/// Settings start empty, are per owner, and setting the URL keeps the
/// secret's seed and the reverse; a URL can be cleared.
pub async fn webhook_settings_are_per_owner_and_kept_apart(store: Arc<dyn JobStore>) {
    let (alice, bob) = (owner("alice"), owner("bob"));
    let cb = callbacks(&store);
    let empty = cb.webhook_settings(&alice).await.expect("settings");
    assert_eq!(empty, Default::default());
    let at = Utc::now();
    cb.set_webhook_secret_seed(&alice, "seed-1", at)
        .await
        .expect("seed");
    let after = cb
        .set_default_callback(&alice, Some(&hook_url(7)))
        .await
        .expect("url");
    assert_eq!(after.default_url, Some(hook_url(7)));
    assert_eq!(after.secret_seed.as_deref(), Some("seed-1"));
    assert_eq!(
        after.secret_created_at.map(|t| t.timestamp_millis()),
        Some(at.timestamp_millis())
    );
    let rotated = cb
        .set_webhook_secret_seed(&alice, "seed-2", at)
        .await
        .expect("seed");
    assert_eq!(rotated.secret_seed.as_deref(), Some("seed-2"));
    assert_eq!(
        rotated.default_url,
        Some(hook_url(7)),
        "rotating the secret kept the URL"
    );
    let cleared = cb.set_default_callback(&alice, None).await.expect("clear");
    assert_eq!(cleared.default_url, None);
    assert_eq!(cleared.secret_seed.as_deref(), Some("seed-2"));
    assert_eq!(
        cb.webhook_settings(&alice).await.expect("settings"),
        cleared
    );
    assert_eq!(
        cb.webhook_settings(&bob).await.expect("settings"),
        Default::default(),
        "another owner's settings leaked"
    );
}

/// `list_deliveries` is newest first, filters by owner and status, pages with
/// `before` and caps its limit.
pub async fn list_deliveries_filters_by_owner_and_status_newest_first(store: Arc<dyn JobStore>) {
    let (alice, bob) = (owner("alice"), owner("bob"));
    let (a1, c1) = create_with_callback(&store, &alice, 1, 1).await;
    let (_, c2) = create_with_callback(&store, &bob, 1, 2).await;
    let (_, c3) = create_with_callback(&store, &alice, 1, 3).await;
    store.cancel_job(a1.job_id).await.expect("cancel");
    let cb = callbacks(&store);
    let claims = claim_deliveries(&store, Utc::now(), LONG.lease).await;
    assert_eq!(claims.len(), 1);
    let failed = AttemptOutcome::Failed {
        error: "gone".into(),
        status_code: Some(410),
    };
    assert!(
        cb.record_attempt(&claims[0], &failed, Utc::now())
            .await
            .expect("record")
    );
    let query = |owner: Option<&ApiKeyId>, status, limit, before| DeliveryQuery {
        owner: owner.cloned(),
        status,
        limit,
        before,
    };
    let ids = |ds: Vec<crate::domain::Delivery>| -> Vec<_> {
        ds.into_iter().map(|d| d.delivery_id).collect()
    };
    let all = cb
        .list_deliveries(&query(None, None, 100, None))
        .await
        .expect("list");
    assert_eq!(
        ids(all),
        vec![c3.delivery_id, c2.delivery_id, c1.delivery_id]
    );
    let alices = cb
        .list_deliveries(&query(Some(&alice), None, 100, None))
        .await
        .expect("list");
    assert_eq!(ids(alices), vec![c3.delivery_id, c1.delivery_id]);
    let failed = cb
        .list_deliveries(&query(None, Some(DeliveryStatus::Failed), 100, None))
        .await
        .expect("list");
    assert_eq!(ids(failed), vec![c1.delivery_id]);
    let page = cb
        .list_deliveries(&query(None, None, 1, None))
        .await
        .expect("list");
    assert_eq!(ids(page), vec![c3.delivery_id]);
    let next = cb
        .list_deliveries(&query(None, None, 100, Some(c3.delivery_id)))
        .await
        .expect("list");
    assert_eq!(ids(next), vec![c2.delivery_id, c1.delivery_id]);
}
