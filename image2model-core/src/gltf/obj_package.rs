//! OBJ with its material: `model.obj`, `model.mtl` and the base-colour
//! textures the GLB embeds, zipped ([`ModelFormat::ObjZip`]), so that a
//! textured model stays textured in Blender and other OBJ readers.
//!
//! - `model.obj`: `mtllib model.mtl`; `v` (with `r g b` when the mesh has
//!   vertex colours, as in the plain OBJ), `vt` (`TEXCOORD_0`, `v` flipped:
//!   OBJ's origin is the image's bottom-left, glTF's its top-left) and `vn`
//!   when the model has them; a `usemtl` before each run of triangles with
//!   one material; faces `f v/vt/vn` (one index: the arrays are parallel).
//! - `model.mtl`: one `newmtl` per material used, `material_<n>` for glTF
//!   material `n` and `default` for primitives without one (glTF's default
//!   material: white); `Kd` is the base-colour factor's RGB, `d` its alpha,
//!   `map_Kd` the texture file when the material has a base-colour texture
//!   embedded as PNG or JPEG on `TEXCOORD_0` (others are left out: `Kd`
//!   alone).
//! - `texture_<n>.png|jpg`: glTF image `n`, byte for byte.
//!
//! An untextured model gives `model.obj` and `model.mtl` (with `Kd`, no
//! `map_Kd`) and no image. What is converted is [`read_glb`]'s flat mesh:
//! node transforms applied, the default scene only.
//!
//! [`ModelFormat::ObjZip`]: super::ModelFormat::ObjZip
//! [`read_glb`]: super::read_glb

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;

use super::GltfError;
use super::reader::{GlbParts, read_glb_parts};

/// The OBJ's file name in the package.
pub const OBJ_NAME: &str = "model.obj";
/// The MTL's file name in the package.
pub const MTL_NAME: &str = "model.mtl";

/// An OBJ, its MTL and its textures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjPackage {
    /// `model.obj`.
    pub obj: String,
    /// `model.mtl`.
    pub mtl: String,
    /// Texture files: name and bytes.
    pub textures: Vec<(String, Vec<u8>)>,
}

fn material_name(material: Option<usize>) -> String {
    material.map_or_else(|| "default".to_owned(), |n| format!("material_{n}"))
}

/// Reads a GLB into an [`ObjPackage`] (see the module doc).
///
/// # Errors
/// Whatever [`read_glb`](super::read_glb) reports, and malformed embedded
/// images (out of bounds, bad base64).
pub fn glb_to_obj_package(glb: &[u8]) -> Result<ObjPackage, GltfError> {
    let parts = read_glb_parts(glb)?;
    Ok(package(&parts))
}

