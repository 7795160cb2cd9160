//! GLB → OBJ and GLB → STL on any input: never panics, and the output is
//! bounded by a function of the input's size (the reader's size-scaled
//! element limits times the longest line or record), so no input makes the
//! converters allocate without bound.
#![no_main]

use image2model_core::gltf::reader::element_limits;
use image2model_core::gltf::{ModelFormat, convert};
use image2model_fuzz::model_input;
use libfuzzer_sys::fuzz_target;

/// The OBJ header line, at most.
const OBJ_HEADER: usize = 64;
/// `v x y z r g b\n` at most: an `f32` prints in at most 48 characters
/// (`-0.000…1`, the smallest subnormal), a colour component in at most 11.
const OBJ_VERTEX: usize = 2 + 3 * 49 + 3 * 12 + 1;
/// `f a b c\n` with 1-based `u32` indices.
const OBJ_FACE: usize = 1 + 3 * 11 + 1;

fuzz_target!(|data: &[u8]| {
    let glb = model_input(data);
    let (max_vertices, max_triangles) = element_limits(glb.len());
    let obj = convert(&glb, ModelFormat::Obj);
    let stl = convert(&glb, ModelFormat::Stl);
    assert_eq!(obj.is_ok(), stl.is_ok(), "both read the same mesh");
    if let Ok(obj) = obj {
        assert!(
            obj.len() <= OBJ_HEADER + OBJ_VERTEX * max_vertices + OBJ_FACE * max_triangles,
            "{} bytes of OBJ from {} bytes of GLB",
            obj.len(),
            glb.len()
        );
        let text = std::str::from_utf8(&obj).expect("OBJ is text");
        let faces = text.lines().filter(|l| l.starts_with("f ")).count();
        let stl = stl.expect("checked above");
        assert_eq!(stl.len(), 84 + 50 * faces, "one STL record per OBJ face");
        assert!(faces <= max_triangles);
    }
    // The OBJ with its material reads images too: it must not panic either.
    let _ = convert(&glb, ModelFormat::ObjZip);
    if let Ok(same) = convert(&glb, ModelFormat::Glb) {
        assert_eq!(same, glb);
    }
});
