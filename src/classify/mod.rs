//! Classification: a kernel event of a known container -> at most one
//! [`Finding`]. Pure: rules and events in, findings out; no I/O, no queues.
//!
//! The kernel already judged where the executed file comes from; here the
//! verdict meets the rules (shells, package managers) from the config. The
//! rule table is [`rules`]; files, network endpoints and deployments have
//! their own judges in [`file`], [`network`] and [`config_drift`].

pub mod baseline;
pub mod change_facts;
pub mod config_changes;
pub mod config_drift;
pub mod file;
pub mod finding;
pub mod interp;
pub mod mapping;
pub mod message;
pub mod names;
pub mod network;
pub mod rules;
pub mod tags;

pub use finding::{
    Boxed, Detail, ExecFacts, Finding, Kind, PlaybookStep, PodFacts, ProcessFacts, RecordFacts, SharedPodFacts,
};
pub use message::Message;
pub use names::{NameMatch, NameTables};
pub use rules::Rule;

use crate::{
    clock::{BootClock, rfc3339},
    config::{Config, Rules},
    enrich::ContainerRef,
    event::{ExeSource, ExecEvent, Process},
};

/// Why an event produced no finding (metric label `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoFinding {
    Entrypoint,
    NotDrift,
    Subshell,
    NestedPackageManager,
    RuleDisabled,
    Loopback,
    Allowed,
    BaselineLearning,
    BaselineExpected,
    ScratchPath,
    /// An upper-layer image binary copied up unchanged (chmod, touch).
    MetadataOnlyCopyUp,
    /// A configuration finding reported before (by this agent, or before its restart).
    AlreadyReported,
}

impl NoFinding {
    pub const ALL: [NoFinding; 12] = [
        Self::Entrypoint,
        Self::NotDrift,
        Self::Subshell,
        Self::NestedPackageManager,
        Self::RuleDisabled,
        Self::Loopback,
        Self::Allowed,
        Self::BaselineLearning,
        Self::BaselineExpected,
        Self::ScratchPath,
        Self::MetadataOnlyCopyUp,
        Self::AlreadyReported,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Entrypoint => "entrypoint",
            Self::NotDrift => "not_drift",
            Self::Subshell => "subshell",
            Self::NestedPackageManager => "nested_package_manager",
            Self::RuleDisabled => "rule_disabled",
            Self::Loopback => "loopback",
            Self::Allowed => "allowed",
            Self::BaselineLearning => "baseline_learning",
            Self::BaselineExpected => "baseline_expected",
            Self::ScratchPath => "scratch_path",
            Self::MetadataOnlyCopyUp => "metadata_only_copy_up",
            Self::AlreadyReported => "already_reported",
        }
    }
}

/// Which container a finding is about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub id: &'a str,
    /// `container.runtime.name`: containerd, cri-o, docker, ...
    pub runtime: &'static str,
    pub pod_uid: Option<&'a str>,
}

impl<'a> From<&'a ContainerRef> for Subject<'a> {
    fn from(c: &'a ContainerRef) -> Self {
        Subject { id: &c.id, runtime: c.layout.runtime(), pod_uid: c.pod_uid.as_deref() }
    }
}

pub struct Classifier {
    rules: Rules,
    names: NameTables,
    clock: BootClock,
    node: std::sync::Arc<str>,
    /// The pod facts a new finding starts with (only the pod uid of its
    /// cgroup) last made, shared by the next finding from the same pod: the
    /// emitter replaces them with the runtime's, so making them anew was two
    /// allocations a finding thrown away.
    start_facts: std::sync::Mutex<std::sync::Arc<SharedPodFacts>>,
}

