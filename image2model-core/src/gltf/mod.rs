//! Binary glTF (GLB): writing, reading and converting.
//!
//! - [`writer`]: builds a valid glTF 2.0 binary from a [`Mesh`] by hand
//!   (positions with the min/max the specification requires, optional vertex
//!   colours and normals, `u16` or `u32` indices, one mesh, node and scene).
//! - [`reader`]: parses any GLB into a flat triangle [`Mesh`]: every triangle
//!   primitive of every node of the default scene, with node transforms applied.
//!   Every malformed input is an error ([`GltfError`]), never a panic.
//! - [`convert`](mod@convert): GLB → OBJ text, GLB → binary STL and GLB →
//!   OBJ with its material and textures, zipped ([`ModelFormat`],
//!   [`obj_package`]).
//! - `inspect`: a streaming GLB header validator ([`inspect_glb_stream`]).
//!
//! ```
//! use image2model_core::gltf::{Mesh, read_glb, write_glb};
//!
//! let mesh = Mesh {
//!     positions: vec![[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
//!     normals: None,
//!     colors: Some(vec![[255, 0, 0, 255]; 3]),
//!     indices: vec![0, 1, 2],
//! };
//! let glb = write_glb(&mesh)?;
//! assert_eq!(read_glb(&glb)?, mesh);
//! # Ok::<(), image2model_core::gltf::GltfError>(())
//! ```

pub mod convert;
mod error;
mod inspect;
mod mesh;
pub mod obj_package;
pub mod reader;
pub mod writer;

pub use convert::{ModelFormat, convert, mesh_to_obj, mesh_to_stl};
pub use error::GltfError;
pub use inspect::{GlbInspector, GlbVerdict, inspect_glb_stream};
pub use mesh::Mesh;
pub use obj_package::{ObjPackage, glb_to_obj_package};
pub use reader::read_glb;
pub use writer::write_glb;
