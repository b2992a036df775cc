//! File drift: a container changed a file of its filesystem outside scratch
//! space. Writes to package-manager state are package drift instead, whoever
//! makes them (a renamed or replaced package manager still writes there).

use super::{
    Classifier, NoFinding,
    finding::{Finding, Kind, PlaybookStep},
};
use crate::{
    config::{FileRule, Severity},
    enrich::{ContainerRef, overlay::ContainerFsCache},
    event::{ExeSource, FileEvent, FileOp},
};
use std::sync::Arc;

pub struct FileJudge {
    rule: FileRule,
    package_severity: Severity,
    /// Containers' layers and volumes, shared with the copy-up check.
    fs: Arc<ContainerFsCache>,
}

fn under(path: &str, prefix: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    path == p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/'))
}

impl FileJudge {
    pub fn new(rule: &FileRule, package_severity: Severity, fs: Arc<ContainerFsCache>) -> Self {
        Self { rule: rule.clone(), package_severity, fs }
    }

    /// Judges one file event.
    pub fn judge(&self, cl: &Classifier, ev: &FileEvent, c: &ContainerRef) -> Result<Finding, NoFinding> {
        if !self.rule.enabled {
            return Err(NoFinding::RuleDisabled);
        }
        let path = ev.path.as_str();
        if path.is_empty() || self.rule.ignore_prefixes.iter().any(|p| under(path, p)) {
            return Err(NoFinding::ScratchPath);
        }
        let fs = self.fs.get(&c.id, ev.tgid);
        let volume = match ev.source {
            ExeSource::Tmpfs | ExeSource::Volume => true,
            _ => fs.volumes.iter().any(|m| under(path, m)),
        };
        let location = if volume { "volume" } else { "rootfs" };
        let origin =
            if volume { None } else { fs.overlay.as_ref().map(|o| if o.in_image(path) { "image" } else { "new" }) };
        let short = &c.id[..c.id.len().min(12)];
        let package = self.rule.package_db_prefixes.iter().any(|p| under(path, p))
            || self.rule.package_db_fragments.iter().any(|f| path.contains(f.as_str()));
        let mut f = if package {
            let msg =
                format!("{} changed package-manager state {path} in container {short} ({})", ev.comm, ev.op.as_str());
            let mut f = cl.process_finding(
                ev.process(),
                c,
                Kind::Package,
                "package_database_write",
                self.package_severity,
                PlaybookStep::Validate,
                msg,
            );
            f.package_manager = None;
            f
        } else {
            let (rule, verb) = match ev.op {
                FileOp::Write => ("file_written", "wrote"),
                FileOp::Delete => ("file_deleted", "deleted"),
                FileOp::Rename => ("file_renamed", "renamed"),
                FileOp::Chmod => ("file_mode_changed", "changed the mode of"),
                FileOp::Link => ("file_linked", "hard-linked"),
                FileOp::Symlink => ("file_symlinked", "created the symlink"),
                FileOp::Chown => ("file_owner_changed", "changed the owner of"),
                FileOp::Mkdir => ("file_directory_created", "created the directory"),
                FileOp::Truncate => ("file_written", "truncated"),
            };
            let what = match (ev.op, origin) {
                (FileOp::Mkdir, _) => "",
                (_, Some("image")) => "image file ",
                (_, Some("new")) => "new file ",
                _ => "file ",
            };
            let msg = format!("{} {verb} {what}{path} in container {short} ({location})", ev.comm);
            cl.process_finding(ev.process(), c, Kind::File, rule, self.rule.severity, PlaybookStep::Investigate, msg)
        };
        f.file_path = Some(ev.path.clone());
        f.file_operation = Some(ev.op.as_str());
        f.file_target = ev.target.clone();
        f.file_location = Some(location);
        f.file_origin = origin;
        f.file_mode = (ev.op == FileOp::Chmod).then(|| format!("{:o}", ev.mode & 0o7777));
        f.file_owner = ev.owner.map(|(u, g)| {
            let id = |v: u32| if v == u32::MAX { "-".to_string() } else { v.to_string() };
            format!("{}:{}", id(u), id(g))
        });
        f.path_truncated = ev.path_truncated;
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
}
