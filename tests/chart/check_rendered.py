"""Checks the manifests rendered by tests/chart/test.sh (argv: render dir, agent binary)."""
import json, os, subprocess, sys, tempfile
import jsonschema, yaml

out, agent = sys.argv[1], sys.argv[2]
RULES = "helm/driftwatch/files/driftwatch-rules.yaml"
BASE = "https://github.com/driftwatch/driftwatch/blob/main/docs/runbooks"
failures = []

def check(cond, msg):
    if not cond:
        failures.append(msg)

class StrictLoader(yaml.SafeLoader):
    """Duplicate keys are errors, as in the API server and serde_yaml (PyYAML keeps the last)."""

def _strict_mapping(loader, node, deep=False):
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    dup = {k for k in keys if keys.count(k) > 1}
    if dup:
        raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {sorted(map(str, dup))}", node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)

StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)

def load(name, component="agent"):
    """The rendered documents of one values set: the agent's, or (component "respond")
    the responder's (app.kubernetes.io/component: respond)."""
    docs = [d for d in yaml.load_all(open(os.path.join(out, name + ".yaml")), Loader=StrictLoader) if d]
    is_respond = lambda d: d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "respond"
    return {(d["kind"], d["metadata"]["name"]): d for d in docs if is_respond(d) == (component == "respond")}

def one(docs, kind):
    found = [d for (k, _), d in docs.items() if k == kind]
    return found[0] if len(found) == 1 else None

# Subsets of the prometheus-operator CRD schemas (monitoring.coreos.com/v1), strict
# for every field the chart sets: kubernetes-validate has no schema for CRDs.
STR = {"type": "string"}
ENDPOINT = {"type": "object", "additionalProperties": False, "properties": {
    "port": STR, "path": STR, "interval": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
    "scrapeTimeout": STR, "honorLabels": {"type": "boolean"}, "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
    "tlsConfig": {"type": "object", "additionalProperties": False, "properties": {
        "ca": {"type": "object"}, "caFile": STR, "cert": {"type": "object"}, "certFile": STR, "keyFile": STR,
        "keySecret": {"type": "object"}, "serverName": STR, "insecureSkipVerify": {"type": "boolean"}}},
    "relabelings": {"type": "array", "items": {"type": "object", "additionalProperties": False, "properties": {
        "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod", "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep"]},
        "sourceLabels": {"type": "array", "items": STR}, "targetLabel": STR, "regex": STR, "replacement": STR, "separator": STR, "modulus": {"type": "integer"}}}},
    "metricRelabelings": {"type": "array", "items": {"type": "object"}}}}
def monitor_schema(kind, endpoints, target_labels):
    return {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": kind},
            "spec": {"type": "object", "additionalProperties": False, "required": ["selector", endpoints], "properties": {
                "jobLabel": STR, target_labels: {"type": "array", "items": STR},
                "selector": {"type": "object", "additionalProperties": False, "properties": {"matchLabels": {"type": "object", "additionalProperties": STR}}},
                "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {"matchNames": {"type": "array", "items": STR}, "any": {"type": "boolean"}}},
                endpoints: {"type": "array", "minItems": 1, "items": ENDPOINT}}}}}
SERVICE_MONITOR = monitor_schema("ServiceMonitor", "endpoints", "targetLabels")
POD_MONITOR = monitor_schema("PodMonitor", "podMetricsEndpoints", "podTargetLabels")
PROMETHEUS_RULE = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"},
        "spec": {"type": "object", "additionalProperties": False, "required": ["groups"], "properties": {
            "groups": {"type": "array", "items": {"type": "object", "additionalProperties": False, "required": ["name", "rules"], "properties": {
                "name": STR, "interval": STR, "rules": {"type": "array", "items": {"type": "object", "additionalProperties": False, "required": ["expr"], "properties": {
                    "alert": STR, "record": STR, "expr": STR, "for": STR,
                    "labels": {"type": "object", "additionalProperties": STR},
                    "annotations": {"type": "object", "additionalProperties": STR}}}}}}}}}}}

canonical_rules = yaml.safe_load(open(RULES))
dash_files = sorted(f for f in os.listdir("helm/driftwatch/files/dashboards") if f.endswith(".json"))

