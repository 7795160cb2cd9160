//! Feeds arbitrary bytes, cut into arbitrary chunks, to the upload inspector:
//! it must never panic, and an accepted file must be within every limit.
#![no_main]

use image2model_core::validate::{FileInspector, UploadLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else { return };
    let limits = UploadLimits {
        max_files: 1,
        max_file_bytes: 1 << 20,
        max_request_bytes: 1 << 20,
        max_image_pixels: 1 << 20,
        max_image_side: 4096,
    };
    let mut inspector = FileInspector::new(limits, 0);
    let chunk = usize::from(cut).max(1);
    for piece in body.chunks(chunk) {
        if inspector.feed(piece).is_err() {
            return;
        }
    }
    if let Ok(file) = inspector.finish() {
        assert!(file.size == body.len() as u64);
        assert!(file.width >= 1 && file.height >= 1);
        assert!(file.width <= 4096 && file.height <= 4096);
        assert!(u64::from(file.width) * u64::from(file.height) <= 1 << 20);
    }
});
