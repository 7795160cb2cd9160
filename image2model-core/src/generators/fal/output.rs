//! Reading a result: the model file (streamed, size-capped, GLB header checked)
//! and the optional preview image.

use std::io;

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, stream};
use reqwest::Response;

use super::client::{FalClient, describe};
use super::protocol::FileRef;
use crate::ports::{ByteStream, GenerateError, GeneratedPreview, bytes_stream};
use crate::validate::sniff;

/// The GLB header: magic, version, total length.
const GLB_HEADER: usize = 12;

/// An error whose [`io::Error`] carries a [`GenerateError`]: the pipeline can
/// recover the code with `err.get_ref().and_then(|e| e.downcast_ref())`.
fn stream_error(e: GenerateError) -> io::Error {
    let kind = match e {
        GenerateError::InvalidOutput(_) => io::ErrorKind::InvalidData,
        GenerateError::OutputTooLarge(_) => io::ErrorKind::FileTooLarge,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

/// The model file, started: its header checked and the rest streamed.
pub(crate) struct ModelDownload {
    /// The whole file as the GLB header declares it.
    pub length: u64,
    /// The bytes, from the first; errors carry a [`GenerateError`].
    pub stream: ByteStream,
}

/// Starts downloading the model file and checks what can be checked before
/// streaming: the declared sizes against the cap and the GLB header. The
/// returned stream fails (with `OutputTooLarge` or `InvalidOutput`) when the
/// body turns out longer or shorter than the header says.
pub(crate) async fn download_model(
    client: &FalClient,
    file: &FileRef,
    max_bytes: u64,
) -> Result<ModelDownload, GenerateError> {
    if file.file_size.is_some_and(|s| s > max_bytes) {
        return Err(GenerateError::OutputTooLarge(max_bytes));
    }
    let response: Response = client.download("model download", &file.url).await?;
    let content_length = response.content_length();
    if content_length.is_some_and(|l| l > max_bytes) {
        return Err(GenerateError::OutputTooLarge(max_bytes));
    }
    let mut body = response.bytes_stream();
    let mut head = BytesMut::new();
    while head.len() < GLB_HEADER {
        match body.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            Some(Err(e)) => {
                return Err(GenerateError::Unavailable(format!(
                    "model download: {}",
                    describe(&e)
                )));
            }
            None => {
                return Err(GenerateError::InvalidOutput(format!(
                    "the model file has {} bytes, fewer than a GLB header",
                    head.len()
                )));
            }
        }
    }
    if &head[0..4] != b"glTF" {
        return Err(GenerateError::InvalidOutput(
            "the model file is not binary glTF (no glTF magic)".into(),
        ));
    }
    let version = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if version != 2 {
        return Err(GenerateError::InvalidOutput(format!(
            "GLB version {version}, expected 2"
        )));
    }
    let length = u64::from(u32::from_le_bytes([head[8], head[9], head[10], head[11]]));
    if length > max_bytes {
        return Err(GenerateError::OutputTooLarge(max_bytes));
    }
    if (length as usize) < GLB_HEADER {
        return Err(GenerateError::InvalidOutput(format!(
            "GLB header declares {length} bytes"
        )));
    }
    if let Some(cl) = content_length
        && cl != length
    {
        return Err(GenerateError::InvalidOutput(format!(
            "GLB header declares {length} bytes but the download has {cl}"
        )));
    }
    let first = head.freeze();
    let received = first.len() as u64;
    if received > length {
        return Err(GenerateError::InvalidOutput(format!(
            "the model file is longer than the {length} bytes its header declares"
        )));
    }
    let rest = stream::unfold(
        (body, received, false),
        move |(mut body, received, done)| async move {
            if done {
                return None;
            }
            match body.next().await {
                Some(Ok(chunk)) => {
                    let received = received + chunk.len() as u64;
                    if received > length {
                        let e = GenerateError::InvalidOutput(format!(
                            "the model file is longer than the {length} bytes its header declares"
                        ));
                        Some((Err(stream_error(e)), (body, received, true)))
                    } else {
                        Some((Ok(chunk), (body, received, false)))
                    }
                }
                Some(Err(e)) => {
                    let e = GenerateError::Unavailable(format!(
                        "model download interrupted after {received} of {length} bytes: {}",
                        describe(&e)
                    ));
                    Some((Err(stream_error(e)), (body, received, true)))
                }
                None if received < length => {
                    let e = GenerateError::InvalidOutput(format!(
                        "the model file is truncated: {received} of {length} bytes"
                    ));
                    Some((Err(stream_error(e)), (body, received, true)))
                }
                None => None,
            }
        },
    );
    let stream = stream::once(async move { Ok::<Bytes, io::Error>(first) })
        .chain(rest)
        .boxed();
    Ok(ModelDownload { length, stream })
}

/// Downloads the preview the result named. Best effort: a missing, oversized or unrecognised preview is dropped with a
/// warning (the model is what matters).
pub(crate) async fn download_preview(
    client: &FalClient,
    file: &FileRef,
    max_bytes: u64,
) -> Option<GeneratedPreview> {
    let response = match client.download("preview download", &file.url).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "preview download failed; continuing without it");
            return None;
        }
    };
    if response.content_length().is_some_and(|l| l > max_bytes) {
        tracing::warn!(max_bytes, "preview too large; dropped");
        return None;
    }
    let mut bytes = BytesMut::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) if (bytes.len() + c.len()) as u64 <= max_bytes => bytes.extend_from_slice(&c),
            Ok(_) => {
                tracing::warn!(max_bytes, "preview too large; dropped");
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %describe(&e), "preview download failed; continuing without it");
                return None;
            }
        }
    }
    // The bytes decide the kind; a content type that disagrees is ignored.
    let Some(kind) = sniff(&bytes) else {
        tracing::warn!(content_type = ?file.content_type, "preview is not PNG, JPEG or WebP; dropped");
        return None;
    };
    Some(GeneratedPreview {
        kind,
        body: bytes_stream(bytes.freeze()),
    })
}
