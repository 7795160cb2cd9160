//! Strict parsers must never panic, and what they accept must keep their
//! invariants (no traversal, exact round trip).
#![no_main]

use image2model_core::domain::{ApiKeyId, BlobKey, DisplayName, ItemId, JobId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(key) = BlobKey::parse(text) {
        assert_eq!(key.as_str(), text);
        assert!(key.segments().all(|s| !s.is_empty() && s != "." && s != ".." && !s.starts_with('.')));
    }
    if let Ok(id) = JobId::parse(text) {
        assert_eq!(id.to_string(), text);
    }
    if let Ok(id) = ItemId::parse(text) {
        assert_eq!(id.to_string(), text);
    }
    if let Ok(id) = ApiKeyId::parse(text) {
        assert!(!id.as_str().contains(['/', '.', '\\']));
    }
    let name = DisplayName::sanitize(text);
    assert!(!name.as_str().contains(['/', '\\', '"', '\r', '\n']));
});
