//! Checking a file while it streams.

use super::{HEADER_SCAN_LIMIT, UploadLimits, ValidationError, dimensions, sniff};
use crate::checked_stream::{StreamCheck, Verdict, checked};
use crate::domain::ImageKind;
use crate::ports::ByteStream;

/// What validation learnt of an accepted file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InspectedFile {
    /// Its kind, from the magic bytes.
    pub kind: ImageKind,
    /// Width from the header.
    pub width: u32,
    /// Height from the header.
    pub height: u32,
    /// Its size in bytes.
    pub size: u64,
}

/// Validates one file fed chunk by chunk, keeping at most
/// [`HEADER_SCAN_LIMIT`] bytes of it.
///
/// ```
/// use image2model_core::validate::{FileInspector, UploadLimits};
/// let mut inspector = FileInspector::new(UploadLimits::default(), 0);
/// assert_eq!(inspector.feed(b"GIF89a-not-accepted").unwrap_err().code(), "unsupported_type");
/// ```
#[derive(Debug)]
pub struct FileInspector {
    limits: UploadLimits,
    bytes_before: u64,
    size: u64,
    header: Vec<u8>,
    kind: Option<ImageKind>,
    dims: Option<(u32, u32)>,
}

/// Bytes needed to recognise every accepted signature.
const SNIFF_LEN: usize = 12;

impl FileInspector {
    /// An inspector for one file; `bytes_before` counts the upload's earlier
    /// files against [`UploadLimits::max_request_bytes`].
    #[must_use]
    pub fn new(limits: UploadLimits, bytes_before: u64) -> Self {
        Self {
            limits,
            bytes_before,
            size: 0,
            header: Vec::new(),
            kind: None,
            dims: None,
        }
    }

    /// Checks the next chunk.
    ///
    /// # Errors
    /// The first rejection; once rejected, the file must be dropped.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ValidationError> {
        self.size += chunk.len() as u64;
        if self.size > self.limits.max_file_bytes {
            return Err(ValidationError::FileTooLarge {
                max: self.limits.max_file_bytes,
            });
        }
        if self.bytes_before + self.size > self.limits.max_request_bytes {
            return Err(ValidationError::RequestTooLarge {
                max: self.limits.max_request_bytes,
            });
        }
        if self.dims.is_some() {
            return Ok(());
        }
        let room = HEADER_SCAN_LIMIT - self.header.len();
        self.header
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
        self.examine_header(false)
    }

    fn examine_header(&mut self, at_end: bool) -> Result<(), ValidationError> {
        if self.kind.is_none() {
            if self.header.len() < SNIFF_LEN && !at_end {
                return Ok(());
            }
            self.kind = Some(sniff(&self.header).ok_or(ValidationError::UnsupportedType)?);
        }
        let kind = self.kind.expect("set above");
        match dimensions(&self.header, kind)? {
            Some((width, height)) => {
                let l = &self.limits;
                if width > l.max_image_side
                    || height > l.max_image_side
                    || u64::from(width) * u64::from(height) > l.max_image_pixels
                {
                    return Err(ValidationError::ImageTooLarge {
                        width,
                        height,
                        max_side: l.max_image_side,
                        max_pixels: l.max_image_pixels,
                    });
                }
                self.dims = Some((width, height));
                self.header = Vec::new();
                Ok(())
            }
            None if at_end || self.header.len() >= HEADER_SCAN_LIMIT => {
                Err(ValidationError::InvalidImage)
            }
            None => Ok(()),
        }
    }

    /// Ends the file: checks what needs the whole of it.
    ///
    /// # Errors
    /// [`ValidationError::EmptyFile`], or a rejection the header still owed.
    pub fn finish(mut self) -> Result<InspectedFile, ValidationError> {
        if self.size == 0 {
            return Err(ValidationError::EmptyFile);
        }
        if self.dims.is_none() {
            self.examine_header(true)?;
        }
        let (width, height) = self.dims.ok_or(ValidationError::InvalidImage)?;
        Ok(InspectedFile {
            kind: self.kind.expect("dims imply kind"),
            width,
            height,
            size: self.size,
        })
    }
}

impl StreamCheck for FileInspector {
    type Output = InspectedFile;
    type Error = ValidationError;

    fn feed(&mut self, chunk: &[u8]) -> Result<(), ValidationError> {
        FileInspector::feed(self, chunk)
    }

