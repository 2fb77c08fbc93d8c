//! `ORDER_API_CONFIG`: the demo reads its palisade settings from one file
//! and follows edits without a restart; a bad edit changes nothing.

use super::*;

on_both_stores!(a_quota_changes_without_a_restart_and_a_bad_file_changes_nothing);

/// A file of this test's own, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!(
            "order-api-{name}-{}-{:?}.toml",
            std::process::id(),
            std::thread::current().id()
        )))
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn quota(count: u32) -> String {
    format!("[rate_limit.api]\nquotas = [{{ count = {count}, per = \"1h\" }}]\n")
}

async fn product(app: &TestApp, key: &str) -> StatusCode {
    app.send("GET", "/products/1", &[("x-api-key", key)], None)
        .await
        .status
}

/// Polls `/admin/config` until the `api` default quota's policy has `q`.
async fn until_quota(app: &TestApp, q: u32) {
    let started = std::time::Instant::now();
    loop {
        let view = app.get("/admin/config").await.json();
        let policy = view["api_quotas"]["default"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if policy.contains(&format!(";q={q};")) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "quota {q} not in force: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_quota_changes_without_a_restart_and_a_bad_file_changes_nothing(b: &Backend) {
    let file = TempFile::new("quota");
    file.write(&quota(2));
    let path = file.0.clone();
    let app = b.start_with(|c| c.config_file = Some(path)).await;

    let view = app.get("/admin/config").await.json();
    assert_eq!(
        view["applied"]["rate_limit"]["api"]["quotas"][0]["count"], 2,
        "{view}"
    );
    assert_eq!(view["api_quotas"]["default"], "\"default\";q=2;w=3600");
    // The file names no tier: the pro tier the routes were built with is
    // gone, its callers are on the default quota.
    assert!(view["api_quotas"]["pro"].is_null(), "{view}");
    assert_eq!(product(&app, "ann").await, StatusCode::OK);
    assert_eq!(product(&app, "ann").await, StatusCode::OK);
    assert_eq!(product(&app, "ann").await, StatusCode::TOO_MANY_REQUESTS);

    file.write(&quota(5));
    until_quota(&app, 5).await;
    for _ in 0..5 {
        assert_eq!(product(&app, "bob").await, StatusCode::OK);
    }
    assert_eq!(product(&app, "bob").await, StatusCode::TOO_MANY_REQUESTS);

    // A bad edit: refused and counted, the quota of 5 stays.
    file.write(&quota(0));
    let started = std::time::Instant::now();
    while !app
        .get("/metrics")
        .await
        .text()
        .contains("palisade_config_reloads_total{outcome=\"refused\"} 1")
    {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no refusal counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let view = app.get("/admin/config").await.json();
    assert_eq!(
        view["api_quotas"]["default"], "\"default\";q=5;w=3600",
        "{view}"
    );
    for _ in 0..5 {
        assert_eq!(product(&app, "cy").await, StatusCode::OK);
    }
}

/// The file the README runs the demo with reads, and names only layers the
/// demo has.
#[tokio::test]
async fn the_bundled_file_is_valid_for_the_demo() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/palisade.toml");
    let app = TestApp::start_with(|c| c.config_file = Some(path.into())).await;
    let view = app.get("/admin/config").await.json();
    assert_eq!(
        view["api_quotas"]["default"], "\"default\";q=20;w=2",
        "{view}"
    );
    assert_eq!(view["api_quotas"]["pro"], "\"pro\";q=200;w=2", "{view}");
    assert_eq!(
        view["applied"]["circuit_breaker"]["payment"]["open_wait"],
        "30s"
    );
}
