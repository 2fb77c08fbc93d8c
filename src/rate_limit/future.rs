//! The response future of [`RateLimit`](super::RateLimit).

use std::future::Future;
use std::pin::Pin;

use super::Error;

/// Response future of [`RateLimit`](super::RateLimit): the store decision,
/// then the inner call.
pub type ResponseFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, Error<E>>> + Send + 'static>>;
