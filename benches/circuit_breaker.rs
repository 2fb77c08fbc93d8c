//! Placeholder until the circuit breaker lands.
fn main() {}
