#![cfg(feature = "metrics")]
//! The operations files in `ops/`: the Prometheus rules, their unit tests and
//! the Grafana dashboard name only metrics palisade exports and label values
//! it documents, every alert has a runbook section, and promtool accepts them
//! (the rules, their tests, every dashboard query).
//!
//! The promtool tests need `promtool` on `PATH` (Debian's `prometheus`
//! package); without it they skip loudly, unless `PALISADE_REQUIRE_PROMTOOL=1`,
//! which turns the skip into a failure (CI sets it).

mod dashboard;
mod label_values;
mod metric_names;
mod promtool;
mod runbooks;

use std::path::{Path, PathBuf};

/// The rules file.
const RULES: &str = "ops/prometheus/palisade.rules.yml";
/// The rules' unit tests.
const RULE_TESTS: &str = "ops/prometheus/palisade.rules.test.yml";
/// The Grafana dashboard.
const DASHBOARD: &str = "ops/grafana/palisade.json";

/// `path`, relative to the crate's root.
fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The text of `path`, relative to the crate's root.
fn read(path: &str) -> String {
    let full = repo_path(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

/// Every file under `ops/`, as its path relative to the crate's root.
fn ops_files() -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read ops dir") {
            let path = entry.expect("ops dir entry").path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let relative = path.strip_prefix(root).expect("under the root");
                out.push(relative.to_str().expect("utf-8 path").to_owned());
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("ops"), root, &mut files);
    files.sort();
    files
}

/// The names the rules file records (`- record: <name>`).
fn recorded_names() -> Vec<String> {
    read(RULES)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- record:"))
        .map(|name| name.trim().to_owned())
        .collect()
}
