//! Client side: key attachment and the retry policy.
