#!/usr/bin/env bash
# Alert rules and the example Alertmanager routing (run by scripts/test.sh):
#   promtool check rules   - the rules file parses and every expression is valid
#   lint (below)           - every alert has severity, playbook_step, summary,
#                            description, runbook_url; the runbook page exists; the naming
#                            scheme; the chart's per-alert values know every alert
#   chart rendering        - the rules as the chart renders them for custom labels and
#                            selectors (promtool test rules alerts/tests/custom-labels.test.yaml)
#   promtool test rules    - unit tests: every alert fires with its exact labels and
#                            annotations, and stays quiet where it must
#   amtool check-config / config routes test - each playbook_step reaches its receiver
#                                              (and the responder, driftwatch-respond, gets the
#                                              per-pod push alerts of isolate|investigate|evict, continue)
set -euo pipefail
cd "$(dirname "$0")/../.."
# PyYAML comes with the chart tools' venv (scripts/install-chart-tools.sh).
bash scripts/install-chart-tools.sh
PY=${DRIFTWATCH_TOOLS:-/opt/driftwatch-tools}/venv/bin/python

rules=alerts/driftwatch-rules.yaml
canonical=helm/driftwatch/files/driftwatch-rules.yaml
[ "$(readlink -f "$rules")" = "$(readlink -f "$canonical")" ] || { echo "$rules must link to $canonical" >&2; exit 1; }

promtool check rules "$rules"

"$PY" - "$rules" <<'PY'
import os, re, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
base = "https://github.com/driftwatch/driftwatch/blob/main/docs/runbooks"
steps = {"detect", "validate", "isolate", "investigate", "evict", "remediate"}
bad, names = [], []
for g in doc["groups"]:
    for r in g["rules"]:
        a = r.get("alert")
        if not a:
            continue
        names.append(a)
        if not re.fullmatch(r"[A-Z][A-Za-z0-9]+", a): bad.append(f"{a}: not CamelCase")
        # One naming scheme (README "Alert rules"): what a workload did is Container*/Workload*
        # (the agent's push uses the same names); driftwatch's own health is Driftwatch*.
        own = g["name"] in ("driftwatch.agent", "driftwatch.coverage", "driftwatch.response")
        if own != a.startswith("Driftwatch") or not re.match(r"(Container|Workload|Driftwatch)[A-Z]", a):
            bad.append(f"{a} (group {g['name']}): Driftwatch* for driftwatch's own alerts, Container*/Workload* for workloads'")
        l, an = r.get("labels", {}), r.get("annotations", {})
        if l.get("severity") not in ("critical", "warning", "info"): bad.append(f"{a}: severity {l.get('severity')!r}")
        if l.get("playbook_step") not in steps: bad.append(f"{a}: playbook_step {l.get('playbook_step')!r}")
        for k in ("summary", "description", "runbook_url"):
            if not an.get(k): bad.append(f"{a}: no {k}")
        if an.get("runbook_url") != f"{base}/{a}.md": bad.append(f"{a}: runbook_url {an.get('runbook_url')}")
        page = f"docs/runbooks/{a}.md"
        if not os.path.exists(page): bad.append(f"{a}: {page} missing")
        elif not open(page).readline().strip() == f"# {a}": bad.append(f"{page}: first line must be '# {a}'")
if len(set(names)) != len(names): bad.append("duplicate alert names")
# The chart's per-alert values (prometheusRule.alerts.<name>) accept exactly these names.
import json
enum = json.load(open("helm/driftwatch/values.schema.json"))["properties"]["prometheusRule"]["properties"]["alerts"]["propertyNames"]["enum"]
if sorted(enum) != sorted(names): bad.append(f"values.schema.json prometheusRule.alerts names differ from the rules: {sorted(set(enum) ^ set(names))}")
# The agent's direct push uses the same base URL (alertmanager.runbook_base_url).
cfg = yaml.safe_load(open("src/default-config.yaml"))
if cfg["alertmanager"]["runbook_base_url"] != base: bad.append("runbook base differs from src/default-config.yaml")
tests = open("alerts/tests/driftwatch-rules.test.yaml").read()
for a in names:
    if f"alertname: {a}\n    exp_alerts:\n    - exp_labels" not in tests: bad.append(f"{a}: no unit test where it fires")
