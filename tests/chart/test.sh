#!/usr/bin/env bash
# Helm chart tests (run by scripts/test.sh; needs scripts/install-chart-tools.sh):
#   helm lint --strict        default (least privilege), privileged, all-features,
#                             no-state (baselines in memory), files-off (no file sensor),
#                             network-off (file and mapping sensors: tracefs still mounted) and
#                             no-syscall-sensors (network, file and mapping sensors off: no tracefs), health-off (probes on the
#                             metrics port), quarantine-on (least privilege and privileged),
#                             investigate-off (no admin socket, no evidence) and respond-on
#                             (the responder, ci/respond-values.yaml) values
#   helm template             the same, plus the schema rejecting bad values and contradictory
#                             values (config: against response.*) failing the rendering
#   kubernetes-validate       --strict against Kubernetes 1.33 (the kubectl of the layer):
#                             every core resource; a broken manifest must fail (proves strictness)
#   check_rendered.py         mounts (no host /proc; tracefs only with a syscall sensor on;
#                             the baselines' state dir), sensor.network / sensor.files,
#                             the probes on their own port (health_addr) and not in the Service,
#                             privileges, RBAC and kubernetes.enabled gating, ServiceMonitor / PrometheusRule
#                             (CRD schema subset), the PrometheusRule equals the rules file,
#                             the dashboards ConfigMap equals dashboards/, redaction.* reaches the config,
#                             response.*: admin_addr and response.* in the config, each feature's
#                             mounts only while it is on, NET_ADMIN only with quarantine,
#   check_respond.py          respond.* (respond-on, all-features): nothing when off; exact RBAC;
#                             a non-root, capability-less, read-only Deployment; the webhook token
#                             Secret at the config's token_file; Service/NetworkPolicy/ServiceMonitor
#                             selecting only the responder (hook: the binary's config check), and
#   driftwatch check-config   the rendered config ConfigMap loads in the real agent's parser
#   gen_config_schema.py      values.schema.json's config: is current with src/default-config.yaml;
#                             bad config: (unknown key, wrong type) rejected, the full default accepted
#   readyz_hook.py            the helm test hook's script against ready and unready stand-in agents
#   check_runbooks.py         docs/runbooks: Meaning/Impact/Diagnosis/Mitigation; every value they name exists
#   podmonitor                a PodMonitor instead of the ServiceMonitor; all-features: ServiceMonitor
#                             scheme/tlsConfig/targetLabels/namespace, podSecurityContext, extraVolumes,
#                             the PrometheusRule with per-alert values (recomputed from the rules file)
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/install-chart-tools.sh
TOOLS=${DRIFTWATCH_TOOLS:-/opt/driftwatch-tools}
HELM="$TOOLS/bin/helm"
KV="$TOOLS/venv/bin/kubernetes-validate"
PY="$TOOLS/venv/bin/python"
K8S_VERSION=1.33.0
chart=helm/driftwatch
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cargo build --locked --quiet --bin driftwatch
agent=target/debug/driftwatch

declare -A sets=(
  [default]=""
  [privileged]="-f $chart/ci/privileged-values.yaml"
  [all-features]="-f $chart/ci/all-features-values.yaml"
  [no-state]="--set hostPaths.state="
  [files-off]="--set sensors.files=false"
  [network-off]="--set sensors.network=false"
  [no-syscall-sensors]="--set sensors.network=false --set sensors.files=false --set sensors.mappings=false"
  [health-off]="--set health.enabled=false"
  [alertmanager-basic-auth]="--set alertmanager.url=https://alertmanager.monitoring:9093 --set alertmanager.basicAuth.username=driftwatch --set alertmanager.basicAuth.passwordSecret.name=am-basic --set alertmanager.tls.serverName=alertmanager.monitoring.svc"
  [quarantine-on]="--set response.quarantine.enabled=true --set response.quarantine.allow={10.96.0.10/32:53} --set response.quarantine.modes={protect}"
  [quarantine-privileged]="-f $chart/ci/privileged-values.yaml --set response.quarantine.enabled=true"
  [investigate-off]="--set response.admin.enabled=false --set response.capture.enabled=false"
  [respond-on]="-f $chart/ci/respond-values.yaml"
  [podmonitor]="--set podMonitor.enabled=true --set podMonitor.namespace=monitoring --set podMonitor.podTargetLabels={app.kubernetes.io/instance}"
)
for name in default privileged all-features no-state files-off network-off no-syscall-sensors health-off alertmanager-basic-auth \
    quarantine-on quarantine-privileged investigate-off respond-on podmonitor; do
  # shellcheck disable=SC2086
  "$HELM" lint --strict --quiet "$chart" ${sets[$name]} >/dev/null
  # shellcheck disable=SC2086
  "$HELM" template driftwatch "$chart" --namespace driftwatch ${sets[$name]} > "$out/$name.yaml"
  "$KV" --strict --quiet -k "$K8S_VERSION" "$out/$name.yaml" 2>&1 | grep -v "Couldn't find schema for kind \(PrometheusRule\|ServiceMonitor\|PodMonitor\)" || true
  if ! "$KV" --strict --quiet -k "$K8S_VERSION" "$out/$name.yaml" >/dev/null 2>&1; then
    echo "chart: kubernetes-validate --strict failed for $name values" >&2; exit 1
  fi
  echo "chart: $name: helm lint, helm template, kubernetes-validate --strict ($K8S_VERSION) OK"
