//! Storage keys for blobs, made only by the server.
//!
//! A [`BlobKey`] is a relative, `/`-separated path with these invariants, checked
//! by [`BlobKey::parse`] and upheld by every constructor:
//!
//! - 1 to 8 segments, at most 256 bytes in all;
//! - each segment is 1 to 64 bytes of `[A-Za-z0-9._-]`;
//! - no segment is `.` or `..`, and none starts with `.` (no hidden files, no
//!   staging-file collisions: stores stage writes under names starting with `.`);
//! - no leading or trailing `/`, no empty segment, no `\`, no control characters.
//!
//! Keys are built from ids ([`BlobKey::upload`], [`BlobKey::model`],
//! [`BlobKey::preview`]), never from client text, so a client file name can
//! never reach a storage path. Stores may still re-check with `parse` before
//! joining a key to a file-system path (defence in depth).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ids::{ItemId, JobId};
use super::options::ImageKind;

/// Why text is not a valid [`BlobKey`] or [`BlobPrefix`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid blob key: {0}")]
pub struct BlobKeyError(&'static str);

const MAX_SEGMENTS: usize = 8;
const MAX_SEGMENT_LEN: usize = 64;
const MAX_KEY_LEN: usize = 256;

/// The top-level areas of the blob store.
pub mod area {
    /// Uploaded images: `uploads/{job_id}/{item_id}.{png|jpg|webp}`.
    pub const UPLOADS: &str = "uploads";
    /// Generated models: `models/{job_id}/{item_id}.glb`.
    pub const MODELS: &str = "models";
    /// Preview images of generated models: `previews/{job_id}/{item_id}.{ext}`.
    pub const PREVIEWS: &str = "previews";
    /// The three areas, in the order reports list them.
    pub const ALL: [&str; 3] = [UPLOADS, MODELS, PREVIEWS];
}

fn check_segment(segment: &str) -> Result<(), BlobKeyError> {
    if segment.is_empty() {
        return Err(BlobKeyError("empty segment"));
    }
    if segment.len() > MAX_SEGMENT_LEN {
        return Err(BlobKeyError("segment longer than 64 bytes"));
    }
    if segment.starts_with('.') {
        return Err(BlobKeyError("segment starts with '.'"));
    }
    if !segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(BlobKeyError(
            "segment has a character outside [A-Za-z0-9._-]",
        ));
    }
    Ok(())
}

fn check_path(text: &str) -> Result<(), BlobKeyError> {
    if text.is_empty() {
        return Err(BlobKeyError("empty"));
    }
    if text.len() > MAX_KEY_LEN {
        return Err(BlobKeyError("longer than 256 bytes"));
    }
    let mut count = 0;
    for segment in text.split('/') {
        count += 1;
        if count > MAX_SEGMENTS {
            return Err(BlobKeyError("more than 8 segments"));
        }
        check_segment(segment)?;
    }
    Ok(())
}

/// A validated storage key. See the module documentation for its invariants.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobKey(String);

impl BlobKey {
    /// Parses stored or configured text strictly.
    ///
    /// # Errors
    /// [`BlobKeyError`] when any invariant of the module documentation fails.
    ///
    /// ```
    /// use image2model_core::domain::BlobKey;
    /// assert!(BlobKey::parse("models/a/b.glb").is_ok());
    /// assert!(BlobKey::parse("models/../etc/passwd").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, BlobKeyError> {
        check_path(text)?;
        Ok(Self(text.to_owned()))
    }

    /// Where an uploaded image is kept.
    #[must_use]
    pub fn upload(job: JobId, item: ItemId, kind: ImageKind) -> Self {
        Self(format!(
            "{}/{job}/{item}.{}",
            area::UPLOADS,
            kind.extension()
        ))
    }

    /// Where the generated GLB model of an item is kept.
    #[must_use]
    pub fn model(job: JobId, item: ItemId) -> Self {
        Self(format!("{}/{job}/{item}.glb", area::MODELS))
    }

    /// Where the preview image of an item's model is kept.
    #[must_use]
    pub fn preview(job: JobId, item: ItemId, kind: ImageKind) -> Self {
        Self(format!(
            "{}/{job}/{item}.{}",
            area::PREVIEWS,
            kind.extension()
        ))
    }

    /// The key as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The job a key of one of the [`area`]s belongs to (its second
    /// segment); `None` for a key outside the areas or that names no job.
    #[must_use]
    pub fn job(&self) -> Option<JobId> {
        let mut segments = self.segments();
        let first = segments.next()?;
        if !area::ALL.contains(&first) {
            return None;
        }
        JobId::parse(segments.next()?).ok()
    }

    /// The key's segments, each satisfying the invariants.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Whether this key lies under `prefix`.
    #[must_use]
    pub fn starts_with(&self, prefix: &BlobPrefix) -> bool {
        match &prefix.0 {
            None => true,
            Some(p) => {
                self.0.len() > p.len()
                    && self.0.starts_with(p.as_str())
                    && self.0.as_bytes()[p.len()] == b'/'
            }
        }
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobKey({})", self.0)
    }
}

