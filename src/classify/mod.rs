//! Classification: an enriched kernel event -> at most one [`Finding`].
//!
//! The kernel already judged where the executed file comes from; here the
//! verdict meets the rules (shells, package managers) from the config.

pub mod baseline;
pub mod config_drift;
pub mod file;
pub mod finding;
pub mod names;
pub mod network;

pub use finding::{Finding, Kind, PlaybookStep};
pub use names::{NameMatch, NameTables};

use crate::{
    clock::{BootClock, rfc3339},
    config::{Config, Rules},
    enrich::ContainerRef,
    event::{ExeSource, ExecEvent},
};

/// Why an exec produced no finding (metric label `reason`).
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
}

impl NoFinding {
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
        }
    }
}

pub struct Classifier {
    rules: Rules,
    names: NameTables,
    clock: BootClock,
    node: std::sync::Arc<str>,
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

/// This node's name: `NODE_NAME` (set from the downward API in the chart),
/// else the hostname.
pub fn node_name() -> String {
    if let Ok(n) = std::env::var("NODE_NAME")
        && !n.is_empty()
    {
        return n;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl Classifier {
    pub fn new(cfg: &Config) -> Self {
        Self {
            rules: cfg.rules.clone(),
            names: NameTables::from_rules(&cfg.rules),
            clock: BootClock::new(),
            node: node_name().into(),
        }
    }

    /// Every (kind, rule, severity) this classifier can emit, for metrics.
    pub fn catalog(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        let b = self.rules.binary.severity.as_str();
        let mut v: Vec<_> = [
            "exec_new_binary",
            "exec_new_script",
            "exec_fileless_memfd",
            "exec_fileless_deleted",
            "exec_from_tmpfs",
            "exec_from_volume",
        ]
        .into_iter()
        .map(|r| ("binary", r, b))
        .collect();
        v.push(("binary", "exec_by_drifted_process", crate::config::Severity::Warning.as_str()));
        let s = self.rules.shell.severity.as_str();
        v.push(("shell", "shell_in_container", s));
        v.push(("shell", "terminal_shell_in_container", s));
        v.push(("package", "package_manager_exec", self.rules.package.severity.as_str()));
        let n = self.rules.network.severity.as_str();
        v.push(("network", "network_new_listener", n));
        v.push(("network", "network_new_destination", n));
        let fs = self.rules.file.severity.as_str();
        for r in [
            "file_written",
            "file_deleted",
            "file_renamed",
            "file_mode_changed",
            "file_linked",
            "file_symlinked",
            "file_owner_changed",
            "file_directory_created",
        ] {
            v.push(("file", r, fs));
        }
        v.push(("package", "package_database_write", self.rules.package.severity.as_str()));
        if self.rules.config.enabled {
            v.push(("config", "loader_injection_env", crate::config::Severity::Critical.as_str()));
        }
        if self.rules.config.enabled {
            v.extend(config_drift::RULES.iter().map(|(r, sev, _)| ("config", *r, sev.as_str())));
        }
        v
    }

    pub fn names(&self) -> &NameTables {
        &self.names
    }

    /// Judges one exec. One exec yields at most one finding: binary drift
    /// outranks a package manager, which outranks a shell.
    pub fn exec(&self, ev: &ExecEvent, c: &ContainerRef) -> Result<Finding, NoFinding> {
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
                short(&c.id),
                vars.join(", ")
            );
            let mut f = self.base(
                ev,
                c,
                Kind::Config,
                "loader_injection_env",
                crate::config::Severity::Critical,
                PlaybookStep::Investigate,
                msg,
            );
            f.env_loader_vars = Some(vars);
            return Ok(f);
        }
        match self.names.classify(&ev.comm, &ev.args) {
            Some(NameMatch::Package { name }) => {
                if self.names.is_package(&ev.parent_comm) {
                    return Err(NoFinding::NestedPackageManager);
                }
                if self.rules.package.enabled {
                    let msg =
                        format!("package manager {name} ran in container {}: {}", short(&c.id), ev.args.join(" "));
                    let mut f = self.base(
                        ev,
                        c,
                        Kind::Package,
                        "package_manager_exec",
                        self.rules.package.severity,
                        PlaybookStep::Validate,
                        msg,
                    );
                    f.package_manager = Some(name);
                    return Ok(f);
                }
                disabled = true;
            }
            Some(NameMatch::Shell { name }) => {
                if self.names.is_shell(&ev.parent_comm) {
                    return Err(NoFinding::Subshell);
                }
                if self.rules.shell.enabled {
                    let tty = ev.flags.tty();
                    let (rule, what) = if tty {
                        ("terminal_shell_in_container", "an interactive shell")
                    } else {
                        ("shell_in_container", "a shell")
                    };
                    let msg = format!(
                        "{what} ({name}) started in container {} by {} (pid {})",
                        short(&c.id),
                        if ev.parent_comm.is_empty() { "?" } else { &ev.parent_comm },
                        ev.ppid
                    );
                    let mut f =
                        self.base(ev, c, Kind::Shell, rule, self.rules.shell.severity, PlaybookStep::Validate, msg);
                    f.shell = Some(name);
                    return Ok(f);
                }
                disabled = true;
            }
            None => {}
        }
        if ev.flags.ancestor_drift() && self.rules.binary.enabled {
            let msg = format!(
                "{} was executed in container {} by a process descending from a drifted binary",
                ev.path,
                short(&c.id)
            );
            return Ok(self.base(
                ev,
                c,
                Kind::Binary,
                "exec_by_drifted_process",
                crate::config::Severity::Warning,
                PlaybookStep::Investigate,
                msg,
            ));
        }
        Err(if disabled { NoFinding::RuleDisabled } else { NoFinding::NotDrift })
    }

    fn binary(&self, ev: &ExecEvent, c: &ContainerRef) -> Finding {
        // The script is what was dropped when the interpreter is from the image.
        let (src, what, path) = match &ev.script {
            Some((p, s)) if s.is_drift() && !ev.exe_source.is_drift() => (*s, "script", p.as_str()),
            _ => (ev.exe_source, "binary", ev.path.as_str()),
        };
        let rule = match (src, what) {
            (_, "script") => "exec_new_script",
            (ExeSource::Memfd, _) => "exec_fileless_memfd",
            (ExeSource::Deleted, _) => "exec_fileless_deleted",
            (ExeSource::Tmpfs, _) => "exec_from_tmpfs",
            (ExeSource::Volume, _) => "exec_from_volume",
            _ => "exec_new_binary",
        };
        let why = match src {
            ExeSource::UpperLayer => "written to the container's writable layer, not part of its image",
            ExeSource::Memfd => "running from memory (memfd), with no file on disk",
            ExeSource::Deleted => "deleted from disk while running",
            ExeSource::Tmpfs => "on a tmpfs volume, not part of the image",
            ExeSource::Volume => "on a mounted volume, not part of the image",
            _ => "not part of the image",
        };
        let msg = format!("container {} executed {what} {path}: {why}", short(&c.id));
        self.base(ev, c, Kind::Binary, rule, self.rules.binary.severity, PlaybookStep::Isolate, msg)
    }

    /// A finding about a process that did not exec (a network or file
    /// event): the exec-only keys stay empty.
    #[allow(clippy::too_many_arguments)]
    pub fn process_finding(
        &self,
        p: crate::event::ProcessRef<'_>,
        c: &ContainerRef,
        kind: Kind,
        rule: &'static str,
        severity: crate::config::Severity,
        step: PlaybookStep,
        message: String,
    ) -> Finding {
        let exec = ExecEvent {
            ktime_ns: p.ktime_ns,
            cgroup_id: 0,
            tgid: p.tgid,
            pid: p.tgid,
            ppid: p.ppid,
            uid: p.uid,
            gid: 0,
            mntns: 0,
            mntns_id: p.mntns_id,
            flags: crate::event::ExecFlags::default(),
            exe_source: ExeSource::Unknown,
            script: None,
            fs_magic: 0,
            nlink: 0,
            ino: 0,
            name_class: 0,
            env_loader: 0,
            comm: p.comm.to_string(),
            parent_comm: String::new(),
            path: String::new(),
            args: Vec::new(),
            cgroup_path: p.cgroup_path.to_string(),
        };
        let mut f = self.base(&exec, c, kind, rule, severity, step, message);
        f.exe_source = "";
        f
    }

    #[allow(clippy::too_many_arguments)]
    fn base(
        &self,
        ev: &ExecEvent,
        c: &ContainerRef,
        kind: Kind,
        rule: &'static str,
        severity: crate::config::Severity,
        step: PlaybookStep,
        message: String,
    ) -> Finding {
        Finding {
            time: rfc3339(self.clock.wall(ev.ktime_ns)),
            kind,
            rule,
            severity,
            playbook_step: step,
            message,
            container_id: c.id.clone(),
            container_runtime: c.layout.runtime(),
            node_name: self.node.clone(),
            namespace: None,
            pod_name: None,
            pod_uid: c.pod_uid.clone(),
            container_name: None,
            workload_kind: None,
            workload_name: None,
            image_name: None,
            image_tags: None,
            image_id: None,
            image_repo_digests: None,
            pod_labels: Default::default(),
            metadata_complete: false,
            metadata_missing: None,
            pid: ev.tgid,
            parent_pid: ev.ppid,
            exe_path: ev.path.clone(),
            exe_name: ev.comm.clone(),
            command_args: ev.args.clone(),
            uid: ev.uid,
            gid: ev.gid,
            interactive: ev.flags.tty(),
            parent_name: ev.parent_comm.clone(),
            exe_source: ev.exe_source.as_str(),
            exe_inode: ev.ino,
            exe_origin: None,
            script_path: ev.script.as_ref().map(|s| s.0.clone()),
            script_source: ev.script.as_ref().map(|s| s.1.as_str()),
            drifted_ancestor: ev.flags.ancestor_drift(),
            shell: None,
            package_manager: None,
            file_path: None,
            file_operation: None,
            file_target: None,
            file_location: None,
            file_origin: None,
            file_mode: None,
            file_owner: None,
            env_loader_vars: None,
            server_address: None,
            server_port: None,
            network_transport: None,
            network_type: None,
            network_direction: None,
            baseline_workload: None,
            config: None,
            cgroup_path: ev.cgroup_path.clone(),
            path_truncated: ev.flags.path_truncated(),
            args_truncated: ev.flags.args_truncated(),
            ktime_ns: ev.ktime_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        abi,
        enrich::CgroupLayout,
        event::{ExecEvent, ExecFlags},
    };

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn ev(comm: &str, args: &[&str], src: ExeSource, flags: u32) -> ExecEvent {
        ExecEvent {
            ktime_ns: 1,
            cgroup_id: 1,
            tgid: 10,
            pid: 10,
            ppid: 9,
            uid: 0,
            gid: 0,
            mntns: 5,
            mntns_id: 5,
            flags: ExecFlags(flags),
            exe_source: src,
            script: None,
            fs_magic: 0,
            nlink: 1,
            ino: 77,
            name_class: 0,
            env_loader: 0,
            comm: comm.into(),
            parent_comm: "runc:[2:INIT]".into(),
            path: format!("/bin/{comm}"),
            args: args.iter().map(|s| s.to_string()).collect(),
            cgroup_path: format!("k8s.io/{ID}"),
        }
    }

    fn c() -> ContainerRef {
        ContainerRef { id: ID.into(), layout: CgroupLayout::ContainerdCgroupfs, pod_uid: None }
    }

    fn cl() -> Classifier {
        Classifier::new(&Config::default())
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
            let f = cl().exec(&ev("x", &["x"], src, abi::DW_EXEC_DRIFT), &c()).unwrap();
            assert_eq!((f.kind, f.rule), (Kind::Binary, rule));
            assert_eq!(f.severity, crate::config::Severity::Critical);
            assert_eq!(f.playbook_step, PlaybookStep::Isolate);
            assert_eq!(f.exe_source, src.as_str());
        }
    }

    #[test]
    fn dropped_shell_is_binary_drift_not_shell() {
        let f = cl().exec(&ev("sh", &["sh"], ExeSource::UpperLayer, abi::DW_EXEC_DRIFT), &c()).unwrap();
        assert_eq!(f.kind, Kind::Binary);
    }

    #[test]
    fn dropped_script_is_binary_drift() {
        let mut e =
            ev("run.sh", &["/bin/sh", "/tmp/run.sh"], ExeSource::Image, abi::DW_EXEC_DRIFT | abi::DW_EXEC_SCRIPT);
        e.script = Some(("/tmp/run.sh".into(), ExeSource::UpperLayer));
        let f = cl().exec(&e, &c()).unwrap();
        assert_eq!((f.kind, f.rule), (Kind::Binary, "exec_new_script"));
        assert_eq!(f.script_path.as_deref(), Some("/tmp/run.sh"));
    }

    #[test]
    fn entrypoint_is_never_a_finding() {
        for (comm, src, fl) in [("sh", ExeSource::Image, 0), ("x", ExeSource::Tmpfs, abi::DW_EXEC_DRIFT)] {
            let e = ev(comm, &[comm], src, fl | abi::DW_EXEC_ENTRYPOINT);
            assert_eq!(cl().exec(&e, &c()).unwrap_err(), NoFinding::Entrypoint);
        }
    }

    #[test]
    fn shells_and_subshells() {
        let f = cl().exec(&ev("sh", &["sh", "-c", "id"], ExeSource::Image, 0), &c()).unwrap();
        assert_eq!((f.kind, f.rule), (Kind::Shell, "shell_in_container"));
        assert_eq!(f.parent_name, "runc:[2:INIT]");
        assert!(!f.interactive);
        let f = cl().exec(&ev("bash", &["bash"], ExeSource::Image, abi::DW_EXEC_TTY), &c()).unwrap();
        assert_eq!(f.rule, "terminal_shell_in_container");
        assert!(f.interactive);
        let mut sub = ev("sh", &["sh"], ExeSource::Image, 0);
        sub.parent_comm = "bash".into();
        assert_eq!(cl().exec(&sub, &c()).unwrap_err(), NoFinding::Subshell);
    }

    #[test]
    fn package_managers() {
        let f = cl().exec(&ev("apt-get", &["apt-get", "install", "curl"], ExeSource::Image, 0), &c()).unwrap();
        assert_eq!((f.kind, f.rule), (Kind::Package, "package_manager_exec"));
        assert_eq!(f.package_manager.as_deref(), Some("apt-get"));
        let f = cl().exec(&ev("sh", &["sh", "/usr/bin/pip", "install", "x"], ExeSource::Image, 0), &c()).unwrap();
        assert_eq!(f.kind, Kind::Package);
        let mut nested = ev("dpkg", &["dpkg", "-i"], ExeSource::Image, 0);
        nested.parent_comm = "apt-get".into();
        assert_eq!(cl().exec(&nested, &c()).unwrap_err(), NoFinding::NestedPackageManager);
    }

    #[test]
    fn image_binaries_are_quiet_and_lineage_is_reported() {
        assert_eq!(cl().exec(&ev("ls", &["ls"], ExeSource::Image, 0), &c()).unwrap_err(), NoFinding::NotDrift);
        let f = cl().exec(&ev("ls", &["ls"], ExeSource::Image, abi::DW_EXEC_ANCESTOR_DRIFT), &c()).unwrap();
        assert_eq!((f.kind, f.rule), (Kind::Binary, "exec_by_drifted_process"));
        assert!(f.drifted_ancestor);
    }

    #[test]
    fn disabled_rules() {
        let mut cfg = Config::default();
        cfg.rules.shell.enabled = false;
        let e = ev("sh", &["sh"], ExeSource::Image, 0);
        assert_eq!(Classifier::new(&cfg).exec(&e, &c()).unwrap_err(), NoFinding::RuleDisabled);
    }

    #[test]
    fn json_contract() {
        let f = cl().exec(&ev("x", &["x", "-v"], ExeSource::UpperLayer, abi::DW_EXEC_DRIFT), &c()).unwrap();
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
