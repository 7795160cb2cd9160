//! Writes a [`Mesh`] as binary glTF 2.0 (GLB), by hand.
//!
//! Layout of the output:
//!
//! - a 12-byte header (`glTF`, version 2, total length);
//! - a JSON chunk, padded with spaces to a multiple of 4 bytes;
//! - a BIN chunk, padded with zeros, holding (each 4-byte aligned) the
//!   positions (`f32` VEC3, with the `min`/`max` the specification requires),
//!   the normals (`f32` VEC3) and colours (normalised `u8` VEC4) when present,
//!   then the indices (`u16` when every index fits, else `u32`).
//!
//! One buffer, one mesh with one triangle primitive, one node, one scene, one
//! plain material (vertex colours multiply its white base colour);
//! `asset.generator` is `image2model`. The output is a pure function of the
//! mesh: the same mesh always gives the same bytes.

use serde_json::{Value, json};

use super::{GltfError, Mesh};

/// `glTF`, little-endian.
pub(crate) const GLB_MAGIC: u32 = 0x4654_6C67;
/// `JSON`, little-endian.
pub(crate) const CHUNK_JSON: u32 = 0x4E4F_534A;
/// `BIN\0`, little-endian.
pub(crate) const CHUNK_BIN: u32 = 0x004E_4942;

const ARRAY_BUFFER: u32 = 34_962;
const ELEMENT_ARRAY_BUFFER: u32 = 34_963;
const FLOAT: u32 = 5_126;
const UNSIGNED_BYTE: u32 = 5_121;
const UNSIGNED_SHORT: u32 = 5_123;
const UNSIGNED_INT: u32 = 5_125;

/// Encodes `mesh` as a GLB.
///
/// ```
/// use image2model_core::gltf::{Mesh, write_glb};
///
/// let mesh = Mesh {
///     positions: vec![[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]],
///     indices: vec![0, 1, 2],
///     ..Mesh::default()
/// };
/// let glb = write_glb(&mesh)?;
/// assert_eq!(&glb[..4], b"glTF");
/// assert_eq!(glb.len() % 4, 0);
/// # Ok::<(), image2model_core::gltf::GltfError>(())
/// ```
///
/// # Errors
/// [`GltfError::InvalidMesh`] when the mesh is inconsistent (see
/// [`Mesh::check`]) or has no triangle.
pub fn write_glb(mesh: &Mesh) -> Result<Vec<u8>, GltfError> {
    mesh.check()?;
    if mesh.indices.is_empty() {
        return Err(GltfError::InvalidMesh(
            "a mesh needs at least one triangle".to_owned(),
        ));
    }
    let n = mesh.positions.len();
    let mut bin = Bin::default();
    let mut accessors = Vec::new();
    let mut attributes = serde_json::Map::new();

    // Positions, with min/max (required for POSITION).
    let (lo, hi) = mesh.bounds().unwrap_or(([0.0; 3], [0.0; 3]));
    let view = bin.push(
        mesh.positions
            .iter()
            .flatten()
            .flat_map(|c| c.to_le_bytes()),
        ARRAY_BUFFER,
    );
    attributes.insert("POSITION".to_owned(), json!(accessors.len()));
    accessors.push(json!({
        "bufferView": view, "componentType": FLOAT, "count": n, "type": "VEC3",
        "min": lo, "max": hi,
    }));

    if let Some(normals) = &mesh.normals {
        let view = bin.push(
            normals.iter().flatten().flat_map(|c| c.to_le_bytes()),
            ARRAY_BUFFER,
        );
        attributes.insert("NORMAL".to_owned(), json!(accessors.len()));
        accessors.push(json!({
            "bufferView": view, "componentType": FLOAT, "count": n, "type": "VEC3",
        }));
    }

    if let Some(colors) = &mesh.colors {
        let view = bin.push(colors.iter().flatten().copied(), ARRAY_BUFFER);
        attributes.insert("COLOR_0".to_owned(), json!(accessors.len()));
        accessors.push(json!({
            "bufferView": view, "componentType": UNSIGNED_BYTE, "normalized": true,
            "count": n, "type": "VEC4",
        }));
    }

    // 65 535 is the primitive-restart value, which indices must not hold: u16
    // only when every index is below it, i.e. with at most 65 535 vertices.
    let (view, component_type) = if n <= usize::from(u16::MAX) {
        let bytes = mesh.indices.iter().flat_map(|&i| (i as u16).to_le_bytes());
        (bin.push(bytes, ELEMENT_ARRAY_BUFFER), UNSIGNED_SHORT)
    } else {
        let bytes = mesh.indices.iter().flat_map(|i| i.to_le_bytes());
        (bin.push(bytes, ELEMENT_ARRAY_BUFFER), UNSIGNED_INT)
    };
    let indices = accessors.len();
    accessors.push(json!({
        "bufferView": view, "componentType": component_type,
        "count": mesh.indices.len(), "type": "SCALAR",
    }));

    let document = json!({
        "asset": { "version": "2.0", "generator": "image2model" },
        "scene": 0,
        "scenes": [{ "nodes": [0] }],
        "nodes": [{ "mesh": 0 }],
        "meshes": [{
            "primitives": [{
                "attributes": Value::Object(attributes),
                "indices": indices,
                "material": 0,
                "mode": 4,
            }],
        }],
        "materials": [{
            "name": "image2model",
            "pbrMetallicRoughness": {
                "baseColorFactor": [1.0, 1.0, 1.0, 1.0],
                "metallicFactor": 0.0,
                "roughnessFactor": 0.8,
            },
        }],
        "accessors": accessors,
        "bufferViews": bin.views,
        "buffers": [{ "byteLength": bin.data.len() }],
    });
    let json = serde_json::to_vec(&document)
        .map_err(|e| GltfError::InvalidMesh(format!("JSON encoding failed: {e}")))?;
    assemble(json, bin.data)
}

