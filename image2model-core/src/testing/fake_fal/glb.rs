//! Real, small binary glTFs built by hand: a textured cube (what the fake
//! serves by default, shaped like Tripo3D's, Trellis's and Hunyuan3D's
//! results), a bare unit cube (positions and indices only), and the
//! textured cube marked as needing Draco (which a viewer must refuse).

use std::io::Cursor;
use std::sync::OnceLock;

use image::{ImageFormat, Rgb, RgbImage};
use serde_json::{Value, json};

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
    container(&json_chunk, &bin)
}

/// The texture's four quadrants, as seen in the image (row 0 at the top):
/// top-left red, top-right green, bottom-left blue, bottom-right yellow.
/// Saturated, so that a test can find each colour in a rendering.
pub const TEXTURE_QUADRANTS: [[u8; 3]; 4] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]];

/// The texture's side in pixels.
pub const TEXTURE_SIDE: u32 = 64;

/// The base-colour factor of the textured cube's material (white: the
/// texture's colours are shown as they are).
pub const BASE_COLOR_FACTOR: [f32; 4] = [1.0, 1.0, 1.0, 1.0];

/// The PNG texture of [`textured_glb`]: [`TEXTURE_SIDE`] square, in the
/// four [`TEXTURE_QUADRANTS`].
#[must_use]
pub fn texture_png() -> Vec<u8> {
    let half = TEXTURE_SIDE / 2;
    let img = RgbImage::from_fn(TEXTURE_SIDE, TEXTURE_SIDE, |x, y| {
        let quadrant = usize::from(y >= half) * 2 + usize::from(x >= half);
        Rgb(TEXTURE_QUADRANTS[quadrant])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .expect("encoding the texture");
    out.into_inner()
}

/// A valid textured GLB, as FAL's image-to-3D models return: one cube of
/// 24 vertices (four per face, so each face has its own normals and UVs)
/// with `POSITION`, `NORMAL`, `TEXCOORD_0` and `u16` indices, and a
/// metallic-roughness material (not metallic) whose `baseColorTexture` is
/// [`texture_png`], embedded through a buffer view as `image/png`, sampled
/// with linear filtering and repeat wrapping, and whose base-colour factor is
/// [`BASE_COLOR_FACTOR`]. Each face shows the whole texture, upright when
/// seen from outside with +Y up (the top and bottom faces with -Z and +Z
/// up). About 1.6 KB; built once.
#[must_use]
pub fn textured_glb() -> Vec<u8> {
    static GLB: OnceLock<Vec<u8>> = OnceLock::new();
    GLB.get_or_init(build_textured_glb).clone()
}

fn build_textured_glb() -> Vec<u8> {
    // Each face: its outward normal, and the directions that are right (u)
    // and up (v) when it is seen from outside; u × v = normal, so the two
    // triangles below are counter-clockwise from outside.
    const FACES: [([f32; 3], [f32; 3], [f32; 3]); 6] = [
        ([0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]),
        ([0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]),
        ([1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]),
        ([-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]),
        ([0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]),
        ([0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]),
    ];
    // Corners as (u, v) steps, with their texture coordinates (glTF's UV
    // origin is the image's top-left corner).
    const CORNERS: [(f32, f32, [f32; 2]); 4] = [
        (-0.5, -0.5, [0.0, 1.0]),
        (0.5, -0.5, [1.0, 1.0]),
        (0.5, 0.5, [1.0, 0.0]),
        (-0.5, 0.5, [0.0, 0.0]),
    ];
    let mut positions = Vec::new();
    let mut normals = Vec::new();
    let mut uvs = Vec::new();
    let mut indices: Vec<u16> = Vec::new();
    for (n, u, v) in FACES {
        let base = positions.len() as u16;
        for (su, sv, uv) in CORNERS {
            positions.push(std::array::from_fn::<f32, 3, _>(|k| {
                n[k] * 0.5 + u[k] * su + v[k] * sv
            }));
            normals.push(n);
            uvs.push(uv);
        }
        indices.extend([0, 1, 2, 0, 2, 3].map(|i| base + i));
    }

    let mut bin = Vec::new();
    let mut views = Vec::new();
    let mut push_view = |bin: &mut Vec<u8>, bytes: &[u8], target: Option<u32>| {
        pad(bin, 0);
        let mut view = json!({"buffer": 0, "byteOffset": bin.len(), "byteLength": bytes.len()});
        if let Some(t) = target {
            view["target"] = json!(t);
        }
        bin.extend_from_slice(bytes);
        views.push(view);
        views.len() - 1
    };
    let floats = |v: &[f32]| v.iter().flat_map(|c| c.to_le_bytes()).collect::<Vec<u8>>();
    let position_view = push_view(&mut bin, &floats(positions.as_flattened()), Some(34962));
    let normal_view = push_view(&mut bin, &floats(normals.as_flattened()), Some(34962));
    let uv_view = push_view(&mut bin, &floats(uvs.as_flattened()), Some(34962));
    let index_bytes: Vec<u8> = indices.iter().flat_map(|i| i.to_le_bytes()).collect();
    let index_view = push_view(&mut bin, &index_bytes, Some(34963));
    let image_view = push_view(&mut bin, &texture_png(), None);
    pad(&mut bin, 0);

    let count = positions.len();
    let mut text = json!({
        "asset": {"version": "2.0", "generator": "image2model fake FAL"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "textured cube"}],
        "meshes": [{"name": "textured cube", "primitives": [{
            "attributes": {"POSITION": 0, "NORMAL": 1, "TEXCOORD_0": 2},
            "indices": 3,
            "material": 0
        }]}],
        "materials": [{
            "name": "quadrants",
            "pbrMetallicRoughness": {
                "baseColorFactor": BASE_COLOR_FACTOR,
                "baseColorTexture": {"index": 0, "texCoord": 0},
                "metallicFactor": 0.0,
                "roughnessFactor": 0.8
            }
        }],
        "textures": [{"sampler": 0, "source": 0}],
        "samplers": [{"magFilter": 9729, "minFilter": 9729, "wrapS": 10497, "wrapT": 10497}],
        "images": [{"bufferView": image_view, "mimeType": "image/png", "name": "quadrants"}],
        "accessors": [
            {"bufferView": position_view, "componentType": 5126, "count": count, "type": "VEC3",
             "min": [-0.5, -0.5, -0.5], "max": [0.5, 0.5, 0.5]},
            {"bufferView": normal_view, "componentType": 5126, "count": count, "type": "VEC3"},
            {"bufferView": uv_view, "componentType": 5126, "count": count, "type": "VEC2"},
            {"bufferView": index_view, "componentType": 5123, "count": indices.len(), "type": "SCALAR"}
        ],
        "bufferViews": Value::Array(views),
        "buffers": [{"byteLength": bin.len()}]
    })
    .to_string()
    .into_bytes();
    pad(&mut text, b' ');
    container(&text, &bin)
}

/// The textured cube, declaring that it needs Draco mesh compression
/// (`extensionsRequired: ["KHR_draco_mesh_compression"]`), as some FAL
/// models' files do: a valid GLB container whose meshes a viewer without a
/// Draco decoder must refuse to draw.
#[must_use]
pub fn draco_required_glb() -> Vec<u8> {
    let glb = textured_glb();
    let json_len = u32::from_le_bytes(glb[12..16].try_into().expect("4 bytes")) as usize;
    let mut doc: Value = serde_json::from_slice(&glb[20..20 + json_len]).expect("the cube's JSON");
    doc["extensionsUsed"] = json!(["KHR_draco_mesh_compression"]);
    doc["extensionsRequired"] = json!(["KHR_draco_mesh_compression"]);
    let mut text = doc.to_string().into_bytes();
    pad(&mut text, b' ');
    // The BIN chunk's bytes as they were (after its 8-byte header).
    container(&text, &glb[20 + json_len + 8..])
}

/// The GLB container around a (padded) JSON chunk and BIN chunk.
fn container(json_chunk: &[u8], bin: &[u8]) -> Vec<u8> {
    let total = 12 + 8 + json_chunk.len() + 8 + bin.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(GLB_MAGIC);
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    out.extend_from_slice(&(json_chunk.len() as u32).to_le_bytes());
    out.extend_from_slice(b"JSON");
    out.extend_from_slice(json_chunk);
    out.extend_from_slice(&(bin.len() as u32).to_le_bytes());
    out.extend_from_slice(b"BIN\0");
    out.extend_from_slice(bin);
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
    fn the_textured_cube_is_valid_gltf_with_an_embedded_png_texture() {
        let glb = textured_glb();
        assert_eq!(
            u32::from_le_bytes(glb[8..12].try_into().unwrap()) as usize,
            glb.len()
        );
        assert!(glb.len() < 4096, "{} bytes", glb.len());
        let document = gltf::Gltf::from_slice(&glb).expect("valid glTF");
        let primitive = document
            .meshes()
            .next()
            .unwrap()
            .primitives()
            .next()
            .unwrap();
        for semantic in [
            gltf::Semantic::Positions,
            gltf::Semantic::Normals,
            gltf::Semantic::TexCoords(0),
        ] {
            assert_eq!(
                primitive.get(&semantic).unwrap().count(),
                24,
                "{semantic:?}"
            );
        }
        assert_eq!(primitive.indices().unwrap().count(), 36);
        let pbr = primitive.material().pbr_metallic_roughness();
        assert_eq!(pbr.base_color_factor(), BASE_COLOR_FACTOR);
        assert_eq!(pbr.metallic_factor(), 0.0);
        let texture = pbr.base_color_texture().unwrap().texture();
        assert!(texture.sampler().index().is_some());
        match texture.source().source() {
            gltf::image::Source::View { view, mime_type } => {
                assert_eq!(mime_type, "image/png");
                let start =
                    12 + 8 + u32::from_le_bytes(glb[12..16].try_into().unwrap()) as usize + 8;
                let png = &glb[start + view.offset()..start + view.offset() + view.length()];
                assert_eq!(png, texture_png().as_slice());
            }
            other => panic!("the image is not in a buffer view: {other:?}"),
        }
    }

    #[test]
    fn the_texture_has_the_four_quadrant_colours() {
        let img = image::load_from_memory(&texture_png()).unwrap().to_rgb8();
        let q = TEXTURE_SIDE / 4;
        let at = |x, y| img.get_pixel(x, y).0;
        assert_eq!(at(q, q), TEXTURE_QUADRANTS[0]);
        assert_eq!(at(3 * q, q), TEXTURE_QUADRANTS[1]);
        assert_eq!(at(q, 3 * q), TEXTURE_QUADRANTS[2]);
        assert_eq!(at(3 * q, 3 * q), TEXTURE_QUADRANTS[3]);
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
