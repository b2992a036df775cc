//! The policy compiled: globs, CIDRs and dates checked once, at load, with
//! the field that is wrong; matching is then allocation-free lookups.

use super::spec::{self, Approval, CONTAINER_KEYS, KINDS, Match, Mode, PolicySpec, RULE_NAMES};
use globset::{GlobBuilder, GlobMatcher};
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// A policy field that is wrong: its path below `policy` and why.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyError {
    /// e.g. `["approvals", 2, "match", "endpoint"]`.
    pub path: Vec<PathSeg>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

fn err(path: Vec<PathSeg>, message: impl Into<String>) -> PolicyError {
    PolicyError { path, message: message.into() }
}

/// A glob over a text value.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    /// None: the text is literal (compared as is).
    glob: Option<GlobMatcher>,
}

impl Pattern {
    /// `path`: `*` stays within a directory and `**` crosses them.
    pub fn new(text: &str, path: bool) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if !text.contains(['*', '?', '[', '{']) {
            return Ok(Pattern { text: text.to_string(), glob: None });
        }
        let g = GlobBuilder::new(text)
            .literal_separator(path)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("{text:?} is not a valid glob: {}", e.kind()))?;
        Ok(Pattern { text: text.to_string(), glob: Some(g.compile_matcher()) })
    }

    pub fn matches(&self, s: &str) -> bool {
        match &self.glob {
            None => self.text == s,
            Some(g) => g.is_match(s),
        }
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The literal text, when this is not a glob.
    pub fn literal(&self) -> Option<&str> {
        self.glob.is_none().then_some(self.text.as_str())
    }

    /// For `dir/**` and `dir/*`: `dir/` (every path below it matches, `*`
    /// only one level), with whether the match is recursive.
    pub fn dir_prefix(&self) -> Option<(&str, bool)> {
        let t = &self.text;
        for (suffix, recursive) in [("/**", true), ("/*", false)] {
            if let Some(dir) = t.strip_suffix(suffix)
                && !dir.contains(['*', '?', '[', '{'])
            {
                return Some((&t[..dir.len() + 1], recursive));
            }
        }
        None
    }
}

/// `CIDR:port`, `CIDR`, `:port`.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub net: Option<(IpAddr, u8)>,
    pub port: Option<u16>,
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        let bad = |why: &str| format!("{s:?} is not an endpoint ({why}); write CIDR:port, CIDR, :port or IP:port");
        let s = s.trim();
        if let Some(p) = s.strip_prefix(':') {
            return Ok(Endpoint { net: None, port: Some(parse_port(p).map_err(|e| bad(&e))?) });
        }
        // IPv6 with a port is bracketed: [fd00::]/8:443, [::1]:8080.
        let (addr_part, port) = if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            let (prefix, port) = match after.split_once(':') {
                Some((prefix, p)) => (prefix, Some(parse_port(p).map_err(|e| bad(&e))?)),
                None => (after, None),
            };
            (format!("{inside}{prefix}"), port)
        } else if s.matches(':').count() == 1 {
            let (a, p) = s.split_once(':').unwrap_or((s, ""));
            (a.to_string(), Some(parse_port(p).map_err(|e| bad(&e))?))
        } else {
            (s.to_string(), None)
        };
        let (ip, len) = match addr_part.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (addr_part.as_str(), None),
        };
        let ip: IpAddr = ip.parse().map_err(|_| bad("bad address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(|| bad("bad prefix length"))?,
            None => max,
        };
        Ok(Endpoint { net: Some((ip, len)), port })
    }

    pub fn matches(&self, ip: Option<IpAddr>, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        match (self.net, ip) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some((net, len)), Some(ip)) => in_net(net, len, ip),
        }
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("bad port {p:?}"))
}

fn in_net(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    // An IPv4-mapped IPv6 address is the IPv4 address.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), len),
        (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), len),
        // 0.0.0.0/0 and ::/0 both mean "anywhere".
        (IpAddr::V4(n), IpAddr::V6(_)) => len == 0 && n == Ipv4Addr::UNSPECIFIED,
        (IpAddr::V6(n), IpAddr::V4(_)) => len == 0 && n == Ipv6Addr::UNSPECIFIED,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let (full, rest) = ((len / 8) as usize, len % 8);
    if a[..full] != b[..full] {
        return false;
    }
    rest == 0 || (a[full] ^ b[full]) >> (8 - rest) == 0
}

