//! Pods through the CRI API, the way the kubelet makes them.
//!
//! `Pod::run` issues RunPodSandbox (host network, a `pod<uid>` cgroup parent under
//! `/kubepods/besteffort` with the cgroupfs driver, a log directory, kubelet-style
//! labels and annotations), `Pod::start_container` CreateContainer + StartContainer
//! with the `io.kubernetes.*` labels the kubelet sets; dropping a pod stops and removes
//! its containers and sandbox (never panicking).
//!
//! Every call runs on its own short-lived thread with a current-thread tokio runtime
//! and a fresh connection, so these helpers work from plain `#[test]`s, from inside an
//! async test and from `Drop` alike.
//!
//! [`PrivateContainerd`] is a second, separately rooted containerd with the CRI plugin
//! (own root, state, socket and log) for tests that restart the runtime without
//! disturbing the shared instance other tests use.

use std::collections::HashMap;
use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use driftwatch::enrich::cri::connect_unix;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

/// Where pod log directories go (the kubelet uses /var/log/pods).
pub const POD_LOG_ROOT: &str = "/var/lib/driftwatch-test/pods";
/// cgroupfs parent of every test pod, as the kubelet's cgroupfs driver names it.
pub const CGROUP_PARENT_ROOT: &str = "/kubepods/besteffort";

/// Runs `f` with a fresh client on `socket`, on a dedicated thread (so this never
/// nests a runtime inside the caller's).
pub fn with_client<T, F, Fut>(socket: &Path, timeout: Duration, f: F) -> Result<T, String>
where
    T: Send,
    F: FnOnce(RuntimeServiceClient<Channel>) -> Fut + Send,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    with_channel(socket, timeout, |ch| f(RuntimeServiceClient::new(ch)))
}

/// Runs `f` with a fresh channel to `socket` (the agent's own
/// [`connect_unix`]) on its own thread with a current-thread runtime, within `timeout`.
fn with_channel<T, F, Fut>(socket: &Path, timeout: Duration, f: F) -> Result<T, String>
where
    T: Send,
    F: FnOnce(Channel) -> Fut + Send,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let socket = socket.to_path_buf();
    std::thread::scope(|s| {
        s.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("tokio runtime: {e}"))?;
            rt.block_on(async move {
                let ch = connect_unix(&socket).await.map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
                match tokio::time::timeout(timeout, f(ch)).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(st)) => Err(format!("{:?}: {}", st.code(), st.message())),
                    Err(_) => Err(format!("no answer within {timeout:?}")),
                }
            })
        })
        .join()
        .unwrap_or_else(|_| Err("CRI client thread panicked".into()))
    })
}

/// What to create.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub labels: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
    /// `shareProcessNamespace: true`: one pid namespace for the pod, whose
    /// pid 1 is the sandbox's pause process.
    pub share_pid: bool,
    /// The pod's own network namespace (through the runtime's CNI), not the node's.
    pub pod_network: bool,
}

