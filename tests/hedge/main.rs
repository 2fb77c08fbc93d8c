//! hedge tests (in progress).
