//! `enrich::cgroup`: container ids (and pod uids) come out of every real
//! layout, whatever surrounds them; nothing else is ever taken for a container.

use crate::hex;
use driftwatch::enrich::cgroup::{CgroupLayout, container_from_cgroup_path, container_from_proc_cgroup};
use proptest::prelude::*;

/// A generated container cgroup path and what must be read from it.
#[derive(Debug, Clone)]
pub struct Shape {
    pub path: String,
    pub id: String,
    pub pod_uid: Option<String>,
    pub layout: CgroupLayout,
    /// Components below the one holding the id (`init.scope`, `container`, ...).
    pub depth_from_leaf: usize,
}

/// A pod uid: a UUID, or the 32-hex config hash of a static pod.
fn pod_uid() -> impl Strategy<Value = String> {
    prop_oneof![
        (hex(8), hex(4), hex(4), hex(4), hex(12)).prop_map(|(a, b, c, d, e)| format!("{a}-{b}-{c}-{d}-{e}")),
        hex(32),
    ]
}

/// A component that can hold no container id (too short to).
fn plain_name() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-z][a-z0-9._@-]{0,15}").unwrap()
}

/// What may sit above a container's own cgroups: nothing, a cgroup-namespace
/// `..`, host slices, or the node container of a kind/k3d node (nesting).
fn prefix() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        Just(vec![]),
        Just(vec!["..".to_string(), "..".to_string()]),
        proptest::collection::vec(plain_name(), 1..4),
        hex(64).prop_map(|node| vec!["docker".to_string(), node]),
        hex(64).prop_map(|node| vec!["system.slice".to_string(), format!("docker-{node}.scope")]),
    ]
}

/// What may sit below the container's cgroup: nothing, systemd's `init.scope`,
/// CRI-O's `container`, or sub-cgroups the workload made.
fn suffix() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        3 => Just(vec![]),
        1 => Just(vec!["init.scope".to_string()]),
        1 => Just(vec!["container".to_string()]),
        1 => proptest::collection::vec(plain_name(), 1..3),
    ]
}

fn qos() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(&["", "burstable", "besteffort"][..])
}

/// The container's own components (parent and leaf) in each runtime's layout.
fn layout() -> impl Strategy<Value = (Vec<String>, String, Option<String>, CgroupLayout)> {
    let kube_cgroupfs = (qos(), pod_uid(), hex(64), any::<bool>()).prop_map(|(q, uid, id, crio)| {
        let mut c = vec!["kubepods".to_string()];
        if !q.is_empty() {
            c.push(q.to_string());
        }
        c.push(format!("pod{uid}"));
        let (leaf, layout) = if crio {
            (format!("crio-{id}"), CgroupLayout::CrioCgroupfs)
        } else {
            (id.clone(), CgroupLayout::KubepodsCgroupfs)
        };
        c.push(leaf);
        (c, id, Some(uid), layout)
    });
    const SYSTEMD_PREFIXES: [(&str, CgroupLayout); 3] = [
        ("cri-containerd-", CgroupLayout::ContainerdSystemd),
        ("crio-", CgroupLayout::CrioSystemd),
        ("docker-", CgroupLayout::DockerSystemd),
    ];
    let kube_systemd = (qos(), pod_uid(), hex(64), proptest::sample::select(&SYSTEMD_PREFIXES[..])).prop_map(
        |(q, uid, id, (prefix, layout))| {
            let mut c = vec!["kubepods.slice".to_string()];
            let pod = if q.is_empty() {
                format!("kubepods-pod{}.slice", uid.replace('-', "_"))
            } else {
                c.push(format!("kubepods-{q}.slice"));
                format!("kubepods-{q}-pod{}.slice", uid.replace('-', "_"))
            };
            c.push(pod);
            c.push(format!("{prefix}{id}.scope"));
            (c, id, Some(uid), layout)
        },
    );
    let containerd_ns = (plain_name().prop_filter("docker is its own layout", |n| n != "docker"), hex(64))
        .prop_map(|(ns, id)| (vec![ns, id.clone()], id, None, CgroupLayout::ContainerdCgroupfs));
    let docker = hex(64).prop_map(|id| (vec!["docker".into(), id.clone()], id, None, CgroupLayout::DockerCgroupfs));
    let docker_systemd = hex(64).prop_map(|id| {
        (vec!["system.slice".into(), format!("docker-{id}.scope")], id, None, CgroupLayout::DockerSystemd)
    });
    let podman = (hex(64), any::<bool>()).prop_map(|(id, rootless)| {
        let mut c: Vec<String> = if rootless {
            ["user.slice", "user-1000.slice", "user@1000.service", "user.slice"].map(String::from).to_vec()
        } else {
            vec!["machine.slice".into()]
        };
        c.push(format!("libpod-{id}.scope"));
        (c, id, None, CgroupLayout::PodmanSystemd)
    });
    let crio_systemd = hex(64)
        .prop_map(|id| (vec!["system.slice".into(), format!("crio-{id}.scope")], id, None, CgroupLayout::CrioSystemd));
    prop_oneof![kube_cgroupfs, kube_systemd, containerd_ns, docker, docker_systemd, podman, crio_systemd]
}

