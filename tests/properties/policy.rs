//! The drift policy (`policy:` in the config): any approval or mode, built
//! from the grammar's own pieces and from arbitrary text, loads or fails with
//! an error naming the exact `policy.…` field and its line; one that loads
//! approves a finding only when every key it names matches.

use driftwatch::config::{Config, ConfigError, FileChecks};
use proptest::prelude::*;

const KEYS: [&str; 12] = [
    "namespace",
    "workload",
    "workload_kind",
    "container",
    "image",
    "kind",
    "rule",
    "executable",
    "parent_executable",
    "command_args",
    "file_path",
    "endpoint",
];

const TOKENS: &[&str] = &[
    "*",
    "**",
    "?",
    "/",
    "web",
    "-",
    "exec_",
    "file_written",
    "binary",
    "10.0.0.0/8",
    ":",
    "443",
    "[",
    "]",
    "::",
    "{",
    "}",
    ",",
    "Deployment",
    "docker.io/library/nginx",
    "'",
    "\"",
    " ",
    "\\",
    "#",
    "é",
    "\u{0}",
];

fn value() -> impl Strategy<Value = String> {
    crate::text_from(TOKENS, 24)
}

/// One approval, as YAML flow text, its match keys quoted as YAML strings.
fn approval() -> impl Strategy<Value = (String, Vec<(usize, String)>)> {
    (proptest::collection::vec((0..KEYS.len(), value()), 0..4), value(), proptest::option::of(value())).prop_map(
        |(keys, reason, expires)| {
            let m: Vec<String> =
                keys.iter().map(|(k, v)| format!("{}: {}", KEYS[*k], serde_json::to_string(v).unwrap())).collect();
            let mut s =
                format!("{{name: a1, reason: {}, match: {{{}}}", serde_json::to_string(&reason).unwrap(), m.join(", "));
            if let Some(e) = expires {
                s.push_str(&format!(", expires: {}", serde_json::to_string(&e).unwrap()));
            }
            s.push('}');
            (s, keys)
        },
    )
}

proptest! {
    #![proptest_config(crate::config())]

    /// Any approval: loads, or the error names a `policy.approvals[0]` field
    /// (or the section) and the line it is on.
    #[test]
    fn any_approval_loads_or_names_its_field((a, _) in approval()) {
        let text = format!("policy:\n  approvals:\n    - {a}\n");
        match Config::from_yaml_with(&text, "p.yaml", FileChecks::Skip) {
            Ok(c) => prop_assert_eq!(c.policy.approvals.len(), 1),
            Err(ConfigError::Invalid { field, location, .. }) => {
                prop_assert!(field.starts_with("policy.approvals[0]"), "{field}");
                // Line 3, or later when the text holds a YAML line break (U+0085, U+2028).
                prop_assert!(location.contains("line "), "{location} for {text}");
            }
            Err(ConfigError::Parse { location, message, .. }) => {
                prop_assert!(location.contains("line ") || message.starts_with("policy"), "{location} {message}");
            }
            Err(e) => prop_assert!(false, "{e}"),
        }
    }

    /// Any mode rule: loads, or names its field; a process key is refused.
    #[test]
    fn any_mode_rule_loads_or_names_its_field(k in 0..KEYS.len(), v in value(), mode in prop_oneof!["learn", "monitor", "protect", "block"]) {
        let text = format!("policy:\n  modes:\n    - match: {{{}: {}}}\n      mode: {mode}\n", KEYS[k], serde_json::to_string(&v).unwrap());
        match Config::from_yaml_with(&text, "p.yaml", FileChecks::Skip) {
            Ok(c) => {
                prop_assert!(["namespace", "workload", "workload_kind", "container", "image"].contains(&KEYS[k]));
                prop_assert_eq!(c.policy.modes.len(), 1);
            }
            Err(ConfigError::Invalid { field, location, .. }) => {
                prop_assert!(field.starts_with("policy.modes[0]"), "{field}");
                prop_assert!(location.contains("line "), "{location}");
            }
            Err(ConfigError::Parse { location, .. }) => prop_assert!(location.contains("line "), "{location}"),
            Err(e) => prop_assert!(false, "{e}"),
        }
    }
}
