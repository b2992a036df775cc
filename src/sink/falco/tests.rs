use super::*;
use crate::classify::{Classifier, ExecFacts, ProcessFacts, Subject, finding::NetworkFacts, rules};
use serde_json::{Value, json};

const PRIORITIES: [&str; 8] =
    ["Emergency", "Alert", "Critical", "Error", "Warning", "Notice", "Informational", "Debug"];
const ID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn finding(rule: &rules::Rule, detail: Detail) -> Finding {
    let c = Classifier::new(&crate::config::Config::default());
    let mut f = c.finding(rule, Subject { id: ID, runtime: "containerd", pod_uid: Some("uid-1") }, 1, "m", detail);
    f.time = "2026-01-02T03:04:05.000000006Z".parse().expect("an RFC 3339 time");
    f.k8s_mut().namespace = Some("shop".into());
    f.k8s_mut().pod_name = Some("web-1".into());
    f.k8s_mut().container_name = Some("api".into());
    f.k8s_mut().image_name = Some("registry.example.com/shop/api".into());
    f.k8s_mut().image_tags = Some(vec!["v2".into()]);
    f.k8s_mut().image_repo_digests = Some(vec!["registry.example.com/shop/api@sha256:11".into()]);
    f.process = Some(ProcessFacts {
        pid: 42,
        parent_pid: 41,
        exe_path: "/tmp/xmrig".into(),
        exe_name: "xmrig".into(),
        command_args: vec!["/tmp/xmrig".into(), "-o".into(), "pool \"x\"".into()].into(),
        uid: 1000,
        gid: 1001,
        parent_name: "sh".into(),
        ..Default::default()
    });
    f
}

fn parse(f: &Finding) -> Value {
    serde_json::from_slice(&render(f)).expect("a Falco event is JSON")
}

#[test]
fn event_has_falcos_keys_and_parses_back() {
    let f =
        finding(&rules::EXEC_NEW_BINARY, Detail::Exec(ExecFacts { exe_source: "upper_layer", ..Default::default() }));
    let v = parse(&f);
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["hostname", "output", "output_fields", "priority", "rule", "source", "tags", "time"]);
    let raw = render(&f);
    assert!(raw.starts_with(b"{\"time\":\"2026-01-02T03:04:05.000000006Z\",\"rule\":"), "Falco's key order");
    assert_eq!(v["time"], "2026-01-02T03:04:05.000000006Z");
    assert_eq!(v["rule"], "exec_new_binary");
    assert_eq!(v["priority"], "Critical");
    assert_eq!(v["source"], "driftwatch");
    assert_eq!(v["hostname"], f.node_name.as_ref());
    assert_eq!(v["tags"], json!(f.tags));
    assert!(v["tags"].as_array().unwrap().contains(&json!("T1105")));
    assert_eq!(
        v["output"],
        "03:04:05.000000006: Critical m (rule=exec_new_binary container_id=0f1e2d3c4b5a container_name=api k8s_ns=shop \
         k8s_pod=web-1 image=registry.example.com/shop/api proc_exepath=/tmp/xmrig proc_pid=42 user_uid=1000)"
    );
    let o = &v["output_fields"];
    assert_eq!(o["evt.time"], 1_767_323_045_000_000_006u64);
    assert_eq!(o["container.id"], "0f1e2d3c4b5a");
    assert_eq!(o["container.full_id"], ID);
    assert_eq!(o["container.name"], "api");
    assert_eq!(o["container.image.repository"], "registry.example.com/shop/api");
    assert_eq!(o["container.image.tag"], "v2");
    assert_eq!(o["container.image.digest"], "sha256:11");
    assert_eq!(o["k8s.ns.name"], "shop");
    assert_eq!(o["k8s.pod.name"], "web-1");
    assert_eq!(o["proc.pid"], 42);
    assert_eq!(o["proc.ppid"], 41);
    assert_eq!(o["proc.exepath"], "/tmp/xmrig");
    assert_eq!(o["proc.name"], "xmrig");
    assert_eq!(o["proc.cmdline"], "xmrig -o pool \"x\"");
    assert_eq!(o["proc.pname"], "sh");
    assert_eq!(o["user.uid"], 1000);
    assert_eq!(o["group.gid"], 1001);
}

#[test]
fn output_fields_are_falcos_names_then_every_other_finding_key() {
    let f = finding(&rules::SHELL_IN_CONTAINER, Detail::Exec(ExecFacts::default()));
    let v = parse(&f);
    let o = v["output_fields"].as_object().unwrap();
    let Value::Object(finding) = serde_json::to_value(&f).unwrap() else { panic!("a finding is an object") };
    for (k, val) in &finding {
        if ["container.id", "time", "driftwatch.tags"].contains(&k.as_str()) {
            continue;
        }
        assert_eq!(o.get(k), Some(val), "{k}: the finding's own key, beside Falco's");
    }
    for k in o.keys() {
        assert!(
            FIELDS.contains(&k.as_str()) || finding.contains_key(k),
            "{k}: neither a Falco field of the table nor a finding key"
        );
    }
    assert!(!o.contains_key("time") && !o.contains_key("driftwatch.tags"));
    assert_eq!(v["priority"], "Warning");
    assert!(PRIORITIES.contains(&priority(Severity::Info)));
    assert_eq!(priority(Severity::Info), "Informational");
}

#[test]
fn network_and_config_findings() {
    let n = NetworkFacts {
        address: "2001:db8::1".into(),
        port: 5353,
        transport: "udp",
        network_type: "ipv6",
        direction: "listen",
        ..Default::default()
    };
    let f = finding(&rules::NETWORK_NEW_LISTENER, Detail::Network(n));
    let o = parse(&f)["output_fields"].clone();
    assert_eq!((o["fd.sip"].as_str(), o["fd.sport"].as_u64()), (Some("2001:db8::1"), Some(5353)));
    assert_eq!(o["fd.l4proto"], "udp");
    assert_eq!(o["fd.name"], "[2001:db8::1]:5353");
    assert_eq!(o["server.port"], 5353, "the finding's key beside Falco's");
    let mut f = finding(&rules::IMAGE_MUTABLE_TAG, Detail::Config(Box::default()));
    f.process = None;
    let v = parse(&f);
    assert_eq!(v["priority"], "Informational");
    assert!(v["output_fields"].get("proc.pid").is_none() && v["output_fields"].get("user.uid").is_none());
    assert!(!v["output"].as_str().unwrap().contains("proc_pid"));
}

#[test]
fn left_out_keys_are_matched_exactly() {
    assert!(left_out("container.id") && left_out("time") && left_out("driftwatch.tags"));
    assert!(!left_out("container.ids") && !left_out("k8s.pod.label.a-very-long-label-name-indeed"));
    assert_eq!(clock_time("2026-01-02T03:04:05.000000006Z"), "03:04:05.000000006");
    assert_eq!(clock_time("bad"), "bad");
}
