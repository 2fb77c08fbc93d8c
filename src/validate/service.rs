//! The service: the checks before the body, then the body.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Request};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use tower_service::Service;

use super::config::{Config, Json, Passthrough};
use super::error::Error;
use super::extract::{RawBody, Validated};
use super::future::{JsonFuture, ResponseFuture};
use super::json;
use super::violations::{Invalid, Validate, Violation, Violations};
use crate::BoxError;

/// The service of [`ValidateLayer`](super::ValidateLayer).
///
/// Other layers name their service after the layer (`RateLimitLayer`,
/// `RateLimit<S>`); here [`Validate`](super::Validate) is the trait every
/// body type implements, so the service is `ValidateRequest`, as in
/// tower-http's `ValidateRequestHeader`.
///
/// See the [module docs](super) for an example.
pub struct ValidateRequest<S, M = Passthrough> {
    inner: S,
    config: Arc<Config>,
    _mode: PhantomData<M>,
}

impl<S, M> ValidateRequest<S, M> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self {
            inner,
            config,
            _mode: PhantomData,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, M> Clone for ValidateRequest<S, M> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.config.clone())
    }
}

impl<S: fmt::Debug, M> fmt::Debug for ValidateRequest<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidateRequest")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

/// The checks made before the body is read, cheapest first.
fn precheck<B: Body, E>(
    config: &Config,
    req: &Request<B>,
    body_required: bool,
) -> Result<(), Error<E>> {
    let headers = req.headers();
    if !config.headers.is_empty() {
        check_headers(config, headers)?;
    }
    if let Some(produces) = &config.produces
        && !acceptable(headers, produces)
    {
        return Err(Error::NotAcceptable {
            produces: produces.clone(),
        });
    }
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(accepted) = &config.content_types {
        let may_have_body = length != Some(0) && req.body().size_hint().upper() != Some(0);
        if (body_required || may_have_body) && !content_type_ok(headers, accepted) {
            return Err(Error::UnsupportedMediaType {
                accepted: accepted.clone(),
            });
        }
    }
    let limit = config.limit as u64;
    if length.is_some_and(|n| n > limit) || req.body().size_hint().lower() > limit {
        return Err(Error::TooLarge {
            limit: config.limit,
        });
    }
    Ok(())
}

fn check_headers<E>(config: &Config, headers: &HeaderMap) -> Result<(), Error<E>> {
    let mut violations = Violations::with_max(config.max_errors);
    for rule in &config.headers {
        let mut values = headers.get_all(&rule.name).iter().peekable();
        if values.peek().is_none() {
            violations.push(Violation::at_header(
                rule.name.clone(),
                Invalid::new("required", "is required"),
            ));
        } else if let Some(check) = &rule.check
            && !values.all(|v| check(v))
        {
            violations.push(Violation::at_header(
                rule.name.clone(),
                Invalid::new("format", "is invalid"),
            ));
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(Error::Headers(violations))
    }
}

fn content_type_ok(headers: &HeaderMap, accepted: &[String]) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return false;
    };
    // A bare `application/json` is its own essence: no need to parse it
    // (which allocates). Anything else, parameters included, goes through
    // `mime`, so both ways accept the same values.
    let bytes = value.as_bytes();
    if accepted
        .iter()
        .any(|a| a.as_bytes().eq_ignore_ascii_case(bytes))
    {
        return true;
    }
    let Some(mime) = value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<mime::Mime>().ok())
    else {
        return false;
    };
    let essence = mime.essence_str();
    accepted.iter().any(|a| a.eq_ignore_ascii_case(essence))
}

/// Whether `Accept` admits one of `produces` (RFC 9110, section 12.5.1). No
/// `Accept`, or one with no parseable media range, admits anything.
fn acceptable(headers: &HeaderMap, produces: &[String]) -> bool {
    let mut any_range = false;
    for value in headers.get_all(ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let Ok(range) = item.trim().parse::<mime::Mime>() else {
                continue;
            };
            any_range = true;
            let q = range
                .get_param("q")
                .and_then(|q| q.as_str().parse::<f32>().ok());
            if q == Some(0.0) {
                continue;
            }
            let (ty, sub) = (range.type_().as_str(), range.subtype().as_str());
            let hit = produces.iter().any(|p| {
                let (p_ty, p_sub) = p.split_once('/').unwrap_or((p, ""));
                (ty == "*" && sub == "*")
                    || (ty.eq_ignore_ascii_case(p_ty)
                        && (sub == "*" || sub.eq_ignore_ascii_case(p_sub)))
            });
            if hit {
                return true;
            }
        }
    }
    !any_range
}

impl<S, B> Service<Request<B>> for ValidateRequest<S, Passthrough>
where
    S: Service<Request<Limited<B>>>,
    B: Body,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Err(error) = precheck(&self.config, &req, false) {
            self.config.observer.rejected(&error);
            return ResponseFuture::rejected(error);
        }
        // A body that crosses the limit while the inner service streams it
        // fails there, as a `LengthLimitError`, not as a rejection here.
        self.config.observer.accepted();
        let limit = self.config.limit;
        ResponseFuture::inner(self.inner.call(req.map(|body| Limited::new(body, limit))))
    }
}

impl<S, B, T> Service<Request<B>> for ValidateRequest<S, Json<T>>
where
    S: Service<Request<Full<Bytes>>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    S::Response: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    T: DeserializeOwned + Validate + Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = JsonFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Inner)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Err(error) = precheck(&self.config, &req, true) {
            self.config.observer.rejected(&error);
            return Box::pin(std::future::ready(Err(error)));
        }
        // The readied service goes with this request; a clone stays behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            // Limited errors as soon as a frame crosses the limit, so no more
            // than the limit (plus that one frame) is ever held.
            let bytes = match Limited::new(body, config.limit).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    let error = if error.is::<LengthLimitError>() {
                        Error::TooLarge {
                            limit: config.limit,
                        }
                    } else {
                        Error::Body(error)
                    };
                    config.observer.rejected(&error);
                    return Err(error);
                }
            };
            let value: T = json::parse(&bytes, config.unknown_fields, config.max_errors)
                .inspect_err(|error: &Error<S::Error>| config.observer.rejected(error))?;
            config.observer.accepted();
            parts.extensions.insert(Validated(value));
            parts.extensions.insert(RawBody(bytes.clone()));
            inner
                .call(Request::from_parts(parts, Full::new(bytes)))
                .await
                .map_err(Error::Inner)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn accept(value: &'static str, produces: &[&str]) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(value));
        let produces: Vec<String> = produces.iter().map(|s| (*s).to_owned()).collect();
        acceptable(&headers, &produces)
    }

    #[test]
    fn accept_matches_ranges_and_honours_q_zero() {
        assert!(accept("application/json", &["application/json"]));
        assert!(accept(
            "text/html, application/*;q=0.5",
            &["application/json"]
        ));
        assert!(accept("*/*", &["application/json"]));
        assert!(!accept("text/html", &["application/json"]));
        assert!(!accept("application/json;q=0", &["application/json"]));
        assert!(!accept("application/xml, text/*", &["application/json"]));
        assert!(accept("not a media type", &["application/json"]));
    }
}
