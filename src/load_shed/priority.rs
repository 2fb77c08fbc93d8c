//! How important a request is: the class a saturated gate sheds last.

/// A request's priority class. Under saturation, a gate sheds the lowest
/// class first: a queued `Sheddable` request gives its place to a `Normal`
/// or `Critical` one, and the queue serves `Critical` before `Normal` before
/// `Sheddable`. `NeverShed` requests (health checks, admin routes) pass
/// every limit and every queue, uncounted.
///
/// The classes follow Google's request criticality (SRE book, "Handling
/// Overload"): few classes, each with a meaning a caller can choose by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[non_exhaustive]
pub enum Priority {
    /// Work that may be dropped first: prefetches, batch jobs, retries of
    /// background tasks.
    Sheddable,
    /// Ordinary traffic (the default).
    #[default]
    Normal,
    /// Traffic a user waits on and that loses money or data when dropped.
    Critical,
    /// Never shed, never queued, never counted: health checks, admin and
    /// metrics routes, whose answer an operator needs most when the service
    /// is overloaded.
    NeverShed,
}

impl Priority {
    /// The label value in metrics and the field in tracing events.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sheddable => "sheddable",
            Self::Normal => "normal",
            Self::Critical => "critical",
            Self::NeverShed => "never_shed",
        }
    }

    /// Reads a class from its [`as_str`](Self::as_str) name, as a header
    /// carries it; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim() {
            n if n.eq_ignore_ascii_case("sheddable") => Some(Self::Sheddable),
            n if n.eq_ignore_ascii_case("normal") => Some(Self::Normal),
            n if n.eq_ignore_ascii_case("critical") => Some(Self::Critical),
            _ => None,
        }
    }
}

/// Reads a request's [`Priority`]. Any `Fn(&Req) -> Priority` closure is
/// one; [`Uniform`] (the default) gives every request [`Priority::Normal`].
pub trait PriorityExtractor<Req>: Clone + Send + Sync + 'static {
    /// The priority of `req`.
    fn priority(&self, req: &Req) -> Priority;
}

impl<Req, F> PriorityExtractor<Req> for F
where
    F: Fn(&Req) -> Priority + Clone + Send + Sync + 'static,
{
    fn priority(&self, req: &Req) -> Priority {
        self(req)
    }
}

/// Every request is [`Priority::Normal`]: the default extractor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Uniform;

impl<Req> PriorityExtractor<Req> for Uniform {
    fn priority(&self, _: &Req) -> Priority {
        Priority::Normal
    }
}

#[cfg(feature = "http")]
pub use self::http_priority::PriorityHeader;

#[cfg(feature = "http")]
mod http_priority {
    use http::{HeaderName, Request};

    use super::{Priority, PriorityExtractor};

    /// Reads the class from a request header (`sheddable`, `normal` or
    /// `critical`, any case), and marks paths that are never shed.
    ///
    /// A missing or unknown value is [`Priority::Normal`]: a client cannot
    /// raise itself to `NeverShed` by header, only a path can be.
    ///
    /// ```
    /// use palisade::load_shed::{Priority, PriorityExtractor, PriorityHeader};
    ///
    /// let priority = PriorityHeader::new(http::HeaderName::from_static("x-priority"))
    ///     .never_shed(["/health", "/admin/"]);
    /// let req = http::Request::get("/orders").header("x-priority", "sheddable").body(()).unwrap();
    /// assert_eq!(priority.priority(&req), Priority::Sheddable);
    /// let health = http::Request::get("/health").body(()).unwrap();
    /// assert_eq!(priority.priority(&health), Priority::NeverShed);
    /// ```
    #[derive(Debug, Clone)]
    pub struct PriorityHeader {
        name: HeaderName,
        never_shed: Vec<String>,
    }

    impl PriorityHeader {
        /// Reads the class from the header `name`.
        pub fn new(name: HeaderName) -> Self {
            Self {
                name,
                never_shed: Vec::new(),
            }
        }

        /// Marks these paths [`Priority::NeverShed`]: a path equal to one
        /// of them, or under one that ends with `/`.
        #[must_use]
        pub fn never_shed<I, P>(mut self, paths: I) -> Self
        where
            I: IntoIterator<Item = P>,
            P: Into<String>,
        {
            self.never_shed.extend(paths.into_iter().map(Into::into));
            self
        }
    }

    impl<B> PriorityExtractor<Request<B>> for PriorityHeader {
        fn priority(&self, req: &Request<B>) -> Priority {
            let path = req.uri().path();
            let exempt = self.never_shed.iter().any(|p| {
                if p.ends_with('/') {
                    path.starts_with(p.as_str())
                } else {
                    path == p
                }
            });
            if exempt {
                return Priority::NeverShed;
            }
            req.headers()
                .get(&self.name)
                .and_then(|v| v.to_str().ok())
                .and_then(Priority::from_name)
                .unwrap_or(Priority::Normal)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_ordered_from_first_shed_to_never_shed() {
        assert!(Priority::Sheddable < Priority::Normal);
        assert!(Priority::Normal < Priority::Critical);
        assert!(Priority::Critical < Priority::NeverShed);
    }

    #[cfg(feature = "http")]
    proptest::proptest! {
        /// Any bytes in the header, on any path but a never-shed one: a
        /// class a client may ask for, never `NeverShed`, and no panic.
        #[test]
        fn hostile_header_bytes_never_reach_never_shed(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let extractor = PriorityHeader::new(http::HeaderName::from_static("x-priority"))
                .never_shed(["/health"]);
            let mut req = http::Request::get("/orders").body(()).unwrap();
            if let Ok(value) = http::HeaderValue::from_bytes(&bytes) {
                req.headers_mut().insert("x-priority", value);
            }
            proptest::prop_assert_ne!(extractor.priority(&req), Priority::NeverShed);
        }
    }

    #[test]
    fn a_header_cannot_claim_never_shed() {
        assert_eq!(Priority::from_name("never_shed"), None);
        assert_eq!(Priority::from_name(" CRITICAL "), Some(Priority::Critical));
    }
}
