//! The walk: the container's view of each directory (its upper directory,
//! merged with the layers it shows there) against the image's view of the
//! same path (the lower layers merged top-down).
//!
//! In the common case a container directory shows exactly the image's
//! layers below its upper directory ([`Lowers::SameAsImage`]): then only the
//! upper directory's names are looked at, everything else is the image's own.
//! An opaque or new directory shows no layers, a renamed one (redirect) the
//! layers of its old path: then both views are listed and compared in full.

use super::{
    Change, ChangeKind, Diff, DiffOptions, EntryError, FileType, LayerError, Summary,
    content::{self, Facts},
    fsat::{self, Dir, Kind, Meta},
    text, under,
};
use crate::{clock::rfc3339, enrich::overlay::OverlayDirs};
use std::{
    collections::BTreeSet,
    ffi::{OsStr, OsString},
    fs::File,
    io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    rc::Rc,
};

/// Deeper directories are not walked (counted as unreadable): bounds the
/// stack and the descriptors held open.
const MAX_DEPTH: usize = 256;
/// Entry errors listed in the summary.
const MAX_ERRORS: usize = 20;

/// An entry of one layer directory.
#[derive(Debug, Clone)]
struct Entry {
    dir: Rc<Dir>,
    name: OsString,
    meta: Meta,
}

impl Entry {
    fn open(&self) -> io::Result<File> {
        self.dir.open_file(&self.name)
    }
}

/// What a merged view of layers has at a name: its top-most entry, and for
/// a directory, the directories merged there (top-most first).
#[derive(Debug, Clone)]
struct Found {
    entry: Entry,
    view: Vec<Rc<Dir>>,
}

/// The layers a container directory shows below its upper directory.
enum Lowers {
    /// The image's own at this path (the walk's image view).
    SameAsImage,
    /// Others: none for an opaque or new directory, the old path's for a
    /// renamed one.
    View(Vec<Rc<Dir>>),
}

/// A directory as the container sees it.
struct CDir {
    upper: Option<Rc<Dir>>,
    lowers: Lowers,
}

/// What the container has at a name.
enum Side {
    Gone,
    Upper(Entry),
    Lower(Found),
}

impl Side {
    fn entry(&self) -> Option<&Entry> {
        match self {
            Side::Gone => None,
            Side::Upper(e) => Some(e),
            Side::Lower(f) => Some(&f.entry),
        }
    }
}

fn is_enoent(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOENT)
}

/// `name` in `dir` is a whiteout: a 0:0 character device, or a zero-size
/// file with the whiteout xattr in a directory marked as holding those.
fn is_whiteout(dir: &Dir, name: &OsStr, m: &Meta) -> io::Result<bool> {
    if m.is_char_whiteout() {
        return Ok(true);
    }
    if m.kind == Kind::File && m.size == 0 && dir.overlay.xattr_whiteouts {
        return Ok(fsat::overlay_of_file(&dir.open_file(name)?)?.whiteout);
    }
    Ok(false)
}

/// What the merged `view` has at `name`: a whiteout or an opaque directory
/// in a higher layer hides what is below it.
fn lookup(view: &[Rc<Dir>], name: &OsStr) -> io::Result<Option<Found>> {
    let mut found: Option<Entry> = None;
    let mut dirs = Vec::new();
    for d in view {
        let m = match d.stat(name) {
            Ok(m) => m,
            Err(e) if is_enoent(&e) => continue,
            Err(e) => return Err(e),
        };
        if is_whiteout(d, name, &m)? {
            break;
        }
        if m.kind != Kind::Dir {
            // A file shows only at the top; below a directory it is hidden.
            if found.is_none() {
                return Ok(Some(Found {
                    entry: Entry { dir: d.clone(), name: name.into(), meta: m },
                    view: Vec::new(),
                }));
            }
            break;
        }
        let sub = Rc::new(d.open_dir(name)?);
        let opaque = sub.overlay.opaque;
        found.get_or_insert_with(|| Entry { dir: d.clone(), name: name.into(), meta: m });
        dirs.push(sub);
        if opaque {
            break;
        }
    }
    Ok(found.map(|entry| Found { entry, view: dirs }))
}

/// The directories of a found directory (none for a file or nothing).
fn dir_view(f: Option<Found>) -> Vec<Rc<Dir>> {
    f.filter(|f| f.entry.meta.kind == Kind::Dir).map(|f| f.view).unwrap_or_default()
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::File,
        Kind::Dir => FileType::Dir,
        Kind::Symlink => FileType::Symlink,
        Kind::Other => FileType::Other,
    }
}

