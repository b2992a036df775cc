//! Configuration changed under a running container (issue 16): pure
//! judgements; the watching is `pipeline::config_watch`.
//!
//! | rule | severity | playbook_step | why |
//! |---|---|---|---|
//! | `mounted_config_changed` | warning | validate | a Secret/ConfigMap/projected volume was swapped under a running pod: usually a rotation, but it changes what the process reads without a rollout |
//! | `runtime_parameters_changed` | info | validate | resources (in-place resize, a VPA) or the image of a restarted container changed: mostly operations, recorded so a change has a trace |
//! | `environment_changed` | warning (critical for code-injection names) | investigate | a process started with variables its container's entrypoint did not have |
//!
//! Values never leave the node: files are named with their sha256, variables
//! by name only.

pub use super::change_facts::{ChangeFacts, EnvFacts};
use super::{config_drift::Issue, rules};
use crate::enrich::atomic_volume::{Changes, Snapshot};
use std::collections::BTreeMap;

/// A mounted volume, as the runtime and the pod spec describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFacts {
    pub name: String,
    pub kind: &'static str,
    pub object: String,
    pub mount_path: String,
}

/// The volume was swapped from `before` to `after`: an issue when a file
/// changed (a swap to identical content, e.g. a resync, is not drift).
pub fn mounted_config_changed(container: &str, v: &VolumeFacts, before: &Snapshot, after: &Snapshot) -> Option<Issue> {
    let c = Changes::between(before, after);
    if c.is_empty() {
        return None;
    }
    let pick = |s: &Snapshot, names: &[&Vec<String>]| -> BTreeMap<String, String> {
        names.iter().flat_map(|v| v.iter()).filter_map(|k| Some((k.clone(), s.files.get(k)?.clone()))).collect()
    };
    let list = |v: &[String]| if v.is_empty() { "-".to_owned() } else { v.join(", ") };
    let message = format!(
        "{} volume {} ({}) mounted at {} in running container {container} was updated: added [{}], removed [{}], changed [{}]",
        v.kind,
        v.name,
        v.object,
        v.mount_path,
        list(&c.added),
        list(&c.removed),
        list(&c.changed)
    );
    let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
    let facts = ChangeFacts {
        volume_name: Some(v.name.clone()),
        volume_kind: Some(v.kind),
        volume_object: Some(v.object.clone()),
        mount_path: Some(v.mount_path.clone()),
        sha256_before: Some(pick(before, &[&c.removed, &c.changed])),
        sha256_after: Some(pick(after, &[&c.added, &c.changed])),
        files_added: some(c.added),
        files_removed: some(c.removed),
        files_changed: some(c.changed),
        volume_truncated: before.truncated || after.truncated,
        ..Default::default()
    };
    Some(Issue {
        rule: &rules::MOUNTED_CONFIG_CHANGED,
        message,
        facts: super::finding::ConfigFacts { change: facts, ..Default::default() },
    })
}

/// What the runtime says a running container runs with: CRI
/// `ContainerStatus.resources.linux` and the image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuntimeParams {
    pub values: BTreeMap<&'static str, String>,
}

impl RuntimeParams {
    /// From a ContainerStatus; `None` values (the runtime does not report
    /// resources) are simply absent and never compared.
    pub fn from_status(s: &k8s_cri::v1::ContainerStatus) -> RuntimeParams {
        let mut values = BTreeMap::new();
        if let Some(l) = s.resources.as_ref().and_then(|r| r.linux.as_ref()) {
            for (k, v) in [
                ("cpu_shares", l.cpu_shares),
                ("cpu_quota", l.cpu_quota),
                ("cpu_period", l.cpu_period),
                ("memory_limit_bytes", l.memory_limit_in_bytes),
                ("memory_swap_limit_bytes", l.memory_swap_limit_in_bytes),
                ("oom_score_adj", l.oom_score_adj),
            ] {
                values.insert(k, v.to_string());
            }
            values.insert("cpuset_cpus", l.cpuset_cpus.clone());
            values.insert("cpuset_mems", l.cpuset_mems.clone());
        }
        if !s.image_ref.is_empty() {
            values.insert("image_ref", s.image_ref.clone());
        }
        RuntimeParams { values }
    }
}

