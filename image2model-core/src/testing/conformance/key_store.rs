//! The [`KeyStore`] conformance checks: one `pub async fn` per clause of the
//! contract, each taking a fresh, empty store.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::Check;
use crate::domain::ApiKeyId;
use crate::ports::{KeyStore, Role, StoreError, StoredKey};

/// The list of checks, shared by the test macro and [`CHECKS`].
#[doc(hidden)]
#[macro_export]
macro_rules! __key_store_checks {
    ($mode:ident ($($args:tt)*)) => {
        $crate::__conformance_expand! {$mode key_store ($($args)*) [
            created_keys_are_listed_oldest_first_with_every_field,
            an_empty_store_lists_nothing,
            a_duplicate_id_or_hash_is_a_conflict,
            find_by_hash_finds_a_live_key_and_nothing_else,
            revoked_keys_are_not_found_but_still_listed,
            find_key_by_id_finds_live_and_revoked_keys,
            revoke_is_idempotent_and_keeps_the_first_time,
            revoke_of_an_unknown_key_is_false,
            touch_records_the_last_use,
            set_limits_replaces_a_keys_limits,
        ]}
    };
}

/// Every check, by name.
pub const CHECKS: &[Check<dyn KeyStore>] = crate::__key_store_checks!(array());

// ---------------------------------------------------------------- helpers

/// A time at the millisecond precision the SQL stores keep.
fn ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("a time in range")
}

/// A stored key named `name`, created `age` ago, with a hash derived from the name.
#[must_use]
pub fn stored_key(name: &str, role: Role, age: Duration) -> StoredKey {
    StoredKey {
        key_id: ApiKeyId::generate(),
        name: name.to_owned(),
        role,
        prefix: format!("i2m_{:0>8}", &name[..name.len().min(8)]),
        hash: format!("{:0>64}", hex::encode(name.as_bytes())),
        created_at: ms(Utc::now() - age),
        last_used_at: None,
        revoked_at: None,
        limits: crate::domain::KeyLimits::default(),
    }
}

// ---------------------------------------------------------------- checks

/// `create_key` stores every field; `list_keys` returns keys oldest first.
pub async fn created_keys_are_listed_oldest_first_with_every_field(store: Arc<dyn KeyStore>) {
    let newer = stored_key("newer", Role::Admin, Duration::minutes(1));
    let mut older = stored_key("older", Role::User, Duration::minutes(5));
    older.limits = crate::domain::KeyLimits {
        items_per_day: Some(100),
        spend_per_day: None,
        spend_per_month: Some(crate::domain::MicroUsd(25_000_000)),
    };
    store.create_key(newer.clone()).await.expect("create newer");
    store.create_key(older.clone()).await.expect("create older");

    let listed = store.list_keys().await.expect("list");

    assert_eq!(
        listed,
        vec![older, newer],
        "keys come back whole (limits too), oldest first"
    );
}

/// A store with no keys lists none.
pub async fn an_empty_store_lists_nothing(store: Arc<dyn KeyStore>) {
    assert!(store.list_keys().await.expect("list").is_empty());
}

/// A second key with an existing id, or an existing hash, is refused with
/// `Conflict` and changes nothing.
pub async fn a_duplicate_id_or_hash_is_a_conflict(store: Arc<dyn KeyStore>) {
    let first = stored_key("first", Role::User, Duration::zero());
    store.create_key(first.clone()).await.expect("create");
    let mut same_id = stored_key("second", Role::User, Duration::zero());
    same_id.key_id = first.key_id.clone();
    let mut same_hash = stored_key("third", Role::User, Duration::zero());
    same_hash.hash = first.hash.clone();

    let by_id = store.create_key(same_id).await;
    let by_hash = store.create_key(same_hash).await;

    assert!(
        matches!(by_id, Err(StoreError::Conflict(_))),
        "duplicate id: {by_id:?}"
    );
    assert!(
        matches!(by_hash, Err(StoreError::Conflict(_))),
        "duplicate hash: {by_hash:?}"
    );
    assert_eq!(store.list_keys().await.expect("list"), vec![first]);
}

/// `find_key_by_hash` returns the live key with exactly this hash.
pub async fn find_by_hash_finds_a_live_key_and_nothing_else(store: Arc<dyn KeyStore>) {
    let key = stored_key("finder", Role::Admin, Duration::zero());
    store.create_key(key.clone()).await.expect("create");

    let found = store.find_key_by_hash(&key.hash).await.expect("find");
    let unknown = store
        .find_key_by_hash(&format!("{:f>64}", ""))
        .await
        .expect("find unknown");
    let partial = store
        .find_key_by_hash(&key.hash[..32])
        .await
        .expect("find partial");

    assert_eq!(found, Some(key));
    assert_eq!(unknown, None, "an unknown hash finds nothing");
    assert_eq!(partial, None, "a hash matches whole, never by prefix");
}

