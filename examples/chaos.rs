//! Chaos traffic for the order API demo (being written).

fn main() {}
