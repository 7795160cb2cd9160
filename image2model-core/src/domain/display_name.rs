//! Client file names, kept for display only.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The longest display name kept, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 128;

/// A client-supplied file name made safe to show: never used to build a path.
///
/// [`DisplayName::sanitize`] keeps only the last path component, drops control
/// and format characters (including bidirectional overrides), quotes,
/// backslashes and other characters that are unsafe in a header or on a shell,
/// collapses whitespace, strips leading dots and bounds the length to
/// [`MAX_DISPLAY_NAME_CHARS`] while keeping the extension. An empty result
/// becomes `image`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

fn is_kept(c: char) -> bool {
    if c.is_control() {
        return false;
    }
    // Unicode format characters: bidi overrides and isolates, zero-width marks.
    if matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{061C}')
    {
        return false;
    }
    !matches!(
        c,
        '"' | '\'' | '\\' | '/' | ':' | '*' | '?' | '<' | '>' | '|' | ';' | '`' | '$' | '%'
    )
}

impl DisplayName {
    /// Makes any client text safe for display. Never fails.
    ///
    /// ```
    /// use image2model_core::domain::DisplayName;
    /// assert_eq!(DisplayName::sanitize("../../etc/pa\"ss.png").as_str(), "pass.png");
    /// assert_eq!(DisplayName::sanitize("").as_str(), "image");
    /// ```
    #[must_use]
    pub fn sanitize(raw: &str) -> Self {
        let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
        let mut out = String::with_capacity(last.len().min(MAX_DISPLAY_NAME_CHARS * 4));
        let mut pending_space = false;
        for c in last.chars() {
            if c.is_whitespace() {
                pending_space = !out.is_empty();
                continue;
            }
            if !is_kept(c) {
                continue;
            }
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
        let trimmed = out.trim_start_matches(['.', ' ', '-']).to_owned();
        let mut name = if trimmed.is_empty() {
            "image".to_owned()
        } else {
            trimmed
        };
        if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
            let ext: String = match name.rfind('.') {
                Some(dot) if name.len() - dot <= 10 => name[dot..].to_owned(),
                _ => String::new(),
            };
            let keep = MAX_DISPLAY_NAME_CHARS - ext.chars().count();
            let stem: String = name.chars().take(keep).collect();
            name = format!("{stem}{ext}");
        }
        Self(name)
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An ASCII-only form for `Content-Disposition`'s `filename=` (non-ASCII
    /// characters become `_`); use `filename*` with [`DisplayName::as_str`]
    /// for the full name.
    #[must_use]
    pub fn ascii_fallback(&self) -> String {
        self.0
            .chars()
            .map(|c| if c.is_ascii() { c } else { '_' })
            .collect()
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DisplayName({:?})", self.0)
    }
}

impl<'de> Deserialize<'de> for DisplayName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::sanitize(&String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn strips_paths_controls_and_bidi() {
        assert_eq!(
            DisplayName::sanitize("C:\\Users\\x\\chair.png").as_str(),
            "chair.png"
        );
        assert_eq!(DisplayName::sanitize("a\r\nb\u{7}.png").as_str(), "a b.png");
        assert_eq!(
            DisplayName::sanitize("evil\u{202E}gnp.exe").as_str(),
            "evilgnp.exe"
        );
        assert_eq!(
            DisplayName::sanitize("  my   chair .png ").as_str(),
            "my chair .png"
        );
        assert_eq!(DisplayName::sanitize("..").as_str(), "image");
    }

    #[test]
    fn long_names_keep_their_extension() {
        let name = DisplayName::sanitize(&format!("{}.jpeg", "x".repeat(500)));
        assert_eq!(name.as_str().chars().count(), MAX_DISPLAY_NAME_CHARS);
        assert!(name.as_str().ends_with(".jpeg"));
    }

    proptest! {
        #[test]
        fn sanitized_names_are_header_and_path_safe(raw in "\\PC{0,300}") {
            let name = DisplayName::sanitize(&raw);
            let s = name.as_str();
            prop_assert!(!s.is_empty());
            prop_assert!(s.chars().count() <= MAX_DISPLAY_NAME_CHARS);
            prop_assert!(!s.contains(['/', '\\', '"', '\r', '\n', '\0']));
            prop_assert!(!s.starts_with('.'));
        }
    }
}