impl Serialize for BlobKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for BlobKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A folder of the blob store: the root, or a path with the same invariants as
/// a [`BlobKey`] under which keys are listed.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct BlobPrefix(Option<String>);

impl BlobPrefix {
    /// The whole store.
    #[must_use]
    pub fn root() -> Self {
        Self(None)
    }

    /// Parses a folder path (no trailing `/`).
    ///
    /// # Errors
    /// [`BlobKeyError`] as for [`BlobKey::parse`].
    pub fn parse(text: &str) -> Result<Self, BlobKeyError> {
        check_path(text)?;
        Ok(Self(Some(text.to_owned())))
    }

    /// The uploads of one job.
    #[must_use]
    pub fn job_uploads(job: JobId) -> Self {
        Self(Some(format!("{}/{job}", area::UPLOADS)))
    }

    /// One of the top-level areas, see [`area`].
    ///
    /// # Panics
    /// Never for the constants of [`area`].
    #[must_use]
    pub fn area(name: &str) -> Self {
        Self::parse(name).expect("area names are valid prefixes")
    }

    /// The prefix as text, `None` for the root.
    #[must_use]
    pub fn as_str(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl fmt::Debug for BlobPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobPrefix({})", self.0.as_deref().unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn constructed_keys_parse_back() {
        let (job, item) = (JobId::new(), ItemId::new());
        for key in [
            BlobKey::upload(job, item, ImageKind::Png),
            BlobKey::model(job, item),
            BlobKey::preview(job, item, ImageKind::Webp),
        ] {
            assert_eq!(BlobKey::parse(key.as_str()).unwrap(), key);
            assert_eq!(key.job(), Some(job));
        }
    }

    #[test]
    fn keys_outside_the_areas_or_without_a_job_name_no_job() {
        let job = JobId::new();
        for text in [
            format!("other/{job}/x.glb"),
            "models/not-a-job/x.glb".to_owned(),
            "models".to_owned(),
        ] {
            assert_eq!(BlobKey::parse(&text).unwrap().job(), None, "{text}");
        }
    }

    #[test]
    fn traversal_and_odd_keys_are_rejected() {
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            ".",
            "a//b",
            "a/",
            "a\\b",
            "a/.hidden",
            "a/b\0c",
            "a/b c",
            "ü",
            "a/b/c/d/e/f/g/h/i",
        ] {
            assert!(BlobKey::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn prefix_matching_respects_segment_boundaries() {
        let key = BlobKey::parse("uploads/abc/x.png").unwrap();
        assert!(key.starts_with(&BlobPrefix::parse("uploads").unwrap()));
        assert!(key.starts_with(&BlobPrefix::parse("uploads/abc").unwrap()));
        assert!(!key.starts_with(&BlobPrefix::parse("uploads/ab").unwrap()));
        assert!(key.starts_with(&BlobPrefix::root()));
    }

    proptest! {
        #[test]
        fn parsed_keys_never_escape(text in "[a-z./\\\\-]{0,30}") {
            if let Ok(key) = BlobKey::parse(&text) {
                prop_assert!(key.segments().all(|s| s != ".." && s != "." && !s.is_empty()));
                prop_assert!(!key.as_str().starts_with('/'));
            }
        }
    }
}
