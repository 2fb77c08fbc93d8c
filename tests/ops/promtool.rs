//! `promtool check rules` and `promtool test rules` on the rules file.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{RULE_TESTS, RULES, repo_path};

/// `promtool` on `PATH`, or `None` after a loud skip message when it is
/// missing and `PALISADE_REQUIRE_PROMTOOL` is not `1`.
pub(crate) fn promtool_or_skip(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|path| path.is_file())
    });
    if found.is_some() {
        return found;
    }
    if std::env::var("PALISADE_REQUIRE_PROMTOOL").as_deref() == Ok("1") {
        panic!("promtool is not on PATH and PALISADE_REQUIRE_PROMTOOL=1");
    }
    eprintln!(
        "\n*** SKIPPED {test}: promtool is not on PATH (Debian's `prometheus` package has it; set PALISADE_REQUIRE_PROMTOOL=1 to fail instead) ***\n"
    );
    None
}

/// Runs `promtool <args>` in `dir`; `Ok` with its output when it succeeds,
/// `Err` with its output when it fails.
pub(crate) fn run(promtool: &Path, dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "promtool {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

#[test]
fn rules_pass_promtool_check() {
    let Some(promtool) = promtool_or_skip("rules_pass_promtool_check") else {
        return;
    };
    let out = run(&promtool, &repo_path(""), &["check", "rules", RULES])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn rules_pass_their_promtool_unit_tests() {
    let Some(promtool) = promtool_or_skip("rules_pass_their_promtool_unit_tests") else {
        return;
    };
    let out = run(&promtool, &repo_path(""), &["test", "rules", RULE_TESTS])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The unit tests can fail: the same tests against rules whose breaker
/// alert waits 3 minutes instead of 5 do.
#[test]
fn rule_unit_tests_fail_against_wrong_rules() {
    let Some(promtool) = promtool_or_skip("rule_unit_tests_fail_against_wrong_rules") else {
        return;
    };
    let rules = crate::read(RULES);
    let breaker = rules
        .find("alert: PalisadeCircuitBreakerOpenTooLong")
        .expect("the breaker alert");
    let wait = breaker + rules[breaker..].find("for: 5m").expect("its wait");
    let wrong = format!(
        "{}for: 3m{}",
        &rules[..wait],
        &rules[wait + "for: 5m".len()..]
    );

    let dir = scratch_dir("wrong-rules");
    std::fs::write(dir.join("palisade.rules.yml"), wrong).expect("write rules");
    std::fs::copy(repo_path(RULE_TESTS), dir.join("palisade.rules.test.yml")).expect("copy tests");
    let result = run(
        &promtool,
        &dir,
        &["test", "rules", "palisade.rules.test.yml"],
    );
    std::fs::remove_dir_all(&dir).ok();
    let out = result.expect_err("the breaker alert now fires after 4 minutes");
    assert!(out.contains("PalisadeCircuitBreakerOpenTooLong"), "{out}");
}

/// A fresh directory for one test's files.
pub(crate) fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("palisade-ops-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}
