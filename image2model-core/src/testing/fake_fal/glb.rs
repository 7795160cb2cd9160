//! A real, small binary glTF built by hand: a unit cube.

use serde_json::json;

/// The GLB magic, `glTF`.
pub const GLB_MAGIC: &[u8; 4] = b"glTF";

/// A valid GLB holding one unit cube (8 positions, 12 triangles).
#[must_use]
pub fn cube_glb() -> Vec<u8> {
    cube_glb_padded(0)
}

/// The cube, with its binary buffer padded so the whole file is at least
/// `min_total` bytes (still valid glTF: the buffer just has unused bytes).
#[must_use]
pub fn cube_glb_padded(min_total: usize) -> Vec<u8> {
    let positions: [[f32; 3]; 8] = [
        [-0.5, -0.5, -0.5],
        [0.5, -0.5, -0.5],
        [0.5, 0.5, -0.5],
        [-0.5, 0.5, -0.5],
        [-0.5, -0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.5, 0.5, 0.5],
        [-0.5, 0.5, 0.5],
    ];
    let indices: [u16; 36] = [
        0, 2, 1, 0, 3, 2, // back
        4, 5, 6, 4, 6, 7, // front
        0, 1, 5, 0, 5, 4, // bottom
        3, 7, 6, 3, 6, 2, // top
        0, 4, 7, 0, 7, 3, // left
        1, 2, 6, 1, 6, 5, // right
    ];
    let mut bin = Vec::new();
    for p in positions {
        for c in p {
            bin.extend_from_slice(&c.to_le_bytes());
        }
    }
    let positions_len = bin.len();
    for i in indices {
        bin.extend_from_slice(&i.to_le_bytes());
    }
    let indices_len = bin.len() - positions_len;
    pad(&mut bin, 0);

    // Header (12) + JSON chunk header (8) + JSON + BIN chunk header (8) + BIN.
    let json_for = |bin_len: usize| {
        let mut text = json!({
            "asset": {"version": "2.0", "generator": "image2model fake FAL"},
            "scene": 0,
            "scenes": [{"nodes": [0]}],
            "nodes": [{"mesh": 0, "name": "cube"}],
            "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "indices": 1}]}],
            "accessors": [
                {"bufferView": 0, "componentType": 5126, "count": 8, "type": "VEC3",
                 "min": [-0.5, -0.5, -0.5], "max": [0.5, 0.5, 0.5]},
                {"bufferView": 1, "componentType": 5123, "count": 36, "type": "SCALAR"}
            ],
            "bufferViews": [
                {"buffer": 0, "byteOffset": 0, "byteLength": positions_len, "target": 34962},
                {"buffer": 0, "byteOffset": positions_len, "byteLength": indices_len, "target": 34963}
            ],
            "buffers": [{"byteLength": bin_len}]
        })
        .to_string()
        .into_bytes();
        pad(&mut text, b' ');
        text
    };
    let mut json_chunk = json_for(bin.len());
    let total = 12 + 8 + json_chunk.len() + 8 + bin.len();
    if min_total > total {
        // Two passes: the JSON's length may change with the buffer length.
        let extra = min_total - total;
        bin.resize(bin.len() + extra, 0);
        pad(&mut bin, 0);
        json_chunk = json_for(bin.len());
    }
    let total = 12 + 8 + json_chunk.len() + 8 + bin.len();

    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(GLB_MAGIC);
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&(json_chunk.len() as u32).to_le_bytes());
    out.extend_from_slice(b"JSON");
    out.extend_from_slice(&json_chunk);
    out.extend_from_slice(&(bin.len() as u32).to_le_bytes());
    out.extend_from_slice(b"BIN\0");
    out.extend_from_slice(&bin);
    out
}

fn pad(bytes: &mut Vec<u8>, with: u8) {
    while !bytes.len().is_multiple_of(4) {
        bytes.push(with);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cube_is_valid_gltf() {
        let glb = cube_glb();
        assert_eq!(&glb[0..4], GLB_MAGIC);
        assert_eq!(
            u32::from_le_bytes(glb[8..12].try_into().unwrap()) as usize,
            glb.len()
        );
        let parsed = gltf::Gltf::from_slice(&glb).expect("valid glTF");
        let mesh = parsed.meshes().next().expect("a mesh");
        assert_eq!(mesh.primitives().count(), 1);
        assert_eq!(parsed.accessors().count(), 2);
    }

    #[test]
    fn the_padded_cube_is_valid_and_big_enough() {
        let glb = cube_glb_padded(100_000);
        assert!(glb.len() >= 100_000);
        assert_eq!(
            u32::from_le_bytes(glb[8..12].try_into().unwrap()) as usize,
            glb.len()
        );
        gltf::Gltf::from_slice(&glb).expect("valid glTF");
    }
}
