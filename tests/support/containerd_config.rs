//! The one config template of the private containerd instances the tests start: the
//! shared one (`super::containerd()`) and the separately rooted ones
//! ([`super::cri::PrivateContainerd`]). CRI plugin on, overlayfs, runc v2 without
//! systemd cgroups, the test pause image as sandbox image.

use std::path::Path;

/// containerd's config.toml. `written_by` completes the first line ("# Written by
/// {written_by}."); `root` and `state` are containerd's own, `socket` its gRPC
/// address (ttrpc gets `<socket>.ttrpc`), `plugin_dir` holds `opt/`, `cni/bin` and
/// `cni/conf`.
///
/// The shared instance is restarted whenever its config file's text changes: keep
/// the output stable.
pub fn config_toml(written_by: &str, root: &Path, state: &Path, socket: &Path, plugin_dir: &Path) -> String {
    format!(
        r#"# Written by {written_by}.
version = 2
root = "{root}"
state = "{state}"
oom_score = 0

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{plugin_dir}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{plugin_dir}/cni/bin"
    conf_dir = "{plugin_dir}/cni/conf"
"#,
        root = root.display(),
        state = state.display(),
        socket = socket.display(),
        plugin_dir = plugin_dir.display(),
        pause = super::PAUSE_IMAGE,
    )
}
