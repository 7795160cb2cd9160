//! Reads any binary glTF 2.0 (GLB) into a flat triangle [`Mesh`].
//!
//! The container is parsed here (so that every length is checked before it is
//! trusted); the JSON is parsed and validated by the `gltf` crate; accessors
//! are decoded here with bounds checks (the `gltf` crate's reader trusts the
//! declared component types and panics on some inconsistent sparse data).
//!
//! What is read: every primitive of every mesh reachable from the default
//! scene (else the first scene, else every root node), with the nodes'
//! transforms applied (and the winding flipped under mirroring transforms).
//! Positions (any component type, normalised or not), `COLOR_0` (VEC3/VEC4,
//! float or normalised integers) and `NORMAL` are kept; sparse accessors are
//! supported. Only triangle lists are accepted; other modes are an
//! [`GltfError::Unsupported`] error. Buffers must live in the BIN chunk or in
//! `data:` URIs.

use std::borrow::Cow;

use ::gltf::accessor::{DataType, Dimensions};
use ::gltf::buffer::Source;
use ::gltf::mesh::Mode;
use ::gltf::{Accessor, Document, Semantic};
use base64::Engine as _;

use super::writer::{CHUNK_BIN, CHUNK_JSON, GLB_MAGIC};
use super::{GltfError, Mesh};

/// The most vertices (summed over all instances) the reader returns.
pub const MAX_VERTICES: usize = 8_000_000;
/// The most triangles (summed over all instances) the reader returns.
pub const MAX_TRIANGLES: usize = 8_000_000;
/// Vertices (and triangles) a GLB may yield per byte of its own size, past
/// [`MIN_ELEMENT_LIMIT`]. An accessor without a buffer view (all zeros),
/// and a mesh drawn by many nodes or primitives, yield more than their bytes
/// hold; this bounds that amplification (a few hundred bytes could otherwise
/// ask for [`MAX_VERTICES`] vertices and a gigabyte of OBJ text) while
/// leaving room for real instancing.
pub const ELEMENTS_PER_INPUT_BYTE: usize = 16;
/// The limit for small inputs, whatever their size.
pub const MIN_ELEMENT_LIMIT: usize = 65_536;

/// The most vertices, and the most triangles, [`read_glb`] returns for an
/// input of `input_len` bytes: [`ELEMENTS_PER_INPUT_BYTE`] per byte, at
/// least [`MIN_ELEMENT_LIMIT`], at most [`MAX_VERTICES`] / [`MAX_TRIANGLES`].
///
/// ```
/// use image2model_core::gltf::reader::{MAX_VERTICES, MIN_ELEMENT_LIMIT, element_limits};
///
/// assert_eq!(element_limits(100), (MIN_ELEMENT_LIMIT, MIN_ELEMENT_LIMIT));
/// assert_eq!(element_limits(1 << 30).0, MAX_VERTICES);
/// ```
#[must_use]
pub fn element_limits(input_len: usize) -> (usize, usize) {
    let scaled = input_len
        .saturating_mul(ELEMENTS_PER_INPUT_BYTE)
        .max(MIN_ELEMENT_LIMIT);
    (scaled.min(MAX_VERTICES), scaled.min(MAX_TRIANGLES))
}

type Mat4 = [[f32; 4]; 4];
const IDENTITY: Mat4 = [
    [1.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0],
    [0.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// Parses a GLB into one flat triangle mesh (see the module doc).
///
/// ```
/// use image2model_core::gltf::{GltfError, read_glb};
///
/// assert_eq!(read_glb(b"not a model").unwrap_err(), GltfError::NotGlb);
/// ```
///
/// # Errors
/// [`GltfError::NotGlb`], [`GltfError::UnsupportedVersion`],
/// [`GltfError::Malformed`] (truncated, inconsistent lengths, JSON that is not
/// valid glTF, accessors out of bounds, indices out of range, no triangle),
/// [`GltfError::Unsupported`] (non-triangle primitives, external buffers) and
/// [`GltfError::TooLarge`] beyond [`element_limits`] (so never beyond
/// [`MAX_VERTICES`] / [`MAX_TRIANGLES`]).
pub fn read_glb(bytes: &[u8]) -> Result<Mesh, GltfError> {
    Ok(read(bytes, false)?.mesh)
}

/// One run of triangles drawn with one material.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Group {
    /// The first triangle's index in the mesh.
    pub first_triangle: usize,
    /// How many triangles.
    pub triangles: usize,
    /// The glTF material, `None` for the default material.
    pub material: Option<usize>,
}

/// A material's base colour, as glTF's metallic-roughness model gives it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BaseColor {
    /// The material's name, if it has one.
    pub name: Option<String>,
    /// `baseColorFactor` (linear RGBA).
    pub factor: [f32; 4],
    /// The image of `baseColorTexture`, when it has one.
    pub image: Option<usize>,
}

/// An image the GLB embeds (buffer view or `data:` URI) in a format an
/// OBJ reader takes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EmbeddedImage {
    /// `png` or `jpg`.
    pub extension: &'static str,
    /// The file's bytes, as stored.
    pub bytes: Vec<u8>,
}

