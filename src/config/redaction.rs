//! `redaction`: secrets in findings (command lines, messages, paths) replaced
//! before any sink sees them (src/redact.rs). Built-in patterns are on by
//! default, each can be turned off; users add option names and regular
//! expressions. Every pattern is compiled when the config is loaded, so a bad
//! one is an error naming the file, line and field.

use super::{At, Config, ConfigError, Seg};
use crate::redact::{self, Redactor, Spec, SpecError, SpecField, UserPattern};
use serde::Deserialize;

/// Builds the error of a field (`path`), pointing at its value or its key.
type Error<'a> = &'a dyn Fn(&[Seg], At, String) -> ConfigError;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Redaction {
    /// false: findings go out as the kernel saw them.
    pub enabled: bool,
    /// Each built-in pattern, on or off (a map: a user file sets only those it changes).
    pub builtin_patterns: BuiltinPatterns,
    /// Extra options whose value is a secret, as written: `--db-pass`, `-storepass`, `-p`.
    pub flags: Vec<String>,
    /// The user's patterns: a name (the counter's label) and a regular expression.
    pub patterns: Vec<Pattern>,
}

impl Default for Redaction {
    fn default() -> Self {
        Self { enabled: true, builtin_patterns: BuiltinPatterns::default(), flags: Vec::new(), patterns: Vec::new() }
    }
}

/// The built-in patterns (`redact::BUILTINS`), all on by default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BuiltinPatterns {
    /// `--password x`, `--db-password=x`, `--token x`, `--api-key x`, `--user name:password`.
    pub password_flag: bool,
    /// `token=x`, `AWS_SECRET_ACCESS_KEY=x`, `?access_token=x&`, `"password": "x"`.
    pub secret_assignment: bool,
    /// The password of `scheme://user:password@host`.
    pub url_credentials: bool,
    /// `Authorization: Bearer x`, `X-Api-Key: x`, `Cookie: ...`.
    pub authorization_header: bool,
    /// Well-known token shapes: GitHub, GitLab, Slack, Vault, Stripe, Google API keys, JWTs.
    pub token_formats: bool,
}

impl Default for BuiltinPatterns {
    fn default() -> Self {
        Self {
            password_flag: true,
            secret_assignment: true,
            url_credentials: true,
            authorization_header: true,
            token_formats: true,
        }
    }
}

impl BuiltinPatterns {
    /// The names of those that are on, in `redact::BUILTINS` order.
    pub fn enabled(&self) -> Vec<&'static str> {
        let on = [
            self.password_flag,
            self.secret_assignment,
            self.url_credentials,
            self.authorization_header,
            self.token_formats,
        ];
        redact::BUILTINS.into_iter().zip(on).filter(|(_, on)| *on).map(|(n, _)| n).collect()
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pattern {
    /// Label of `driftwatch_redactions_total{pattern}`: a-z, 0-9, _.
    pub name: String,
    /// A regular expression (Rust `regex` syntax): its groups named `secret` or
    /// `secret_*` are replaced, or the whole match when it has none.
    pub regex: String,
}

impl Redaction {
    /// What the redactor is built from; empty when redaction is off.
    pub fn spec(&self) -> Spec {
        if !self.enabled {
            return Spec::default();
        }
        Spec {
            builtins: self.builtin_patterns.enabled(),
            flags: self.flags.clone(),
            patterns: self
                .patterns
                .iter()
                .map(|p| UserPattern { name: p.name.clone(), regex: p.regex.clone() })
                .collect(),
        }
    }

