//! Checking a GLB while it streams: magic, version, declared length, size cap.

use crate::checked_stream::{StreamCheck, Verdict, checked};
use crate::ports::{ByteStream, GenerateError};

const GLB_MAGIC: &[u8; 4] = b"glTF";
const CHUNK_JSON: u32 = 0x4E4F_534A;
const HEADER_LEN: usize = 20;

/// Validates a binary glTF file fed chunk by chunk, keeping only 20 bytes.
///
/// Checks the 12-byte header (magic `glTF`, version 2, declared length), that
/// the first chunk is JSON, that the size stays within the cap, and at the end
/// that the byte count equals the declared length (no truncation, no trailing
/// bytes).
#[derive(Debug)]
pub struct GlbInspector {
    max_bytes: u64,
    header: Vec<u8>,
    declared: Option<u64>,
    size: u64,
}

impl GlbInspector {
    /// An inspector accepting files of at most `max_bytes`.
    #[must_use]
    pub fn new(max_bytes: u64) -> Self {
        Self {
            max_bytes,
            header: Vec::with_capacity(HEADER_LEN),
            declared: None,
            size: 0,
        }
    }

    /// Checks the next chunk.
    ///
    /// # Errors
    /// [`GenerateError::InvalidOutput`] or [`GenerateError::OutputTooLarge`].
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), GenerateError> {
        self.size += chunk.len() as u64;
        if self.size > self.max_bytes {
            return Err(GenerateError::OutputTooLarge(self.max_bytes));
        }
        if self.header.len() < HEADER_LEN {
            let take = (HEADER_LEN - self.header.len()).min(chunk.len());
            self.header.extend_from_slice(&chunk[..take]);
            if self.header.len() >= 12 && self.declared.is_none() {
                if &self.header[..4] != GLB_MAGIC {
                    return Err(GenerateError::InvalidOutput(
                        "not a binary glTF file (bad magic)".into(),
                    ));
                }
                let version = u32::from_le_bytes(self.header[4..8].try_into().expect("4 bytes"));
                if version != 2 {
                    return Err(GenerateError::InvalidOutput(format!(
                        "glTF version {version}, expected 2"
                    )));
                }
                let declared = u64::from(u32::from_le_bytes(
                    self.header[8..12].try_into().expect("4 bytes"),
                ));
                if declared > self.max_bytes {
                    return Err(GenerateError::OutputTooLarge(self.max_bytes));
                }
                if declared < HEADER_LEN as u64 {
                    return Err(GenerateError::InvalidOutput(
                        "declared length too short".into(),
                    ));
                }
                self.declared = Some(declared);
            }
            if self.header.len() == HEADER_LEN {
                let kind = u32::from_le_bytes(self.header[16..20].try_into().expect("4 bytes"));
                if kind != CHUNK_JSON {
                    return Err(GenerateError::InvalidOutput(
                        "first chunk is not JSON".into(),
                    ));
                }
            }
        }
        if let Some(declared) = self.declared
            && self.size > declared
        {
            return Err(GenerateError::InvalidOutput(
                "more bytes than the declared length".into(),
            ));
        }
        Ok(())
    }

    /// Ends the file.
    ///
    /// # Errors
    /// [`GenerateError::InvalidOutput`] when it is shorter than declared.
    pub fn finish(self) -> Result<u64, GenerateError> {
        match self.declared {
            Some(d) if d == self.size && self.header.len() == HEADER_LEN => Ok(self.size),
            Some(d) => Err(GenerateError::InvalidOutput(format!(
                "truncated: {} of {d} bytes",
                self.size
            ))),
            None => Err(GenerateError::InvalidOutput(
                "truncated before the glTF header".into(),
            )),
        }
    }
}

impl StreamCheck for GlbInspector {
    type Output = u64;
    type Error = GenerateError;

    fn feed(&mut self, chunk: &[u8]) -> Result<(), GenerateError> {
        GlbInspector::feed(self, chunk)
    }

    fn finish(self) -> Result<u64, GenerateError> {
        GlbInspector::finish(self)
    }
}

/// Reads the verdict of a stream wrapped by [`inspect_glb_stream`].
pub type GlbVerdict = Verdict<GlbInspector>;

/// Wraps a model stream so that it is validated as a GLB while it is stored.
#[must_use]
pub fn inspect_glb_stream(body: ByteStream, max_bytes: u64) -> (ByteStream, GlbVerdict) {
    checked(body, GlbInspector::new(max_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glb(total: u32, json_kind: u32) -> Vec<u8> {
        let mut v = b"glTF".to_vec();
        v.extend_from_slice(&2u32.to_le_bytes());
        v.extend_from_slice(&total.to_le_bytes());
        v.extend_from_slice(&(total - 20).to_le_bytes());
        v.extend_from_slice(&json_kind.to_le_bytes());
        v.resize(total as usize, b' ');
        v
    }

    fn check(bytes: &[u8], max: u64) -> Result<u64, GenerateError> {
        let mut i = GlbInspector::new(max);
        for c in bytes.chunks(5) {
            i.feed(c)?;
        }
        i.finish()
    }

    #[test]
    fn accepts_a_well_formed_header_and_length() {
        assert_eq!(check(&glb(64, CHUNK_JSON), 1000).unwrap(), 64);
    }

    #[test]
    fn rejects_bad_magic_version_chunk_and_lengths() {
        let mut bad_magic = glb(64, CHUNK_JSON);
        bad_magic[0] = b'x';
        assert_eq!(
            check(&bad_magic, 1000).unwrap_err().code(),
            "invalid_model_output"
        );
        let mut v1 = glb(64, CHUNK_JSON);
        v1[4] = 1;
        assert_eq!(check(&v1, 1000).unwrap_err().code(), "invalid_model_output");
        assert_eq!(
            check(&glb(64, 7), 1000).unwrap_err().code(),
            "invalid_model_output"
        );
        assert_eq!(
            check(&glb(64, CHUNK_JSON)[..40], 1000).unwrap_err().code(),
            "invalid_model_output"
        );
        let mut long = glb(64, CHUNK_JSON);
        long.push(0);
        assert_eq!(
            check(&long, 1000).unwrap_err().code(),
            "invalid_model_output"
        );
        assert_eq!(
            check(&glb(64, CHUNK_JSON), 63).unwrap_err().code(),
            "model_too_large"
        );
        assert_eq!(check(b"", 63).unwrap_err().code(), "invalid_model_output");
    }
}
