//! The shipped image, proven. The agent's OCI image, built from Debian packages
//! and the release binary without any registry (`scripts/build-image.sh`:
//! mmdebstrap + umoci), is imported into a containerd with the CRI plugin and
//! runs as the Helm chart's DaemonSet pod: the pod template rendered by
//! `helm template` and translated field by field into the CRI calls a kubelet
//! makes (`tests/support/kubelet.rs`: host pid namespace, a pod network
//! namespace, the chart's capabilities, seccomp and AppArmor profiles,
//! read-only root, no privilege escalation, its hostPath mounts with their
//! read-only flags, the config ConfigMap as a file, NODE_NAME from the
//! downward API, resources). It must get ready (its readinessProbe), judge
//! the first exec in a container that predates it, and report drift in a
//! neighbour pod with that pod's metadata on its stdout (the CRI log file).
//!
//! Then every privilege the chart grants is taken away, one at a time (each
//! capability it adds, the Unconfined seccomp and AppArmor profiles, hostPID,
//! each hostPath mount), and the same pod must break: exit with an error, or
//! fail one of the checks above. A privilege whose removal breaks nothing is
//! one the chart should not grant, and fails the test.
//!
//! Node-local values (the only ones not the chart's defaults): the image name
//! (`localhost/driftwatch`, as imported), the CRI endpoint and its socket
//! directory (this test's own containerd), and the host directory of the
//! network baselines (so the test never touches a real node's).
mod support;

use serde_json::Value as Json;
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::cri::{Pod, PodSpec, PrivateContainerd};
use support::kubelet::{self, ChartPod, Node, Outcome, Prepare};

/// The private containerd of this test (own root, state, socket, CNI).
const RUNTIME: &str = "shipped-image";
/// The address the CNI stub gives every pod (on a veth pair inside the pod's namespace).
const POD_ADDRESS: &str = "192.0.2.10/24";

fn socket_dir() -> PathBuf {
    Path::new(support::RUN_DIR).join(RUNTIME)
}

fn state_dir() -> PathBuf {
    Path::new(support::ROOT_DIR).join(RUNTIME).join("state")
}

/// The chart's defaults, but for what is this node's own (see the header).
fn node_values() -> String {
    format!(
        "image:\n  repository: localhost/driftwatch\n\
         runtime:\n  endpoint: unix://{sock}\n  socketDirs: [{dir}]\n\
         hostPaths:\n  state: {state}\n\
         response:\n  admin:\n    socketDir: {admin}\n  capture:\n    hostPath: {evidence}\n",
        sock = socket_dir().join("containerd.sock").display(),
        dir = socket_dir().display(),
        state = state_dir().display(),
        admin = admin_dir().display(),
        evidence = evidence_dir().display(),
    )
}

/// The admin socket's host directory (the chart's `response.admin.socketDir`).
fn admin_dir() -> PathBuf {
    Path::new(support::ROOT_DIR).join(RUNTIME).join("admin")
}

/// The evidence bundles' host directory (the chart's `response.capture.hostPath`).
fn evidence_dir() -> PathBuf {
    Path::new(support::ROOT_DIR).join(RUNTIME).join("evidence")
}

fn node() -> Node {
    Node::this(&Path::new(support::ROOT_DIR).join(RUNTIME))
}

/// helm is installed by scripts/install-chart-tools.sh (scripts/test.sh runs it). In CI
/// (privileged tests on) a missing helm is a failure, elsewhere a skip.
fn have_helm() -> bool {
    if kubelet::helm().is_some() {
        return true;
    }
    if std::env::var(support::ENV_VAR).as_deref() == Ok("1") {
        panic!("helm not found: run scripts/install-chart-tools.sh");
    }
    eprintln!("skipped: helm not installed (scripts/install-chart-tools.sh)");
    false
}

fn ds(docs: &[Value]) -> &Value {
    docs.iter().find(|d| d["kind"].as_str() == Some("DaemonSet")).expect("a DaemonSet")
}

fn container0(docs: &mut [Value]) -> &mut serde_yaml_ng::Mapping {
    kubelet::daemonset_mut(docs)["spec"]["template"]["spec"]["containers"][0].as_mapping_mut().expect("container")
}

