use super::super::*;
use crate::{
    classify::{
        Classifier, Subject,
        change_facts::{ChangeFacts, EnvFacts},
        rules,
    },
    config::{Config, Severity},
    event::Origin,
};

const ID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// Strings that take every path of the string writer: empty, plain, short
/// and long, every escape class, non-ASCII.
const TEXTS: &[&str] = &[
    "",
    "a",
    "sh",
    "/usr/local/bin/kubectl-with-a-long-name",
    "quo\"te",
    "back\\slash",
    "new\nline\r\t",
    "\u{1}ctl\u{1f}\u{8}\u{c}",
    "\u{7f}del and é ü 漢字",
    "[REDACTED] --password=x",
    "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z/0/1/2/3/4/5/6/7/8/9\"",
];

/// A small deterministic generator: the same findings every run, so a
/// failure names its seed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bool(&mut self) -> bool {
        self.next() & 1 == 1
    }
    fn text(&mut self) -> &'static str {
        TEXTS[(self.next() % TEXTS.len() as u64) as usize]
    }
    fn string(&mut self) -> String {
        self.text().to_string()
    }
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        self.bool().then(|| f(self))
    }
    fn list(&mut self) -> Vec<String> {
        (0..self.next() % 4).map(|_| self.string()).collect()
    }
    fn num(&mut self) -> u64 {
        match self.next() % 4 {
            0 => 0,
            1 => u64::MAX,
            _ => self.next() >> (self.next() % 64),
        }
    }
}

fn process(g: &mut Gen) -> ProcessFacts {
    ProcessFacts {
        pid: g.num() as u32,
        parent_pid: g.num() as u32,
        exe_path: g.text().into(),
        exe_name: g.text().into(),
        command_args: (0..g.next() % 6).map(|_| g.text().into()).collect(),
        uid: g.num() as u32,
        gid: g.num() as u32,
        interactive: g.bool(),
        parent_name: g.text().into(),
        origin: if g.bool() { Origin::Container } else { Origin::ExecSession },
    }
}

fn record(g: &mut Gen) -> RecordFacts {
    RecordFacts {
        cgroup_path: g.text().into(),
        path_truncated: g.bool(),
        args_truncated: g.bool(),
        path_escaped: g.bool(),
        name_escaped: g.bool(),
        args_escaped: g.bool(),
        parent_name_escaped: g.bool(),
        script_path_escaped: g.bool(),
        cgroup_path_escaped: g.bool(),
    }
}

fn detail(g: &mut Gen) -> Detail {
    match g.next() % 4 {
        0 => Detail::Exec(ExecFacts {
            exe_source: g.text(),
            exe_inode: g.num(),
            exe_origin: g.opt(|g| g.text()),
            script_path: g.opt(|g| g.string()),
            script_source: g.opt(|g| g.text()),
            drifted_ancestor: g.bool(),
            shell: g.opt(|g| g.text().into()),
            package_manager: g.opt(|g| g.text().into()),
            env_loader_vars: g.opt(|g| (0..g.next() % 3).map(|_| g.text()).collect()),
            mapped_path: g.opt(|g| g.string()),
            mapped_by: g.opt(|g| g.text()),
            mapped_path_truncated: g.bool(),
            mapped_path_escaped: g.bool(),
            env: EnvFacts { added: g.opt(|g| g.list()), changed: g.opt(|g| g.list()) },
        }),
        1 => Detail::File(FileFacts {
            drifted_ancestor: g.bool(),
            path: g.string(),
            operation: g.text(),
            path_truncated: g.bool(),
            path_escaped: g.bool(),
            target: g.opt(|g| g.string()),
            target_truncated: g.bool(),
            target_escaped: g.bool(),
            location: g.text(),
            origin: g.opt(|g| g.text()),
            mode: g.opt(|g| g.string()),
            owner: g.opt(|g| g.string()),
        }),
        2 => Detail::Network(NetworkFacts {
            drifted_ancestor: g.bool(),
            address: g.string(),
            port: g.num() as u16,
            transport: g.text(),
            network_type: g.text(),
            direction: g.text(),
            baseline_workload: g.string(),
        }),
        _ => Detail::Config(Box::new(ConfigFacts {
            image_spec: g.opt(|g| g.string()),
            spec_source: g.opt(|g| g.text()),
            pinned_digest: g.opt(|g| g.string()),
            approved_count: g.opt(|g| g.num() as usize),
            change: ChangeFacts {
                volume_name: g.opt(|g| g.string()),
                files_added: g.opt(|g| g.list()),
                sha256_after: g.opt(|g| g.list().into_iter().map(|k| (k, g.string())).collect()),
                volume_truncated: g.bool(),
                runtime_changed: g.opt(|g| vec![g.text()]),
                ..Default::default()
            },
            ..Default::default()
        })),
    }
}