/// Frames a JSON chunk and a BIN chunk as a GLB (padding both).
pub(crate) fn assemble(mut json: Vec<u8>, mut bin: Vec<u8>) -> Result<Vec<u8>, GltfError> {
    pad(&mut json, b' ');
    pad(&mut bin, 0);
    let total = 12 + 8 + json.len() + if bin.is_empty() { 0 } else { 8 + bin.len() };
    let total32 = u32::try_from(total).map_err(|_| {
        GltfError::InvalidMesh(format!("{total} bytes exceeds the GLB limit of 4 GiB"))
    })?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&GLB_MAGIC.to_le_bytes());
    out.extend_from_slice(&2u32.to_le_bytes());
    out.extend_from_slice(&total32.to_le_bytes());
    // Both lengths are below `total`, which fits in u32.
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&CHUNK_JSON.to_le_bytes());
    out.extend_from_slice(&json);
    if !bin.is_empty() {
        out.extend_from_slice(&(bin.len() as u32).to_le_bytes());
        out.extend_from_slice(&CHUNK_BIN.to_le_bytes());
        out.extend_from_slice(&bin);
    }
    debug_assert_eq!(out.len(), total);
    Ok(out)
}

fn pad(bytes: &mut Vec<u8>, with: u8) {
    while !bytes.len().is_multiple_of(4) {
        bytes.push(with);
    }
}

/// The BIN chunk being built and its buffer views.
#[derive(Debug, Default)]
struct Bin {
    data: Vec<u8>,
    views: Vec<Value>,
}

