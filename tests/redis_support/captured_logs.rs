//! `CapturedLogs`: every event of the capturing test, whichever thread first
//! reached its callsite, and none of another test's.

use std::sync::{Arc, Barrier};

use crate::support::CapturedLogs;

/// The race a test's own thread-local subscriber lost: another thread, where
/// nothing captures, reaches the callsite first, which cached it as off for
/// the whole process.
#[test]
fn an_event_whose_callsite_another_thread_reached_first_is_captured() {
    fn probe(n: u32) {
        tracing::trace!(probe = n, "first reached elsewhere");
    }
    let logs = CapturedLogs::start();
    std::thread::spawn(|| probe(1)).join().unwrap();
    probe(2);
    let text = logs.text();
    assert!(text.contains("probe=2"), "not captured:\n{text}");
    assert!(!text.contains("probe=1"), "another thread's event:\n{text}");
}

/// Whether a capture wants an event is decided per event, never cached: here
/// the callsite is first reached between two captures, when none wants it.
#[test]
fn an_event_whose_callsite_was_reached_while_nothing_captured_is_captured() {
    fn probe(n: u32) {
        tracing::trace!(probe = n, "reached between captures");
    }
    drop(CapturedLogs::start());
    probe(1);
    let logs = CapturedLogs::start();
    probe(2);
    let text = logs.text();
    assert!(text.contains("probe=2"), "not captured:\n{text}");
    assert!(!text.contains("probe=1"), "an event from before:\n{text}");
}

#[test]
fn parallel_captures_see_only_their_own_events() {
    fn probe(n: u32) {
        tracing::debug!(probe = n, "in parallel");
    }
    let both_live = Arc::new(Barrier::new(2));
    let capture = |n: u32| {
        let both_live = both_live.clone();
        std::thread::spawn(move || {
            let logs = CapturedLogs::start();
            both_live.wait();
            probe(n);
            both_live.wait();
            logs.text()
        })
    };
    let (a, b) = (capture(1), capture(2));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(a.lines().count(), 1, "{a}");
    assert!(a.contains("probe=1"), "{a}");
    assert_eq!(b.lines().count(), 1, "{b}");
    assert!(b.contains("probe=2"), "{b}");
}

#[test]
fn work_on_another_thread_is_captured_inside_the_span() {
    fn probe(n: u32) {
        tracing::debug!(probe = n, "on another thread");
    }
    let logs = CapturedLogs::start();
    let span = logs.span().clone();
    std::thread::spawn(move || span.in_scope(|| probe(1)))
        .join()
        .unwrap();
    let text = logs.text();
    assert!(text.contains("probe=1"), "not captured:\n{text}");
}

#[test]
fn tasks_of_a_current_thread_runtime_are_captured() {
    let logs = CapturedLogs::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::spawn(async { tracing::debug!(probe = 1, "in a spawned task") })
            .await
            .unwrap();
    });
    let text = logs.text();
    assert!(text.contains("probe=1"), "not captured:\n{text}");
}

/// The event tests match on what `tracing_subscriber::fmt` writes.
#[test]
fn lines_read_as_fmt_writes_them() {
    let logs = CapturedLogs::start();
    let span = tracing::info_span!("request", id = %"r-1", n = 2);
    span.record("n", 3);
    span.in_scope(|| {
        tracing::warn!(
            name = "api",
            reason = %"failure rate",
            latency_us = Some(7u64),
            absent = None::<u64>,
            ok = true,
            "state changed"
        );
    });
    let target = module_path!();
    assert_eq!(
        logs.text(),
        format!(
            " WARN request{{id=r-1 n=2 n=3}}: {target}: state changed name=\"api\" reason=failure rate latency_us=7 ok=true\n"
        )
    );
}