fn pod(g: &mut Gen) -> PodFacts {
    PodFacts {
        namespace: g.opt(|g| g.string()),
        pod_name: g.opt(|g| g.string()),
        pod_uid: g.opt(|g| g.string()),
        container_name: g.opt(|g| g.string()),
        workload_kind: g.opt(|g| g.text()),
        workload_name: g.opt(|g| g.string()),
        image_name: g.opt(|g| g.string()),
        image_tags: g.opt(|g| g.list()),
        image_id: g.opt(|g| g.string()),
        image_repo_digests: g.opt(|g| g.list()),
        pod_labels: g.list().into_iter().map(|k| (format!("k8s.pod.label.{k}"), g.string())).collect(),
        metadata_complete: g.bool(),
        metadata_missing: g.opt(|g| g.text()),
    }
}

fn finding(g: &mut Gen, c: &Classifier) -> Finding {
    let rule = &rules::ALL[(g.next() % rules::ALL.len() as u64) as usize];
    let s = Subject { id: ID, runtime: "containerd", pod_uid: None };
    let mut f = c.finding(rule, s, g.num(), g.string(), detail(g));
    // What a rule decides, also in combinations no rule has (the header
    // cache is keyed by all of it).
    if g.bool() {
        f.rule = g.text();
        f.severity = [Severity::Critical, Severity::Warning, Severity::Info][(g.next() % 3) as usize];
        f.kind = [Kind::Binary, Kind::Shell, Kind::Package, Kind::Network, Kind::File, Kind::Config]
            [(g.next() % 6) as usize];
        f.playbook_step = [PlaybookStep::Detect, PlaybookStep::Remediate][(g.next() % 2) as usize];
        f.tags = [TEXTS, &TEXTS[3..5], &[]][(g.next() % 3) as usize];
    }
    *f.k8s_mut() = pod(g);
    f.process = g.opt(process);
    f.record = g.opt(record);
    f.redacted = g.bool();
    f.approval = g.opt(|g| g.string());
    f.action = g.opt(|g| g.text());
    f.evidence_path = g.opt(|g| g.string());
    f
}

fn same(f: &Finding, seed: u64) {
    let theirs = serde_json::to_string(f).expect("serde_json writes every finding");
    let mut ours = Vec::new();
    f.write_json(&mut ours).expect("the writer writes every finding");
    let ours = String::from_utf8(ours).expect("UTF-8");
    assert_eq!(ours, theirs, "seed {seed}");
    // The serde path of this crate (`json_line`), which the pod facts use.
    assert_eq!(crate::json_line::to_string(f).expect("json_line"), theirs, "seed {seed}");
    assert_eq!(f.to_json(), theirs, "seed {seed}");
}

#[test]
fn findings_of_every_kind_and_key_are_written_as_serde_json_writes_them() {
    let c = Classifier::new(&Config::default());
    let mut keys = std::collections::BTreeSet::new();
    for seed in 1..=3000u64 {
        let mut g = Gen(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let f = finding(&mut g, &c);
        same(&f, seed);
        // Twice: the pod facts' entries are written once and then copied.
        same(&f, seed);
        let v: serde_json::Value = serde_json::from_str(&f.to_json()).expect("JSON");
        keys.extend(v.as_object().expect("object").keys().cloned());
    }
    // The generator reached every key the writer has (a key never set would
    // never be compared).
    let src = include_str!("../json.rs");
    let written: Vec<&str> = src
        .split("key!(\"")
        .skip(1)
        .map(|s| s.split('"').next().expect("closing quote"))
        .filter(|k| !k.is_empty())
        .collect();
    assert!(written.len() > 50, "{} keys", written.len());
    for k in written {
        assert!(keys.contains(k), "no generated finding had {k}");
    }
}

#[test]
fn more_rule_headers_than_a_thread_keeps_are_written_fresh() {
    let c = Classifier::new(&Config::default());
    let s = Subject { id: ID, runtime: "containerd", pod_uid: None };
    for i in 0..(super::HEADERS_MAX as u64 + 20) {
        let mut f = c.finding(&rules::SHELL_IN_CONTAINER, s, i, "m", Detail::Exec(Default::default()));
        f.rule = Box::leak(format!("rule_{i}\"").into_boxed_str());
        same(&f, i);
        same(&f, i);
    }
    // This thread holds its bound, counted for the cache gauge (other test
    // threads may hold theirs too).
    assert!(super::headers_cached() >= super::HEADERS_MAX);
}

#[test]
fn a_finding_without_pod_facts_or_process_is_the_same_bytes() {
    let c = Classifier::new(&Config::default());
    let s = Subject { id: ID, runtime: "cri-o", pod_uid: None };
    let f = c.finding(&rules::SHELL_IN_CONTAINER, s, 1, "m", Detail::Exec(Default::default()));
    same(&f, 0);
    let f = c.finding(&rules::SHELL_IN_CONTAINER, s, 1, "m", Detail::Config(Default::default()));
    same(&f, 0);
}
