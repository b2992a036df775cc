#!/usr/bin/env bash
# Run every test: formatting, lints, unit tests, and the privileged end-to-end
# tests on the real kernel with real containers (a private containerd).
# Needs root. Installs missing packages first. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
bash scripts/install-chart-tools.sh

# Alert rules (promtool check + unit tests, lint, amtool routing) and the Helm
# chart (lint, template, strict schema validation, config through the agent's
# parser). The end-to-end alert test (tests/e2e_alert_rules.rs) runs with cargo test.
echo "== alert rules"
bash alerts/tests/test.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --locked --all-targets -- -D warnings

# The e2e tests start a private containerd (tests/support) and leave it
# running for reuse; stop it when this script ends.
trap 'bash scripts/stop-test-containerd.sh >/dev/null 2>&1 || true' EXIT

echo "== Helm chart"
bash tests/chart/test.sh

# The release binary: tests/e2e_shipped_image.rs packs it into the agent's image
# (scripts/build-image.sh: mmdebstrap + umoci, no registry) and runs that image
# as the chart's pod; the 6.1 VM test below boots it too.
echo "== cargo build --release"
cargo build --release --locked --bin driftwatch

echo "== cargo test (unit + privileged end-to-end)"
export DRIFTWATCH_PRIVILEGED_TESTS=1
cargo test --locked --all-targets 2>&1

# The probe on the kernel most clusters run (Debian 12's 6.1, under qemu), with
# memory delegated to the container's cgroup (as on a node) and without.
echo "== eBPF sensor on Linux 6.1 (qemu)"
bash tests/vm/run-6.1.sh
DW_VM_CGROUP_CONTROLLERS= bash tests/vm/run-6.1.sh
