//! The table `driftwatch diff` prints on a terminal: one group per kind of
//! change with its count, executables first in each group.

use super::{Change, ChangeKind, Report};
use std::io::{self, Write};

/// A size people read: 512, 1.5K, 12M.
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if n < 1024 {
        return n.to_string();
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if v < 10.0 { format!("{v:.1}{}", UNITS[u]) } else { format!("{v:.0}{}", UNITS[u]) }
}

/// What follows the path: where a symlink points, the content's digest.
fn detail(c: &Change) -> String {
    let mut parts = Vec::new();
    if let Some(t) = &c.link_target {
        match &c.image_link_target {
            Some(old) => parts.push(format!("-> {t} (was -> {old})")),
            None => parts.push(format!("-> {t}")),
        }
    }
    if let Some(t) = c.image_type {
        parts.push(format!("(was {})", t.as_str()));
    }
    if let Some(m) = &c.image_mode {
        parts.push(format!("(mode was {m})"));
    }
    if let Some(d) = &c.sha256 {
        parts.push(format!("sha256:{}", &d[..12]));
    }
    if let Some(d) = &c.image_sha256 {
        parts.push(format!("(image sha256:{})", &d[..12]));
    }
    if let Some(m) = &c.shadowed_by {
        parts.push(format!("[under mount {m}]"));
    }
    parts.join(" ")
}

/// Writes `report` as a table.
pub fn render_table(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let s = &report.summary;
    let mut who = String::new();
    if let (Some(ns), Some(pod)) = (&report.pod.namespace, &report.pod.pod_name) {
        who = format!(" ({ns}/{pod}");
        if let Some(c) = &report.pod.container_name {
            who.push('/');
            who.push_str(c);
        }
        who.push(')');
    }
    let id = report.container_id.get(..12).unwrap_or(&report.container_id);
    let image = report.image.reference.as_deref().unwrap_or("unknown (no runtime metadata)");
    let layers = match report.image.layers {
        1 => "1 layer".to_string(),
        n => format!("{n} layers"),
    };
    writeln!(out, "container {id}{who}, image {image}, {layers}")?;
    if !s.drift {
        writeln!(out, "no drift: the container's filesystem matches its image")?;
    } else {
        let counts: Vec<String> = ChangeKind::ALL.iter().map(|k| format!("{} {}", count(s, *k), k.as_str())).collect();
        writeln!(out, "drift: {} changes ({}); executables: {}", s.total, counts.join(", "), s.executables)?;
    }
    for kind in ChangeKind::ALL {
        let mut group: Vec<&Change> = report.changes.iter().filter(|c| c.change == kind).collect();
        if group.is_empty() {
            continue;
        }
        // Stable: path order within executables and the rest.
        group.sort_by_key(|c| !c.executable);
        writeln!(out, "\n{} ({})", kind.as_str().to_uppercase(), count(s, kind))?;
        writeln!(
            out,
            "  {:<3} {:<7} {:<4} {:>11} {:>6}  {:<19}  PATH",
            "EXE", "TYPE", "MODE", "OWNER", "SIZE", "MTIME"
        )?;
        for c in group {
            let owner = format!("{}:{}", c.uid, c.gid);
            let mtime = c.mtime.get(..19).unwrap_or(&c.mtime).replace('T', " ");
            let exe = if c.executable { "x" } else { "" };
            let size = if c.file_type == super::FileType::Dir { "-".to_string() } else { human(c.size) };
            let line = format!(
                "  {exe:<3} {:<7} {:<4} {owner:>11} {size:>6}  {mtime:<19}  {} {}",
                c.file_type.as_str(),
                c.mode,
                c.path,
                detail(c)
            );
            writeln!(out, "{}", line.trim_end())?;
        }
    }
    if s.truncated {
        writeln!(out, "\n(only the first {} of {} changes are listed)", report.changes.len(), s.total)?;
    }
    if s.unreadable > 0 {
        writeln!(out, "\n{} entries could not be read:", s.unreadable)?;
        for e in &s.errors {
            writeln!(out, "  {}: {}", e.path, e.error)?;
        }
    }
    if !s.not_covered.is_empty() {
        writeln!(out, "\nnot covered (mounts, not the image's overlay): {}", s.not_covered.join(", "))?;
    }
    if s.shadowed > 0 {
        writeln!(out, "{} changes lie under a mount point: hidden from the container now", s.shadowed)?;
    }
    for l in &s.limits {
        writeln!(out, "note: {l}")?;
    }
    Ok(())
}

fn count(s: &super::Summary, k: ChangeKind) -> u64 {
    match k {
        ChangeKind::Added => s.added,
        ChangeKind::Modified => s.modified,
        ChangeKind::MetadataOnly => s.metadata_only,
        ChangeKind::Deleted => s.deleted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::respond::diff::{FileType, ImageInfo, PodInfo, Summary};

    fn change(path: &str, kind: ChangeKind, executable: bool) -> Change {
        Change {
            path: path.into(),
            path_escaped: false,
            change: kind,
            file_type: FileType::File,
            mode: "0644".into(),
            uid: 0,
            gid: 0,
            size: 2048,
            mtime: "2025-01-02T03:04:05.000000000Z".into(),
            executable,
            sha256: Some("ab".repeat(32)),
            link_target: None,
            link_target_escaped: false,
            image_sha256: None,
            image_type: None,
            image_mode: None,
            image_link_target: None,
            shadowed_by: None,
        }
    }

    #[test]
    fn groups_counts_and_executables_first() {
        let summary = Summary {
            drift: true,
            total: 3,
            added: 2,
            deleted: 1,
            executables: 1,
            not_covered: vec!["/data".into()],
            ..Default::default()
        };
        let report = Report {
            container_id: "0123456789abcdef".into(),
            pod: PodInfo {
                namespace: Some("ns".into()),
                pod_name: Some("web".into()),
                container_name: Some("app".into()),
                ..Default::default()
            },
            image: ImageInfo { reference: Some("busybox:1".into()), id: None, layers: 3 },
            changes: vec![
                change("/a.conf", ChangeKind::Added, false),
                change("/b/payload", ChangeKind::Added, true),
                change("/etc/motd", ChangeKind::Deleted, false),
            ],
            summary,
        };
        let mut out = Vec::new();
        render_table(&report, &mut out).unwrap();
        let t = String::from_utf8(out).unwrap();
        assert!(t.starts_with("container 0123456789ab (ns/web/app), image busybox:1, 3 layers\n"), "{t}");
        assert!(
            t.contains("drift: 3 changes (2 added, 0 modified, 0 metadata_only, 1 deleted); executables: 1"),
            "{t}"
        );
        let (payload, conf) = (t.find("/b/payload").unwrap(), t.find("/a.conf").unwrap());
        assert!(payload < conf, "executables first:\n{t}");
        assert!(t.contains("ADDED (2)") && t.contains("DELETED (1)") && !t.contains("MODIFIED"), "{t}");
        assert!(t.contains("2.0K  2025-01-02 03:04:05  /a.conf sha256:abababababab"), "{t}");
        assert!(t.contains("not covered (mounts, not the image's overlay): /data"), "{t}");
        assert_eq!(human(512), "512");
        assert_eq!(human(64 << 20), "64M");
    }
}
