//! The `image2model` binary.
fn main() {}
