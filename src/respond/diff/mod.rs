//! `driftwatch diff`: a container's drift against its image, read from the
//! node's filesystem alone: the overlay upper directory (what the container
//! wrote) against the merged view of the image's lower layers. Nothing runs
//! inside the container, so a container whose shell was deleted diffs all
//! the same.
//!
//! overlayfs semantics, as the kernel applies them (and as containerd
//! unpacks layers into snapshot directories): a whiteout is a character
//! device 0:0 (or, since 6.7, a zero-size file with an `overlay.whiteout`
//! xattr in a directory marked for it); an opaque directory (`overlay.opaque`
//! = "y") hides everything below it; both occur in the image's own layers
//! too, so "what the image has at P" is the lower layers merged top-down.
//! Renamed directories (`overlay.redirect`) and metadata-only copy-ups
//! (`overlay.metacopy`) are followed to the data they stand for.
//!
//! Both xattr namespaces count: `trusted.overlay.*` (reading it needs
//! CAP_SYS_ADMIN: run as root) and `user.overlay.*` (`userxattr` mounts).

mod content;
mod fsat;
mod render;
mod walk;

pub use content::hex;
pub use render::render_table;

use crate::{
    enrich::{
        cri::ContainerMeta,
        image::{ImageRef, digest_of_image_ref},
        overlay::{self, OverlayDirs},
    },
    escape,
};
use serde::Serialize;
use std::{
    ffi::OsStr,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    time::Instant,
};

/// Limits of one diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffOptions {
    /// Regular files up to this size get a sha256; larger ones are compared
    /// byte for byte and reported without one.
    pub hash_limit: u64,
    /// Changes kept in the report; the counts in the summary stay exact.
    pub max_changes: usize,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions { hash_limit: 64 << 20, max_changes: 100_000 }
    }
}

/// What happened at a path, compared with the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Not in the image.
    Added,
    /// Content differs (for a symlink its target, for a device its number),
    /// or another type of file now.
    Modified,
    /// Only mode, owner or modification time differ: a chmod, chown or touch
    /// copied it up unchanged.
    MetadataOnly,
    /// In the image, gone in the container (a whiteout, or hidden by an
    /// opaque directory).
    Deleted,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 4] =
        [ChangeKind::Added, ChangeKind::Modified, ChangeKind::MetadataOnly, ChangeKind::Deleted];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::MetadataOnly => "metadata_only",
            ChangeKind::Deleted => "deleted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    File,
    Dir,
    Symlink,
    /// Device, fifo or socket.
    Other,
}

impl FileType {
    pub fn as_str(self) -> &'static str {
        match self {
            FileType::File => "file",
            FileType::Dir => "dir",
            FileType::Symlink => "symlink",
            FileType::Other => "other",
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One changed path. Its attributes are the container's, except for a
/// deleted path, whose attributes are the image's (what was deleted).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// As the container sees it. Names that are not UTF-8 are escaped as in
    /// findings (`\xHH`), and `path_escaped` says so.
    pub path: String,
    #[serde(skip_serializing_if = "is_false")]
    pub path_escaped: bool,
    pub change: ChangeKind,
    #[serde(rename = "type")]
    pub file_type: FileType,
    /// Permission bits in octal, e.g. "0755", "4755".
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// RFC 3339, UTC.
    pub mtime: String,
    /// A regular file with an execute bit, or with an ELF or `#!` magic.
    pub executable: bool,
    /// Regular files up to the hash limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub link_target_escaped: bool,
    /// The image's version, for `modified` (a regular file within the limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_sha256: Option<String>,
    /// The image's type, when the type changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_type: Option<FileType>,
    /// The image's permission bits, when they changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_mode: Option<String>,
    /// The image's symlink target, for a changed symlink.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_link_target: Option<String>,
    /// The mount point that hides this path from the container now (the
    /// upper directory still holds it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadowed_by: Option<String>,
}

/// An entry that could not be read (counted, not fatal).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntryError {
    pub path: String,
    pub error: String,
}

