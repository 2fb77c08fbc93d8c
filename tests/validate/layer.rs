//! Each status path with its exact problem body.

use std::convert::Infallible;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use palisade::problem::ProblemLayer;
use palisade::problem::types;
use palisade::validate::{Error, UnknownFields, ValidateLayer};
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt, service_fn};

use crate::common::*;

fn layer() -> ValidateLayer<palisade::validate::Json<Order>> {
    ValidateLayer::new().json::<Order>()
}

#[tokio::test]
async fn valid_body_reaches_the_handler_with_value_and_bytes() {
    let a = send_json(layer(), json_request(GOOD)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, json!({"items": 1}));
    // Neither case nor parameters such as charset matter; a value that is
    // not a media type is refused.
    for (content_type, status) in [
        ("Application/JSON; charset=utf-8", StatusCode::OK),
        ("APPLICATION/JSON", StatusCode::OK),
        ("application/jsonx", StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("application/json/x", StatusCode::UNSUPPORTED_MEDIA_TYPE),
    ] {
        let req = Request::post("/")
            .header(CONTENT_TYPE, content_type)
            .body(Full::<Bytes>::from(GOOD))
            .unwrap();
        assert_eq!(
            send_json(layer(), req).await.status,
            status,
            "{content_type}"
        );
    }
}

#[tokio::test]
async fn missing_and_malformed_headers_are_400_listing_each() {
    let request_id = HeaderName::from_static("x-request-id");
    let layer = layer()
        .require_header(request_id)
        .require_header_with(HeaderName::from_static("idempotency-key"), |v| v.len() >= 8);
    let req = Request::post("/")
        .header(CONTENT_TYPE, "application/json")
        .header("idempotency-key", "short")
        .body(Full::<Bytes>::from(GOOD))
        .unwrap();
    let a = send_json(layer.clone(), req).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.body,
        json!({
            "type": types::INVALID_HEADERS, "title": "Invalid headers", "status": 400,
            "detail": "2 invalid headers",
            "errors": [
                {"header": "x-request-id", "detail": "is required", "code": "required"},
                {"header": "idempotency-key", "detail": "is invalid", "code": "format"},
            ],
        })
    );
    assert_eq!(a.headers[CONTENT_TYPE], "application/problem+json");
    let req = Request::post("/")
        .header(CONTENT_TYPE, "application/json")
        .header("idempotency-key", "long-enough")
        .header("x-request-id", "1")
        .body(Full::<Bytes>::from(GOOD))
        .unwrap();
    assert_eq!(send_json(layer, req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn unacceptable_accept_is_406_when_the_layer_knows_what_it_produces() {
    let layer = layer().produces(["application/json"]);
    let req = |accept: &'static str| {
        Request::post("/")
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, accept)
            .body(Full::<Bytes>::from(GOOD))
            .unwrap()
    };
    let a = send_json(layer.clone(), req("text/html, application/xml;q=0.9")).await;
    assert_eq!(a.status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(
        a.body,
        json!({
            "type": types::NOT_ACCEPTABLE, "title": "Not acceptable", "status": 406,
            "detail": "the response can only be application/json",
            "produces": ["application/json"],
        })
    );
    assert_eq!(
        send_json(layer.clone(), req("application/json;q=0"))
            .await
            .status,
        StatusCode::NOT_ACCEPTABLE
    );
    for ok in ["application/json", "text/html, application/*;q=0.1", "*/*"] {
        assert_eq!(
            send_json(layer.clone(), req(ok)).await.status,
            StatusCode::OK,
            "{ok}"
        );
    }
    // Without `produces`, Accept is not checked.
    assert_eq!(
        send_json(self::layer(), req("text/html")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn wrong_or_missing_content_type_is_415_listing_accepted_types() {
    let expected = json!({
        "type": types::UNSUPPORTED_MEDIA_TYPE, "title": "Unsupported media type", "status": 415,
        "detail": "the content type must be application/json",
        "accepted": ["application/json"],
    });
    let req = Request::post("/")
        .header(CONTENT_TYPE, "text/plain")
        .body(Full::<Bytes>::from(GOOD))
        .unwrap();
    let a = send_json(layer(), req).await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(a.body, expected);
    assert_eq!(a.headers[ACCEPT], "application/json");
    let a = send_json(
        layer(),
        Request::post("/").body(Full::<Bytes>::from(GOOD)).unwrap(),
    )
    .await;
    assert_eq!(
        (a.status, a.body),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, expected)
    );

    let merge = layer().content_types(["application/json", "application/merge-patch+json"]);
    let req = Request::post("/")
        .header(CONTENT_TYPE, "application/merge-patch+json")
        .body(Full::<Bytes>::from(GOOD))
        .unwrap();
    assert_eq!(send_json(merge.clone(), req).await.status, StatusCode::OK);
    let req = Request::post("/")
        .header(CONTENT_TYPE, "application/xml")
        .body(Full::<Bytes>::from(GOOD))
        .unwrap();
    let a = send_json(merge, req).await;
    assert_eq!(
        a.body["detail"],
        "the content type must be application/json or application/merge-patch+json"
    );
    assert_eq!(
        a.headers[ACCEPT],
        "application/json, application/merge-patch+json"
    );
}

/// A body that must never be read.
struct Untouchable(Arc<AtomicUsize>);

impl http_body::Body for Untouchable {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b"{")))))
    }
}

