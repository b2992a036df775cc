//! The agent's own diagnostics: `tracing` to stderr, and, when OTLP is
//! configured, the agent's own spans (startup, sink flushes) as OTLP traces
//! through `tracing-opentelemetry`.
//!
//! Diagnostics never enter the findings stream: findings are OTLP *log
//! records* built by `sink::otlp` from `Finding`s only; no tracing-to-logs
//! bridge is installed, so a `tracing::warn!` can never become a finding.

use crate::config::Config;
use crate::sink::otlp::resource;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Keeps the trace pipeline alive; flushes it (bounded) on drop.
#[derive(Default)]
pub struct Guard {
    tracer: Option<SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(t) = self.tracer.take() {
            let _ = t.shutdown_with_timeout(std::time::Duration::from_secs(2));
        }
    }
}

/// Installs the global `tracing` subscriber: stderr always; the agent's own
/// spans over OTLP when `cfg.otlp` is enabled and the traces exporter can be
/// built (the span exporter needs a tokio runtime: call this inside one).
pub fn init(cfg: Option<&Config>) -> Guard {
    // The agent logs what it does; the one-shot verbs (diff, ps, ...) only what went wrong.
    // (The CRI client's reconnect warnings are the verbs' own clear error, or a /proc fallback.)
    let default = if cfg.is_some() { "info" } else { "warn,driftwatch::enrich::cri=error" };
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter());
    let mut guard = Guard::default();
    let mut otel_err = None;
    let otel = cfg.and_then(|c| match crate::sink::otlp::Settings::resolve_for(c) {
        Ok(Some(s)) => match s.span_exporter() {
            Ok(exp) => {
                // The async-runtime processor exports on tokio (both transports need
                // it); its queue is bounded (2048 spans), overflow is dropped.
                let bsp = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                    exp,
                    opentelemetry_sdk::runtime::Tokio,
                )
                .build();
                let provider = SdkTracerProvider::builder()
                    .with_resource(resource(&c.cluster_name))
                    .with_span_processor(bsp)
                    .build();
                let tracer = provider.tracer("driftwatch");
                guard.tracer = Some(provider);
                // Spans only: events inside them stay on stderr.
                Some(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(tracing_subscriber::filter::filter_fn(|m| m.is_span())),
                )
            }
            Err(e) => {
                otel_err = Some(e.to_string());
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            otel_err = Some(e.to_string());
            None
        }
    });
    let _ = tracing_subscriber::registry().with(fmt).with(otel).try_init();
    if let Some(e) = otel_err {
        tracing::warn!(error = %e, "agent spans are not exported over OTLP");
    }
    guard
}
