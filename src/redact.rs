//! Redaction: secrets a container put in a command line (or in text built from
//! one) replaced by [`MARKER`] before a finding reaches any sink.
//!
//! Pure: strings in, strings out; applied to findings by
//! `pipeline::redact`. Every pattern is a regular expression of the `regex`
//! crate (finite automata: time linear in the input, no backtracking),
//! compiled once at startup under a size limit; inputs are bounded by the
//! kernel's buffers (512 bytes of argv, 512 of path). What is replaced is the
//! secret *value*: the flag or key in front of it stays, so the finding still
//! says what was passed (`--password=[REDACTED]`).
//!
//! A pattern replaces its capture groups named `secret` or `secret_<anything>`
//! (each that took part in the match); a pattern without such a group replaces
//! its whole match. A command line is matched as one string, its arguments
//! joined by single spaces (as `ps` prints it); a group named `secret_next...`
//! that starts an argument covers that whole argument (`--password` `hunter 2`
//! as two arguments loses both words of the second).
//!
//! Fast path: one [`RegexSet`] pass answers "does any pattern match"; only then
//! is anything located, allocated or rewritten. The command line is joined in
//! a per-thread buffer, reused.

use crate::event::Text;
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use std::cell::RefCell;

/// What a secret is replaced with.
pub const MARKER: &str = "[REDACTED]";

/// The built-in patterns, by name (config `redaction.builtin_patterns.<name>`,
/// and the `pattern` label of `driftwatch_redactions_total`).
pub const BUILTINS: [&str; 5] =
    ["password_flag", "secret_assignment", "url_credentials", "authorization_header", "token_formats"];

/// The label of the user's extra flags (`redaction.flags`).
pub const FLAGS_LABEL: &str = "flags";

/// Bounds of the user's part of the policy.
pub const MAX_PATTERNS: usize = 32;
pub const MAX_FLAGS: usize = 64;
pub const MAX_PATTERN_LEN: usize = 1024;
pub const MAX_NAME_LEN: usize = 63;
/// Compiled size of one pattern (the regex crate's `size_limit`).
pub const SIZE_LIMIT: usize = 1 << 20;
/// Lazy-DFA cache per pattern and thread; a pattern that needs more falls back
/// to a slower automaton, still linear.
const DFA_LIMIT: usize = 256 << 10;

/// Key words whose value is a secret, in flags (`--db-password x`) and
/// assignments (`DB_PASSWORD=x`, `keyStorePassword=x`): how the name ends.
const WORDS: &str = r"password|passwd|passphrase|secret|token|api[-_]?key|access[-_]?key|secret[-_]?key";
/// Words of a flag before its key word (`db-`, `old_`, glued `keystore`), but
/// never a first word `no` (`--no-password db` is a switch; `db` no secret).
const FLAG_PREFIX: &str =
    r"(?:(?:[a-mo-z0-9][a-z0-9]*|n|n[a-np-z0-9][a-z0-9]*|no[a-z0-9]+)[-_](?:[a-z0-9]+[-_])*)?[a-z0-9]*";
/// A flag's value after `=`: quoted, or up to the next space (a closing quote
/// of `sh -c '...'` included: better one quote too many than a secret's end).
const VALUE_EQ: &str = r#""[^"]*"|'[^']*'|\S+"#;
/// A flag's value as the next word: not another long option, not `-` (stdin).
const VALUE_NEXT: &str = r#""[^"]*"|'[^']*'|[^\s\-'"]\S*|-[^\s\-]\S*"#;
/// Where a flag starts: the start of the text or of a word (quotes of `sh -c '...'` included).
const WORD_START: &str = r#"(?:^|[\s'"])"#;

