//! What the handler gets: the validated value and the raw bytes, in the
//! request extensions, and (with feature `axum`) their extractors.

use bytes::Bytes;

/// The parsed and validated body, in the request extensions.
///
/// The layer inserts it; handlers take it out (with feature `axum`, it is an
/// extractor: `Validated(order): Validated<Order>`). The raw bytes are in
/// [`RawBody`] and the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Validated<T>(pub T);

impl<T> Validated<T> {
    /// The value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Validated<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// The bytes of a validated JSON body, in the request extensions (for
/// signatures, fingerprints or logging without re-reading the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBody(pub Bytes);

#[cfg(all(feature = "axum", feature = "http"))]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
mod axum_impl {
    use axum_core::extract::FromRequestParts;
    use http::StatusCode;
    use http::request::Parts;

    use super::{RawBody, Validated};
    use crate::problem::{Problem, types};

    fn missing() -> Problem {
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR)
            .with_type(types::INTERNAL)
            .with_detail("request validation is not configured for this route")
    }

    impl<S, T> FromRequestParts<S> for Validated<T>
    where
        S: Send + Sync,
        T: Clone + Send + Sync + 'static,
    {
        type Rejection = Problem;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Self, Self::Rejection> {
            parts
                .extensions
                .remove::<Validated<T>>()
                .ok_or_else(missing)
        }
    }

    impl<S: Send + Sync> FromRequestParts<S> for RawBody {
        type Rejection = Problem;

        async fn from_request_parts(
            parts: &mut Parts,
            _state: &S,
        ) -> Result<Self, Self::Rejection> {
            parts
                .extensions
                .get::<RawBody>()
                .cloned()
                .ok_or_else(missing)
        }
    }
}
