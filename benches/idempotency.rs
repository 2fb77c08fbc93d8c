//! Placeholder until the idempotency layer lands.
fn main() {}