fn pod_spec(docs: &mut [Value]) -> &mut serde_yaml_ng::Mapping {
    kubelet::daemonset_mut(docs)["spec"]["template"]["spec"].as_mapping_mut().expect("pod spec")
}

#[test]
fn the_chart_pod_translates_into_cri_and_unknown_fields_fail_loudly() {
    if !have_helm() {
        return;
    }
    let node = node();
    let docs = kubelet::render(&node_values()).expect("helm template");
    let plan = kubelet::translate(&docs, &node).unwrap_or_else(|e| panic!("the chart's pod does not translate: {e}"));
    let pod = &ds(&docs)["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let sc = plan.container.linux.as_ref().unwrap().security_context.as_ref().unwrap();
    let yaml_strings = |v: &Value| -> Vec<String> {
        v.as_sequence().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
    };

    // What a kubelet sends for the rendered pod (read from the YAML, not restated).
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.add_capabilities, yaml_strings(&c["securityContext"]["capabilities"]["add"]));
    assert_eq!(caps.drop_capabilities, yaml_strings(&c["securityContext"]["capabilities"]["drop"]));
    assert_eq!(caps.drop_capabilities, ["ALL"]);
    let ns = sc.namespace_options.as_ref().unwrap();
    assert_eq!(ns.pid, k8s_cri::v1::NamespaceMode::Node as i32, "hostPID");
    let want_net = if pod["hostNetwork"].as_bool() == Some(true) {
        k8s_cri::v1::NamespaceMode::Node
    } else {
        k8s_cri::v1::NamespaceMode::Pod
    };
    assert_eq!(ns.network, want_net as i32, "hostNetwork");
    assert_eq!(sc.privileged, c["securityContext"]["privileged"].as_bool().unwrap());
    assert_eq!(sc.readonly_rootfs, c["securityContext"]["readOnlyRootFilesystem"].as_bool().unwrap());
    assert_eq!(sc.no_new_privs, c["securityContext"]["allowPrivilegeEscalation"].as_bool() == Some(false));
    assert_eq!(sc.run_as_user.as_ref().map(|u| u.value), c["securityContext"]["runAsUser"].as_i64());
    let seccomp = c["securityContext"]["seccompProfile"]["type"].as_str().unwrap();
    let profile_name = |p: &k8s_cri::v1::SecurityProfile| {
        k8s_cri::v1::security_profile::ProfileType::try_from(p.profile_type).unwrap()
    };
    assert_eq!(format!("{:?}", profile_name(sc.seccomp.as_ref().unwrap())), seccomp);
    if let Some(aa) = c["securityContext"]["appArmorProfile"]["type"].as_str() {
        assert_eq!(format!("{:?}", profile_name(sc.apparmor.as_ref().unwrap())), aa);
    }
    assert!(!sc.masked_paths.is_empty() && sc.readonly_paths.contains(&"/proc/sys".to_string()));
    assert_eq!(plan.container.args, yaml_strings(&c["args"]));
    assert!(plan.container.command.is_empty(), "no command: the image's entrypoint runs");
    let env: Vec<(&str, &str)> = plan.container.envs.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
    assert!(env.contains(&("NODE_NAME", node.name.as_str())), "{env:?}");
    for m in c["volumeMounts"].as_sequence().unwrap() {
        let path = m["mountPath"].as_str().unwrap();
        let cri = plan.container.mounts.iter().find(|x| x.container_path == path).unwrap_or_else(|| panic!("{path}"));
        let config_map = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|v| v["name"] == m["name"] && v.get("configMap").is_some());
        assert_eq!(cri.readonly, m["readOnly"].as_bool() == Some(true) || config_map, "{path} read-only flag");
        assert_eq!(cri.propagation, k8s_cri::v1::MountPropagation::PropagationPrivate as i32, "{path}");
    }
    // The config ConfigMap becomes the file the agent reads.
    let cm = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ConfigMap") && d["metadata"]["name"].as_str() == Some("driftwatch"))
        .unwrap();
    let config = cm["data"]["config.yaml"].as_str().unwrap();
    assert!(
        plan.prepare
            .iter()
            .any(|p| matches!(p, Prepare::File(f, body, _) if f.ends_with("config.yaml") && body == config.as_bytes())),
        "config.yaml projected"
    );
    let readiness = plan.readiness.as_ref().expect("readinessProbe");
    assert_eq!(readiness.path, c["readinessProbe"]["httpGet"]["path"].as_str().unwrap());
    // The probe names its port (the health listener's, or metrics without one).
    let probe_port = &c["readinessProbe"]["httpGet"]["port"];
    let port = c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| &p["name"] == probe_port || &p["containerPort"] == probe_port)
        .unwrap_or_else(|| panic!("readinessProbe port {probe_port:?} is not a container port"));
    assert_eq!(i64::from(readiness.port), port["containerPort"].as_i64().unwrap());
    let res = plan.container.linux.as_ref().unwrap().resources.as_ref().unwrap();
    let quantity = |v: &Value| v.as_str().map(str::to_string).unwrap_or_else(|| format!("{v:?}"));
    let limit = kubelet::bytes(&quantity(&c["resources"]["limits"]["memory"])).unwrap();
    assert_eq!(res.memory_limit_in_bytes, limit, "limits.memory");
    let cpu = kubelet::milli_cpu(&quantity(&c["resources"]["requests"]["cpu"])).unwrap();
    assert_eq!(res.cpu_shares, cpu * 1024 / 1000, "requests.cpu -> shares");
    assert!(plan.sandbox.linux.as_ref().unwrap().cgroup_parent.starts_with("/kubepods/burstable/pod"));

    // The privileged mode translates too.
    let privileged = kubelet::render(&format!("{}securityContext:\n  mode: privileged\n", node_values())).unwrap();
    let p = kubelet::translate(&privileged, &node).unwrap();
    let psc = p.container.linux.unwrap().security_context.unwrap();
    assert!(psc.privileged && psc.masked_paths.is_empty());

    // A field the translator does not know is an error that names it.
    type Mutation = fn(&mut Vec<Value>);
    let cases: [(&str, Mutation); 7] = [
        ("`spec.template.spec.shareProcessNamespace`", |d| {
            pod_spec(d).insert("shareProcessNamespace".into(), true.into());
        }),
        ("`spec.template.spec.initContainers`", |d| {
            pod_spec(d).insert("initContainers".into(), serde_yaml_ng::from_str("[{name: x, image: y}]").unwrap());
        }),
        ("`spec.template.spec.securityContext`", |d| {
            pod_spec(d).insert("securityContext".into(), serde_yaml_ng::from_str("{sysctls: []}").unwrap());
        }),
        ("`spec.template.spec.containers[0].lifecycle`", |d| {
            container0(d).insert("lifecycle".into(), serde_yaml_ng::from_str("{preStop: {}}").unwrap());
        }),
        ("`spec.template.spec.containers[0].securityContext.seLinuxOptions`", |d| {
            container0(d)["securityContext"]
                .as_mapping_mut()
                .unwrap()
                .insert("seLinuxOptions".into(), serde_yaml_ng::from_str("{type: spc_t}").unwrap());
        }),
        ("`spec.template.spec.containers[0].volumeMounts[0].subPath`", |d| {
            container0(d)["volumeMounts"][0].as_mapping_mut().unwrap().insert("subPath".into(), "x".into());
        }),
        ("`spec.template.spec.volumes[0].configMap.items`", |d| {
            pod_spec(d)["volumes"][0]["configMap"]
                .as_mapping_mut()
                .unwrap()
                .insert("items".into(), serde_yaml_ng::from_str("[{key: a, path: b}]").unwrap());
        }),
    ];
    for (field, mutate) in cases {
        let mut d = docs.clone();
        mutate(&mut d);
        match kubelet::translate(&d, &node) {
            Ok(_) => panic!("{field}: translated without complaint"),
            Err(e) => assert!(e.contains(field) && e.contains("does not translate"), "{field}: {e}"),
        }
    }
}

