//! Benchmarks and the load harness for image2model (see docs/BENCHMARKS.md).
