//! The GLB reader on any input: never panics; a mesh it returns is
//! consistent (whole triangles, indices in range, one colour and normal per
//! vertex, within the size-scaled limits), and the streaming GLB check the
//! server runs on generated models agrees that the file is a GLB.
#![no_main]

use image2model_core::gltf::reader::element_limits;
use image2model_core::gltf::{GlbInspector, read_glb};
use image2model_fuzz::model_input;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let glb = model_input(data);
    let Ok(mesh) = read_glb(&glb) else { return };
    let (max_vertices, max_triangles) = element_limits(glb.len());
    let n = mesh.positions.len();
    assert!(n <= max_vertices);
    assert!(mesh.triangle_count() >= 1 && mesh.triangle_count() <= max_triangles);
    assert_eq!(mesh.indices.len() % 3, 0);
    assert!(mesh.indices.iter().all(|&i| (i as usize) < n));
    assert!(mesh.colors.as_ref().is_none_or(|c| c.len() == n));
    assert!(mesh.normals.as_ref().is_none_or(|v| v.len() == n));

    let mut inspector = GlbInspector::new(u64::MAX);
    inspector
        .feed(&glb)
        .expect("the inspector takes what the reader read");
    assert_eq!(inspector.finish().expect("a whole GLB"), glb.len() as u64);
});