/// The test's node: a private containerd with the CNI stub, the agent image imported.
/// (Fields drop in order: the pods before their runtime.)
struct Lab {
    /// A pod that predates every agent pod, with a dropped binary in its container.
    legacy_app: support::cri::CriContainer,
    _legacy: Pod,
    node: Node,
    image_ref: String,
    ctrd: PrivateContainerd,
}

impl Lab {
    fn start() -> Lab {
        support::containerd(); // the shared instance holds the test images
        kubelet::install_cni_stub(&PrivateContainerd::plugin_dir_for(RUNTIME), POD_ADDRESS);
        let ctrd = PrivateContainerd::start_new(RUNTIME);
        assert_eq!(ctrd.socket, socket_dir().join("containerd.sock"));
        let image_ref = import_agent_image(&ctrd);
        let mut legacy = Pod::run(
            &ctrd.socket,
            PodSpec::new("legacy-6c4f9d7b8-q7x2m", "legacy").namespace("shop").label("pod-template-hash", "6c4f9d7b8"),
        );
        let legacy_app = legacy.start_container("app", &["/bin/sleep", "3600"]);
        let (code, _, err) = legacy_app.exec_sync(&["/bin/cp", "/bin/busybox", "/tmp/busybox"]).expect("cp");
        assert_eq!(code, 0, "{err}");
        Lab { legacy_app, _legacy: legacy, node: node(), image_ref, ctrd }
    }
}

