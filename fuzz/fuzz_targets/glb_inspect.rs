//! The streaming GLB check must never panic and must agree with itself
//! whatever the chunking.
#![no_main]

use image2model_core::gltf::GlbInspector;
use libfuzzer_sys::fuzz_target;

fn check(data: &[u8], chunk: usize) -> bool {
    let mut inspector = GlbInspector::new(1 << 16);
    for piece in data.chunks(chunk.max(1)) {
        if inspector.feed(piece).is_err() {
            return false;
        }
    }
    inspector.finish().is_ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else { return };
    assert_eq!(check(body, usize::from(cut)), check(body, body.len().max(1)));
});
