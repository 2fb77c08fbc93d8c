//! `palisade_validation_rejections_total` after a known sequence of
//! requests, read from a `DebuggingRecorder` installed for this thread only.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::{Full, Limited};
use palisade::validate::ValidateLayer;
use tower::{ServiceExt, service_fn};

use crate::common::*;
use crate::recording::record_metrics;

fn rejections(name: &str, status: u16) -> String {
    format!("palisade_validation_rejections_total{{name=\"{name}\",status=\"{status}\"}}")
}

#[test]
fn rejections_are_counted_by_name_and_status() {
    let ((), values) = record_metrics("palisade_validation", || async {
        let orders = ValidateLayer::new()
            .name("orders")
            .require_header(HeaderName::from_static("x-request-id"))
            .produces(["application/json"])
            .body_limit(1024)
            .json::<Order>();
        let send = |req| send_json(orders.clone(), req);
        let with_id = |body: &'static str| {
            let mut req = json_request(body);
            req.headers_mut()
                .insert("x-request-id", "r-1".parse().unwrap());
            req
        };

        // Accepted: not counted.
        assert_eq!(send(with_id(GOOD)).await.status, StatusCode::OK);
        // 400: a missing header, malformed JSON.
        assert_eq!(
            send(json_request(GOOD)).await.status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(send(with_id("{")).await.status, StatusCode::BAD_REQUEST);
        // 406.
        let mut req = with_id(GOOD);
        req.headers_mut()
            .insert(ACCEPT, "text/html".parse().unwrap());
        assert_eq!(send(req).await.status, StatusCode::NOT_ACCEPTABLE);
        // 415.
        let mut req = with_id(GOOD);
        req.headers_mut()
            .insert(CONTENT_TYPE, "text/plain".parse().unwrap());
        assert_eq!(send(req).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        // 413: by its length, and streamed past the limit without one.
        let mut req = with_id(GOOD);
        req.headers_mut()
            .insert("content-length", "4096".parse().unwrap());
        assert_eq!(send(req).await.status, StatusCode::PAYLOAD_TOO_LARGE);
        let mut req = Request::post("/")
            .header(CONTENT_TYPE, "application/json")
            .body(CountingBody {
                remaining: 4096,
                pulled: Arc::default(),
            })
            .unwrap();
        req.headers_mut()
            .insert("x-request-id", "r-2".parse().unwrap());
        let a = send_json(orders.clone(), req).await;
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
        // 422, twice.
        for body in [
            r#"{"customer": "", "items": []}"#,
            r#"{"customer": "ada", "items": [], "extra": 1}"#,
        ] {
            let a = send(with_id(body)).await;
            assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        }

        // An inner error is not a rejection.
        let failing = ValidateLayer::new()
            .name("orders")
            .json::<Order>()
            .layer_into(service_fn(|_: Request<Full<Bytes>>| async {
                Err::<Response<Full<Bytes>>, _>("inner")
            }));
        assert!(
            failing
                .oneshot(json_request(GOOD))
                .await
                .unwrap_err()
                .is_inner()
        );

        // Passthrough, unnamed: a 415.
        let uploads = ValidateLayer::new()
            .content_types(["image/png"])
            .layer_into(service_fn(|_: Request<Limited<Full<Bytes>>>| async {
                Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
            }));
        let err = uploads.oneshot(json_request(GOOD)).await.unwrap_err();
        assert!(!err.is_inner());
    });

    let expected = BTreeMap::from([
        (rejections("orders", 400), 2.0),
        (rejections("orders", 406), 1.0),
        (rejections("orders", 413), 2.0),
        (rejections("orders", 415), 1.0),
        (rejections("orders", 422), 2.0),
        (rejections("default", 415), 1.0),
    ]);
    assert_eq!(values, expected);
}

trait LayerInto: Sized {
    fn layer_into<S>(self, inner: S) -> <Self as tower::Layer<S>>::Service
    where
        Self: tower::Layer<S>,
    {
        tower::Layer::layer(&self, inner)
    }
}
impl<M> LayerInto for ValidateLayer<M> {}
