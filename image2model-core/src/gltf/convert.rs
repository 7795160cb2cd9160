//! Converting a GLB to other model formats: OBJ text and binary STL.
//!
//! Both go through [`read_glb`], so what is converted is the flat triangle
//! mesh of the default scene with node transforms applied. The work is linear
//! in the size of the model.
//!
//! Axes and units: OBJ keeps glTF's frame (metres, +Y up), which is what OBJ
//! importers assume. STL has no declared frame but slicers take it as
//! millimetres with +Z up, so the STL output is rotated from +Y up to +Z up
//! (`(x, y, z)` → `(x, -z, y)`, a proper rotation that keeps the winding) and
//! scaled by 1000: a 100 mm model in the GLB prints at 100 mm.

use std::fmt::Write as _;

use super::{GltfError, Mesh, read_glb};
use crate::domain::OptionError;

/// Millimetres per metre: the STL output's scale.
pub const STL_SCALE: f32 = 1000.0;

/// A model file format we can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelFormat {
    /// Binary glTF 2.0.
    Glb,
    /// Wavefront OBJ text, with vertex colours (`v x y z r g b`) when the
    /// model has them.
    Obj,
    /// Binary STL.
    Stl,
    /// A zip of `model.obj` (with `mtllib`, `usemtl`, `vt`, `vn`),
    /// `model.mtl` and the base-colour textures
    /// ([`obj_package`](super::obj_package)).
    ObjZip,
}

impl ModelFormat {
    /// Every format.
    pub const ALL: [ModelFormat; 4] = [
        ModelFormat::Glb,
        ModelFormat::Obj,
        ModelFormat::Stl,
        ModelFormat::ObjZip,
    ];

    /// Parses `glb`, `obj`, `stl` or `obj.zip` (case-insensitive).
    ///
    /// ```
    /// use image2model_core::gltf::ModelFormat;
    ///
    /// assert_eq!(ModelFormat::parse("STL").unwrap(), ModelFormat::Stl);
    /// assert_eq!(ModelFormat::parse("fbx").unwrap_err().code, "invalid_format");
    /// ```
    ///
    /// # Errors
    /// `invalid_format` for anything else.
    pub fn parse(text: &str) -> Result<Self, OptionError> {
        let text = text.trim();
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| OptionError {
                code: "invalid_format",
                message: "format must be one of glb, obj, stl, obj.zip".to_owned(),
            })
    }

    /// The format's name, as `?format=` and links spell it: `glb`, `obj`,
    /// `stl`, `obj.zip`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ModelFormat::ObjZip => "obj.zip",
            other => other.extension(),
        }
    }

    /// The media type: `model/gltf-binary`, `model/obj`, `model/stl` or
    /// `application/zip`.
    #[must_use]
    pub fn mime(self) -> &'static str {
        match self {
            ModelFormat::Glb => "model/gltf-binary",
            ModelFormat::Obj => "model/obj",
            ModelFormat::Stl => "model/stl",
            ModelFormat::ObjZip => "application/zip",
        }
    }

    /// The file extension, without a dot (`zip` for `obj.zip`: a download
    /// of `chair.png` is `chair.zip`).
    #[must_use]
    pub fn extension(self) -> &'static str {
        match self {
            ModelFormat::Glb => "glb",
            ModelFormat::Obj => "obj",
            ModelFormat::Stl => "stl",
            ModelFormat::ObjZip => "zip",
        }
    }
}

/// Converts a GLB to `to`. For [`ModelFormat::Glb`] the input is checked
/// (read in full) and returned unchanged.
///
/// # Errors
/// Whatever [`read_glb`] reports; [`GltfError::TooLarge`] for an STL with
/// more than `u32::MAX` triangles.
pub fn convert(glb: &[u8], to: ModelFormat) -> Result<Vec<u8>, GltfError> {
    match to {
        ModelFormat::Glb => {
            read_glb(glb)?;
            Ok(glb.to_vec())
        }
        ModelFormat::Obj => Ok(mesh_to_obj(&read_glb(glb)?).into_bytes()),
        ModelFormat::Stl => mesh_to_stl(&read_glb(glb)?),
        ModelFormat::ObjZip => super::glb_to_obj_package(glb)?.to_zip(),
    }
}