/// A revoked key is no longer found by hash, but is still listed, with its
/// revocation time.
pub async fn revoked_keys_are_not_found_but_still_listed(store: Arc<dyn KeyStore>) {
    let key = stored_key("revoked", Role::User, Duration::zero());
    store.create_key(key.clone()).await.expect("create");

    assert!(store.revoke_key(&key.key_id).await.expect("revoke"));

    assert_eq!(store.find_key_by_hash(&key.hash).await.expect("find"), None);
    let listed = store.list_keys().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked_at.is_some(), "the revocation is recorded");
}

/// A key is found by its id whether live or revoked (with its revocation),
/// and an unknown id finds nothing.
pub async fn find_key_by_id_finds_live_and_revoked_keys(store: Arc<dyn KeyStore>) {
    let live = stored_key("live", Role::User, Duration::seconds(2));
    let revoked = stored_key("gone", Role::Admin, Duration::seconds(1));
    store.create_key(live.clone()).await.expect("create");
    store.create_key(revoked.clone()).await.expect("create");
    assert!(store.revoke_key(&revoked.key_id).await.expect("revoke"));

    assert_eq!(
        store.find_key(&live.key_id).await.expect("find"),
        Some(live)
    );
    let found = store
        .find_key(&revoked.key_id)
        .await
        .expect("find")
        .expect("a revoked key is still found by id");
    assert!(found.revoked_at.is_some());
    let unknown = stored_key("never stored", Role::User, Duration::zero());
    assert_eq!(store.find_key(&unknown.key_id).await.expect("find"), None);
}

/// Revoking twice succeeds both times and keeps the first revocation time.
pub async fn revoke_is_idempotent_and_keeps_the_first_time(store: Arc<dyn KeyStore>) {
    let key = stored_key("twice", Role::User, Duration::zero());
    store.create_key(key.clone()).await.expect("create");
    assert!(store.revoke_key(&key.key_id).await.expect("revoke"));
    let first = store.list_keys().await.expect("list")[0].revoked_at;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    let again = store.revoke_key(&key.key_id).await.expect("revoke again");

    assert!(again, "revoking a revoked key still answers true");
    assert_eq!(store.list_keys().await.expect("list")[0].revoked_at, first);
}

/// Revoking an id no key has answers `false`.
pub async fn revoke_of_an_unknown_key_is_false(store: Arc<dyn KeyStore>) {
    let revoked = store
        .revoke_key(&ApiKeyId::generate())
        .await
        .expect("revoke");
    assert!(!revoked);
}

/// `touch_key` sets `last_used_at`, which later reads return.
pub async fn touch_records_the_last_use(store: Arc<dyn KeyStore>) {
    let key = stored_key("touched", Role::User, Duration::zero());
    store.create_key(key.clone()).await.expect("create");
    let at = ms(Utc::now());

    store.touch_key(&key.key_id, at).await.expect("touch");

    let found = store
        .find_key_by_hash(&key.hash)
        .await
        .expect("find")
        .expect("the key");
    assert_eq!(found.last_used_at, Some(at));
    assert_eq!(
        store.list_keys().await.expect("list")[0].last_used_at,
        Some(at)
    );
    store
        .touch_key(&ApiKeyId::generate(), at)
        .await
        .expect("touching an unknown key is not an error");
}

/// `set_key_limits` replaces a key's limits (as `list` and `find` then show)
/// and is `false` for an unknown id.
pub async fn set_limits_replaces_a_keys_limits(store: Arc<dyn KeyStore>) {
    let key = stored_key("limited", Role::User, Duration::zero());
    store.create_key(key.clone()).await.expect("create");
    let limits = crate::domain::KeyLimits {
        items_per_day: Some(10),
        spend_per_day: Some(crate::domain::MicroUsd(2_500_000)),
        spend_per_month: None,
    };
    assert!(
        store
            .set_key_limits(&key.key_id, limits)
            .await
            .expect("set")
    );
    let found = store
        .find_key(&key.key_id)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(found.limits, limits);
    let listed = store.list_keys().await.expect("list");
    assert_eq!(listed[0].limits, limits);
    assert!(
        store
            .set_key_limits(&key.key_id, crate::domain::KeyLimits::default())
            .await
            .expect("clear")
    );
    let found = store
        .find_key(&key.key_id)
        .await
        .expect("find")
        .expect("found");
    assert_eq!(found.limits, crate::domain::KeyLimits::default());
    assert!(
        !store
            .set_key_limits(&ApiKeyId::generate(), limits)
            .await
            .expect("unknown")
    );
}