#[tokio::test]
async fn content_length_over_the_limit_is_413_before_reading() {
    let polls = Arc::new(AtomicUsize::new(0));
    let req = Request::post("/")
        .header(CONTENT_TYPE, "application/json")
        .header("content-length", "1025")
        .body(Untouchable(polls.clone()))
        .unwrap();
    let a = send_json(layer().body_limit(1024), req).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        a.body,
        json!({
            "type": types::BODY_TOO_LARGE, "title": "Request body too large", "status": 413,
            "detail": "request body is larger than 1024 bytes", "limit": 1024,
        })
    );
    assert_eq!(polls.load(Ordering::SeqCst), 0, "the body was never polled");
    // A known size hint counts as a length too.
    let a = send_json(layer().body_limit(10), json_request(GOOD)).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_100_mb_stream_without_length_is_cut_off_at_the_limit() {
    let pulled = Arc::new(AtomicUsize::new(0));
    let total = 100 * 1024 * 1024;
    let limit = 1024 * 1024;
    let body = CountingBody {
        remaining: total,
        pulled: pulled.clone(),
    };
    let req = Request::post("/")
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap();
    let a = send_json(layer().body_limit(limit), req).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.body["type"], types::BODY_TOO_LARGE);
    assert_eq!(a.body["limit"], limit);
    let pulled = pulled.load(Ordering::SeqCst);
    assert!(pulled > limit, "the limit was crossed: {pulled}");
    assert!(
        pulled <= limit + FRAME,
        "stopped within one frame of the limit, pulled {pulled} of {total}"
    );
}

#[tokio::test]
async fn malformed_json_is_400_with_line_and_column() {
    let a = send_json(
        layer(),
        json_request("{\n  \"customer\": \"ada\",\n  \"items\": [}\n"),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.body,
        json!({
            "type": types::MALFORMED_JSON, "title": "Malformed JSON", "status": 400,
            "detail": "malformed JSON: expected value at line 3 column 13",
            "line": 3, "column": 13,
        })
    );
    let a = send_json(layer(), json_request(format!("{GOOD} x"))).await;
    assert_eq!(
        a.body["detail"],
        format!(
            "malformed JSON: trailing characters at line 1 column {}",
            GOOD.len() + 2
        )
    );
    let a = send_json(layer(), json_request("")).await;
    assert_eq!(
        a.body["detail"],
        "malformed JSON: EOF while parsing a value at line 1 column 0"
    );
}