/// scripts/build-image.sh (cached), then `ctr images import` when the runtime does not
/// have that manifest yet. Returns the image's name.
fn import_agent_image(ctrd: &PrivateContainerd) -> String {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let t0 = Instant::now();
    let out = Command::new("bash")
        .arg(repo.join("scripts/build-image.sh"))
        .env("DRIFTWATCH_BIN", release_binary())
        .output()
        .expect("running build-image.sh");
    assert!(
        out.status.success(),
        "scripts/build-image.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // "REF sha256:DIGEST ARCHIVE"
    let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    let [image_ref, digest, archive] = line.split(' ').collect::<Vec<_>>()[..] else {
        panic!("build-image.sh said {line:?}")
    };
    let listed = |c: &PrivateContainerd| String::from_utf8_lossy(&c.ctr(&["images", "ls"]).stdout).into_owned();
    let present = |l: &str| l.lines().any(|r| r.split_whitespace().next() == Some(image_ref) && r.contains(digest));
    if !present(&listed(ctrd)) {
        let imp = ctrd.ctr(&["images", "import", archive]);
        assert!(imp.status.success(), "ctr images import {archive}: {}", String::from_utf8_lossy(&imp.stderr));
        assert!(present(&listed(ctrd)), "{image_ref}@{digest} not listed after import:\n{}", listed(ctrd));
    }
    eprintln!("shipped image {image_ref} ({digest}) ready in {:?}", t0.elapsed());
    image_ref.to_string()
}

/// The release binary the image ships, which must be newer than every source it is
/// built from. (Not built from here: a cargo inside `cargo test` waits forever for
/// the outer one's lock. scripts/test.sh builds it before the tests.)
fn release_binary() -> PathBuf {
    let debug = Path::new(env!("CARGO_BIN_EXE_driftwatch"));
    let bin = debug.parent().and_then(Path::parent).expect("target dir").join("release/driftwatch");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}: run `cargo build --release` first (scripts/test.sh does)", bin.display()));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stack: Vec<PathBuf> =
        ["src", "ebpf", "build.rs", "Cargo.toml", "Cargo.lock"].iter().map(|p| repo.join(p)).collect();
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).into_iter().flatten().flatten().map(|e| e.path()));
        } else if m.modified().is_ok_and(|t| t > built) {
            panic!(
                "{} is newer than {}: run `cargo build --release` first (scripts/test.sh does)",
                p.display(),
                bin.display()
            );
        }
    }
    bin
}

/// Whether this machine lets root read `/proc/1` at all. Some do not: on this CI's
/// (Firecracker) VMs even root on the host, with every capability, is refused
/// `/proc/1/ns/mnt` and `/proc/1/root` of their init.
fn proc1_readable() -> bool {
    std::fs::read_link("/proc/1/ns/mnt").is_ok()
}

const PROC1_SHIELDED: &str = "this machine shields /proc/1 from everyone (even root on the host cannot read \
    /proc/1/ns/mnt or /proc/1/root): the agent's warning that it falls back to its own mount namespace is \
    expected here, and it cannot compare a dropped binary with the image layers through /proc/1/root \
    (driftwatch.exe.origin is `unknown`, not `new_file`); CAP_SYS_PTRACE is still proven needed by the \
    containers' /proc/<pid>/ns/mnt";