STATE = {"default": "/var/lib/driftwatch", "privileged": "/var/lib/driftwatch",
         "all-features": "/var/lib/driftwatch-agent", "no-state": None,
         "files-off": "/var/lib/driftwatch", "network-off": "/var/lib/driftwatch",
         "no-syscall-sensors": "/var/lib/driftwatch", "health-off": "/var/lib/driftwatch",
         "alertmanager-basic-auth": "/var/lib/driftwatch", "quarantine-on": "/var/lib/driftwatch",
         "quarantine-privileged": "/var/lib/driftwatch", "investigate-off": "/var/lib/driftwatch",
         "respond-on": "/var/lib/driftwatch", "podmonitor": "/var/lib/driftwatch"}
PRIVILEGED = {"privileged", "quarantine-privileged"}
BASE_CAPS = ["BPF", "PERFMON", "SYS_PTRACE"]
# response.* (values) -> admin_addr, response.* (config) and the mounts: the admin
# socket's directory, the evidence directory (both at their host path), the host's
# BPF filesystem and the node's cgroup2 hierarchy (read-only, at /host<root>).
CAPTURE = {"on_steps": ["isolate"], "dir": "/var/lib/driftwatch/evidence", "window_s": 300, "max_file_bytes": 16 << 20,
           "max_bundle_bytes": 64 << 20, "hash_limit_bytes": 64 << 20, "retention": {"max_bytes": 1 << 30, "max_bundles": 100}}
QUARANTINE_OFF = {"on_steps": [], "allow": [], "modes": [], "pin_dir": "/sys/fs/bpf/driftwatch/quarantine"}
def response(name):
    r = {"admin": "/run/driftwatch", "capture": dict(CAPTURE), "quarantine": dict(QUARANTINE_OFF), "bpffs": None, "cgroup": None,
         "admin_tcp": None}
    if name in ("quarantine-on", "quarantine-privileged", "all-features"):
        r.update(bpffs="/sys/fs/bpf", cgroup="/sys/fs/cgroup")
        r["quarantine"]["on_steps"] = ["isolate"]
    if name == "quarantine-on":
        r["quarantine"].update(allow=["10.96.0.10/32:53"], modes=["protect"])
    if name == "respond-on":
        # respond.nodeAgent: the admin API on TCP with a token for the responder, no socket directory.
        r.update(admin=None, admin_tcp=8795)
    if name == "investigate-off":
        r.update(admin=None)
        r["capture"]["on_steps"] = []
    if name == "all-features":
        r.update(admin="/run/driftwatch-agent", cgroup="/sys/fs/cgroup/unified")
        r["capture"].update(on_steps=["isolate", "evict"], dir="/var/lib/driftwatch-evidence", window_s=600, hash_limit_bytes=8 << 20,
                            retention={"max_bytes": 4 << 30, "max_bundles": 50})
        r["quarantine"].update(modes=["protect"], allow=["10.96.0.10/32:53", "[fd00:10:96::a]:53", "10.0.0.5/32:8789"])
    return r