    /// The compiled redactor; None when redaction is off or has nothing to
    /// apply. The config was validated: its patterns compile.
    pub fn redactor(&self) -> Result<Option<Redactor>, SpecError> {
        let spec = self.spec();
        if spec.labels().is_empty() {
            return Ok(None);
        }
        Redactor::new(&spec).map(Some)
    }
}

/// Compiles the section as the agent will (off or not: a bad pattern is an
/// error either way).
pub(super) fn validate(c: &Config, error: Error) -> Result<(), ConfigError> {
    let r = &c.redaction;
    let spec = Redaction { enabled: true, ..r.clone() }.spec();
    let Err(e) = Redactor::new(&spec) else { return Ok(()) };
    let key = |rest: &[Seg]| -> Vec<Seg> { [Seg::from("redaction")].into_iter().chain(rest.iter().cloned()).collect() };
    let (path, message) = match e.at {
        SpecField::Flag(i) => (key(&[Seg::from("flags"), Seg::Index(i)]), e.message),
        SpecField::Flags => (key(&[Seg::from("flags")]), e.message),
        SpecField::Patterns => (key(&[Seg::from("patterns")]), e.message),
        SpecField::PatternName(i) => (key(&[Seg::from("patterns"), Seg::Index(i), Seg::from("name")]), e.message),
        SpecField::PatternRegex(i) => {
            let regex = &r.patterns[i].regex;
            let message = if regex.chars().count() <= 120 { format!("{regex:?} {}", e.message) } else { e.message };
            (key(&[Seg::from("patterns"), Seg::Index(i), Seg::from("regex")]), message)
        }
    };
    Err(error(&path, At::Value, message))
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn err(text: &str) -> String {
        Config::from_yaml(text, "p.yaml").unwrap_err().to_string()
    }

    #[test]
    fn on_by_default_with_every_builtin() {
        let c = Config::default();
        assert!(c.redaction.enabled);
        assert_eq!(c.redaction, Redaction::default(), "the embedded YAML and Default agree");
        assert_eq!(c.redaction.spec().labels(), redact::BUILTINS);
        assert!(c.redaction.redactor().unwrap().is_some());
    }

    #[test]
    fn builtins_turn_off_one_by_one_and_user_parts_add_labels() {
        let c = Config::from_yaml(
            "redaction:\n  builtin_patterns:\n    token_formats: false\n    url_credentials: false\n\
             \x20 flags: [--db-pass, -p]\n  patterns:\n    - name: acme_key\n      regex: 'acme_[a-f0-9]{32}'\n",
            "f.yaml",
        )
        .unwrap();
        assert_eq!(
            c.redaction.spec().labels(),
            ["password_flag", "secret_assignment", "authorization_header", "flags", "acme_key"]
        );
        let c = Config::from_yaml("redaction:\n  enabled: false\n", "f.yaml").unwrap();
        assert!(c.redaction.spec().labels().is_empty());
        assert!(c.redaction.redactor().unwrap().is_none());
        assert!(c.redaction.builtin_patterns.password_flag, "defaults kept");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        let e = err("redaction:\n  enable: true\n");
        assert!(e.starts_with("config p.yaml: line 2, column 3: redaction.enable: unknown field `enable`"), "{e}");
        let e = err("redaction:\n  builtin_patterns:\n    password_flags: false\n");
        assert!(
            e.starts_with("config p.yaml: line 3, column 5: redaction.builtin_patterns.password_flags: unknown field"),
            "{e}"
        );
        let e = err("redaction:\n  patterns:\n    - name: a\n      regexp: x\n");
        assert!(e.contains("line 4") && e.contains("regexp"), "{e}");
        let e = err("redaction:\n  patterns:\n    - name: a\n");
        assert!(e.contains("line 3") && e.contains("missing field `regex`"), "{e}");
    }

    #[test]
    fn bad_patterns_name_file_line_and_field() {
        let e = err(
            "redaction:\n  patterns:\n    - {name: ok, regex: 'a+'}\n    - name: broken\n      regex: '(unclosed'\n",
        );
        assert_eq!(
            e,
            "config p.yaml line 5: field `redaction.patterns[1].regex`: \"(unclosed\" is not a valid regular expression: unclosed group"
        );
        let e = err("redaction:\n  patterns:\n    - {name: any, regex: '.*'}\n");
        assert!(
            e.starts_with("config p.yaml line 3: field `redaction.patterns[0].regex`: \".*\" matches the empty"),
            "{e}"
        );
        let e = err("redaction:\n  patterns:\n    - name: Bad-Name\n      regex: x\n");
        assert!(e.starts_with("config p.yaml line 3: field `redaction.patterns[0].name`: \"Bad-Name\" must be"), "{e}");
        let e = err("redaction:\n  patterns:\n    - {name: url_credentials, regex: x}\n");
        assert!(e.contains("redaction.patterns[0].name") && e.contains("built-in"), "{e}");
        let e = err("redaction:\n  flags:\n    - --db-pass\n    - password\n");
        assert!(
            e.starts_with("config p.yaml line 4: field `redaction.flags[1]`: \"password\" must be an option"),
            "{e}"
        );
        let e = err("redaction:\n  flags: [--db-pass, --DB_PASS]\n");
        assert!(e.starts_with("config p.yaml line 2: field `redaction.flags[1]`: ") && e.contains("twice"), "{e}");
        let many: String = (0..33).map(|i| format!("    - {{name: p{i}, regex: x}}\n")).collect();
        let e = err(&format!("redaction:\n  patterns:\n{many}"));
        assert!(
            e.starts_with("config p.yaml line 3: field `redaction.patterns`: lists 33 patterns, at most 32"),
            "{e}"
        );
        // Off, a bad pattern is still an error: turning it on later must not fail.
        let e = err("redaction:\n  enabled: false\n  patterns: [{name: x, regex: '[z-a]'}]\n");
        assert!(e.contains("redaction.patterns[0].regex") && e.contains("line 3"), "{e}");
    }
}
