//! Policy: scoped approvals (the playbook's Validate step, automated) and
//! modes per workload (learn / monitor / protect). Pure: a finding and what
//! is known of its container in, a verdict out. [`spec`] is the config's
//! shape, [`compile`] checks and compiles it, [`learned`] keeps what learn
//! mode saw.

pub mod compile;
pub mod learned;
pub mod protect;
pub mod spec;

pub use compile::{Compiled, PolicyError, compile};
pub use spec::{MODE_ANNOTATION, Mode, PolicySpec};

use crate::classify::{Detail, Finding};
use compile::{Matcher, normalise_image};
use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering},
};

/// What a container is, for container-scope match keys.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    pub namespace: Option<&'a str>,
    pub workload: Option<&'a str>,
    pub workload_kind: Option<&'a str>,
    /// Pod labels by their own key (`app`), or by `k8s.pod.label.app` (`prefixed`).
    pub pod_labels: Option<&'a BTreeMap<String, String>>,
    pub labels_prefixed: bool,
    pub container: Option<&'a str>,
    /// Normalised repository (`docker.io/library/nginx`).
    pub image: Option<&'a str>,
}

impl<'a> Scope<'a> {
    /// Label `k` (`prefixed`: the same as a finding's key, made once).
    fn label(&self, k: &str, prefixed: &str) -> Option<&'a str> {
        let labels = self.pod_labels?;
        labels.get(if self.labels_prefixed { prefixed } else { k }).map(String::as_str)
    }

    /// The scope of a finding's container, from its keys.
    pub fn of(f: &'a Finding) -> Scope<'a> {
        let k = &f.k8s;
        Scope {
            namespace: k.namespace.as_deref(),
            workload: k.workload_name.as_deref(),
            workload_kind: k.workload_kind,
            pod_labels: Some(&k.pod_labels),
            labels_prefixed: true,
            container: k.container_name.as_deref(),
            image: k.image_name.as_deref(),
        }
    }
}

/// What a finding is about, beyond its container.
#[derive(Debug, Clone, Default)]
pub struct Subject<'a> {
    pub kind: &'a str,
    pub rule: &'a str,
    pub executable: Option<&'a str>,
    /// The parent's executable path, or its name.
    pub parent_executable: Option<&'a str>,
    /// The command line, joined by spaces only when an approval first asks
    /// ([`Self::command_line`]): most findings are ruled out by cheaper keys,
    /// and the join was a heap allocation per finding.
    pub args: &'a [crate::event::Text],
    joined: std::cell::OnceCell<String>,
    pub file_paths: Vec<&'a str>,
    pub endpoint: Option<(Option<IpAddr>, u16)>,
}

impl<'a> Subject<'a> {
    /// `exe`/`parent_exe`: paths found outside the finding (e.g. /proc) for
    /// network and file findings, whose kernel record has only a name.
    pub fn of(f: &'a Finding, exe: Option<&'a str>, parent_exe: Option<&'a str>) -> Subject<'a> {
        let p = f.process.as_ref();
        let nonempty = |s: &'a str| (!s.is_empty()).then_some(s);
        let mut s = Subject {
            kind: f.kind.as_str(),
            rule: f.rule,
            executable: p.and_then(|p| nonempty(&p.exe_path)).or(exe),
            parent_executable: parent_exe.or_else(|| p.and_then(|p| nonempty(&p.parent_name))),
            args: p.map_or(&[], |p| p.command_args.as_slice()),
            ..Default::default()
        };
        match &f.detail {
            Detail::File(d) => {
                s.file_paths.push(&d.path);
                if let Some(t) = &d.target {
                    s.file_paths.push(t);
                }
            }
            Detail::Network(n) => s.endpoint = Some((n.address.parse().ok(), n.port)),
            Detail::Exec(e) => {
                if let Some(sp) = &e.script_path {
                    s.file_paths.push(sp);
                }
            }
            Detail::Config(_) => {}
        }
        s
    }
}

impl Subject<'_> {
    /// The arguments joined by spaces (None without any).
    pub fn command_line(&self) -> Option<&str> {
        (!self.args.is_empty()).then(|| self.joined.get_or_init(|| self.args.join(" ")).as_str())
    }
}

impl Matcher {
    /// The container-scope keys all match.
    pub fn matches_scope(&self, c: &Scope) -> bool {
        let opt =
            |p: &Option<compile::Pattern>, v: Option<&str>| p.as_ref().is_none_or(|p| v.is_some_and(|v| p.matches(v)));
        opt(&self.namespace, c.namespace)
            && opt(&self.workload, c.workload)
            && opt(&self.workload_kind, c.workload_kind)
            && opt(&self.container, c.container)
            && opt(&self.image, c.image)
            && self.pod_labels.iter().all(|(k, pk, p)| c.label(k, pk).is_some_and(|v| p.matches(v)))
    }