# The probes' own listener (health.port, config health_addr); health.enabled=false: none,
# the probes go to the metrics port.
HEALTH = {"health-off": None}
# sensors.network / sensors.files / sensors.mappings -> the config's sensor.*.
SENSORS = {"files-off": (True, False, True), "network-off": (False, True, True), "no-syscall-sensors": (False, False, False)}
for name in STATE:
    net, files, mappings = SENSORS.get(name, (True, True, True))
    # All three are on syscall tracepoints, named in tracefs: the agent's preflight
    # refuses to start without it while any is on.
    tracefs = net or files or mappings
    d = load(name)
    ds = one(d, "DaemonSet")
    check(ds is not None, f"{name}: one DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    c = pod["containers"][0]
    sc = c["securityContext"]
    check(pod.get("hostPID") is True, f"{name}: hostPID")
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    host_mounts = [("/run/containerd", "/run/containerd"), ("/var/run/crio", "/var/run/crio")]
    btf = "/var/lib/driftwatch-btf" if name == "all-features" else None
    if btf:
        host_mounts.append(("/sys/kernel/btf", btf))
    if tracefs:
        host_mounts.append(("/sys/kernel/tracing", "/sys/kernel/tracing"))
    for path, host in host_mounts:
        m = mounts.get(path)
        check(m is not None and vols[m["name"]]["hostPath"]["path"] == host, f"{name}: {host} mounted at {path}")
    check(not any(p.endswith(".sock") for p in mounts), f"{name}: runtime socket directories, not sockets, are mounted")
    # The container's sysfs has the kernel's BTF and the agent pins nothing: no BTF
    # mount unless hostPaths.btf is set, never the BPF filesystem (tests/e2e_shipped_image.rs).
    if btf:
        check(mounts["/sys/kernel/btf"].get("readOnly"), f"{name}: BTF read-only")
    else:
        check("/sys/kernel/btf" not in mounts, f"{name}: no BTF mount without hostPaths.btf")
    resp = response(name)
    if not resp["bpffs"]:
        check("/sys/fs/bpf" not in mounts and not any(v.get("hostPath", {}).get("path") == "/sys/fs/bpf" for v in vols.values()),
              f"{name}: no BPF filesystem mount without response.quarantine.enabled")
    if tracefs:
        check(mounts["/sys/kernel/tracing"].get("readOnly"), f"{name}: tracefs read-only")
        check(vols[mounts["/sys/kernel/tracing"]["name"]]["hostPath"].get("type") == "Directory", f"{name}: tracefs must exist on the host (type Directory)")
    else:
        # No syscall sensor: the agent needs no tracefs, and nodes without it must not block the pod.
        check("/sys/kernel/tracing" not in mounts and not any("tracing" in v.get("hostPath", {}).get("path", "") for v in vols.values()),
              f"{name}: no tracefs volume with every syscall sensor off")
    # hostPID gives the agent the host's /proc: no host /proc mount (nothing reads /host/proc).
    check("/host/proc" not in mounts and not any(v.get("hostPath", {}).get("path") == "/proc" for v in vols.values()), f"{name}: no host /proc mount")
    # Network baselines: a writable hostPath at the config's rules.network.state_dir, or none.
    state = mounts.get("/var/lib/driftwatch")
    if STATE[name]:
        hp = vols[state["name"]]["hostPath"] if state else {}
        check(state is not None and not state.get("readOnly") and hp.get("path") == STATE[name] and hp.get("type") == "DirectoryOrCreate",
              f"{name}: state dir {STATE[name]} (DirectoryOrCreate) mounted writable at /var/lib/driftwatch")
    else:
        # (the evidence directory, response.capture.hostPath, is a volume of its own)
        check(state is None and not any(v.get("hostPath", {}).get("path", "").startswith("/var/lib") for n, v in vols.items() if n != "evidence"),
              f"{name}: no state volume")
    env = {e["name"]: e for e in c["env"]}
    check(env.get("NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName", f"{name}: NODE_NAME from the downward API")
    health = HEALTH.get(name, 8790)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    want_ports = {"metrics": 8789, "health": health} if health else {"metrics": 8789}
    if resp["admin_tcp"]:
        want_ports["admin"] = resp["admin_tcp"]
    check(ports == want_ports, f"{name}: container ports {ports}")
    probe_port = "health" if health else "metrics"
    probes = {k: c[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    check({k: (g["path"], g["port"]) for k, g in probes.items()} ==
          {"startupProbe": ("/healthz", probe_port), "livenessProbe": ("/healthz", probe_port), "readinessProbe": ("/readyz", probe_port)},
          f"{name}: probes on /healthz and /readyz of port {probe_port}: {probes}")
    check(c["args"][:3] == ["run", "--config", "/etc/driftwatch/config.yaml"], f"{name}: args")
    check(pod.get("priorityClassName") == "system-node-critical", f"{name}: priorityClass")
    check({"operator": "Exists"} in pod.get("tolerations", []), f"{name}: tolerates every taint")
    check("cpu" in c["resources"]["requests"] and "memory" in c["resources"]["requests"], f"{name}: resource requests")
    check(sc.get("readOnlyRootFilesystem") is True, f"{name}: read-only root filesystem")
    if name in PRIVILEGED:
        check(sc.get("privileged") is True and "capabilities" not in sc, f"{name}: privileged fallback")
    else:
        # NET_ADMIN (attach the quarantine's programs to a cgroup) only with quarantine on.
        caps = BASE_CAPS + (["NET_ADMIN"] if resp["bpffs"] else [])
        check(sc.get("privileged") is False and sc.get("allowPrivilegeEscalation") is False, f"{name}: not privileged")
        check(sc["capabilities"] == {"drop": ["ALL"], "add": caps}, f"{name}: least-privilege capabilities {sc.get('capabilities')} (want {caps})")
    # Every mount path and volume name once (the API server rejects duplicates).
    paths = [m["mountPath"] for m in c["volumeMounts"]]
    check(len(paths) == len(set(paths)) and len(vols) == len(pod["volumes"]), f"{name}: duplicate mount paths or volumes: {paths}")
    # response.*: each feature's host directory mounted while it is on, and only then.
    want = {}
    if resp["admin"]:
        want[resp["admin"]] = (resp["admin"], "DirectoryOrCreate", False)
    if resp["capture"]["on_steps"]:
        want[resp["capture"]["dir"]] = (resp["capture"]["dir"], "DirectoryOrCreate", False)
    if resp["bpffs"]:
        want[resp["bpffs"]] = (resp["bpffs"], "Directory", False)
        want["/host" + resp["cgroup"]] = (resp["cgroup"], "Directory", True)
    known = {"/run/driftwatch", "/run/driftwatch-agent", CAPTURE["dir"], "/var/lib/driftwatch-evidence", "/sys/fs/bpf",
             "/host/sys/fs/cgroup", "/host/sys/fs/cgroup/unified"}
    for path in sorted(known | set(want)):
        m = mounts.get(path)
        if path in want:
            host, typ, ro = want[path]
            hp = vols[m["name"]].get("hostPath", {}) if m else {}
            check(m is not None and hp == {"path": host, "type": typ} and bool(m.get("readOnly")) == ro
                  and "mountPropagation" not in m,
                  f"{name}: {host} ({typ}, {'ro' if ro else 'rw'}) mounted at {path}: {m} {hp}")
        else:
            check(m is None, f"{name}: {path} mounted with its feature off")
    for host in {"/run/driftwatch", "/var/lib/driftwatch/evidence", "/sys/fs/bpf", "/sys/fs/cgroup", "/sys/fs/cgroup/unified"} - {w[0] for w in want.values()}:
        check(not any(v.get("hostPath", {}).get("path") == host for v in vols.values()), f"{name}: a volume for {host} with its feature off")
    api = name == "all-features"
    check(pod.get("automountServiceAccountToken") is api, f"{name}: API token only with kubernetesApi.enabled")
    cr = one(d, "ClusterRole")
    check((cr is not None) == api, f"{name}: ClusterRole only with kubernetesApi.enabled")
    if cr:
        check(cr["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                              {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get"]},
                              {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"]}], f"{name}: minimal RBAC")
        check(one(d, "ClusterRoleBinding")["subjects"][0]["name"] == pod["serviceAccountName"], f"{name}: binding to the agent's ServiceAccount")
    svc = one(d, "Service")
    check(svc["spec"]["ports"][0]["name"] == "metrics" and svc["metadata"]["labels"]["app.kubernetes.io/name"] == "driftwatch", f"{name}: Service (job label source)")
    check([p["name"] for p in svc["spec"]["ports"]] == ["metrics"], f"{name}: the Service exposes the metrics port only (the probes' port is the kubelet's)")
    check(svc["spec"]["selector"].items() <= ds["spec"]["template"]["metadata"]["labels"].items(), f"{name}: Service selects the agent pods")
    check(svc["spec"].get("publishNotReadyAddresses") is True, f"{name}: Service keeps unready agents scraped")

    # The rendered config ConfigMap loads in the real agent's parser (the Secret files it
    # names exist only in the pod: their mounts are checked below instead).
    cm = d[("ConfigMap", "driftwatch")]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(cm["data"]["config.yaml"])
    r = subprocess.run([agent, "check-config", "--no-file-checks", f.name], capture_output=True, text=True)
    check(r.returncode == 0, f"{name}: driftwatch check-config rejected the rendered config: {r.stderr.strip()}")
    cfg = yaml.safe_load(cm["data"]["config.yaml"])
    # Every file the config names (TLS material, token, password) is an item of a
    # Secret volume mounted read-only at that path; no secret is in the ConfigMap.
    secret_files = {}
    for m in c["volumeMounts"]:
        v = vols[m["name"]]
        if "secret" in v:
            check(m.get("readOnly") is True and m["mountPath"].startswith("/var/run/secrets/driftwatch/"), f"{name}: secret {m['name']} mounted read-only under /var/run/secrets/driftwatch/")
            check(v["secret"].get("defaultMode") == 0o400, f"{name}: secret {m['name']} mode 0400")
            for it in v["secret"]["items"]:
                secret_files[m["mountPath"] + "/" + it["path"]] = (v["secret"]["secretName"], it["key"])
    named = []
    for sink in ("otlp", "alertmanager"):
        sec = cfg.get(sink, {})
        named += [sec.get("tls", {}).get(k) for k in ("ca_file", "cert_file", "key_file")]
    named += [cfg.get("alertmanager", {}).get("bearer_token_file"), cfg.get("alertmanager", {}).get("basic_auth", {}).get("password_file")]
    named += [cfg.get("admin_token_file")]
    named = [p for p in named if p]
    for p in named:
        check(p in secret_files, f"{name}: {p} named by the config is not a mounted Secret item ({sorted(secret_files)})")
    check(len(secret_files) == len(named), f"{name}: Secret items mounted but not named by the config: {sorted(set(secret_files) - set(named))}")
    check("Bearer" not in cm["data"]["config.yaml"] and "password:" not in cm["data"]["config.yaml"], f"{name}: no credential in the ConfigMap")
    check(cfg["metrics_addr"] == "0.0.0.0:8789", f"{name}: metrics_addr")
    check(cfg.get("health_addr") == (f"0.0.0.0:{health}" if health else None), f"{name}: health_addr follows health.*: {cfg.get('health_addr')}")
    check(cfg.get("kubernetes", {}).get("enabled") is api, f"{name}: kubernetes.enabled follows kubernetesApi.enabled ({api}): {cfg.get('kubernetes')}")
    sensor = cfg.get("sensor", {})
    check(sensor.get("network") is net and sensor.get("files") is files and sensor.get("mappings") is mappings,
          f"{name}: sensor.network / sensor.files / sensor.mappings follow sensors.* ({net}, {files}, {mappings}): {sensor}")
    check(cfg.get("rules", {}).get("network", {}).get("state_dir") == ("/var/lib/driftwatch" if STATE[name] else ""), f"{name}: rules.network.state_dir matches the state mount: {cfg.get('rules')}")
    # admin_addr: the socket in the mounted directory (root on the node reaches it at the
    # same path), or "" (off); response.capture.dir is the evidence mount; pin_dir is on
    # the mounted BPF filesystem; a feature that is off has on_steps [].
    want_addr = f"unix://{resp['admin']}/admin.sock" if resp["admin"] else ""
    if resp["admin_tcp"]:
        want_addr = f"0.0.0.0:{resp['admin_tcp']}"
        check(secret_files.get(cfg.get("admin_token_file")) == ("driftwatch-admin-token", "admin"), f"{name}: admin token Secret {secret_files}")
    check(cfg.get("admin_addr") == want_addr, f"{name}: admin_addr {cfg.get('admin_addr')!r} (want {want_addr!r})")
    got = cfg.get("response", {})
    check(got.get("capture") == resp["capture"], f"{name}: response.capture {got.get('capture')} (want {resp['capture']})")
    check(got.get("quarantine") == resp["quarantine"], f"{name}: response.quarantine {got.get('quarantine')} (want {resp['quarantine']})")
    if resp["bpffs"]:
        check(got.get("quarantine", {}).get("pin_dir", "").startswith(resp["bpffs"] + "/"), f"{name}: pin_dir on the mounted BPF filesystem")
    # Redaction (values redaction.*): on by default, user parts passed through.
    red = cfg.get("redaction", {})
    if name == "all-features":
        check(red == {"enabled": True, "builtin_patterns": {"token_formats": False}, "flags": ["--db-pass", "-p"],
                      "patterns": [{"name": "acme_key", "regex": "acme_[a-f0-9]{32}"}, {"name": "pin", "regex": "pin=(?P<secret>[0-9]+)"}]},
              f"{name}: redaction from values: {red}")
    else:
        check(red == {"enabled": True}, f"{name}: redaction on with the agent's defaults: {red}")
    os.unlink(f.name)

    if name == "alertmanager-basic-auth":
        check(cfg["alertmanager"]["basic_auth"] == {"username": "driftwatch", "password_file": "/var/run/secrets/driftwatch/alertmanager-password/password"}
              and secret_files == {"/var/run/secrets/driftwatch/alertmanager-password/password": ("am-basic", "password")}
              and cfg["alertmanager"]["tls"] == {"server_name": "alertmanager.monitoring.svc"}, f"{name}: basic auth from a Secret: {cfg['alertmanager']} {secret_files}")
    elif name == "respond-on":
        check(list(secret_files) == ["/var/run/secrets/driftwatch/admin-token/token"], f"{name}: only the admin token Secret: {secret_files}")
    elif name != "all-features":
        check(not secret_files and "OTEL_EXPORTER_OTLP_HEADERS" not in env, f"{name}: no Secret mounted by default")
    if name != "all-features":
        check("cluster_name" not in cfg, f"{name}: no cluster_name unless clusterName is set")
    sm, pr, pm = one(d, "ServiceMonitor"), one(d, "PrometheusRule"), one(d, "PodMonitor")
    dcm = d.get(("ConfigMap", "driftwatch-dashboards"))
    # Every values set: the helm test hook asks /readyz of the agents behind the Service.
    hook = one(d, "Pod")
    check(hook is not None and hook["metadata"]["annotations"].get("helm.sh/hook") == "test", f"{name}: a helm test hook Pod")
    if hook:
        hc = hook["spec"]["containers"][0]
        henv = {e["name"]: e["value"] for e in hc["env"]}
        check(henv.get("SERVICE") == f"{svc['metadata']['name']}.driftwatch.svc" and henv.get("PORT") == str(svc["spec"]["ports"][0]["port"])
              and "/readyz" in hc["args"][0] and hook["spec"]["securityContext"].get("runAsNonRoot") is True,
              f"{name}: the test hook asks the Service's agents for /readyz, as non-root: {henv}")
    # podSecurityContext, extraVolumes and extraVolumeMounts pass through (all-features).
    if name == "all-features":
        check(pod.get("securityContext") == {"seLinuxOptions": {"type": "spc_t"}}, f"{name}: podSecurityContext {pod.get('securityContext')}")
        check(vols.get("corp-ca") == {"name": "corp-ca", "configMap": {"name": "corp-ca"}}
              and mounts.get("/etc/corp-ca") == {"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True},
              f"{name}: extraVolumes / extraVolumeMounts: {vols.get('corp-ca')} {mounts.get('/etc/corp-ca')}")
    else:
        check("securityContext" not in pod, f"{name}: no pod securityContext by default")
    if name == "podmonitor":
        check(sm is None and pm is not None, f"{name}: a PodMonitor instead of the ServiceMonitor")
        try:
            jsonschema.validate(pm, POD_MONITOR)
        except jsonschema.ValidationError as e:
            failures.append(f"{name}: PodMonitor: {e.message} at {list(e.absolute_path)}")
        ep = pm["spec"]["podMetricsEndpoints"][0]
        check(pm["metadata"]["namespace"] == "monitoring" and pm["spec"]["namespaceSelector"] == {"matchNames": ["driftwatch"]}
              and pm["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
              and pm["spec"]["jobLabel"] == "app.kubernetes.io/name" and pm["spec"]["podTargetLabels"] == ["app.kubernetes.io/instance"],
              f"{name}: PodMonitor selects the agent pods from the monitoring namespace, job from the name label: {pm['spec']}")
        check(ep["port"] == "metrics" and ep["honorLabels"] is True and ep["scheme"] == "http"
              and {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"} in ep["relabelings"],
              f"{name}: PodMonitor endpoint: {ep}")
        continue
    if name != "all-features":
        check(sm is None and pm is None and pr is None and dcm is None, f"{name}: optional resources off by default")
        continue
    check(cfg["alertmanager"]["urls"] == ["https://alertmanager-0.alertmanager-operated.monitoring:9093", "https://alertmanager-1.alertmanager-operated.monitoring:9093"]
          and "url" not in cfg["alertmanager"] and cfg["otlp"]["protocol"] == "grpc", f"{name}: sinks configured: {cfg['alertmanager']}")
    check(secret_files.get("/var/run/secrets/driftwatch/alertmanager-token/token") == ("driftwatch-alertmanager-token", "token")
          and secret_files.get("/var/run/secrets/driftwatch/otlp-client/tls.key") == ("driftwatch-otlp-client", "tls.key")
          and secret_files.get("/var/run/secrets/driftwatch/alertmanager-ca/ca.crt") == ("monitoring-ca", "ca.crt"), f"{name}: Secret items {secret_files}")
    check(cfg["alertmanager"]["headers"] == {"X-Scope-OrgID": "security"} and cfg["otlp"]["tls"]["server_name"] == "otel-collector.observability.svc", f"{name}: headers and server name")
    hdr = env.get("OTEL_EXPORTER_OTLP_HEADERS", {}).get("valueFrom", {}).get("secretKeyRef")
    check(hdr == {"name": "driftwatch-otlp-headers", "key": "headers"}, f"{name}: OTLP headers from the Secret: {hdr}")
    check(cfg["alertmanager"]["runbook_base_url"] == "https://runbooks.example.org/driftwatch", f"{name}: runbook base")
    check(cfg.get("cluster_name") == "prod-eu-1", f"{name}: clusterName -> cluster_name: {cfg.get('cluster_name')}")
    check(cfg.get("outputs") == {"stdout": {"format": "falco"}, "falcosidekick": {"url": "http://falcosidekick.falco:2801"}},
          f"{name}: outputs passed through config: {cfg.get('outputs')}")
    for doc, schema, kind in ((sm, SERVICE_MONITOR, "ServiceMonitor"), (pr, PROMETHEUS_RULE, "PrometheusRule")):
        try:
            jsonschema.validate(doc, schema)
        except jsonschema.ValidationError as e:
            failures.append(f"{name}: {kind}: {e.message} at {list(e.absolute_path)}")
    ep = sm["spec"]["endpoints"][0]
    check(ep["honorLabels"] is True and ep["port"] == "metrics", f"{name}: ServiceMonitor honorLabels")
    check(sm["spec"]["jobLabel"] == "app.kubernetes.io/name" and sm["metadata"]["labels"].get("release") == "kube-prometheus-stack", f"{name}: ServiceMonitor job label / selector label")
    check(sm["metadata"]["namespace"] == "monitoring" and sm["spec"]["namespaceSelector"] == {"matchNames": ["driftwatch"]}
          and sm["spec"]["targetLabels"] == ["team"] and ep["scheme"] == "https" and ep["tlsConfig"]["insecureSkipVerify"] is True
          and {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"} in ep["relabelings"],
          f"{name}: ServiceMonitor namespace, targetLabels, scheme, tlsConfig, node relabeling: {sm['spec']} {sm['metadata']['namespace']}")
    # The PrometheusRule is the rules file with the values applied (all-features: default
    # job and labels, team=security on every alert, one alert off, one with its own for and
    # severity) and the runbook base rewritten.
    expect = json.loads(json.dumps(canonical_rules).replace(BASE, "https://runbooks.example.org/driftwatch"))
    for g in expect["groups"]:
        g["rules"] = [r for r in g["rules"] if r["alert"] != "DriftwatchNodeNotCovered"]
        for r in g["rules"]:
            r["labels"]["team"] = "security"
            if r["alert"] == "ContainerShellSpawned":
                r["for"], r["labels"]["severity"] = "1m", "critical"
    expect["groups"] = [g for g in expect["groups"] if g["rules"]]
    check(pr["spec"] == expect, f"{name}: PrometheusRule spec differs from {RULES} with the values applied")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(pr["spec"], f)
    r = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    check(r.returncode == 0, f"{name}: promtool rejects the PrometheusRule's rules: {r.stdout}{r.stderr}")
    os.unlink(f.name)
    check(dcm is not None and dcm["metadata"]["labels"].get("grafana_dashboard") == "1" and dcm["metadata"]["namespace"] == "monitoring", f"{name}: dashboards ConfigMap label/namespace")
    check(sorted(dcm["data"]) == dash_files, f"{name}: dashboards ConfigMap keys {sorted(dcm['data'])}")
    for f in dash_files:
        check(json.loads(dcm["data"][f]) == json.load(open(os.path.join("dashboards", f))), f"{name}: {f} in the ConfigMap differs from dashboards/{f}")

# The responder (respond.*): its own checks (tests/chart/check_respond.py).
import check_respond
failures += check_respond.check_all(out, agent, list(STATE), load, SERVICE_MONITOR)

# alerts/ and dashboards/ are the chart's files (links), not copies that could drift.
check(os.path.realpath("alerts/driftwatch-rules.yaml") == os.path.realpath(RULES), "alerts/driftwatch-rules.yaml must link to " + RULES)
for f in dash_files:
    check(os.path.realpath(os.path.join("dashboards", f)) == os.path.realpath(os.path.join("helm/driftwatch/files/dashboards", f)), f"dashboards/{f} must link to the chart's copy")

# Dashboards: classic JSON, fixed uid, a datasource variable used everywhere, $__rate_interval.
for f in dash_files:
    db = json.load(open(os.path.join("dashboards", f)))
    check(db.get("uid", "").startswith("driftwatch-") and "dashboard" not in db, f"{f}: fixed uid, classic (not wrapped) JSON")
    check(any(v["name"] == "datasource" and v["type"] == "datasource" and v["query"] == "prometheus" for v in db["templating"]["list"]), f"{f}: datasource variable")
    for v in db["templating"]["list"]:
        if v["type"] == "query":
            check(v["datasource"]["uid"] == "${datasource}", f"{f}: variable {v['name']} uses ${{datasource}}")
    for p in db["panels"]:
        check(p["datasource"]["uid"] == "${datasource}", f"{f}: panel {p['title']} datasource")
        for t in p["targets"]:
            check(t["datasource"]["uid"] == "${datasource}", f"{f}: {p['title']} target datasource")
            e = t["expr"]
            if "rate(" in e or "increase(" in e:
                check("[$__rate_interval]" in e or "[$__range]" in e, f"{f}: {p['title']}: use $__rate_interval: {e}")

# Dashboards work in any Prometheus (issue 17): cluster and job variables, node (never the pod
# IP, instance), every selector of an agent metric filtered by cluster and job (the health
# dashboard by node too), the per-container metrics by namespace; the renamed metrics under
# their new names only; every metric the agent exports is on a dashboard (or says why not);
# every query parses (promtool, Grafana's variables substituted).
import re
NS_METRICS = {"driftwatch_drifted_containers", "driftwatch_container_findings_total", "driftwatch_container_writable_rootfs"}
DEPRECATED = {"driftwatch_events_total", "driftwatch_kernel_events_total", "driftwatch_execs_not_findings_total"}
NOT_ON_DASHBOARDS = {}  # metric family -> why it is on no dashboard
golden = [l.split()[1] for l in open("tests/golden/metric-series.txt") if l.startswith("# ")]
used, queries = set(), []
for f in dash_files:
    db = json.load(open(os.path.join("dashboards", f)))
    names = [v["name"] for v in db["templating"]["list"]]
    check(names[:3] == ["datasource", "cluster", "job"] and "instance" not in names, f"{f}: variables {names}: datasource, cluster, job first, no instance")
    if "health" in f:
        check("node" in names, f"{f}: a node variable")
    exprs = [(p["title"], t["expr"], t.get("legendFormat", "")) for p in db["panels"] for t in p.get("targets", [])]
    # The variables' own chain (cluster, then job, then node) is checked by the lines above.
    exprs += [(f"variable {v['name']}", v["query"]["query"], "") for v in db["templating"]["list"]
              if v["type"] == "query" and v["name"] not in ("cluster", "job", "node")]
    for title, e, legend in exprs:
        check("instance" not in e and "instance" not in legend, f"{f}: {title}: names instance (the pod IP), not node: {e}")
        for m in re.finditer(r"\b(driftwatch_[a-z_]+)(\{[^}]*\})?", e):
            name, sel = m.group(1), m.group(2) or ""
            used.add(name)
            check(name not in DEPRECATED, f"{f}: {title}: deprecated {name}")
            check('cluster=~"$cluster"' in sel and ('job=~"$job"' in sel or 'job=~"$job-respond"' in sel), f"{f}: {title}: {name} not filtered by cluster and job: {e}")
            if "health" in f and not name.startswith("driftwatch_response_"):
                check('node=~"$node"' in sel, f"{f}: {title}: {name} not filtered by node: {e}")
            if name in NS_METRICS and not title.startswith("variable namespace"):
                check('namespace=~"$namespace"' in sel, f"{f}: {title}: {name} not filtered by namespace: {e}")
        queries.append((f, title, e))
for fam in golden:
    sample = {"counter": fam + "_total", "info": fam + "_info"}.get(dict(l.split()[1:3] for l in open("tests/golden/metric-series.txt") if l.startswith("# "))[fam], fam)
    if sample in DEPRECATED or fam in NOT_ON_DASHBOARDS:
        continue
    check(sample in used or fam + "_bucket" in used, f"dashboards: {sample} is exported but on no dashboard (add a panel, or say why in NOT_ON_DASHBOARDS)")
subst = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}
rules = []
for i, (f, title, e) in enumerate(queries):
    q = e
    for k, v in subst.items():
        q = q.replace(k, v)
    q = re.sub(r"\$[a-z]+", ".*", q)
    if q.startswith("label_values("):
        q = q[len("label_values("):].rsplit(",", 1)[0]
    rules.append({"record": f"dashboard:query_{i}", "expr": q})
with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
    yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, fh)
r = subprocess.run(["promtool", "check", "rules", fh.name], capture_output=True, text=True)
check(r.returncode == 0, f"dashboards: promtool rejects a query: {r.stdout}{r.stderr}")
os.unlink(fh.name)

if failures:
    print("chart checks failed:\n  " + "\n  ".join(failures), file=sys.stderr)
    sys.exit(1)
print("chart: rendered manifests OK (mounts, privileges, RBAC, CRDs, rules = alerts/, dashboards = dashboards/, config loads in driftwatch check-config)")