/// A container's cgroup path in a real layout, with what surrounds it.
pub fn container_path() -> impl Strategy<Value = Shape> {
    (prefix(), layout(), suffix(), any::<bool>(), any::<bool>()).prop_map(
        |(pre, (own, id, pod_uid, layout), suf, lead, trail)| {
            let comps: Vec<String> = pre.into_iter().chain(own).chain(suf.iter().cloned()).collect();
            let mut path = comps.join("/");
            if lead {
                path.insert(0, '/');
            }
            if trail {
                path.push('/');
            }
            Shape { path, id, pod_uid, layout, depth_from_leaf: suf.len() }
        },
    )
}

/// A 64-character string that is not a container id: uppercase or non-hex
/// somewhere, or hex of another length.
fn not_an_id() -> impl Strategy<Value = String> {
    prop_oneof![
        (1usize..64).prop_flat_map(hex),
        (65usize..100).prop_flat_map(hex),
        (hex(64), 0usize..64, proptest::sample::select(&['A', 'F', 'g', 'z', '-', '_', '.', 'X'][..])).prop_map(
            |(mut h, i, c)| {
                h.replace_range(i..i + 1, &c.to_string());
                h
            }
        ),
        hex(64).prop_map(|h| h.to_ascii_uppercase()),
        hex(62).prop_map(|h| format!("{h}é")),
    ]
}

/// Cgroups of host processes, which no container owns.
fn host_path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("/".to_string()),
        Just("/init.scope".to_string()),
        plain_name().prop_map(|s| format!("/system.slice/{s}.service")),
        (1u32..70000, 1u32..500).prop_map(|(u, s)| format!("/user.slice/user-{u}.slice/session-{s}.scope")),
        (1u32..70000, plain_name())
            .prop_map(|(u, s)| format!("/user.slice/user-{u}.slice/user@{u}.service/app.slice/{s}.service")),
        hex(32).prop_map(|h| format!("/process_api/{h}")),
        (qos(), pod_uid()).prop_map(|(q, uid)| format!("/kubepods/{q}/pod{uid}")),
        (qos(), pod_uid())
            .prop_map(|(q, uid)| format!("/kubepods.slice/kubepods-{q}-pod{}.slice", uid.replace('-', "_"))),
        // The runtime's monitor is not the container.
        (hex(64), proptest::sample::select(&["crio-conmon-", "libpod-conmon-"][..]))
            .prop_map(|(id, p)| format!("/machine.slice/{p}{id}.scope")),
        proptest::collection::vec(proptest::string::string_regex("[a-zA-Z0-9@._:=, -]{0,40}").unwrap(), 0..8)
            .prop_map(|c| format!("/{}", c.join("/"))),
    ]
}

/// One `/proc/<pid>/cgroup` line's path, container or host.
fn any_cgroup() -> impl Strategy<Value = (String, Option<String>)> {
    prop_oneof![
        container_path().prop_map(|s| (format!("/{}", s.path.trim_start_matches('/')), Some(s.id))),
        host_path().prop_map(|p| (p, None))
    ]
}

