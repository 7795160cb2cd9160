//! Fault drills on the real server: a blob disk that fills up.

use std::path::{Path, PathBuf};
use std::process::Command;

use image2model_http::ServeRole;
use serde_json::Value;

use crate::helpers::{USER_KEY, big_png, spawn_app_built};
use crate::process::files_under;

/// A small tmpfs mounted for a test, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// Mounts `size` of tmpfs at `dir`; `None` (with a line saying the
    /// drill was skipped) where this process may not mount (not root).
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs here (the drill needs root; CI runs it)");
            return None;
        }
        Some(Self(dir.to_owned()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_507_stores_nothing_serves_reads_and_recovers() {
    let root = tempfile::tempdir().unwrap();
    let blobs = root.path().join("blobs");
    let Some(_disk) = SmallDisk::mount(&blobs, "600k") else {
        return;
    };
    let storage = format!("STORAGE_URL=file://{}", blobs.display());
    let app = spawn_app_built(
        move |v| {
            let (k, val) = storage.split_once('=').unwrap();
            v.insert(k.into(), val.into());
        },
        // No worker: only uploads write to the disk.
        |b| b.role(ServeRole::Api),
    )
    .await;

    let mut accepted: Vec<String> = Vec::new();
    let refused = loop {
        assert!(accepted.len() < 10, "a 600 kB disk took ten 150 kB uploads");
        let resp = app.upload(vec![("big.png", big_png(150_000))]).await;
        if resp.status() == 507 {
            break resp;
        }
        assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
        let job: Value = resp.json().await.unwrap();
        accepted.push(job["job_id"].as_str().unwrap().to_owned());
    };
    assert!(accepted.len() >= 2, "the disk held some uploads first");
    assert_eq!(refused.headers()["retry-after"], "60");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_storage");
    // Nothing half written: one file per accepted upload, no staging file.
    let files = files_under(&blobs);
    assert_eq!(files.len(), accepted.len(), "{files:?}");
    assert_eq!(app.job_count().await, accepted.len());

    // Reads go on.
    let resp = app.get_job(&accepted[0], USER_KEY).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(app.list_jobs("", USER_KEY).await.status(), 200);

    // Space freed (a job cancelled, then deleted with its files): uploads
    // work again, without a restart.
    assert_eq!(app.delete_job(&accepted[0], USER_KEY).await.status(), 200);
    assert_eq!(app.delete_job(&accepted[0], USER_KEY).await.status(), 204);
    assert_eq!(files_under(&blobs).len(), accepted.len() - 1);
    let resp = app.upload(vec![("big.png", big_png(150_000))]).await;
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
}
