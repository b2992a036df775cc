//! Map a cgroup path to the container that owns it.
//!
//! The kernel probe only knows a task's cgroup, so this is how exec/open events
//! get attributed to a container. Everything here is pure string handling on
//! borrowed input, without allocating (the id and pod uid are held inline: `crate::id`).
//!
//! Rules (cgroup v1 and v2 paths look the same, so both are handled alike):
//! - Components are examined from the leaf upwards and the innermost one that
//!   carries a container id wins. Non-id leaves below a container scope
//!   (`init.scope`, CRI-O's `container`, cgroup-namespace `..`) are skipped, and
//!   nested layouts (kind/k3s nodes running inside `/docker/<id>`) resolve to
//!   the innermost container rather than the node.
//! - Ids are accepted only as exactly 64 lowercase hex characters. Runtimes
//!   always emit lowercase, so uppercase is rejected rather than lowercased: it
//!   means the component is something else, and rejecting avoids false hits.
//! - conmon scopes (`crio-conmon-<id>`, `libpod-conmon-<id>`) are the runtime's
//!   monitor process, not the container: they yield `None` instead of being
//!   attributed to an enclosing container.

use crate::id::Id;

/// Which runtime/driver layout the id was recognised in (used as a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupLayout {
    /// `/<namespace>/<id>` as created by containerd (ctr, nerdctl) with cgroupfs.
    ContainerdCgroupfs,
    /// `.../cri-containerd-<id>.scope` (kubelet systemd driver).
    ContainerdSystemd,
    /// `.../pod<uid>/crio-<id>` (kubelet cgroupfs driver with CRI-O).
    CrioCgroupfs,
    /// `.../crio-<id>.scope` (kubelet systemd driver with CRI-O).
    CrioSystemd,
    /// `/docker/<id>`.
    DockerCgroupfs,
    /// `.../docker-<id>.scope`.
    DockerSystemd,
    /// `.../libpod-<id>.scope`.
    PodmanSystemd,
    /// `/kubepods/.../pod<uid>/<id>` (kubelet cgroupfs driver, containerd or CRI-O).
    KubepodsCgroupfs,
}

impl CgroupLayout {
    /// Stable `snake_case` name, suitable as a metric label value.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            CgroupLayout::ContainerdCgroupfs => "containerd_cgroupfs",
            CgroupLayout::ContainerdSystemd => "containerd_systemd",
            CgroupLayout::CrioCgroupfs => "crio_cgroupfs",
            CgroupLayout::CrioSystemd => "crio_systemd",
            CgroupLayout::DockerCgroupfs => "docker_cgroupfs",
            CgroupLayout::DockerSystemd => "docker_systemd",
            CgroupLayout::PodmanSystemd => "podman_systemd",
            CgroupLayout::KubepodsCgroupfs => "kubepods_cgroupfs",
        }
    }
}

/// A container recognised from a cgroup path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// Full container id: 64 lowercase hex characters.
    pub id: Id,
    /// Layout the id was found in.
    pub layout: CgroupLayout,
    /// Kubernetes pod uid from the parent `pod<uid>` / `kubepods-...-pod<uid>.slice`
    /// component, normalised to dashes (systemd slices use underscores).
    pub pod_uid: Option<Id>,
}

impl ContainerRef {
    /// The id as `docker ps` and `crictl ps` show it: its first 12 characters.
    pub fn short_id(&self) -> &str {
        short_id(&self.id)
    }
}

/// A container id's first 12 characters (all of a shorter string).
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Length of a full container id in hex characters.
const ID_LEN: usize = 64;

/// Prefixes of systemd scope names (`<prefix><id>.scope`) that hold a container.
const SCOPE_PREFIXES: [(&str, CgroupLayout); 4] = [
    ("cri-containerd-", CgroupLayout::ContainerdSystemd),
    ("crio-", CgroupLayout::CrioSystemd),
    ("docker-", CgroupLayout::DockerSystemd),
    ("libpod-", CgroupLayout::PodmanSystemd),
];