impl Bin {
    /// Appends one 4-byte aligned buffer view; returns its index.
    fn push(&mut self, bytes: impl Iterator<Item = u8>, target: u32) -> usize {
        pad(&mut self.data, 0);
        let offset = self.data.len();
        self.data.extend(bytes);
        self.views.push(json!({
            "buffer": 0, "byteOffset": offset, "byteLength": self.data.len() - offset,
            "target": target,
        }));
        self.views.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triangle() -> Mesh {
        Mesh {
            positions: vec![[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, -1.0]],
            normals: None,
            colors: None,
            indices: vec![0, 1, 2],
        }
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn header_and_chunks_are_framed_and_padded() {
        let glb = write_glb(&triangle()).unwrap();

        assert_eq!(u32_at(&glb, 0), GLB_MAGIC);
        assert_eq!(u32_at(&glb, 4), 2);
        assert_eq!(u32_at(&glb, 8) as usize, glb.len());
        let json_len = u32_at(&glb, 12) as usize;
        assert_eq!(json_len % 4, 0);
        assert_eq!(u32_at(&glb, 16), CHUNK_JSON);
        let json = &glb[20..20 + json_len];
        assert!(
            serde_json::from_slice::<Value>(json).is_ok(),
            "JSON padded with spaces"
        );
        let bin_at = 20 + json_len;
        let bin_len = u32_at(&glb, bin_at) as usize;
        assert_eq!(bin_len % 4, 0);
        assert_eq!(u32_at(&glb, bin_at + 4), CHUNK_BIN);
        assert_eq!(bin_at + 8 + bin_len, glb.len());
    }

    #[test]
    fn output_parses_and_validates_with_the_gltf_crate() {
        let mut mesh = triangle();
        mesh.colors = Some(vec![[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 128]]);
        mesh.normals = Some(vec![[0.0, 0.0, 1.0]; 3]);

        let glb = write_glb(&mesh).unwrap();
        let parsed = ::gltf::Gltf::from_slice(&glb).expect("valid glTF");

        assert_eq!(
            parsed.document.as_json().asset.generator.as_deref(),
            Some("image2model")
        );
        let prim = parsed.meshes().next().unwrap().primitives().next().unwrap();
        let pos = prim.get(&::gltf::Semantic::Positions).unwrap();
        assert_eq!(pos.count(), 3);
        assert_eq!(pos.min().unwrap(), json!([0.0, 0.0, -1.0]));
        assert_eq!(pos.max().unwrap(), json!([1.0, 2.0, 0.0]));
        assert!(prim.get(&::gltf::Semantic::Colors(0)).is_some());
        assert!(prim.get(&::gltf::Semantic::Normals).is_some());
        assert_eq!(
            prim.indices().unwrap().data_type(),
            ::gltf::accessor::DataType::U16
        );
    }

    #[test]
    fn indices_switch_to_u32_above_65535_vertices() {
        let n = 70_000u32;
        let mesh = Mesh {
            positions: (0..n).map(|i| [i as f32, (i % 7) as f32, 0.0]).collect(),
            indices: vec![0, 1, n - 1],
            ..Mesh::default()
        };

        let glb = write_glb(&mesh).unwrap();
        let parsed = ::gltf::Gltf::from_slice(&glb).unwrap();
        let prim = parsed.meshes().next().unwrap().primitives().next().unwrap();

        assert_eq!(
            prim.indices().unwrap().data_type(),
            ::gltf::accessor::DataType::U32
        );
    }

    #[test]
    fn inconsistent_meshes_are_refused() {
        let mut out_of_range = triangle();
        out_of_range.indices = vec![0, 1, 3];
        let mut ragged = triangle();
        ragged.indices = vec![0, 1];
        let mut colours = triangle();
        colours.colors = Some(vec![[0; 4]; 2]);
        let mut nan = triangle();
        nan.positions[0][1] = f32::NAN;

        for mesh in [out_of_range, ragged, colours, nan, Mesh::default()] {
            let err = write_glb(&mesh).unwrap_err();
            assert!(matches!(err, GltfError::InvalidMesh(_)), "{err:?}");
        }
    }

    #[test]
    fn same_mesh_gives_same_bytes() {
        assert_eq!(
            write_glb(&triangle()).unwrap(),
            write_glb(&triangle()).unwrap()
        );
    }
}
