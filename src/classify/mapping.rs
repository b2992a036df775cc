//! Executable mappings of drift (`DW_KIND_MAP`): a dropped shared object
//! mapped into an image program (`LD_PRELOAD`, `dlopen`) is
//! `exec_new_library`; the dynamic loader run as a command mapping a dropped
//! main program (`ld.so /tmp/payload`) is `exec_via_loader`. Both are binary
//! drift: the code runs, only not through execve.

use super::{
    Classifier, KILLED, NoFinding,
    finding::{Detail, ExecFacts, Finding, ProcessFacts, RecordFacts},
    process_facts, record_facts, rules,
};
use crate::{
    enrich::ContainerRef,
    event::{ExeSource, MapEvent, Text, basename},
};

/// The dynamic loader run as a program: glibc `ld-linux-x86-64.so.2`,
/// `ld-linux-aarch64.so.1`, `ld.so`; musl `ld-musl-x86_64.so.1`.
pub fn is_loader(exe: &str) -> bool {
    let n = basename(exe);
    n.starts_with("ld-linux") || n.starts_with("ld-musl") || n == "ld.so" || n.starts_with("ld.so.")
}

/// glibc and musl loader options that take a value.
const LOADER_VALUED: [&str; 7] = [
    "--library-path",
    "--inhibit-rpath",
    "--audit",
    "--preload",
    "--argv0",
    "--glibc-hwcaps-prepend",
    "--glibc-hwcaps-mask",
];

/// The program a loader command line runs: its first operand.
pub fn loader_program(args: &[Text]) -> Option<&str> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" {
            return args.get(i + 1).map(Text::as_str);
        }
        if !a.starts_with("--") {
            return Some(a);
        }
        i += if LOADER_VALUED.contains(&a) { 2 } else { 1 };
    }
    None
}

/// `path` (absolute, as the kernel resolved it) is the file `named` names,
/// maybe relative to the process's cwd (`ld.so ./payload`).
fn names_file(path: &str, named: &str) -> bool {
    if named.starts_with('/') {
        return crate::event::clean_path(named) == path;
    }
    let rel: Vec<&str> = named.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    !rel.is_empty() && !rel.contains(&"..") && path.ends_with(&format!("/{}", rel.join("/")))
}

/// Looks like a shared object by its name (`libx.so`, `libx.so.1.2`, `x.so`).
fn shared_object_name(path: &str) -> bool {
    let n = basename(path);
    n.ends_with(".so") || n.contains(".so.")
}

impl Classifier {
    /// Judges one drifted executable mapping.
    pub fn mapping(&self, ev: &MapEvent, c: &ContainerRef) -> Result<Finding, NoFinding> {
        if !ev.source.is_drift() {
            return Err(NoFinding::NotDrift);
        }
        if !self.rules.binary.enabled {
            return Err(NoFinding::RuleDisabled);
        }
        // The loader run as a command maps its program like a library: the
        // program is its first operand (args cut short: judged by the name).
        let main_program = is_loader(&ev.exe)
            && match loader_program(&ev.args) {
                Some(p) => names_file(&ev.path, p),
                None => !shared_object_name(&ev.path),
            };
        let (rule, what) = if main_program {
            (&rules::EXEC_VIA_LOADER, "ran program")
        } else {
            (&rules::EXEC_NEW_LIBRARY, "mapped library")
        };
        let why = match ev.source {
            ExeSource::UpperLayer => "written to the container's writable layer, not part of its image",
            ExeSource::Memfd => "in memory (memfd), with no file on disk",
            ExeSource::Deleted => "deleted from disk",
            ExeSource::Tmpfs => "on a tmpfs volume, not part of the image",
            ExeSource::Volume => "on a mounted volume, not part of the image",
            _ => "not part of the image",
        };
        let via = if main_program { " through the dynamic loader" } else { "" };
        let syscall = if ev.mprotect { "mprotect" } else { "mmap" };
        let exe = if ev.exe.is_empty() { ev.proc.comm.as_str() } else { ev.exe.as_str() };
        let mut msg = format!(
            "{exe} (pid {}) in container {} {what} {}{via} (executable {syscall}): {why}",
            ev.proc.tgid,
            c.short_id(),
            ev.path
        );
        if ev.killed {
            msg.push_str("; killed before the mapped code ran (protect mode)");
        }
        let detail = Detail::Exec(ExecFacts {
            exe_source: ev.source.as_str(),
            exe_inode: ev.ino,
            mapped_path: Some(ev.path.clone()),
            mapped_by: Some(syscall),
            mapped_path_truncated: ev.path_truncated,
            mapped_path_escaped: ev.path_escaped,
            ..Default::default()
        });
        let mut f = self.finding(rule, c.into(), ev.proc.ktime_ns, msg, detail);
        f.action = ev.killed.then_some(KILLED);
        f.process =
            Some(ProcessFacts { exe_path: ev.exe.clone(), command_args: ev.args.clone(), ..process_facts(&ev.proc) });
        f.record = Some(RecordFacts {
            path_truncated: ev.exe_truncated,
            args_truncated: ev.args_truncated,
            path_escaped: ev.exe_escaped,
            args_escaped: ev.args_escaped,
            ..record_facts(&ev.proc)
        });
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        classify::Kind,
        config::Config,
        enrich::CgroupLayout,
        event::{Event, decode},
    };

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn c() -> ContainerRef {
        ContainerRef { id: ID.into(), layout: CgroupLayout::ContainerdCgroupfs, pod_uid: None }
    }

