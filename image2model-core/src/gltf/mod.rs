//! Binary glTF: writing, reading and converting.
