//! The layer and its setters.

use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use tower_layer::Layer;

use super::config::{Config, HeaderRule, Json, Passthrough, UnknownFields, media_types};
use super::error::Error;
use super::json;
use super::observe::Observer;
use super::service::ValidateRequest;
use super::violations::Validate;

/// Validates requests before the inner service sees them.
///
/// [`ValidateLayer::new`] checks headers, media types and the body size and
/// passes the body on; [`json`](Self::json) also parses it into a `T` and
/// validates it. See the [module docs](super) for an example.
pub struct ValidateLayer<M = Passthrough> {
    config: Arc<Config>,
    _mode: PhantomData<M>,
}

impl<M> fmt::Debug for ValidateLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidateLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl<M> Clone for ValidateLayer<M> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            _mode: PhantomData,
        }
    }
}

impl Default for ValidateLayer<Passthrough> {
    fn default() -> Self {
        Self::new()
    }
}

impl ValidateLayer<Passthrough> {
    /// A layer with no required header, any content type, no `Accept` check
    /// and a body limit of [`DEFAULT_BODY_LIMIT`](super::DEFAULT_BODY_LIMIT).
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config::new()),
            _mode: PhantomData,
        }
    }
}

impl<M> ValidateLayer<M> {
    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Parses the body as JSON into a `T` and validates it: the inner service
    /// gets the request with a [`Validated<T>`](super::Validated) and a
    /// [`RawBody`](super::RawBody) in its extensions and the same bytes as
    /// its body. The content type must be `application/json` unless
    /// [`content_types`](Self::content_types) says otherwise.
    ///
    /// The service needs `T: Clone + Send + Sync + 'static`, as request
    /// extensions do; handlers take the value out without cloning it.
    pub fn json<T>(mut self) -> ValidateLayer<Json<T>>
    where
        T: DeserializeOwned + Validate,
    {
        if self.config.content_types.is_none() {
            self.config().content_types = Some(Arc::from(["application/json".to_owned()]));
        }
        ValidateLayer {
            config: self.config,
            _mode: PhantomData,
        }
    }

    /// Requires header `name` (400 when missing).
    #[must_use]
    pub fn require_header(mut self, name: HeaderName) -> Self {
        self.config().headers.push(HeaderRule { name, check: None });
        self
    }

    /// Requires header `name` with every value passing `check` (400 when
    /// missing, or with code `format` when a value fails).
    #[must_use]
    pub fn require_header_with<F>(mut self, name: HeaderName, check: F) -> Self
    where
        F: Fn(&HeaderValue) -> bool + Send + Sync + 'static,
    {
        self.config().headers.push(HeaderRule {
            name,
            check: Some(Arc::new(check)),
        });
        self
    }

    /// The media types a request body may have (415 otherwise), compared
    /// without parameters such as `charset`.
    ///
    /// # Panics
    ///
    /// If one is not a media type (`type/subtype`).
    #[must_use]
    pub fn content_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.config().content_types = Some(media_types(types));
        self
    }

    /// The media types the route produces: a request whose `Accept` admits
    /// none of them gets 406. Without it, `Accept` is not checked.
    ///
    /// # Panics
    ///
    /// If one is not a media type (`type/subtype`).
    #[must_use]
    pub fn produces<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.config().produces = Some(media_types(types));
        self
    }

    /// The largest body accepted, in bytes (413 beyond). A `Content-Length`
    /// over it is refused before reading; a body without one is cut off as
    /// soon as it crosses it.
    #[must_use]
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.config().limit = bytes;
        self
    }

    /// Whether JSON members the target type does not declare are rejected
    /// (the default) or ignored.
    #[must_use]
    pub fn unknown_fields(mut self, policy: UnknownFields) -> Self {
        self.config().unknown_fields = policy;
        self
    }

    /// Names this layer in its metrics (the `name` label) and tracing
    /// events (the `name` field), such as the route it guards; the default
    /// is [`DEFAULT_NAME`](crate::observability::DEFAULT_NAME). See
    /// [`crate::observability`].
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.config().observer = Observer::new(name.into());
        self
    }

    /// How many violations a 422 lists at most (default
    /// [`DEFAULT_MAX_ERRORS`](super::DEFAULT_MAX_ERRORS)); the rest are counted in its `detail`.
    #[must_use]
    pub fn max_errors(mut self, max: NonZeroUsize) -> Self {
        self.config().max_errors = max;
        self
    }
}

impl<T> ValidateLayer<Json<T>>
where
    T: DeserializeOwned + Validate,
{
    /// Parses and validates a body as the service does, without a request:
    /// for tests, benches, or bodies that arrive by another route.
    pub fn parse(&self, body: &[u8]) -> Result<T, Error<std::convert::Infallible>> {
        json::parse(body, self.config.unknown_fields, self.config.max_errors)
    }
}

impl<S, M> Layer<S> for ValidateLayer<M> {
    type Service = ValidateRequest<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        ValidateRequest::new(inner, self.config.clone())
    }
}
