//! The label values the rules, their tests and the dashboard match on are
//! values palisade documents for that metric, in the table of
//! `src/observability.rs`: an `outcome="timeout"` that no layer records
//! would leave an alert silent for good.

use std::collections::{BTreeMap, BTreeSet};

use crate::read;

/// The labels whose values are checked; `name`, `job`, `instance` and `le`
/// take any value.
const CHECKED: [&str; 8] = [
    "outcome", "state", "from", "to", "status", "layer", "store", "op",
];

type Documented = BTreeMap<(String, String), BTreeSet<String>>;

/// The values of each metric's labels, as `src/observability.rs` lists
/// them: ``| `metric` | kind | `label` = `a` \| `b`, `other` = `c` |``.
fn documented() -> Documented {
    let source = read("src/observability.rs");
    let mut values = Documented::new();
    for line in source.lines() {
        let Some(row) = line.strip_prefix("//! | `palisade_") else {
            continue;
        };
        let cells: Vec<&str> = row.split(" | ").collect();
        let metric = format!("palisade_{}", cells[0].trim_end_matches('`'));
        let labels = cells.get(2).expect("a labels cell");
        // Backticked words alternate with the text between them.
        let parts: Vec<&str> = labels.split('`').collect();
        let (mut names, mut targets) = (Vec::new(), Vec::new());
        for i in (1..parts.len()).step_by(2) {
            let (before, word) = (parts[i - 1], parts[i]);
            let after = parts.get(i + 1).copied().unwrap_or_default().trim_start();
            if !targets.is_empty() && (before.trim() == "=" || before.contains("\\|")) {
                for &label in &targets {
                    values
                        .entry((metric.clone(), String::from(label)))
                        .or_default()
                        .insert(word.to_owned());
                }
                continue;
            }
            targets.clear();
            names.push(word);
            if after.starts_with('=') {
                targets = std::mem::take(&mut names);
            } else if !after.starts_with(',') {
                names.clear();
            }
        }
    }
    // The rows that refer to another's values: the breaker's state gauge
    // takes the transitions' states, the store durations the store errors'
    // labels, whose `layer` is the tracing field's.
    let copy = |values: &mut Documented, from: (&str, &str), to: (&str, &str)| {
        let set = values[&(from.0.to_owned(), from.1.to_owned())].clone();
        values.insert((to.0.to_owned(), to.1.to_owned()), set);
    };
    copy(
        &mut values,
        ("palisade_circuit_breaker_transitions_total", "to"),
        ("palisade_circuit_breaker_state", "state"),
    );
    for label in ["store", "op"] {
        copy(
            &mut values,
            ("palisade_store_errors_total", label),
            ("palisade_store_duration_seconds", label),
        );
    }
    let layers: BTreeSet<String> = source
        .lines()
        .find_map(|line| line.strip_prefix("//! | `layer` | "))
        .expect("the tracing table's layer row")
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|word| word.trim_matches('"').to_owned())
        .collect();
    for metric in [
        "palisade_store_errors_total",
        "palisade_store_duration_seconds",
    ] {
        values.insert((metric.to_owned(), "layer".to_owned()), layers.clone());
    }
    values
}

/// The exported metric a series name stands for: a histogram's series
/// stand for the histogram, a recorded `level:metric:operation` for the
/// metric (a counter's without `_total`).
fn metric_of(series: &str, documented: &Documented) -> Option<String> {
    let known = |name: &str| documented.keys().any(|(metric, _)| metric == name);
    let name = match series.split(':').collect::<Vec<_>>().as_slice() {
        [name] => (*name).to_owned(),
        [_, name, _] => (*name).to_owned(),
        _ => return None,
    };
    let candidates = [
        Some(name.clone()),
        Some(format!("{name}_total")),
        name.strip_suffix("_bucket").map(str::to_owned),
        name.strip_suffix("_sum").map(str::to_owned),
        name.strip_suffix("_count").map(str::to_owned),
    ];
    candidates.into_iter().flatten().find(|c| known(c))
}

/// Every `label="value"` and `label=~"a|b"` matcher on a checked label of a
/// palisade series in `text`, that names a value not documented for it.
fn undocumented(text: &str, documented: &Documented) -> Vec<String> {
    let text = text.replace("\\\"", "\"");
    let mut problems = Vec::new();
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for (start, _) in text.match_indices('{') {
        let series_start = text[..start]
            .rfind(|c: char| !is_name(c))
            .map_or(0, |i| i + 1);
        let series = &text[series_start..start];
        if !series.contains("palisade_") {
            continue;
        }
        let Some(metric) = metric_of(series, documented) else {
            continue; // metric_names says what is wrong with it
        };
        let end = start + text[start..].find('}').expect("a closing brace");
        for matcher in text[start + 1..end].split(',') {
            let (label, value) = if let Some((l, v)) = matcher.split_once("=~") {
                (l, v)
            } else if let Some((l, v)) = matcher.split_once('=') {
                if l.ends_with('!') {
                    continue;
                }
                (l, v)
            } else {
                continue;
            };
            let label = label.trim();
            if !CHECKED.contains(&label) {
                continue;
            }
            let allowed = documented.get(&(metric.clone(), label.to_owned()));
            for value in value.trim().trim_matches('"').split('|') {
                if !allowed.is_some_and(|a| a.contains(value)) {
                    problems.push(format!(
                        "{series}: {label}=\"{value}\" is not a documented {label} of {metric}"
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn the_table_lists_the_values_the_rules_rely_on() {
    let documented = documented();
    let of = |metric: &str, label: &str| {
        documented
            .get(&(metric.to_owned(), label.to_owned()))
            .unwrap_or_else(|| panic!("{metric} {label}: {documented:?}"))
    };
    assert!(of("palisade_rate_limit_decisions_total", "outcome").contains("failed_open"));
    assert!(of("palisade_timeout_calls_total", "outcome").contains("timed_out"));
    assert_eq!(of("palisade_throttle_calls_total", "outcome").len(), 4);
    assert!(of("palisade_circuit_breaker_state", "state").contains("half_open"));
    assert!(of("palisade_store_errors_total", "layer").contains("idempotency"));
}

#[test]
fn ops_files_match_only_documented_label_values() {
    let documented = documented();
    let mut problems = Vec::new();
    for file in crate::ops_files() {
        problems.extend(
            undocumented(&read(&file), &documented)
                .into_iter()
                .map(|p| format!("{file}: {p}")),
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The check can fail.
#[test]
fn undocumented_label_values_are_refused() {
    let documented = documented();
    let text = r#"
        rate(palisade_timeout_calls_total{name="api", outcome="timeout"}[5m])
        name_outcome:palisade_bulkhead_calls:rate5m{outcome=~"full|rejected"}
        palisade_circuit_breaker_state{state="half-open"}
        "expr": "palisade_store_errors_total{layer=\"ratelimit\"}"
        name_outcome:palisade_timeout_calls:rate5m{outcome="timed_out", name=~"$name"}
    "#;
    assert_eq!(
        undocumented(text, &documented),
        [
            r#"palisade_timeout_calls_total: outcome="timeout" is not a documented outcome of palisade_timeout_calls_total"#,
            r#"name_outcome:palisade_bulkhead_calls:rate5m: outcome="rejected" is not a documented outcome of palisade_bulkhead_calls_total"#,
            r#"palisade_circuit_breaker_state: state="half-open" is not a documented state of palisade_circuit_breaker_state"#,
            r#"palisade_store_errors_total: layer="ratelimit" is not a documented layer of palisade_store_errors_total"#,
        ]
    );
}