impl PodSpec {
    /// `name` in namespace `driftwatch-test`, a random uid, label `app=<app>`.
    pub fn new(name: &str, app: &str) -> PodSpec {
        let mut labels = HashMap::new();
        labels.insert("app".to_string(), app.to_string());
        PodSpec {
            name: name.to_string(),
            namespace: "driftwatch-test".to_string(),
            uid: random_uuid(),
            labels,
            annotations: HashMap::new(),
            share_pid: false,
            pod_network: false,
        }
    }
    /// `shareProcessNamespace: true`.
    pub fn share_process_namespace(mut self) -> PodSpec {
        self.share_pid = true;
        self
    }
    /// `hostNetwork: false`: the runtime needs a CNI network (see `kubelet::install_cni_stub`).
    pub fn pod_network(mut self) -> PodSpec {
        self.pod_network = true;
        self
    }
    pub fn namespace(mut self, ns: &str) -> PodSpec {
        self.namespace = ns.to_string();
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> PodSpec {
        self.labels.insert(k.to_string(), v.to_string());
        self
    }
    pub fn annotation(mut self, k: &str, v: &str) -> PodSpec {
        self.annotations.insert(k.to_string(), v.to_string());
        self
    }
    pub fn log_directory(&self) -> PathBuf {
        Path::new(POD_LOG_ROOT).join(format!("{}_{}_{}", self.namespace, self.name, self.uid))
    }
    pub fn cgroup_parent(&self) -> String {
        format!("{CGROUP_PARENT_ROOT}/pod{}", self.uid)
    }

    /// The PodSandboxConfig the kubelet would send (also passed to CreateContainer).
    pub fn sandbox_config(&self) -> cri::PodSandboxConfig {
        let mut labels = self.labels.clone();
        // The kubelet adds these to the user's labels.
        labels.insert("io.kubernetes.pod.name".into(), self.name.clone());
        labels.insert("io.kubernetes.pod.namespace".into(), self.namespace.clone());
        labels.insert("io.kubernetes.pod.uid".into(), self.uid.clone());
        let mut annotations = self.annotations.clone();
        annotations.insert("kubernetes.io/config.source".into(), "api".into());
        annotations.insert("kubernetes.io/config.seen".into(), "2026-11-29T08:00:00.000000000Z".into());
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: self.name.clone(),
                uid: self.uid.clone(),
                namespace: self.namespace.clone(),
                attempt: 0,
            }),
            // Host network means the host's UTS namespace: the kubelet sends no
            // hostname then (runc refuses to set one without a private UTS namespace).
            hostname: if self.pod_network { self.name.clone() } else { String::new() },
            log_directory: self.log_directory().display().to_string(),
            labels,
            annotations,
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces(self.share_pid, self.pod_network)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// hostNetwork: true (no CNI needed) unless `pod_network`, private pid namespace
/// per container (or one for the pod: `share_pid`), pod ipc.
fn namespaces(share_pid: bool, pod_network: bool) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: if pod_network { cri::NamespaceMode::Pod } else { cri::NamespaceMode::Node } as i32,
        pid: if share_pid { cri::NamespaceMode::Pod } else { cri::NamespaceMode::Container } as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A pod sandbox; dropping it tears down its containers and the sandbox.
#[derive(Debug)]
pub struct Pod {
    pub socket: PathBuf,
    pub spec: PodSpec,
    pub sandbox_id: String,
    containers: Vec<String>,
}

/// A started container of a [`Pod`].
#[derive(Debug, Clone)]
pub struct CriContainer {
    pub id: String,
    pub name: String,
    /// Host pid of the container's init process.
    pub pid: u32,
    pub socket: PathBuf,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(60);

impl Pod {
    /// RunPodSandbox. Panics with the runtime's message on failure.
    pub fn run(socket: &Path, spec: PodSpec) -> Pod {
        let _ = fs::create_dir_all(spec.log_directory());
        let config = spec.sandbox_config();
        let res = with_client(socket, CALL_TIMEOUT, |mut c| async move {
            let r = c
                .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() })
                .await?;
            Ok(r.into_inner().pod_sandbox_id)
        });
        match res {
            Ok(sandbox_id) => Pod { socket: socket.to_path_buf(), spec, sandbox_id, containers: Vec::new() },
            Err(e) => {
                remove_pod_dirs(&spec);
                panic!("RunPodSandbox {}/{} on {}: {e}", spec.namespace, spec.name, socket.display())
            }
        }
    }

    /// CreateContainer + StartContainer of `localhost/driftwatch-test:1` running
    /// `command`, with the labels and annotations the kubelet sets.
    pub fn start_container(&mut self, name: &str, command: &[&str]) -> CriContainer {
        self.start_container_with_mounts(name, command, Vec::new())
    }

