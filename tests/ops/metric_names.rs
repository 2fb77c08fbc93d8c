//! The rules, their tests, the dashboard and the README name only metrics
//! palisade exports: the names `describe_metrics` registers, as the
//! Prometheus exporter writes them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A recorder that keeps the described metrics and nothing else.
#[derive(Debug, Default)]
struct Descriptions(Mutex<BTreeMap<String, Kind>>);

impl Descriptions {
    fn add(&self, key: KeyName, kind: Kind) {
        let previous = self.0.lock().unwrap().insert(key.as_str().to_owned(), kind);
        assert!(previous.is_none(), "{} described twice", key.as_str());
    }
}

impl Recorder for Descriptions {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.add(key, Kind::Counter);
    }
    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.add(key, Kind::Gauge);
    }
    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.add(key, Kind::Histogram);
    }
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// Every metric palisade describes, by name.
fn exported() -> BTreeMap<String, Kind> {
    let recorder = Descriptions::default();
    metrics::with_local_recorder(&recorder, palisade::observability::describe_metrics);
    let described = recorder.0.into_inner().unwrap();
    assert!(
        described.len() >= 20,
        "describe_metrics described only {described:?}"
    );
    described
}

/// The words of `text` that name a palisade metric or a recorded series:
/// runs of `[A-Za-z0-9_:]` that contain `palisade_`.
fn metric_words(text: &str) -> BTreeSet<&str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.contains("palisade_"))
        .collect()
}

/// Why `metric` is not what the exporter writes for a metric of palisade,
/// if it is not. `recorded` says the name is the metric part of a recorded
/// series (`level:metric:operation`), where a counter drops `_total`, as
/// the naming convention of recording rules asks.
fn check_metric(metric: &str, exported: &BTreeMap<String, Kind>, recorded: bool) -> Option<String> {
    if exported.contains_key(metric) {
        return None;
    }
    // A prefix, in a regular expression (`{__name__=~"palisade_.+"}`).
    if metric.ends_with('_') && !recorded {
        return if exported.keys().any(|name| name.starts_with(metric)) {
            None
        } else {
            Some(format!(
                "`{metric}` is the prefix of no metric palisade exports"
            ))
        };
    }
    // A histogram with buckets is written as three series.
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = metric.strip_suffix(suffix)
            && exported.get(base) == Some(&Kind::Histogram)
        {
            return None;
        }
    }
    if recorded && exported.get(&format!("{metric}_total")) == Some(&Kind::Counter) {
        return None;
    }
    Some(format!("`{metric}` is not a metric palisade exports"))
}

/// Every problem with the metric names of `text`: a metric palisade does
/// not export, or a recorded series the rules do not record.
fn problems(text: &str, exported: &BTreeMap<String, Kind>, recorded: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for word in metric_words(text) {
        let parts: Vec<&str> = word.split(':').collect();
        match parts.as_slice() {
            [metric] => problems.extend(check_metric(metric, exported, false)),
            [level, metric, operation] if !level.is_empty() && !operation.is_empty() => {
                problems.extend(check_metric(metric, exported, true));
                if !recorded.iter().any(|name| name == word) {
                    problems.push(format!("`{word}` is not recorded by the rules"));
                }
            }
            _ => problems.push(format!(
                "`{word}` is not a metric nor level:metric:operation"
            )),
        }
    }
    problems
}

#[test]
fn ops_files_name_only_metrics_palisade_exports() {
    let exported = exported();
    let recorded = crate::recorded_names();
    assert!(recorded.len() >= 10, "recorded: {recorded:?}");
    let files = crate::ops_files();
    for required in [
        crate::RULES,
        crate::RULE_TESTS,
        crate::DASHBOARD,
        "ops/README.md",
    ] {
        assert!(
            files.iter().any(|f| f == required),
            "{required} missing: {files:?}"
        );
    }
    let mut all = Vec::new();
    for file in &files {
        let text = crate::read(file);
        assert!(
            !metric_words(&text).is_empty(),
            "{file} names no palisade metric"
        );
        all.extend(
            problems(&text, &exported, &recorded)
                .into_iter()
                .map(|p| format!("{file}: {p}")),
        );
    }
    assert!(all.is_empty(), "{}", all.join("\n"));
}

#[test]
fn every_recorded_series_names_a_metric_palisade_exports() {
    let exported = exported();
    for name in crate::recorded_names() {
        let parts: Vec<&str> = name.split(':').collect();
        let [_, metric, _] = parts.as_slice() else {
            panic!("`{name}` is not level:metric:operation");
        };
        assert_eq!(check_metric(metric, &exported, true), None, "{name}");
    }
}

/// The check above can fail: a misspelt metric, a counter without its
/// `_total`, a counter with a histogram's suffix, a recorded series the
/// rules do not record.
#[test]
fn names_palisade_does_not_export_are_refused() {
    let exported = exported();
    let recorded = crate::recorded_names();
    let text = r#"
        expr: rate(palisade_rate_limit_denials_total[5m]) > 0
        expr: rate(palisade_timeout_calls[5m])
        expr: palisade_circuit_breaker_calls_total_bucket
        expr: name_outcome:palisade_timeout_calls:rate1h
        expr: name_outcome:palisade_timeout_call:rate5m
        query: label_values({__name__=~"palisade_timeouts_.+"}, name)
    "#;
    let found = problems(text, &exported, &recorded);
    assert_eq!(
        found,
        [
            "`palisade_timeout_call` is not a metric palisade exports",
            "`name_outcome:palisade_timeout_call:rate5m` is not recorded by the rules",
            "`name_outcome:palisade_timeout_calls:rate1h` is not recorded by the rules",
            "`palisade_circuit_breaker_calls_total_bucket` is not a metric palisade exports",
            "`palisade_rate_limit_denials_total` is not a metric palisade exports",
            "`palisade_timeout_calls` is not a metric palisade exports",
            "`palisade_timeouts_` is the prefix of no metric palisade exports",
        ],
    );
    // And the real names pass.
    let good = "palisade_store_duration_seconds_bucket palisade_timeout_calls_total \
                name_outcome:palisade_timeout_calls:rate5m palisade_circuit_breaker_state \
                {__name__=~\"palisade_.+\"}";
    assert_eq!(problems(good, &exported, &recorded), Vec::<String>::new());
}
