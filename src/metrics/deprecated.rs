//! Metric names renamed for clarity and still exported under their old name
//! for one release (same values), so users' queries keep working while they
//! move. Each old family's HELP says which name replaces it. Remove an entry
//! (and its second registration) one release after it was added.

/// (old name, new name), full sample names. The README's "Metric renames" and
/// the dashboards/alerts checks read the same pairs.
pub const OLD_NAMES: &[(&str, &str)] = &[
    // "events" alone did not say whose: these are the records the agent decoded.
    ("driftwatch_events_total", "driftwatch_events_decoded_total"),
    // Beside events_decoded: what the kernel submitted (the difference is loss or lag).
    ("driftwatch_kernel_events_total", "driftwatch_kernel_events_submitted_total"),
    // Counts network and file events too, not only execs.
    ("driftwatch_execs_not_findings_total", "driftwatch_events_not_drift_total"),
];

/// The HELP text of an old name: `new` is the replacement's sample name.
pub fn help(new: &str) -> String {
    format!("Deprecated: use driftwatch_{new} (same value; this name goes away in the next release)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    /// Each old name is exported with the same series and values as its
    /// replacement, and its HELP names the replacement.
    #[test]
    fn old_names_mirror_new_ones() {
        let m = Metrics::new();
        m.kernel.set_source(Box::new(crate::metrics::tests::Fixed));
        m.pipeline.events("exec", 3);
        m.pipeline.no_finding("entrypoint");
        let text = m.encode();
        for (old, new) in OLD_NAMES {
            let series = |name: &str| -> Vec<String> {
                text.lines()
                    .filter_map(|l| l.strip_prefix(name))
                    .filter(|rest| rest.starts_with('{'))
                    .map(str::to_string)
                    .collect()
            };
            let (o, n) = (series(old), series(new));
            assert!(!n.is_empty(), "no {new} series in\n{text}");
            assert_eq!(o, n, "{old} differs from {new}");
            let family = old.trim_end_matches("_total");
            let want = format!("# HELP {family} Deprecated: use {new} ");
            assert!(text.contains(&want), "{old}: HELP does not name {new}:\n{text}");
        }
    }
}
