//! Bench package: see the `[[bench]]` targets.
