//! retry tests (in progress).