/// Prefixes of conmon cgroups; checked before `SCOPE_PREFIXES` because
/// `crio-conmon-` also starts with `crio-`.
const CONMON_PREFIXES: [&str; 2] = ["crio-conmon-", "libpod-conmon-"];

/// What a single path component turned out to be.
enum Component<'a> {
    /// Carries no container id; keep walking up.
    Other,
    /// A conmon cgroup: explicitly not a container.
    Conmon,
    /// A bare 64-hex id; its layout depends on the parent component.
    BareId(&'a str),
    /// An id whose wrapper already tells the layout.
    Id(&'a str, CgroupLayout),
}

/// `path` is a cgroup path or only its last few components ("a/b/c", leading '/'
/// optional), as the kernel probe sends the last 4 components.
///
/// A bare id with no recognisable parent (e.g. just `"<id>"`) is reported as
/// [`CgroupLayout::ContainerdCgroupfs`], the most common layout for that shape.
#[must_use]
pub fn container_from_cgroup_path(path: &str) -> Option<ContainerRef> {
    // Walk from the leaf upwards without collecting, so deep paths cost no allocation.
    let mut comps = crate::event::components_rev(path);
    while let Some(comp) = comps.next() {
        let (id, layout) = match classify(comp) {
            Component::Other => continue,
            Component::Conmon => return None,
            Component::BareId(id) => (id, None),
            Component::Id(id, layout) => (id, Some(layout)),
        };
        // Both kubelet drivers put the container directly under its pod cgroup.
        let parent = comps.next();
        let pod_uid = parent.and_then(pod_uid_from_component);
        let layout = layout.unwrap_or(if parent == Some("docker") {
            CgroupLayout::DockerCgroupfs
        } else if pod_uid.is_some() {
            CgroupLayout::KubepodsCgroupfs
        } else {
            CgroupLayout::ContainerdCgroupfs
        });
        return Some(ContainerRef { id: Id::new(id)?, layout, pod_uid });
    }
    None
}

/// Parses the whole text of `/proc/<pid>/cgroup` (v1, v2 `0::/...` and hybrid) and
/// returns the first container found, preferring the v2 line, then memory, then
/// any controller.
#[must_use]
pub fn container_from_proc_cgroup(text: &str) -> Option<ContainerRef> {
    // Lower rank is better: 0 = v2 unified, 1 = v1 memory, 2 = any other v1 line.
    let mut best: Option<(u8, ContainerRef)> = None;
    for line in text.lines() {
        // Format is `hierarchy-id:controller-list:path`; the path itself may contain ':'.
        let mut fields = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let rank = if hierarchy == "0" && controllers.is_empty() {
            0
        } else if controllers.split(',').any(|c| c == "memory") {
            1
        } else {
            2
        };
        // Keep the first hit per rank; skip parsing lines that cannot win.
        if best.as_ref().is_some_and(|(r, _)| *r <= rank) {
            continue;
        }
        let path = path.trim_end();
        // The kernel appends " (deleted)" on v2 when the cgroup is already gone;
        // the path still names the container the task belonged to.
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        if let Some(found) = container_from_cgroup_path(path) {
            if rank == 0 {
                return Some(found);
            }
            best = Some((rank, found));
        }
    }
    best.map(|(_, found)| found)
}

fn classify(comp: &str) -> Component<'_> {
    if is_container_id(comp) {
        return Component::BareId(comp);
    }
    if let Some(inner) = comp.strip_suffix(".scope") {
        if CONMON_PREFIXES.iter().any(|p| inner.strip_prefix(p).is_some_and(is_container_id)) {
            return Component::Conmon;
        }
        for (prefix, layout) in SCOPE_PREFIXES {
            if let Some(id) = inner.strip_prefix(prefix).filter(|id| is_container_id(id)) {
                return Component::Id(id, layout);
            }
        }
        return Component::Other;
    }
    // CRI-O with the cgroupfs driver uses the same names without `.scope`.
    if comp.strip_prefix("crio-conmon-").is_some_and(is_container_id) {
        return Component::Conmon;
    }
    match comp.strip_prefix("crio-").filter(|id| is_container_id(id)) {
        Some(id) => Component::Id(id, CgroupLayout::CrioCgroupfs),
        None => Component::Other,
    }
}

