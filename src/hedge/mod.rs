//! hedge (in progress).