fn wait_for(pod: &ChartPod, what: &str, timeout: Duration, pred: impl Fn(&Json) -> bool) -> Result<Json, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(f) = pod.findings().into_iter().find(|f| pred(f)) {
            return Ok(f);
        }
        if Instant::now() >= deadline {
            return Err(format!("no finding for {what} within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The agent's WARN and ERROR lines, but for the one this machine causes (see [`PROC1_SHIELDED`]).
fn complaints(pod: &ChartPod) -> Vec<String> {
    let expected = |l: &str| !proc1_readable() && l.contains("cannot read /proc/1/ns/mnt");
    pod.stderr()
        .lines()
        .filter(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && !expected(l))
        .map(str::to_string)
        .collect()
}

/// What broke, and the pod (for its log) when it got that far.
type Broke = Box<(String, Option<ChartPod>)>;

/// Runs the chart's pod (as mutated by the caller) and the checks; Ok when all pass,
/// Err(what broke) at the first that does not. `tag` makes this run's pods and markers unique.
fn run_and_check(lab: &Lab, docs: &[Value], tag: &str) -> Result<ChartPod, Broke> {
    let plan = kubelet::translate(docs, &lab.node).map_err(|e| Box::new((format!("translation: {e}"), None)))?;
    // Each run starts without baselines: what check 3 finds there is this run's.
    let _ = std::fs::remove_file(state_dir().join("network-baselines.json"));
    let pod = ChartPod::start(&lab.ctrd.socket, plan).map_err(|e| Box::new((format!("start: {e}"), None)))?;
    // What broke, and the agent's first complaint if it made one.
    let fail = |pod: ChartPod, why: String| -> Result<ChartPod, Broke> {
        let said = complaints(&pod).into_iter().next();
        let why = match said.and_then(|l| l.split_once(": ").map(|(_, m)| m.to_string())) {
            Some(m) if !why.contains(&m) => format!("{why}; the agent warned: {m}"),
            _ => why,
        };
        Err(Box::new((why, Some(pod))))
    };
    match pod.wait_ready(Duration::from_secs(90)) {
        Ok(Outcome::Ready) => {}
        Ok(Outcome::Exited { code, log }) => {
            let last = log.lines().last().unwrap_or("").to_string();
            return fail(pod, format!("exited with status {code}: {last}"));
        }
        Err(e) => return fail(pod, e),
    }
    // The runtime applied what the pod asked for (its status, seen from the host).
    if let Err(e) = enforced(&pod) {
        return fail(pod, format!("the runtime did not apply the pod's security context: {e}"));
    }
    let metrics = pod.http_get(8789, "/metrics").map(|r| r.1).unwrap_or_default();
    let attached = metrics.lines().find_map(|l| l.strip_prefix("driftwatch_bpf_programs_attached ")).unwrap_or("?");
    // exec, fork, exit, sys_exit (files), connect, listen, bind, mmap, mprotect (all syscall programs at exit).
    if attached != "9" {
        return fail(pod, format!("{attached} eBPF programs attached, not 9"));
    }

    // 1. The first exec in a container that predates the agent is judged (its mount
    // namespace was seeded at startup), not taken for the container's entrypoint.
    let first = format!("first-{tag}");
    let second = format!("second-{tag}");
    for m in [&first, &second] {
        let _ = lab.legacy_app.exec_sync(&["/tmp/busybox", "true", m]);
    }
    fn seen(m: &str) -> impl Fn(&Json) -> bool + '_ {
        move |f| f["process.command_args"].to_string().contains(m)
    }
    if let Err(e) = wait_for(&pod, "the second exec in the older container", Duration::from_secs(20), seen(&second)) {
        return fail(pod, e);
    }
    if !pod.findings().iter().any(seen(&first)) {
        return fail(
            pod,
            "the first exec in a container older than the agent was not judged (taken for its entrypoint)".into(),
        );
    }

    // 2. Drift in a new neighbour pod, with its metadata; a listener there is learned.
    let workload = format!("checkout-{tag}");
    let pod_name = format!("{workload}-7d9f8b6c5d-x2k4q");
    let mut neighbour = Pod::run(
        &lab.ctrd.socket,
        PodSpec::new(&pod_name, "checkout").namespace("payments").label("pod-template-hash", "7d9f8b6c5d"),
    );
    // Its entrypoint's listener is learned (an exec session's never is).
    let entry = "/bin/timeout 1 /bin/nc -l -p 28789; exec /bin/sleep 300";
    let api = neighbour.start_container("api", &["/bin/sh", "-c", entry]);
    let (code, _, err) = api.exec_sync(&["/bin/cp", "/bin/busybox", "/tmp/busybox"]).expect("ExecSync cp");
    assert_eq!(code, 0, "{err}");
    let marker = format!("drift-{tag}");
    let _ = api.exec_sync(&["/tmp/busybox", "true", &marker]);
    let f = match wait_for(&pod, "drift in the neighbour pod", Duration::from_secs(20), |f| {
        f["container.id"] == api.id.as_str() && f["process.command_args"].to_string().contains(&marker)
    }) {
        Ok(f) => f,
        Err(e) => return fail(pod, e),
    };
    let expect = [
        ("rule", "exec_new_binary"),
        ("k8s.namespace.name", "payments"),
        ("k8s.pod.name", pod_name.as_str()),
        ("k8s.container.name", "api"),
        ("k8s.workload.name", workload.as_str()),
        ("container.image.name", "localhost/driftwatch-test"),
        ("k8s.node.name", lab.node.name.as_str()),
        ("driftwatch.exe.origin", if proc1_readable() { "new_file" } else { "unknown" }),
    ];
    for (k, v) in expect {
        if f[k] != v {
            return fail(pod, format!("finding's {k} is {}, not {v:?}: {f}", f[k]));
        }
    }
    if f["driftwatch.metadata.complete"] != true {
        return fail(pod, format!("finding without complete pod metadata: {f}"));
    }
    // The isolate finding's evidence bundle lands in the host directory, and
    // the admin API answers on the host's socket.
    let Some(bundle) = f["driftwatch.evidence.path"].as_str().map(PathBuf::from) else {
        return fail(pod, format!("the isolate finding names no evidence bundle: {f}"));
    };
    if !bundle.starts_with(evidence_dir()) {
        return fail(pod, format!("evidence bundle {} outside {}", bundle.display(), evidence_dir().display()));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !bundle.exists() {
        if Instant::now() > deadline {
            return fail(pod, format!("the evidence bundle {} was not written on the host", bundle.display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Err(e) = admin_healthz(&admin_dir().join("admin.sock")) {
        return fail(pod, format!("the admin API on the host's socket: {e}"));
    }

    // 3. A clean shutdown persists the learned baseline in the state directory.
    let id = pod.container_id.clone();
    let _ = support::cri::with_client(&lab.ctrd.socket, Duration::from_secs(60), |mut c| async move {
        c.stop_container(k8s_cri::v1::StopContainerRequest { container_id: id, timeout: 30 }).await?;
        Ok(())
    });
    match pod.state() {
        Ok((_, 0)) => {}
        Ok((s, code)) => return fail(pod, format!("stopped with status {code} ({s:?})")),
        Err(e) => return fail(pod, e),
    }
    let key = format!("payments/Deployment/{workload}/api");
    let state = std::fs::read_to_string(state_dir().join("network-baselines.json")).unwrap_or_default();
    if !state.contains(&key) {
        return fail(pod, format!("the learned baseline of {key} is not in {}", state_dir().display()));
    }

    // 4. Nothing went wrong quietly.
    if let Some(l) = complaints(&pod).into_iter().next() {
        return fail(pod, format!("the agent complained: {l}"));
    }
    Ok(pod)
}

/// `GET /healthz` on the admin socket.
fn admin_healthz(sock: &Path) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    if out.starts_with("HTTP/1.1 200") { Ok(()) } else { Err(format!("answered {:?}", out.lines().next())) }
}

/// Linux capability numbers of the names a pod spec uses.
fn cap_number(name: &str) -> Option<u32> {
    const CAPS: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    let name = name.strip_prefix("CAP_").unwrap_or(name);
    CAPS.iter().position(|c| *c == name).map(|i| i as u32)
}

/// The container's capabilities, no_new_privs and seccomp mode, from its /proc status,
/// against what the translated pod asked for.
fn enforced(pod: &ChartPod) -> Result<(), String> {
    let sc =
        pod.plan.container.linux.as_ref().and_then(|l| l.security_context.as_ref()).ok_or("no security context")?;
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", pod.pid)).map_err(|e| format!("pid {}: {e}", pod.pid))?;
    let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(str::trim).unwrap_or("").to_string();
    if !sc.privileged {
        let caps = sc.capabilities.clone().unwrap_or_default();
        assert_eq!(caps.drop_capabilities, ["ALL"], "the chart drops ALL");
        let want = caps.add_capabilities.iter().try_fold(0u64, |m, c| {
            cap_number(c).map(|n| m | (1 << n)).ok_or_else(|| format!("unknown capability {c}"))
        })?;
        let eff = u64::from_str_radix(&field("CapEff:"), 16).map_err(|e| format!("CapEff: {e}"))?;
        let bnd = u64::from_str_radix(&field("CapBnd:"), 16).map_err(|e| format!("CapBnd: {e}"))?;
        if eff != want || bnd != want {
            return Err(format!("CapEff {eff:#x}, CapBnd {bnd:#x}, asked for {want:#x} ({:?})", caps.add_capabilities));
        }
    }
    if sc.no_new_privs != (field("NoNewPrivs:") == "1") {
        return Err(format!("NoNewPrivs {}", field("NoNewPrivs:")));
    }
    let filtered = field("Seccomp:") == "2";
    let want_filter = sc
        .seccomp
        .as_ref()
        .is_some_and(|p| p.profile_type != k8s_cri::v1::security_profile::ProfileType::Unconfined as i32);
    if filtered != want_filter {
        return Err(format!("seccomp mode {} (want a filter: {want_filter})", field("Seccomp:")));
    }
    Ok(())
}

type Mutate = Box<dyn Fn(&mut Vec<Value>)>;

/// A privilege of the rendered chart and how to take it away.
struct Privilege {
    name: String,
    take_away: Mutate,
    /// Why the chart keeps it even where this runtime does not need it.
    kept_for: Option<&'static str>,
}

/// Every privilege the rendered DaemonSet grants, read from it.
fn privileges(docs: &[Value], skipped: &mut Vec<String>) -> Vec<Privilege> {
    let spec = &ds(docs)["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    let mut out: Vec<Privilege> = Vec::new();
    for cap in sc["capabilities"]["add"].as_sequence().into_iter().flatten().filter_map(|v| v.as_str()) {
        let cap = cap.to_string();
        out.push(Privilege {
            name: format!("capability {cap}"),
            take_away: Box::new(move |d| {
                let add = container0(d)["securityContext"]["capabilities"]["add"].as_sequence_mut().unwrap();
                add.retain(|v| v.as_str() != Some(&cap));
            }),
            kept_for: None,
        });
    }
    if sc["seccompProfile"]["type"].as_str() == Some("Unconfined") {
        out.push(Privilege {
            name: "seccomp Unconfined (-> RuntimeDefault)".into(),
            take_away: Box::new(|d| {
                container0(d)["securityContext"]["seccompProfile"]["type"] = "RuntimeDefault".into();
            }),
            kept_for: Some(
                "containerd's default profile allows bpf() and perf_event_open with CAP_BPF / CAP_PERFMON, \
                 CRI-O's only with CAP_SYS_ADMIN (values.yaml says to set RuntimeDefault on containerd)",
            ),
        });
    }
    if sc["appArmorProfile"]["type"].as_str() == Some("Unconfined") {
        if kubelet::apparmor_enabled() {
            out.push(Privilege {
                name: "AppArmor Unconfined (-> RuntimeDefault)".into(),
                take_away: Box::new(|d| {
                    container0(d)["securityContext"]["appArmorProfile"]["type"] = "RuntimeDefault".into();
                }),
                kept_for: None,
            });
        } else {
            skipped.push(
                "AppArmor Unconfined: AppArmor is not enabled in this kernel (no /sys/module/apparmor), so \
                 RuntimeDefault cannot be tried here; the pod ran unconfined, as the chart asks"
                    .into(),
            );
        }
    }
    if sc["privileged"].as_bool() == Some(true) {
        skipped.push("privileged: true (the privileged mode is not what is measured)".into());
    }
    if spec["hostPID"].as_bool() == Some(true) {
        out.push(Privilege {
            name: "hostPID".into(),
            take_away: Box::new(|d| {
                pod_spec(d).insert("hostPID".into(), false.into());
            }),
            kept_for: None,
        });
    }
    if spec["hostNetwork"].as_bool() == Some(true) {
        out.push(Privilege {
            name: "hostNetwork".into(),
            take_away: Box::new(|d| {
                pod_spec(d).insert("hostNetwork".into(), false.into());
            }),
            kept_for: None,
        });
    }
    let host_paths: Vec<String> = spec["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter(|v| v.get("hostPath").is_some())
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    for m in c["volumeMounts"].as_sequence().into_iter().flatten() {
        let Some(vname) = m["name"].as_str().filter(|n| host_paths.iter().any(|h| h == n)) else { continue };
        let (vname, path) = (vname.to_string(), m["mountPath"].as_str().unwrap_or("").to_string());
        let rw = if m["readOnly"].as_bool() == Some(true) { "ro" } else { "rw" };
        out.push(Privilege {
            name: format!("hostPath mount {path} ({rw})"),
            take_away: Box::new(move |d| {
                container0(d)["volumeMounts"].as_sequence_mut().unwrap().retain(|m| m["name"].as_str() != Some(&vname));
                pod_spec(d)["volumes"].as_sequence_mut().unwrap().retain(|v| v["name"].as_str() != Some(&vname));
            }),
            kept_for: None,
        });
    }
    out
}

#[test]
fn the_shipped_image_runs_with_the_charts_privileges_and_needs_each_of_them() {
    if !support::privileged() || !have_helm() {
        return;
    }
    let t0 = Instant::now();
    if !proc1_readable() {
        eprintln!("note: {PROC1_SHIELDED}");
    }
    let lab = Lab::start();
    let docs = kubelet::render(&node_values()).expect("helm template");
    let plan = kubelet::translate(&docs, &lab.node).expect("translate");
    assert_eq!(plan.image, lab.image_ref, "the chart's image (appVersion tag) is the one built");
    for n in &plan.notes {
        eprintln!("kubelet: {n}");
    }

    // The chart's pod as it is.
    let t = Instant::now();
    let pod = match run_and_check(&lab, &docs, "chart") {
        Ok(pod) => pod,
        Err(broke) => {
            let (why, pod) = *broke;
            panic!(
                "the chart's pod failed: {why}\n--- agent stderr ---\n{}\n--- findings ---\n{:#?}",
                pod.as_ref().map(|p| p.stderr()).unwrap_or_default(),
                pod.as_ref().map(|p| p.findings()).unwrap_or_default()
            )
        }
    };
    eprintln!(
        "the chart's pod: ready, first exec in an older container judged, drift reported with pod metadata, baseline persisted ({:?})",
        t.elapsed()
    );
    drop(pod);

    // Each privilege taken away must break it.
    let mut skipped = Vec::new();
    let mut not_needed = Vec::new();
    for (i, p) in privileges(&docs, &mut skipped).into_iter().enumerate() {
        let mut d = docs.clone();
        (p.take_away)(&mut d);
        let t = Instant::now();
        match run_and_check(&lab, &d, &format!("p{i}")) {
            Ok(_) => match p.kept_for {
                Some(why) => eprintln!(
                    "without {}: everything works on this runtime; the chart keeps it for others: {why} ({:?})",
                    p.name,
                    t.elapsed()
                ),
                None => {
                    eprintln!("without {}: everything works ({:?})", p.name, t.elapsed());
                    not_needed.push(p.name);
                }
            },
            Err(broke) => eprintln!("without {}: {} ({:?})", p.name, broke.0, t.elapsed()),
        }
    }
    for s in &skipped {
        eprintln!("not tried: {s}");
    }
    eprintln!("shipped image test: {:?}", t0.elapsed());
    assert!(not_needed.is_empty(), "the chart grants privileges the agent does not need: {not_needed:?}");
}