    /// Every given key matches the finding.
    pub fn matches(&self, c: &Scope, s: &Subject) -> bool {
        let opt =
            |p: &Option<compile::Pattern>, v: Option<&str>| p.as_ref().is_none_or(|p| v.is_some_and(|v| p.matches(v)));
        // Cheapest first (all must hold, so the order changes only the cost):
        // approvals are tried one by one for every finding, and most are for
        // other workloads, which the short scope values rule out before a
        // glob runs over a command line.
        self.kind.is_none_or(|k| k == s.kind)
            && opt(&self.rule, Some(s.rule))
            && self.matches_scope(c)
            && opt(&self.executable, s.executable)
            && opt(&self.parent_executable, s.parent_executable)
            && self.endpoint.as_ref().is_none_or(|e| s.endpoint.is_some_and(|(ip, port)| e.matches(ip, port)))
            && self.file_path.as_ref().is_none_or(|p| s.file_paths.iter().any(|f| p.matches(f)))
            && opt(&self.command_args, s.command_line())
    }

    /// Keys that only a finding's process answers (for lazy /proc lookups).
    pub fn needs_executable(&self) -> bool {
        self.executable.is_some() || self.parent_executable.is_some()
    }
}

/// Where a container's mode came from (log lines, never a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeSource {
    Annotation,
    Policy(usize),
    Default,
}

/// The policy in force, with the once-only notes it keeps.
#[derive(Debug)]
pub struct Policy {
    pub compiled: Compiled,
    expired_logged: Vec<AtomicBool>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(Compiled::default())
    }
}

impl Policy {
    pub fn new(compiled: Compiled) -> Policy {
        let expired_logged = compiled.approvals.iter().map(|_| AtomicBool::new(false)).collect();
        Policy { compiled, expired_logged }
    }

    /// The container's mode: its pod's `driftwatch.io/mode` annotation, else
    /// the first `modes` entry that matches, else `default_mode`. A bad
    /// annotation value is ignored (the caller logs it).
    pub fn mode_for(&self, c: &Scope, annotations: Option<&BTreeMap<String, String>>) -> (Mode, ModeSource) {
        if let Some(m) = annotations.and_then(|a| a.get(MODE_ANNOTATION)).and_then(|v| Mode::parse(v)) {
            return (m, ModeSource::Annotation);
        }
        match self.compiled.modes.iter().position(|r| r.m.matches_scope(c)) {
            Some(i) => (self.compiled.modes[i].mode, ModeSource::Policy(i)),
            None => (self.compiled.default_mode, ModeSource::Default),
        }
    }

    /// Keeps `old`'s once-only notes for approvals of the same name (a reload
    /// does not log an expired approval again).
    pub fn inherit_notes(&self, old: &Policy) {
        for (i, a) in self.compiled.approvals.iter().enumerate() {
            if let Some(j) = old.compiled.approvals.iter().position(|o| o.name == a.name)
                && old.expired_logged[j].load(Ordering::Relaxed)
            {
                self.expired_logged[i].store(true, Ordering::Relaxed);
            }
        }
    }

    /// Whether some approval needs the process's executable path.
    pub fn needs_executable(&self) -> bool {
        self.compiled.approvals.iter().any(|a| a.m.needs_executable())
    }

    /// The name of the first approval in force (at unix time `now`) that
    /// matches; an expired one is logged once and skipped.
    pub fn approve(&self, c: &Scope, s: &Subject, now: i64) -> Option<&str> {
        for (i, a) in self.compiled.approvals.iter().enumerate() {
            if !a.m.matches(c, s) {
                continue;
            }
            if a.expires.is_some_and(|e| now > e) {
                if !self.expired_logged[i].swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        approval = %a.name,
                        "approval {:?} matched a {} finding but expired: it no longer applies (renew or remove it in policy.approvals)",
                        a.name,
                        s.rule
                    );
                }
                continue;
            }
            return Some(&a.name);
        }
        None
    }

    /// A one-line summary of what differs from `old` (reload logs).
    pub fn diff(&self, old: &Policy) -> String {
        let names = |p: &Policy| -> Vec<String> { p.compiled.approvals.iter().map(|a| a.name.clone()).collect() };
        let (new_n, old_n) = (names(self), names(old));
        let added: Vec<&String> = new_n.iter().filter(|n| !old_n.contains(n)).collect();
        let removed: Vec<&String> = old_n.iter().filter(|n| !new_n.contains(n)).collect();
        let mut parts = Vec::new();
        if !added.is_empty() {
            parts.push(format!("approvals added: {added:?}"));
        }
        if !removed.is_empty() {
            parts.push(format!("approvals removed: {removed:?}"));
        }
        if self.compiled.modes.len() != old.compiled.modes.len()
            || self.compiled.modes.iter().zip(&old.compiled.modes).any(|(a, b)| a.mode != b.mode)
        {
            parts.push(format!("modes: {} rules", self.compiled.modes.len()));
        }
        if self.compiled.default_mode != old.compiled.default_mode {
            parts.push(format!("default_mode: {}", self.compiled.default_mode.as_str()));
        }
        if self.compiled.emit_approved != old.compiled.emit_approved {
            parts.push(format!("emit_approved: {}", self.compiled.emit_approved));
        }
        if parts.is_empty() { "no policy change".into() } else { parts.join("; ") }
    }
}

/// Normalised image name of a runtime image reference.
pub fn image_name(image: &str) -> Option<String> {
    normalise_image(image)
}

#[cfg(test)]
mod tests;
