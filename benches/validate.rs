//! Placeholder until the validate layer lands.
fn main() {}
