//! End to end (issue 16): configuration changed under a running pod.
//!
//! - A tmpfs "secret" volume laid out exactly as the kubelet's atomic writer
//!   does (timestamped payload directory, `..data` symlink, top-level links
//!   through it) is bind-mounted read-only into a CRI container; its initial
//!   population is no finding; swapping `..data` while the container runs is
//!   one `mounted_config_changed` finding naming the files with their hashes.
//!   A write attempt from inside fails (read-only); on a writable config
//!   volume the write is a critical file finding.
//! - `UpdateContainerResources` through CRI on a running container is one
//!   `runtime_parameters_changed` finding with before/after.
mod support;

use k8s_cri::v1 as cri;
use std::{
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};
use support::{
    agent::Agent,
    cri::{Pod, PodSpec, with_client},
};

fn endpoint() -> String {
    format!("unix://{}", support::containerd().address.display())
}

/// An agent in node-only mode that reads the runtime every second and logs
/// when it took a container's configuration baseline.
fn agent(dir: &Path) -> Agent {
    let cfg = dir.join("c.yaml");
    std::fs::write(&cfg, "kubernetes:\n  enabled: false\nrules:\n  config:\n    refresh_interval_s: 1\n").unwrap();
    Agent::start_with_env(
        &["--runtime-endpoint", &endpoint(), "--config", cfg.to_str().unwrap()],
        &[("RUST_LOG", "info,driftwatch::pipeline::config_watch=debug")],
    )
}

