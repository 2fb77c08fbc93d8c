//! Starts the demo on a loopback port and talks to it over HTTP.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use metrics::LocalRecorderGuard;
use metrics_exporter_prometheus::PrometheusRecorder;
use order_api::config::Config;
use order_api::repository::Repository;
use order_api::server;
use order_api::state::AppState;

pub(crate) type TestClient = Client<HttpConnector, BoxBody<Bytes, Infallible>>;

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// Asserts an RFC 9457 problem with this status; returns its body.
    pub(crate) fn assert_problem(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/problem+json")
        );
        let body = self.json();
        assert!(body["type"].is_string(), "{body}");
        assert!(body["title"].is_string(), "{body}");
        assert_eq!(body["status"], status.as_u16(), "{body}");
        body
    }
}

/// A valid order body of one item.
pub(crate) fn order_body(quantity: u32, unit_price_cents: u64) -> Value {
    json!({
        "customer_id": "cust-1",
        "currency": "EUR",
        "items": [{"sku": "SKU-1", "quantity": quantity, "unit_price_cents": unit_price_cents}],
    })
}

pub(crate) fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub(crate) async fn send_with(
    client: &TestClient,
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: BoxBody<Bytes, Infallible>,
) -> Reply {
    let mut request = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(format!("{base}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(body).unwrap())
        .await
        .expect("request sent");
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body read").to_bytes(),
    }
}

pub(crate) async fn post_order_with(
    client: &TestClient,
    base: &str,
    key: &str,
    body: &Value,
) -> Reply {
    let body = Full::from(serde_json::to_vec(body).unwrap()).boxed();
    send_with(
        client,
        base,
        "POST",
        "/orders",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ],
        body,
    )
    .await
}

/// The stores an instance keeps rate limits and idempotency keys in:
/// memory, or a private redis-server that lives as long as this value.
pub(crate) struct Backend {
    redis: Option<crate::support::RedisServer>,
}

impl Backend {
    pub(crate) fn memory() -> Self {
        Self { redis: None }
    }

    /// A fresh private redis-server, or `None` (after a loud message) when
    /// `redis-server` is not installed.
    pub(crate) fn redis(test: &str) -> Option<Self> {
        crate::support::RedisServer::start_or_skip(test).map(|server| Self {
            redis: Some(server),
        })
    }

    /// The private redis-server, when this backend has one.
    pub(crate) fn redis_server(&self) -> Option<&crate::support::RedisServer> {
        self.redis.as_ref()
    }

    pub(crate) fn redis_url(&self) -> Option<String> {
        self.redis.as_ref().map(|r| r.url())
    }

    pub(crate) async fn start(&self) -> TestApp {
        self.start_with(|_| {}).await
    }

    pub(crate) async fn start_with(&self, configure: impl FnOnce(&mut Config)) -> TestApp {
        let url = self.redis_url();
        TestApp::start_with(|c| {
            c.redis_url = url;
            configure(c);
        })
        .await
    }
}

/// One instance of the demo, serving on a loopback port until dropped or
/// shut down.
///
/// Each instance records its metrics into a recorder of its own, set as the
/// local recorder of the thread that starts it (a `#[tokio::test]` runs the
/// app on its own current-thread runtime, on that thread), so its
/// `/metrics` and `/admin/stats` count its own requests, not those of tests
/// running alongside. With two instances alive on one thread, the later
/// one's recorder takes both's samples; on a multi-thread runtime, samples
/// recorded on the workers are lost.
pub(crate) struct TestApp {
    pub(crate) addr: SocketAddr,
    pub(crate) base: String,
    pub(crate) client: TestClient,
    pub(crate) state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    _metrics: LocalRecorderGuard<'static>,
}

impl TestApp {
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub(crate) async fn start_with(configure: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_repository(configure, Repository::memory()).await
    }

