use super::compile::*;
use super::spec::*;
use super::{Policy, Scope, Subject};

fn spec(yaml: &str) -> PolicySpec {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn compiled(yaml: &str) -> Compiled {
    compile(&spec(yaml)).unwrap()
}

fn error(yaml: &str) -> PolicyError {
    compile(&spec(yaml)).unwrap_err()
}

#[test]
fn rule_names_are_the_classifier_s() {
    let ours: Vec<&str> = crate::classify::rules::ALL.iter().map(|r| r.name).collect();
    assert_eq!(RULE_NAMES, ours.as_slice());
    for r in crate::classify::rules::ALL {
        assert_eq!(kind_of_rule(r.name), r.kind.as_str(), "{}", r.name);
    }
}

#[test]
fn globs_paths_and_plain_text() {
    let p = Pattern::new("/etc/nginx/conf.d/**", true).unwrap();
    assert!(p.matches("/etc/nginx/conf.d/a.conf") && p.matches("/etc/nginx/conf.d/x/y.conf"));
    assert!(!p.matches("/etc/nginx/nginx.conf"));
    let p = Pattern::new("/usr/bin/*", true).unwrap();
    assert!(p.matches("/usr/bin/id") && !p.matches("/usr/bin/x/id"));
    assert_eq!(p.dir_prefix(), Some(("/usr/bin/", false)));
    assert_eq!(Pattern::new("/opt/**", true).unwrap().dir_prefix(), Some(("/opt/", true)));
    let p = Pattern::new("*--reload*", false).unwrap();
    assert!(p.matches("nginx -s --reload /etc/a/b"));
    let p = Pattern::new("web-*", false).unwrap();
    assert!(p.matches("web-prod") && !p.matches("web"));
    assert!(Pattern::new("web", false).unwrap().literal().is_some());
    assert!(Pattern::new("[", false).unwrap_err().contains("not a valid glob"));
}

#[test]
fn endpoints() {
    let e = Endpoint::parse("10.0.0.0/8:5432").unwrap();
    assert!(e.matches(Some("10.1.2.3".parse().unwrap()), 5432));
    assert!(!e.matches(Some("10.1.2.3".parse().unwrap()), 5433));
    assert!(!e.matches(Some("11.1.2.3".parse().unwrap()), 5432));
    assert!(e.matches(Some("::ffff:10.9.9.9".parse().unwrap()), 5432), "v4-mapped");
    let e = Endpoint::parse(":53").unwrap();
    assert!(e.matches(Some("8.8.8.8".parse().unwrap()), 53) && e.matches(None, 53));
    let e = Endpoint::parse("0.0.0.0/0:443").unwrap();
    assert!(e.matches(Some("1.2.3.4".parse().unwrap()), 443));
    assert!(e.matches(Some("2001:db8::1".parse().unwrap()), 443), "0.0.0.0/0 is anywhere");
    let e = Endpoint::parse("[fd00::]/8:443").unwrap();
    assert!(e.matches(Some("fd12::1".parse().unwrap()), 443) && !e.matches(Some("fe80::1".parse().unwrap()), 443));
    let e = Endpoint::parse("10.0.0.7").unwrap();
    assert!(e.matches(Some("10.0.0.7".parse().unwrap()), 1) && !e.matches(Some("10.0.0.8".parse().unwrap()), 1));
    let e = Endpoint::parse("10.0.0.0/30").unwrap();
    assert!(e.matches(Some("10.0.0.3".parse().unwrap()), 9) && !e.matches(Some("10.0.0.4".parse().unwrap()), 9));
    for bad in ["10.0.0.0/33:1", ":0", ":http", "foo:80", "10.0.0.1:", "[::1:80"] {
        assert!(Endpoint::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn approvals_need_name_reason_and_scope() {
    let e = error("approvals: [{name: a, reason: r}]");
    assert_eq!(e.path, vec![PathSeg::Key("approvals".into()), PathSeg::Index(0), PathSeg::Key("name".into())]);
    assert!(e.message.contains("has no match"), "{e:?}");
    let e = error("approvals: [{name: a, reason: r, match: {}}]");
    assert!(e.message.contains("names nothing"), "{e:?}");
    let e = error("approvals: [{name: a, reason: ' ', match: {namespace: x}}]");
    assert_eq!(e.path.last(), Some(&PathSeg::Key("reason".into())));
    let e =
        error("approvals: [{name: a, reason: r, match: {namespace: x}}, {name: a, reason: r, match: {namespace: y}}]");
    assert!(e.message.contains("unique") && e.path[1] == PathSeg::Index(1), "{e:?}");
    let e = error("approvals: [{name: probe, reason: r, match: {namespace: x}}]");
    assert!(e.message.contains("built-in"), "{e:?}");
    let e = error("approvals: [{name: 'a b', reason: r, match: {namespace: x}}]");
    assert!(e.message.contains("must be 1 to 63"), "{e:?}");
}

#[test]
fn bad_values_name_their_key() {
    let key = |yaml: &str| error(yaml).path.last().cloned().unwrap();
    let k = |s: &str| PathSeg::Key(s.into());
    assert_eq!(key("approvals: [{name: a, reason: r, match: {kind: files}}]"), k("kind"));
    assert_eq!(key("approvals: [{name: a, reason: r, match: {rule: file_writen}}]"), k("rule"));
    assert_eq!(key("approvals: [{name: a, reason: r, match: {kind: network, rule: file_written}}]"), k("rule"));
    assert_eq!(key("approvals: [{name: a, reason: r, match: {endpoint: 'x:1'}}]"), k("endpoint"));
    assert_eq!(key("approvals: [{name: a, reason: r, match: {workload_kind: deployment}}]"), k("workload_kind"));
    assert_eq!(key("approvals: [{name: a, reason: r, match: {file_path: '/a/[b'}}]"), k("file_path"));
    assert_eq!(key("approvals: [{name: a, reason: r, match: {image: 'Bad Image'}}]"), k("image"));
    assert_eq!(key("approvals: [{name: a, reason: r, match: {namespace: x}, expires: tomorrow}]"), k("expires"));
    assert_eq!(key("approvals: [{name: a, reason: r, match: {pod_labels: {app: '['}}}]"), k("app"));
    assert_eq!(key("modes: [{match: {executable: /bin/sh}, mode: protect}]"), k("executable"));
    assert!(error("modes: [{match: {}, mode: learn}]").message.contains("at least one"));
    assert!(compile(&spec("approvals: [{name: a, reason: r, match: {rule: 'exec_*'}}]")).is_ok());
}

fn finding_of(kind: crate::classify::Kind, rule: &'static str) -> crate::classify::Finding {
    let c = crate::classify::Classifier::new(&crate::config::Config::default());
    let r = crate::classify::rules::by_name(rule).unwrap();
    let mut f = c.finding(
        r,
        crate::classify::Subject { id: "abc", runtime: "containerd", pod_uid: None },
        1,
        "m",
        crate::classify::Detail::Exec(Default::default()),
    );
    assert_eq!(f.kind, kind);
    f.k8s_mut().namespace = Some("web".into());
    f.k8s_mut().workload_name = Some("nginx".into());
    f.k8s_mut().workload_kind = Some("Deployment");
    f.k8s_mut().container_name = Some("reloader".into());
    f.k8s_mut().image_name = Some("docker.io/library/nginx".into());
    f.k8s_mut().pod_labels.insert("k8s.pod.label.app".into(), "nginx".into());
    f.process = Some(crate::classify::ProcessFacts {
        exe_path: "/usr/bin/inotifyd".into(),
        parent_name: "sh".into(),
        command_args: vec!["inotifyd".into(), "--reload".into()].into(),
        ..Default::default()
    });
    f
}

#[test]
fn each_key_alone_and_combined() {
    use crate::classify::{
        Detail, Kind,
        finding::{FileFacts, NetworkFacts},
    };
    let mut file = finding_of(Kind::File, "file_written");
    file.detail = Detail::File(FileFacts { path: "/etc/nginx/conf.d/a.conf".into(), ..Default::default() });
    let mut net = finding_of(Kind::Network, "network_new_destination");
    net.detail = Detail::Network(NetworkFacts { address: "10.2.3.4".into(), port: 5432, ..Default::default() });
    let yes = [
        ("namespace: web", &file),
        ("namespace: 'we*'", &file),
        ("workload: nginx", &file),
        ("workload_kind: Deployment", &file),
        ("pod_labels: {app: nginx}", &file),
        ("pod_labels: {app: 'ng*'}", &file),
        ("container: reloader", &file),
        ("image: nginx", &file),
        ("image: 'docker.io/library/*'", &file),
        ("kind: file", &file),
        ("rule: file_written", &file),
        ("rule: 'file_*'", &file),
        ("executable: /usr/bin/inotifyd", &file),
        ("executable: '/usr/bin/*'", &file),
        ("parent_executable: sh", &file),
        ("command_args: '*--reload*'", &file),
        ("file_path: '/etc/nginx/conf.d/**'", &file),
        ("endpoint: '10.0.0.0/8:5432'", &net),
        ("endpoint: ':5432'", &net),
        ("namespace: web, kind: file, file_path: '/etc/nginx/**', executable: /usr/bin/inotifyd", &file),
    ];
    for (m, f) in yes {
        let p = Policy::new(compiled(&format!("approvals: [{{name: ok, reason: r, match: {{{m}}}}}]")));
        let got = p.approve(&Scope::of(f), &Subject::of(f, None, None), 0);
        assert_eq!(got, Some("ok"), "{m} should match");
    }
    let no = [
        ("namespace: api", &file),
        ("namespace: 'web-*'", &file),
        ("workload: nginx2", &file),
        ("workload_kind: StatefulSet", &file),
        ("pod_labels: {app: nginx, tier: web}", &file),
        ("container: app", &file),
        ("image: busybox", &file),
        ("kind: binary", &file),
        ("rule: file_deleted", &file),
        ("executable: /bin/sh", &file),
        ("parent_executable: /bin/bash", &file),
        ("command_args: '*--stop*'", &file),
        ("file_path: '/etc/nginx/*'", &file),
        ("file_path: /etc/nginx/conf.d", &file),
        ("endpoint: '10.0.0.0/8:5433'", &net),
        ("endpoint: '192.168.0.0/16'", &net),
        ("endpoint: ':5432'", &file),
        ("namespace: web, kind: file, executable: /bin/sh", &file),
    ];
    for (m, f) in no {
        let p = Policy::new(compiled(&format!("approvals: [{{name: no, reason: r, match: {{{m}}}}}]")));
        assert_eq!(p.approve(&Scope::of(f), &Subject::of(f, None, None), 0), None, "{m} should not match");
    }
}

#[test]
fn missing_facts_never_match_and_expiry_applies() {
    use crate::classify::Kind;
    let mut f = finding_of(Kind::Binary, "exec_new_binary");
    f.k8s_mut().namespace = None;
    let p = Policy::new(compiled("approvals: [{name: a, reason: r, match: {namespace: '*'}}]"));
    assert_eq!(p.approve(&Scope::of(&f), &Subject::of(&f, None, None), 0), None, "no namespace known");
    let p = Policy::new(compiled("approvals: [{name: a, reason: r, match: {kind: binary}, expires: 2027-01-31}]"));
    let f = finding_of(Kind::Binary, "exec_new_binary");
    let jan31 = 1_801_439_999; // 2027-01-31T23:59:59Z
    assert_eq!(p.approve(&Scope::of(&f), &Subject::of(&f, None, None), jan31), Some("a"));
    assert_eq!(p.approve(&Scope::of(&f), &Subject::of(&f, None, None), jan31 + 1), None);
    let p = Policy::new(compiled(
        "approvals: [{name: a, reason: r, match: {kind: binary}, expires: '2026-12-01T10:00:00Z'}]",
    ));
    assert_eq!(p.compiled.approvals[0].expires, Some(1_796_119_200));
}

#[test]
fn modes_annotation_first_then_rules_then_default() {
    use std::collections::BTreeMap;
    let p = Policy::new(compiled(
        "default_mode: monitor\nmodes:\n  - {match: {namespace: payments}, mode: protect}\n  - {match: {namespace: 'pay*'}, mode: learn}\n",
    ));
    let labels = BTreeMap::new();
    let scope = |ns: &'static str| Scope { namespace: Some(ns), pod_labels: Some(&labels), ..Default::default() };
    assert_eq!(p.mode_for(&scope("payments"), None).0, Mode::Protect);
    assert_eq!(p.mode_for(&scope("payroll"), None).0, Mode::Learn);
    assert_eq!(p.mode_for(&scope("web"), None).0, Mode::Monitor);
    let mut ann = BTreeMap::new();
    ann.insert("driftwatch.io/mode".to_string(), "learn".to_string());
    assert_eq!(p.mode_for(&scope("payments"), Some(&ann)), (Mode::Learn, crate::policy::ModeSource::Annotation));
    ann.insert("driftwatch.io/mode".to_string(), "block".to_string());
    assert_eq!(p.mode_for(&scope("payments"), Some(&ann)).0, Mode::Protect, "bad value ignored");
}
