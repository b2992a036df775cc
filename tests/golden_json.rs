//! The finding JSON contract, pinned byte for byte: every rule's finding is
//! built through the agent's own stages (kernel record -> decode -> container
//! -> classify -> metadata) and compared with `tests/golden/findings/*.json`.
//! Key order, skipped keys and value formats are all part of the comparison,
//! so a refactor of `Finding` cannot change what SIEM parsers, the OTLP
//! attributes and the Alertmanager labels see.
//!
//! Only the wall-clock `time` and the node's name are normalised. To accept an
//! intended contract change, run with `DW_UPDATE_GOLDEN=1` and review the diff.

mod golden {
    pub mod build;
}

use golden::build;
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/findings")
}

/// Replaces the value of a top-level string key with `with`.
fn normalise(line: &str, key: &str, with: &str) -> String {
    let needle = format!("\"{key}\":\"");
    let Some(start) = line.find(&needle).map(|i| i + needle.len()) else { return line.to_string() };
    let end = start + line[start..].find('"').expect("closing quote");
    format!("{}{with}{}", &line[..start], &line[end..])
}

#[test]
fn findings_match_golden_files() {
    let update = std::env::var("DW_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let dir = golden_dir();
    let cases = build::all();
    assert!(cases.len() >= 20, "every rule needs a golden case");
    let mut failures = Vec::new();
    for (name, json) in &cases {
        let got = normalise(&normalise(json, "time", "2026-01-02T03:04:05.000000006Z"), "k8s.node.name", "node-1");
        serde_json::from_str::<serde_json::Value>(&got).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {got}"));
        let path = dir.join(format!("{name}.json"));
        if update {
            std::fs::create_dir_all(&dir).expect("golden dir");
            std::fs::write(&path, format!("{got}\n")).expect("write golden file");
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with DW_UPDATE_GOLDEN=1 to create it)", path.display()));
        if want.trim_end() != got {
            failures.push(format!("{name}:\n  want {}\n  got  {got}", want.trim_end()));
        }
    }
    // Every golden file has its case: none is silently left behind.
    if !update {
        for entry in std::fs::read_dir(&dir).expect("golden dir") {
            let file = entry.expect("entry").file_name().to_string_lossy().into_owned();
            let stem = file.trim_end_matches(".json");
            assert!(cases.iter().any(|(n, _)| n == stem), "golden file {file} has no case");
        }
    }
    assert!(failures.is_empty(), "findings differ from the golden files:\n{}", failures.join("\n"));
}

/// [`normalise`] for a Falco event: the time (also `evt.time` and the
/// output's clock time) and the node's name (also `hostname`).
fn normalise_falco(line: &str) -> String {
    let mut s = normalise(line, "time", "2026-01-02T03:04:05.000000006Z");
    s = normalise(&normalise(&s, "hostname", "node-1"), "k8s.node.name", "node-1");
    let at = s.find("\"output\":\"").expect("output") + "\"output\":\"".len();
    s.replace_range(at..at + "03:04:05.000000006".len(), "03:04:05.000000006");
    let at = s.find("\"evt.time\":").expect("evt.time") + "\"evt.time\":".len();
    let end = at + s[at..].find(',').expect("more fields");
    s.replace_range(at..end, "1767323045000000006");
    s
}

/// The Falco events (`outputs.stdout.format: falco`, falcosidekick), pinned
/// like the findings in `tests/golden/falco/`, checked against Falco's keys
/// and parsed back against the finding they render.
#[test]
fn falco_events_match_golden_files() {
    let update = std::env::var("DW_UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/falco");
    let findings: std::collections::HashMap<String, String> = build::all().into_iter().collect();
    let mut failures = Vec::new();
    for (name, line) in build::falco() {
        let got = normalise_falco(&line);
        let e: serde_json::Value = serde_json::from_str(&got).unwrap_or_else(|err| panic!("{name}: {err}: {got}"));
        let f = normalise(&findings[&name], "k8s.node.name", "node-1");
        let f: serde_json::Value = serde_json::from_str(&f).expect("finding");
        let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 8, "{name}: {keys:?}");
        assert_eq!(e["rule"], f["rule"], "{name}");
        assert_eq!(e["source"], "driftwatch");
        assert_eq!(e["tags"], f["driftwatch.tags"], "{name}");
        let want_priority = match f["severity"].as_str() {
            Some("critical") => "Critical",
            Some("warning") => "Warning",
            _ => "Informational",
        };
        assert_eq!(e["priority"], want_priority, "{name}");
        assert!(e["output"].as_str().unwrap().contains(f["message"].as_str().unwrap()), "{name}");
        let fields = e["output_fields"].as_object().unwrap();
        for (k, v) in fields {
            let falco = driftwatch::sink::falco::FIELDS.contains(&k.as_str());
            assert!(falco || f.get(k) == Some(v), "{name}: {k} is neither Falco's nor the finding's");
        }
        let id = f["container.id"].as_str().unwrap();
        assert_eq!(fields["container.full_id"], id, "{name}");
        assert_eq!(fields["container.id"], id.get(..12).unwrap_or(id), "{name}");
        let path = dir.join(format!("{name}.json"));
        if update {
            std::fs::create_dir_all(&dir).expect("golden dir");
            std::fs::write(&path, format!("{got}\n")).expect("write golden file");
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with DW_UPDATE_GOLDEN=1 to create it)", path.display()));
        if want.trim_end() != got {
            failures.push(format!("{name}:\n  want {}\n  got  {got}", want.trim_end()));
        }
    }
    assert!(failures.is_empty(), "Falco events differ from the golden files:\n{}", failures.join("\n"));
}

#[test]
fn every_rule_of_the_catalog_has_a_golden_case() {
    let covered: std::collections::HashSet<String> = build::all()
        .iter()
        .map(|(_, json)| {
            serde_json::from_str::<serde_json::Value>(json).expect("json")["rule"].as_str().unwrap().into()
        })
        .collect();
    for rule in build::catalog_rules() {
        assert!(covered.contains(rule), "rule {rule} has no golden case");
    }
}

#[test]
fn default_redaction_finds_nothing_in_the_other_golden_findings() {
    // The built-in patterns must not take ordinary findings for secrets: only the
    // redacted case has anything to replace, even read as one text.
    let r = driftwatch::config::Config::default().redaction.redactor().expect("valid").expect("on by default");
    for (name, json) in build::all() {
        let mut text = json.clone();
        let hits = r.redact_text(&mut text);
        assert_eq!(!hits.is_empty(), name.ends_with("_redacted"), "{name}: {text}");
        assert_eq!(json.contains("\"driftwatch.redacted\":true"), name.ends_with("_redacted"), "{name}");
    }
}