/// A GLB read with what an OBJ with its material needs.
#[derive(Debug, Clone)]
pub(crate) struct GlbParts {
    /// The flat mesh, as [`read_glb`] returns it.
    pub mesh: Mesh,
    /// `TEXCOORD_0` per vertex (glTF's origin: the image's top-left), when
    /// any primitive has it (zeros for those that do not).
    pub uvs: Option<Vec<[f32; 2]>>,
    /// The triangles of each primitive, in order, with their material.
    pub groups: Vec<Group>,
    /// Every material of the document, by index.
    pub materials: Vec<BaseColor>,
    /// Every image of the document, by index: `None` for one that is not
    /// embedded or is neither PNG nor JPEG.
    pub images: Vec<Option<EmbeddedImage>>,
}

/// [`read_glb`] with texture coordinates, materials and embedded images.
pub(crate) fn read_glb_parts(bytes: &[u8]) -> Result<GlbParts, GltfError> {
    read(bytes, true)
}

fn read(bytes: &[u8], with_materials: bool) -> Result<GlbParts, GltfError> {
    let (json, bin) = split_glb(bytes)?;
    let root = ::gltf::json::Root::from_slice(json)
        .map_err(|e| GltfError::Malformed(format!("the JSON chunk is not glTF: {e}")))?;
    if !root.asset.version.starts_with("2.") {
        return Err(GltfError::Unsupported(format!(
            "glTF version {} (expected 2.x)",
            root.asset.version
        )));
    }
    check_position_references(&root)?;
    let document = Document::from_json(root)
        .map_err(|e| GltfError::Malformed(shorten(format!("invalid glTF: {e}"))))?;
    let buffers = load_buffers(&document, bin)?;
    let (max_vertices, max_triangles) = element_limits(bytes.len());
    let mut out = Collector {
        max_vertices,
        max_triangles,
        with_uvs: with_materials,
        ..Collector::default()
    };
    for (node, matrix) in scene_nodes(&document)? {
        if let Some(mesh) = node.mesh() {
            for primitive in mesh.primitives() {
                out.add(&primitive, &matrix, &buffers)?;
            }
        }
    }
    let (materials, images) = if with_materials {
        (
            base_colors(&document),
            embedded_images(&document, &buffers)?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let uvs = out.any_uvs.then(|| std::mem::take(&mut out.uvs));
    let groups = std::mem::take(&mut out.groups);
    Ok(GlbParts {
        mesh: out.finish()?,
        uvs,
        groups,
        materials,
        images,
    })
}

fn base_colors(document: &Document) -> Vec<BaseColor> {
    document
        .materials()
        .map(|m| {
            let pbr = m.pbr_metallic_roughness();
            BaseColor {
                name: m.name().map(str::to_owned),
                factor: pbr.base_color_factor(),
                image: pbr
                    .base_color_texture()
                    .filter(|t| t.tex_coord() == 0)
                    .map(|t| t.texture().source().index()),
            }
        })
        .collect()
}

/// The bytes of each image stored in the file, bounds-checked.
fn embedded_images(
    document: &Document,
    buffers: &[Cow<'_, [u8]>],
) -> Result<Vec<Option<EmbeddedImage>>, GltfError> {
    let extension = |mime: &str| match mime {
        "image/png" => Some("png"),
        "image/jpeg" => Some("jpg"),
        _ => None,
    };
    document
        .images()
        .map(|image| match image.source() {
            ::gltf::image::Source::View { view, mime_type } => {
                let Some(extension) = extension(mime_type) else {
                    return Ok(None);
                };
                let bad =
                    || GltfError::Malformed(format!("image {}: out of bounds", image.index()));
                let buffer = buffers.get(view.buffer().index()).ok_or_else(bad)?;
                let end = view.offset().checked_add(view.length()).ok_or_else(bad)?;
                let bytes = buffer.get(view.offset()..end).ok_or_else(bad)?.to_vec();
                Ok(Some(EmbeddedImage { extension, bytes }))
            }
            ::gltf::image::Source::Uri { uri, mime_type } => {
                let Some(rest) = uri.strip_prefix("data:") else {
                    return Ok(None);
                };
                let Some((mime, payload)) = rest.split_once(";base64,") else {
                    return Ok(None);
                };
                let Some(extension) = extension(mime_type.unwrap_or(mime)) else {
                    return Ok(None);
                };
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(payload)
                    .map_err(|e| GltfError::Malformed(format!("bad base64 image: {e}")))?;
                Ok(Some(EmbeddedImage { extension, bytes }))
            }
        })
        .collect()
}

/// `gltf-json` 1.4's validation indexes the accessor list with each
/// primitive's POSITION index unchecked (and panics when it is out of range):
/// check those references first.
fn check_position_references(root: &::gltf::json::Root) -> Result<(), GltfError> {
    use ::gltf::json::validation::Checked;
    let positions = Checked::Valid(::gltf::json::mesh::Semantic::Positions);
    for mesh in &root.meshes {
        for primitive in &mesh.primitives {
            if let Some(index) = primitive.attributes.get(&positions)
                && index.value() >= root.accessors.len()
            {
                return Err(GltfError::Malformed(format!(
                    "POSITION refers to accessor {} of {}",
                    index.value(),
                    root.accessors.len()
                )));
            }
        }
    }
    Ok(())
}

/// Splits a GLB into its JSON chunk and its optional BIN chunk.
fn split_glb(bytes: &[u8]) -> Result<(&[u8], Option<&[u8]>), GltfError> {
    if bytes.len() >= 4 && read_u32(bytes, 0) != Some(GLB_MAGIC) {
        return Err(GltfError::NotGlb);
    }
    let (Some(magic), Some(version), Some(length)) =
        (read_u32(bytes, 0), read_u32(bytes, 4), read_u32(bytes, 8))
    else {
        return Err(GltfError::Malformed(format!(
            "truncated: {} bytes is shorter than the 12-byte header",
            bytes.len()
        )));
    };
    if magic != GLB_MAGIC {
        return Err(GltfError::NotGlb);
    }
    if version != 2 {
        return Err(GltfError::UnsupportedVersion(version));
    }
    let length = length as usize;
    if length > bytes.len() {
        return Err(GltfError::Malformed(format!(
            "truncated: the header declares {length} bytes but {} are present",
            bytes.len()
        )));
    }
    if length < bytes.len() {
        return Err(GltfError::Malformed(format!(
            "the header declares {length} bytes but {} are present",
            bytes.len()
        )));
    }
    let mut at = 12;
    let mut json = None;
    let mut bin = None;
    while at < length {
        let (Some(chunk_len), Some(kind)) = (read_u32(bytes, at), read_u32(bytes, at + 4)) else {
            return Err(GltfError::Malformed(format!(
                "truncated chunk header at byte {at}"
            )));
        };
        let start = at + 8;
        let end = start
            .checked_add(chunk_len as usize)
            .filter(|&end| end <= length)
            .ok_or_else(|| {
                GltfError::Malformed(format!(
                    "chunk at byte {at} declares {chunk_len} bytes past the end of the file"
                ))
            })?;
        let body = &bytes[start..end];
        match kind {
            CHUNK_JSON if json.is_none() && at == 12 => json = Some(body),
            CHUNK_JSON => return Err(GltfError::Malformed("misplaced JSON chunk".to_owned())),
            CHUNK_BIN if json.is_some() && bin.is_none() => bin = Some(body),
            CHUNK_BIN => return Err(GltfError::Malformed("misplaced BIN chunk".to_owned())),
            _ => {} // Unknown chunks must be ignored.
        }
        at = end;
    }
    let json = json.ok_or_else(|| GltfError::Malformed("no JSON chunk".to_owned()))?;
    Ok((json, bin))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn shorten(mut message: String) -> String {
    const MAX: usize = 400;
    if message.len() > MAX {
        let mut cut = MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    message
}

/// The bytes of every buffer, in order.
fn load_buffers<'a>(
    document: &Document,
    bin: Option<&'a [u8]>,
) -> Result<Vec<Cow<'a, [u8]>>, GltfError> {
    document
        .buffers()
        .map(|buffer| {
            let data: Cow<'a, [u8]> = match buffer.source() {
                Source::Bin => Cow::Borrowed(bin.ok_or_else(|| {
                    GltfError::Malformed("a buffer refers to a missing BIN chunk".to_owned())
                })?),
                Source::Uri(uri) => {
                    let Some(rest) = uri.strip_prefix("data:") else {
                        return Err(GltfError::Unsupported(
                            "external buffer (only the BIN chunk and data: URIs are read)"
                                .to_owned(),
                        ));
                    };
                    let (_, payload) = rest.split_once(";base64,").ok_or_else(|| {
                        GltfError::Unsupported("a data: URI that is not base64".to_owned())
                    })?;
                    Cow::Owned(
                        base64::engine::general_purpose::STANDARD
                            .decode(payload)
                            .map_err(|e| GltfError::Malformed(format!("bad base64 buffer: {e}")))?,
                    )
                }
            };
            if buffer.length() > data.len() {
                return Err(GltfError::Malformed(format!(
                    "buffer {} declares {} bytes but has {}",
                    buffer.index(),
                    buffer.length(),
                    data.len()
                )));
            }
            Ok(match data {
                Cow::Borrowed(b) => Cow::Borrowed(&b[..buffer.length()]),
                Cow::Owned(mut v) => {
                    v.truncate(buffer.length());
                    Cow::Owned(v)
                }
            })
        })
        .collect()
}

/// The nodes of the scene to draw, each with its world matrix, parents first.
fn scene_nodes(document: &Document) -> Result<Vec<(::gltf::Node<'_>, Mat4)>, GltfError> {
    let roots: Vec<_> = match document
        .default_scene()
        .or_else(|| document.scenes().next())
    {
        Some(scene) => scene.nodes().collect(),
        None => {
            let mut has_parent = vec![false; document.nodes().len()];
            for child in document.nodes().flat_map(|n| n.children()) {
                has_parent[child.index()] = true;
            }
            document
                .nodes()
                .filter(|n| !has_parent[n.index()])
                .collect()
        }
    };
    let mut visited = vec![false; document.nodes().len()];
    let mut stack: Vec<_> = roots.into_iter().rev().map(|n| (n, IDENTITY)).collect();
    let mut out = Vec::new();
    while let Some((node, parent)) = stack.pop() {
        // glTF nodes form trees: a node reached twice means a cycle or a
        // shared child, either of which could make the walk blow up.
        if std::mem::replace(&mut visited[node.index()], true) {
            return Err(GltfError::Malformed(format!(
                "node {} is reached twice: the node hierarchy is not a tree",
                node.index()
            )));
        }
        let world = mul(&parent, &node.transform().matrix());
        let children: Vec<_> = node.children().collect();
        stack.extend(children.into_iter().rev().map(|c| (c, world)));
        out.push((node, world));
    }
    Ok(out)
}

/// `a × b` for column-major matrices.
fn mul(a: &Mat4, b: &Mat4) -> Mat4 {
    let mut out = [[0.0; 4]; 4];
    for (c, col) in out.iter_mut().enumerate() {
        for (r, cell) in col.iter_mut().enumerate() {
            *cell = (0..4).map(|k| a[k][r] * b[c][k]).sum();
        }
    }
    out
}

fn cross(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f32; 3], b: [f32; 3]) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Accumulates the primitives into one mesh.
#[derive(Debug, Default)]
struct Collector {
    positions: Vec<[f32; 3]>,
    colors: Vec<[u8; 4]>,
    normals: Vec<[f32; 3]>,
    indices: Vec<u32>,
    any_colors: bool,
    all_normals: bool,
    primitives: usize,
    /// Whether to read `TEXCOORD_0` and record groups.
    with_uvs: bool,
    uvs: Vec<[f32; 2]>,
    any_uvs: bool,
    groups: Vec<Group>,
    /// From [`element_limits`].
    max_vertices: usize,
    max_triangles: usize,
}

impl Collector {
    fn add(
        &mut self,
        primitive: &::gltf::Primitive<'_>,
        m: &Mat4,
        buffers: &[Cow<'_, [u8]>],
    ) -> Result<(), GltfError> {
        if primitive.mode() != Mode::Triangles {
            return Err(GltfError::Unsupported(format!(
                "primitive mode {:?} (only triangle lists are read)",
                primitive.mode()
            )));
        }
        let positions = primitive.get(&Semantic::Positions).ok_or_else(|| {
            GltfError::Malformed("a primitive has no POSITION attribute".to_owned())
        })?;
        let count = positions.count();
        let triangles = primitive.indices().map_or(count, |a| a.count()) / 3;
        if self.positions.len().saturating_add(count) > self.max_vertices {
            return Err(GltfError::TooLarge(format!(
                "more than {} vertices",
                self.max_vertices
            )));
        }
        if (self.indices.len() / 3).saturating_add(triangles) > self.max_triangles {
            return Err(GltfError::TooLarge(format!(
                "more than {} triangles",
                self.max_triangles
            )));
        }
        let base = self.positions.len();
        let first_index = self.indices.len();

        let columns = [
            [m[0][0], m[0][1], m[0][2]],
            [m[1][0], m[1][1], m[1][2]],
            [m[2][0], m[2][1], m[2][2]],
        ];
        let det = dot(columns[0], cross(columns[1], columns[2]));
        let values = read_floats(&positions, buffers, &[3], None, "POSITION")?;
        self.positions.extend(values.chunks_exact(3).map(|p| {
            let mut out = [m[3][0], m[3][1], m[3][2]];
            for (k, o) in out.iter_mut().enumerate() {
                *o += columns[0][k] * p[0] + columns[1][k] * p[1] + columns[2][k] * p[2];
            }
            out
        }));

        match primitive.get(&Semantic::Colors(0)) {
            Some(acc) => {
                let values = read_floats(&acc, buffers, &[3, 4], Some(count), "COLOR_0")?;
                let dims = acc.dimensions().multiplicity();
                let to_u8 = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                self.colors.extend(values.chunks_exact(dims).map(|c| {
                    [
                        to_u8(c[0]),
                        to_u8(c[1]),
                        to_u8(c[2]),
                        c.get(3).map_or(255, |&a| to_u8(a)),
                    ]
                }));
                self.colors.resize(self.positions.len(), [255; 4]);
                self.any_colors = true;
            }
            None => self.colors.resize(self.positions.len(), [255; 4]),
        }

        match primitive.get(&Semantic::Normals) {
            Some(acc) => {
                // Normals transform by the inverse transpose, whose columns
                // are the cross products of the matrix's columns over det.
                let inv_t = [
                    cross(columns[1], columns[2]),
                    cross(columns[2], columns[0]),
                    cross(columns[0], columns[1]),
                ];
                let sign = if det < 0.0 { -1.0 } else { 1.0 };
                let values = read_floats(&acc, buffers, &[3], Some(count), "NORMAL")?;
                self.normals.extend(values.chunks_exact(3).map(|n| {
                    let v: [f32; 3] = std::array::from_fn(|k| {
                        sign * (inv_t[0][k] * n[0] + inv_t[1][k] * n[1] + inv_t[2][k] * n[2])
                    });
                    let len = dot(v, v).sqrt();
                    if len > 0.0 && len.is_finite() {
                        v.map(|c| c / len)
                    } else {
                        [0.0, 1.0, 0.0]
                    }
                }));
                self.normals.resize(self.positions.len(), [0.0, 1.0, 0.0]);
                self.all_normals = self.all_normals || self.primitives == 0;
            }
            None => {
                self.normals.resize(self.positions.len(), [0.0, 1.0, 0.0]);
                self.all_normals = false;
            }
        }

        if self.with_uvs {
            if let Some(acc) = primitive.get(&Semantic::TexCoords(0)) {
                let values = read_floats(&acc, buffers, &[2], Some(count), "TEXCOORD_0")?;
                self.uvs
                    .extend(values.chunks_exact(2).map(|uv| [uv[0], uv[1]]));
                self.any_uvs = true;
            }
            self.uvs.resize(self.positions.len(), [0.0, 0.0]);
        }

        match primitive.indices() {
            Some(acc) => {
                let indices = read_indices(&acc, buffers)?;
                if let Some(bad) = indices.iter().find(|&&i| i as usize >= count) {
                    return Err(GltfError::Malformed(format!(
                        "index {bad} out of range for {count} vertices"
                    )));
                }
                let usable = indices.len() - indices.len() % 3;
                self.indices.extend(
                    indices[..usable]
                        .iter()
                        .map(|&i| (base + i as usize) as u32),
                );
            }
            None => {
                let usable = count - count % 3;
                self.indices.extend((base..base + usable).map(|i| i as u32));
            }
        }
        if det < 0.0 {
            // A mirroring transform turns counter-clockwise into clockwise.
            for t in self.indices[first_index..].chunks_exact_mut(3) {
                t.swap(1, 2);
            }
        }
        if self.with_uvs {
            self.groups.push(Group {
                first_triangle: first_index / 3,
                triangles: (self.indices.len() - first_index) / 3,
                material: primitive.material().index(),
            });
        }
        self.primitives += 1;
        Ok(())
    }

    fn finish(self) -> Result<Mesh, GltfError> {
        if self.indices.is_empty() {
            return Err(GltfError::Malformed("the scene has no triangle".to_owned()));
        }
        Ok(Mesh {
            positions: self.positions,
            normals: self.all_normals.then_some(self.normals),
            colors: self.any_colors.then_some(self.colors),
            indices: self.indices,
        })
    }
}

/// Where an accessor's (or a sparse part's) elements live.
struct Elements<'b> {
    data: &'b [u8],
    stride: usize,
}

/// The bytes of `count` elements of `elem` bytes from a buffer view.
fn view_elements<'b>(
    view: &::gltf::buffer::View<'_>,
    offset: usize,
    count: usize,
    elem: usize,
    buffers: &'b [Cow<'_, [u8]>],
    what: &str,
) -> Result<Elements<'b>, GltfError> {
    let bad = || GltfError::Malformed(format!("{what}: accessor data out of bounds"));
    let buffer = buffers.get(view.buffer().index()).ok_or_else(bad)?;
    let view_end = view.offset().checked_add(view.length()).ok_or_else(bad)?;
    let view_bytes = buffer.get(view.offset()..view_end).ok_or_else(bad)?;
    let stride = view.stride().unwrap_or(elem);
    if stride < elem {
        return Err(GltfError::Malformed(format!(
            "{what}: byte stride smaller than an element"
        )));
    }
    if count > 0 {
        let needed = stride
            .checked_mul(count - 1)
            .and_then(|v| v.checked_add(elem))
            .and_then(|v| v.checked_add(offset))
            .ok_or_else(bad)?;
        if needed > view_bytes.len() {
            return Err(bad());
        }
    }
    Ok(Elements {
        data: view_bytes.get(offset..).ok_or_else(bad)?,
        stride,
    })
}

