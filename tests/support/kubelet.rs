//! A kubelet for the chart's DaemonSet, without a cluster.
//!
//! [`render`] runs `helm template` on `helm/driftwatch`; [`translate`] turns the
//! rendered DaemonSet's pod template into what a kubelet sends over CRI — the
//! `PodSandboxConfig` and `ContainerConfig` (namespaces, security context,
//! capabilities, seccomp and AppArmor profiles, volumes and their mounts with
//! read-only flags and propagation, the config ConfigMap as files, env from the
//! downward API, args, resources and QoS, probes) — and [`ChartPod::start`]
//! runs it through CRI: RunPodSandbox (with a pod network namespace when the
//! pod asks for one: see `cni_stub.py`), CreateContainer, StartContainer.
//!
//! The translation is strict: a field of the pod template that it neither
//! translates nor knows to be the scheduler's or the API server's business is
//! an error naming the field. A chart change the translator does not follow
//! fails the test instead of quietly testing another pod.
//!
//! Kubelet behaviour reproduced (Kubernetes 1.33): seccomp `Unconfined` when
//! the pod says nothing (no `--seccomp-default`), AppArmor left to the runtime
//! when unset and refused when the node has no AppArmor but the pod asks for a
//! profile, `no_new_privs` from `allowPrivilegeEscalation: false`, the default
//! masked and read-only `/proc` paths for unprivileged containers, configMap
//! volumes always read-only, emptyDir mode 0777, hostPath `type` checks
//! (`Directory` must exist, `DirectoryOrCreate` is made), `/etc/hosts` and the
//! termination-log file mounted, `$(VAR)` expansion, QoS class -> cgroup parent
//! (cgroupfs driver) and `oom_score_adj` (-997 for critical pods), CPU shares
//! from requests, the memory limit, no cluster DNS -> the node's resolv.conf.
//! Not reproduced: service environment variables (there is no API server),
//! restarts, liveness kills (the test reads the readiness probe itself).

use super::cri::{container_pid, image_status, with_client};
use k8s_cri::v1 as cri;
use serde_yaml_ng::{Mapping, Value};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const CHART: &str = "helm/driftwatch";
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The helm binary: `$DRIFTWATCH_HELM`, else the one `scripts/install-chart-tools.sh`
/// installs, else `helm` on PATH.
pub fn helm() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DRIFTWATCH_HELM") {
        return Some(PathBuf::from(p));
    }
    let tools = std::env::var("DRIFTWATCH_TOOLS").unwrap_or_else(|_| "/opt/driftwatch-tools".into());
    let p = Path::new(&tools).join("bin/helm");
    if p.exists() {
        return Some(p);
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("helm")).find(|p| p.exists())
}