/// A compiled `match`.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub namespace: Option<Pattern>,
    pub workload: Option<Pattern>,
    pub workload_kind: Option<Pattern>,
    /// (label, the same as a finding's key `k8s.pod.label.<label>`, pattern).
    pub pod_labels: Vec<(String, String, Pattern)>,
    pub container: Option<Pattern>,
    pub image: Option<Pattern>,
    pub kind: Option<&'static str>,
    pub rule: Option<Pattern>,
    pub executable: Option<Pattern>,
    pub parent_executable: Option<Pattern>,
    pub command_args: Option<Pattern>,
    pub file_path: Option<Pattern>,
    pub endpoint: Option<Endpoint>,
}

/// Normalises an image repository like `approved_digests`: `nginx` is
/// `docker.io/library/nginx`; a tag or digest is dropped.
pub fn normalise_image(image: &str) -> Option<String> {
    crate::enrich::image::ImageRef::parse(image).ok().map(|r| r.name())
}

fn compile_match(m: &Match, at: &[PathSeg]) -> Result<Matcher, PolicyError> {
    let field = |k: &str| -> Vec<PathSeg> { at.iter().cloned().chain([PathSeg::Key(k.into())]).collect() };
    let pat = |v: &Option<String>, k: &str, path: bool| -> Result<Option<Pattern>, PolicyError> {
        v.as_deref().map(|t| Pattern::new(t, path).map_err(|e| err(field(k), e))).transpose()
    };
    let mut out = Matcher {
        namespace: pat(&m.namespace, "namespace", false)?,
        workload: pat(&m.workload, "workload", false)?,
        workload_kind: pat(&m.workload_kind, "workload_kind", false)?,
        container: pat(&m.container, "container", false)?,
        rule: pat(&m.rule, "rule", false)?,
        executable: pat(&m.executable, "executable", true)?,
        parent_executable: pat(&m.parent_executable, "parent_executable", true)?,
        command_args: pat(&m.command_args, "command_args", false)?,
        file_path: pat(&m.file_path, "file_path", true)?,
        ..Default::default()
    };
    for (k, v) in &m.pod_labels {
        let p = Pattern::new(v, false)
            .map_err(|e| err(field("pod_labels").into_iter().chain([PathSeg::Key(k.clone())]).collect(), e))?;
        out.pod_labels.push((k.clone(), format!("k8s.pod.label.{k}"), p));
    }
    if let Some(image) = &m.image {
        // A literal name is normalised; a glob is matched against normalised names.
        let text = if image.contains(['*', '?', '[', '{']) {
            image.clone()
        } else {
            normalise_image(image).ok_or_else(|| err(field("image"), format!("{image:?} is not an image name")))?
        };
        out.image = Some(Pattern::new(&text, false).map_err(|e| err(field("image"), e))?);
    }
    if let Some(k) = &m.kind {
        out.kind = Some(
            KINDS
                .into_iter()
                .find(|x| x == k)
                .ok_or_else(|| err(field("kind"), format!("{k:?} is not a kind (one of {})", KINDS.join(", "))))?,
        );
    }
    if let Some(r) = &out.rule {
        if !RULE_NAMES.iter().any(|n| r.matches(n)) {
            return Err(err(field("rule"), format!("{:?} names no rule (rules: {})", r.text(), RULE_NAMES.join(", "))));
        }
        if let Some(k) = out.kind
            && !RULE_NAMES.iter().any(|n| r.matches(n) && kind_of_rule(n) == k)
        {
            return Err(err(field("rule"), format!("{:?} names no rule of kind {k}", r.text())));
        }
    }
    if let Some(e) = &m.endpoint {
        out.endpoint = Some(Endpoint::parse(e).map_err(|e| err(field("endpoint"), e))?);
    }
    if let Some(t) = &m.workload_kind
        && !t.contains(['*', '?'])
        && !WORKLOAD_KINDS.contains(&t.as_str())
    {
        return Err(err(
            field("workload_kind"),
            format!("{t:?} is not a workload kind (one of {})", WORKLOAD_KINDS.join(", ")),
        ));
    }
    Ok(out)
}

/// `k8s.workload.kind` values.
pub const WORKLOAD_KINDS: [&str; 7] = ["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"];

/// The kind of a rule, from its name (the rule table's naming is stable).
pub fn kind_of_rule(rule: &str) -> &'static str {
    match rule {
        "package_manager_exec" | "package_database_write" => "package",
        "shell_in_container" | "terminal_shell_in_container" => "shell",
        "loader_injection_env" | "ephemeral_container_added" => "config",
        r if r.starts_with("exec_") => "binary",
        r if r.starts_with("file_") => "file",
        r if r.starts_with("network_") => "network",
        _ => "config",
    }
}