/// Decodes one component as a float (normalised integers scaled per spec).
fn component(b: &[u8], ty: DataType, normalized: bool) -> f32 {
    match (ty, normalized) {
        (DataType::F32, _) => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        (DataType::I8, false) => f32::from(b[0] as i8),
        (DataType::I8, true) => (f32::from(b[0] as i8) / 127.0).max(-1.0),
        (DataType::U8, false) => f32::from(b[0]),
        (DataType::U8, true) => f32::from(b[0]) / 255.0,
        (DataType::I16, false) => f32::from(i16::from_le_bytes([b[0], b[1]])),
        (DataType::I16, true) => (f32::from(i16::from_le_bytes([b[0], b[1]])) / 32767.0).max(-1.0),
        (DataType::U16, false) => f32::from(u16::from_le_bytes([b[0], b[1]])),
        (DataType::U16, true) => f32::from(u16::from_le_bytes([b[0], b[1]])) / 65535.0,
        (DataType::U32, false) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
        (DataType::U32, true) => {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / u32::MAX as f32
        }
    }
}

/// Reads a vector accessor as flat floats (`count × dims`), sparse included.
fn read_floats(
    acc: &Accessor<'_>,
    buffers: &[Cow<'_, [u8]>],
    dims_allowed: &[usize],
    expected_count: Option<usize>,
    what: &str,
) -> Result<Vec<f32>, GltfError> {
    let dims = match acc.dimensions() {
        Dimensions::Scalar => 1,
        Dimensions::Vec2 => 2,
        Dimensions::Vec3 => 3,
        Dimensions::Vec4 => 4,
        other => {
            return Err(GltfError::Malformed(format!(
                "{what}: unexpected type {other:?}"
            )));
        }
    };
    if !dims_allowed.contains(&dims) {
        return Err(GltfError::Malformed(format!(
            "{what}: unexpected {dims} components"
        )));
    }
    let ty = acc.data_type();
    let size = ty.size();
    let elem = size * dims;
    let count = acc.count();
    if let Some(expected) = expected_count
        && count != expected
    {
        return Err(GltfError::Malformed(format!(
            "{what}: {count} elements for {expected} vertices"
        )));
    }
    let norm = acc.normalized();
    let decode = |src: &Elements<'_>, i: usize, out: &mut Vec<f32>| {
        let at = i * src.stride;
        let e = &src.data[at..at + elem];
        out.extend((0..dims).map(|k| component(&e[k * size..], ty, norm)));
    };
    let mut out = Vec::new();
    match acc.view() {
        Some(view) => {
            let src = view_elements(&view, acc.offset(), count, elem, buffers, what)?;
            out.reserve_exact(count * dims);
            for i in 0..count {
                decode(&src, i, &mut out);
            }
        }
        // Without a buffer view, the base values are zeros; the count is
        // already bounded by the caller's vertex limit.
        None => out.resize(count * dims, 0.0),
    }
    if let Some(sparse) = acc.sparse() {
        let n = sparse.count();
        let idx = sparse.indices();
        let idx_size = idx.index_type().size();
        let idx_src = view_elements(&idx.view(), idx.offset(), n, idx_size, buffers, what)?;
        let values = sparse.values();
        let val_src = view_elements(&values.view(), values.offset(), n, elem, buffers, what)?;
        let mut value = Vec::with_capacity(dims);
        for j in 0..n {
            let target = read_index(&idx_src, j, idx_size) as usize;
            if target >= count {
                return Err(GltfError::Malformed(format!(
                    "{what}: sparse index out of range"
                )));
            }
            value.clear();
            decode(&val_src, j, &mut value);
            out[target * dims..(target + 1) * dims].copy_from_slice(&value);
        }
    }
    Ok(out)
}

