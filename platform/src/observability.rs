//! Structured logs and Prometheus metrics.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

/// Installs the tracing subscriber once: JSON lines (or pretty text when
/// `format` is `pretty`), filtered by `RUST_LOG` (default `info`).
pub fn init_tracing(format: &str) {
    init_tracing_with_default(format, "info,rdkafka=warn,sqlx=warn");
}

/// Like [`init_tracing`] with another filter when `RUST_LOG` is unset.
pub fn init_tracing_with_default(format: &str, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if format == "pretty" {
        registry.with(fmt::layer()).try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init()
    };
    // A second call (tests start many apps in one process) keeps the first.
    let _ = result;
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours just
            // stays empty, which is acceptable for tests.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}