/// The regular expressions of a built-in pattern; `tail` ones apply only to the
/// end of a command line the kernel cut (the secret's terminator is gone).
fn builtin_sources(name: &str) -> Vec<(String, bool)> {
    let v = |s: String| (s, false);
    match name {
        "password_flag" => vec![
            v(format!(
                r"(?i){WORD_START}--?{FLAG_PREFIX}(?:{WORDS})(?:=(?P<secret>{VALUE_EQ})|\s+(?P<secret_next>{VALUE_NEXT}))"
            )),
            // curl, wget: --user name:password, --proxy-user name:password.
            v(format!(r#"(?i){WORD_START}--(?:proxy-)?user(?:=|\s+)[^\s:'"]+:(?P<secret>[^\s'"]+)"#)),
        ],
        "secret_assignment" => vec![
            v(format!(r#"(?i)(?:^|[^a-z0-9_.\-])[a-z0-9_.\-]*(?:{WORDS})=(?P<secret>"[^"]*"|'[^']*'|[^\s&]+)"#)),
            // JSON, as in `curl -d '{"password":"..."}'`.
            v(format!(r#"(?i)"[a-z0-9_.\-]*(?:{WORDS})"\s*:\s*"(?P<secret>(?:[^"\\]|\\.)*)""#)),
        ],
        "url_credentials" => {
            let url = r#"(?i)[a-z][a-z0-9+.\-]*://[^\s/?#@:'"]*:(?P<secret>[^\s/?#@]+)"#;
            vec![v(format!("{url}@")), (format!("{url}$"), true)]
        }
        "authorization_header" => vec![
            v(concat!(
                r"(?i)(?:^|[^a-z0-9\-])(?:proxy-authorization|authorization|x-api-key|x-auth-token|x-access-token",
                r"|x-vault-token|private-token)\s*:\s*(?:(?:bearer|basic|token|negotiate|ntlm)\s+)?",
                r#"(?P<secret>[^\s'"]+)"#
            )
            .into()),
            v(r#"(?i)(?:^|[^a-z0-9\-])(?:set-)?cookie\s*:\s*(?P<secret>[^\s;'"]+(?:;\s*[^\s;'"=]+=[^\s;'"]*)*)"#
                .into()),
        ],
        "token_formats" => vec![v(concat!(
            r"(?:^|[^A-Za-z0-9_])(?P<secret>",
            r"gh[pousr]_[A-Za-z0-9]{36,}",      // GitHub tokens
            r"|github_pat_[A-Za-z0-9_]{22,}",   // GitHub fine-grained tokens
            r"|glpat-[A-Za-z0-9_\-]{20,}",      // GitLab access tokens
            r"|xox[abposr]-[A-Za-z0-9\-]{10,}", // Slack tokens
            r"|hv[sbr]\.[A-Za-z0-9_\-]{24,}",   // Vault tokens
            r"|[sr]k_live_[A-Za-z0-9]{24,}",    // Stripe live keys
            r"|AIza[0-9A-Za-z_\-]{35}",         // Google API keys
            r"|eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}", // JWTs
            r")"
        )
        .into())],
        _ => Vec::new(),
    }
}

/// One user pattern: its label and its regular expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPattern {
    pub name: String,
    pub regex: String,
}

/// What to redact: the built-ins that are on, extra flags, user patterns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Spec {
    pub builtins: Vec<&'static str>,
    /// Options whose value is a secret, as written: `--db-pass`, `-p`.
    pub flags: Vec<String>,
    pub patterns: Vec<UserPattern>,
}

impl Spec {
    /// The `pattern` label of every part that can redact, in order.
    pub fn labels(&self) -> Vec<String> {
        let mut out: Vec<String> = self.builtins.iter().map(|b| b.to_string()).collect();
        if !self.flags.is_empty() {
            out.push(FLAGS_LABEL.into());
        }
        out.extend(self.patterns.iter().map(|p| p.name.clone()));
        out
    }
}

/// Which part of a [`Spec`] is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecField {
    Flag(usize),
    PatternName(usize),
    PatternRegex(usize),
    /// The list itself (too many entries).
    Flags,
    Patterns,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    pub at: SpecField,
    pub message: String,
}

/// The labels (bits of `labels()` indices) that replaced something.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hits(u64);

impl Hits {
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Label indices, ascending.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..64).filter(move |i| self.0 & (1 << i) != 0)
    }

    fn add(&mut self, label: usize) {
        self.0 |= 1 << label;
    }
}

impl std::ops::BitOrAssign for Hits {
    fn bitor_assign(&mut self, o: Hits) {
        self.0 |= o.0;
    }
}

/// One compiled regular expression.
#[derive(Debug)]
struct Rule {
    label: usize,
    regex: Regex,
    /// The groups replaced, and whether each covers a whole argument it starts;
    /// empty: the whole match.
    groups: Vec<(usize, bool)>,
}

/// A stretch of text to replace, found by a label.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    label: usize,
    /// A `secret_next...` group: when it starts an argument, it covers all of it.
    whole_arg: bool,
}