/// One approval, compiled.
#[derive(Debug, Clone)]
pub struct CompiledApproval {
    pub name: String,
    pub reason: String,
    pub m: Matcher,
    /// Unix seconds after which it no longer applies.
    pub expires: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct CompiledMode {
    pub m: Matcher,
    pub mode: Mode,
}

/// The whole policy, compiled.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    pub approvals: Vec<CompiledApproval>,
    pub modes: Vec<CompiledMode>,
    pub default_mode: Mode,
    pub emit_approved: bool,
    pub approve_pod_spec: bool,
}

/// Most approvals one policy may list (each finding is checked against them).
pub const MAX_APPROVALS: usize = 1024;

/// Names reserved for approvals by construction.
pub const BUILTIN_APPROVALS: [&str; 4] = ["probe", "lifecycle_hook", "init_container", "learned"];

pub fn compile(spec: &PolicySpec) -> Result<Compiled, PolicyError> {
    let key = |parts: &[PathSeg]| -> Vec<PathSeg> { parts.to_vec() };
    let k = |s: &str| PathSeg::Key(s.into());
    if spec.approvals.len() > MAX_APPROVALS {
        return Err(err(
            key(&[k("approvals")]),
            format!("lists {} approvals, at most {MAX_APPROVALS}", spec.approvals.len()),
        ));
    }
    let mut out = Compiled {
        default_mode: spec.default_mode,
        emit_approved: spec.emit_approved,
        approve_pod_spec: spec.approve_pod_spec,
        ..Default::default()
    };
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, a) in spec.approvals.iter().enumerate() {
        let at = |f: &str| key(&[k("approvals"), PathSeg::Index(i), k(f)]);
        out.approvals.push(compile_approval(a, i, &at, &mut names)?);
    }
    for (i, r) in spec.modes.iter().enumerate() {
        let at = vec![k("modes"), PathSeg::Index(i), k("match")];
        let given = r.matches.given();
        if given.is_empty() {
            return Err(err(
                at,
                "must name at least one of namespace, workload, workload_kind, pod_labels, container, image",
            ));
        }
        if let Some(bad) = given.iter().find(|g| !CONTAINER_KEYS.contains(g)) {
            return Err(err(
                at.into_iter().chain([k(bad)]).collect(),
                format!("a mode applies to whole containers: {bad} is not one of {}", CONTAINER_KEYS.join(", ")),
            ));
        }
        out.modes.push(CompiledMode { m: compile_match(&r.matches, &at)?, mode: r.mode });
    }
    Ok(out)
}

fn compile_approval<'a>(
    a: &'a Approval,
    i: usize,
    at: &dyn Fn(&str) -> Vec<PathSeg>,
    names: &mut BTreeMap<&'a str, usize>,
) -> Result<CompiledApproval, PolicyError> {
    let n = &a.name;
    if n.is_empty() || n.len() > 63 || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(err(at("name"), format!("{n:?} must be 1 to 63 characters of a-z, A-Z, 0-9, '-', '_', '.'")));
    }
    if BUILTIN_APPROVALS.contains(&n.as_str()) {
        return Err(err(at("name"), format!("{n:?} is the name of a built-in approval")));
    }
    if let Some(first) = names.insert(n, i) {
        return Err(err(at("name"), format!("{n:?} is also the name of approvals[{first}]: names must be unique")));
    }
    if a.reason.trim().is_empty() {
        return Err(err(at("reason"), "must say why this is not drift (the audit trail)"));
    }
    let Some(m) = &a.matches else {
        return Err(err(at("name"), format!("approval {n:?} has no match: an approval must name its scope")));
    };
    if m.given().is_empty() {
        return Err(err(at("match"), "names nothing: an approval must name its scope (at least one key)"));
    }
    let compiled = compile_match(m, &at("match"))?;
    let expires = a.expires.as_deref().map(|e| parse_expiry(e).map_err(|msg| err(at("expires"), msg))).transpose()?;
    Ok(CompiledApproval { name: n.clone(), reason: a.reason.clone(), m: compiled, expires })
}

/// `YYYY-MM-DD` is the end of that day (UTC); RFC 3339 is exact.
fn parse_expiry(s: &str) -> Result<i64, String> {
    use time::{Date, OffsetDateTime, format_description::well_known::Rfc3339, macros::format_description};
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let d = Date::parse(s, format_description!("[year]-[month]-[day]"))
        .map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD) or an RFC 3339 time"))?;
    Ok(d.with_hms(23, 59, 59).map_err(|e| e.to_string())?.assume_utc().unix_timestamp())
}

impl spec::Mode {
    /// Metric label.
    pub fn label(self) -> &'static str {
        self.as_str()
    }
}
