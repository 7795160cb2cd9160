//! Upload bodies of exact sizes that the server accepts as real images.

use image2model_core::testing::images;

/// A valid PNG of exactly `bytes` bytes (at least a few kilobytes): a real
/// 256 × 192 image followed by an ancillary `teXt` chunk of padding, so the
/// validator sees a realistic header and reads a long body.
///
/// # Panics
/// When `bytes` is smaller than the small image itself.
#[must_use]
pub fn png_of_size(bytes: usize) -> Vec<u8> {
    let mut png = images::png(256, 192);
    png.truncate(png.len() - 12); // drop IEND
    // Chunk overhead: length, type, CRC (12) for the padding and for IEND.
    let pad = bytes
        .checked_sub(png.len() + 24)
        .expect("png_of_size: the requested size is below the base image");
    png.extend_from_slice(
        &u32::try_from(pad)
            .expect("pad fits a PNG chunk")
            .to_be_bytes(),
    );
    png.extend_from_slice(b"teXt");
    png.extend(std::iter::repeat_n(b'x', pad));
    png.extend_from_slice(&[0, 0, 0, 0]);
    png.extend_from_slice(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]);
    debug_assert_eq!(png.len(), bytes);
    png
}

/// A real photo-like JPEG of `side` × `side` pixels: small ones are what
/// the end-to-end measurement uploads, 4096 × 4096 (16.8 MP) what the
/// relief measurement renders.
#[must_use]
pub fn photo_jpeg(side: u32) -> Vec<u8> {
    images::encode_jpeg(&images::photo_like(side, side))
}

/// The first bytes of a PNG whose padding chunk announces `total` bytes in
/// all: a real image then the header of a `teXt` chunk; the caller streams
/// the padding. The validator accepts the start and refuses the file only
/// for its size.
///
/// # Panics
/// When `total` does not fit one PNG chunk (4 GiB).
#[must_use]
pub fn png_head_of_size(total: u64) -> Vec<u8> {
    let mut png = images::png(256, 192);
    png.truncate(png.len() - 12); // drop IEND
    let pad = total.saturating_sub(png.len() as u64 + 24);
    png.extend_from_slice(
        &u32::try_from(pad)
            .expect("pad fits a PNG chunk")
            .to_be_bytes(),
    );
    png.extend_from_slice(b"teXt");
    png
}

#[cfg(test)]
mod tests {
    use super::*;
    use image2model_core::domain::ImageKind;
    use image2model_core::validate::{FileInspector, UploadLimits};

    #[test]
    fn padded_png_has_the_exact_size_and_passes_validation() {
        let png = png_of_size(1 << 20);
        assert_eq!(png.len(), 1 << 20);
        let mut inspector = FileInspector::new(UploadLimits::default(), 0);
        inspector.feed(&png).unwrap();
        let file = inspector.finish().unwrap();
        assert_eq!(file.kind, ImageKind::Png);
    }
}
