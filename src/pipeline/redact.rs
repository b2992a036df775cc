//! Redaction of findings (src/redact.rs), applied once per finding by
//! [`Emitter::emit`](super::Emitter::emit) before the fan-out: stdout, OTLP
//! and Alertmanager all receive the redacted finding, none the original, and
//! the agent's own logs never print a finding's command line.
//!
//! What is redacted: the command line (`process.command_args`, matched as one
//! line), the message (which may quote it), the executable and script paths,
//! and the file paths of file findings. Not the rest: names the kernel
//! truncates to 15 bytes, numbers, addresses, image references (they cannot
//! hold credentials), and facts from the runtime and the Kubernetes API.
//! Configuration-drift findings about the environment carry variable names
//! only (`driftwatch.env.loader_vars`), never values.

use crate::{
    classify::{Detail, Finding},
    metrics::Metrics,
    redact::{Hits, Redactor},
};
use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

/// Its `cache` label in `driftwatch_cache_entries`: the texts the patterns
/// did not match lately (`redact::Redactor`, 32 at most).
pub const CACHE: &str = "redaction_clean";

/// The compiled policy and one counter per pattern.
pub struct Redaction {
    redactor: Redactor,
    counters: Vec<Counter>,
    /// `driftwatch_cache_entries{cache="redaction_clean"}`.
    clean: Gauge,
}

impl Redaction {
    /// Creates every pattern's series at 0 (alerts see the first redaction).
    pub fn new(redactor: Redactor, metrics: &Metrics) -> Self {
        let counters = redactor.labels().iter().map(|l| metrics.pipeline.redaction_counter(l)).collect();
        Self { redactor, counters, clean: metrics.registry_stats.cache_gauge(CACHE) }
    }

    /// Redacts `f` in place and counts it once per pattern that replaced something.
    pub fn apply(&self, f: &mut Finding) {
        for i in redact_finding(&self.redactor, f).iter() {
            self.counters[i].inc();
        }
        self.clean.set(self.redactor.clean_entries() as i64);
    }
}

/// Redacts every field of `f` that can carry a secret; marks the finding
/// (`driftwatch.redacted`) when something was replaced. Allocates nothing when
/// nothing matches.
pub fn redact_finding(r: &Redactor, f: &mut Finding) -> Hits {
    let mut hits = Hits::default();
    let truncated = f.record.as_ref().is_some_and(|rec| rec.args_truncated);
    if let Some(p) = f.process.as_mut() {
        if let Some(a) = r.redact_args(&mut p.command_args, truncated) {
            hits |= a.hits;
            // The message may quote the command line (package managers): the
            // same replacements, whole arguments included.
            a.rewrite(&mut f.message);
        }
        hits |= r.redact_text(&mut p.exe_path);
    }
    hits |= r.redact_text(&mut *f.message);
    match &mut f.detail {
        Detail::Exec(e) => {
            if let Some(s) = e.script_path.as_mut() {
                hits |= r.redact_text(s);
            }
        }
        Detail::File(file) => {
            hits |= r.redact_text(&mut file.path);
            if let Some(t) = file.target.as_mut() {
                hits |= r.redact_text(t);
            }
        }
        Detail::Network(_) | Detail::Config(_) => {}
    }
    if !hits.is_empty() {
        f.redacted = true;
    }
    hits
}