#[tokio::test]
async fn a_type_error_before_a_syntax_error_is_still_400() {
    let a = send_json(layer(), json_request(r#"{"customer": 5, "items": [}"#)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["line"], 1);
    assert_eq!(a.body["column"], 27);
}

#[tokio::test]
async fn a_number_out_of_range_in_malformed_json_is_still_400() {
    // A number too large for any type, then a syntax error further on.
    let body = format!(r#"{{"customer": {}{{"#, "9".repeat(400));
    let a = send_json(layer(), json_request(body)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // A type error before a number out of range in well-formed JSON: 422.
    let body = r#"{"customer": 5, "items": [], "discount": 1e400}"#;
    let a = send_json(layer(), json_request(body)).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn every_rule_violation_is_422_with_its_pointer() {
    let body = r#"{"customer": "", "items": [
        {"sku": "A-1", "quantity": 2, "price": {"minor": 1, "currency": "EUR"}},
        {"sku": "a b", "quantity": 0, "price": {"minor": 1, "currency": "EUR"}}
    ], "tags": {"a/b~c": 11, "ok": 1}}"#;
    let a = send_json(layer(), json_request(body)).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        a.body,
        json!({
            "type": types::VALIDATION_FAILED, "title": "Validation failed", "status": 422,
            "detail": "4 invalid values",
            "errors": [
                {"pointer": "/customer", "detail": "must have between 1 and 64 characters", "code": "length"},
                {"pointer": "/items/1/sku", "detail": "must contain only A-Z, 0-9 and -", "code": "pattern"},
                {"pointer": "/items/1/quantity", "detail": "must be between 1 and 100", "code": "range"},
                {"pointer": "/tags/a~1b~0c", "detail": "must be at most 10", "code": "range"},
            ],
        })
    );
}

#[tokio::test]
async fn a_wrong_type_is_422_without_the_value_or_rust_type_names() {
    let body = r#"{"customer": "ada", "items": [{"sku": "A-1", "quantity": 2, "price": {"minor": 1, "currency": "EUR"}},
        {"sku": "A-2", "quantity": "SECRET-VALUE", "price": {"minor": 1, "currency": "EUR"}}]}"#;
    let a = send_json(layer(), json_request(body)).await;
    assert_eq!(
        a.body,
        json!({
            "type": types::VALIDATION_FAILED, "title": "Validation failed", "status": 422,
            "detail": "1 invalid value",
            "errors": [{"pointer": "/items/1/quantity", "detail": "must be an integer from 0 to 4294967295", "code": "type"}],
        })
    );
    let cases = [
        (
            r#"{"customer": ["SECRET-VALUE"], "items": []}"#,
            "/customer",
            "must be a string",
            "type",
        ),
        (
            r#"{"customer": "a", "items": {"SECRET-VALUE": 1}}"#,
            "/items",
            "must be an array",
            "type",
        ),
        (
            r#"{"customer": "a", "items": ["SECRET-VALUE"]}"#,
            "/items/0",
            "must be an object",
            "type",
        ),
        (
            r#"{"customer": "a", "items": [], "tags": {"a/b": "SECRET-VALUE"}}"#,
            "/tags/a~1b",
            "must be an integer from 0 to 4294967295",
            "type",
        ),
        (
            r#"{"customer": "a", "items": [], "tags": {"x": -1}}"#,
            "/tags/x",
            "must be an integer from 0 to 4294967295",
            "range",
        ),
        (
            r#"{"customer": "a", "items": [], "discount": "SECRET-VALUE"}"#,
            "/discount",
            "must be a number",
            "type",
        ),
    ];
    for (body, pointer, detail, code) in cases {
        let a = send_json(layer(), json_request(body)).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(
            a.body["errors"],
            json!([{"pointer": pointer, "detail": detail, "code": code}]),
            "{body}"
        );
        let text = a.body.to_string();
        for leak in [
            "SECRET",
            "u32",
            "f64",
            "Order",
            "Item",
            "struct",
            "invalid type",
        ] {
            assert!(!text.contains(leak), "{leak} leaked in {text}");
        }
    }
}

