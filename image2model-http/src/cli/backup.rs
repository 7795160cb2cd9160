//! `image2model backup DIR` and `image2model restore DIR [--force]`: the
//! stores of `DATABASE_URL` and `STORAGE_URL` copied out and back
//! ([`image2model_store::backup`]). Exit codes: 0 done, 1 failed or
//! refused, 2 configuration unreadable.

use std::path::Path;
use std::process::ExitCode;

use image2model_store::backup::{self, BackupError};
use secrecy::ExposeSecret;

/// Takes a backup into `dir`.
pub async fn run_backup(dir: &Path) -> ExitCode {
    let Some(config) = super::load_config() else {
        return ExitCode::from(2);
    };
    let _logs = super::logs::init_tracing(&config, true);
    match backup::backup(
        dir,
        config.database_url.expose_secret(),
        &config.storage_url,
        env!("CARGO_PKG_VERSION"),
    )
    .await
    {
        Ok(m) => {
            println!(
                "backup written to {}: {} database (schema {}, {} job(s)), {} blob(s), {} bytes",
                dir.display(),
                m.database.kind,
                m.database.schema_version,
                m.database.jobs,
                m.blobs.objects,
                m.blobs.bytes
            );
            if m.blobs.skipped_newer > 0 {
                println!(
                    "left out {} blob(s) of jobs newer than the snapshot",
                    m.blobs.skipped_newer
                );
            }
            if !m.blobs.missing.is_empty() {
                println!(
                    "warning: {} blob(s) named by the snapshot were deleted before they could be copied (their jobs were deleted meanwhile); they are listed in manifest.json under blobs.missing",
                    m.blobs.missing.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let code = fail("backup", &e);
            let partial = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
                && !dir.join(backup::MANIFEST).exists();
            if partial && !matches!(e, BackupError::Refused(_)) {
                eprintln!(
                    "{} holds an incomplete backup (it has no {}): delete it before trying again",
                    dir.display(),
                    backup::MANIFEST
                );
            }
            code
        }
    }
}

/// Restores the backup in `dir`.
pub async fn run_restore(dir: &Path, force: bool) -> ExitCode {
    let Some(config) = super::load_config() else {
        return ExitCode::from(2);
    };
    let _logs = super::logs::init_tracing(&config, true);
    match backup::restore(
        dir,
        config.database_url.expose_secret(),
        &config.storage_url,
        force,
    )
    .await
    {
        Ok(r) => {
            let m = &r.manifest;
            println!(
                "restored {} (taken {} by image2model {}): {} job(s), {} blob(s)",
                dir.display(),
                m.created_at.to_rfc3339(),
                m.product_version,
                m.database.jobs,
                m.blobs.objects
            );
            if let Some(from) = r.migrated_from {
                println!("migrated the schema from version {from} to this binary's");
            }
            if !m.blobs.missing.is_empty() {
                println!(
                    "note: {} blob(s) were already gone when the backup was taken (manifest.json, blobs.missing); their downloads answer 404",
                    m.blobs.missing.len()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail("restore", &e),
    }
}

fn fail(what: &str, e: &BackupError) -> ExitCode {
    let kind = match e {
        BackupError::Refused(_) => "refused",
        BackupError::Damaged(_) => "refused (damaged backup)",
        _ => "failed",
    };
    eprintln!("error: {what} {kind}: {e}");
    ExitCode::FAILURE
}
