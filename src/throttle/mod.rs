//! throttle (in progress).
