//! The file type from its magic bytes.

use crate::domain::ImageKind;

/// The accepted image kind of these leading bytes, if any.
///
/// Needs at most 12 bytes; fewer bytes than a signature never match. Uses the
/// `infer` crate's matchers, so the signatures are the well-known ones:
/// PNG `89 50 4E 47 0D 0A 1A 0A`, JPEG `FF D8 FF`, WebP `RIFF????WEBP`.
#[must_use]
pub fn sniff(prefix: &[u8]) -> Option<ImageKind> {
    if infer::image::is_png(prefix) {
        Some(ImageKind::Png)
    } else if infer::image::is_jpeg(prefix) {
        Some(ImageKind::Jpeg)
    } else if infer::image::is_webp(prefix) {
        Some(ImageKind::Webp)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_signatures_and_nothing_else() {
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Some(ImageKind::Png)
        );
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0\0\x10JFIF"), Some(ImageKind::Jpeg));
        assert_eq!(sniff(b"RIFF\x24\0\0\0WEBPVP8 "), Some(ImageKind::Webp));
        assert_eq!(sniff(b"GIF89a......"), None);
        assert_eq!(sniff(b"<html><script>"), None);
        assert_eq!(sniff(b"RIFF\x24\0\0\0WAVEfmt "), None);
        assert_eq!(sniff(b"\x89PN"), None);
        assert_eq!(sniff(b""), None);
    }
}
