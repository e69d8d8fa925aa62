//! End-to-end tests and benchmarks of hexidian live in `e2e/` and `benches/`.