    /// [`Self::start_container`] with bind mounts (the kubelet's volumes).
    pub fn start_container_with_mounts(
        &mut self,
        name: &str,
        command: &[&str],
        mounts: Vec<cri::Mount>,
    ) -> CriContainer {
        let id = self.create_container_with_mounts(name, super::TEST_IMAGE, command, mounts);
        let id2 = id.clone();
        with_client(&self.socket, CALL_TIMEOUT, |mut c| async move {
            c.start_container(cri::StartContainerRequest { container_id: id2 }).await?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("StartContainer {id} ({name}): {e}"));
        let pid = container_pid(&self.socket, &id).unwrap_or_else(|e| panic!("pid of container {id}: {e}"));
        super::wait_for_exec(pid, std::time::Instant::now() + std::time::Duration::from_secs(10));
        CriContainer { id, name: name.to_string(), pid, socket: self.socket.clone() }
    }

    /// CreateContainer only; returns the container id (removed with the pod).
    pub fn create_container(&mut self, name: &str, image: &str, command: &[&str]) -> String {
        self.create_container_with_mounts(name, image, command, Vec::new())
    }

    fn create_container_with_mounts(
        &mut self,
        name: &str,
        image: &str,
        command: &[&str],
        mounts: Vec<cri::Mount>,
    ) -> String {
        let s = &self.spec;
        let mut labels = HashMap::new();
        labels.insert("io.kubernetes.container.name".to_string(), name.to_string());
        labels.insert("io.kubernetes.pod.name".to_string(), s.name.clone());
        labels.insert("io.kubernetes.pod.namespace".to_string(), s.namespace.clone());
        labels.insert("io.kubernetes.pod.uid".to_string(), s.uid.clone());
        let mut annotations = HashMap::new();
        annotations.insert("io.kubernetes.container.hash".to_string(), "1a2b3c4d".to_string());
        annotations.insert("io.kubernetes.container.restartCount".to_string(), "0".to_string());
        annotations.insert("io.kubernetes.container.terminationMessagePath".to_string(), "/dev/termination-log".into());
        annotations.insert("io.kubernetes.container.terminationMessagePolicy".to_string(), "File".into());
        annotations.insert("io.kubernetes.pod.terminationGracePeriod".to_string(), "30".into());
        // Like the kubelet: the image id it resolved (ImageStatus/PullImage) goes in
        // `image`, what the pod spec said in `user_specified_image`.
        let image_id = image_status(&self.socket, image)
            .unwrap_or_else(|e| panic!("ImageStatus {image}: {e}"))
            .unwrap_or_else(|| panic!("image {image} not known to the CRI plugin"))
            .id;
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: name.to_string(), attempt: 0 }),
            image: Some(cri::ImageSpec {
                image: image_id,
                user_specified_image: image.to_string(),
                ..Default::default()
            }),
            command: command.iter().map(|a| a.to_string()).collect(),
            working_dir: "/".into(),
            envs: vec![cri::KeyValue { key: "DRIFTWATCH_TEST".into(), value: "1".into() }],
            mounts,
            labels,
            annotations,
            log_path: format!("{name}/0.log"),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(cri::LinuxContainerResources {
                    cpu_period: 100_000,
                    cpu_shares: 2,
                    // BestEffort pods get 1000; restrict_oom_score_adj caps it at ours.
                    oom_score_adj: 1000,
                    ..Default::default()
                }),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces(self.spec.share_pid, self.spec.pod_network)),
                    masked_paths: vec!["/proc/kcore".into(), "/proc/keys".into()],
                    readonly_paths: vec!["/proc/sys".into()],
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: self.sandbox_id.clone(),
            config: Some(config),
            sandbox_config: Some(self.spec.sandbox_config()),
        };
        let id = with_client(&self.socket, CALL_TIMEOUT, |mut c| async move {
            Ok(c.create_container(req).await?.into_inner().container_id)
        })
        .unwrap_or_else(|e| panic!("CreateContainer {name} in pod {}: {e}", self.spec.name));
        self.containers.push(id.clone());
        id
    }

    /// StopContainer + RemoveContainer of one container now (it vanishes from CRI).
    pub fn remove_container(&mut self, id: &str) -> Result<(), String> {
        self.containers.retain(|c| c != id);
        remove_container(&self.socket, id)
    }

    /// Best-effort teardown; returns what failed.
    pub fn teardown(&mut self) -> Vec<String> {
        let mut errs = Vec::new();
        for id in std::mem::take(&mut self.containers) {
            if let Err(e) = remove_container(&self.socket, &id) {
                errs.push(format!("container {id}: {e}"));
            }
        }
        if self.sandbox_id.is_empty() {
            return errs;
        }
        let sid = self.sandbox_id.clone();
        let r = with_client(&self.socket, CALL_TIMEOUT, |mut c| async move {
            c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sid.clone() }).await?;
            c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sid }).await?;
            Ok(())
        });
        if let Err(e) = r {
            errs.push(format!("sandbox {}: {e}", self.sandbox_id));
        }
        self.sandbox_id.clear();
        remove_pod_dirs(&self.spec);
        errs
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let errs = self.teardown();
        if !errs.is_empty() {
            eprintln!("support::cri: warning: teardown of pod {}: {}", self.spec.name, errs.join("; "));
        }
    }
}