/// Writes a mesh as OBJ text: a comment, one `v` line per vertex (with
/// `r g b` in `0..=1` when the mesh has colours), one `f` line per triangle
/// (1-based indices).
///
/// ```
/// use image2model_core::gltf::{Mesh, mesh_to_obj};
///
/// let mesh = Mesh {
///     positions: vec![[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
///     indices: vec![0, 1, 2],
///     ..Mesh::default()
/// };
/// assert!(mesh_to_obj(&mesh).ends_with("v 0 1 0\nf 1 2 3\n"));
/// ```
#[must_use]
pub fn mesh_to_obj(mesh: &Mesh) -> String {
    let mut out = String::with_capacity(mesh.positions.len() * 40 + mesh.indices.len() * 8);
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "# image2model OBJ: {} vertices, {} faces",
        mesh.positions.len(),
        mesh.triangle_count()
    );
    for (i, [x, y, z]) in mesh.positions.iter().enumerate() {
        let _ = write!(out, "v {x} {y} {z}");
        if let Some(c) = mesh.colors.as_ref().and_then(|c| c.get(i)) {
            let [r, g, b] = [c[0], c[1], c[2]].map(|v| f32::from(v) / 255.0);
            let _ = write!(out, " {r} {g} {b}");
        }
        out.push('\n');
    }
    for [a, b, c] in mesh.triangles() {
        let _ = writeln!(out, "f {} {} {}", a + 1, b + 1, c + 1);
    }
    out
}