#[derive(Debug)]
pub struct Redactor {
    labels: Vec<String>,
    rules: Vec<Rule>,
    /// Every rule but the tail ones, for the one-pass test.
    set: RegexSet,
    /// Rules that apply to the end of a cut command line only.
    tail: Vec<Rule>,
    /// Texts `set` did not match lately.
    clean: Clean,
}

/// Texts kept at most by [`Clean`], and the longest kept.
const CLEAN_SLOTS: usize = 32;
const CLEAN_MAX_LEN: usize = 1024;

/// Texts the set did not match lately, kept whole (a hit is equal bytes, so
/// nothing that may hold a secret is skipped). A storm of findings repeats
/// its texts (`sh -c ...`, `/bin/sh`, the message about the same container):
/// the set's automaton over each of them was 7% of the agent's CPU in a
/// shell storm; a hit is a hash and a compare. A new text takes the place
/// (and the buffer) of the oldest: no allocation once the buffers have grown.
/// Only the thread that takes the lock uses it: another runs the set (no
/// waiting on the hot path, the gauge's count included).
#[derive(Default)]
struct Clean {
    kept: std::sync::Mutex<crate::recent::Recent<(u64, String), CLEAN_SLOTS>>,
    /// `kept`'s length, read without the lock.
    len: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Clean {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clean")
    }
}

impl Clean {
    fn hash(text: &str) -> u64 {
        use std::hash::BuildHasher;
        rustc_hash::FxBuildHasher.hash_one(text)
    }

    /// The key `text` is kept under; None for a text too long to keep.
    fn key(text: &str) -> Option<u64> {
        (text.len() <= CLEAN_MAX_LEN).then(|| Self::hash(text))
    }

    /// Whether `text` (whose [`Self::key`] is `h`) was found clean lately.
    fn holds(&self, text: &str, h: u64) -> bool {
        self.kept.try_lock().is_ok_and(|kept| kept.find(|(k, t)| *k == h && t == text).is_some())
    }