/// `helm template driftwatch helm/driftwatch --namespace driftwatch -f <values>`:
/// every rendered document.
pub fn render(values_yaml: &str) -> Result<Vec<Value>, String> {
    let helm = helm().ok_or("helm not found: run scripts/install-chart-tools.sh")?;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let values = std::env::temp_dir().join(format!("driftwatch-kubelet-values-{}-{}.yaml", std::process::id(), seq()));
    fs::write(&values, values_yaml).map_err(|e| format!("writing {}: {e}", values.display()))?;
    let out = Command::new(&helm)
        .args(["template", "driftwatch"])
        .arg(repo.join(CHART))
        .args(["--namespace", "driftwatch", "-f"])
        .arg(&values)
        .output()
        .map_err(|e| format!("running {}: {e}", helm.display()));
    let _ = fs::remove_file(&values);
    let out = out?;
    if !out.status.success() {
        return Err(format!("helm template failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut docs = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| format!("rendered YAML: {e}"))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn seq() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The rendered DaemonSet (exactly one), mutable (tests inject fields).
pub fn daemonset_mut(docs: &mut [Value]) -> &mut Value {
    docs.iter_mut().find(|d| d["kind"].as_str() == Some("DaemonSet")).expect("no DaemonSet rendered")
}

/// What the kubelet knows about its node.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// The kubelet's root: pod directories (`pods/<uid>/volumes/...`) live under it.
    pub root: PathBuf,
    /// Where pod log directories go (the kubelet's /var/log/pods).
    pub log_root: PathBuf,
    /// AppArmor is enabled in this kernel.
    pub apparmor: bool,
    pub memory_capacity: u64,
}

impl Node {
    /// This machine, with the kubelet's directories under `root`.
    pub fn this(root: &Path) -> Node {
        let name = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let labels = BTreeMap::from([
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), arch.to_string()),
            ("kubernetes.io/hostname".to_string(), name.clone()),
        ]);
        let memory_capacity = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemTotal:").map(str::to_string)))
            .and_then(|v| v.split_whitespace().next().and_then(|k| k.parse::<u64>().ok()))
            .map_or(1 << 34, |kb| kb * 1024);
        Node {
            name,
            labels,
            root: root.join("kubelet"),
            log_root: root.join("pods"),
            apparmor: apparmor_enabled(),
            memory_capacity,
        }
    }
}

/// AppArmor is on in this kernel (what the kubelet checks before admitting a pod with a profile).
pub fn apparmor_enabled() -> bool {
    fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y")
}

/// An HTTP probe of the container (`httpGet` on the pod IP).
#[derive(Debug, Clone)]
pub struct HttpProbe {
    pub path: String,
    pub port: u16,
    pub period: Duration,
    pub failure_threshold: u32,
}

/// A file or directory the kubelet makes (or checks) before the pod starts.
#[derive(Debug, Clone)]
pub enum Prepare {
    /// A directory to make with this mode (emptyDir, configMap volume, DirectoryOrCreate).
    Dir(PathBuf, u32),
    /// A host directory that must exist (hostPath `type: Directory`).
    ExistingDir(PathBuf),
    /// A file and its content and mode (configMap keys, the termination log).
    File(PathBuf, Vec<u8>, u32),
}

/// The pod as a kubelet would run it.
#[derive(Debug, Clone)]
pub struct PodPlan {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub sandbox: cri::PodSandboxConfig,
    pub container: cri::ContainerConfig,
    /// The image as the pod spec names it (resolved to its id at start).
    pub image: String,
    pub host_network: bool,
    pub readiness: Option<HttpProbe>,
    pub liveness: Option<HttpProbe>,
    pub startup: Option<HttpProbe>,
    pub prepare: Vec<Prepare>,
    /// `<root>/pods/<uid>`: removed with the pod.
    pub pod_dir: PathBuf,
    pub termination_grace_s: i64,
    /// Fields the kubelet leaves to others (scheduler, API server), with why.
    pub notes: Vec<String>,
}

/// A mapping whose keys must all be consumed: what is left when [`Obj::done`]
/// is called is a field the translator does not know.
struct Obj {
    path: String,
    map: Mapping,
}

impl Obj {
    fn new(path: &str, v: Value) -> Result<Obj, String> {
        match v {
            Value::Mapping(map) => Ok(Obj { path: path.to_string(), map }),
            Value::Null => Ok(Obj { path: path.to_string(), map: Mapping::new() }),
            other => Err(format!("{path}: expected a mapping, got {other:?}")),
        }
    }
    fn at(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }
    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.shift_remove(key).filter(|v| !v.is_null())
    }
    fn str(&mut self, key: &str) -> Result<Option<String>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(format!("{}: expected a string, got {v:?}", self.at(key))),
        }
    }
    fn bool(&mut self, key: &str) -> Result<Option<bool>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(v) => Err(format!("{}: expected a boolean, got {v:?}", self.at(key))),
        }
    }
    fn int(&mut self, key: &str) -> Result<Option<i64>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v.as_i64().map(Some).ok_or_else(|| format!("{}: expected an integer, got {v:?}", self.at(key))),
        }
    }
    fn obj(&mut self, key: &str) -> Result<Option<Obj>, String> {
        let path = self.at(key);
        self.take(key).map(|v| Obj::new(&path, v)).transpose()
    }
    fn seq(&mut self, key: &str) -> Result<Vec<Value>, String> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some(Value::Sequence(s)) => Ok(s),
            Some(v) => Err(format!("{}: expected a list, got {v:?}", self.at(key))),
        }
    }
    fn strings(&mut self, key: &str) -> Result<Vec<String>, String> {
        let at = self.at(key);
        self.seq(key)?
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                other => Err(format!("{at}: expected strings, got {other:?}")),
            })
            .collect()
    }
    fn string_map(&mut self, key: &str) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        if let Some(mut o) = self.obj(key)? {
            let keys: Vec<String> = o.map.keys().filter_map(|k| k.as_str().map(str::to_string)).collect();
            for k in keys {
                let v = o.str(&k)?.unwrap_or_default();
                out.insert(k, v);
            }
            o.done()?;
        }
        Ok(out)
    }
    /// A field the kubelet does not act on (the scheduler's, the API server's): consumed, noted.
    fn leave(&mut self, key: &str, why: &str, notes: &mut Vec<String>) {
        if let Some(v) = self.take(key) {
            notes.push(format!(
                "{}: {why} ({})",
                self.at(key),
                serde_yaml_ng::to_string(&v).unwrap_or_default().trim()
            ));
        }
    }
    fn done(self) -> Result<(), String> {
        let left: Vec<String> = self.map.keys().map(|k| k.as_str().unwrap_or("?").to_string()).collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "unknown field{} {}: tests/support/kubelet.rs does not translate {} into CRI \
                 (teach it, so the test keeps running the chart's pod)",
                if left.len() > 1 { "s" } else { "" },
                left.iter().map(|k| format!("`{}.{k}`", self.path)).collect::<Vec<_>>().join(", "),
                if left.len() > 1 { "them" } else { "it" },
            ))
        }
    }
}

/// Kubernetes quantities: CPU in millicores, memory in bytes.
pub fn milli_cpu(q: &str) -> Result<i64, String> {
    if let Some(m) = q.strip_suffix('m') {
        m.parse().map_err(|e| format!("cpu {q:?}: {e}"))
    } else {
        q.parse::<f64>().map(|c| (c * 1000.0).round() as i64).map_err(|e| format!("cpu {q:?}: {e}"))
    }
}

pub fn bytes(q: &str) -> Result<i64, String> {
    const UNITS: [(&str, i64); 10] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("", 1),
    ];
    for (suffix, mult) in UNITS {
        if let Some(n) = q.strip_suffix(suffix)
            && let Ok(n) = n.parse::<i64>()
        {
            return Ok(n * mult);
        }
    }
    Err(format!("memory quantity {q:?} not understood"))
}

/// `$(VAR)` from `env` (the kubelet's expansion; `$$` is a literal `$`; unknown names stay).
fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(end) = tail.strip_prefix("$(").and_then(|t| t.find(')')) {
            let name = &tail[2..2 + end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&tail[..3 + end]),
            }
            rest = &tail[3 + end..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n.div_ceil(2)];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect::<String>()[..n].to_string()
}