proptest! {
    #![proptest_config(crate::config())]

    /// Any text: no panic; whatever is found is a 64-hex id that is in the
    /// text, with a pod uid in one of its two spellings.
    #[test]
    fn any_text_parses_safely(s in crate::text_from(
        &["/", "-", "_", ".", "..", ".scope", ".slice", "pod", "kubepods", "crio-", "conmon-", "docker", "libpod-",
          "cri-containerd-", "0123456789abcdef", "deadbeef", "0", ":", "\n", " (deleted)", "é", "\0"],
        160,
    )) {
        if let Some(c) = container_from_cgroup_path(&s) {
            prop_assert!(c.id.len() == 64 && c.id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            prop_assert!(s.contains(c.id.as_str()));
            prop_assert_eq!(c.short_id(), &c.id[..12]);
            if let Some(uid) = &c.pod_uid {
                prop_assert!(s.contains(uid.as_str()) || s.contains(&uid.replace('-', "_")), "{}", uid);
            }
        }
        let _ = container_from_proc_cgroup(&s);
    }

    /// Real layouts, with prefixes (cgroup namespaces, nesting in a kind node)
    /// and leaves below the container: the id, layout and pod uid they were
    /// made from.
    #[test]
    fn real_layouts_yield_their_container(shape in container_path()) {
        let c = container_from_cgroup_path(&shape.path);
        let c = c.ok_or_else(|| TestCaseError::fail(format!("no container in {:?}", shape.path)))?;
        prop_assert_eq!(&c.id, &shape.id, "{}", shape.path);
        prop_assert_eq!(c.layout, shape.layout, "{}", shape.path);
        prop_assert_eq!(c.pod_uid.map(|u| u.to_string()), shape.pod_uid, "{}", shape.path);
    }

    /// The kernel sends only the last levels of a path: any tail that still
    /// holds the container's component names the same container, and the same
    /// pod when the pod's component is in it too.
    #[test]
    fn tails_keep_the_container(shape in container_path(), extra in 0usize..4) {
        let comps: Vec<&str> = shape.path.split('/').filter(|c| !c.is_empty()).collect();
        let keep = (shape.depth_from_leaf + 1 + extra).min(comps.len());
        let tail = comps[comps.len() - keep..].join("/");
        let c = container_from_cgroup_path(&tail);
        let c = c.ok_or_else(|| TestCaseError::fail(format!("no container in {tail:?}")))?;
        prop_assert_eq!(&c.id, &shape.id, "{}", tail);
        if keep > shape.depth_from_leaf + 1 {
            prop_assert_eq!(c.pod_uid.map(|u| u.to_string()), shape.pod_uid, "{}", tail);
            prop_assert_eq!(c.layout, shape.layout, "{}", tail);
        }
    }

    /// Host cgroups are never containers.
    #[test]
    fn host_cgroups_are_not_containers(path in host_path()) {
        prop_assert_eq!(container_from_cgroup_path(&path), None, "{}", path);
        prop_assert_eq!(container_from_proc_cgroup(&format!("0::{path}\n")), None);
    }

    /// An id of the wrong length or alphabet is rejected in every wrapper.
    #[test]
    fn wrong_ids_are_rejected(
        bad in not_an_id(),
        uid in pod_uid(),
        wrap in 0usize..7,
    ) {
        let path = match wrap {
            0 => format!("/k8s.io/{bad}"),
            1 => format!("/docker/{bad}"),
            2 => format!("/kubepods/burstable/pod{uid}/{bad}"),
            3 => format!("/kubepods/pod{uid}/crio-{bad}"),
            4 => format!("/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{bad}.scope", uid.replace('-', "_")),
            5 => format!("/system.slice/docker-{bad}.scope"),
            _ => format!("/machine.slice/libpod-{bad}.scope/container"),
        };
        prop_assert_eq!(container_from_cgroup_path(&path), None, "{}", path);
    }

    /// `/proc/<pid>/cgroup` (v1, v2, hybrid; any line order): the v2 line's
    /// container, else the first memory line's, else the first other line's.
    #[test]
    fn proc_cgroup_prefers_v2_then_memory(
        v1 in proptest::collection::vec(
            (1u32..14, proptest::sample::subsequence(&["cpu", "cpuacct", "memory", "pids", "blkio", "name=systemd"][..], 1..3), any_cgroup()),
            0..5,
        ),
        v2 in proptest::option::of(any_cgroup()),
        v2_at in any::<prop::sample::Index>(),
        deleted in any::<bool>(),
        crlf in any::<bool>(),
    ) {
        let mut lines: Vec<String> = v1.iter().map(|(h, ctl, (p, _))| format!("{h}:{}:{p}", ctl.join(","))).collect();
        if let Some((p, _)) = &v2 {
            let suffix = if deleted { " (deleted)" } else { "" };
            lines.insert(v2_at.index(lines.len() + 1), format!("0::{p}{suffix}"));
        }
        let nl = if crlf { "\r\n" } else { "\n" };
        let text = lines.iter().map(|l| format!("{l}{nl}")).collect::<String>();
        let want = v2
            .as_ref()
            .and_then(|(_, id)| id.clone())
            .or_else(|| v1.iter().find(|(_, ctl, (_, id))| ctl.contains(&"memory") && id.is_some()).and_then(|(_, _, (_, id))| id.clone()))
            .or_else(|| v1.iter().find_map(|(_, _, (_, id))| id.clone()));
        prop_assert_eq!(container_from_proc_cgroup(&text).map(|c| c.id.to_string()), want, "{}", text);
    }
}
