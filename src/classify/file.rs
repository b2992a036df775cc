//! File drift: a container changed a file of its filesystem outside scratch
//! space. Writes to package-manager state are package drift instead, whoever
//! makes them (a renamed or replaced package manager still writes there).

use super::{
    Classifier, NoFinding,
    finding::{Boxed, Detail, FileFacts},
    rules,
};
use crate::{
    config::FileRule,
    enrich::{ContainerRef, overlay::ContainerFs},
    event::{ExeSource, FileEvent, FileOp},
};

pub struct FileJudge {
    rule: FileRule,
}

fn under(path: &str, prefix: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    path == p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/'))
}

impl FileJudge {
    pub fn new(rule: &FileRule) -> Self {
        Self { rule: rule.clone() }
    }

    /// Scratch space and disabled rules are decided from the event alone,
    /// before the container's filesystem is looked at.
    pub fn prejudge(&self, ev: &FileEvent) -> Result<(), NoFinding> {
        if !self.rule.enabled {
            return Err(NoFinding::RuleDisabled);
        }
        let path = ev.path.as_str();
        let scratch = |p: &str| self.rule.ignore_prefixes.iter().any(|x| under(p, x));
        // A rename or hard link out of scratch space (/tmp/x -> /usr/bin/x)
        // changes the filesystem where it lands. (The kernel applies the
        // same test first: ebpf/helpers/fileops.h scratch_path.)
        let lands_outside =
            matches!(ev.op, FileOp::Rename | FileOp::Link) && ev.target.as_deref().is_some_and(|t| !scratch(t));
        if path.is_empty() || (scratch(path) && !lands_outside) {
            return Err(NoFinding::ScratchPath);
        }
        Ok(())
    }

    /// Judges one file event of container `c`, whose layers and volumes are `fs`.
    pub fn judge(
        &self,
        cl: &Classifier,
        ev: &FileEvent,
        c: &ContainerRef,
        fs: &ContainerFs,
    ) -> Result<Boxed, NoFinding> {
        self.prejudge(ev)?;
        let path = ev.path.as_str();
        // Mounts and layers are looked up by the kernel's bytes.
        let raw = crate::escape::path(path, ev.path_escaped);
        let volume = match ev.source {
            ExeSource::Tmpfs | ExeSource::Volume => true,
            _ => fs.on_volume(&raw),
        };
        let location = if volume { "volume" } else { "rootfs" };
        let origin =
            if volume { None } else { fs.overlay.as_ref().map(|o| if o.in_image(&raw) { "image" } else { "new" }) };
        let comm = &ev.proc.comm;
        let package = self.rule.package_db_prefixes.iter().any(|p| under(path, p))
            || self.rule.package_db_fragments.iter().any(|f| path.contains(f.as_str()));
        let (rule, message) = if package {
            let msg = format!(
                "{comm} changed package-manager state {path} in container {} ({})",
                c.short_id(),
                ev.op.as_str()
            );
            (&rules::PACKAGE_DATABASE_WRITE, msg)
        } else {
            let (rule, verb) = match ev.op {
                FileOp::Write => (&rules::FILE_WRITTEN, "wrote"),
                FileOp::Delete => (&rules::FILE_DELETED, "deleted"),
                FileOp::Rename => (&rules::FILE_RENAMED, "renamed"),
                FileOp::Chmod => (&rules::FILE_MODE_CHANGED, "changed the mode of"),
                FileOp::Link => (&rules::FILE_LINKED, "hard-linked"),
                FileOp::Symlink => (&rules::FILE_SYMLINKED, "created the symlink"),
                FileOp::Chown => (&rules::FILE_OWNER_CHANGED, "changed the owner of"),
                FileOp::Mkdir => (&rules::FILE_DIRECTORY_CREATED, "created the directory"),
                FileOp::Truncate => (&rules::FILE_WRITTEN, "truncated"),
            };
            let what = match (ev.op, origin) {
                (FileOp::Mkdir, _) => "",
                (_, Some("image")) => "image file ",
                (_, Some("new")) => "new file ",
                _ => "file ",
            };
            (rule, format!("{comm} {verb} {what}{path} in container {} ({location})", c.short_id()))
        };
        let detail = Detail::File(FileFacts {
            drifted_ancestor: false,
            path: ev.path.clone(),
            operation: ev.op.as_str(),
            path_truncated: ev.path_truncated,
            path_escaped: ev.path_escaped,
            target: ev.target.clone(),
            target_truncated: ev.target_truncated,
            target_escaped: ev.target_escaped,
            location,
            origin,
            mode: (ev.op == FileOp::Chmod).then(|| format!("{:o}", ev.mode & 0o7777)),
            owner: ev.owner.map(|(u, g)| {
                let id = |v: u32| if v == u32::MAX { "-".to_string() } else { v.to_string() };
                format!("{}:{}", id(u), id(g))
            }),
        });
        let mut f = cl.process_finding(rule, c, &ev.proc, message, detail);
        // A Secret/ConfigMap volume is mounted read-only: a change from inside
        // means a writable mount and a process rewriting the pod's config.
        if volume && fs.on_config_volume(&raw) {
            f.severity = crate::config::Severity::Critical;
            f.message.push_str(" on a mounted Secret/ConfigMap volume");
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_components() {
        assert!(under("/tmp/x", "/tmp/"));
        assert!(under("/tmp", "/tmp/"));
        assert!(!under("/tmpfoo", "/tmp/"));
        assert!(under("/var/lib/dpkg/status", "/var/lib/dpkg/"));
    }

    fn event(op: FileOp, path: &str, target: Option<&str>) -> FileEvent {
        FileEvent {
            proc: crate::event::Process::for_test("x", ""),
            op,
            path: path.into(),
            target: target.map(Into::into),
            source: ExeSource::Unknown,
            mode: 0,
            owner: None,
            path_truncated: false,
            target_truncated: false,
            path_escaped: false,
            target_escaped: false,
        }
    }

    /// Scratch space is judged by where a change lands: a rename or link out
    /// of /tmp is drift, one into /tmp from /tmp is not; a symlink's target
    /// is only its content.
    #[test]
    fn renames_out_of_scratch_space_are_judged() {
        let judge = FileJudge::new(&crate::config::Config::default().rules.file);
        let scratch = |e: &FileEvent| judge.prejudge(e).is_err();
        assert!(scratch(&event(FileOp::Write, "/tmp/x", None)));
        assert!(!scratch(&event(FileOp::Write, "/usr/bin/x", None)));
        assert!(!scratch(&event(FileOp::Rename, "/tmp/x", Some("/usr/bin/x"))));
        assert!(!scratch(&event(FileOp::Link, "/tmp/x", Some("/etc/cron.d/x"))));
        assert!(scratch(&event(FileOp::Rename, "/tmp/x", Some("/tmp/y"))));
        assert!(scratch(&event(FileOp::Symlink, "/tmp/l", Some("/usr/bin/x"))));
        assert!(!scratch(&event(FileOp::Rename, "/usr/bin/x", Some("/tmp/x"))));
    }
}