fn remove_container(socket: &Path, id: &str) -> Result<(), String> {
    let id = id.to_string();
    with_client(socket, CALL_TIMEOUT, |mut c| async move {
        // Already-stopped or already-removed containers answer NotFound; that is fine.
        let ignore_nf = |r: Result<(), tonic::Status>| match r {
            Err(s) if s.code() != tonic::Code::NotFound => Err(s),
            _ => Ok(()),
        };
        ignore_nf(
            c.stop_container(cri::StopContainerRequest { container_id: id.clone(), timeout: 0 }).await.map(drop),
        )?;
        ignore_nf(c.remove_container(cri::RemoveContainerRequest { container_id: id }).await.map(drop))
    })
}

fn remove_pod_dirs(spec: &PodSpec) {
    let _ = fs::remove_dir_all(spec.log_directory());
    // runc removes the container cgroups but not the pod cgroup it created with mkdir -p.
    // Only the pod's own leaf: kubepods/besteffort may be in use by a parallel test.
    if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
        for e in rd.flatten() {
            for base in [e.path(), e.path().join("unified")] {
                let _ = fs::remove_dir(base.join(spec.cgroup_parent().trim_start_matches('/')));
            }
        }
    }
}

/// A container command whose entrypoint runs what [`CriContainer::run_in_tree`]
/// hands it: processes of the container's own tree (origin `container`), not
/// of an exec session.
pub const TRIGGER_LOOP: &[&str] = &[
    "/bin/sh",
    "-c",
    "while :; do for f in /tmp/run-*; do [ -e \"$f\" ] || continue; c=$(cat \"$f\"); rm -f \"$f\"; sh -c \"$c\"; echo \"$?\" > \"/tmp/done-${f#/tmp/run-}\"; done; sleep 0.05; done",
];

