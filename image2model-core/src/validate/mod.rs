//! Upload validation.
//!
//! Each check stops a specific threat, and each rejection has a stable code:
//!
//! | code | check | threat stopped |
//! |---|---|---|
//! | `no_files` | at least one file | empty jobs |
//! | `too_many_files` | at most [`UploadLimits::max_files`] | resource exhaustion by fan-out |
//! | `empty_file` | a file has at least one byte | nonsense jobs |
//! | `file_too_large` | bytes counted while streaming, stopped at [`UploadLimits::max_file_bytes`] | disk and memory exhaustion (nothing is buffered whole) |
//! | `request_too_large` | all files together bounded by [`UploadLimits::max_request_bytes`] | the same, across files |
//! | `unsupported_type` | type from the magic bytes: PNG, JPEG or WebP only | polyglot files, scripts and HTML served back as images; the client's name and `Content-Type` are ignored |
//! | `invalid_image` | the header parses and gives dimensions within the first [`HEADER_SCAN_LIMIT`] bytes | malformed files reaching decoders |
//! | `image_too_large` | width, height and width × height bounded from the header, before any decode | decompression bombs |
//!
//! [`FileInspector`] runs these checks on a stream, chunk by chunk, keeping only
//! the header in memory; [`inspect_stream`] wraps a byte stream with it so that a
//! store writing the stream aborts (and keeps nothing) on the first rejection.

mod header;
mod inspect;
mod sniff;

use crate::error_code::ErrorCode;
pub use header::dimensions;
pub use inspect::{FileInspector, InspectedFile, InspectionHandle, inspect_stream};
pub use sniff::sniff;

/// How many bytes of a file may be read to find its type and dimensions.
pub const HEADER_SCAN_LIMIT: usize = 256 * 1024;

/// Bounds applied to every upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// Files per upload.
    pub max_files: usize,
    /// Bytes per file.
    pub max_file_bytes: u64,
    /// Bytes of all files of one upload together.
    pub max_request_bytes: u64,
    /// Width × height bound.
    pub max_image_pixels: u64,
    /// Bound on each of width and height.
    pub max_image_side: u32,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            max_files: 25,
            max_file_bytes: 10 * 1024 * 1024,
            max_request_bytes: 25 * 10 * 1024 * 1024,
            max_image_pixels: 8192 * 8192,
            max_image_side: 8192,
        }
    }
}

/// Why an upload was rejected. Every variant has a stable [`code`](Self::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// The upload had no file.
    #[error("no file was uploaded")]
    NoFiles,
    /// More files than allowed.
    #[error("too many files: at most {max} per upload")]
    TooManyFiles {
        /// The limit.
        max: usize,
    },
    /// A file was empty.
    #[error("the file is empty")]
    EmptyFile,
    /// A file was larger than allowed.
    #[error("the file is larger than {max} bytes")]
    FileTooLarge {
        /// The limit.
        max: u64,
    },
    /// All files together were larger than allowed.
    #[error("the upload is larger than {max} bytes")]
    RequestTooLarge {
        /// The limit.
        max: u64,
    },
    /// The bytes are not PNG, JPEG or WebP.
    #[error("unsupported file type: only PNG, JPEG and WebP images are accepted")]
    UnsupportedType,
    /// The header is malformed or gives no dimensions.
    #[error("the image header could not be read")]
    InvalidImage,
    /// The dimensions exceed the bounds.
    #[error(
        "the image is {width}×{height} pixels; the limit is {max_side} per side and {max_pixels} pixels"
    )]
    ImageTooLarge {
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// Per-side bound.
        max_side: u32,
        /// Area bound.
        max_pixels: u64,
    },
}

impl ValidationError {
    /// The stable error code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            ValidationError::NoFiles => ErrorCode::NoFiles.as_str(),
            ValidationError::TooManyFiles { .. } => ErrorCode::TooManyFiles.as_str(),
            ValidationError::EmptyFile => ErrorCode::EmptyFile.as_str(),
            ValidationError::FileTooLarge { .. } => ErrorCode::FileTooLarge.as_str(),
            ValidationError::RequestTooLarge { .. } => ErrorCode::RequestTooLarge.as_str(),
            ValidationError::UnsupportedType => ErrorCode::UnsupportedType.as_str(),
            ValidationError::InvalidImage => ErrorCode::InvalidImage.as_str(),
            ValidationError::ImageTooLarge { .. } => ErrorCode::ImageTooLarge.as_str(),
        }
    }

    /// Whether the rejection is about size (HTTP 413) rather than content.
    #[must_use]
    pub fn is_size(&self) -> bool {
        matches!(
            self,
            ValidationError::TooManyFiles { .. }
                | ValidationError::FileTooLarge { .. }
                | ValidationError::RequestTooLarge { .. }
        )
    }
}