fn mode_text(m: &Meta) -> String {
    format!("{:04o}", m.perm())
}

/// What is shown of one side of a change.
#[derive(Default)]
struct Shown {
    facts: Option<Facts>,
    link: Option<Vec<u8>>,
}

struct Walk<'a> {
    opts: &'a DiffOptions,
    /// The lower layers' roots, for absolute redirects.
    roots: Vec<Rc<Dir>>,
    mounts: &'a [PathBuf],
    buf: Vec<u8>,
    changes: Vec<Change>,
    summary: Summary,
}

/// Diffs `dirs`; the summary's counts filled, its context left to the caller.
pub(super) fn run(dirs: &OverlayDirs, mounts: &[PathBuf], opts: &DiffOptions) -> Result<Diff, LayerError> {
    let upper_err = |source| LayerError::Upper { path: dirs.upper.clone(), source };
    let upper = Dir::open(&dirs.upper).map_err(upper_err)?;
    upper.names().map_err(upper_err)?;
    let mut roots = Vec::new();
    for l in &dirs.lowers {
        let d = Dir::open(l).map_err(|source| LayerError::Lower { path: l.clone(), source })?;
        let opaque = d.overlay.opaque;
        roots.push(Rc::new(d));
        if opaque {
            break;
        }
    }
    let mut w =
        Walk { opts, roots: roots.clone(), mounts, buf: Vec::new(), changes: Vec::new(), summary: Summary::default() };
    let root = CDir { upper: Some(Rc::new(upper)), lowers: Lowers::SameAsImage };
    w.dir(&mut Vec::new(), &root, &roots, 0);
    Ok(Diff { changes: w.changes, summary: w.summary })
}

