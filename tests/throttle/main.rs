//! throttle tests (in progress).