    fn finish(self) -> Result<InspectedFile, ValidationError> {
        FileInspector::finish(self)
    }
}

/// Reads the verdict of a stream wrapped by [`inspect_stream`].
pub type InspectionHandle = Verdict<FileInspector>;

/// Wraps `body` so that it is validated as it is read: the first rejection
/// becomes an `io::Error` (wrapping the [`ValidationError`]) that aborts the
/// consumer, and the handle tells the verdict afterwards.
#[must_use]
pub fn inspect_stream(
    body: ByteStream,
    inspector: FileInspector,
) -> (ByteStream, InspectionHandle) {
    checked(body, inspector)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::images;
    use bytes::Bytes;
    use futures::StreamExt;

    fn limits() -> UploadLimits {
        UploadLimits {
            max_files: 3,
            max_file_bytes: 100_000,
            max_request_bytes: 150_000,
            max_image_pixels: 1_000_000,
            max_image_side: 2000,
        }
    }

    fn run(bytes: &[u8], chunk: usize) -> Result<InspectedFile, ValidationError> {
        let mut inspector = FileInspector::new(limits(), 0);
        for c in bytes.chunks(chunk.max(1)) {
            inspector.feed(c)?;
        }
        inspector.finish()
    }

    #[test]
    fn accepts_each_kind_in_any_chunking() {
        for (kind, bytes) in [
            (ImageKind::Png, images::png(40, 30)),
            (ImageKind::Jpeg, images::jpeg(40, 30)),
            (ImageKind::Webp, images::webp(40, 30)),
        ] {
            for chunk in [1, 7, 64, 1 << 20] {
                let file = run(&bytes, chunk).unwrap();
                assert_eq!(
                    (file.kind, file.width, file.height, file.size),
                    (kind, 40, 30, bytes.len() as u64)
                );
            }
        }
    }

    #[test]
    fn rejects_with_stable_codes() {
        assert_eq!(run(b"", 10).unwrap_err().code(), "empty_file");
        assert_eq!(
            run(b"GIF89a\x01\0\x01\0\0\0\0", 10).unwrap_err().code(),
            "unsupported_type"
        );
        assert_eq!(run(b"\x89PN", 10).unwrap_err().code(), "unsupported_type");
        let mut truncated = images::png(10, 10);
        truncated.truncate(20);
        assert_eq!(run(&truncated, 10).unwrap_err().code(), "invalid_image");
        assert_eq!(
            run(&images::png_header_only(3000, 10), 10)
                .unwrap_err()
                .code(),
            "image_too_large"
        );
        assert_eq!(
            run(&images::png_header_only(1500, 1500), 10)
                .unwrap_err()
                .code(),
            "image_too_large"
        );
        assert_eq!(
            run(&vec![0x89; 100_001], 4096).unwrap_err().code(),
            "unsupported_type"
        );
        let mut big = images::png(10, 10);
        big.resize(100_001, 0);
        assert_eq!(run(&big, 4096).unwrap_err().code(), "file_too_large");
    }

    #[test]
    fn the_request_bound_counts_earlier_files() {
        let bytes = images::png(10, 10);
        let mut inspector = FileInspector::new(limits(), 150_000 - 10);
        assert_eq!(
            inspector.feed(&bytes).unwrap_err().code(),
            "request_too_large"
        );
    }

    #[tokio::test]
    async fn a_wrapped_stream_fails_its_reader_and_reports_the_verdict() {
        let body = futures::stream::iter(vec![Ok(Bytes::from_static(
            b"<?php system($_GET['c']); ?>",
        ))])
        .boxed();
        let (mut stream, handle) = inspect_stream(body, FileInspector::new(limits(), 0));
        let err = stream.next().await.unwrap().unwrap_err();
        assert_eq!(
            err.get_ref().unwrap().downcast_ref::<ValidationError>(),
            Some(&ValidationError::UnsupportedType)
        );
        assert_eq!(handle.get(), Some(Err(ValidationError::UnsupportedType)));
        assert!(stream.next().await.is_none());

        let png = images::png(5, 4);
        let (stream, handle) = inspect_stream(
            crate::ports::bytes_stream(Bytes::from(png.clone())),
            FileInspector::new(limits(), 0),
        );
        let collected: Vec<_> = stream.collect().await;
        assert_eq!(collected.len(), 1);
        assert_eq!(handle.get().unwrap().unwrap().size, png.len() as u64);
    }
}