/// Counts and coverage of one diff.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Any change at all: the CLI exits 1.
    pub drift: bool,
    /// Changes found (all of them, also past `max_changes`).
    pub total: u64,
    pub added: u64,
    pub modified: u64,
    pub metadata_only: u64,
    pub deleted: u64,
    /// Changes that are executables.
    pub executables: u64,
    /// More changes than `max_changes`: `changes` holds the first ones.
    pub truncated: bool,
    /// Entries that could not be read or compared (listed in `errors`, at most 20).
    pub unreadable: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<EntryError>,
    /// Mount points in the container (volumes, bind mounts such as
    /// /etc/hosts, tmpfs): what is written there is not on the overlay and
    /// not part of this diff.
    pub not_covered: Vec<String>,
    /// Changes under a mount point: in the upper directory, hidden from the
    /// container by the mount.
    pub shadowed: u64,
    /// What the runtime created to mount something on: empty files and
    /// directories at mount points, directories on the way to one (not
    /// drift, not listed).
    pub mount_points_created: u64,
    /// The overlay upper directory read (a host path).
    pub upper_dir: String,
    /// Image layers below it.
    pub layers: usize,
    pub hash_limit: u64,
    pub elapsed_ms: u64,
    /// Why the diff may miss something it cannot see (without CAP_SYS_ADMIN,
    /// `trusted.*` xattrs read as absent: opaque directories look plain).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<String>,
}

/// The image, as far as the node knows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImageInfo {
    /// As the runtime reports it (`None` without CRI metadata).
    pub reference: Option<String>,
    /// `sha256:...` of the image, when the runtime says.
    pub id: Option<String>,
    /// Lower layers of the container's root overlay.
    pub layers: usize,
}

/// Pod metadata, with the keys findings use.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PodInfo {
    #[serde(rename = "k8s.namespace.name", skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(rename = "k8s.pod.name", skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(rename = "k8s.pod.uid", skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(rename = "k8s.container.name", skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(rename = "container.image.name", skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    #[serde(rename = "container.image.tags", skip_serializing_if = "Option::is_none")]
    pub image_tags: Option<Vec<String>>,
    #[serde(rename = "container.image.id", skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

impl PodInfo {
    pub fn of(m: &ContainerMeta) -> PodInfo {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let image = ImageRef::parse(&m.image).ok();
        PodInfo {
            namespace: some(&m.namespace),
            pod_name: some(&m.pod_name),
            pod_uid: some(&m.pod_uid),
            container_name: some(&m.container_name),
            image_name: image.as_ref().map(ImageRef::name),
            image_tags: image.as_ref().map(ImageRef::tags).filter(|t| !t.is_empty()),
            image_id: digest_of_image_ref(&m.image_ref).map(str::to_string),
        }
    }
}

/// The report `driftwatch diff --output json` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    #[serde(rename = "container.id")]
    pub container_id: String,
    #[serde(flatten)]
    pub pod: PodInfo,
    pub image: ImageInfo,
    /// In path order.
    pub changes: Vec<Change>,
    pub summary: Summary,
}

/// A diff without the container around it ([`diff_dirs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Diff {
    pub changes: Vec<Change>,
    pub summary: Summary,
}

/// A layer that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("cannot read the upper directory {}: {source}", .path.display())]
    Upper { path: PathBuf, source: std::io::Error },
    #[error("cannot read image layer {}: {source}", .path.display())]
    Lower { path: PathBuf, source: std::io::Error },
}

/// Why a container cannot be diffed; the message names it.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("container {0} has no running process: its overlay mount cannot be found")]
    NotRunning(String),
    #[error("container {id}: process {pid} is not one of its processes (any more): try again")]
    NotItsProcess { id: String, pid: u32 },
    #[error("container {id}: cannot read /proc/{pid}/mountinfo: {source}")]
    Mounts { id: String, pid: u32, source: std::io::Error },
    #[error(
        "container {id}: its root filesystem is not an overlay mount with an upper directory \
         (a snapshotter other than overlayfs, or a read-only root): nothing to diff"
    )]
    NoOverlayRoot { id: String },
    #[error("container {id}: {source}")]
    Layer { id: String, source: LayerError },
}

impl DiffError {
    /// A stable name of the failure (metric label, API error kind).
    pub fn kind(&self) -> &'static str {
        match self {
            DiffError::NotRunning(_) | DiffError::NotItsProcess { .. } => "not_running",
            DiffError::Mounts { .. } => "mountinfo",
            DiffError::NoOverlayRoot { .. } => "no_overlay_root",
            DiffError::Layer { source: LayerError::Upper { .. }, .. } => "upper_dir",
            DiffError::Layer { source: LayerError::Lower { .. }, .. } => "image_layer",
        }
    }
}