/// Waits (a deadline, not a sleep) until the agent has the baseline of `id`.
fn wait_baseline(agent: &Agent, id: &str) {
    let t0 = Instant::now();
    while !agent.stderr().lines().any(|l| l.contains("configuration baseline taken") && l.contains(id)) {
        assert!(t0.elapsed() < Duration::from_secs(60), "no baseline of {id}:\n{}", agent.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes payload `stamp` of `dir` the way the kubelet's atomic writer does.
fn atomic_write(dir: &Path, stamp: &str, files: &[(&str, &str)]) {
    let old = std::fs::read_link(dir.join("..data")).ok();
    for (name, content) in files {
        let p = dir.join(stamp).join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let _ = std::fs::remove_file(dir.join("..data_tmp"));
    symlink(stamp, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for (name, _) in files {
        let top = name.split('/').next().unwrap();
        if dir.join(top).symlink_metadata().is_err() {
            symlink(format!("..data/{top}"), dir.join(top)).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

/// A kubelet-style volume directory on its own tmpfs; unmounted on drop.
struct Volume(PathBuf);

impl Volume {
    fn tmpfs(root: &Path, plugin: &str, name: &str) -> Volume {
        let dir = root.join("pods/6f1c0a7e-16aa-4d2b-9c1e-0000000000aa/volumes").join(plugin).join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"]).arg(&dir).status().unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Volume(dir)
    }

    fn mount(&self, at: &str, readonly: bool) -> cri::Mount {
        cri::Mount {
            container_path: at.into(),
            host_path: self.0.display().to_string(),
            readonly,
            ..Default::default()
        }
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn sha256(s: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_swapped_secret_volume_is_one_finding_and_a_write_from_inside_is_critical() {
    if !support::privileged() {
        return;
    }
    let root = std::env::temp_dir().join(format!("driftwatch-e2e-mounts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let secret = Volume::tmpfs(&root, "kubernetes.io~secret", "db-creds");
    atomic_write(&secret.0, "..2026_12_02_08_00_00.000000001", &[("username", "app"), ("password", "one")]);
    // A ConfigMap volume mounted writable (misconfigured): a write from inside succeeds.
    let cm = Volume::tmpfs(&root, "kubernetes.io~configmap", "settings");
    atomic_write(&cm.0, "..2026_12_02_08_00_00.000000002", &[("app.yaml", "level: info\n")]);

    let agent = agent(&root);
    let spec = PodSpec::new("billing-6d5c4b3a2f-m0unt", "billing").namespace("payments");
    let mut pod = Pod::run(&support::containerd().address, spec);
    let mounts = vec![secret.mount("/etc/creds", true), cm.mount("/etc/app", false)];
    let api = pod.start_container_with_mounts("api", &["/bin/sleep", "300"], mounts);
    wait_baseline(&agent, &api.id);

    // The initial population was no finding.
    let early: Vec<_> =
        agent.findings_of(&api.id).into_iter().filter(|f| f["rule"] == "mounted_config_changed").collect();
    assert!(early.is_empty(), "initial population reported: {early:#?}");

    // A rotation: password changed, username kept, token added.
    atomic_write(
        &secret.0,
        "..2026_12_02_08_10_00.000000003",
        &[("username", "app"), ("password", "two"), ("token", "t")],
    );
    let f = agent.wait_for("mounted_config_changed", |f| {
        f["container.id"] == api.id.as_str() && f["rule"] == "mounted_config_changed"
    });
    assert_eq!(f["kind"], "config");
    assert_eq!(f["severity"], "warning");
    assert_eq!(f["playbook_step"], "validate");
    assert_eq!(f["driftwatch.volume.kind"], "secret");
    assert_eq!(f["driftwatch.volume.name"], "db-creds");
    assert_eq!(f["driftwatch.volume.object"], "db-creds", "node-only: the volume's name");
    assert_eq!(f["driftwatch.volume.mount_path"], "/etc/creds");
    assert_eq!(f["driftwatch.volume.files_added"], serde_json::json!(["token"]));
    assert_eq!(f["driftwatch.volume.files_changed"], serde_json::json!(["password"]));
    assert!(f.get("driftwatch.volume.files_removed").is_none(), "{f:#}");
    assert_eq!(f["driftwatch.volume.sha256_before"]["password"], sha256("one").as_str());
    assert_eq!(f["driftwatch.volume.sha256_after"]["password"], sha256("two").as_str());
    assert_eq!(f["k8s.pod.name"], "billing-6d5c4b3a2f-m0unt");
    assert_eq!(f["k8s.container.name"], "api");
    let text = f.to_string();
    assert!(!text.contains("\"two\"") && !text.contains("\"one\""), "content leaked: {f:#}");

    // A write attempt from inside the read-only secret mount fails; the volume is intact.
    let (code, _, err) = api.exec_sync(&["/bin/sh", "-c", "echo evil > /etc/creds/password"]).expect("ExecSync");
    assert_ne!(code, 0, "read-only mount written: {err}");
    assert_eq!(std::fs::read_to_string(secret.0.join("password")).unwrap(), "two");
    // On the writable ConfigMap mount, the write is a critical file finding.
    let (code, _, err) =
        api.exec_sync(&["/bin/sh", "-c", "echo 'level: debug' > /etc/app/app.yaml"]).expect("ExecSync");
    assert_eq!(code, 0, "{err}");
    let w = agent.wait_for("file finding on the config volume", |f| {
        f["container.id"] == api.id.as_str()
            && f["kind"] == "file"
            && f["file.path"].as_str().unwrap_or("").starts_with("/etc/app/")
    });
    assert_eq!(w["rule"], "file_written", "{w:#}");
    assert_eq!(w["severity"], "critical", "{w:#}");
    assert_eq!(w["driftwatch.file.location"], "volume", "{w:#}");
    assert!(w["message"].as_str().unwrap_or("").contains("Secret/ConfigMap"), "{w:#}");

    // Exactly one swap finding, after more refreshes (the write inside is no swap).
    std::thread::sleep(Duration::from_secs(3));
    let swaps: Vec<_> =
        agent.findings_of(&api.id).into_iter().filter(|f| f["rule"] == "mounted_config_changed").collect();
    assert_eq!(swaps.len(), 1, "{swaps:#?}");
    drop(pod);
    drop((secret, cm));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn update_container_resources_is_a_runtime_parameters_finding() {
    if !support::privileged() {
        return;
    }
    let root = std::env::temp_dir().join(format!("driftwatch-e2e-resize-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let agent = agent(&root);
    let spec = PodSpec::new("search-7c6b5a4d3e-r3s1z", "search").namespace("shop");
    let sock = support::containerd().address.clone();
    let mut pod = Pod::run(&sock, spec);
    let api = pod.start_container("api", &["/bin/sleep", "300"]);
    wait_baseline(&agent, &api.id);
    assert!(
        agent.findings_of(&api.id).iter().all(|f| f["rule"] != "runtime_parameters_changed"),
        "the baseline is no finding"
    );

    // An in-place resize (what the kubelet does for a VPA / resize request).
    let id = api.id.clone();
    with_client(&sock, Duration::from_secs(30), |mut c| async move {
        let linux = cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 256 << 20,
            oom_score_adj: 1000,
            ..Default::default()
        };
        let req = cri::UpdateContainerResourcesRequest { container_id: id, linux: Some(linux), ..Default::default() };
        c.update_container_resources(req).await?;
        Ok(())
    })
    .expect("UpdateContainerResources");
    let f = agent.wait_for("runtime_parameters_changed", |f| {
        f["container.id"] == api.id.as_str() && f["rule"] == "runtime_parameters_changed"
    });
    assert_eq!(f["kind"], "config");
    assert_eq!(f["severity"], "info");
    assert_eq!(f["playbook_step"], "validate");
    let changed: Vec<&str> =
        f["driftwatch.runtime.changed"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    for k in ["cpu_quota", "cpu_shares", "memory_limit_bytes"] {
        assert!(changed.contains(&k), "{k} not in {changed:?}");
    }
    assert!(!changed.contains(&"cpu_period") && !changed.contains(&"image_ref"), "{changed:?}");
    assert_eq!(f["driftwatch.runtime.before"]["cpu_quota"], "0");
    assert_eq!(f["driftwatch.runtime.after"]["cpu_quota"], "50000");
    assert_eq!(f["driftwatch.runtime.before"]["cpu_shares"], "2");
    assert_eq!(f["driftwatch.runtime.after"]["cpu_shares"], "512");
    assert_eq!(f["driftwatch.runtime.after"]["memory_limit_bytes"], (256u64 << 20).to_string());
    assert_eq!(f["k8s.namespace.name"], "shop");

    // Unchanged since: one finding after more refreshes.
    std::thread::sleep(Duration::from_secs(3));
    let n = agent.findings_of(&api.id).iter().filter(|f| f["rule"] == "runtime_parameters_changed").count();
    assert_eq!(n, 1);
    drop(pod);
    let _ = std::fs::remove_dir_all(&root);
}
