//! fal's answers through the functions the FAL client reads them with:
//! submit, status (polled and streamed), result and error bodies. Nothing
//! panics; what is accepted keeps its invariants (a usable request id, a
//! model URL, bounded events, a status that round-trips).
#![no_main]

use image2model_core::generators::fal::MODELS;
use image2model_core::generators::fal::protocol::{
    StatusResponse, error_message, is_valid_request_id, parse_result, parse_status, parse_submit,
    parse_upload_target, validation_details,
};
use image2model_core::generators::fal::sse::{MAX_EVENT, SseReader};
use libfuzzer_sys::fuzz_target;

/// The events of `data` read in `chunk`-byte pieces; `None` when refused.
fn events(data: &[u8], chunk: usize) -> Option<Vec<String>> {
    let mut reader = SseReader::default();
    let mut all = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        all.extend(reader.push(piece).ok()?);
    }
    Some(all)
}

fn check_status(status: &StatusResponse) {
    let again = serde_json::to_string(status).expect("a status serialises");
    assert_eq!(&parse_status(&again).expect("a status reads back"), status);
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(body);

    if let Ok(submitted) = parse_submit(&text) {
        assert!(is_valid_request_id(&submitted.request_id));
    }
    if let Ok(status) = parse_status(&text) {
        check_status(&status);
    }
    if let Ok(target) = parse_upload_target(&text) {
        let _ = (target.upload_url, target.file_url);
    }
    for model in MODELS {
        if let Ok(files) = parse_result(&text, model.output_field, model.preview_field, None) {
            assert!(!files.model.url.is_empty());
            assert!(files.preview.is_none_or(|p| !p.url.is_empty()));
        }
    }
    let said = parse_result(&text, "model_glb", None, Some("the status said so"));
    assert!(said.is_ok() || !said.unwrap_err().to_string().is_empty());
    // Unescaping never lengthens a JSON string and the raw text is cut.
    assert!(error_message(&text).len() <= text.len());
    let _ = validation_details(&text);

    // The status stream: the same events whatever the chunking, each within
    // the bound, each read as a status as the client does.
    let whole = events(body, body.len());
    let pieces = events(body, usize::from(cut));
    assert_eq!(whole, pieces);
    for data in whole.unwrap_or_default() {
        assert!(data.len() <= MAX_EVENT);
        if let Ok(status) = parse_status(&data) {
            check_status(&status);
        }
    }
});