#[tokio::test]
async fn a_missing_field_points_at_the_field() {
    let a = send_json(layer(), json_request(r#"{"customer": "a", "items": [{"quantity": 1, "price": {"minor": 1, "currency": "EUR"}}]}"#)).await;
    assert_eq!(
        a.body["errors"],
        json!([{"pointer": "/items/0/sku", "detail": "is required", "code": "required"}])
    );
    let a = send_json(layer(), json_request("{}")).await;
    assert_eq!(
        a.body["errors"],
        json!([{"pointer": "/customer", "detail": "is required", "code": "required"}])
    );
}

#[tokio::test]
async fn unknown_fields_are_all_rejected_or_all_allowed() {
    let body = r#"{"customer": "a", "colour": 1, "items": [{"sku": "A", "quantity": 1, "qty": 2, "price": {"minor": 1, "currency": "EUR"}}], "a~b/c": {}}"#;
    let a = send_json(layer(), json_request(body)).await;
    assert_eq!(
        a.body,
        json!({
            "type": types::VALIDATION_FAILED, "title": "Validation failed", "status": 422,
            "detail": "3 invalid values",
            "errors": [
                {"pointer": "/colour", "detail": "is not allowed", "code": "unknown_field"},
                {"pointer": "/items/0/qty", "detail": "is not allowed", "code": "unknown_field"},
                {"pointer": "/a~0b~1c", "detail": "is not allowed", "code": "unknown_field"},
            ],
        })
    );
    let a = send_json(
        layer().unknown_fields(UnknownFields::Allow),
        json_request(body),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    // A type that denies unknown fields itself still gets a pointer.
    let body = r#"{"customer": "a", "items": [{"sku": "A", "quantity": 1, "price": {"minor": 1, "currency": "EUR", "x": 1}}]}"#;
    let a = send_json(
        layer().unknown_fields(UnknownFields::Allow),
        json_request(body),
    )
    .await;
    assert_eq!(
        a.body["errors"],
        json!([{"pointer": "/items/0/price/x", "detail": "is not allowed", "code": "unknown_field"}])
    );
}

#[tokio::test]
async fn domain_types_refuse_bad_values_with_a_pointer() {
    let cases = [
        (
            r#"{"customer": "a", "items": [], "discount": 100.5}"#,
            "/discount",
            "must be between 0 and 100",
        ),
        (
            r#"{"customer": "a", "items": [{"sku": "A", "quantity": 1, "price": {"minor": -5, "currency": "EUR"}}]}"#,
            "/items/0/price",
            "must not be negative",
        ),
        (
            r#"{"customer": "a", "items": [{"sku": "A", "quantity": 1, "price": {"minor": 5, "currency": "euro"}}]}"#,
            "/items/0/price/currency",
            "must be a three-letter ISO 4217 code",
        ),
    ];
    for (body, pointer, detail) in cases {
        let a = send_json(layer(), json_request(body)).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(
            a.body["errors"],
            json!([{"pointer": pointer, "detail": detail, "code": "invalid"}]),
            "{body}"
        );
    }
    let order = layer()
        .parse(br#"{"customer": "a", "items": [], "discount": 12.5}"#)
        .unwrap_err();
    // Zero items breaks a rule, but the discount itself was built.
    assert_eq!(
        order.violations().unwrap().as_slice()[0].pointer(),
        Some("/items")
    );
    #[derive(serde::Deserialize)]
    struct D {
        d: Percent,
    }
    impl palisade::validate::Validate for D {}
    let d: D = ValidateLayer::new()
        .json::<D>()
        .parse(br#"{"d": 12.5}"#)
        .unwrap();
    assert_eq!(d.d.get(), 12.5);
}

#[tokio::test]
async fn violations_are_capped_and_counted() {
    let items: Vec<_> = (0..30)
        .map(|_| json!({"sku": "A", "quantity": 0, "price": {"minor": 1, "currency": "EUR"}}))
        .collect();
    let body = json!({"customer": "a", "items": items}).to_string();
    let a = send_json(
        layer().max_errors(NonZeroUsize::new(5).unwrap()),
        json_request(body),
    )
    .await;
    assert_eq!(
        a.body["detail"],
        "30 invalid values; the first 5 are listed"
    );
    let errors = a.body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 5);
    assert_eq!(errors[4]["pointer"], "/items/4/quantity");
}

#[tokio::test]
async fn passthrough_checks_headers_and_limits_the_body_it_hands_on() {
    let layer = ValidateLayer::new()
        .content_types(["application/json"])
        .body_limit(16);
    let svc = ServiceBuilder::new()
        .layer(ProblemLayer::new())
        .layer(layer)
        .service(service_fn(
            |req: Request<Limited<CountingBody>>| async move {
                let status = match req.into_body().collect().await {
                    Ok(_) => StatusCode::OK,
                    Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                        StatusCode::PAYLOAD_TOO_LARGE
                    }
                    Err(_) => StatusCode::BAD_REQUEST,
                };
                let mut response = Response::new(Full::<Bytes>::default());
                *response.status_mut() = status;
                Ok::<_, Infallible>(response)
            },
        ));
    let body = |n: usize| CountingBody {
        remaining: n,
        pulled: Arc::default(),
    };
    // An empty GET needs no content type.
    let get = Request::get("/")
        .header("content-length", "0")
        .body(body(0))
        .unwrap();
    assert_eq!(
        svc.clone().oneshot(get).await.unwrap().status(),
        StatusCode::OK
    );
    let post = Request::post("/").body(body(4)).unwrap();
    assert_eq!(
        svc.clone().oneshot(post).await.unwrap().status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let post = Request::post("/")
        .header(CONTENT_TYPE, "application/json")
        .body(body(4))
        .unwrap();
    assert_eq!(
        svc.clone().oneshot(post).await.unwrap().status(),
        StatusCode::OK
    );
    // Streamed past the limit: the handler's read fails with LengthLimitError.
    let post = Request::post("/")
        .header(CONTENT_TYPE, "application/json")
        .body(body(1000))
        .unwrap();
    assert_eq!(
        svc.clone().oneshot(post).await.unwrap().status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let post = Request::post("/")
        .header(CONTENT_TYPE, "application/json")
        .header("content-length", "17")
        .body(body(17))
        .unwrap();
    let a = answer(svc.oneshot(post).await.unwrap()).await;
    assert_eq!(a.body["detail"], "request body is larger than 16 bytes");
    assert_eq!(a.body["type"], types::BODY_TOO_LARGE);
}

#[tokio::test]
async fn rejection_keeps_the_readied_inner_service_and_inner_errors_pass_through() {
    use tower::Service;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let mut svc = layer().layer_service(service_fn(move |_req: Request<Full<Bytes>>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Err("boom")
            } else {
                Ok(Response::new(Full::<Bytes>::default()))
            }
        }
    }));
    ServiceExt::<Request<Full<Bytes>>>::ready(&mut svc)
        .await
        .unwrap();
    assert!(matches!(
        svc.call(json_request("[")).await,
        Err(Error::Syntax { .. })
    ));
    // The rejection did not use up the readiness nor call the inner service.
    assert!(matches!(
        svc.call(json_request(GOOD)).await,
        Err(Error::Inner("boom"))
    ));
    ServiceExt::<Request<Full<Bytes>>>::ready(&mut svc)
        .await
        .unwrap();
    assert!(svc.call(json_request(GOOD)).await.is_ok());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

trait LayerService: Sized {
    fn layer_service<S>(self, inner: S) -> <Self as tower::Layer<S>>::Service
    where
        Self: tower::Layer<S>,
    {
        tower::Layer::layer(&self, inner)
    }
}
impl<M> LayerService for ValidateLayer<M> {}

#[tokio::test]
async fn axum_route_uses_the_validated_extractor() {
    use axum::Router;
    use axum::routing::post;
    use palisade::validate::Validated;

    async fn create(Validated(order): Validated<Order>) -> (StatusCode, String) {
        (StatusCode::CREATED, order.customer)
    }
    async fn unguarded(Validated(order): Validated<Order>) -> String {
        order.customer
    }
    let app = Router::new()
        .route("/orders", post(create))
        .route_layer(
            ServiceBuilder::new()
                .layer(ProblemLayer::new())
                .layer(layer()),
        )
        .merge(Router::new().route("/unguarded", post(unguarded)));

    let req = |uri: &str, body: &'static str| {
        Request::post(uri)
            .header(CONTENT_TYPE, "application/json")
            .body(axum::body::Body::from(body))
            .unwrap()
    };
    let response = app.clone().oneshot(req("/orders", GOOD)).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "ada"
    );
    let response = app
        .clone()
        .oneshot(req("/orders", r#"{"customer": 1}"#))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["type"], types::VALIDATION_FAILED);
    let response = app.oneshot(req("/unguarded", GOOD)).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["type"], types::INTERNAL);
}

#[tokio::test]
async fn decisions_are_events_with_the_uniform_fields_and_no_request_data() {
    let logs = crate::support::CapturedLogs::start();

    let api_key = HeaderName::from_static("x-api-key");
    let layer = layer()
        .name("orders")
        .require_header_with(api_key.clone(), |v| v.as_bytes().starts_with(b"pk_"));
    let mut ok = json_request(GOOD);
    ok.headers_mut()
        .insert(api_key.clone(), "pk_live_1".parse().unwrap());
    assert_eq!(send_json(layer.clone(), ok).await.status, StatusCode::OK);
    let mut bad = json_request(r#"{"customer": "sk_secret_body", "items": []}"#);
    bad.headers_mut()
        .insert(api_key, "sk_secret_header".parse().unwrap());
    let a = send_json(layer, bad).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    let text = logs.text();
    let line = |outcome: &str| {
        text.lines()
            .find(|l| l.contains(&format!("outcome=\"{outcome}\"")))
            .unwrap_or_else(|| panic!("no {outcome} event in:\n{text}"))
            .to_owned()
    };
    let accepted = line("accepted");
    for field in ["TRACE", "layer=\"validate\"", "name=\"orders\""] {
        assert!(accepted.contains(field), "{field} missing in {accepted}");
    }
    let rejected = line("rejected");
    for field in [
        "DEBUG",
        "layer=\"validate\"",
        "name=\"orders\"",
        "status=400",
        "reason=\"invalid headers\"",
    ] {
        assert!(rejected.contains(field), "{field} missing in {rejected}");
    }
    assert!(!text.contains("sk_secret"), "request data logged:\n{text}");
}

/// A body that fails after its first frame, as a client that hangs up.
struct Broken(bool);

#[derive(Debug)]
struct HungUp;

impl std::fmt::Display for HungUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client hung up")
    }
}

impl std::error::Error for HungUp {}

impl http_body::Body for Broken {
    type Data = Bytes;
    type Error = HungUp;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, HungUp>>> {
        if std::mem::replace(&mut self.0, true) {
            return std::task::Poll::Ready(Some(Err(HungUp)));
        }
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(
            b"{\"customer\"",
        )))))
    }
}