/// Parameters that differ (known on both sides) from `before` to `after`.
pub fn runtime_parameters_changed(
    container: &str,
    before: &RuntimeParams,
    after: &RuntimeParams,
    restarted: bool,
) -> Option<Issue> {
    let changed: Vec<&'static str> =
        after.values.iter().filter(|(k, v)| before.values.get(*k).is_some_and(|b| b != *v)).map(|(k, _)| *k).collect();
    if changed.is_empty() {
        return None;
    }
    let of = |p: &RuntimeParams| -> BTreeMap<&'static str, String> {
        changed.iter().filter_map(|k| Some((*k, p.values.get(k)?.clone()))).collect()
    };
    let (b, a) = (of(before), of(after));
    let pairs: Vec<String> = changed.iter().map(|k| format!("{k} {} -> {}", b[k], a[k])).collect();
    let when = if restarted { "was restarted with other runtime parameters" } else { "changed runtime parameters" };
    Some(Issue {
        rule: &rules::RUNTIME_PARAMETERS_CHANGED,
        message: format!("container {container} {when}: {}", pairs.join(", ")),
        facts: super::finding::ConfigFacts {
            change: ChangeFacts {
                runtime_changed: Some(changed),
                runtime_before: Some(b),
                runtime_after: Some(a),
                ..Default::default()
            },
            ..Default::default()
        },
    })
}

/// Names that change as a matter of course; the kernel skips them too
/// (their FNV-1a hashes are constants in ebpf/helpers/env.h).
pub const VOLATILE_ENV: [&str; 8] = ["PWD", "OLDPWD", "SHLVL", "_", "TERM", "COLUMNS", "LINES", "HOSTNAME"];

/// Variables that make an interpreter or the loader run other code:
/// `environment_changed` is critical when one of them is added or changed.
pub const HIGH_RISK_ENV: [&str; 13] = [
    "NODE_OPTIONS",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "PYTHONSTARTUP",
    "BASH_ENV",
    "ENV",
    "PERL5OPT",
    "RUBYOPT",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "GIT_SSH_COMMAND",
];

/// FNV-1a 32, as the kernel hashes names (ebpf/helpers/env.h).
pub fn fnv1a32(b: &[u8]) -> u32 {
    b.iter().fold(2_166_136_261u32, |h, &c| (h ^ c as u32).wrapping_mul(16_777_619))
}

/// Variable names of `env` added or changed against `base` (both
/// NUL-separated `NAME=value` lists), without volatile and `ignore`d names.
/// Only hashes of the values are compared.
pub fn env_diff(env: &[u8], base: &[u8], ignore: &[String]) -> (Vec<String>, Vec<String>) {
    let split = |b: &[u8]| -> std::collections::BTreeMap<String, u32> {
        b.split(|&c| c == 0)
            .filter(|v| !v.is_empty())
            .map(|v| {
                let eq = v.iter().position(|&c| c == b'=').unwrap_or(v.len());
                (String::from_utf8_lossy(&v[..eq]).into_owned(), fnv1a32(v))
            })
            .collect()
    };
    let (now, before) = (split(env), split(base));
    let (mut added, mut changed) = (Vec::new(), Vec::new());
    for (name, h) in now {
        if VOLATILE_ENV.contains(&name.as_str()) || ignore.contains(&name) {
            continue;
        }
        match before.get(&name) {
            None => added.push(name),
            Some(b) if *b != h => changed.push(name),
            Some(_) => {}
        }
    }
    (added, changed)
}

