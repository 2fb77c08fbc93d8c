//! Every alert has a severity, a summary and a description that say which
//! layer, and a runbook: a section of ops/README.md.

use crate::{RULES, read};

/// The anchor GitHub gives a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_has_a_severity_a_summary_naming_the_layer_and_a_runbook_section() {
    let rules = read(RULES);
    let readme = read("ops/README.md");
    let anchors: Vec<String> = readme
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| anchor(heading.trim_start_matches('#')))
        .collect();

    let alerts: Vec<&str> = rules.split("- alert: ").skip(1).collect();
    assert!(alerts.len() >= 8, "{} alerts", alerts.len());
    for alert in alerts {
        let name = alert.lines().next().expect("the alert's name").trim();
        let field = |key: &str| {
            alert
                .lines()
                .find_map(|line| line.trim().strip_prefix(key))
                .map(str::trim)
                .unwrap_or_else(|| panic!("{name} has no {key}"))
        };
        assert!(
            ["warning", "critical"].contains(&field("severity:")),
            "{name}"
        );
        assert!(!field("summary:").is_empty(), "{name}");
        field("description:");
        // Store metrics have no `name`: those alerts name the store (and
        // the layer kind, in their expression and summary).
        let says_which = if alert.contains("palisade_store_errors") {
            "{{ $labels.store }}"
        } else {
            "{{ $labels.name }}"
        };
        let names_the_layer =
            field("summary:").contains(says_which) && alert.contains("{{ $labels.job }}");
        assert!(names_the_layer, "{name} does not say which layer");
        let runbook = field("runbook:");
        let section = runbook
            .strip_prefix("ops/README.md#")
            .unwrap_or_else(|| panic!("{name}: runbook {runbook} is not in ops/README.md"));
        assert!(
            anchors.iter().any(|a| a == section),
            "{name}: no section #{section} in ops/README.md (sections: {anchors:?})"
        );
        assert!(
            readme.contains(&format!("`{name}`")),
            "{name} is not in the README's table"
        );
    }
}
