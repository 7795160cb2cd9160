//! Binary glTF: writing, reading and converting.

mod inspect;

pub use inspect::{GlbInspector, GlbVerdict, inspect_glb_stream};
