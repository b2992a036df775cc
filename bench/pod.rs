//! The overhead benchmark's pod (bench/overhead.sh): a pod and one container
//! made through CRI the way a kubelet makes them, so the agent finds the
//! container's metadata (pod, namespace, labels, image) as on a node, and its
//! findings carry it.
//!
//!   bench-pod up <socket> <image> <uid>    prints "<sandbox id> <container id> <init pid>"
//!   bench-pod down <socket> <sandbox id>   stops and removes the pod and its containers
//!
//! The pod: namespace `bench`, a Deployment's pod name and labels, host
//! network, cgroup parent `/kubepods/besteffort/pod<uid>`; the container runs
//! `/bin/sleep 3600` with `PATH` as the bench's storms set it (so their execs
//! are no environment drift).

use driftwatch::enrich::cri::connect_unix;
use k8s_cri::v1::{self as cri, runtime_service_client::RuntimeServiceClient};
use std::{collections::HashMap, path::Path, process::ExitCode};

const NAMESPACE: &str = "bench";
const POD: &str = "storm-7d9f8b6c5d-x2k4q";
const CONTAINER: &str = "storm";

fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn sandbox_config(uid: &str) -> cri::PodSandboxConfig {
    // hostNetwork: true; a pid namespace per container, the pod's ipc.
    use cri::NamespaceMode::{Container, Node, Pod};
    let (network, pid, ipc) = (Node as i32, Container as i32, Pod as i32);
    let namespace_options = Some(cri::NamespaceOption { network, pid, ipc, ..Default::default() });
    let labels = map(&[
        ("app", "storm"),
        ("pod-template-hash", "7d9f8b6c5d"),
        ("io.kubernetes.pod.name", POD),
        ("io.kubernetes.pod.namespace", NAMESPACE),
        ("io.kubernetes.pod.uid", uid),
    ]);
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: POD.into(),
            uid: uid.into(),
            namespace: NAMESPACE.into(),
            attempt: 0,
        }),
        log_directory: format!("/var/log/pods/{NAMESPACE}_{POD}_{uid}"),
        labels,
        annotations: map(&[("kubernetes.io/config.source", "api")]),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("/kubepods/besteffort/pod{uid}"),
            security_context: Some(cri::LinuxSandboxSecurityContext { namespace_options, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn up(socket: &Path, image: &str, uid: &str) -> Result<String, String> {
    let ch = connect_unix(socket).await.map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut rt = RuntimeServiceClient::new(ch.clone());
    let mut images = cri::image_service_client::ImageServiceClient::new(ch);
    let status = images
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec { image: image.into(), ..Default::default() }),
            verbose: false,
        })
        .await
        .map_err(|e| format!("ImageStatus {image}: {e}"))?;
    let image_id = status.into_inner().image.ok_or(format!("image {image} not known to the CRI plugin"))?.id;
    let config = sandbox_config(uid);
    let _ = std::fs::create_dir_all(&config.log_directory);
    let sandbox = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await
        .map_err(|e| format!("RunPodSandbox: {e}"))?
        .into_inner()
        .pod_sandbox_id;
    let container = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: CONTAINER.into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: image_id, user_specified_image: image.into(), ..Default::default() }),
        command: vec!["/bin/sleep".into(), "3600".into()],
        working_dir: "/".into(),
        envs: vec![cri::KeyValue { key: "PATH".into(), value: "/usr/sbin:/usr/bin:/sbin:/bin".into() }],
        labels: map(&[
            ("io.kubernetes.container.name", CONTAINER),
            ("io.kubernetes.pod.name", POD),
            ("io.kubernetes.pod.namespace", NAMESPACE),
            ("io.kubernetes.pod.uid", uid),
        ]),
        log_path: format!("{CONTAINER}/0.log"),
        linux: Some(cri::LinuxContainerConfig {
            security_context: config.linux.as_ref().and_then(|l| l.security_context.as_ref()).map(|s| {
                cri::LinuxContainerSecurityContext {
                    namespace_options: s.namespace_options.clone(),
                    ..Default::default()
                }
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.clone(),
            config: Some(container),
            sandbox_config: Some(config),
        })
        .await
        .map_err(|e| format!("CreateContainer: {e}"))?
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() })
        .await
        .map_err(|e| format!("StartContainer {id}: {e}"))?;
    let info = rt
        .container_status(cri::ContainerStatusRequest { container_id: id.clone(), verbose: true })
        .await
        .map_err(|e| format!("ContainerStatus {id}: {e}"))?
        .into_inner()
        .info;
    let pid = info
        .get("info")
        .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
        .and_then(|v| v.get("pid")?.as_u64())
        .ok_or(format!("no pid in the verbose ContainerStatus of {id}"))?;
    Ok(format!("{sandbox} {id} {pid}"))
}

async fn down(socket: &Path, sandbox: &str) -> Result<String, String> {
    let ch = connect_unix(socket).await.map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut rt = RuntimeServiceClient::new(ch);
    let id = sandbox.to_string();
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id.clone() })
        .await
        .map_err(|e| format!("StopPodSandbox {id}: {e}"))?;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id.clone() })
        .await
        .map_err(|e| format!("RemovePodSandbox {id}: {e}"))?;
    Ok(String::new())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let res = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["up", socket, image, uid] => rt.block_on(up(Path::new(socket), image, uid)),
        ["down", socket, sandbox] => rt.block_on(down(Path::new(socket), sandbox)),
        _ => Err("usage: bench-pod up <socket> <image> <uid> | down <socket> <sandbox id>".into()),
    };
    match res {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench-pod: {e}");
            ExitCode::FAILURE
        }
    }
}