impl super::Classifier {
    /// `environment_changed` for an exec the kernel flagged: the variables
    /// are named from /proc (the process and its container's main process);
    /// `None` when only ignored names changed.
    pub(super) fn environment(
        &self,
        ev: &crate::event::ExecEvent,
        c: &crate::enrich::ContainerRef,
    ) -> Option<super::Boxed> {
        use crate::enrich::environ;
        let pid = ev.proc.tgid;
        let names = environ::environ(pid)
            .zip(environ::main_of(pid).filter(|m| *m != pid).and_then(environ::environ))
            .map(|(env, base)| env_diff(&env, &base, &self.rules.config.ignore_env));
        let what = match &names {
            Some((a, ch)) if a.is_empty() && ch.is_empty() => return None,
            Some((a, ch)) => {
                let part = |what: &str, v: &[String]| (!v.is_empty()).then(|| format!("{what} {}", v.join(", ")));
                [part("added", a), part("changed", ch)].into_iter().flatten().collect::<Vec<_>>().join("; ")
            }
            None => "variables not named: the process exited before they could be read".to_owned(),
        };
        let risky: Vec<&str> = names
            .iter()
            .flat_map(|(a, ch)| a.iter().chain(ch))
            .map(String::as_str)
            .filter(|n| HIGH_RISK_ENV.contains(n))
            .collect();
        let mut msg = format!(
            "{} started in container {} with an environment its entrypoint did not have: {what}",
            ev.path,
            c.short_id()
        );
        if !risky.is_empty() {
            msg.push_str(&format!(" (code injection: {})", risky.join(", ")));
        }
        // A copy: the shell or package-manager rule may still take the event.
        let mut f = self.exec_finding(&mut ev.clone(), c, &rules::ENVIRONMENT_CHANGED, msg);
        if !risky.is_empty() {
            f.severity = crate::config::Severity::Critical;
        }
        if let (Some(e), Some((a, ch))) = (f.exec_mut(), names) {
            e.env = EnvFacts { added: Some(a).filter(|v| !v.is_empty()), changed: Some(ch).filter(|v| !v.is_empty()) };
        }
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Classifier, PlaybookStep, Subject};
    use crate::config::Severity;
    use k8s_cri::v1 as cri;