/// Names of the `DW_ENV_*` loader variables in `bits`.
fn loader_vars(bits: u16) -> Vec<&'static str> {
    let b = bits as u32;
    [
        (crate::abi::DW_ENV_LD_PRELOAD, "LD_PRELOAD"),
        (crate::abi::DW_ENV_LD_LIBRARY_PATH, "LD_LIBRARY_PATH"),
        (crate::abi::DW_ENV_LD_AUDIT, "LD_AUDIT"),
    ]
    .into_iter()
    .filter(|(bit, _)| b & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

/// The process keys every finding about a process carries.
pub fn process_facts(p: &Process) -> ProcessFacts {
    ProcessFacts {
        pid: p.tgid,
        parent_pid: p.ppid,
        exe_name: p.comm.clone(),
        uid: p.uid,
        origin: p.origin,
        ..Default::default()
    }
}

/// `driftwatch.action` of an exec protect mode stopped.
pub const KILLED: &str = "killed";
/// `driftwatch.action` of a finding whose container was quarantined.
pub const QUARANTINED: &str = "quarantined";
/// Both.
pub const KILLED_QUARANTINED: &str = "killed,quarantined";

/// The kernel record's keys of a finding about a process.
pub fn record_facts(p: &Process) -> RecordFacts {
    RecordFacts {
        cgroup_path: p.cgroup_path.clone(),
        name_escaped: p.comm_escaped,
        cgroup_path_escaped: p.cgroup_path_escaped,
        ..Default::default()
    }
}

impl Classifier {
    pub fn new(cfg: &Config) -> Self {
        Self {
            rules: cfg.rules.clone(),
            names: NameTables::from_rules(&cfg.rules),
            clock: BootClock::new(),
            node: crate::node::name().into(),
            start_facts: Default::default(),
        }
    }

    /// The pod facts a finding about a container of pod `pod_uid` starts with.
    fn start_facts(&self, pod_uid: Option<&str>) -> std::sync::Arc<SharedPodFacts> {
        let fresh =
            || std::sync::Arc::new(PodFacts { pod_uid: pod_uid.map(str::to_string), ..Default::default() }.into());
        let Ok(mut last) = self.start_facts.lock() else { return fresh() };
        if last.pod_uid.as_deref() != pod_uid {
            *last = fresh();
        }
        last.clone()
    }

    /// Every rule this classifier can emit, with its configured severity
    /// (for pre-created metric series). Config rules only when enabled.
    pub fn catalog(&self) -> Vec<(&'static Rule, crate::config::Severity)> {
        rules::ALL
            .iter()
            .filter(|r| r.kind != Kind::Config || self.rules.config.enabled)
            .map(|r| (r, r.severity(&self.rules)))
            .collect()
    }

    pub fn names(&self) -> &NameTables {
        &self.names
    }

    /// A finding of `rule` about container `c` at kernel time `ktime_ns`:
    /// the common part; the caller adds the process and the record.
    pub fn finding(
        &self,
        rule: &Rule,
        c: Subject<'_>,
        ktime_ns: u64,
        message: impl Into<Message>,
        detail: Detail,
    ) -> Finding {
        Finding {
            time: self.clock.rfc3339(ktime_ns),
            kind: rule.kind,
            rule: rule.name,
            severity: rule.severity(&self.rules),
            playbook_step: rule.step,
            tags: tags::of(rule.name),
            message: message.into(),
            container_id: crate::id::Id::key(c.id),
            container_runtime: c.runtime,
            node_name: self.node.clone(),
            k8s: self.start_facts(c.pod_uid),
            process: None,
            detail,
            record: None,
            redacted: false,
            approval: None,
            action: None,
            evidence_path: None,
            ktime_ns,
        }
    }

    /// A finding about process `p` (a network or file event: no exec keys).
    pub fn process_finding(
        &self,
        rule: &Rule,
        c: &ContainerRef,
        p: &Process,
        message: impl Into<Message>,
        detail: Detail,
    ) -> Boxed {
        let mut f = Boxed::new(self.finding(rule, c.into(), p.ktime_ns, message, detail));
        f.process = Some(process_facts(p));
        f.record = Some(record_facts(p));
        f
    }

    /// A configuration-drift finding about a container (no process keys),
    /// judged now (not at a kernel event).
    pub fn config_finding(&self, c: Subject<'_>, issue: config_drift::Issue) -> Finding {
        let mut f =
            self.finding(issue.rule, c, BootClock::since_ns(0), issue.message, Detail::Config(Box::new(issue.facts)));
        f.time = rfc3339(time::OffsetDateTime::now_utc());
        f
    }

    /// Judges one exec. One exec yields at most one finding: binary drift
    /// outranks a package manager, which outranks a shell. The event is
    /// spent: its text (path, arguments, names, cgroup path) moves into the
    /// finding instead of being copied.
    pub fn exec(&self, mut ev: ExecEvent, c: &ContainerRef) -> Result<Boxed, NoFinding> {
        let ev = &mut ev;
        // The container's own entrypoint starting is not drift.
        if ev.flags.entrypoint() {
            return Err(NoFinding::Entrypoint);
        }
        let mut disabled = false;
        if ev.flags.drift() || ev.exe_source.is_drift() || ev.script.as_ref().is_some_and(|s| s.1.is_drift()) {
            if self.rules.binary.enabled {
                return Ok(self.binary(ev, c));
            }
            disabled = true;
        }
        if ev.flags.env_drift() && self.rules.config.enabled {
            let vars = loader_vars(ev.env_loader);
            let msg = format!(
                "{} started in container {} with {} in its environment, which the container's main process did not have (dynamic-loader injection)",
                ev.path,
                c.short_id(),
                vars.join(", ")
            );
            let mut f = self.exec_finding(ev, c, &rules::LOADER_INJECTION_ENV, msg);
            if let Some(e) = f.exec_mut() {
                e.env_loader_vars = Some(vars);
            }
            return Ok(f);
        }
        // Issue 16: variables added or changed against the entrypoint's. A
        // code-injection variable is the finding; otherwise a shell or package
        // manager keeps its own rule (its alert routes it) and carries the names.
        let env = if ev.flags.env_changed() && self.rules.config.enabled && self.rules.config.environment {
            self.environment(ev, c)
        } else {
            None
        };
        let Some(mut env) = env else { return self.by_name(ev, c, disabled) };
        if env.severity == crate::config::Severity::Critical {
            return Ok(env);
        }
        match self.by_name(ev, c, disabled) {
            Ok(mut f) => {
                if let (Some(to), Some(from)) = (f.exec_mut(), env.exec_mut()) {
                    to.env = std::mem::take(&mut from.env);
                }
                Ok(f)
            }
            Err(_) => Ok(env),
        }
    }

    /// What the executed program's name says (shell, package manager), then lineage.
    fn by_name(&self, ev: &mut ExecEvent, c: &ContainerRef, mut disabled: bool) -> Result<Boxed, NoFinding> {
        match self.names.classify(&ev.proc.comm, &ev.args) {
            Some(NameMatch::Package { name }) => {
                if self.names.is_package(&ev.parent_comm) {
                    return Err(NoFinding::NestedPackageManager);
                }
                if self.rules.package.enabled {
                    let mut msg =
                        Message::concat(&["package manager ", &name, " ran in container ", c.short_id(), ": "]);
                    crate::event::push_command_line(&mut msg, &ev.args);
                    let mut f = self.exec_finding(ev, c, &rules::PACKAGE_MANAGER_EXEC, msg);
                    if let Some(e) = f.exec_mut() {
                        e.package_manager = Some(name);
                    }
                    return Ok(f);
                }
                disabled = true;
            }
            Some(NameMatch::Shell { name }) => {
                if self.names.is_shell(&ev.parent_comm) {
                    return Err(NoFinding::Subshell);
                }
                if self.rules.shell.enabled {
                    let (rule, what) = if ev.flags.tty() {
                        (&rules::TERMINAL_SHELL_IN_CONTAINER, "an interactive shell")
                    } else {
                        (&rules::SHELL_IN_CONTAINER, "a shell")
                    };
                    let parent = if ev.parent_comm.is_empty() { "?" } else { &ev.parent_comm };
                    // Without `format!`'s machinery (~1,000 instructions a
                    // finding), into a reused buffer (`message`).
                    let msg = Message::concat(&[
                        what,
                        " (",
                        &name,
                        ") started in container ",
                        c.short_id(),
                        " by ",
                        parent,
                        " (pid ",
                        itoa::Buffer::new().format(ev.proc.ppid),
                        ")",
                    ]);
                    let mut f = self.exec_finding(ev, c, rule, msg);
                    if let Some(e) = f.exec_mut() {
                        e.shell = Some(name);
                    }
                    return Ok(f);
                }
                disabled = true;
            }
            None => {}
        }
        if ev.flags.ancestor_drift() && self.rules.binary.enabled {
            let msg = Message::concat(&[
                &ev.path,
                " was executed in container ",
                c.short_id(),
                " by a process descending from a drifted binary",
            ]);
            return Ok(self.exec_finding(ev, c, &rules::EXEC_BY_DRIFTED_PROCESS, msg));
        }
        Err(if disabled { NoFinding::RuleDisabled } else { NoFinding::NotDrift })
    }

    fn binary(&self, ev: &mut ExecEvent, c: &ContainerRef) -> Boxed {
        // The script is what was dropped when the interpreter is from the image.
        let (src, script, path) = match &ev.script {
            Some((p, s)) if s.is_drift() && !ev.exe_source.is_drift() => (*s, true, p.as_str()),
            _ => (ev.exe_source, false, ev.path.as_str()),
        };
        let rule = match src {
            _ if script => &rules::EXEC_NEW_SCRIPT,
            ExeSource::Memfd => &rules::EXEC_FILELESS_MEMFD,
            ExeSource::Deleted => &rules::EXEC_FILELESS_DELETED,
            ExeSource::Tmpfs => &rules::EXEC_FROM_TMPFS,
            ExeSource::Volume => &rules::EXEC_FROM_VOLUME,
            _ => &rules::EXEC_NEW_BINARY,
        };
        let why = match src {
            ExeSource::UpperLayer => "written to the container's writable layer, not part of its image",
            ExeSource::Memfd => "running from memory (memfd), with no file on disk",
            ExeSource::Deleted => "deleted from disk while running",
            ExeSource::Tmpfs => "on a tmpfs volume, not part of the image",
            ExeSource::Volume => "on a mounted volume, not part of the image",
            _ => "not part of the image",
        };
        let what = if script { "script" } else { "binary" };
        let mut msg = Message::concat(&["container ", c.short_id(), " executed ", what, " ", path, ": ", why]);
        if ev.flags.killed() {
            msg.push_str("; killed before its first instruction (protect mode)");
        }
        self.exec_finding(ev, c, rule, msg)
    }

    /// A finding about an exec: every process and exec key from the event,
    /// whose text is taken (left empty), not copied.
    fn exec_finding(&self, ev: &mut ExecEvent, c: &ContainerRef, rule: &Rule, message: impl Into<Message>) -> Boxed {
        let detail = Detail::Exec(ExecFacts {
            exe_source: ev.exe_source.as_str(),
            exe_inode: ev.ino,
            script_path: ev.script.as_ref().map(|s| s.0.clone()),
            script_source: ev.script.as_ref().map(|s| s.1.as_str()),
            drifted_ancestor: ev.flags.ancestor_drift(),
            ..Default::default()
        });
        // Boxed from here on: handed over by pointer (`finding::boxed`).
        let mut f = Boxed::new(self.finding(rule, c.into(), ev.proc.ktime_ns, message, detail));
        f.action = ev.flags.killed().then_some(KILLED);
        // Taken before `process_facts`/`record_facts` copy what is left.
        let (exe_name, cgroup_path) = (std::mem::take(&mut ev.proc.comm), std::mem::take(&mut ev.proc.cgroup_path));
        f.process = Some(ProcessFacts {
            exe_path: std::mem::take(&mut ev.path),
            command_args: std::mem::take(&mut ev.args),
            gid: ev.gid,
            interactive: ev.flags.tty(),
            parent_name: std::mem::take(&mut ev.parent_comm),
            exe_name,
            ..process_facts(&ev.proc)
        });
        f.record = Some(RecordFacts {
            cgroup_path,
            path_truncated: ev.flags.path_truncated(),
            args_truncated: ev.flags.args_truncated(),
            path_escaped: ev.path_escaped,
            args_escaped: ev.args_escaped,
            parent_name_escaped: ev.parent_comm_escaped,
            script_path_escaped: ev.script.is_some() && ev.script_escaped,
            ..record_facts(&ev.proc)
        });
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        abi,
        enrich::CgroupLayout,
        event::{ExecEvent, ExecFlags, Process},
    };

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn ev(comm: &str, args: &[&str], src: ExeSource, flags: u32) -> ExecEvent {
        ExecEvent {
            proc: Process::for_test(comm, &format!("k8s.io/{ID}")),
            gid: 0,
            flags: ExecFlags(flags),
            exe_source: src,
            script: None,
            ino: 77,
            env_loader: 0,
            parent_comm: "runc:[2:INIT]".into(),
            path: format!("/bin/{comm}").into(),
            args: args.iter().map(|&s| s.into()).collect(),
            parent_comm_escaped: false,
            path_escaped: false,
            args_escaped: false,
            script_escaped: false,
        }
    }

    fn c() -> ContainerRef {
        ContainerRef { id: ID.into(), layout: CgroupLayout::ContainerdCgroupfs, pod_uid: None }
    }

    fn cl() -> Classifier {
        Classifier::new(&Config::default())
    }

    #[test]
    fn findings_of_one_pod_start_from_shared_pod_facts() {
        let cl = cl();
        let pod = |uid: Option<&str>| ContainerRef { pod_uid: uid.map(|u| u.into()), ..c() };
        let uid = "0c2a3d5e-1111-2222-3333-444455556666";
        let judge = |c: &ContainerRef| cl.exec(ev("x", &["x"], ExeSource::UpperLayer, abi::DW_EXEC_DRIFT), c).unwrap();
        let (a, b) = (judge(&pod(Some(uid))), judge(&pod(Some(uid))));
        assert!(std::sync::Arc::ptr_eq(&a.k8s, &b.k8s));
        assert_eq!(a.k8s.pod_uid.as_deref(), Some(uid));
        let other = judge(&pod(Some("9f")));
        assert_eq!(other.k8s.pod_uid.as_deref(), Some("9f"), "another pod's uid, never the last one's");
        assert_eq!(judge(&pod(None)).k8s.pod_uid, None);
        // A private copy to edit leaves the shared facts alone.
        let mut c = judge(&pod(Some(uid)));
        c.k8s_mut().namespace = Some("edited".into());
        assert_eq!((a.k8s.namespace.as_deref(), judge(&pod(Some(uid))).k8s.namespace.as_deref()), (None, None));
    }

    #[test]
    fn binary_sources_map_to_rules() {
        let cases = [
            (ExeSource::UpperLayer, "exec_new_binary"),
            (ExeSource::Memfd, "exec_fileless_memfd"),
            (ExeSource::Deleted, "exec_fileless_deleted"),
            (ExeSource::Tmpfs, "exec_from_tmpfs"),
            (ExeSource::Volume, "exec_from_volume"),
        ];
        for (src, rule) in cases {
            let f = cl().exec(ev("x", &["x"], src, abi::DW_EXEC_DRIFT), &c()).unwrap();
            assert_eq!((f.kind, f.rule), (Kind::Binary, rule));
            assert_eq!(f.severity, crate::config::Severity::Critical);
            assert_eq!(f.playbook_step, PlaybookStep::Isolate);
            assert_eq!(f.exe_source(), src.as_str());
        }
    }

    #[test]
    fn a_killed_exec_says_so_and_others_say_nothing() {
        let flags = abi::DW_EXEC_DRIFT | abi::DW_EXEC_KILLED;
        let f = cl().exec(ev("x", &["x"], ExeSource::UpperLayer, flags), &c()).unwrap();
        assert_eq!(f.action, Some("killed"));
        assert!(f.message.ends_with("killed before its first instruction (protect mode)"), "{}", f.message);
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["driftwatch.action"], "killed");
        let f = cl().exec(ev("x", &["x"], ExeSource::UpperLayer, abi::DW_EXEC_DRIFT), &c()).unwrap();
        assert!(serde_json::to_value(&f).unwrap().get("driftwatch.action").is_none());
    }

    #[test]
    fn dropped_shell_is_binary_drift_not_shell() {
        let f = cl().exec(ev("sh", &["sh"], ExeSource::UpperLayer, abi::DW_EXEC_DRIFT), &c()).unwrap();
        assert_eq!(f.kind, Kind::Binary);
    }

    #[test]
    fn dropped_script_is_binary_drift() {
        let mut e =
            ev("run.sh", &["/bin/sh", "/tmp/run.sh"], ExeSource::Image, abi::DW_EXEC_DRIFT | abi::DW_EXEC_SCRIPT);
        e.script = Some(("/tmp/run.sh".into(), ExeSource::UpperLayer));
        let f = cl().exec(e, &c()).unwrap();
        assert_eq!((f.kind, f.rule), (Kind::Binary, "exec_new_script"));
        assert_eq!(f.exec().and_then(|e| e.script_path.as_deref()), Some("/tmp/run.sh"));
    }

    #[test]
    fn entrypoint_is_never_a_finding() {
        for (comm, src, fl) in [("sh", ExeSource::Image, 0), ("x", ExeSource::Tmpfs, abi::DW_EXEC_DRIFT)] {
            let e = ev(comm, &[comm], src, fl | abi::DW_EXEC_ENTRYPOINT);
            assert_eq!(cl().exec(e, &c()).unwrap_err(), NoFinding::Entrypoint);
        }
    }

    #[test]
    fn shells_and_subshells() {
        let f = cl().exec(ev("sh", &["sh", "-c", "id"], ExeSource::Image, 0), &c()).unwrap();
        assert_eq!((f.kind, f.rule), (Kind::Shell, "shell_in_container"));
        assert_eq!(f.parent_name(), "runc:[2:INIT]");
        assert!(!f.process.as_ref().unwrap().interactive);
        let f = cl().exec(ev("bash", &["bash"], ExeSource::Image, abi::DW_EXEC_TTY), &c()).unwrap();
        assert_eq!(f.rule, "terminal_shell_in_container");
        assert!(f.process.as_ref().unwrap().interactive);
        let mut sub = ev("sh", &["sh"], ExeSource::Image, 0);
        sub.parent_comm = "bash".into();
        assert_eq!(cl().exec(sub, &c()).unwrap_err(), NoFinding::Subshell);
    }

    #[test]
    fn package_managers() {
        let f = cl().exec(ev("apt-get", &["apt-get", "install", "curl"], ExeSource::Image, 0), &c()).unwrap();
        assert_eq!((f.kind, f.rule), (Kind::Package, "package_manager_exec"));
        assert_eq!(f.exec().and_then(|e| e.package_manager.as_deref()), Some("apt-get"));
        let f = cl().exec(ev("sh", &["sh", "/usr/bin/pip", "install", "x"], ExeSource::Image, 0), &c()).unwrap();
        assert_eq!(f.kind, Kind::Package);
        let mut nested = ev("dpkg", &["dpkg", "-i"], ExeSource::Image, 0);
        nested.parent_comm = "apt-get".into();
        assert_eq!(cl().exec(nested, &c()).unwrap_err(), NoFinding::NestedPackageManager);
    }

    #[test]
    fn image_binaries_are_quiet_and_lineage_is_reported() {
        assert_eq!(cl().exec(ev("ls", &["ls"], ExeSource::Image, 0), &c()).unwrap_err(), NoFinding::NotDrift);
        let f = cl().exec(ev("ls", &["ls"], ExeSource::Image, abi::DW_EXEC_ANCESTOR_DRIFT), &c()).unwrap();
        assert_eq!((f.kind, f.rule), (Kind::Binary, "exec_by_drifted_process"));
        assert!(f.exec().unwrap().drifted_ancestor);
    }

    #[test]
    fn disabled_rules() {
        let mut cfg = Config::default();
        cfg.rules.shell.enabled = false;
        let e = ev("sh", &["sh"], ExeSource::Image, 0);
        assert_eq!(Classifier::new(&cfg).exec(e, &c()).unwrap_err(), NoFinding::RuleDisabled);
    }

    #[test]
    fn json_contract() {
        let f = cl().exec(ev("x", &["x", "-v"], ExeSource::UpperLayer, abi::DW_EXEC_DRIFT), &c()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&f.to_json()).unwrap();
        for key in [
            "time",
            "kind",
            "rule",
            "severity",
            "playbook_step",
            "message",
            "container.id",
            "process.pid",
            "process.parent_pid",
            "process.executable.path",
            "process.command_args",
            "process.user.id",
            "driftwatch.exe.source",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["kind"], "binary");
        assert_eq!(v["severity"], "critical");
        assert_eq!(v["playbook_step"], "isolate");
        assert_eq!(v["container.id"], ID);
        assert_eq!(v["process.command_args"], serde_json::json!(["x", "-v"]));
        assert_eq!(v["driftwatch.exe.source"], "upper_layer");
        assert!(v.get("ktime_ns").is_none());
        // RFC 3339 with nanoseconds.
        let t = v["time"].as_str().unwrap();
        assert!(t.contains('T') && t.ends_with('Z') && t.contains('.'), "{t}");
    }
}
