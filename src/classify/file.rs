//! File drift: a container changed a file of its filesystem outside scratch
//! space. Writes to package-manager state are package drift instead, whoever
//! makes them (a renamed or replaced package manager still writes there).

use super::{
    Classifier, NoFinding,
    finding::{Finding, Kind, PlaybookStep},
};
use crate::{
    config::{FileRule, Severity},
    enrich::{
        ContainerRef,
        overlay::{self, OverlayDirs},
    },
    event::{ExeSource, FileEvent, FileOp},
};
use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
};

/// What the agent knows of a container's filesystem: its overlay layers and
/// the mount points of its volumes.
#[derive(Debug, Default)]
pub struct ContainerFs {
    pub overlay: Option<OverlayDirs>,
    /// Mount points other than the root and kernel filesystems, longest first.
    pub volumes: Vec<String>,
}

/// Mount points of volumes in a mountinfo text (not /, /proc, /dev, /sys).
pub fn volumes_from_mountinfo(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mp = pre.split(' ').nth(4)?;
            let fstype = post.split(' ').next()?;
            let kernel = ["proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2", "devtmpfs"].contains(&fstype)
                || mp == "/"
                || mp.starts_with("/proc")
                || mp.starts_with("/sys")
                || mp == "/dev"
                || mp.starts_with("/dev/");
            (!kernel).then(|| mp.to_string())
        })
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.len()));
    v
}

fn container_fs(pid: u32) -> ContainerFs {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) else { return ContainerFs::default() };
    ContainerFs { overlay: overlay::root_overlay_from_mountinfo(&text), volumes: volumes_from_mountinfo(&text) }
}

pub struct FileJudge {
    rule: FileRule,
    package_severity: Severity,
    /// Per container, read once from a live process's mountinfo. Bounded.
    fs: Mutex<HashMap<String, Arc<ContainerFs>>>,
}

const MAX_CACHED: usize = 4096;

fn under(path: &str, prefix: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    path == p || path.strip_prefix(p).is_some_and(|rest| rest.starts_with('/'))
}

impl FileJudge {
    pub fn new(rule: &FileRule, package_severity: Severity) -> Self {
        Self { rule: rule.clone(), package_severity, fs: Mutex::new(HashMap::new()) }
    }

    fn fs_of(&self, c: &ContainerRef, pid: u32) -> Arc<ContainerFs> {
        if let Some(f) = self.fs.lock().ok().and_then(|m| m.get(&c.id).cloned()) {
            return f;
        }
        // The process may be gone already: any live process of the container
        // has the same mounts.
        let mut f = container_fs(pid);
        if f.overlay.is_none()
            && let Some(p) = overlay::live_pid_of(&c.id)
        {
            f = container_fs(p);
        }
        let f = Arc::new(f);
        if f.overlay.is_some()
            && let Ok(mut m) = self.fs.lock()
        {
            if m.len() >= MAX_CACHED {
                m.clear(); // cheap to rebuild: one mountinfo read per container
            }
            m.insert(c.id.clone(), f.clone());
        }
        f
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
        let fs = self.fs_of(c, ev.tgid);
        let volume = match ev.source {
            ExeSource::Tmpfs | ExeSource::Volume => true,
            _ => fs.volumes.iter().any(|m| under(path, m)),
        };
        let location = if volume { "volume" } else { "rootfs" };
        let origin = if volume {
            None
        } else {
            fs.overlay.as_ref().map(|o| {
                let rel = path.trim_start_matches('/');
                if o.lowers.iter().any(|l| {
                    Path::new(&l.join(rel)).exists()
                        || Path::new("/proc/1/root").join(l.strip_prefix("/").unwrap_or(l)).join(rel).exists()
                }) {
                    "image"
                } else {
                    "new"
                }
            })
        };
        let short = &c.id[..c.id.len().min(12)];
        let package = self.rule.package_db_prefixes.iter().any(|p| under(path, p))
            || self.rule.package_db_fragments.iter().any(|f| path.contains(f.as_str()));
        let mut f = if package {
            let msg =
                format!("{} changed package-manager state {path} in container {short} ({})", ev.comm, ev.op.as_str());
            let mut f = cl.file_finding(
                ev,
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
            };
            let what = match origin {
                Some("image") => "image file",
                Some("new") => "new file",
                _ => "file",
            };
            let msg = format!("{} {verb} {what} {path} in container {short} ({location})", ev.comm);
            cl.file_finding(ev, c, Kind::File, rule, self.rule.severity, PlaybookStep::Investigate, msg)
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
    fn volumes_exclude_root_and_kernel_filesystems() {
        let mi = "73 48 0:40 / / rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n\
                  74 73 0:41 / /proc rw - proc proc rw\n\
                  75 73 0:42 / /dev rw - tmpfs tmpfs rw\n\
                  76 73 0:43 / /scratch rw - tmpfs tmpfs rw\n\
                  77 73 8:1 /data /var/lib/app/data rw - ext4 /dev/vda rw\n";
        assert_eq!(volumes_from_mountinfo(mi), vec!["/var/lib/app/data".to_string(), "/scratch".to_string()]);
    }

    #[test]
    fn prefixes_match_whole_components() {
        assert!(under("/tmp/x", "/tmp/"));
        assert!(under("/tmp", "/tmp/"));
        assert!(!under("/tmpfoo", "/tmp/"));
        assert!(under("/var/lib/dpkg/status", "/var/lib/dpkg/"));
    }
}