fn random_uid() -> String {
    let h = random_hex(32);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// The kubelet's default masked and read-only `/proc` and `/sys` paths for
/// unprivileged containers (`procMount: Default`).
const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// seccomp / AppArmor profile -> (CRI SecurityProfile, the deprecated string field).
fn profile(kind: &str, o: Option<Obj>) -> Result<Option<(cri::SecurityProfile, String)>, String> {
    use cri::security_profile::ProfileType;
    let Some(mut o) = o else { return Ok(None) };
    let at = o.at("type");
    let ty = o.str("type")?.ok_or_else(|| format!("{at}: missing"))?;
    let local = o.str("localhostProfile")?;
    o.done()?;
    let p = |t: ProfileType, r: &str| cri::SecurityProfile { profile_type: t as i32, localhost_ref: r.to_string() };
    Ok(Some(match (ty.as_str(), local) {
        ("Unconfined", None) => (p(ProfileType::Unconfined, ""), "unconfined".into()),
        ("RuntimeDefault", None) => (p(ProfileType::RuntimeDefault, ""), "runtime/default".into()),
        (t, l) => return Err(format!("{at}: {kind} profile {t:?} (localhostProfile {l:?}) is not translated")),
    }))
}

/// Translates the rendered chart's DaemonSet into the pod a kubelet on `node` would run.
pub fn translate(docs: &[Value], node: &Node) -> Result<PodPlan, String> {
    let dss: Vec<&Value> = docs.iter().filter(|d| d["kind"].as_str() == Some("DaemonSet")).collect();
    let [ds] = dss.as_slice() else { return Err(format!("expected one DaemonSet, rendered {}", dss.len())) };
    let config_maps: HashMap<String, &Value> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("ConfigMap"))
        .filter_map(|d| Some((d["metadata"]["name"].as_str()?.to_string(), &d["data"])))
        .collect();
    let ds_name = ds["metadata"]["name"].as_str().ok_or("DaemonSet without a name")?;
    let namespace = ds["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
    let mut notes = Vec::new();

    // The pod the DaemonSet controller makes from the template.
    let name = format!("{ds_name}-{}", &random_hex(5));
    let uid = random_uid();
    let mut meta = Obj::new("spec.template.metadata", ds["spec"]["template"]["metadata"].clone())?;
    let mut pod_labels = meta.string_map("labels")?;
    let pod_annotations = meta.string_map("annotations")?;
    meta.done()?;
    pod_labels.insert("controller-revision-hash".into(), random_hex(10));
    pod_labels.insert("pod-template-generation".into(), "1".into());
    let template = ds["spec"]["template"].as_mapping().ok_or("DaemonSet without spec.template")?;
    for k in template.keys() {
        if !matches!(k.as_str(), Some("metadata" | "spec")) {
            return Err(format!("unknown field `spec.template.{}`", k.as_str().unwrap_or("?")));
        }
    }
    let mut spec = Obj::new("spec.template.spec", ds["spec"]["template"]["spec"].clone())?;

    let host_pid = spec.bool("hostPID")?.unwrap_or(false);
    let host_network = spec.bool("hostNetwork")?.unwrap_or(false);
    let host_ipc = spec.bool("hostIPC")?.unwrap_or(false);
    let dns_policy = spec.str("dnsPolicy")?.unwrap_or_else(|| "ClusterFirst".into());
    if !["ClusterFirst", "ClusterFirstWithHostNet", "Default"].contains(&dns_policy.as_str()) {
        return Err(format!("spec.template.spec.dnsPolicy {dns_policy:?} is not translated"));
    }
    spec.leave("serviceAccountName", "the API server's (no token is mounted without it)", &mut notes);
    if spec.bool("automountServiceAccountToken")?.unwrap_or(true) {
        return Err("spec.template.spec.automountServiceAccountToken: a token needs a kube-apiserver; \
                    this kubelet has none"
            .into());
    }
    let priority_class = spec.str("priorityClassName")?.unwrap_or_default();
    // The two built-in critical classes; user classes are at most 1e9.
    let critical = matches!(priority_class.as_str(), "system-node-critical" | "system-cluster-critical");
    let grace = spec.int("terminationGracePeriodSeconds")?.unwrap_or(30);
    spec.leave("imagePullSecrets", "used for pulls only; the image is imported, never pulled", &mut notes);
    spec.leave("tolerations", "the scheduler's (node taints)", &mut notes);
    if let Some(mut sel) = spec.obj("nodeSelector")? {
        let keys: Vec<String> = sel.map.keys().filter_map(|k| k.as_str().map(str::to_string)).collect();
        for k in keys {
            let want = sel.str(&k)?.unwrap_or_default();
            if node.labels.get(&k) != Some(&want) {
                return Err(format!(
                    "spec.template.spec.nodeSelector {k}={want}: this node has {:?}: the scheduler would not place the pod here",
                    node.labels.get(&k)
                ));
            }
        }
        sel.done()?;
    }
    let mut volumes: HashMap<String, Obj> = HashMap::new();
    for (i, v) in spec.seq("volumes")?.into_iter().enumerate() {
        let mut o = Obj::new(&format!("spec.template.spec.volumes[{i}]"), v)?;
        let vname = o.str("name")?.ok_or_else(|| format!("{}: missing", o.at("name")))?;
        volumes.insert(vname, o);
    }
    let containers = spec.seq("containers")?;
    spec.done()?;
    let [container] = containers.as_slice() else {
        return Err(format!("spec.template.spec.containers: {} containers; the translator runs one", containers.len()));
    };

    let pod_dir = node.root.join("pods").join(&uid);
    let log_directory = node.log_root.join(format!("{namespace}_{name}_{uid}"));
    let mut c = Obj::new("spec.template.spec.containers[0]", container.clone())?;
    let cname = c.str("name")?.ok_or("container without a name")?;
    let image = c.str("image")?.ok_or("container without an image")?;
    let pull = c.str("imagePullPolicy")?.unwrap_or_else(|| "IfNotPresent".into());
    if pull == "Always" {
        return Err(format!("{}: Always needs a registry; there is none", c.at("imagePullPolicy")));
    }
    let command = c.strings("command")?;
    let args = c.strings("args")?;
    let working_dir = c.str("workingDir")?.unwrap_or_default();
    let termination_message_path = c.str("terminationMessagePath")?.unwrap_or_else(|| "/dev/termination-log".into());
    let termination_message_policy = c.str("terminationMessagePolicy")?.unwrap_or_else(|| "File".into());
    for key in ["stdin", "stdinOnce", "tty"] {
        if c.bool(key)?.unwrap_or(false) {
            return Err(format!("{}: not translated", c.at(key)));
        }
    }

    // env, with the downward API
    let mut env: Vec<(String, String)> = Vec::new();
    for (i, e) in c.seq("env")?.into_iter().enumerate() {
        let mut e = Obj::new(&format!("spec.template.spec.containers[0].env[{i}]"), e)?;
        let key = e.str("name")?.ok_or_else(|| format!("{}: missing", e.at("name")))?;
        let value = if let Some(mut from) = e.obj("valueFrom")? {
            let mut f = from.obj("fieldRef")?.ok_or_else(|| format!("{}: only fieldRef is translated", from.path))?;
            let field = f.str("fieldPath")?.unwrap_or_default();
            let _ = f.str("apiVersion")?;
            f.done()?;
            from.done()?;
            match field.as_str() {
                "spec.nodeName" => node.name.clone(),
                "metadata.name" => name.clone(),
                "metadata.namespace" => namespace.clone(),
                "metadata.uid" => uid.clone(),
                other => return Err(format!("{}: fieldRef {other} is not translated", e.path)),
            }
        } else {
            expand(&e.str("value")?.unwrap_or_default(), &env)
        };
        e.done()?;
        env.push((key, value));
    }
    let command: Vec<String> = command.iter().map(|a| expand(a, &env)).collect();
    let args: Vec<String> = args.iter().map(|a| expand(a, &env)).collect();

    // ports -> the sandbox's port mappings; named ports for the probes
    let mut named_ports = HashMap::new();
    let mut port_mappings = Vec::new();
    for (i, p) in c.seq("ports")?.into_iter().enumerate() {
        let mut p = Obj::new(&format!("spec.template.spec.containers[0].ports[{i}]"), p)?;
        let container_port = p.int("containerPort")?.ok_or_else(|| format!("{}: missing", p.at("containerPort")))?;
        if let Some(n) = p.str("name")? {
            named_ports.insert(n, container_port);
        }
        let protocol = match p.str("protocol")?.as_deref() {
            None | Some("TCP") => cri::Protocol::Tcp,
            Some("UDP") => cri::Protocol::Udp,
            Some(other) => return Err(format!("{}: protocol {other} not translated", p.path)),
        };
        let host_port = p.int("hostPort")?.unwrap_or(0);
        let host_ip = p.str("hostIP")?.unwrap_or_default();
        p.done()?;
        port_mappings.push(cri::PortMapping {
            protocol: protocol as i32,
            container_port: container_port as i32,
            host_port: host_port as i32,
            host_ip,
        });
    }
    let mut probe = |key: &str| -> Result<Option<HttpProbe>, String> {
        let Some(mut p) = c.obj(key)? else { return Ok(None) };
        let mut get = p.obj("httpGet")?.ok_or_else(|| format!("{}: only httpGet probes are translated", p.path))?;
        let path = get.str("path")?.unwrap_or_else(|| "/".into());
        let port = match get.take("port") {
            Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
            Some(Value::String(s)) => *named_ports.get(&s).ok_or_else(|| format!("{}: no port named {s}", get.path))?,
            other => return Err(format!("{}: port {other:?}", get.path)),
        };
        if get.str("scheme")?.is_some_and(|s| s != "HTTP") {
            return Err(format!("{}: only HTTP is translated", get.path));
        }
        get.done()?;
        let period = p.int("periodSeconds")?.unwrap_or(10);
        let failure_threshold = p.int("failureThreshold")?.unwrap_or(3);
        let _ = p.int("initialDelaySeconds")?;
        let _ = p.int("timeoutSeconds")?;
        let _ = p.int("successThreshold")?;
        p.done()?;
        Ok(Some(HttpProbe {
            path,
            port: port as u16,
            period: Duration::from_secs(period as u64),
            failure_threshold: failure_threshold as u32,
        }))
    };
    let liveness = probe("livenessProbe")?;
    let readiness = probe("readinessProbe")?;
    let startup = probe("startupProbe")?;

    // resources -> QoS class, cgroup parent, CPU shares, memory limit, OOM score
    let (mut requests, mut limits) = (BTreeMap::new(), BTreeMap::new());
    if let Some(mut r) = c.obj("resources")? {
        requests = r.string_map("requests")?;
        limits = r.string_map("limits")?;
        r.done()?;
    }
    for (k, _) in requests.iter().chain(limits.iter()) {
        if !["cpu", "memory", "ephemeral-storage"].contains(&k.as_str()) {
            return Err(format!("spec.template.spec.containers[0].resources: {k} is not translated"));
        }
    }
    let req = |k: &str| requests.get(k).or(limits.get(k)).cloned();
    let guaranteed = ["cpu", "memory"].iter().all(|k| limits.contains_key(*k) && req(k) == limits.get(*k).cloned());
    let best_effort = requests.is_empty() && limits.is_empty();
    let (qos, cgroup_parent) = if guaranteed {
        ("Guaranteed", format!("/kubepods/pod{uid}"))
    } else if best_effort {
        ("BestEffort", format!("/kubepods/besteffort/pod{uid}"))
    } else {
        ("Burstable", format!("/kubepods/burstable/pod{uid}"))
    };
    let cpu_request = req("cpu").map(|q| milli_cpu(&q)).transpose()?.unwrap_or(0);
    let cpu_shares = if cpu_request == 0 { 2 } else { (cpu_request * 1024 / 1000).max(2) };
    let cpu_limit = limits.get("cpu").map(|q| milli_cpu(q)).transpose()?.unwrap_or(0);
    let memory_limit = limits.get("memory").map(|q| bytes(q)).transpose()?.unwrap_or(0);
    let memory_request = req("memory").map(|q| bytes(&q)).transpose()?.unwrap_or(0);
    let oom_score_adj = if critical || qos == "Guaranteed" {
        -997
    } else if qos == "BestEffort" {
        1000
    } else {
        (1000 - 1000 * memory_request / node.memory_capacity as i64).clamp(2, 999)
    };
    notes.push(format!("QoS {qos}, priority class {priority_class:?} (critical: {critical})"));

    // securityContext
    let mut sc =
        c.obj("securityContext")?.unwrap_or(Obj::new("spec.template.spec.containers[0].securityContext", Value::Null)?);
    let run_as_user = sc.int("runAsUser")?;
    let run_as_group = sc.int("runAsGroup")?;
    let run_as_non_root = sc.bool("runAsNonRoot")?.unwrap_or(false);
    let readonly_rootfs = sc.bool("readOnlyRootFilesystem")?.unwrap_or(false);
    let privileged = sc.bool("privileged")?.unwrap_or(false);
    let allow_escalation = sc.bool("allowPrivilegeEscalation")?;
    let (mut cap_add, mut cap_drop) = (Vec::new(), Vec::new());
    if let Some(mut caps) = sc.obj("capabilities")? {
        cap_add = caps.strings("add")?;
        cap_drop = caps.strings("drop")?;
        caps.done()?;
    }
    let seccomp = profile("seccomp", sc.obj("seccompProfile")?)?;
    let apparmor = profile("AppArmor", sc.obj("appArmorProfile")?)?;
    if let Some(pm) = sc.str("procMount")?
        && pm != "Default"
    {
        return Err(format!("{}: {pm} is not translated", sc.at("procMount")));
    }
    sc.done()?;
    if run_as_non_root && run_as_user.unwrap_or(0) == 0 {
        return Err("runAsNonRoot with uid 0: the kubelet refuses to start the container".into());
    }
    if let Some((p, _)) = &apparmor
        && p.profile_type != cri::security_profile::ProfileType::Unconfined as i32
        && !node.apparmor
    {
        return Err("appArmorProfile: AppArmor is not enabled on this node: the kubelet rejects the pod".into());
    }
    // No pod- or container-level seccomp: Unconfined (the kubelet without --seccomp-default).
    let (seccomp, seccomp_path) = seccomp.unwrap_or((
        cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        },
        "unconfined".into(),
    ));
    let (apparmor, apparmor_profile) = match apparmor {
        Some((p, s)) => (Some(p), s),
        None => (None, String::new()),
    };
    let ns_mode =
        |host: bool, private: cri::NamespaceMode| if host { cri::NamespaceMode::Node } else { private } as i32;
    let namespace_options = cri::NamespaceOption {
        network: ns_mode(host_network, cri::NamespaceMode::Pod),
        pid: ns_mode(host_pid, cri::NamespaceMode::Container),
        ipc: ns_mode(host_ipc, cri::NamespaceMode::Pod),
        ..Default::default()
    };

    // volumes and mounts
    let mut prepare = vec![Prepare::Dir(log_directory.clone(), 0o755)];
    let mut mounts = Vec::new();
    let mut mounted_paths = Vec::new();
    for (i, m) in c.seq("volumeMounts")?.into_iter().enumerate() {
        let mut m = Obj::new(&format!("spec.template.spec.containers[0].volumeMounts[{i}]"), m)?;
        let vname = m.str("name")?.ok_or_else(|| format!("{}: missing", m.at("name")))?;
        let container_path = m.str("mountPath")?.ok_or_else(|| format!("{}: missing", m.at("mountPath")))?;
        let mut readonly = m.bool("readOnly")?.unwrap_or(false);
        let propagation = match m.str("mountPropagation")?.as_deref() {
            None | Some("None") => cri::MountPropagation::PropagationPrivate,
            Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") if privileged => cri::MountPropagation::PropagationBidirectional,
            Some(other) => {
                return Err(format!("{}: mountPropagation {other} (Bidirectional needs privileged)", m.path));
            }
        };
        m.done()?;
        let vol = volumes.get_mut(&vname).ok_or_else(|| format!("volumeMount {vname}: no such volume"))?;
        let host_path = if let Some(mut cm) = vol.obj("configMap")? {
            let cm_name = cm.str("name")?.ok_or("configMap volume without a name")?;
            let mode = cm.int("defaultMode")?.unwrap_or(0o644) as u32;
            cm.done()?;
            let data =
                config_maps.get(&cm_name).ok_or_else(|| format!("volume {vname}: ConfigMap {cm_name} not rendered"))?;
            let dir = pod_dir.join("volumes/kubernetes.io~configmap").join(&vname);
            prepare.push(Prepare::Dir(dir.clone(), 0o755));
            for (k, v) in data.as_mapping().into_iter().flatten() {
                let (Some(k), Some(v)) = (k.as_str(), v.as_str()) else { continue };
                prepare.push(Prepare::File(dir.join(k), v.as_bytes().to_vec(), mode));
            }
            readonly = true; // configMap volumes are always mounted read-only
            dir
        } else if let Some(mut ed) = vol.obj("emptyDir")? {
            if let Some(limit) = ed.str("sizeLimit")? {
                notes.push(format!("emptyDir {vname}: sizeLimit {limit} is enforced by eviction, not here"));
            }
            if ed.str("medium")?.is_some_and(|m| !m.is_empty()) {
                return Err(format!("{}: emptyDir medium is not translated", ed.path));
            }
            ed.done()?;
            let dir = pod_dir.join("volumes/kubernetes.io~empty-dir").join(&vname);
            prepare.push(Prepare::Dir(dir.clone(), 0o777));
            dir
        } else if let Some(mut hp) = vol.obj("hostPath")? {
            let path = PathBuf::from(hp.str("path")?.ok_or("hostPath without a path")?);
            match hp.str("type")?.as_deref() {
                None | Some("") => {}
                Some("Directory") => prepare.push(Prepare::ExistingDir(path.clone())),
                Some("DirectoryOrCreate") => prepare.push(Prepare::Dir(path.clone(), 0o755)),
                Some(other) => return Err(format!("{}: hostPath type {other} is not translated", hp.path)),
            }
            hp.done()?;
            path
        } else {
            return Err(format!("volume {vname}: only configMap, emptyDir and hostPath volumes are translated"));
        };
        mounted_paths.push(container_path.clone());
        mounts.push(cri::Mount {
            container_path,
            host_path: host_path.display().to_string(),
            readonly,
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    c.done()?;
    for (vname, v) in volumes {
        if v.map.keys().any(|k| matches!(k.as_str(), Some("configMap" | "emptyDir" | "hostPath"))) {
            return Err(format!("volume {vname} is not mounted by the container: not translated"));
        }
        v.done()?; // a volume kind the translator does not know
    }
    // The kubelet's own mounts: the termination log, and /etc/hosts (written at start,
    // when the pod IP is known) unless the container mounts one.
    let termination_log = pod_dir.join("containers").join(&cname).join(random_hex(8));
    prepare.push(Prepare::File(termination_log.clone(), Vec::new(), 0o666));
    if !mounted_paths.iter().any(|p| p == "/etc/hosts") {
        mounts.push(cri::Mount {
            container_path: "/etc/hosts".into(),
            host_path: pod_dir.join("etc-hosts").display().to_string(),
            ..Default::default()
        });
    }
    mounts.push(cri::Mount {
        container_path: termination_message_path.clone(),
        host_path: termination_log.display().to_string(),
        ..Default::default()
    });

    // the sandbox
    let mut labels: HashMap<String, String> = pod_labels.clone().into_iter().collect();
    labels.insert("io.kubernetes.pod.name".into(), name.clone());
    labels.insert("io.kubernetes.pod.namespace".into(), namespace.clone());
    labels.insert("io.kubernetes.pod.uid".into(), uid.clone());
    let mut annotations: HashMap<String, String> = pod_annotations.into_iter().collect();
    annotations.insert("kubernetes.io/config.source".into(), "api".into());
    annotations.insert("kubernetes.io/config.seen".into(), "2026-11-29T08:00:00.000000000Z".into());
    let sandbox = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace: namespace.clone(),
            attempt: 0,
        }),
        hostname: if host_network { String::new() } else { name.clone() },
        log_directory: log_directory.display().to_string(),
        // No cluster DNS on this node: the kubelet falls back to the node's resolv.conf.
        dns_config: Some(host_dns()),
        port_mappings,
        labels,
        annotations,
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.clone(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options.clone()),
                privileged,
                seccomp: Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::Unconfined as i32,
                    localhost_ref: String::new(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };

    // the container
    let mut clabels = HashMap::new();
    clabels.insert("io.kubernetes.container.name".to_string(), cname.clone());
    clabels.insert("io.kubernetes.pod.name".to_string(), name.clone());
    clabels.insert("io.kubernetes.pod.namespace".to_string(), namespace.clone());
    clabels.insert("io.kubernetes.pod.uid".to_string(), uid.clone());
    let mut cannotations = HashMap::new();
    cannotations.insert("io.kubernetes.container.hash".to_string(), random_hex(8));
    cannotations.insert("io.kubernetes.container.restartCount".to_string(), "0".to_string());
    cannotations.insert("io.kubernetes.container.terminationMessagePath".to_string(), termination_message_path);
    cannotations.insert("io.kubernetes.container.terminationMessagePolicy".to_string(), termination_message_policy);
    cannotations.insert("io.kubernetes.pod.terminationGracePeriod".to_string(), grace.to_string());
    let container = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: cname.clone(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: image.clone(), user_specified_image: image.clone(), ..Default::default() }),
        command,
        args,
        working_dir,
        envs: env.into_iter().map(|(key, value)| cri::KeyValue { key, value }).collect(),
        mounts,
        labels: clabels,
        annotations: cannotations,
        log_path: format!("{cname}/0.log"),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: cpu_limit * 100_000 / 1000,
                cpu_shares,
                memory_limit_in_bytes: memory_limit,
                oom_score_adj,
                ..Default::default()
            }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: cap_add,
                    drop_capabilities: cap_drop,
                    ..Default::default()
                }),
                privileged,
                namespace_options: Some(namespace_options),
                run_as_user: run_as_user.map(|value| cri::Int64Value { value }),
                run_as_group: run_as_group.map(|value| cri::Int64Value { value }),
                readonly_rootfs,
                no_new_privs: allow_escalation == Some(false),
                masked_paths: if privileged { vec![] } else { MASKED_PATHS.map(String::from).to_vec() },
                readonly_paths: if privileged { vec![] } else { READONLY_PATHS.map(String::from).to_vec() },
                seccomp: Some(seccomp),
                apparmor,
                #[allow(deprecated)]
                seccomp_profile_path: seccomp_path,
                #[allow(deprecated)]
                apparmor_profile,
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    Ok(PodPlan {
        name,
        namespace,
        uid,
        sandbox,
        container,
        image,
        host_network,
        readiness,
        liveness,
        startup,
        prepare,
        pod_dir,
        termination_grace_s: grace,
        notes,
    })
}