if bad:
    print("alert rules lint failed:\n  " + "\n  ".join(bad), file=sys.stderr)
    sys.exit(1)
print(f"lint: {len(names)} alerts have severity, playbook_step, summary, description, runbook_url and a runbook page")
PY

promtool test rules alerts/tests/driftwatch-rules.test.yaml

# The rules as the chart renders them for another Prometheus's labels (custom job, node and
# cluster label names, kube-state-metrics job, per-alert values): alerts/tests/custom-labels.test.yaml.
HELM=${DRIFTWATCH_TOOLS:-/opt/driftwatch-tools}/bin/helm
rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
"$HELM" template dw helm/driftwatch --namespace security --show-only templates/prometheusrule.yaml \
  --set prometheusRule.enabled=true --set-string 'prometheusRule.jobSelector=job="security/driftwatch-agents"' \
  --set prometheusRule.nodeLabel=kubernetes_node --set prometheusRule.clusterLabel=k8s_cluster \
  --set-string 'prometheusRule.kubeStateMetricsSelector=job="ksm"' --set prometheusRule.additionalLabels.team=security \
  --set prometheusRule.alerts.ContainerShellSpawned.enabled=false \
  --set prometheusRule.alerts.DriftwatchAgentDown.for=5m --set prometheusRule.alerts.DriftwatchAgentDown.labels.severity=warning \
  | "$PY" -c 'import sys, yaml; yaml.safe_dump(yaml.safe_load(sys.stdin)["spec"], sys.stdout)' > "$rendered/rendered-rules.yaml"
# No default label name or selector is left over (the coverage alert's `node` is kube-state-metrics').
"$PY" - "$rendered/rendered-rules.yaml" <<'PY'
import re, sys, yaml
bad = []
for g in yaml.safe_load(open(sys.argv[1]))["groups"]:
    for r in g["rules"]:
        e = r["expr"]
        if re.search(r"\bcluster\b", e) or 'job="driftwatch"' in e or 'job="kube-state-metrics"' in e:
            bad.append(f"{r['alert']}: default label or selector left: {e}")
        if g["name"] != "driftwatch.coverage" and (re.search(r"\bnode\b", e) or "$labels.node " in str(r["annotations"])):
            bad.append(f"{r['alert']}: `node` left in {e}")
if bad:
    sys.exit("chart-rendered rules:\n  " + "\n  ".join(bad))
PY
promtool check rules "$rendered/rendered-rules.yaml" >/dev/null
cp alerts/tests/custom-labels.test.yaml "$rendered/"
promtool test rules "$rendered/custom-labels.test.yaml"

