//! The flat triangle mesh the writer takes and the reader returns.

use super::GltfError;

/// A flat, indexed triangle mesh.
///
/// Attribute vectors (`normals`, `colors`) have one entry per position;
/// `indices` holds three vertex indices per triangle, counter-clockwise when
/// seen from outside (glTF's front face).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mesh {
    /// Vertex positions (glTF: metres, +Y up).
    pub positions: Vec<[f32; 3]>,
    /// Unit vertex normals, if any.
    pub normals: Option<Vec<[f32; 3]>>,
    /// Vertex colours, sRGB RGBA, if any.
    pub colors: Option<Vec<[u8; 4]>>,
    /// Three indices per triangle.
    pub indices: Vec<u32>,
}

impl Mesh {
    /// The number of triangles.
    #[must_use]
    pub fn triangle_count(&self) -> usize {
        self.indices.len() / 3
    }

    /// The triangles as index triples.
    pub fn triangles(&self) -> impl Iterator<Item = [u32; 3]> + '_ {
        self.indices.chunks_exact(3).map(|t| [t[0], t[1], t[2]])
    }

    /// The axis-aligned bounds `(min, max)`, or `None` without positions.
    #[must_use]
    pub fn bounds(&self) -> Option<([f32; 3], [f32; 3])> {
        let first = *self.positions.first()?;
        Some(
            self.positions
                .iter()
                .fold((first, first), |(mut lo, mut hi), p| {
                    for k in 0..3 {
                        lo[k] = lo[k].min(p[k]);
                        hi[k] = hi[k].max(p[k]);
                    }
                    (lo, hi)
                }),
        )
    }

    /// Checks that the mesh is consistent: indices come in threes and are in
    /// range, attributes have one entry per position, positions are finite.
    ///
    /// # Errors
    /// [`GltfError::InvalidMesh`] naming the first problem.
    pub fn check(&self) -> Result<(), GltfError> {
        let n = self.positions.len();
        if !self.indices.len().is_multiple_of(3) {
            return Err(GltfError::InvalidMesh(format!(
                "{} indices is not a multiple of 3",
                self.indices.len()
            )));
        }
        if u32::try_from(n).is_err() {
            return Err(GltfError::InvalidMesh(format!("{n} vertices is too many")));
        }
        if let Some(i) = self.indices.iter().find(|&&i| i as usize >= n) {
            return Err(GltfError::InvalidMesh(format!(
                "index {i} out of range for {n} vertices"
            )));
        }
        if let Some(c) = &self.colors
            && c.len() != n
        {
            return Err(GltfError::InvalidMesh(format!(
                "{} colours for {n} vertices",
                c.len()
            )));
        }
        if let Some(v) = &self.normals
            && v.len() != n
        {
            return Err(GltfError::InvalidMesh(format!(
                "{} normals for {n} vertices",
                v.len()
            )));
        }
        if self.positions.iter().flatten().any(|c| !c.is_finite()) {
            return Err(GltfError::InvalidMesh("non-finite position".to_owned()));
        }
        Ok(())
    }
}
