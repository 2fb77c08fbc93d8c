//! Placeholder until the rate_limit layer lands.
fn main() {}