done

# Strictness is real: an unknown field and a wrong type must be rejected.
sed 's/^\( *\)hostPID: true/&\n\1hostPIDD: true/' "$out/default.yaml" > "$out/broken.yaml"
sed 's/containerPort: 8789/containerPort: "8789"/' "$out/default.yaml" > "$out/broken2.yaml"
for broken in broken broken2; do
  cmp -s "$out/default.yaml" "$out/$broken.yaml" && { echo "chart: $broken.yaml: sed changed nothing" >&2; exit 1; }
  if "$KV" --strict --quiet -k "$K8S_VERSION" "$out/$broken.yaml" >/dev/null 2>&1; then
    echo "chart: kubernetes-validate accepted a broken DaemonSet ($broken)" >&2; exit 1
  fi
done

# The values schema (and the chart's own check of health.port) rejects what the agent cannot use.
# Secrets never inline: there is no value for a token, password or header secret, only Secret names.
for bad in securityContext.mode=root metrics.port=0 bogus=1 otlp.protocol=udp hostPaths.state=var/lib hostPaths.proc=/proc hostPaths.bpffs=/sys/fs/bpf hostPaths.btf=sys/kernel/btf kubernetesApi.enabled=auto sensors.network=yes sensors.mappings=yes sensors.tracefs=false \
    health.port=8789 health.port=0 health.enabled=yes health.path=/healthz \
    'alertmanager.urls={ftp://am:9093}' alertmanager.bearerTokenSecret.token=abc alertmanager.basicAuth.password=pw \
    alertmanager.headers.Authorization=Bearer otlp.headers.authorization=x otlp.tls.ca=pem alertmanager.tls.caSecret=Bad_Name \
    redaction.enabled=yes redaction.builtinPatterns.password_flags=false 'redaction.flags={password}' \
    'redaction.patterns[0].name=Bad' 'redaction.patterns[0].regx=x' redaction.marker=x; do
  if "$HELM" template driftwatch "$chart" --set "$bad" >/dev/null 2>&1; then
    echo "chart: values.schema.json accepted --set $bad" >&2; exit 1
  fi
done
# Monitoring, alert rules, pod extras and the test hook (issue 17).
for bad in podMonitor.scheme=ftp serviceMonitor.scheme=tcp 'serviceMonitor.targetLabels={bad-label}' serviceMonitor.namespace=Bad_NS \
    serviceMonitor.tlsConfig=x podMonitor.bogus=1 prometheusRule.nodeLabel=bad-label prometheusRule.clusterLabel= \
    prometheusRule.alerts.NoSuchAlert.enabled=false prometheusRule.alerts.DriftwatchAgentDown.enabled=no \
    prometheusRule.alerts.DriftwatchAgentDown.severity=info prometheusRule.alerts.DriftwatchAgentDown.for=soon \
    prometheusRule.additionalLabels.bad-name=x prometheusRule.kubeStateMetricsSelector= runbookBaseUrl=ftp://runbooks \
    podSecurityContext=root 'extraVolumeMounts[0].name=x' 'extraVolumes[0].hostPath.path=/x' test.timeoutSeconds=0 test.image.repository= test.bogus=1; do
  if "$HELM" template driftwatch "$chart" --set "$bad" >/dev/null 2>&1; then
    echo "chart: values.schema.json accepted --set $bad" >&2; exit 1
  fi
