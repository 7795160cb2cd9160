//! The error type of the glTF module.

use crate::error_code::ErrorCode;
use crate::ports::GenerateError;

/// Why a GLB could not be written, read or converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GltfError {
    /// The bytes do not start with the GLB magic `glTF`.
    #[error("not a binary glTF file (bad magic)")]
    NotGlb,
    /// A GLB container version other than 2.
    #[error("unsupported glTF container version {0} (expected 2)")]
    UnsupportedVersion(u32),
    /// The container or its JSON is broken: truncated, bad lengths, missing
    /// chunks, JSON that is not glTF, accessors out of range, …
    #[error("malformed glTF: {0}")]
    Malformed(String),
    /// Valid glTF that this module does not handle: non-triangle primitives,
    /// external buffers, …
    #[error("unsupported glTF content: {0}")]
    Unsupported(String),
    /// The model holds more geometry than the reader accepts.
    #[error("model too large: {0}")]
    TooLarge(String),
    /// A [`crate::gltf::Mesh`] given to the writer or a converter is
    /// inconsistent (indices out of range, attribute lengths differ, …).
    #[error("invalid mesh: {0}")]
    InvalidMesh(String),
}

impl GltfError {
    /// The stable, machine-readable code.
    ///
    /// Everything about an input model is `invalid_model_output` (the code the
    /// pipeline stores for a generator's bad output), except geometry beyond
    /// the reader's bounds (`model_too_large`); a bad mesh handed to the writer
    /// is a bug (`internal_error`).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            GltfError::NotGlb
            | GltfError::UnsupportedVersion(_)
            | GltfError::Malformed(_)
            | GltfError::Unsupported(_) => ErrorCode::InvalidModelOutput.as_str(),
            GltfError::TooLarge(_) => ErrorCode::ModelTooLarge.as_str(),
            GltfError::InvalidMesh(_) => ErrorCode::InternalError.as_str(),
        }
    }
}

impl From<GltfError> for GenerateError {
    fn from(e: GltfError) -> Self {
        match e {
            GltfError::InvalidMesh(_) => GenerateError::Internal(e.to_string()),
            other => GenerateError::InvalidOutput(other.to_string()),
        }
    }
}