    /// Texts kept.
    fn len(&self) -> usize {
        self.len.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `text` (whose [`Self::key`] is `h`) was found clean.
    fn keep(&self, text: &str, h: u64) {
        if let Ok(mut kept) = self.kept.try_lock() {
            kept.push_reusing(|old| {
                // Room for a little more: texts of a storm differ by a few bytes.
                let mut buf = old.map_or_else(|| String::with_capacity(text.len().max(120)), |(_, b)| b);
                buf.clear();
                buf.push_str(text);
                (h, buf)
            });
            self.len.store(kept.len(), std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// A command line that was redacted: which labels, and the line before and
/// after (joined by spaces), to rewrite text that quotes it (a message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgsRedaction {
    pub hits: Hits,
    pub before: String,
    pub after: String,
}

impl ArgsRedaction {
    /// Replaces the original command line wherever `s` quotes it verbatim.
    pub fn rewrite(&self, s: &mut String) {
        if !self.before.is_empty() && s.contains(&self.before) {
            *s = s.replace(&self.before, &self.after);
        }
    }
}

thread_local! {
    /// The command line being matched, joined; reused (no allocation per finding).
    static JOINED: RefCell<String> = RefCell::new(String::with_capacity(1024));
}

fn compile(src: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(src).size_limit(SIZE_LIMIT).dfa_size_limit(DFA_LIMIT).build()
}

/// The regex crate's error in one line: what is wrong, without its drawing.
fn describe(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(s) => {
            let what = s.lines().find_map(|l| l.strip_prefix("error: ")).unwrap_or(s.as_str());
            format!("is not a valid regular expression: {what}")
        }
        regex::Error::CompiledTooBig(n) => {
            format!("is too large once compiled (over {} KiB): simplify it or split it", n / 1024)
        }
        other => format!("cannot be compiled: {other}"),
    }
}

/// The regex of the user's flags: long ones (`--db-pass`, `-password`:
/// dashes and case do not matter, `_` = `-`) and short ones (`-p`: exact case,
/// the value may be attached, `-phunter2`).
fn flags_source(flags: &[String]) -> Option<String> {
    let (mut long, mut short) = (Vec::new(), Vec::new());
    for f in flags {
        let name = f.trim_start_matches('-');
        if f.len() == 2 && f.starts_with('-') {
            short.push(regex::escape(name));
        } else {
            let parts: Vec<String> = name.split(['-', '_']).map(regex::escape).collect();
            long.push(parts.join("[-_]"));
        }
    }
    let mut alts = Vec::new();
    if !long.is_empty() {
        alts.push(format!(r"--?(?:{})(?:=(?P<secret>{VALUE_EQ})|\s+(?P<secret_next>{VALUE_NEXT}))", long.join("|")));
    }
    if !short.is_empty() {
        alts.push(format!(
            r#"(?-i:-(?:{}))(?:=?(?P<secret_attached>[^\s='"]\S*)|\s+(?P<secret_next_short>{VALUE_NEXT}))"#,
            short.join("|")
        ));
    }
    (!alts.is_empty()).then(|| format!("(?i){WORD_START}(?:{})", alts.join("|")))
}

/// A flag as the config may name it: `--name`, `-name` or `-x`.
fn check_flag(f: &str) -> Result<(), String> {
    let name = f.strip_prefix("--").or_else(|| f.strip_prefix('-'));
    let ok = name.is_some_and(|n| {
        !n.is_empty()
            && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    });
    if ok { Ok(()) } else { Err(format!("{f:?} must be an option as written on a command line: --name, -name or -x")) }
}

/// How flags compare: short ones exactly, long ones without dashes, case or `_`/`-`.
fn flag_key(f: &str) -> String {
    if f.len() == 2 {
        return f.to_string();
    }
    f.trim_start_matches('-').to_ascii_lowercase().replace('_', "-")
}

impl Rule {
    fn new(label: usize, regex: Regex) -> Rule {
        let groups = regex
            .capture_names()
            .enumerate()
            .filter_map(|(i, n)| {
                let n = n?;
                (n == "secret" || n.starts_with("secret_")).then(|| (i, n.starts_with("secret_next")))
            })
            .collect();
        Rule { label, regex, groups }
    }

    /// Pushes the spans this rule replaces in `text`.
    fn spans(&self, text: &str, out: &mut Vec<Span>) {
        for c in self.regex.captures_iter(text) {
            let label = self.label;
            if self.groups.is_empty()
                && let Some(m) = c.get(0)
            {
                out.push(Span { start: m.start(), end: m.end(), label, whole_arg: false });
            }
            for &(i, whole_arg) in &self.groups {
                if let Some(m) = c.get(i) {
                    out.push(Span { start: m.start(), end: m.end(), label, whole_arg });
                }
            }
        }
    }
}

impl Redactor {
    /// Compiles a policy; errors name the part of the spec that is wrong.
    pub fn new(spec: &Spec) -> Result<Redactor, SpecError> {
        let err = |at, message: String| SpecError { at, message };
        if spec.flags.len() > MAX_FLAGS {
            return Err(err(SpecField::Flags, format!("lists {} flags, at most {MAX_FLAGS}", spec.flags.len())));
        }
        if spec.patterns.len() > MAX_PATTERNS {
            let n = spec.patterns.len();
            return Err(err(SpecField::Patterns, format!("lists {n} patterns, at most {MAX_PATTERNS}")));
        }
        let mut seen = Vec::new();
        for (i, f) in spec.flags.iter().enumerate() {
            check_flag(f).map_err(|m| err(SpecField::Flag(i), m))?;
            let key = flag_key(f);
            if seen.contains(&key) {
                return Err(err(SpecField::Flag(i), format!("{f:?} is listed twice")));
            }
            seen.push(key);
        }
        let labels = spec.labels();
        let mut rules = Vec::new();
        let mut tail = Vec::new();
        for (label, name) in spec.builtins.iter().enumerate() {
            for (src, is_tail) in builtin_sources(name) {
                // Constant and compiled by every test (tests::builtins_compile_within_the_limits).
                let regex = compile(&src).unwrap_or_else(|e| panic!("built-in pattern {name}: {e}"));
                if is_tail { &mut tail } else { &mut rules }.push(Rule::new(label, regex));
            }
        }
        let mut next = spec.builtins.len();
        if let Some(src) = flags_source(&spec.flags) {
            let regex = compile(&src).map_err(|e| err(SpecField::Flags, format!("flags {}", describe(&e))))?;
            rules.push(Rule::new(next, regex));
            next += 1;
        }
        let mut names: Vec<&str> = BUILTINS.iter().copied().chain([FLAGS_LABEL]).collect();
        for (i, p) in spec.patterns.iter().enumerate() {
            let n = &p.name;
            let valid = !n.is_empty()
                && n.len() <= MAX_NAME_LEN
                && n.starts_with(|c: char| c.is_ascii_lowercase())
                && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                let msg = format!(
                    "{n:?} must be a metric label value of 1 to {MAX_NAME_LEN} characters: a-z, 0-9 and _, starting with a letter"
                );
                return Err(err(SpecField::PatternName(i), msg));
            }
            if names.contains(&n.as_str()) {
                let why =
                    if BUILTINS.contains(&n.as_str()) || n == FLAGS_LABEL { "a built-in name" } else { "listed twice" };
                return Err(err(SpecField::PatternName(i), format!("{n:?} is {why}: pattern names label the counter")));
            }
            names.push(n);
            if p.regex.len() > MAX_PATTERN_LEN {
                let msg = format!("is {} characters long, at most {MAX_PATTERN_LEN}", p.regex.len());
                return Err(err(SpecField::PatternRegex(i), msg));
            }
            let regex = compile(&p.regex).map_err(|e| err(SpecField::PatternRegex(i), describe(&e)))?;
            if regex.is_match("") {
                let msg = "matches the empty text: it would match anywhere".to_string();
                return Err(err(SpecField::PatternRegex(i), msg));
            }
            rules.push(Rule::new(next, regex));
            next += 1;
        }
        debug_assert!(next == labels.len() && next <= 64, "labels fit Hits");
        let set = RegexSetBuilder::new(rules.iter().map(|r| r.regex.as_str()))
            .size_limit(SIZE_LIMIT * (rules.len() + 1))
            .dfa_size_limit(4 * DFA_LIMIT)
            .build()
            .map_err(|e| err(SpecField::Patterns, format!("together {}", describe(&e))))?;
        Ok(Redactor { labels, rules, set, tail, clean: Clean::default() })
    }

    /// The `pattern` label of each index of [`Hits`].
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Texts remembered as clean ([`CLEAN_SLOTS`] at most).
    pub fn clean_entries(&self) -> usize {
        self.clean.len()
    }

    /// Whether any rule of the set matches `text` (remembered for texts it
    /// did not match: [`Clean`]).
    fn set_matches(&self, text: &str) -> bool {
        let key = Clean::key(text);
        if key.is_some_and(|h| self.clean.holds(text, h)) {
            return false;
        }
        let matched = self.set.is_match(text);
        if !matched && let Some(h) = key {
            self.clean.keep(text, h);
        }
        matched
    }

    /// Every span the rules replace in `text`: those the set says match
    /// (`main`), and with `tail` the tail rules.
    fn find(&self, text: &str, main: bool, tail: bool) -> Vec<Span> {
        let mut spans = Vec::new();
        if main {
            for i in self.set.matches(text).iter() {
                self.rules[i].spans(text, &mut spans);
            }
        }
        if tail {
            for r in &self.tail {
                r.spans(text, &mut spans);
            }
        }
        spans
    }

    /// Redacts one text (a `String` or inline `Text`); what matched, or
    /// nothing (and no allocation).
    pub fn redact_text<S: std::ops::Deref<Target = str> + From<String>>(&self, s: &mut S) -> Hits {
        if !self.set_matches(s) {
            return Hits::default();
        }
        let (hits, spans) = merge(self.find(s, true, false));
        if !hits.is_empty() {
            *s = rewrite(s, 0, s.len(), &spans).into();
        }
        hits
    }

    /// Redacts a command line (`truncated`: the kernel cut its end). Matched as
    /// one string, arguments joined by single spaces; each argument keeps what
    /// no span covers. None when nothing matched (and no allocation).
    pub fn redact_args(&self, args: &mut [Text], truncated: bool) -> Option<ArgsRedaction> {
        if args.is_empty() {
            return None;
        }
        JOINED.with(|buf| {
            let mut joined = buf.borrow_mut();
            joined.clear();
            crate::event::push_command_line(&mut joined, args);
            let main = self.set_matches(&joined);
            let tail = truncated && self.tail.iter().any(|r| r.regex.is_match(&joined));
            if !main && !tail {
                return None;
            }
            let mut bounds = Vec::with_capacity(args.len());
            let mut at = 0;
            for a in args.iter() {
                bounds.push((at, at + a.len()));
                at += a.len() + 1;
            }
            let mut spans = self.find(&joined, main, tail);
            extend(&mut spans, &bounds);
            let (hits, spans) = merge(spans);
            if hits.is_empty() {
                return None;
            }
            for (a, &(start, end)) in args.iter_mut().zip(&bounds) {
                let mine: Vec<Span> = spans.iter().filter(|s| s.start < end && s.end > start).copied().collect();
                if !mine.is_empty() {
                    *a = rewrite(&joined, start, end, &mine).into();
                }
            }
            let after = args.join(" ");
            Some(ArgsRedaction { hits, before: joined.clone(), after })
        })
    }
}

/// A `secret_next` span that starts an argument covers the whole argument.
fn extend(spans: &mut [Span], bounds: &[(usize, usize)]) {
    for s in spans.iter_mut().filter(|s| s.whole_arg) {
        if let Some(&(_, end)) = bounds.iter().find(|(start, _)| *start == s.start) {
            s.end = s.end.max(end);
        }
    }
}

/// Sorted, non-empty, overlapping or touching spans joined; the labels that
/// found something.
fn merge(mut spans: Vec<Span>) -> (Hits, Vec<Span>) {
    let mut hits = Hits::default();
    spans.retain(|s| s.end > s.start);
    spans.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        hits.add(s.label);
        match out.last_mut() {
            Some(last) if s.start <= last.end => last.end = last.end.max(s.end),
            _ => out.push(s),
        }
    }
    (hits, out)
}

/// `text[start..end]` with each span (clipped to it) replaced by the marker.
fn rewrite(text: &str, start: usize, end: usize, spans: &[Span]) -> String {
    let mut out = String::with_capacity(end - start + MARKER.len());
    let mut at = start;
    for s in spans {
        let (a, b) = (s.start.max(start), s.end.min(end));
        if a >= b || a < at {
            continue;
        }
        out.push_str(&text[at..a]);
        out.push_str(MARKER);
        at = b;
    }
    out.push_str(&text[at..end]);
    out
}

#[cfg(test)]
mod tests;