impl CriContainer {
    /// Runs `cmd` (a shell command line) from the container's entrypoint
    /// (started with [`TRIGGER_LOOP`]) and waits for its exit code. The hand-off
    /// itself is an exec session (ExecSync), the command is not.
    pub fn run_in_tree(&self, cmd: &str) -> i32 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let quoted = cmd.replace('\'', "'\\''");
        let hand = format!("echo '{quoted}' > /tmp/.run-{n} && mv /tmp/.run-{n} /tmp/run-{n}");
        let (code, _, err) = self.exec_sync(&["/bin/sh", "-c", &hand]).expect("ExecSync hand-off");
        assert_eq!(code, 0, "hand-off of {cmd:?}: {err}");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            // The shell creates the file before it writes the code (one write):
            // an empty read is "not yet", not a failure.
            if let Ok((0, out, _)) = self.exec_sync(&["/bin/cat", &format!("/tmp/done-{n}")])
                && let Ok(code) = out.trim().parse()
            {
                return code;
            }
            assert!(std::time::Instant::now() < deadline, "{cmd:?} not run by the entrypoint in 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// ExecSync: runs `cmd` in the container through the runtime (kubectl exec without
    /// a tty). Returns (exit code, stdout, stderr).
    pub fn exec_sync(&self, cmd: &[&str]) -> Result<(i32, String, String), String> {
        let req = cri::ExecSyncRequest {
            container_id: self.id.clone(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 60,
        };
        with_client(&self.socket, CALL_TIMEOUT, |mut c| async move {
            let r = c.exec_sync(req).await?.into_inner();
            Ok((
                r.exit_code,
                String::from_utf8_lossy(&r.stdout).into_owned(),
                String::from_utf8_lossy(&r.stderr).into_owned(),
            ))
        })
    }

    /// The container's lines of /proc/<pid>/cgroup.
    pub fn proc_cgroup(&self) -> String {
        fs::read_to_string(format!("/proc/{}/cgroup", self.pid)).unwrap_or_default()
    }
}

/// The init pid from ContainerStatus(verbose) `info["info"].pid` (containerd, CRI-O).
pub fn container_pid(socket: &Path, id: &str) -> Result<u32, String> {
    let id = id.to_string();
    let info = with_client(socket, CALL_TIMEOUT, |mut c| async move {
        Ok(c.container_status(cri::ContainerStatusRequest { container_id: id, verbose: true }).await?.into_inner().info)
    })?;
    let raw = info.get("info").ok_or("no info[\"info\"] in verbose ContainerStatus")?;
    let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| format!("info JSON: {e}"))?;
    v.get("pid")
        .and_then(|p| p.as_u64())
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("no pid in info: {}", raw.chars().take(300).collect::<String>()))
}

/// ImageService.ImageStatus: the image's id (config digest), tags and repo digests.
pub fn image_status(socket: &Path, image: &str) -> Result<Option<cri::Image>, String> {
    let spec = cri::ImageSpec { image: image.to_string(), ..Default::default() };
    with_channel(socket, CALL_TIMEOUT, |ch| async move {
        let req = cri::ImageStatusRequest { image: Some(spec), verbose: false };
        Ok(ImageServiceClient::new(ch).image_status(req).await?.into_inner().image)
    })
}

/// Removes every pod sandbox (and its containers) the runtime on `socket` knows.
pub fn remove_all_pods(socket: &Path) -> Result<usize, String> {
    with_client(socket, CALL_TIMEOUT, |mut c| async move {
        let pods = c.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await?.into_inner().items;
        let n = pods.len();
        for p in pods {
            let _ = c.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: p.id.clone() }).await;
            let _ = c.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: p.id }).await;
        }
        Ok(n)
    })
}

fn random_uuid() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = f.read_exact(&mut b);
    }
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// A separate containerd (CRI plugin on) under `/var/lib/driftwatch-test/<name>` and
/// `/run/driftwatch-test/<name>`, with the test images copied from the shared instance.
/// `stop()`/`start()` restart it; dropping it removes its pods and stops it and its shims.
#[derive(Debug)]
pub struct PrivateContainerd {
    pub name: String,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    root: PathBuf,
    state: PathBuf,
}