impl Walk<'_> {
    fn storing(&self) -> bool {
        self.changes.len() < self.opts.max_changes
    }

    fn unreadable(&mut self, path: &[u8], e: impl std::fmt::Display) {
        self.summary.unreadable += 1;
        if self.summary.errors.len() < MAX_ERRORS {
            let p = if path.is_empty() { "/".to_string() } else { text(path).0 };
            self.summary.errors.push(EntryError { path: p, error: e.to_string() });
        }
    }

    /// Compares the directory at `path` (container view `c`, image view `image`).
    fn dir(&mut self, path: &mut Vec<u8>, c: &CDir, image: &[Rc<Dir>], depth: usize) {
        if depth > MAX_DEPTH {
            self.unreadable(path, format_args!("not walked: deeper than {MAX_DEPTH} directories"));
            return;
        }
        let mut names = BTreeSet::new();
        let mut list = |d: &Dir, w: &mut Self| match d.names() {
            Ok(n) => names.extend(n),
            Err(e) => w.unreadable(path, e),
        };
        if let Some(u) = &c.upper {
            list(u, self);
        }
        if let Lowers::View(v) = &c.lowers {
            for d in v.iter().chain(image) {
                list(d, self);
            }
        }
        for name in names {
            let len = path.len();
            path.push(b'/');
            path.extend_from_slice(name.as_bytes());
            if let Err(e) = self.entry(path, c, image, &name, depth) {
                self.unreadable(path, e);
            }
            path.truncate(len);
        }
    }

    fn entry(&mut self, path: &mut Vec<u8>, c: &CDir, image: &[Rc<Dir>], name: &OsStr, depth: usize) -> io::Result<()> {
        let upper = match &c.upper {
            Some(u) => match u.stat(name) {
                Ok(m) if is_whiteout(u, name, &m)? => Some(Side::Gone),
                Ok(m) => Some(Side::Upper(Entry { dir: u.clone(), name: name.into(), meta: m })),
                Err(e) if is_enoent(&e) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        let side = match (upper, &c.lowers) {
            (Some(s), _) => s,
            // Not in the upper directory: the image's own entry shows.
            (None, Lowers::SameAsImage) => return Ok(()),
            (None, Lowers::View(v)) => lookup(v, name)?.map_or(Side::Gone, Side::Lower),
        };
        let img = lookup(image, name)?;
        let Some(e) = side.entry() else {
            return match img {
                Some(i) => self.deleted(path, &i, depth),
                None => Ok(()),
            };
        };
        let Some(i) = img else {
            return self.added(path, c, image, &side, depth);
        };
        let (cd, id) = (e.meta.kind == Kind::Dir, i.entry.meta.kind == Kind::Dir);
        if cd && id {
            let (a, b) = (&e.meta, &i.entry.meta);
            // Not the mtime: a directory is copied up when a child changes.
            if a.perm() != b.perm() || a.uid != b.uid || a.gid != b.gid {
                self.emit(path, ChangeKind::MetadataOnly, a, Shown::default(), Some((&i.entry, Shown::default())));
            }
            let child = self.child(c, image, &side)?;
            self.dir(path, &child, &i.view, depth + 1);
            return Ok(());
        }
        if cd || id {
            // Another type now: modified, and what only one side has below.
            let shown = self.show_container(&side, c, None, self.storing())?;
            let img_shown = self.show_image(&i.entry, self.storing())?;
            self.emit(path, ChangeKind::Modified, &e.meta, shown, Some((&i.entry, img_shown)));
            if cd {
                let child = self.child(c, image, &side)?;
                self.dir(path, &child, &[], depth + 1);
            } else {
                self.dir(path, &CDir { upper: None, lowers: Lowers::View(Vec::new()) }, &i.view, depth + 1);
            }
            return Ok(());
        }
        self.non_dirs(path, c, &side, &i.entry)
    }

    /// The container directory below `side` (a directory).
    fn child(&mut self, parent: &CDir, parent_image: &[Rc<Dir>], side: &Side) -> io::Result<CDir> {
        match side {
            Side::Upper(e) => {
                let d = Rc::new(e.dir.open_dir(&e.name)?);
                let lowers = if d.overlay.opaque {
                    Lowers::View(Vec::new())
                } else if let Some(r) = d.overlay.redirect.clone() {
                    Lowers::View(dir_view(self.redirect(&r, parent, parent_image)?))
                } else {
                    match &parent.lowers {
                        Lowers::SameAsImage => Lowers::SameAsImage,
                        Lowers::View(v) => Lowers::View(dir_view(lookup(v, &e.name)?)),
                    }
                };
                Ok(CDir { upper: Some(d), lowers })
            }
            Side::Lower(f) => Ok(CDir { upper: None, lowers: Lowers::View(f.view.clone()) }),
            Side::Gone => Ok(CDir { upper: None, lowers: Lowers::View(Vec::new()) }),
        }
    }

    /// What an `overlay.redirect` names: a path from the layers' roots when
    /// absolute, else a name in the parent directory's layers.
    fn redirect(&mut self, r: &[u8], parent: &CDir, parent_image: &[Rc<Dir>]) -> io::Result<Option<Found>> {
        if r.first() != Some(&b'/') {
            let base = match &parent.lowers {
                Lowers::SameAsImage => parent_image,
                Lowers::View(v) => v,
            };
            return lookup(base, OsStr::from_bytes(r));
        }
        let mut view = self.roots.clone();
        let mut found = None;
        for comp in r.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
            if view.is_empty() {
                return Ok(None);
            }
            found = lookup(&view, OsStr::from_bytes(comp))?;
            view = found.as_ref().map(|f| f.view.clone()).unwrap_or_default();
        }
        Ok(found)
    }

    /// The bytes a container-side regular file shows, and whether they are
    /// the image entry's own: a metacopy upper file holds none of its data.
    fn data(&mut self, side: &Side, parent: &CDir, image: Option<&Entry>) -> io::Result<(File, bool)> {
        let e = match side {
            Side::Upper(e) => e,
            Side::Lower(f) => return Ok((f.entry.open()?, false)),
            Side::Gone => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
        };
        let f = e.open()?;
        let o = fsat::overlay_of_file(&f)?;
        if !o.metacopy {
            return Ok((f, false));
        }
        let missing = || io::Error::new(io::ErrorKind::NotFound, "metacopy file whose data layer is missing");
        let below = match (&o.redirect, &parent.lowers) {
            (Some(r), _) => self.redirect(r, parent, &[])?.map(|f| f.entry),
            (None, Lowers::SameAsImage) => {
                let i = image.filter(|i| i.meta.kind == Kind::File).ok_or_else(missing)?;
                return Ok((i.open()?, true));
            }
            (None, Lowers::View(v)) => lookup(v, &e.name)?.map(|f| f.entry),
        };
        let below = below.filter(|b| b.meta.kind == Kind::File).ok_or_else(missing)?;
        Ok((below.open()?, false))
    }

    fn facts(&mut self, f: &mut File, size: u64, hash: bool) -> io::Result<Facts> {
        let limit = (hash && size <= self.opts.hash_limit).then_some(self.opts.hash_limit);
        content::facts(f, limit, &mut self.buf)
    }

    /// What is reported of the container's side (reading it when `read`).
    fn show_container(&mut self, side: &Side, parent: &CDir, image: Option<&Entry>, read: bool) -> io::Result<Shown> {
        let Some(e) = side.entry() else { return Ok(Shown::default()) };
        match e.meta.kind {
            Kind::File if read => {
                let (mut f, _) = self.data(side, parent, image)?;
                Ok(Shown { facts: Some(self.facts(&mut f, e.meta.size, true)?), link: None })
            }
            Kind::Symlink => Ok(Shown { facts: None, link: Some(e.dir.readlink(&e.name)?) }),
            _ => Ok(Shown::default()),
        }
    }

    /// What is reported of the image's side; `hash`: its digest too.
    fn show_image(&mut self, e: &Entry, hash: bool) -> io::Result<Shown> {
        match e.meta.kind {
            Kind::File if self.storing() => {
                Ok(Shown { facts: Some(self.facts(&mut e.open()?, e.meta.size, hash)?), link: None })
            }
            Kind::Symlink => Ok(Shown { facts: None, link: Some(e.dir.readlink(&e.name)?) }),
            _ => Ok(Shown::default()),
        }
    }

    fn added(&mut self, path: &mut Vec<u8>, c: &CDir, image: &[Rc<Dir>], side: &Side, depth: usize) -> io::Result<()> {
        let Some(e) = side.entry() else { return Ok(()) };
        let meta = e.meta;
        let shown = self.show_container(side, c, None, self.storing())?;
        self.emit(path, ChangeKind::Added, &meta, shown, None);
        if meta.kind == Kind::Dir {
            let child = self.child(c, image, side)?;
            self.dir(path, &child, &[], depth + 1);
        }
        Ok(())
    }

    fn deleted(&mut self, path: &mut Vec<u8>, i: &Found, depth: usize) -> io::Result<()> {
        let shown = self.show_image(&i.entry, false)?;
        self.emit(path, ChangeKind::Deleted, &i.entry.meta, shown, None);
        if i.entry.meta.kind == Kind::Dir {
            self.dir(path, &CDir { upper: None, lowers: Lowers::View(Vec::new()) }, &i.view, depth + 1);
        }
        Ok(())
    }

    /// Two non-directories: what differs between the container's and the image's.
    fn non_dirs(&mut self, path: &[u8], c: &CDir, side: &Side, i: &Entry) -> io::Result<()> {
        let Some(e) = side.entry() else { return Ok(()) };
        let (a, b) = (e.meta, i.meta);
        let meta_differs = |owner_only: bool| {
            a.uid != b.uid
                || a.gid != b.gid
                || a.mtime != b.mtime
                || a.mtime_nsec != b.mtime_nsec
                || (!owner_only && a.perm() != b.perm())
        };
        let same_type = a.kind == b.kind
            && (a.kind != Kind::Other || (a.mode & libc::S_IFMT == b.mode & libc::S_IFMT && a.rdev == b.rdev));
        let read = self.storing();
        if !same_type {
            let shown = self.show_container(side, c, Some(i), read)?;
            let img = self.show_image(i, true)?;
            self.emit(path, ChangeKind::Modified, &a, shown, Some((i, img)));
            return Ok(());
        }
        match a.kind {
            Kind::Symlink => {
                let (ct, it) = (e.dir.readlink(&e.name)?, i.dir.readlink(&i.name)?);
                let kind = if ct != it {
                    ChangeKind::Modified
                } else if meta_differs(true) {
                    ChangeKind::MetadataOnly
                } else {
                    return Ok(());
                };
                let img = Shown { facts: None, link: Some(it) };
                self.emit(path, kind, &a, Shown { facts: None, link: Some(ct) }, Some((i, img)));
            }
            Kind::File => {
                let (mut f, image_data) = self.data(side, c, Some(i))?;
                let size = f.metadata()?.len();
                let mut img_facts = None;
                let (same, facts) = if image_data {
                    (true, None)
                } else if size != b.size {
                    (false, None)
                } else if size <= self.opts.hash_limit {
                    let mine = self.facts(&mut f, size, true)?;
                    let theirs = self.facts(&mut i.open()?, size, true)?;
                    img_facts = Some(theirs);
                    (mine.sha256.is_some() && mine.sha256 == theirs.sha256, Some(mine))
                } else {
                    let mut other = i.open()?;
                    (content::same_bytes(&mut f, &mut other, &mut self.buf)?, None)
                };
                let kind = if !same {
                    ChangeKind::Modified
                } else if meta_differs(false) {
                    ChangeKind::MetadataOnly
                } else {
                    return Ok(());
                };
                let facts = match facts {
                    Some(f) => Some(f),
                    None if read => {
                        let (mut f, _) = self.data(side, c, Some(i))?;
                        Some(self.facts(&mut f, size, true)?)
                    }
                    None => None,
                };
                let img_facts = match img_facts {
                    Some(f) => Some(f),
                    None if read && kind == ChangeKind::Modified => Some(self.facts(&mut i.open()?, b.size, true)?),
                    None => None,
                };
                self.emit(
                    path,
                    kind,
                    &a,
                    Shown { facts, link: None },
                    Some((i, Shown { facts: img_facts, link: None })),
                );
            }
            _ => {
                if meta_differs(false) {
                    self.emit(path, ChangeKind::MetadataOnly, &a, Shown::default(), Some((i, Shown::default())));
                }
            }
        }
        Ok(())
    }

    /// Counts a change and keeps it (within `max_changes`); `meta`/`shown`
    /// are the side reported (the image's for a deletion).
    fn emit(&mut self, path: &[u8], kind: ChangeKind, meta: &Meta, shown: Shown, image: Option<(&Entry, Shown)>) {
        let p = Path::new(OsStr::from_bytes(path));
        if kind == ChangeKind::Added && self.runtime_mount_point(p, meta) {
            self.summary.mount_points_created += 1;
            return;
        }
        let executable =
            meta.kind == Kind::File && (meta.perm() & 0o111 != 0 || shown.facts.is_some_and(|f| f.exec_magic));
        let s = &mut self.summary;
        s.total += 1;
        match kind {
            ChangeKind::Added => s.added += 1,
            ChangeKind::Modified => s.modified += 1,
            ChangeKind::MetadataOnly => s.metadata_only += 1,
            ChangeKind::Deleted => s.deleted += 1,
        }
        s.executables += u64::from(executable);
        let shadowed_by = self.mounts.iter().find(|m| under(path, m)).map(|m| text(m.as_os_str().as_bytes()).0);
        s.shadowed += u64::from(shadowed_by.is_some());
        if !self.storing() {
            self.summary.truncated = true;
            return;
        }
        let (path_text, path_escaped) = text(path);
        let (link_target, link_target_escaped) = match &shown.link {
            Some(l) => {
                let (t, esc) = text(l);
                (Some(t), esc)
            }
            None => (None, false),
        };
        let mut c = Change {
            path: path_text,
            path_escaped,
            change: kind,
            file_type: file_type(meta.kind),
            mode: mode_text(meta),
            uid: meta.uid,
            gid: meta.gid,
            size: meta.size,
            mtime: rfc3339(
                time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(meta.mtime) * 1_000_000_000 + i128::from(meta.mtime_nsec),
                )
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            )
            .to_string(),
            executable,
            sha256: shown.facts.and_then(|f| f.sha256).map(|d| content::hex(&d)),
            link_target,
            link_target_escaped,
            image_sha256: None,
            image_type: None,
            image_mode: None,
            image_link_target: None,
            shadowed_by,
        };
        if let Some((i, img)) = image {
            if kind == ChangeKind::Modified {
                c.image_sha256 = img.facts.and_then(|f| f.sha256).map(|d| content::hex(&d));
            }
            if i.meta.kind != meta.kind {
                c.image_type = Some(file_type(i.meta.kind));
            }
            if i.meta.perm() != meta.perm() {
                c.image_mode = Some(mode_text(&i.meta));
            }
            if meta.kind == Kind::Symlink && i.meta.kind == Kind::Symlink && img.link != shown.link {
                c.image_link_target = img.link.map(|l| text(&l).0);
            }
        }
        self.changes.push(c);
    }

    /// An empty file or directory the runtime made to mount something on
    /// (at a mount point, or on the way to one): not the container's doing.
    fn runtime_mount_point(&self, p: &Path, meta: &Meta) -> bool {
        let empty = meta.kind == Kind::Dir || (meta.kind == Kind::File && meta.size == 0);
        empty && self.mounts.iter().any(|m| m == p || (meta.kind == Kind::Dir && m.starts_with(p)))
    }
}
