//! The Grafana dashboard: its variables, and every query checked by
//! `promtool check rules` as the expression of a recording rule.

use serde_json::{Value, json};

use crate::promtool::{promtool_or_skip, run, scratch_dir};
use crate::{DASHBOARD, read};

/// What each variable stands for when a query is checked: a value Grafana
/// could put there (a multi-value variable becomes an alternation).
const VARIABLES: [(&str, &str); 5] = [
    ("$__rate_interval", "1m"),
    ("$__interval", "15s"),
    ("$__range", "1h"),
    ("$job", "order-api"),
    ("$name", "api|orders"),
];

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Every panel of the dashboard, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in panels.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every PromQL expression of the dashboard, with where it is: each
/// target's `expr`, and the series selector of each `label_values(..)`
/// variable query.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target has an expr");
            queries.push((format!("panel {:?}", panel["title"]), expr.to_owned()));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .expect("a query variable's query");
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("not a label_values query: {query}"));
        // `label_values(selector, label)`: the selector is PromQL.
        let (selector, _label) = inner
            .rsplit_once(',')
            .expect("label_values(selector, label)");
        queries.push((
            format!("variable {:?}", variable["name"]),
            selector.trim().to_owned(),
        ));
    }
    queries
}

/// `expr` with the dashboard's variables replaced by values.
fn substitute(expr: &str) -> String {
    let mut expr = expr.to_owned();
    for (variable, value) in VARIABLES {
        let braced = format!("${{{}}}", &variable[1..]);
        expr = expr.replace(&braced, value).replace(variable, value);
    }
    assert!(!expr.contains('$'), "a variable left in {expr}");
    expr
}

/// `promtool check rules` on one recording rule per query.
fn check_queries(test: &str, queries: &[(String, String)]) -> Option<Result<String, String>> {
    let promtool = promtool_or_skip(test)?;
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| json!({ "record": format!("dashboard:query:{i}"), "expr": substitute(expr) }))
        .collect();
    // JSON is YAML: promtool reads it as a rules file.
    let file = json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    let dir = scratch_dir(test);
    std::fs::write(dir.join("dashboard.rules.yml"), file.to_string()).expect("write rules");
    let result = run(&promtool, &dir, &["check", "rules", "dashboard.rules.yml"]);
    std::fs::remove_dir_all(&dir).ok();
    Some(result)
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let queries = queries(&dashboard());
    assert!(queries.len() >= 25, "only {} queries", queries.len());
    let Some(result) = check_queries("every_dashboard_query_is_valid_promql", &queries) else {
        return;
    };
    let out = result.unwrap_or_else(|e| {
        let numbered: Vec<String> = queries
            .iter()
            .enumerate()
            .map(|(i, (place, expr))| format!("dashboard:query:{i}  {place}: {expr}"))
            .collect();
        panic!("{e}\n{}", numbered.join("\n"))
    });
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
}

/// The check can fail: promtool refuses a query with a missing parenthesis.
#[test]
fn an_invalid_dashboard_query_is_refused() {
    let queries = [
        (
            "good".to_owned(),
            r#"sum by (name) (rate(palisade_timeout_calls_total{name=~"$name"}[$__rate_interval]))"#.to_owned(),
        ),
        (
            "bad".to_owned(),
            r#"sum by (name (rate(palisade_timeout_calls_total{name=~"$name"}[$__rate_interval]))"#.to_owned(),
        ),
    ];
    let Some(result) = check_queries("an_invalid_dashboard_query_is_refused", &queries) else {
        return;
    };
    let out = result.expect_err("a parenthesis is missing");
    assert!(out.contains("dashboard:query:1"), "{out}");
}

#[test]
fn dashboard_has_datasource_job_and_name_variables_and_every_query_uses_them() {
    let dashboard = dashboard();
    assert_eq!(dashboard["schemaVersion"], 39);
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    for name in ["job", "name"] {
        assert_eq!(variable(name)["type"], "query", "{name}");
        assert_eq!(variable(name)["multi"], true, "{name}");
        assert_eq!(
            variable(name)["datasource"]["uid"],
            "${datasource}",
            "{name}"
        );
    }

    let mut targets = 0;
    for panel in panels(&dashboard) {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        let panel_targets = panel["targets"].as_array().expect("targets");
        assert!(!panel_targets.is_empty(), "{} has no query", panel["title"]);
        for target in panel_targets {
            targets += 1;
            let expr = target["expr"].as_str().expect("expr");
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{expr}");
            assert!(
                expr.contains(r#"job=~"$job""#),
                "not filtered by job: {expr}"
            );
            // The store metrics have no `name` label (only layer, store, op).
            if !expr.contains("palisade_store_") {
                assert!(
                    expr.contains(r#"name=~"$name""#),
                    "not filtered by name: {expr}"
                );
            }
        }
    }
    assert!(targets >= 25, "only {targets} queries");
}