am=alerts/alertmanager.example.yaml
amtool check-config "$am" >/dev/null
route() { # expected-receiver labels...
  local want=$1; shift
  local got
  got=$(amtool config routes test --config.file="$am" "$@" 2>/dev/null || true)
  if [ "$got" != "$want" ]; then
    echo "amtool: {$*} routed to '$got', expected '$want'" >&2
    exit 1
  fi
}
route driftwatch-operators alertname=DriftwatchAgentDown severity=critical playbook_step=detect
route security-pager alertname=ContainerDriftBinary severity=critical playbook_step=isolate namespace=shop
route security-pager alertname=ContainerDriftPersistent severity=critical playbook_step=evict
route security-investigations alertname=ContainerDriftExited severity=critical playbook_step=investigate
route workload-owners alertname=ContainerShellSpawned severity=warning playbook_step=validate
route workload-owners alertname=ContainerPackageManager severity=warning playbook_step=validate
route remediation-tickets alertname=ContainerDriftRecurring severity=warning playbook_step=remediate
route workload-owners alertname=ContainerDriftNetwork severity=warning playbook_step=validate kind=network
route security-investigations alertname=ContainerDriftFile severity=warning playbook_step=investigate kind=file namespace=shop
route workload-owners alertname=ContainerPackageManager severity=warning playbook_step=validate kind=package rule=package_database_write
route security-investigations,workload-owners alertname=ContainerImageDigestMismatch severity=critical playbook_step=validate kind=config
route workload-owners alertname=ContainerImageNotApproved severity=warning playbook_step=validate kind=config
route workload-owners alertname=ContainerEphemeralContainerAdded severity=warning playbook_step=validate kind=config
route remediation-tickets alertname=WorkloadMutableImageTag severity=info playbook_step=remediate kind=config
route remediation-tickets alertname=WorkloadWritableRootFilesystem severity=info playbook_step=remediate kind=config
route driftwatch-operators alertname=DriftwatchKubernetesWatchFailing severity=warning playbook_step=detect
route driftwatch-operators alertname=DriftwatchFileEventsRateLimited severity=warning playbook_step=detect
route driftwatch-operators alertname=DriftwatchDriftEventsDropped severity=critical playbook_step=detect
route security-pager alertname=DriftwatchQuarantineFailed severity=critical playbook_step=isolate
route security-investigations alertname=DriftwatchContainerQuarantined severity=warning playbook_step=investigate
route security-investigations alertname=DriftwatchEvidenceCaptureFailing severity=warning playbook_step=investigate result=failed
route platform-default alertname=Watchdog severity=none
# The responder gets the agent's per-pod push alerts (pod and container_id) of the steps it
# acts on, and people are still paged (continue); workload-level rule alerts, other steps
# and alerts without a container id never reach it.
push="node=node-1 namespace=shop pod=web-7d9f-x2 container=web container_id=0123456789abcdef workload=web"
# shellcheck disable=SC2086
{
route driftwatch-respond,security-pager alertname=ContainerDriftBinary severity=critical playbook_step=isolate kind=binary rule=exec_new_binary $push
route driftwatch-respond,security-pager alertname=ContainerDriftBinary severity=critical playbook_step=evict kind=binary rule=exec_new_binary $push
route driftwatch-respond,security-investigations alertname=ContainerDriftFile severity=warning playbook_step=investigate kind=file rule=file_written $push
route workload-owners alertname=ContainerShellSpawned severity=warning playbook_step=validate kind=shell rule=shell_in_container $push
route remediation-tickets alertname=ContainerDriftRecurring severity=warning playbook_step=remediate $push
route security-pager alertname=ContainerDriftBinary severity=critical playbook_step=isolate namespace=shop pod=web-7d9f-x2
route security-pager alertname=ContainerDriftBinary severity=critical playbook_step=isolate namespace=shop workload=web container=web
}
# Every receiver the responder gets alerts from sends them with its bearer token, never resolved.
"$PY" - "$am" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
def routes(r):
    for c in r.get("routes", []):
        yield c
        yield from routes(c)
resp = [r for r in routes(doc["route"]) if r["receiver"] == "driftwatch-respond"]
bad = [f"route {r['matchers']}: continue is not true (people would not be paged)" for r in resp if r.get("continue") is not True]
bad += [f"route {r['matchers']}: no pod / container_id matcher" for r in resp
        if not {'pod=~".+"', 'container_id=~".+"'} <= set(r["matchers"])]
steps = sorted(m for r in resp for m in r["matchers"] if m.startswith("playbook_step="))
if steps != ['playbook_step="evict"', 'playbook_step="investigate"', 'playbook_step="isolate"']: bad.append(f"responder steps {steps}")
for rc in doc["receivers"]:
    if rc["name"] != "driftwatch-respond": continue
    for w in rc["webhook_configs"]:
        if not w["url"].endswith("/v1/alerts"): bad.append(f"url {w['url']}")
        if w.get("send_resolved") is not False: bad.append("send_resolved must be false")
        if not 0 < w.get("max_alerts", 0) <= 100: bad.append(f"max_alerts {w.get('max_alerts')}")
        auth = w.get("http_config", {}).get("authorization", {})
        if auth.get("type") != "Bearer" or not auth.get("credentials_file"): bad.append(f"authorization {auth}")
if bad:
    print("alertmanager example: responder routing:\n  " + "\n  ".join(bad), file=sys.stderr); sys.exit(1)
print(f"responder: {len(resp)} routes (continue), bearer token file, not resolved")
PY
# Every playbook_step used by the rules has a route of its own.
for step in $(grep -o 'playbook_step: [a-z]*' "$rules" | awk '{print $2}' | sort -u); do
  got=$(amtool config routes test --config.file="$am" playbook_step="$step" 2>/dev/null || true)
  [ "$got" != platform-default ] || { echo "amtool: playbook_step=$step falls through to the default route" >&2; exit 1; }
done
echo "amtool: example routing OK (every playbook_step reaches its receiver)"