done
echo "chart: values.schema.json rejects bad values"
# config: is checked against the schema generated from the agent's defaults (an unknown key,
# a wrong type), which must be current; every default the agent ships is accepted.
"$PY" tests/chart/gen_config_schema.py --check
for bad in config.bogus=1 config.sensor.ringbuf_bytes=big config.rules.shell.enabled=yes config.otlp.protocol=udp \
    config.kubernetes.enabled=maybe config.rules.network.allowed_ports=53 config.policy.default_mode.x=1 config.alertmanager.tls.ca=x; do
  if err=$("$HELM" template driftwatch "$chart" --set "$bad" 2>&1 >/dev/null); then
    echo "chart: values.schema.json accepted --set $bad" >&2; exit 1
  fi
  grep -q "/config" <<<"$err" || { echo "chart: --set $bad rejected without naming /config: $err" >&2; exit 1; }
done
"$agent" default-config | "$PY" -c 'import sys, yaml; yaml.safe_dump({"config": yaml.safe_load(sys.stdin)}, sys.stdout)' > "$out/full-config-values.yaml"
"$HELM" template driftwatch "$chart" -f "$out/full-config-values.yaml" >/dev/null \
  || { echo "chart: values.schema.json rejects the agent's own default config as config:" >&2; exit 1; }
echo "chart: a bad config: is rejected by the schema; the agent's full default config is accepted"
# The helm test hook's script against stand-in agents (one ready, one not).
"$PY" tests/chart/readyz_hook.py
# Runbooks: one structure, and every chart value or config key they name exists.
"$PY" tests/chart/check_runbooks.py
# Contradictions the schema cannot express fail the rendering with a clear message.
for bad in "--set alertmanager.url=http://a:9093 --set alertmanager.urls={http://b:9093}" "--set alertmanager.basicAuth.username=dw" \
    "--set serviceMonitor.enabled=true --set podMonitor.enabled=true" "--set serviceMonitor.enabled=true --set service.enabled=false"; do
  # shellcheck disable=SC2086
  if "$HELM" template driftwatch "$chart" $bad >/dev/null 2>&1; then
    echo "chart: rendered contradictory values: $bad" >&2; exit 1
  fi
done
echo "chart: contradictory alertmanager and monitor values fail to render"

# response.*: the schema rejects what the agent cannot use; and config: may not ask for a
# mount or a privilege the values did not grant (nor may two mounts share a path).
for bad in response.capture.hostPath=var/lib/evidence response.capture.hostPath=/var/lib/evidence/ response.capture.hostPath=/var/../etc \
    'response.capture.onSteps={isolat}' response.capture.windowSeconds=0 response.capture.maxBundleBytes=1.5 response.capture.dir=/x \
    'response.quarantine.onSteps={isolate,isolate}' 'response.quarantine.modes={block}' 'response.quarantine.allow={dns.local:53}' \
    response.quarantine.enabled=yes response.quarantine.pinDir=/x response.quarantine.bpffs=sys/fs/bpf response.quarantine.cgroupRoot= \
    response.admin.socketDir=/run/driftwatch/ response.admin.addr=127.0.0.1:8791 "response.admin.socketDir=/$(printf 'a%.0s' {1..100})"; do
  if "$HELM" template driftwatch "$chart" --set "$bad" >/dev/null 2>&1; then
    echo "chart: values.schema.json accepted --set $bad" >&2; exit 1
  fi
done
if "$HELM" template driftwatch "$chart" --set-json 'response={"capture":{"onSteps":[]}}' >/dev/null 2>&1; then
  echo "chart: values.schema.json accepted response.capture.onSteps [] (enabled: false turns capture off)" >&2; exit 1
fi
for bad in "--set response.capture.retention.maxBytes=65536" \
    "--set response.capture.hostPath=/var/lib/driftwatch" "--set response.admin.socketDir=/run/containerd" \
    "--set config.admin_addr=unix:///var/run/driftwatch.sock" "--set response.admin.enabled=false --set config.admin_addr=unix:///run/driftwatch/admin.sock" \
    "--set config.response.capture.dir=/tmp/evidence" "--set response.capture.enabled=false --set config.response.capture.on_steps={isolate}" \
    "--set config.response.quarantine.on_steps={isolate}" "--set response.quarantine.enabled=true --set config.response.quarantine.pin_dir=/var/lib/q"; do
  # shellcheck disable=SC2086
  if "$HELM" template driftwatch "$chart" $bad >/dev/null 2>&1; then
    echo "chart: rendered contradictory values: $bad" >&2; exit 1
  fi
done
# config: still wins where no mount or privilege depends on it.
"$HELM" template driftwatch "$chart" --show-only templates/configmap.yaml --set config.response.capture.window_s=60 \
  --set config.response.quarantine.allow={10.0.0.0/8:53} | grep -q 'window_s: 60' \
  || { echo "chart: config.response.* does not override the rendered keys" >&2; exit 1; }
echo "chart: response values are checked by the schema, and config: contradicting them fails to render"

