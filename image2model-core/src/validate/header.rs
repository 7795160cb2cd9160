//! Image dimensions from the header, without decoding pixels.

use crate::domain::ImageKind;

use super::ValidationError;

/// The dimensions found in `prefix` (the first bytes of a file of `kind`).
///
/// `Ok(None)` means the header continues past `prefix`: read more. Parsing is
/// done by the `imagesize` crate, which reads only headers (for JPEG it walks
/// the segment markers up to the first SOF).
///
/// # Errors
/// [`ValidationError::InvalidImage`] when the header is malformed or is of
/// another kind than `kind`.
pub fn dimensions(prefix: &[u8], kind: ImageKind) -> Result<Option<(u32, u32)>, ValidationError> {
    let expected = match kind {
        ImageKind::Png => imagesize::ImageType::Png,
        ImageKind::Jpeg => imagesize::ImageType::Jpeg,
        ImageKind::Webp => imagesize::ImageType::Webp,
    };
    match imagesize::image_type(prefix) {
        Ok(t) if t == expected => {}
        Ok(_) => return Err(ValidationError::InvalidImage),
        Err(imagesize::ImageError::IoError(_)) => return Ok(None),
        Err(_) => return Err(ValidationError::InvalidImage),
    }
    match imagesize::blob_size(prefix) {
        Ok(size) => {
            let w = u32::try_from(size.width).map_err(|_| ValidationError::InvalidImage)?;
            let h = u32::try_from(size.height).map_err(|_| ValidationError::InvalidImage)?;
            if w == 0 || h == 0 {
                return Err(ValidationError::InvalidImage);
            }
            Ok(Some((w, h)))
        }
        Err(imagesize::ImageError::IoError(_)) => Ok(None),
        Err(_) => Err(ValidationError::InvalidImage),
    }
}
