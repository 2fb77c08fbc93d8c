//! Keys that say whom a request comes from: the caller identity that rate
//! limits and idempotency keys are scoped by.
//!
//! A [`KeyExtractor`] reads a key from a request. Any
//! `Fn(&Req) -> Option<String>` closure is one.

/// Reads the key a request is counted or scoped under.
///
/// Returns `None` when the request carries no key; the layer then applies its
/// configured policy (reject, or fall back to another key).
pub trait KeyExtractor<Req>: Clone + Send + Sync + 'static {
    /// The key of `req`, or `None` when it has none.
    fn extract(&self, req: &Req) -> Option<String>;
}

impl<Req, F> KeyExtractor<Req> for F
where
    F: Fn(&Req) -> Option<String> + Clone + Send + Sync + 'static,
{
    fn extract(&self, req: &Req) -> Option<String> {
        self(req)
    }
}
