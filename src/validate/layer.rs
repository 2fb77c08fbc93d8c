use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde::de::DeserializeOwned;
use tower_layer::Layer;

use super::error::Error;
use super::json::{self, UnknownFields};
use super::observe::Observer;
use super::rules::{DEFAULT_MAX_VIOLATIONS, Validate};
use super::service::ValidateRequest;

/// The default body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Mode of a layer that checks headers and the body's size but hands the
/// body on unread (wrapped in [`http_body_util::Limited`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Passthrough;

/// Mode of a layer that parses the body as JSON into a `T` and validates it.
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> fmt::Debug for Json<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Json")
    }
}

impl<T> Clone for Json<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Json<T> {}

pub(crate) type HeaderCheck = Arc<dyn Fn(&HeaderValue) -> bool + Send + Sync>;

#[derive(Clone)]
pub(crate) struct HeaderRule {
    pub(crate) name: HeaderName,
    pub(crate) check: Option<HeaderCheck>,
}

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) headers: Vec<HeaderRule>,
    /// Lowercase essences (`type/subtype`); `None`: any (passthrough) or
    /// `application/json` (JSON).
    pub(crate) content_types: Option<Arc<[String]>>,
    pub(crate) produces: Option<Arc<[String]>>,
    pub(crate) limit: usize,
    pub(crate) unknown_fields: UnknownFields,
    pub(crate) max_errors: usize,
    pub(crate) observer: Arc<Observer>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<_> = self.headers.iter().map(|h| h.name.as_str()).collect();
        f.debug_struct("Config")
            .field("headers", &headers)
            .field("content_types", &self.content_types)
            .field("produces", &self.produces)
            .field("limit", &self.limit)
            .field("unknown_fields", &self.unknown_fields)
            .field("max_errors", &self.max_errors)
            .field("name", &self.observer.name())
            .finish()
    }
}

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

fn media_types<I, S>(types: I) -> Arc<[String]>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    types
        .into_iter()
        .map(|t| {
            let mime: mime::Mime = t
                .as_ref()
                .parse()
                .unwrap_or_else(|_| panic!("`{}` is not a media type", t.as_ref()));
            mime.essence_str().to_ascii_lowercase()
        })
        .collect()
}

impl ValidateLayer<Passthrough> {
    /// A layer with no required header, any content type, no `Accept` check
    /// and a body limit of [`DEFAULT_BODY_LIMIT`].
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                headers: Vec::new(),
                content_types: None,
                produces: None,
                limit: DEFAULT_BODY_LIMIT,
                unknown_fields: UnknownFields::default(),
                max_errors: DEFAULT_MAX_VIOLATIONS,
                observer: Observer::unnamed(),
            }),
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
    /// [`DEFAULT_MAX_VIOLATIONS`]); the rest are counted in its `detail`.
    #[must_use]
    pub fn max_errors(mut self, max: NonZeroUsize) -> Self {
        self.config().max_errors = max.get();
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
