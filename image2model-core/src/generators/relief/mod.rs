//! The offline relief generator.
