//! Placeholder until the timeout layer lands.
fn main() {}
