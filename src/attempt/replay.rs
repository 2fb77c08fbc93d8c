//! Requests that can be sent more than once.

/// A request that can be sent again: what a retry or a hedge needs from its
/// request type.
///
/// [`replay`](Self::replay) returns a copy to send, or `None` when the request
/// must not be sent twice (an HTTP `POST` without an `Idempotency-Key`) or
/// cannot be (a streaming body, read once). A `None` is never an error: the
/// first attempt's answer is returned as it is.
///
/// With feature `http` it is implemented for `http::Request<B>` whose body is
/// a [`ReplayBody`]. For a request type of your own:
///
/// ```
/// use palisade::attempt::Replay;
///
/// #[derive(Clone)]
/// struct GetUser { id: u64 }
///
/// impl Replay for GetUser {
///     fn replay(&self) -> Option<Self> {
///         Some(self.clone()) // a read: always safe to repeat
///     }
/// }
/// # assert_eq!(GetUser { id: 7 }.replay().unwrap().id, 7);
/// ```
pub trait Replay: Sized {
    /// A copy of the request to send again, or `None` when it must not or
    /// cannot be sent again.
    fn replay(&self) -> Option<Self>;
}

#[cfg(feature = "http")]
pub use self::http_impl::{IDEMPOTENCY_KEY, ReplayBody, is_idempotent};

#[cfg(feature = "http")]
mod http_impl {
    use bytes::{Buf, Bytes};
    use http::{HeaderName, Method, Request};
    use http_body_util::{Empty, Full};

    use super::Replay;

    /// The `Idempotency-Key` request header: a request that carries it may be
    /// repeated whatever its method, since the server runs one key once.
    pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

    /// Whether `method` is idempotent (RFC 9110, section 9.2.2): `GET`,
    /// `HEAD`, `OPTIONS`, `TRACE`, `PUT` and `DELETE`.
    pub fn is_idempotent(method: &Method) -> bool {
        matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        )
    }

    /// A request body that can be sent again: one held whole in memory.
    ///
    /// Implemented for `Full`, `Empty`, `Bytes`, `String`, `Vec<u8>` and
    /// `()`. A streaming body (hyper's `Incoming`, axum's `Body`, a boxed
    /// body) has none: it is read once, so a request carrying one is never
    /// retried nor hedged. Buffer it into `Full<Bytes>` first
    /// (`http_body_util::BodyExt::collect`) to make it replayable.
    pub trait ReplayBody: Sized {
        /// A copy of the body, or `None` when it cannot be read again.
        fn replay(&self) -> Option<Self>;
    }

    impl<D: Buf + Clone> ReplayBody for Full<D> {
        fn replay(&self) -> Option<Self> {
            Some(self.clone())
        }
    }

    impl<D> ReplayBody for Empty<D> {
        fn replay(&self) -> Option<Self> {
            Some(Empty::new())
        }
    }

    impl ReplayBody for Bytes {
        fn replay(&self) -> Option<Self> {
            Some(self.clone())
        }
    }

    impl ReplayBody for String {
        fn replay(&self) -> Option<Self> {
            Some(self.clone())
        }
    }

    impl ReplayBody for Vec<u8> {
        fn replay(&self) -> Option<Self> {
            Some(self.clone())
        }
    }

    impl ReplayBody for () {
        fn replay(&self) -> Option<Self> {
            Some(())
        }
    }

    /// An HTTP request is sent again only when that is safe: its method is
    /// idempotent ([`is_idempotent`]) or it carries an `Idempotency-Key`
    /// (set one with
    /// [`IdempotencyKeyLayer`](crate::idempotency::IdempotencyKeyLayer) above
    /// the retry), and its body is a [`ReplayBody`]. The copy has the same
    /// method, URI, version, headers, extensions and body.
    impl<B: ReplayBody> Replay for Request<B> {
        fn replay(&self) -> Option<Self> {
            if !is_idempotent(self.method()) && !self.headers().contains_key(IDEMPOTENCY_KEY) {
                return None;
            }
            let mut copy = Request::new(self.body().replay()?);
            *copy.method_mut() = self.method().clone();
            *copy.uri_mut() = self.uri().clone();
            *copy.version_mut() = self.version();
            *copy.headers_mut() = self.headers().clone();
            *copy.extensions_mut() = self.extensions().clone();
            Some(copy)
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_post_is_replayed_only_with_a_key() {
            let post = Request::post("/charges")
                .body(Full::new(Bytes::from("{}")))
                .unwrap();
            assert!(post.replay().is_none());
            let keyed = Request::post("/charges")
                .header(IDEMPOTENCY_KEY, "k1")
                .body(Full::new(Bytes::from("{}")))
                .unwrap();
            let copy = keyed.replay().unwrap();
            assert_eq!(copy.headers()[IDEMPOTENCY_KEY], "k1");
            assert_eq!(copy.method(), Method::POST);
            assert_eq!(copy.uri(), "/charges");
        }

        #[test]
        fn an_idempotent_method_keeps_its_extensions() {
            #[derive(Clone, PartialEq, Debug)]
            struct Tag(u8);
            let mut get = Request::get("/x").body(()).unwrap();
            get.extensions_mut().insert(Tag(3));
            assert_eq!(
                get.replay().unwrap().extensions().get::<Tag>(),
                Some(&Tag(3))
            );
            assert!(Request::patch("/x").body(()).unwrap().replay().is_none());
        }
    }
}