fn package(parts: &GlbParts) -> ObjPackage {
    let mesh = &parts.mesh;
    let mut obj = String::with_capacity(mesh.positions.len() * 90 + mesh.indices.len() * 16);
    // Writing to a String cannot fail.
    let _ = writeln!(
        obj,
        "# image2model OBJ: {} vertices, {} faces",
        mesh.positions.len(),
        mesh.triangle_count()
    );
    let _ = writeln!(obj, "mtllib {MTL_NAME}");
    for (i, [x, y, z]) in mesh.positions.iter().enumerate() {
        let _ = write!(obj, "v {x} {y} {z}");
        if let Some(c) = mesh.colors.as_ref().and_then(|c| c.get(i)) {
            let [r, g, b] = [c[0], c[1], c[2]].map(|v| f32::from(v) / 255.0);
            let _ = write!(obj, " {r} {g} {b}");
        }
        obj.push('\n');
    }
    if let Some(uvs) = &parts.uvs {
        for [u, v] in uvs {
            let _ = writeln!(obj, "vt {u} {}", 1.0 - v);
        }
    }
    if let Some(normals) = &mesh.normals {
        for [x, y, z] in normals {
            let _ = writeln!(obj, "vn {x} {y} {z}");
        }
    }
    let corner = |i: u32| match (parts.uvs.is_some(), mesh.normals.is_some()) {
        (true, true) => format!("{i}/{i}/{i}"),
        (true, false) => format!("{i}/{i}"),
        (false, true) => format!("{i}//{i}"),
        (false, false) => i.to_string(),
    };
    let mut used = BTreeSet::new();
    let mut current = None;
    let triangles: Vec<[u32; 3]> = mesh.triangles().collect();
    // Groups without a triangle write nothing: so `usemtl` lines are bounded
    // by the faces, however many empty primitives a file instances.
    for group in parts.groups.iter().filter(|g| g.triangles > 0) {
        if current != Some(group.material) {
            let _ = writeln!(obj, "usemtl {}", material_name(group.material));
            current = Some(group.material);
        }
        used.insert(group.material);
        let end = (group.first_triangle + group.triangles).min(triangles.len());
        for [a, b, c] in triangles.get(group.first_triangle..end).unwrap_or(&[]) {
            let _ = writeln!(
                obj,
                "f {} {} {}",
                corner(a + 1),
                corner(b + 1),
                corner(c + 1)
            );
        }
    }

    let mut mtl = String::from("# image2model MTL\n");
    let mut images = BTreeSet::new();
    for material in used {
        let base = material.and_then(|n| parts.materials.get(n));
        let factor = base.map_or([1.0; 4], |m| m.factor);
        let _ = writeln!(mtl, "\nnewmtl {}", material_name(material));
        if let Some(name) = base.and_then(|m| m.name.as_deref()) {
            // The glTF name, for people; control characters dropped.
            let name: String = name.chars().filter(|c| !c.is_control()).collect();
            let _ = writeln!(mtl, "# {name}");
        }
        let _ = writeln!(mtl, "Ka 0 0 0");
        let _ = writeln!(mtl, "Kd {} {} {}", factor[0], factor[1], factor[2]);
        let _ = writeln!(mtl, "Ks 0 0 0");
        let _ = writeln!(mtl, "d {}", factor[3]);
        let _ = writeln!(mtl, "illum 1");
        let texture = base
            .and_then(|m| m.image)
            .and_then(|n| Some((n, parts.images.get(n)?.as_ref()?)));
        if let Some((n, image)) = texture {
            let _ = writeln!(mtl, "map_Kd texture_{n}.{}", image.extension);
            images.insert(n);
        }
    }
    let textures = images
        .into_iter()
        .filter_map(|n| {
            let image = parts.images.get(n)?.as_ref()?;
            Some((
                format!("texture_{n}.{}", image.extension),
                image.bytes.clone(),
            ))
        })
        .collect();
    ObjPackage { obj, mtl, textures }
}

