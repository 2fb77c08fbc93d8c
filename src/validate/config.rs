//! The configuration a layer builds and its services share, and the two
//! modes a layer runs in.

use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroUsize;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use super::observe::Observer;
use super::violations::DEFAULT_MAX_ERRORS;

/// The default body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Whether members the target type does not declare are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnknownFields {
    /// Every unknown member is a 422 violation (code `unknown_field`), so a
    /// misspelt optional field is caught instead of silently ignored.
    #[default]
    Reject,
    /// Unknown members are ignored, as serde does by default. With
    /// `#[serde(deny_unknown_fields)]` on a body type, serde refuses the
    /// first unknown member of that type (a 422 at its pointer).
    ///
    /// Rejecting costs next to nothing on a body without unknown members:
    /// only a body that has some is parsed a second time, to list them.
    Allow,
}

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
    pub(crate) max_errors: NonZeroUsize,
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

impl Config {
    /// No required header, any content type, no `Accept` check, the default
    /// limits and no name.
    pub(crate) fn new() -> Self {
        Self {
            headers: Vec::new(),
            content_types: None,
            produces: None,
            limit: DEFAULT_BODY_LIMIT,
            unknown_fields: UnknownFields::default(),
            max_errors: DEFAULT_MAX_ERRORS,
            observer: Observer::unnamed(),
        }
    }
}

/// Lowercase essences (`type/subtype`) of `types`.
///
/// # Panics
///
/// If one is not a media type.
pub(crate) fn media_types<I, S>(types: I) -> Arc<[String]>
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