/// The node's resolv.conf as the kubelet passes it (dnsPolicy Default, or no cluster DNS).
fn host_dns() -> cri::DnsConfig {
    let mut d = cri::DnsConfig::default();
    for line in fs::read_to_string("/etc/resolv.conf").unwrap_or_default().lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => d.servers.extend(w.next().map(str::to_string)),
            Some("search") => d.searches = w.map(str::to_string).collect(),
            Some("options") => d.options = w.map(str::to_string).collect(),
            _ => {}
        }
    }
    d
}

/// Installs `cni_stub.py` as the CNI network of a containerd whose plugin directory is
/// `plugin_dir` (`cni/bin`, `cni/conf`): pods get their own network namespace with
/// `address` on a veth pair inside it (see the stub).
pub fn install_cni_stub(plugin_dir: &Path, address: &str) {
    let bin = plugin_dir.join("cni/bin");
    let conf = plugin_dir.join("cni/conf");
    for d in [&bin, &conf] {
        fs::create_dir_all(d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
    }
    for plugin in ["loopback", "dw-pod-net"] {
        let p = bin.join(plugin);
        fs::write(&p, include_str!("cni_stub.py")).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod CNI plugin");
    }
    let list = format!(
        r#"{{"cniVersion": "0.4.0", "name": "dw-pods", "plugins": [{{"type": "dw-pod-net", "address": "{address}"}}]}}"#
    );
    fs::write(conf.join("10-dw-pods.conflist"), list).expect("writing the CNI network list");
}

/// What became of a started pod.
#[derive(Debug)]
pub enum Outcome {
    /// The readiness probe answered 200.
    Ready,
    /// The container exited before it was ready.
    Exited { code: i32, log: String },
}

/// A pod run through CRI from a [`PodPlan`]; dropping it stops and removes it.
#[derive(Debug)]
pub struct ChartPod {
    pub socket: PathBuf,
    pub plan: PodPlan,
    pub sandbox_id: String,
    pub container_id: String,
    pub pod_ip: String,
    /// Host pid of the container's init process (0 once it has exited).
    pub pid: u32,
}

impl ChartPod {
    /// Prepares the pod's files and host paths, then RunPodSandbox, CreateContainer and
    /// StartContainer, as the kubelet does.
    pub fn start(socket: &Path, plan: PodPlan) -> Result<ChartPod, String> {
        for p in &plan.prepare {
            match p {
                Prepare::Dir(d, mode) => {
                    fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
                    let _ = fs::set_permissions(d, fs::Permissions::from_mode(*mode));
                }
                Prepare::ExistingDir(d) if !d.is_dir() => {
                    return Err(format!("hostPath {} (type Directory) does not exist on this node", d.display()));
                }
                Prepare::ExistingDir(_) => {}
                Prepare::File(f, content, mode) => {
                    if let Some(parent) = f.parent() {
                        fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
                    }
                    fs::write(f, content).map_err(|e| format!("writing {}: {e}", f.display()))?;
                    let _ = fs::set_permissions(f, fs::Permissions::from_mode(*mode));
                }
            }
        }
        let mut pod = ChartPod {
            socket: socket.to_path_buf(),
            plan,
            sandbox_id: String::new(),
            container_id: String::new(),
            pod_ip: String::new(),
            pid: 0,
        };
        let config = pod.plan.sandbox.clone();
        pod.sandbox_id = with_client(socket, CALL_TIMEOUT, |mut c| async move {
            let r = c
                .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() })
                .await?;
            Ok(r.into_inner().pod_sandbox_id)
        })
        .map_err(|e| format!("RunPodSandbox {}: {e}", pod.plan.name))?;
        let sid = pod.sandbox_id.clone();
        let status = with_client(socket, CALL_TIMEOUT, |mut c| async move {
            Ok(c.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: sid, verbose: false })
                .await?
                .into_inner())
        })
        .map_err(|e| format!("PodSandboxStatus: {e}"))?;
        pod.pod_ip = status.status.and_then(|s| s.network).map(|n| n.ip).unwrap_or_default();
        // /etc/hosts: the node's for host-network pods, else the kubelet's own.
        let hosts = if pod.plan.host_network {
            format!(
                "# Kubernetes-managed hosts file (host network).\n{}",
                fs::read_to_string("/etc/hosts").unwrap_or_default()
            )
        } else {
            format!(
                "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
                pod.pod_ip, pod.plan.name
            )
        };
        fs::write(pod.plan.pod_dir.join("etc-hosts"), hosts).map_err(|e| format!("etc-hosts: {e}"))?;

        let image = image_status(socket, &pod.plan.image)?.ok_or_else(|| {
            format!("image {} is not on this node (and there is no registry to pull it from)", pod.plan.image)
        })?;
        let mut config = pod.plan.container.clone();
        if let Some(spec) = config.image.as_mut() {
            spec.image = image.id;
        }
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod.sandbox_id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.plan.sandbox.clone()),
        };
        pod.container_id = with_client(socket, CALL_TIMEOUT, |mut c| async move {
            Ok(c.create_container(req).await?.into_inner().container_id)
        })
        .map_err(|e| format!("CreateContainer: {e}"))?;
        let id = pod.container_id.clone();
        with_client(socket, CALL_TIMEOUT, |mut c| async move {
            c.start_container(cri::StartContainerRequest { container_id: id }).await?;
            Ok(())
        })
        .map_err(|e| format!("StartContainer: {e}"))?;
        pod.pid = container_pid(socket, &pod.container_id).unwrap_or(0);
        Ok(pod)
    }

    /// The container's CRI log file (`<log directory>/<name>/0.log`).
    pub fn log_file(&self) -> PathBuf {
        Path::new(&self.plan.sandbox.log_directory).join(&self.plan.container.log_path)
    }

    /// The CRI log's lines of one stream ("stdout" | "stderr"), partial lines joined.
    pub fn log_lines(&self, stream: &str) -> Vec<String> {
        let text = fs::read_to_string(self.log_file()).unwrap_or_default();
        let mut out = Vec::new();
        let mut partial = String::new();
        for line in text.lines() {
            // <RFC 3339 time> <stream> <P|F> <content>
            let mut parts = line.splitn(4, ' ');
            let (Some(_), Some(s), Some(tag)) = (parts.next(), parts.next(), parts.next()) else { continue };
            if s != stream {
                continue;
            }
            partial.push_str(parts.next().unwrap_or(""));
            if tag == "F" {
                out.push(std::mem::take(&mut partial));
            }
        }
        out
    }

    /// The agent's findings: the JSON lines of its stdout.
    pub fn findings(&self) -> Vec<serde_json::Value> {
        self.log_lines("stdout").iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    pub fn stderr(&self) -> String {
        self.log_lines("stderr").join("\n")
    }

    /// (state, exit code) from ContainerStatus.
    pub fn state(&self) -> Result<(cri::ContainerState, i32), String> {
        let id = self.container_id.clone();
        let st = with_client(&self.socket, CALL_TIMEOUT, |mut c| async move {
            Ok(c.container_status(cri::ContainerStatusRequest { container_id: id, verbose: false }).await?.into_inner())
        })?;
        let s = st.status.ok_or("no status")?;
        Ok((cri::ContainerState::try_from(s.state).unwrap_or(cri::ContainerState::ContainerUnknown), s.exit_code))
    }

    /// GET `path` on `port` at the pod's IP, from inside the pod's network namespace
    /// (or the node's, for host-network pods): (status, body).
    pub fn http_get(&self, port: u16, path: &str) -> std::io::Result<(u16, String)> {
        let ip = if self.plan.host_network || self.pod_ip.is_empty() {
            "127.0.0.1".to_string()
        } else {
            self.pod_ip.clone()
        };
        let netns = (!self.plan.host_network).then(|| format!("/proc/{}/ns/net", self.pid));
        http_get_in_netns(netns.as_deref(), &ip, port, path)
    }

    /// Runs the readiness probe every half period until it answers 200, the container
    /// exits, or `timeout` passes.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Outcome, String> {
        let probe = self.plan.readiness.clone().ok_or("the pod has no readiness probe")?;
        let deadline = Instant::now() + timeout;
        loop {
            let (state, code) = self.state()?;
            if state == cri::ContainerState::ContainerExited {
                return Ok(Outcome::Exited { code, log: self.stderr() });
            }
            if let Ok((200, _)) = self.http_get(probe.port, &probe.path) {
                return Ok(Outcome::Ready);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{}: not ready after {timeout:?} (state {state:?}); stderr:\n{}",
                    self.plan.name,
                    self.stderr()
                ));
            }
            std::thread::sleep((probe.period / 2).min(Duration::from_millis(250)));
        }
    }
}