#[tokio::test]
async fn an_unreadable_body_is_400_saying_so_with_the_cause_as_source() {
    use std::error::Error as _;
    use tower::Layer;

    let req = || {
        Request::post("/")
            .header(CONTENT_TYPE, "application/json")
            .body(Broken(false))
            .unwrap()
    };
    let a = send_json(layer(), req()).await;
    assert_eq!(
        a.body,
        json!({
            "type": types::BODY_READ_FAILED, "title": "Request body unreadable", "status": 400,
            "detail": "failed to read the request body",
        })
    );
    let svc = layer().layer(service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
    }));
    let error = svc.oneshot(req()).await.unwrap_err();
    assert!(matches!(error, Error::Body(_)), "{error:?}");
    assert_eq!(error.to_string(), "failed to read the request body");
    assert_eq!(error.source().unwrap().to_string(), "the client hung up");
}

#[tokio::test]
async fn a_repeated_member_is_400_duplicate_member_at_its_pointer() {
    let a = send_json(
        layer(),
        json_request(
            r#"{"customer": "ada", "items": [{"sku": "A-1", "sku": "B-2", "quantity": 2, "price": {"minor": 1, "currency": "EUR"}}]}"#,
        ),
    )
    .await;
    assert_eq!(
        a.body,
        json!({
            "type": types::DUPLICATE_MEMBER, "title": "Duplicate JSON member", "status": 400,
            "detail": "a member of the JSON body appears more than once",
            "pointer": "/items/0/sku",
        })
    );
    let error = layer()
        .parse(br#"{"customer": "ada", "customer": "bob", "items": []}"#)
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "the JSON body repeats the member at /customer"
    );
}

#[test]
fn errors_say_what_failed_and_keep_causes_out_of_display() {
    use std::error::Error as _;

    let too_large = Error::<Infallible>::TooLarge { limit: 16 };
    assert_eq!(
        too_large.to_string(),
        "request body is larger than 16 bytes"
    );
    assert!(too_large.source().is_none());
    let invalid = layer()
        .parse(br#"{"customer": "", "items": []}"#)
        .unwrap_err();
    assert_eq!(
        invalid.to_string(),
        "invalid request body: 2 invalid values: /customer: must have between 1 and 64 \
         characters; /items: must have between 1 and 50 items"
    );
    assert!(invalid.source().is_none());
    let syntax = layer().parse(b"{").unwrap_err();
    assert_eq!(
        syntax.to_string(),
        "malformed JSON at line 1 column 1: EOF while parsing an object"
    );
}
