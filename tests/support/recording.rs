//! Recorded metrics for the layers' metrics tests. Apart from `support/mod.rs`
//! because it pauses tokio's time, and the benches that share `support/mod.rs`
//! build tokio without that ability.

/// Runs `test` on a current-thread runtime with paused time and a
/// `DebuggingRecorder` as this thread's local recorder (no global state, so
/// tests run in parallel), then returns its output and the recorded values
/// of the metrics whose name starts with `prefix` (see `support::metric_values`).
pub(crate) fn record_metrics<F: std::future::Future>(
    prefix: &str,
    test: impl FnOnce() -> F,
) -> (F::Output, std::collections::BTreeMap<String, f64>) {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let output = metrics::with_local_recorder(&recorder, || runtime.block_on(test()));
    (output, crate::support::metric_values(&snapshotter, prefix))
}