impl Drop for ChartPod {
    fn drop(&mut self) {
        let grace = self.plan.termination_grace_s;
        let (cid, sid) = (self.container_id.clone(), self.sandbox_id.clone());
        let r = with_client(&self.socket, CALL_TIMEOUT, |mut c| async move {
            if !cid.is_empty() {
                let _ = c.stop_container(cri::StopContainerRequest { container_id: cid.clone(), timeout: grace }).await;
                let _ = c.remove_container(cri::RemoveContainerRequest { container_id: cid }).await;
            }
            if !sid.is_empty() {
                c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sid.clone() }).await?;
                c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid }).await?;
            }
            Ok(())
        });
        if let Err(e) = r {
            eprintln!("support::kubelet: warning: teardown of pod {}: {e}", self.plan.name);
        }
        let _ = fs::remove_dir_all(&self.plan.pod_dir);
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.plan.sandbox.log_directory);
        }
        let parent = self.plan.sandbox.linux.as_ref().map(|l| l.cgroup_parent.clone()).unwrap_or_default();
        if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                for base in [e.path(), e.path().join("unified")] {
                    let _ = fs::remove_dir(base.join(parent.trim_start_matches('/')));
                }
            }
        }
    }
}

/// HTTP/1.0 GET from a thread that entered `netns` (a `/proc/<pid>/ns/net` path) first:
/// the pod is reached at its own address without any route from the node.
pub fn http_get_in_netns(netns: Option<&str>, ip: &str, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let (netns, addr, path) = (netns.map(str::to_string), format!("{ip}:{port}"), path.to_string());
    std::thread::spawn(move || -> std::io::Result<(u16, String)> {
        if let Some(ns) = netns {
            let f = fs::File::open(&ns)?;
            // SAFETY: setns on a valid namespace fd; only this short-lived thread moves.
            if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let addr: std::net::SocketAddr = addr.parse().map_err(std::io::Error::other)?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((status, body.to_string()))
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("probe thread panicked")))
}