/// Diffs the container `id`, whose process `pid` shows its mounts.
pub fn diff_container(
    id: &str,
    pid: u32,
    meta: Option<&ContainerMeta>,
    opts: &DiffOptions,
) -> Result<Report, DiffError> {
    if pid == 0 {
        return Err(DiffError::NotRunning(id.to_string()));
    }
    let text = std::fs::read(format!("/proc/{pid}/mountinfo")).map_err(|source| DiffError::Mounts {
        id: id.to_string(),
        pid,
        source,
    })?;
    // Read first, checked after: these were the container's mounts, not
    // those of a process that took over a recycled pid.
    if crate::procfs::container_of(pid).as_deref() != Some(id) {
        return Err(DiffError::NotItsProcess { id: id.to_string(), pid });
    }
    let (dirs, mounts) = layout(id, &overlay::mountinfo_text(text))?;
    let dirs =
        OverlayDirs { upper: host_path(&dirs.upper), lowers: dirs.lowers.iter().map(|l| host_path(l)).collect() };
    let diff = diff_dirs(&dirs, &mounts, opts).map_err(|source| DiffError::Layer { id: id.to_string(), source })?;
    let pod = meta.map(PodInfo::of).unwrap_or_default();
    let image = ImageInfo {
        reference: meta.map(|m| m.image.clone()).filter(|s| !s.is_empty()),
        id: pod.image_id.clone(),
        layers: dirs.lowers.len(),
    };
    let mut summary = diff.summary;
    if !has_sys_admin() {
        summary.limits.push(
            "no CAP_SYS_ADMIN: overlayfs's trusted.* attributes read as absent, so a directory the container \
             replaced (opaque) shows only its new entries, not the image entries it hides"
                .into(),
        );
    }
    Ok(Report { container_id: id.to_string(), pod, image, changes: diff.changes, summary })
}

/// The root overlay and the other mount points of a container's mountinfo.
fn layout(id: &str, mountinfo: &str) -> Result<(OverlayDirs, Vec<PathBuf>), DiffError> {
    let dirs = overlay::root_overlay_from_mountinfo(mountinfo)
        .filter(|d| !d.upper.as_os_str().is_empty())
        .ok_or_else(|| DiffError::NoOverlayRoot { id: id.to_string() })?;
    Ok((dirs, overlay::volumes_from_mountinfo(mountinfo)))
}

/// A host path as this process can open it: directly in the host's mount
/// namespace, else through the host's root (an agent pod with hostPID).
fn host_path(p: &Path) -> PathBuf {
    if p.exists() {
        return p.to_path_buf();
    }
    let via = Path::new("/proc/1/root").join(p.strip_prefix("/").unwrap_or(p));
    if via.exists() { via } else { p.to_path_buf() }
}

/// Diffs an upper directory against its lower layers (top-most first).
/// `mounts` are the container's mount points (longest first, as
/// [`overlay::volumes_from_mountinfo`] gives them).
pub fn diff_dirs(dirs: &OverlayDirs, mounts: &[PathBuf], opts: &DiffOptions) -> Result<Diff, LayerError> {
    let t0 = Instant::now();
    let mut diff = walk::run(dirs, mounts, opts)?;
    let s = &mut diff.summary;
    s.drift = s.total > 0;
    s.not_covered = mounts.iter().map(|m| text(m.as_os_str().as_bytes()).0).collect();
    s.not_covered.sort();
    s.upper_dir = dirs.upper.display().to_string();
    s.layers = dirs.lowers.len();
    s.hash_limit = opts.hash_limit;
    s.elapsed_ms = t0.elapsed().as_millis() as u64;
    Ok(diff)
}

/// Bytes as report text, and whether they had to be escaped.
fn text(b: &[u8]) -> (String, bool) {
    escape::lossless(b)
}

/// `path` (bytes) is `mount` or below it.
fn under(path: &[u8], mount: &Path) -> bool {
    Path::new(OsStr::from_bytes(path)).starts_with(mount)
}

#[cfg(test)]
mod tests;

/// CAP_SYS_ADMIN (21) in this process's effective set (`/proc/self/status` CapEff).
fn has_sys_admin() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).map(str::trim).unwrap_or("0");
    u64::from_str_radix(eff, 16).is_ok_and(|v| v & (1 << 21) != 0)
}
