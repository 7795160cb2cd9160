//! The configuration loader on any environment: the input is read as
//! `NAME=value` lines, the variables the server reads (`DATABASE_URL`,
//! `STORAGE_URL`, `REDIS_URL`, `PUBLIC_BASE_URL`, the `FAL_*` section, the
//! numbers and lists) go through `Config::from_lookup`, the same loader
//! `Config::from_env` uses. Nothing panics; a secret never shows in the
//! redacted forms; the URL parsers keep their promises.
#![no_main]

use std::collections::HashMap;

use image2model_core::generators::fal::parse_base_url;
use image2model_http::config::Config;
use image2model_store::open::{local_blob_dir, redact_url};
use libfuzzer_sys::fuzz_target;

/// Variables whose values are secrets, shown only as `[redacted]`.
const SECRETS: &[&str] = &[
    "API_KEY",
    "ADMIN_API_KEY",
    "SECRET_KEY",
    "FAL_API_KEY",
    "FAL_KEY",
    "FAL_KEY_SECRET",
];

fn shown(vars: &HashMap<String, String>) -> Option<String> {
    let config = Config::from_lookup(|name| vars.get(name).cloned()).ok()?;
    let _ = config.problems();
    let _ = config.upload_limits();
    // The values only: the variables' names are no secret.
    let mut shown: Vec<String> = config
        .to_string()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(_, v)| v.to_owned()))
        .collect();
    if let Some(map) = config.to_redacted_json().as_object() {
        shown.extend(map.values().map(ToString::to_string));
    }
    Some(shown.join("\n"))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut vars = HashMap::new();
    for line in text.lines() {
        if let Some((name, value)) = line.split_once('=') {
            vars.insert(name.trim().to_owned(), value.to_owned());
        }
    }

    // A secret long enough not to turn up by chance, absent from what is
    // shown without it, is absent from what is shown with it.
    if let Some(with) = shown(&vars) {
        for name in SECRETS {
            let Some(secret) = vars.get(*name).map(|s| s.trim()) else {
                continue;
            };
            if secret.len() < 12 {
                continue;
            }
            let mut without = vars.clone();
            for other in SECRETS {
                without.remove(*other);
            }
            let secret = secret.to_owned();
            if shown(&without).is_some_and(|w| !w.contains(&secret))
                && !vars
                    .iter()
                    .any(|(k, v)| !SECRETS.contains(&k.as_str()) && v.contains(&secret))
            {
                assert!(!with.contains(&secret), "{name} is shown");
            }
        }
    }

    for name in ["DATABASE_URL", "REDIS_URL", "STORAGE_URL"] {
        let Some(raw) = vars.get(name) else { continue };
        let redacted = redact_url(raw);
        // Where the URL parser finds a password, the redacted form, read
        // the same way, has none but the placeholder.
        if url::Url::parse(raw).is_ok_and(|u| u.password().is_some())
            && let Ok(shown) = url::Url::parse(&redacted)
        {
            assert!(
                shown.password().is_none_or(|p| p == "REDACTED"),
                "{name}: {redacted}"
            );
        }
        let _ = local_blob_dir(raw);
    }
    for name in [
        "PUBLIC_BASE_URL",
        "FAL_QUEUE_BASE_URL",
        "FAL_STORAGE_BASE_URL",
    ] {
        let Some(raw) = vars.get(name) else { continue };
        if let Ok(url) = parse_base_url(name, raw) {
            assert!(matches!(url.scheme(), "http" | "https"));
            assert!(url.host_str().is_some_and(|h| !h.is_empty()));
            assert!(url.query().is_none() && url.fragment().is_none());
            assert!(url.username().is_empty() && url.password().is_none());
        }
    }
});
