//! What a client may choose about a job: the image kinds we accept and the
//! generation options.

use crate::error_code::ErrorCode;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An accepted image format, decided from the bytes (never from a name or a
/// client's `Content-Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
    /// WebP (lossy, lossless or extended).
    Webp,
}

impl ImageKind {
    /// Every accepted kind.
    pub const ALL: [ImageKind; 3] = [ImageKind::Png, ImageKind::Jpeg, ImageKind::Webp];

    /// The media type, e.g. `image/png`.
    #[must_use]
    pub fn mime(self) -> &'static str {
        match self {
            ImageKind::Png => "image/png",
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Webp => "image/webp",
        }
    }

    /// The file extension used in storage keys, without a dot.
    #[must_use]
    pub fn extension(self) -> &'static str {
        match self {
            ImageKind::Png => "png",
            ImageKind::Jpeg => "jpg",
            ImageKind::Webp => "webp",
        }
    }

    /// The kind with this media type.
    #[must_use]
    pub fn from_mime(mime: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.mime().eq_ignore_ascii_case(mime))
    }
}

/// Why an option's text is invalid; carries the stable error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OptionError {
    /// Stable code: `invalid_face_limit`, `invalid_texture`, `invalid_model`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

/// The number of faces a generated mesh may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FaceLimit(u32);

impl FaceLimit {
    /// The smallest accepted limit.
    pub const MIN: u32 = 500;
    /// The largest accepted limit.
    pub const MAX: u32 = 1_000_000;

    /// A face limit in `MIN..=MAX`.
    ///
    /// # Errors
    /// `invalid_face_limit` outside the range.
    pub fn new(faces: u32) -> Result<Self, OptionError> {
        if (Self::MIN..=Self::MAX).contains(&faces) {
            Ok(Self(faces))
        } else {
            Err(OptionError {
                code: ErrorCode::InvalidFaceLimit.as_str(),
                message: format!("face_limit must be between {} and {}", Self::MIN, Self::MAX),
            })
        }
    }

    /// Parses decimal text.
    ///
    /// # Errors
    /// `invalid_face_limit` when it is not a number in range.
    pub fn parse(text: &str) -> Result<Self, OptionError> {
        let faces = text.trim().parse::<u32>().map_err(|_| OptionError {
            code: ErrorCode::InvalidFaceLimit.as_str(),
            message: "face_limit must be a whole number".to_owned(),
        })?;
        Self::new(faces)
    }

    /// The limit.
    #[must_use]
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Serialize for FaceLimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for FaceLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::new(u32::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// How much texture the generated model gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Texture {
    /// Geometry only.
    No,
    /// The model's standard texture.
    #[default]
    Standard,
    /// High-definition texture where the model offers it.
    Hd,
}

impl Texture {
    /// Parses `no`, `standard` or `hd` (also `true`/`false`, as the original sent).
    ///
    /// # Errors
    /// `invalid_texture` for anything else.
    pub fn parse(text: &str) -> Result<Self, OptionError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "no" | "none" | "false" => Ok(Texture::No),
            "standard" | "yes" | "true" => Ok(Texture::Standard),
            "hd" => Ok(Texture::Hd),
            _ => Err(OptionError {
                code: ErrorCode::InvalidTexture.as_str(),
                message: "texture must be one of no, standard, hd".to_owned(),
            }),
        }
    }

    /// The option's text form.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Texture::No => "no",
            Texture::Standard => "standard",
            Texture::Hd => "hd",
        }
    }
}

/// The name of a generation model, e.g. `tripo3d-v2.5` or `relief`.
///
/// 1 to 64 characters of `[a-z0-9._-]`. Whether a generator offers the model is
/// decided by the pipeline's generator, not by this type.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ModelName(String);

impl ModelName {
    /// Parses a model name.
    ///
    /// # Errors
    /// `invalid_model` when the text is not of the accepted form.
    pub fn parse(text: &str) -> Result<Self, OptionError> {
        let text = text.trim();
        let ok = !text.is_empty()
            && text.len() <= 64
            && text.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(OptionError {
                code: ErrorCode::InvalidModel.as_str(),
                message: "model must be 1 to 64 characters of [a-z0-9._-]".to_owned(),
            })
        }
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelName({})", self.0)
    }
}

impl<'de> Deserialize<'de> for ModelName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The generation options of a job, shared by all its items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateOptions {
    /// Which model builds the mesh.
    pub model: ModelName,
    /// At most this many faces, when set.
    pub face_limit: Option<FaceLimit>,
    /// Texture quality.
    pub texture: Texture,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn face_limit_bounds_are_inclusive() {
        assert!(FaceLimit::new(FaceLimit::MIN).is_ok());
        assert!(FaceLimit::new(FaceLimit::MAX).is_ok());
        assert_eq!(
            FaceLimit::new(FaceLimit::MIN - 1).unwrap_err().code,
            "invalid_face_limit"
        );
        assert_eq!(
            FaceLimit::parse("abc").unwrap_err().code,
            "invalid_face_limit"
        );
        assert_eq!(FaceLimit::parse(" 20000 ").unwrap().get(), 20_000);
    }

    #[test]
    fn texture_and_model_parse_strictly() {
        assert_eq!(Texture::parse("HD").unwrap(), Texture::Hd);
        assert_eq!(Texture::parse("fancy").unwrap_err().code, "invalid_texture");
        assert!(ModelName::parse("tripo3d-v2.5").is_ok());
        assert_eq!(ModelName::parse("../x").unwrap_err().code, "invalid_model");
        assert_eq!(ModelName::parse("").unwrap_err().code, "invalid_model");
    }

    #[test]
    fn image_kinds_map_to_mime_and_extension() {
        assert_eq!(ImageKind::from_mime("IMAGE/JPEG"), Some(ImageKind::Jpeg));
        assert_eq!(ImageKind::Jpeg.extension(), "jpg");
        assert_eq!(ImageKind::from_mime("image/gif"), None);
    }
}