impl ObjPackage {
    /// The package as a zip: `model.obj` and `model.mtl` deflated, the
    /// textures stored as they are (already compressed).
    ///
    /// # Errors
    /// [`GltfError::InvalidMesh`] if the zip cannot be written (it is
    /// written to memory, so only beyond zip's own limits).
    pub fn to_zip(&self) -> Result<Vec<u8>, GltfError> {
        use zip::CompressionMethod;
        use zip::write::SimpleFileOptions;

        let zip_error = |e: &dyn std::fmt::Display| GltfError::InvalidMesh(format!("zip: {e}"));
        let size = self.obj.len() / 3
            + self.mtl.len()
            + self.textures.iter().map(|(_, b)| b.len()).sum::<usize>()
            + 512;
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::with_capacity(size)));
        let text = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .unix_permissions(0o644);
        let stored = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Stored)
            .unix_permissions(0o644);
        for (name, bytes, options) in [
            (OBJ_NAME, self.obj.as_bytes(), text),
            (MTL_NAME, self.mtl.as_bytes(), text),
        ]
        .into_iter()
        .chain(
            self.textures
                .iter()
                .map(|(name, bytes)| (name.as_str(), bytes.as_slice(), stored)),
        ) {
            zip.start_file(name, options).map_err(|e| zip_error(&e))?;
            zip.write_all(bytes).map_err(|e| zip_error(&e))?;
        }
        Ok(zip.finish().map_err(|e| zip_error(&e))?.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gltf::{Mesh, write_glb};

    #[test]
    fn an_untextured_model_has_an_mtl_with_kd_and_no_map() {
        let mesh = Mesh {
            positions: vec![[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
            normals: Some(vec![[0.0, 0.0, 1.0]; 3]),
            colors: None,
            indices: vec![0, 1, 2],
        };

        let package = glb_to_obj_package(&write_glb(&mesh).unwrap()).unwrap();

        assert!(
            package.obj.contains("mtllib model.mtl\n"),
            "{}",
            package.obj
        );
        assert!(
            package
                .obj
                .contains("usemtl material_0\nf 1//1 2//2 3//3\n"),
            "{}",
            package.obj
        );
        assert!(!package.obj.contains("vt "));
        assert!(
            package.mtl.contains("newmtl material_0\n# image2model\n"),
            "{}",
            package.mtl
        );
        assert!(package.mtl.contains("Kd 1 1 1\n"));
        assert!(!package.mtl.contains("map_Kd"));
        assert!(package.textures.is_empty());
    }

    #[test]
    fn each_primitive_gets_its_material_kd_and_d_from_the_factor_or_the_default() {
        let glb = crate::gltf::reader::tests::glb_with(|doc| {
            doc["materials"] = serde_json::json!([{
                "pbrMetallicRoughness": { "baseColorFactor": [0.5, 0.25, 1.0, 0.75] }
            }]);
            doc["meshes"][0]["primitives"][1]["material"] = serde_json::json!(0);
        });

        let package = glb_to_obj_package(&glb).unwrap();

        let used: Vec<&str> = package
            .obj
            .lines()
            .filter(|l| l.starts_with("usemtl "))
            .collect();
        assert_eq!(used, ["usemtl default", "usemtl material_0"]);
        assert!(
            package
                .mtl
                .contains("newmtl default\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nd 1\n"),
            "{}",
            package.mtl
        );
        assert!(
            package
                .mtl
                .contains("newmtl material_0\nKa 0 0 0\nKd 0.5 0.25 1\nKs 0 0 0\nd 0.75\n"),
            "{}",
            package.mtl
        );
        // Vertex colours stay on the `v` lines, as in the plain OBJ.
        assert!(package.obj.contains("v 10 0 2 1 0 0\n"), "{}", package.obj);
    }

    #[test]
    fn a_textured_model_has_flipped_uvs_a_textured_material_and_its_image() {
        use crate::testing::fake_fal::{texture_png, textured_glb};

        let package = glb_to_obj_package(&textured_glb()).unwrap();

        // The first corner of the first face has glTF UV (0, 1): the
        // image's bottom-left, OBJ's origin.
        let first_vt = package.obj.lines().find(|l| l.starts_with("vt ")).unwrap();
        assert_eq!(first_vt, "vt 0 0");
        assert!(
            package
                .obj
                .contains("usemtl material_0\nf 1/1/1 2/2/2 3/3/3\n")
        );
        assert!(
            package.mtl.contains("newmtl material_0\n# quadrants\n"),
            "{}",
            package.mtl
        );
        assert!(package.mtl.contains("map_Kd texture_0.png\n"));
        assert_eq!(
            package.textures,
            [("texture_0.png".to_owned(), texture_png())]
        );
    }

    #[test]
    fn the_zip_holds_the_files_by_name() {
        let package = ObjPackage {
            obj: "mtllib model.mtl\n".into(),
            mtl: "newmtl default\n".into(),
            textures: vec![("texture_0.png".into(), vec![1, 2, 3])],
        };

        let zip = package.to_zip().unwrap();
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).unwrap();

        let mut names: Vec<String> = archive
            .file_names()
            .map(|n| n.unwrap().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["model.mtl", "model.obj", "texture_0.png"]);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut archive.by_name("texture_0.png").unwrap(), &mut bytes)
            .unwrap();
        assert_eq!(bytes, [1, 2, 3]);
    }
}
