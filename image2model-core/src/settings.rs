//! The one rule for a setting that is a switch, shared by every crate that
//! reads one (`FAL_STATUS_STREAM`, the stores' `BLOB_DIRECT_IO` and
//! `SQLITE_FAST_WRITES`).

/// A switch's value: `true`/`false`, also `1`/`0`, `yes`/`no` and
/// `on`/`off`, in any case and with surrounding space; `None` for anything
/// else (the caller names the variable in its error).
///
/// ```
/// use image2model_core::settings::parse_bool;
/// assert_eq!(parse_bool(" On "), Some(true));
/// assert_eq!(parse_bool("0"), Some(false));
/// assert_eq!(parse_bool("maybe"), None);
/// ```
#[must_use]
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}