/// Writes a mesh as binary STL: an 80-byte header, the triangle count, and
/// per triangle its unit normal (computed from the vertices; zero for a
/// degenerate triangle), three vertices and a zero attribute word — 84 + 50 ×
/// triangles bytes. Rotated to +Z up and scaled to millimetres (see the module
/// doc).
///
/// # Errors
/// [`GltfError::InvalidMesh`] when an index is out of range;
/// [`GltfError::TooLarge`] beyond `u32::MAX` triangles.
pub fn mesh_to_stl(mesh: &Mesh) -> Result<Vec<u8>, GltfError> {
    let n = mesh.positions.len();
    if let Some(bad) = mesh.indices.iter().find(|&&i| i as usize >= n) {
        return Err(GltfError::InvalidMesh(format!(
            "index {bad} out of range for {n} vertices"
        )));
    }
    let count = u32::try_from(mesh.triangle_count())
        .map_err(|_| GltfError::TooLarge("more than 2^32 triangles for STL".to_owned()))?;
    let mut out = Vec::with_capacity(84 + 50 * count as usize);
    let mut header = [0u8; 80];
    // Must not start with "solid", or readers take the file for ASCII STL.
    let text = b"binary STL from image2model (mm, +Z up)";
    header[..text.len()].copy_from_slice(text);
    out.extend_from_slice(&header);
    out.extend_from_slice(&count.to_le_bytes());
    let to_stl = |p: [f32; 3]| [p[0] * STL_SCALE, -p[2] * STL_SCALE, p[1] * STL_SCALE];
    for t in mesh.triangles() {
        let [a, b, c] = t.map(|i| to_stl(mesh.positions[i as usize]));
        let u = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
        let v = [c[0] - a[0], c[1] - a[1], c[2] - a[2]];
        let nrm = [
            u[1] * v[2] - u[2] * v[1],
            u[2] * v[0] - u[0] * v[2],
            u[0] * v[1] - u[1] * v[0],
        ];
        let len = (nrm[0] * nrm[0] + nrm[1] * nrm[1] + nrm[2] * nrm[2]).sqrt();
        let nrm = if len > 0.0 && len.is_finite() {
            nrm.map(|x| x / len)
        } else {
            [0.0; 3]
        };
        for vector in [nrm, a, b, c] {
            for x in vector {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        out.extend_from_slice(&0u16.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gltf::reader::tests::two_primitive_glb;
    use crate::gltf::write_glb;

    fn quad() -> Mesh {
        Mesh {
            positions: vec![
                [0.0, 0.0, 0.0],
                [1.0, 0.0, 0.0],
                [1.0, 0.0, -1.0],
                [0.0, 0.0, -1.0],
            ],
            normals: None,
            colors: Some(vec![
                [255, 0, 0, 255],
                [0, 255, 0, 255],
                [0, 0, 255, 255],
                [51, 51, 51, 255],
            ]),
            indices: vec![0, 1, 2, 0, 2, 3],
        }
    }

    fn f32_at(b: &[u8], at: usize) -> f32 {
        f32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn formats_parse_and_name_their_media_types() {
        assert_eq!(ModelFormat::parse(" glb ").unwrap(), ModelFormat::Glb);
        assert_eq!(ModelFormat::parse("Obj").unwrap().mime(), "model/obj");
        assert_eq!(ModelFormat::parse("stl").unwrap().extension(), "stl");
        assert_eq!(ModelFormat::Glb.mime(), "model/gltf-binary");
        assert_eq!(ModelFormat::Stl.mime(), "model/stl");
        assert_eq!(
            ModelFormat::parse("gltf").unwrap_err().code,
            "invalid_format"
        );
    }

    #[test]
    fn obj_has_one_line_per_vertex_and_face_with_colours() {
        let glb = write_glb(&quad()).unwrap();

        let obj = String::from_utf8(convert(&glb, ModelFormat::Obj).unwrap()).unwrap();

        let v: Vec<&str> = obj.lines().filter(|l| l.starts_with("v ")).collect();
        let f: Vec<&str> = obj.lines().filter(|l| l.starts_with("f ")).collect();
        assert_eq!(v.len(), 4);
        assert_eq!(f, ["f 1 2 3", "f 1 3 4"]);
        assert_eq!(v[0], "v 0 0 0 1 0 0");
        assert_eq!(v[3], "v 0 0 -1 0.2 0.2 0.2");
    }

    #[test]
    fn obj_without_colours_has_plain_vertices() {
        let mut mesh = quad();
        mesh.colors = None;

        let obj = mesh_to_obj(&mesh);

        assert!(
            obj.lines()
                .filter(|l| l.starts_with("v "))
                .all(|l| l.split(' ').count() == 4)
        );
    }

    #[test]
    fn stl_size_count_and_normals_are_right() {
        let glb = write_glb(&quad()).unwrap();

        let stl = convert(&glb, ModelFormat::Stl).unwrap();

        assert_eq!(stl.len(), 84 + 50 * 2);
        assert!(!stl.starts_with(b"solid"));
        assert_eq!(u32::from_le_bytes(stl[80..84].try_into().unwrap()), 2);
        // The quad faces +Y in glTF, hence +Z in the STL.
        let normal = [f32_at(&stl, 84), f32_at(&stl, 88), f32_at(&stl, 92)];
        assert_eq!(normal, [0.0, 0.0, 1.0]);
        // Its third vertex (1, 0, -1) m becomes (1000, 1000, 0) mm.
        let third = [
            f32_at(&stl, 84 + 36),
            f32_at(&stl, 84 + 40),
            f32_at(&stl, 84 + 44),
        ];
        assert_eq!(third, [1000.0, 1000.0, 0.0]);
    }

    #[test]
    fn conversions_apply_node_transforms_to_every_primitive() {
        let glb = two_primitive_glb();

        let obj = String::from_utf8(convert(&glb, ModelFormat::Obj).unwrap()).unwrap();
        let stl = convert(&glb, ModelFormat::Stl).unwrap();

        assert_eq!(obj.lines().filter(|l| l.starts_with("v ")).count(), 6);
        assert_eq!(obj.lines().filter(|l| l.starts_with("f ")).count(), 2);
        assert!(obj.contains("\nv 12 0 0 1 1 1\n"), "{obj}");
        assert!(obj.contains("\nv 10 2 2 0 0 1\n"), "{obj}");
        assert!(obj.ends_with("f 4 5 6\n"));
        assert_eq!(stl.len(), 84 + 50 * 2);
        // Second triangle, first vertex: (10, 0, 2) m → (10000, -2000, 0) mm.
        let at = 84 + 50 + 12;
        assert_eq!(
            [f32_at(&stl, at), f32_at(&stl, at + 4), f32_at(&stl, at + 8)],
            [10_000.0, -2_000.0, 0.0]
        );
    }

    #[test]
    fn glb_to_glb_is_checked_and_unchanged() {
        let glb = write_glb(&quad()).unwrap();

        assert_eq!(convert(&glb, ModelFormat::Glb).unwrap(), glb);
        assert!(convert(&glb[..glb.len() - 4], ModelFormat::Glb).is_err());
    }

    #[test]
    fn degenerate_triangles_get_a_zero_normal() {
        let mesh = Mesh {
            positions: vec![[0.0; 3], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]],
            indices: vec![0, 1, 2],
            ..Mesh::default()
        };

        let stl = mesh_to_stl(&mesh).unwrap();

        assert_eq!(
            [f32_at(&stl, 84), f32_at(&stl, 88), f32_at(&stl, 92)],
            [0.0; 3]
        );
    }
}