impl PrivateContainerd {
    /// Starts it (killing a leftover instance of the same name first) and imports the
    /// test and pause images into its `k8s.io` namespace.
    pub fn start_new(name: &str) -> PrivateContainerd {
        let shared = super::containerd();
        let root = Path::new(super::ROOT_DIR).join(name);
        debug_assert_eq!(root.join("containerd"), Self::plugin_dir_for(name));
        let run = Path::new(super::RUN_DIR).join(name);
        for d in [&root, &run] {
            fs::create_dir_all(d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        }
        let c = PrivateContainerd {
            name: name.to_string(),
            socket: run.join("containerd.sock"),
            config: root.join("config.toml"),
            log: root.join("containerd.log"),
            root: root.join("containerd"),
            state: run.join("containerd"),
        };
        fs::write(&c.config, c.config_toml()).unwrap_or_else(|e| panic!("writing {}: {e}", c.config.display()));
        c.kill_daemon();
        c.start();
        let _ = remove_all_pods(&c.socket);

        // Copy the images from the shared instance (the build is already done there).
        let tar = run.join("images.tar");
        shared.ctr_ok(&["images", "export", tar.to_str().unwrap_or_default(), super::TEST_IMAGE, super::PAUSE_IMAGE]);
        let out = c.ctr(&["images", "import", tar.to_str().unwrap_or_default()]);
        let _ = fs::remove_file(&tar);
        assert!(out.status.success(), "ctr import into {}: {}", c.name, String::from_utf8_lossy(&out.stderr));
        c
    }

    /// The plugin directory (`opt/`, `cni/bin`, `cni/conf`) of the instance `name`:
    /// what is put there before [`PrivateContainerd::start_new`] is there when it starts.
    pub fn plugin_dir_for(name: &str) -> PathBuf {
        Path::new(super::ROOT_DIR).join(name).join("containerd")
    }

    fn config_toml(&self) -> String {
        super::containerd_config::config_toml(
            &format!("tests/support/cri.rs: second private containerd ({})", self.name),
            &self.root,
            &self.state,
            &self.socket,
            &self.root,
        )
    }

    /// `ctr --address <socket> -n k8s.io args...`
    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["--timeout", "60s", "--namespace", super::NAMESPACE])
            .args(args)
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running ctr: {e}"))
    }

    pub fn answers(&self) -> bool {
        self.socket.exists()
            && Command::new("ctr")
                .arg("--address")
                .arg(&self.socket)
                .args(["--timeout", "5s", "--connect-timeout", "3s", "version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    /// Starts the daemon and waits until it answers (30 s at most).
    pub fn start(&self) {
        for d in ["cni/bin", "cni/conf", "opt"] {
            let _ = fs::create_dir_all(self.root.join(d));
        }
        let _ = fs::remove_file(&self.socket);
        let mut child = super::spawn_containerd(
            &self.config,
            &self.log,
            &format!("tests/support/cri.rs: starting containerd {}", self.name),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.answers() {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("containerd {} exited during startup ({st}); log {}", self.name, self.log.display());
            }
            assert!(Instant::now() < deadline, "containerd {} not up in 30s; log {}", self.name, self.log.display());
            sleep(Duration::from_millis(20));
        }
        // Reaped by a detached thread so a stopped daemon does not stay a zombie.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
    }

    /// SIGTERM to the daemon (containers keep running in their shims), waits for it to go.
    pub fn stop(&self) {
        self.kill_daemon();
    }

    fn daemon_pids(&self) -> Vec<u32> {
        let cfg = self.config.display().to_string();
        super::pids_matching(|argv| {
            argv.first().is_some_and(|a| a.ends_with("containerd"))
                && argv.windows(2).any(|w| w[0] == "--config" && w[1] == cfg)
        })
    }

    fn shim_pids(&self) -> Vec<u32> {
        let sock = self.socket.display().to_string();
        super::pids_matching(|argv| {
            argv.first().is_some_and(|a| a.contains("containerd-shim"))
                && argv.windows(2).any(|w| w[0] == "-address" && w[1] == sock)
        })
    }

    fn kill_daemon(&self) {
        let pids = self.daemon_pids();
        for &p in &pids {
            super::signal(p, "TERM");
        }
        if !super::wait_gone(&pids, Duration::from_secs(10)) {
            for &p in &pids {
                super::signal(p, "KILL");
            }
            super::wait_gone(&pids, Duration::from_secs(5));
        }
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        if self.answers() {
            let _ = remove_all_pods(&self.socket);
        }
        self.kill_daemon();
        let shims = self.shim_pids();
        for &p in &shims {
            super::signal(p, "KILL");
        }
        super::wait_gone(&shims, Duration::from_secs(5));
        let _ = fs::remove_file(&self.socket);
        let _ = fs::remove_file(format!("{}.ttrpc", self.socket.display()));
    }
}