    fn ev(exe: &str, path: &str, args: &[&str]) -> MapEvent {
        let Event::Map(mut e) = decode(&crate::event::map_tests::map_record(|_| {})).unwrap() else {
            panic!("not map")
        };
        e.exe = exe.into();
        e.path = path.into();
        e.args = args.iter().map(|&s| Text::from(s)).collect();
        e
    }

    fn judge(e: &MapEvent) -> Result<Finding, NoFinding> {
        Classifier::new(&Config::default()).mapping(e, &c())
    }

    #[test]
    fn libraries_and_programs_through_the_loader() {
        let ld = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";
        for (exe, path, args, rule) in [
            ("/usr/bin/true", "/tmp/evil.so", &["/bin/true"][..], "exec_new_library"),
            ("/opt/app", "/tmp/plugin.so", &["/opt/app"], "exec_new_library"),
            (ld, "/tmp/payload", &["/lib64/ld-linux-x86-64.so.2", "/tmp/payload"], "exec_via_loader"),
            (ld, "/tmp/payload", &["ld.so", "--argv0", "x", "./payload"], "exec_via_loader"),
            (ld, "/tmp/evil.so", &["ld.so", "--preload", "/tmp/evil.so", "/bin/true"], "exec_new_library"),
            (ld, "/tmp/payload", &[], "exec_via_loader"),
            (ld, "/tmp/libx.so.1", &[], "exec_new_library"),
        ] {
            let f = judge(&ev(exe, path, args)).unwrap();
            assert_eq!((f.kind, f.rule), (Kind::Binary, rule), "{exe} {path} {args:?}");
            assert_eq!(f.severity, crate::config::Severity::Critical);
            assert_eq!(f.playbook_step, crate::classify::PlaybookStep::Isolate);
            let v = serde_json::to_value(&f).unwrap();
            assert_eq!(v["driftwatch.mapped.path"], path);
            assert_eq!(v["driftwatch.exe.source"], "upper_layer");
            assert_eq!(v["process.executable.path"], exe);
        }
    }

    #[test]
    fn kills_are_said_and_disabled_rules_respected() {
        let mut e = ev("/usr/bin/true", "/tmp/evil.so", &["true"]);
        e.killed = true;
        let f = judge(&e).unwrap();
        assert_eq!(f.action, Some("killed"));
        assert!(f.message.contains("killed before the mapped code ran"), "{}", f.message);
        let mut cfg = Config::default();
        cfg.rules.binary.enabled = false;
        assert_eq!(Classifier::new(&cfg).mapping(&e, &c()).unwrap_err(), NoFinding::RuleDisabled);
        e.source = ExeSource::Image;
        assert_eq!(judge(&e).unwrap_err(), NoFinding::NotDrift);
    }

    #[test]
    fn loader_names_and_relative_programs() {
        for n in
            ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-musl-x86_64.so.1", "/usr/bin/ld.so", "/lib/ld-linux-aarch64.so.1"]
        {
            assert!(is_loader(n), "{n}");
        }
        for n in ["/usr/bin/ld", "/usr/bin/ldd", "/bin/true", ""] {
            assert!(!is_loader(n), "{n}");
        }
        assert!(names_file("/tmp/payload", "/tmp/./payload"));
        assert!(names_file("/tmp/payload", "./payload"));
        assert!(names_file("/tmp/x/payload", "x/payload"));
        assert!(!names_file("/tmp/payload", "../payload"));
        assert!(!names_file("/tmp/xpayload", "payload"));
    }
}