# The policy is reloaded in place: changing it must not roll the DaemonSet (the
# pods' config checksum stays), while changing anything else must; and it is
# rendered into the config the agent loads.
checksum() { "$HELM" template driftwatch "$chart" "$@" | grep -m1 'checksum/config:'; }
base=$(checksum)
pol=$(checksum --set 'policy.approvals[0].name=ci' --set 'policy.approvals[0].reason=builds' \
  --set 'policy.approvals[0].match.namespace=ci' --set policy.defaultMode=learn)
sensor=$(checksum --set sensors.files=false)
quarantine=$(checksum --set response.quarantine.enabled=true)
[ -n "$base" ] && [ "$base" = "$pol" ] || { echo "chart: a policy change rolls the DaemonSet ($base vs $pol)" >&2; exit 1; }
[ "$base" != "$sensor" ] || { echo "chart: a sensor change does not change the config checksum" >&2; exit 1; }
[ "$base" != "$quarantine" ] || { echo "chart: turning quarantine on does not change the config checksum" >&2; exit 1; }
"$HELM" template driftwatch "$chart" --show-only templates/configmap.yaml --set 'policy.approvals[0].name=ci' \
  --set 'policy.approvals[0].reason=builds' --set 'policy.approvals[0].match.namespace=ci' --set policy.defaultMode=learn \
  | "$PY" -c 'import sys, yaml; d = yaml.safe_load(sys.stdin); print(d["data"]["config.yaml"])' > "$out/policy-config.yaml"
"$agent" check-config --no-file-checks "$out/policy-config.yaml" >/dev/null
grep -q 'default_mode: learn' "$out/policy-config.yaml" && grep -q 'name: ci' "$out/policy-config.yaml" \
  || { echo "chart: policy values not in the rendered config" >&2; exit 1; }
for bad in policy.defaultMode=block 'policy.approvals[0].name=x' policy.emitApproved=yes 'policy.modes[0].mode=learn'; do
  if "$HELM" template driftwatch "$chart" --set "$bad" >/dev/null 2>&1; then
    echo "chart: values.schema.json accepted --set $bad" >&2; exit 1
  fi
done
echo "chart: policy values render into the config, are checked by the schema, and do not roll the DaemonSet"

# respond.* (the responder, `driftwatch respond`): off renders nothing of it (checked per
# values set by check_respond.py); the schema rejects what it cannot use; on without a
# webhook token Secret fails to render (the webhook is never open).
respond_on="--set respond.enabled=true --set respond.webhook.tokenSecret.name=am-respond"
for bad in respond.enabled=yes respond.replicas=0 respond.replicas=3 respond.port=80 respond.dryRun=no \
    'respond.steps={isolat}' 'respond.steps={isolate,isolate}' 'respond.steps={remediate}' respond.allowDns=1 respond.evict.allowUnowned=yes \
    'respond.protectedNamespaces={Kube_System}' respond.dedupWindowSeconds=-1 respond.rateLimits.global.max=0 \
    respond.rateLimits.perNamespace.windowSeconds=0 respond.rateLimits.burst=1 'respond.namespaces.Bad_NS.dryRun=true' \
    'respond.namespaces.shop.steps={kill}' respond.namespaces.shop.mode=protect respond.webhook.token=abc \
    respond.webhook.tokenSecret.name=Bad_Name respond.webhook.maxBodyBytes=10 respond.networkPolicy.apiServerCidr=10.0.0.1 \
    respond.networkPolicy.apiServerCidr=kubernetes.default 'respond.networkPolicy.apiServerPorts={}' respond.bogus=1 \
    respond.webhook.tls.secret=Bad_Name respond.webhook.tls.cert=pem \
    respond.nodeAgent.enabled=yes respond.nodeAgent.port=80 respond.nodeAgent.timeoutSeconds=0 respond.nodeAgent.tokenSecret.name=Bad_Name; do
  # shellcheck disable=SC2086
  if "$HELM" template driftwatch "$chart" $respond_on --set "$bad" >/dev/null 2>&1; then
    echo "chart: values.schema.json accepted --set $bad" >&2; exit 1
  fi
done
if "$HELM" template driftwatch "$chart" --set-json 'respond.namespaces={"shop":{}}' $respond_on >/dev/null 2>&1; then
  echo "chart: values.schema.json accepted an empty respond.namespaces override" >&2; exit 1
fi
if err=$("$HELM" template driftwatch "$chart" --set respond.enabled=true 2>&1 >/dev/null); then
  echo "chart: respond.enabled rendered without respond.webhook.tokenSecret.name" >&2; exit 1