/// Exactly 64 lowercase hex characters. Shorter hex (e.g. 32-char host
/// `/process_api/<hash>` cgroups) is deliberately not an id.
fn is_container_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Pod uid from `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid>.slice` (systemd).
fn pod_uid_from_component(comp: &str) -> Option<Id> {
    let raw = match comp.strip_suffix(".slice") {
        Some(slice) => {
            if !slice.starts_with("kubepods") {
                return None;
            }
            // systemd uses '-' as the hierarchy separator, hence the underscores in the uid.
            let (_, last) = slice.rsplit_once('-')?;
            last.strip_prefix("pod")?
        }
        None => comp.strip_prefix("pod")?,
    };
    if is_pod_uid(raw) { Id::replaced(raw, b'_', b'-') } else { None }
}

/// A UUID (36 chars, dashes or underscores) or a 32-hex static-pod config hash.
/// Checked strictly so that a namespace such as `podman` is not taken for a pod.
fn is_pod_uid(s: &str) -> bool {
    if !(32..=36).contains(&s.len()) {
        return false;
    }
    let mut hex = 0;
    for b in s.bytes() {
        match b {
            b'0'..=b'9' | b'a'..=b'f' => hex += 1,
            b'-' | b'_' => {}
            _ => return false,
        }
    }
    hex == 32
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f6e2c3d1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d";
    const ID2: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const UID: &str = "1234abcd-5678-90ef-1234-567890abcdef";
    const UID_US: &str = "1234abcd_5678_90ef_1234_567890abcdef";

    fn parse(path: &str) -> Option<ContainerRef> {
        container_from_cgroup_path(path)
    }

    fn expect(path: &str, id: &str, layout: CgroupLayout, pod_uid: Option<&str>) {
        let got = parse(path).unwrap_or_else(|| panic!("no container in {path:?}"));
        assert_eq!(got.id, id, "id for {path:?}");
        assert_eq!(got.layout, layout, "layout for {path:?}");
        assert_eq!(got.pod_uid.as_deref(), pod_uid, "pod uid for {path:?}");
    }

    fn none(path: &str) {
        assert_eq!(parse(path), None, "expected no container in {path:?}");
    }

    // --- containerd via ctr / cgroupfs -------------------------------------

    #[test]
    fn containerd_k8s_io_namespace() {
        expect(&format!("/k8s.io/{ID}"), ID, CgroupLayout::ContainerdCgroupfs, None);
    }

    #[test]
    fn containerd_default_namespace() {
        expect(&format!("/default/{ID}"), ID, CgroupLayout::ContainerdCgroupfs, None);
    }

    #[test]
    fn containerd_any_namespace_without_leading_slash() {
        expect(&format!("my-ns/{ID}"), ID, CgroupLayout::ContainerdCgroupfs, None);
        expect(&format!("/moby/{ID}/"), ID, CgroupLayout::ContainerdCgroupfs, None);
    }

    #[test]
    fn namespace_starting_with_pod_is_not_a_pod_uid() {
        expect(&format!("/podman/{ID}"), ID, CgroupLayout::ContainerdCgroupfs, None);
        expect(&format!("/pod1234/{ID}"), ID, CgroupLayout::ContainerdCgroupfs, None);
    }

    // --- kubelet cgroupfs driver --------------------------------------------

    #[test]
    fn kubepods_burstable_cgroupfs() {
        expect(&format!("/kubepods/burstable/pod{UID}/{ID}"), ID, CgroupLayout::KubepodsCgroupfs, Some(UID));
    }

    #[test]
    fn kubepods_besteffort_cgroupfs() {
        expect(&format!("/kubepods/besteffort/pod{UID}/{ID}"), ID, CgroupLayout::KubepodsCgroupfs, Some(UID));
    }

    #[test]
    fn kubepods_guaranteed_cgroupfs() {
        expect(&format!("/kubepods/pod{UID}/{ID}"), ID, CgroupLayout::KubepodsCgroupfs, Some(UID));
    }

    #[test]
    fn kubepods_static_pod_hash_uid() {
        let hash_uid = "5ec4d3b4e2a0d5b2c7b0f0e1d4d0b0c1";
        expect(&format!("/kubepods/burstable/pod{hash_uid}/{ID}"), ID, CgroupLayout::KubepodsCgroupfs, Some(hash_uid));
    }

    #[test]
    fn crio_cgroupfs() {
        expect(&format!("/kubepods/burstable/pod{UID}/crio-{ID}"), ID, CgroupLayout::CrioCgroupfs, Some(UID));
        expect(&format!("/kubepods/pod{UID}/crio-{ID}"), ID, CgroupLayout::CrioCgroupfs, Some(UID));
    }

    #[test]
    fn pod_cgroup_without_container_is_none() {
        none(&format!("/kubepods/burstable/pod{UID}"));
        none("/kubepods/burstable");
        none("/kubepods");
    }

    // --- systemd driver ------------------------------------------------------

    #[test]
    fn containerd_systemd_burstable() {
        expect(
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{ID}.scope"
            ),
            ID,
            CgroupLayout::ContainerdSystemd,
            Some(UID),
        );
    }

    #[test]
    fn containerd_systemd_besteffort_and_guaranteed() {
        expect(
            &format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/cri-containerd-{ID}.scope"
            ),
            ID,
            CgroupLayout::ContainerdSystemd,
            Some(UID),
        );
        expect(
            &format!("/kubepods.slice/kubepods-pod{UID_US}.slice/cri-containerd-{ID}.scope"),
            ID,
            CgroupLayout::ContainerdSystemd,
            Some(UID),
        );
    }

    #[test]
    fn crio_systemd() {
        expect(
            &format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/crio-{ID}.scope"),
            ID,
            CgroupLayout::CrioSystemd,
            Some(UID),
        );
    }

    #[test]
    fn crio_systemd_nested_container_subcgroup() {
        expect(
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/crio-{ID}.scope/container"
            ),
            ID,
            CgroupLayout::CrioSystemd,
            Some(UID),
        );
        // Truncated to the last components, as the probe sends it.
        expect(&format!("crio-{ID}.scope/container"), ID, CgroupLayout::CrioSystemd, None);
    }

    #[test]
    fn docker_systemd() {
        expect(&format!("/system.slice/docker-{ID}.scope"), ID, CgroupLayout::DockerSystemd, None);
    }

    #[test]
    fn docker_systemd_under_kubepods_has_pod_uid() {
        // cri-dockerd with the systemd driver.
        expect(
            &format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_US}.slice/docker-{ID}.scope"
            ),
            ID,
            CgroupLayout::DockerSystemd,
            Some(UID),
        );
    }

    #[test]
    fn podman_systemd() {
        expect(&format!("/machine.slice/libpod-{ID}.scope"), ID, CgroupLayout::PodmanSystemd, None);
        expect(&format!("/machine.slice/libpod-{ID}.scope/container"), ID, CgroupLayout::PodmanSystemd, None);
    }

    #[test]
    fn rootless_podman_under_user_slice_is_a_container() {
        // The user slice itself is host, but a libpod scope inside it is a real container.
        expect(
            &format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
            ID,
            CgroupLayout::PodmanSystemd,
            None,
        );
    }

    #[test]
    fn non_id_leaf_under_container_scope_walks_up() {
        expect(&format!("/system.slice/docker-{ID}.scope/init.scope"), ID, CgroupLayout::DockerSystemd, None);
        expect(
            &format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{ID}.scope/init.scope"
            ),
            ID,
            CgroupLayout::ContainerdSystemd,
            Some(UID),
        );
        expect(
            &format!("/kubepods/burstable/pod{UID}/{ID}/some/deeper/leaf"),
            ID,
            CgroupLayout::KubepodsCgroupfs,
            Some(UID),
        );
    }

    #[test]
    fn conmon_is_not_a_container() {
        none(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/crio-conmon-{ID}.scope"
        ));
        none(&format!("crio-conmon-{ID}.scope"));
        none(&format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}"));
        none(&format!("/machine.slice/libpod-conmon-{ID}.scope"));
        // Even inside a kind node, conmon is not attributed to the node container.
        none(&format!("/docker/{ID2}/kubepods.slice/kubepods-pod{UID_US}.slice/crio-conmon-{ID}.scope"));
    }

    // --- docker cgroupfs and nesting ----------------------------------------

    #[test]
    fn docker_cgroupfs() {
        expect(&format!("/docker/{ID}"), ID, CgroupLayout::DockerCgroupfs, None);
    }

    #[test]
    fn kind_nested_cgroupfs_innermost_wins() {
        expect(
            &format!("/docker/{ID2}/kubepods/burstable/pod{UID}/{ID}"),
            ID,
            CgroupLayout::KubepodsCgroupfs,
            Some(UID),
        );
        expect(&format!("/docker/{ID2}/kubepods/pod{UID}/crio-{ID}"), ID, CgroupLayout::CrioCgroupfs, Some(UID));
    }

    #[test]
    fn kind_nested_systemd_innermost_wins() {
        expect(
            &format!(
                "/docker/{ID2}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{ID}.scope"
            ),
            ID,
            CgroupLayout::ContainerdSystemd,
            Some(UID),
        );
    }

    #[test]
    fn kind_node_own_processes_map_to_node_container() {
        // kubelet/containerd running inside the kind node belong to the node container.
        expect(&format!("/docker/{ID2}/system.slice/containerd.service"), ID2, CgroupLayout::DockerCgroupfs, None);
    }

    #[test]
    fn cgroup_namespace_relative_path() {
        expect(&format!("/../../kubepods/besteffort/pod{UID}/{ID}"), ID, CgroupLayout::KubepodsCgroupfs, Some(UID));
    }

    // --- truncated tails ------------------------------------------------------

    #[test]
    fn truncated_tails() {
        expect(&format!("pod{UID}/{ID}"), ID, CgroupLayout::KubepodsCgroupfs, Some(UID));
        expect(
            &format!("kubepods-burstable-pod{UID_US}.slice/cri-containerd-{ID}.scope"),
            ID,
            CgroupLayout::ContainerdSystemd,
            Some(UID),
        );
        expect(&format!("cri-containerd-{ID}.scope"), ID, CgroupLayout::ContainerdSystemd, None);
        // Last 4 components of a systemd path with an init.scope leaf.
        expect(
            &format!(
                "kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{ID}.scope/init.scope"
            ),
            ID,
            CgroupLayout::ContainerdSystemd,
            Some(UID),
        );
        // A bare id with no parent: documented to default to containerd cgroupfs.
        expect(ID, ID, CgroupLayout::ContainerdCgroupfs, None);
    }

    // --- negatives -------------------------------------------------------------

    #[test]
    fn host_cgroups_are_not_containers() {
        for path in [
            "",
            "/",
            "///",
            "init.scope",
            "/init.scope",
            "/system.slice",
            "/system.slice/containerd.service",
            "/system.slice/docker.service",
            "/system.slice/crio.service",
            "/user.slice/user-1000.slice/session-3.scope",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service",
            "/process_api/62e219b33981a77c844f96e09d2f5f8e",
            "/kubepods.slice",
            "/kubepods.slice/kubepods-burstable.slice",
            "/machine.slice",
            "/docker",
            "/k8s.io",
        ] {
            none(path);
        }
    }

    #[test]
    fn id_length_must_be_exactly_64() {
        let short = &ID[..63];
        let long = format!("{ID}a");
        for bad in [short, long.as_str()] {
            none(&format!("/k8s.io/{bad}"));
            none(&format!("/docker/{bad}"));
            none(&format!("/system.slice/docker-{bad}.scope"));
            none(&format!("/kubepods/pod{UID}/crio-{bad}"));
            none(&format!("cri-containerd-{bad}.scope"));
        }
    }

    #[test]
    fn uppercase_hex_is_rejected() {
        let upper = ID.to_ascii_uppercase();
        none(&format!("/k8s.io/{upper}"));
        none(&format!("/system.slice/docker-{upper}.scope"));
        let mut mixed = ID.to_owned();
        mixed.replace_range(0..1, "F");
        none(&format!("/docker/{mixed}"));
    }

    #[test]
    fn non_hex_characters_are_rejected() {
        let mut bad = ID.to_owned();
        bad.replace_range(10..11, "g");
        none(&format!("/k8s.io/{bad}"));
        // 64 bytes but not ASCII: must not panic on char boundaries.
        none(&format!("/k8s.io/{}", "é".repeat(32)));
        none(&format!("/system.slice/docker-{}.scope", "é".repeat(32)));
    }

    #[test]
    fn wrong_wrappers_are_rejected() {
        // Known prefixes without `.scope` (other than CRI-O) and unknown prefixes.
        none(&format!("/system.slice/docker-{ID}"));
        none(&format!("/system.slice/foo-{ID}.scope"));
        none(&format!("/system.slice/docker-{ID}.service"));
        none(&format!("/system.slice/docker{ID}.scope"));
        none(&format!("/x/{ID}.scope"));
    }

    #[test]
    fn garbage_input_does_not_panic() {
        for path in [
            "::::",
            "\0\0\0",
            "ünïcødé/ÿ/€",
            ".scope",
            "crio-.scope",
            "crio-conmon-.scope",
            "pod",
            "pod/",
            "kubepods-pod.slice",
            " ",
            "\n",
        ] {
            none(path);
        }
    }

    #[test]
    fn very_long_input() {
        let junk = "a/".repeat(512 * 1024);
        none(&junk);
        none(&"/".repeat(1 << 20));
        none(&"f".repeat(1 << 20));
        expect(&format!("{junk}kubepods/pod{UID}/{ID}"), ID, CgroupLayout::KubepodsCgroupfs, Some(UID));
    }

    #[test]
    fn layout_names_are_stable_and_unique() {
        let all = [
            (CgroupLayout::ContainerdCgroupfs, "containerd_cgroupfs"),
            (CgroupLayout::ContainerdSystemd, "containerd_systemd"),
            (CgroupLayout::CrioCgroupfs, "crio_cgroupfs"),
            (CgroupLayout::CrioSystemd, "crio_systemd"),
            (CgroupLayout::DockerCgroupfs, "docker_cgroupfs"),
            (CgroupLayout::DockerSystemd, "docker_systemd"),
            (CgroupLayout::PodmanSystemd, "podman_systemd"),
            (CgroupLayout::KubepodsCgroupfs, "kubepods_cgroupfs"),
        ];
        for (i, (layout, name)) in all.iter().enumerate() {
            assert_eq!(layout.as_str(), *name);
            for (other, _) in &all[i + 1..] {
                assert_ne!(layout.as_str(), other.as_str());
            }
        }
    }

    // --- /proc/<pid>/cgroup -----------------------------------------------------

    #[test]
    fn proc_hybrid_uses_memory_line() {
        let text = format!(
            "12:pids:/k8s.io/{ID}\n\
             4:memory:/k8s.io/{ID}\n\
             1:name=systemd:/\n\
             0::/\n"
        );
        let got = container_from_proc_cgroup(&text);
        assert_eq!(got, Some(ContainerRef { id: ID.into(), layout: CgroupLayout::ContainerdCgroupfs, pod_uid: None }));
    }

    #[test]
    fn proc_pure_v2() {
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_US}.slice/cri-containerd-{ID}.scope\n"
        );
        let got = container_from_proc_cgroup(&text).expect("container");
        assert_eq!(got.id, ID);
        assert_eq!(got.layout, CgroupLayout::ContainerdSystemd);
        assert_eq!(got.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn proc_v2_without_trailing_newline_and_crlf() {
        let got = container_from_proc_cgroup(&format!("0::/docker/{ID}"));
        assert_eq!(got.map(|c| c.id).as_deref(), Some(ID));
        let got = container_from_proc_cgroup(&format!("1:name=systemd:/\r\n0::/docker/{ID}\r\n"));
        assert_eq!(got.map(|c| c.layout), Some(CgroupLayout::DockerCgroupfs));
    }

    #[test]
    fn proc_prefers_v2_over_memory() {
        let text = format!("4:memory:/docker/{ID2}\n0::/k8s.io/{ID}\n");
        assert_eq!(container_from_proc_cgroup(&text).map(|c| c.id).as_deref(), Some(ID));
    }

    #[test]
    fn proc_prefers_memory_over_other_controllers() {
        let text = format!(
            "3:cpu,cpuacct:/docker/{ID2}\n\
             5:blkio,memory:/k8s.io/{ID}\n\
             0::/\n"
        );
        assert_eq!(container_from_proc_cgroup(&text).map(|c| c.id).as_deref(), Some(ID));
    }

    #[test]
    fn proc_falls_back_to_first_other_controller() {
        let text = format!(
            "9:memory:/\n\
             3:cpu,cpuacct:/kubepods/besteffort/pod{UID}/{ID}\n\
             2:pids:/docker/{ID2}\n\
             1:name=systemd:/\n"
        );
        let got = container_from_proc_cgroup(&text).expect("container");
        assert_eq!(got.id, ID);
        assert_eq!(got.pod_uid.as_deref(), Some(UID));
    }

    #[test]
    fn proc_name_systemd_line_counts_as_any_controller() {
        let text = format!("1:name=systemd:/system.slice/docker-{ID}.scope\n0::/\n");
        assert_eq!(container_from_proc_cgroup(&text).map(|c| c.layout), Some(CgroupLayout::DockerSystemd));
    }

    #[test]
    fn proc_deleted_cgroup_suffix() {
        let text = format!("0::/system.slice/docker-{ID}.scope (deleted)\n");
        assert_eq!(container_from_proc_cgroup(&text).map(|c| c.id).as_deref(), Some(ID));
    }

    #[test]
    fn proc_path_may_contain_colons() {
        let text = format!("0::/odd:name/k8s.io/{ID}\n");
        assert_eq!(container_from_proc_cgroup(&text).map(|c| c.id).as_deref(), Some(ID));
    }

    #[test]
    fn proc_host_and_malformed_inputs() {
        for text in [
            "",
            "\n\n",
            "0::/\n",
            "0::/init.scope\n",
            "0::/system.slice/containerd.service\n",
            "12:memory:/user.slice\n1:name=systemd:/user.slice/user-1000.slice/session-1.scope\n0::/user.slice/user-1000.slice/session-1.scope\n",
            "0::/process_api/62e219b33981a77c844f96e09d2f5f8e\n",
            "garbage\nmore garbage\n",
            "0:\n",
        ] {
            assert_eq!(container_from_proc_cgroup(text), None, "{text:?}");
        }
        // Lines without two colons are skipped, not fatal.
        let text = format!("garbage\n{ID}\n4:memory:/k8s.io/{ID}\n");
        assert_eq!(container_from_proc_cgroup(&text).map(|c| c.id).as_deref(), Some(ID));
    }

    #[test]
    fn proc_conmon_is_not_a_container() {
        let text = format!("0::/kubepods.slice/kubepods-pod{UID_US}.slice/crio-conmon-{ID}.scope\n");
        assert_eq!(container_from_proc_cgroup(&text), None);
    }
}