    fn snap(payload: &str, files: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            payload: payload.into(),
            files: files.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            truncated: false,
        }
    }

    fn vol() -> VolumeFacts {
        VolumeFacts { name: "creds".into(), kind: "secret", object: "db-creds".into(), mount_path: "/etc/creds".into() }
    }

    #[test]
    fn a_swap_names_files_and_hashes_never_content() {
        let a = snap("..1", &[("user", "h1"), ("password", "h2"), ("old", "h3")]);
        let b = snap("..2", &[("user", "h1"), ("password", "h4"), ("token", "h5")]);
        let i = mounted_config_changed("api", &vol(), &a, &b).expect("issue");
        assert_eq!(i.rule.name, "mounted_config_changed");
        let cfg = crate::config::Config::default();
        assert_eq!(i.rule.severity(&cfg.rules), Severity::Warning);
        assert_eq!(i.rule.step, PlaybookStep::Validate);
        let f = Classifier::new(&cfg).config_finding(Subject { id: "c1", runtime: "containerd", pod_uid: None }, i);
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["driftwatch.volume.kind"], "secret");
        assert_eq!(v["driftwatch.volume.name"], "creds");
        assert_eq!(v["driftwatch.volume.object"], "db-creds");
        assert_eq!(v["driftwatch.volume.mount_path"], "/etc/creds");
        assert_eq!(v["driftwatch.volume.files_added"], serde_json::json!(["token"]));
        assert_eq!(v["driftwatch.volume.files_removed"], serde_json::json!(["old"]));
        assert_eq!(v["driftwatch.volume.files_changed"], serde_json::json!(["password"]));
        assert_eq!(v["driftwatch.volume.sha256_before"], serde_json::json!({"old": "h3", "password": "h2"}));
        assert_eq!(v["driftwatch.volume.sha256_after"], serde_json::json!({"password": "h4", "token": "h5"}));
        assert!(v.get("driftwatch.volume.truncated").is_none());
        assert!(v.get("driftwatch.runtime.changed").is_none());
        assert!(v["message"].as_str().unwrap().contains("changed [password]"), "{v:#}");
        // Same content under a new payload (a resync): nothing.
        assert!(
            mounted_config_changed(
                "api",
                &vol(),
                &a,
                &snap("..3", &[("user", "h1"), ("password", "h2"), ("old", "h3")])
            )
            .is_none()
        );
    }

    #[test]
    fn approvals_apply_by_rule_name() {
        use crate::policy::{Policy, Scope, compile};
        let a = snap("..1", &[("password", "h2")]);
        let b = snap("..2", &[("password", "h4")]);
        let i = mounted_config_changed("api", &vol(), &a, &b).unwrap();
        let cl = Classifier::new(&crate::config::Config::default());
        let mut f = cl.config_finding(Subject { id: "c1", runtime: "containerd", pod_uid: None }, i);
        f.k8s_mut().namespace = Some("payments".into());
        let policy = |yaml: &str| Policy::new(compile(&serde_yaml_ng::from_str(yaml).unwrap()).unwrap());
        for m in ["rule: mounted_config_changed, namespace: payments", "kind: config, rule: 'mounted_config_*'"] {
            let p = policy(&format!("approvals: [{{name: rotation, reason: r, match: {{{m}}}}}]"));
            let got = p.approve(&Scope::of(&f), &crate::policy::Subject::of(&f, None, None), 0);
            assert_eq!(got, Some("rotation"), "{m}");
        }
        let p = policy("approvals: [{name: x, reason: r, match: {rule: runtime_parameters_changed}}]");
        assert_eq!(p.approve(&Scope::of(&f), &crate::policy::Subject::of(&f, None, None), 0), None);
        for r in ["environment_changed", "runtime_parameters_changed"] {
            assert!(
                compile(
                    &serde_yaml_ng::from_str(&format!("approvals: [{{name: x, reason: r, match: {{rule: {r}}}}}]"))
                        .unwrap()
                )
                .is_ok()
            );
        }
    }

    #[test]
    fn env_names_only_volatile_and_ignored_skipped() {
        let base = b"PATH=/bin\0HOME=/root\0PWD=/\0APP=1\0OLD=x\0";
        let env = b"PATH=/tmp:/bin\0HOME=/root\0PWD=/srv\0SHLVL=2\0APP=1\0NODE_OPTIONS=--require x\0MINE=1\0";
        let (a, c) = env_diff(env, base, &["MINE".to_string()]);
        assert_eq!(a, ["NODE_OPTIONS"]);
        assert_eq!(c, ["PATH"]);
        // Removed variables (OLD) are not drift.
        assert_eq!(env_diff(b"PATH=/bin\0", base, &[]), (vec![], vec![]));
    }

    #[test]
    fn the_kernel_skips_the_same_volatile_names() {
        let header = include_str!("../../ebpf/helpers/env.h");
        for n in VOLATILE_ENV {
            let h = format!("{:#010x}", fnv1a32(n.as_bytes()));
            assert!(header.contains(&h), "{n} ({h}) missing from env_volatile() in env.h");
        }
    }

    fn status(quota: i64, image: &str) -> cri::ContainerStatus {
        cri::ContainerStatus {
            image_ref: image.into(),
            resources: Some(cri::ContainerResources {
                linux: Some(cri::LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_quota: quota,
                    cpu_shares: 2,
                    ..Default::default()
                }),
                windows: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn runtime_parameters_before_and_after() {
        let a = RuntimeParams::from_status(&status(0, "sha256:a"));
        let b = RuntimeParams::from_status(&status(50_000, "sha256:a"));
        assert!(runtime_parameters_changed("api", &a, &a, false).is_none());
        let i = runtime_parameters_changed("api", &a, &b, false).expect("issue");
        assert_eq!(i.rule.name, "runtime_parameters_changed");
        assert_eq!(i.rule.severity(&crate::config::Config::default().rules), Severity::Info);
        assert_eq!(i.facts.change.runtime_changed, Some(vec!["cpu_quota"]));
        assert_eq!(i.facts.change.runtime_before.as_ref().unwrap()["cpu_quota"], "0");
        assert_eq!(i.facts.change.runtime_after.as_ref().unwrap()["cpu_quota"], "50000");
        assert!(i.message.contains("cpu_quota 0 -> 50000"), "{}", i.message);
        // A restart onto another image.
        let c = RuntimeParams::from_status(&status(0, "sha256:b"));
        let i = runtime_parameters_changed("api", &a, &c, true).expect("issue");
        assert_eq!(i.facts.change.runtime_changed, Some(vec!["image_ref"]));
        assert!(i.message.contains("restarted"), "{}", i.message);
        // A runtime that does not report resources compares nothing of them.
        let bare =
            RuntimeParams::from_status(&cri::ContainerStatus { image_ref: "sha256:a".into(), ..Default::default() });
        assert!(runtime_parameters_changed("api", &bare, &b, false).is_none());
    }
}