fi
grep -q 'respond.webhook.tokenSecret.name' <<<"$err" || { echo "chart: unclear error without a webhook token: $err" >&2; exit 1; }
# shellcheck disable=SC2086
if err=$("$HELM" template driftwatch "$chart" $respond_on --set respond.nodeAgent.enabled=true 2>&1 >/dev/null); then
  echo "chart: respond.nodeAgent.enabled rendered without respond.nodeAgent.tokenSecret.name" >&2; exit 1
fi
grep -q 'respond.nodeAgent.tokenSecret.name' <<<"$err" || { echo "chart: unclear error without an admin token: $err" >&2; exit 1; }
# shellcheck disable=SC2086
"$HELM" template driftwatch "$chart" $respond_on >/dev/null
# shellcheck disable=SC2086
[ "$(checksum $respond_on)" = "$base" ] || { echo "chart: turning the responder on rolls the agent's DaemonSet" >&2; exit 1; }
# respond.webhook.tls: HTTPS probes and scrape, the certificate Secrets at the config's files,
# mTLS alone authenticates (no token), a client CA without a server certificate fails to render.
respond_tls="-f $chart/ci/respond-values.yaml --set respond.webhook.tokenSecret.name= --set respond.webhook.tls.secret=respond-tls \
  --set respond.webhook.tls.clientCaSecret=am-client-ca --set serviceMonitor.enabled=true"
# shellcheck disable=SC2086
"$HELM" template driftwatch "$chart" --namespace driftwatch $respond_tls > "$out/respond-tls.yaml"
"$KV" --strict --quiet -k "$K8S_VERSION" "$out/respond-tls.yaml" >/dev/null 2>&1 \
  || { echo "chart: kubernetes-validate --strict failed for respond.webhook.tls" >&2; exit 1; }
"$PY" - "$out/respond-tls.yaml" "$agent" <<'PYEOF' || exit 1
import subprocess, sys, tempfile, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-respond"))
cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-respond"))
sm = next(d for d in docs if d["kind"] == "ServiceMonitor" and d["metadata"]["name"].endswith("-respond"))
cfg = yaml.safe_load(cm["data"]["config.yaml"])["respond"]["webhook"]
c = dep["spec"]["template"]["spec"]["containers"][0]
vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
files = {m["mountPath"] + "/" + i["path"]: (vols[m["name"]]["secret"]["secretName"], i["key"])
         for m in c["volumeMounts"] if "secret" in vols[m["name"]] for i in vols[m["name"]]["secret"]["items"]}
want = {"/var/run/secrets/driftwatch/respond-tls/tls.crt": ("respond-tls", "tls.crt"), "/var/run/secrets/driftwatch/respond-tls/tls.key": ("respond-tls", "tls.key"),
        "/var/run/secrets/driftwatch/respond-client-ca/ca.crt": ("am-client-ca", "ca.crt"), "/var/run/secrets/driftwatch/admin-token/token": ("driftwatch-admin-token", "admin")}
problems = []
if files != want: problems.append(f"secret files {files}")
t = cfg.get("tls", {})
if cfg.get("token_file") != "" or [t.get(k) for k in ("cert_file", "key_file", "client_ca_file")] != list(want)[:3]:
    problems.append(f"webhook config {cfg}")
if any(c[p]["httpGet"].get("scheme") != "HTTPS" for p in ("livenessProbe", "readinessProbe")): problems.append("probes not HTTPS")
ep = sm["spec"]["endpoints"][0]
if ep.get("scheme") != "https" or ep.get("tlsConfig", {}).get("ca") != {"secret": {"name": "respond-tls", "key": "ca.crt"}}: problems.append(f"ServiceMonitor {ep}")
with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
    f.write(cm["data"]["config.yaml"])
r = subprocess.run([sys.argv[2], "respond", "--check-config", f.name], capture_output=True, text=True)
if r.returncode != 0: problems.append(f"respond --check-config: {r.stderr}")
if problems:
    print("chart: respond.webhook.tls:", *problems, sep="\n  ", file=sys.stderr); sys.exit(1)
PYEOF
# shellcheck disable=SC2086
if "$HELM" template driftwatch "$chart" $respond_on --set respond.webhook.tls.clientCaSecret=am-client-ca >/dev/null 2>&1; then
  echo "chart: rendered respond.webhook.tls.clientCaSecret without respond.webhook.tls.secret" >&2; exit 1
fi
echo "chart: respond values are checked by the schema; no webhook token fails to render; the responder does not roll the agent; webhook TLS / mTLS renders"

"$PY" tests/chart/check_rendered.py "$out" "$agent"