    pub(crate) async fn start_with_repository(
        configure: impl FnOnce(&mut Config),
        repository: Repository,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = Config {
            addr,
            ..Config::default()
        };
        configure(&mut config);
        let (recorder, metrics) = order_api::telemetry::recorder();
        // Leaked: a recorder per test instance, for the life of the process.
        let recorder: &'static PrometheusRecorder = Box::leak(Box::new(recorder));
        let guard = metrics::set_default_local_recorder(recorder);
        let state = server::build_state_with(config, addr, repository, metrics)
            .await
            .unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(listener, state.clone(), async {
            let _ = rx.await;
        }));
        Self {
            addr,
            base: format!("http://{addr}"),
            client: client(),
            state,
            shutdown: Some(tx),
            task: Some(task),
            _metrics: guard,
        }
    }

    /// Starts a graceful shutdown; the handle completes when the server has
    /// stopped.
    pub(crate) fn shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        let _ = self.shutdown.take().expect("running").send(());
        self.task.take().expect("running")
    }

    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let body = body
            .map(|b| Full::from(b).boxed())
            .unwrap_or_else(|| Full::default().boxed());
        send_with(&self.client, &self.base, method, path, headers, body).await
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[], None).await
    }

    pub(crate) async fn post_order(&self, key: &str, body: &Value) -> Reply {
        post_order_with(&self.client, &self.base, key, body).await
    }

    pub(crate) async fn post_raw(
        &self,
        path: &str,
        key: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        self.send(
            "POST",
            path,
            &[("content-type", content_type), ("idempotency-key", key)],
            Some(body),
        )
        .await
    }

    /// Sends `body` in two chunks, without `Content-Length`.
    pub(crate) async fn post_chunked(&self, path: &str, key: &str, body: Vec<u8>) -> Reply {
        let mut body = Bytes::from(body);
        let tail = body.split_off(body.len() / 2);
        let frames = futures::stream::iter([
            Ok::<_, Infallible>(Frame::data(body)),
            Ok(Frame::data(tail)),
        ]);
        send_with(
            &self.client,
            &self.base,
            "POST",
            path,
            &[
                ("content-type", "application/json"),
                ("idempotency-key", key),
            ],
            StreamBody::new(frames).boxed(),
        )
        .await
    }

    pub(crate) async fn put_json(
        &self,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send("PUT", path, &all, Some(serde_json::to_vec(body).unwrap()))
            .await
    }

    /// `PUT /admin/faults`; asserts 200 and returns the faults in force.
    pub(crate) async fn set_faults(&self, faults: Value) -> Value {
        let r = self.put_json("/admin/faults", &faults, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()
    }

    /// `GET /metrics` with `headers`; asserts 200 and the Prometheus text
    /// format, returns the exposition.
    pub(crate) async fn metrics_with(&self, headers: &[(&str, &str)]) -> Metrics {
        let r = self.send("GET", "/metrics", headers, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let content_type = r.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        Metrics(r.text())
    }

    pub(crate) async fn metrics(&self) -> Metrics {
        self.metrics_with(&[]).await
    }

    pub(crate) async fn stats(&self) -> Value {
        let r = self.get("/admin/stats").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()
    }
}

/// A Prometheus text exposition, as `GET /metrics` answers.
///
/// Tests compare a series before and after their own requests.
#[derive(Debug)]
pub(crate) struct Metrics(pub(crate) String);

impl Metrics {
    /// The sum of the samples of `name` whose labels include every pair of
    /// `labels`; 0 when there is none.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
                let wanted = metric == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
                wanted.then(|| value.parse::<f64>().expect("a sample value"))
            })
            .sum()
    }

    /// Whether a `# TYPE` line declares `name` of `kind`.
    pub(crate) fn has_type(&self, name: &str, kind: &str) -> bool {
        self.0
            .lines()
            .any(|line| line == format!("# TYPE {name} {kind}"))
    }
}

/// `http_server_request_duration_seconds_count` of one method, route and status.
pub(crate) fn requests(m: &Metrics, method: &str, route: &str, status: &str) -> f64 {
    m.value(
        "http_server_request_duration_seconds_count",
        &[("method", method), ("route", route), ("status", status)],
    )
}

/// `n` GETs of a product page as the caller `api_key`; the statuses.
pub(crate) async fn product_statuses(app: &TestApp, api_key: &str, n: usize) -> Vec<Reply> {
    let mut replies = Vec::new();
    for _ in 0..n {
        replies.push(
            app.send("GET", "/products/1", &[("x-api-key", api_key)], None)
                .await,
        );
    }
    replies
}