/// Reads the `i`-th unsigned integer of `size` bytes (1, 2 or 4).
fn read_index(src: &Elements<'_>, i: usize, size: usize) -> u32 {
    let at = i * src.stride;
    let b = &src.data[at..];
    match size {
        1 => u32::from(b[0]),
        2 => u32::from(u16::from_le_bytes([b[0], b[1]])),
        _ => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
    }
}

/// Reads an index accessor (unsigned scalar integers).
fn read_indices(acc: &Accessor<'_>, buffers: &[Cow<'_, [u8]>]) -> Result<Vec<u32>, GltfError> {
    let ty = acc.data_type();
    if acc.dimensions() != Dimensions::Scalar
        || !matches!(ty, DataType::U8 | DataType::U16 | DataType::U32)
        || acc.sparse().is_some()
    {
        return Err(GltfError::Malformed(
            "indices must be a non-sparse scalar unsigned integer accessor".to_owned(),
        ));
    }
    let count = acc.count();
    let Some(view) = acc.view() else {
        return Ok(vec![0; count]);
    };
    let src = view_elements(&view, acc.offset(), count, ty.size(), buffers, "indices")?;
    Ok((0..count).map(|i| read_index(&src, i, ty.size())).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::gltf::write_glb;
    use crate::gltf::writer::assemble;

    fn f32s(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// A GLB with one mesh of two primitives (one indexed with `u16`, one not
    /// indexed with float RGB colours) under a child node scaled by 2 whose
    /// parent is translated by (10, 0, 0).
    pub(crate) fn two_primitive_glb() -> Vec<u8> {
        glb_with(|_| {})
    }

    /// [`two_primitive_glb`] with its JSON edited first.
    pub(crate) fn glb_with(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut bin = f32s(&[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]); // 0..36
        bin.extend([0u16, 1, 2].iter().flat_map(|v| v.to_le_bytes())); // 36..42
        bin.extend([0, 0]); // pad to 44
        bin.extend(f32s(&[0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0])); // 44..80
        bin.extend(f32s(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])); // 80..116
        let mut doc = json!({
            "asset": { "version": "2.0" },
            "scene": 0,
            "scenes": [{ "nodes": [0] }],
            "nodes": [
                { "children": [1], "translation": [10.0, 0.0, 0.0] },
                { "mesh": 0, "scale": [2.0, 2.0, 2.0] }
            ],
            "meshes": [{ "primitives": [
                { "attributes": { "POSITION": 0 }, "indices": 1 },
                { "attributes": { "POSITION": 2, "COLOR_0": 3 } }
            ]}],
            "accessors": [
                { "bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3",
                  "min": [0.0, 0.0, 0.0], "max": [1.0, 1.0, 0.0] },
                { "bufferView": 1, "componentType": 5123, "count": 3, "type": "SCALAR" },
                { "bufferView": 2, "componentType": 5126, "count": 3, "type": "VEC3",
                  "min": [0.0, 0.0, 1.0], "max": [1.0, 1.0, 1.0] },
                { "bufferView": 3, "componentType": 5126, "count": 3, "type": "VEC3" }
            ],
            "bufferViews": [
                { "buffer": 0, "byteOffset": 0, "byteLength": 36 },
                { "buffer": 0, "byteOffset": 36, "byteLength": 6 },
                { "buffer": 0, "byteOffset": 44, "byteLength": 36 },
                { "buffer": 0, "byteOffset": 80, "byteLength": 36 }
            ],
            "buffers": [{ "byteLength": 116 }]
        });
        edit(&mut doc);
        assemble(serde_json::to_vec(&doc).unwrap(), bin).unwrap()
    }

    fn sample_mesh() -> Mesh {
        Mesh {
            positions: vec![
                [0.0, 0.0, 0.0],
                [1.0, 0.0, 0.0],
                [0.0, 1.0, 0.0],
                [0.25, -3.5, 7.0],
            ],
            normals: Some(vec![
                [0.0, 0.0, 1.0],
                [0.0, 1.0, 0.0],
                [1.0, 0.0, 0.0],
                [0.0, 0.0, 1.0],
            ]),
            colors: Some(vec![
                [1, 2, 3, 255],
                [200, 100, 50, 255],
                [0, 0, 0, 0],
                [255; 4],
            ]),
            indices: vec![0, 1, 2, 2, 1, 3],
        }
    }

    #[test]
    fn writer_output_round_trips_through_the_reader() {
        let mesh = sample_mesh();

        let back = read_glb(&write_glb(&mesh).unwrap()).unwrap();

        assert_eq!(back, mesh);
    }

    #[test]
    fn round_trip_without_optional_attributes_and_with_u32_indices() {
        let n = 70_000u32;
        let mesh = Mesh {
            positions: (0..n).map(|i| [i as f32, 1.0, -(i as f32)]).collect(),
            indices: vec![0, 1, n - 1, n - 1, 5, 6],
            ..Mesh::default()
        };

        let back = read_glb(&write_glb(&mesh).unwrap()).unwrap();

        assert_eq!(back, mesh);
    }

    #[test]
    fn all_primitives_are_read_with_node_transforms_applied() {
        let mesh = read_glb(&two_primitive_glb()).unwrap();

        assert_eq!(mesh.positions.len(), 6);
        assert_eq!(mesh.indices, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(mesh.positions[1], [12.0, 0.0, 0.0]);
        assert_eq!(mesh.positions[5], [10.0, 2.0, 2.0]);
        let colors = mesh.colors.unwrap();
        assert_eq!(
            colors[0], [255; 4],
            "a primitive without colours reads as white"
        );
        assert_eq!(colors[3], [255, 0, 0, 255]);
        assert_eq!(colors[5], [0, 0, 255, 255]);
        assert!(mesh.normals.is_none());
    }

    #[test]
    fn a_mirroring_transform_keeps_triangles_facing_outward() {
        let glb = glb_with(|doc| doc["nodes"][1]["scale"] = json!([-1.0, 1.0, 1.0]));

        let mesh = read_glb(&glb).unwrap();

        assert_eq!(mesh.positions[1], [9.0, 0.0, 0.0]);
        assert_eq!(&mesh.indices[..3], &[0, 2, 1]);
    }

    #[test]
    fn non_triangle_primitives_are_refused_clearly() {
        let glb = glb_with(|doc| doc["meshes"][0]["primitives"][1]["mode"] = json!(1));

        let err = read_glb(&glb).unwrap_err();

        assert!(
            matches!(err, GltfError::Unsupported(ref m) if m.contains("Lines")),
            "{err}"
        );
        assert_eq!(err.code(), "invalid_model_output");
    }

    #[test]
    fn wrong_magic_and_version_are_named() {
        let mut glb = two_primitive_glb();
        glb[0] = b'x';
        assert_eq!(read_glb(&glb).unwrap_err(), GltfError::NotGlb);

        let mut glb = two_primitive_glb();
        glb[4] = 1;
        assert_eq!(
            read_glb(&glb).unwrap_err(),
            GltfError::UnsupportedVersion(1)
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let glb = two_primitive_glb();
        for len in 0..glb.len() {
            assert!(read_glb(&glb[..len]).is_err(), "prefix of {len} bytes");
        }
        let mut longer = glb.clone();
        longer.extend([0; 4]);
        assert!(matches!(read_glb(&longer), Err(GltfError::Malformed(_))));
    }

    #[test]
    fn json_that_is_not_gltf_is_malformed() {
        for json in [
            &b"{\"hello\": 1}"[..],
            b"[1,2,3]",
            b"{not json",
            b"{\"asset\":{\"version\":\"2.0\"}}",
        ] {
            let glb = assemble(json.to_vec(), Vec::new()).unwrap();
            let err = read_glb(&glb).unwrap_err();
            assert!(matches!(err, GltfError::Malformed(_)), "{json:?}: {err}");
        }
        let glb = assemble(br#"{"asset":{"version":"1.0"}}"#.to_vec(), Vec::new()).unwrap();
        assert!(matches!(read_glb(&glb), Err(GltfError::Unsupported(_))));
    }

    #[test]
    fn inconsistent_references_are_malformed() {
        let edits: Vec<fn(&mut Value)> = vec![
            |d| d["bufferViews"][0]["byteLength"] = json!(400),
            |d| d["accessors"][0]["count"] = json!(4),
            |d| d["accessors"][3]["count"] = json!(2),
            |d| d["accessors"][1]["byteOffset"] = json!(2),
            |d| d["buffers"][0]["byteLength"] = json!(1000),
            |d| d["nodes"][1]["children"] = json!([0]),
            |d| d["accessors"][1]["componentType"] = json!(5126),
            |d| d["meshes"][0]["primitives"][0]["attributes"]["POSITION"] = json!(9),
            |d| d["accessors"][0]["type"] = json!("MAT4"),
            |d| d["meshes"][0]["primitives"][0]["attributes"] = json!({ "NORMAL": 3 }),
        ];
        for (i, edit) in edits.into_iter().enumerate() {
            let result = read_glb(&glb_with(edit));
            assert!(
                matches!(result, Err(GltfError::Malformed(_))),
                "edit {i}: {result:?}"
            );
        }
    }

    #[test]
    fn out_of_range_indices_are_malformed() {
        let mut glb = two_primitive_glb();
        // The u16 indices start at byte 36 of the BIN chunk.
        let json_len = read_u32(&glb, 12).unwrap() as usize;
        let at = 20 + json_len + 8 + 36;
        glb[at] = 9;

        assert!(matches!(read_glb(&glb), Err(GltfError::Malformed(m)) if m.contains("index 9")));
    }

    #[test]
    fn external_buffers_are_unsupported_and_data_uris_are_read() {
        let glb = glb_with(|d| d["buffers"][0]["uri"] = json!("model.bin"));
        assert!(matches!(read_glb(&glb), Err(GltfError::Unsupported(_))));

        let mesh = sample_mesh();
        let from_bin = read_glb(&write_glb(&mesh).unwrap()).unwrap();
        let glb = write_glb(&mesh).unwrap();
        let (json, bin) = split_glb(&glb).unwrap();
        let mut doc: Value = serde_json::from_slice(json).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(bin.unwrap());
        doc["buffers"][0]["uri"] = json!(format!("data:application/octet-stream;base64,{b64}"));
        let inline = assemble(serde_json::to_vec(&doc).unwrap(), Vec::new()).unwrap();

        assert_eq!(read_glb(&inline).unwrap(), from_bin);
    }

    #[test]
    fn sparse_accessors_override_their_base() {
        // Move vertex 2 of the first primitive to (0, 0, 5) through a sparse
        // accessor whose index (u8 = 2) and value live after the colours.
        let glb = {
            let mut bin = two_primitive_glb();
            let json_len = read_u32(&bin, 12).unwrap() as usize;
            let bin_chunk = bin.split_off(20 + json_len + 8);
            let mut data = bin_chunk.clone();
            data.extend([2, 0, 0, 0]); // 116..120: sparse index
            data.extend(f32s(&[0.0, 0.0, 5.0])); // 120..132: sparse value
            let (json, _) = split_glb(&two_primitive_glb())
                .map(|(j, b)| (j.to_vec(), b))
                .unwrap();
            let mut doc: Value = serde_json::from_slice(&json).unwrap();
            doc["bufferViews"]
                .as_array_mut()
                .unwrap()
                .push(json!({ "buffer": 0, "byteOffset": 116, "byteLength": 16 }));
            doc["buffers"][0]["byteLength"] = json!(132);
            doc["accessors"][0]["sparse"] = json!({
                "count": 1,
                "indices": { "bufferView": 4, "componentType": 5121 },
                "values": { "bufferView": 4, "byteOffset": 4 }
            });
            assemble(serde_json::to_vec(&doc).unwrap(), data).unwrap()
        };

        let mesh = read_glb(&glb).unwrap();

        assert_eq!(mesh.positions[2], [10.0, 0.0, 10.0]);
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let glb = write_glb(&sample_mesh()).unwrap();
        for i in 0..glb.len() {
            for flip in [0x01, 0x80, 0xFF] {
                let mut bad = glb.clone();
                bad[i] ^= flip;
                let _ = read_glb(&bad);
            }
        }
    }
}
