"""Checks of the responder's rendered manifests (values respond.*), for check_rendered.py.

Per values set: nothing of the responder when respond.enabled is false; when true, exactly
its resources, the exact RBAC (nothing more), a least-privilege Deployment, the webhook
token Secret mounted where the config's token_file says, the config from the values, its
Service / NetworkPolicy / ServiceMonitor selecting only its pods.
"""
import os, subprocess, sys, tempfile
import jsonschema, yaml

TOKEN_DIR = "/var/run/secrets/driftwatch/respond-token"
ADMIN_TOKEN_DIR = "/var/run/secrets/driftwatch/admin-token"
CONFIG_MOUNT = "/etc/driftwatch-respond"

# Exactly what the responder needs (its contract): (apiGroup, resource, verb).
RBAC = {("", "pods", "get"), ("", "pods", "list"), ("", "pods", "patch"), ("", "pods/eviction", "create"),
        ("networking.k8s.io", "networkpolicies", "get"), ("networking.k8s.io", "networkpolicies", "create"),
        ("networking.k8s.io", "networkpolicies", "delete"), ("", "events", "create")}

DEFAULT_CONFIG = {
    "dry_run": True, "steps": [], "webhook": {"token_file": TOKEN_DIR + "/token", "max_body_bytes": 1048576},
    "isolate": {"allow_dns": False}, "evict": {"allow_unowned": False}, "dedup_window_s": 600,
    "rate_limits": {"global": {"max": 20, "window_s": 600}, "per_namespace": {"max": 5, "window_s": 600}},
    "protected_namespaces": ["kube-system", "driftwatch"], "namespaces": {}, "escalate": {}}

# The values sets that turn the responder on: (config, Secret (name, key), replicas,
# ingress peers, API server CIDR, API server ports, ServiceMonitor).
ON = {
    "all-features": (DEFAULT_CONFIG, ("driftwatch-respond-token", "token"), 1, None, None, [443, 6443], True),
    "respond-on": (dict(DEFAULT_CONFIG, dry_run=False, steps=["isolate", "label"], escalate={"isolate": "evict"}, isolate={"allow_dns": True}, dedup_window_s=300,
                        webhook={"token_file": TOKEN_DIR + "/token", "max_body_bytes": 262144},
                        rate_limits={"global": {"max": 50, "window_s": 600}, "per_namespace": {"max": 3, "window_s": 900}},
                        protected_namespaces=["kube-system", "monitoring", "driftwatch"],
                        namespaces={"payments": {"steps": ["isolate", "evict"], "dry_run": False}, "staging": {"dry_run": True}},
                        node_agent={"namespace": "driftwatch", "selector": "app.kubernetes.io/instance=driftwatch,app.kubernetes.io/name=driftwatch",
                                    "port": 8795, "token_file": ADMIN_TOKEN_DIR + "/token", "timeout_s": 90}),
                   ("driftwatch-respond-token", "bearer"), 2,
                   [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}], "172.18.0.2/32", [6443], False),
}

# Hook for the lead: validate the rendered config with the responder's own parser once the
# binary has it. Set to the argv after the binary that loads a config file and exits 0 when it
# is valid (e.g. ["respond", "--check-config"]); the check is skipped while
# `driftwatch respond --help` fails (a binary without the responder).
RESPOND_CONFIG_CHECK_ARGS = ["respond", "--check-config"]


def _selects(selector, labels):
    return bool(selector) and selector.items() <= labels.items()


def _respond_config_check(agent, text, name, check):
    if RESPOND_CONFIG_CHECK_ARGS is None:
        return "not wired (RESPOND_CONFIG_CHECK_ARGS is None)"
    if subprocess.run([agent, "respond", "--help"], capture_output=True).returncode != 0:
        return "skipped: `driftwatch respond --help` fails (no responder in this binary)"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    try:
        r = subprocess.run([agent, *RESPOND_CONFIG_CHECK_ARGS, f.name], capture_output=True, text=True)
        check(r.returncode == 0, f"{name}: the responder rejected the rendered config: {r.stderr.strip()}")
    finally:
        os.unlink(f.name)
    return "checked by the binary"


def check_one(name, docs, agent_docs, agent, service_monitor_schema, check):
    if name not in ON:
        check(not docs, f"{name}: responder resources rendered with respond.enabled false: {sorted(docs)}")
        check(not any("respond" in n for (_, n) in agent_docs), f"{name}: a -respond resource among the agent's")
        return None
    cfg_want, (secret, key), replicas, peers, cidr, api_ports, sm_on = ON[name]
    kinds = sorted(k for (k, _) in docs)
    want_kinds = sorted(["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "NetworkPolicy", "Service", "ServiceAccount"]
                        + (["ServiceMonitor"] if sm_on else []))
    check(kinds == want_kinds, f"{name}: responder resources {kinds} (want {want_kinds})")
    by_kind = {k: d for (k, _), d in docs.items()}
    dep, sa, cr, crb = by_kind.get("Deployment"), by_kind.get("ServiceAccount"), by_kind.get("ClusterRole"), by_kind.get("ClusterRoleBinding")
    if not (dep and sa and cr and crb):
        return None

    # RBAC: exactly the contract's rules, bound to its own ServiceAccount only.
    got = {(g, r, v) for rule in cr["rules"] for g in rule.get("apiGroups", []) for r in rule.get("resources", []) for v in rule.get("verbs", [])}
    check(got == RBAC, f"{name}: responder RBAC {sorted(got)}: extra {sorted(got - RBAC)}, missing {sorted(RBAC - got)}")
    check(all(set(rule) == {"apiGroups", "resources", "verbs"} for rule in cr["rules"]), f"{name}: responder RBAC names no resourceNames/nonResourceURLs")
    check(crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cr["metadata"]["name"]}, f"{name}: binding's roleRef")
    check(crb["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "driftwatch"}], f"{name}: binding's subjects {crb['subjects']}")
    agent_crs = [d for (k, _), d in agent_docs.items() if k == "ClusterRole"]
    check(cr["metadata"]["name"] not in {d["metadata"]["name"] for d in agent_crs}, f"{name}: responder and agent share a ClusterRole")

    # The Deployment: least privilege (non-root, no capability, read-only root, RuntimeDefault).
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    check(dep["spec"]["replicas"] == replicas, f"{name}: replicas {dep['spec']['replicas']}")
    check(_selects(dep["spec"]["selector"]["matchLabels"], labels), f"{name}: Deployment selector")
    check(pod["serviceAccountName"] == sa["metadata"]["name"] and pod.get("automountServiceAccountToken") is True, f"{name}: own ServiceAccount, token mounted")
    ds = next((d for (k, _), d in agent_docs.items() if k == "DaemonSet"), None)
    check(ds is not None and ds["spec"]["template"]["spec"]["serviceAccountName"] != sa["metadata"]["name"], f"{name}: the agent does not run as the responder")
    for k in ("hostPID", "hostNetwork", "hostIPC"):
        check(not pod.get(k), f"{name}: responder {k}")
    check(not any("hostPath" in v for v in pod["volumes"]), f"{name}: responder hostPath volume")
    psc = pod.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True and psc.get("seccompProfile") == {"type": "RuntimeDefault"}, f"{name}: pod securityContext {psc}")
    check(len(pod["containers"]) == 1, f"{name}: one container")
    c = pod["containers"][0]
    sc = c.get("securityContext", {})
    check(sc.get("runAsNonRoot") is True and (sc.get("runAsUser") or psc.get("runAsUser") or 0) > 0, f"{name}: responder runs as non-root: {sc}")
    check(sc.get("privileged") is False and sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True,
          f"{name}: responder not privileged, no escalation, read-only root: {sc}")
    check(sc.get("capabilities") == {"drop": ["ALL"]}, f"{name}: responder capabilities {sc.get('capabilities')} (want drop ALL, add none)")
    check(sc.get("seccompProfile") == {"type": "RuntimeDefault"}, f"{name}: responder seccomp {sc.get('seccompProfile')}")
    check(ds is not None and c["image"] == ds["spec"]["template"]["spec"]["containers"][0]["image"], f"{name}: responder image is the agent's")
    check(c["args"] == ["respond", "--listen", "0.0.0.0:8792", "--config", CONFIG_MOUNT + "/config.yaml"], f"{name}: responder args {c['args']}")
    check([(p["name"], p["containerPort"]) for p in c["ports"]] == [("http", 8792)], f"{name}: responder ports {c['ports']}")
    for probe in ("livenessProbe", "readinessProbe"):
        check(c.get(probe, {}).get("httpGet") == {"path": "/healthz", "port": "http"}, f"{name}: responder {probe} {c.get(probe)}")
    env = {e["name"]: e for e in c["env"]}
    check(env.get("POD_NAMESPACE", {}).get("valueFrom") == {"fieldRef": {"fieldPath": "metadata.namespace"}}, f"{name}: POD_NAMESPACE from the downward API")
    check("cpu" in c["resources"]["requests"] and "memory" in c["resources"]["limits"], f"{name}: responder resources")

    # Mounts: the config read-only; the token Secret read-only at the config's token_file.
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    cm = by_kind.get("ConfigMap")
    cfg_mount = mounts.get(CONFIG_MOUNT)
    check(cfg_mount is not None and cfg_mount.get("readOnly") is True and vols[cfg_mount["name"]].get("configMap", {}).get("name") == (cm or {}).get("metadata", {}).get("name"),
          f"{name}: the responder's ConfigMap mounted read-only at {CONFIG_MOUNT}")
    if not cm:
        return None
    text = cm["data"]["config.yaml"]
    cfg = yaml.safe_load(text)
    check(set(cfg) == {"respond"} and cfg["respond"] == cfg_want, f"{name}: responder config {cfg} (want respond: {cfg_want})")
    token_file = cfg.get("respond", {}).get("webhook", {}).get("token_file", "")
    secret_files = {}
    for m in c["volumeMounts"]:
        v = vols[m["name"]]
        if "secret" in v:
            check(m.get("readOnly") is True and m["mountPath"] in (TOKEN_DIR, ADMIN_TOKEN_DIR), f"{name}: secret {m['name']} mounted read-only at {TOKEN_DIR} or {ADMIN_TOKEN_DIR}")
            check(v["secret"].get("defaultMode") in (0o400, 0o440), f"{name}: token Secret mode {v['secret'].get('defaultMode')}")
            for it in v["secret"]["items"]:
                secret_files[m["mountPath"] + "/" + it["path"]] = (v["secret"]["secretName"], it["key"])
    want_files = {token_file: (secret, key)}
    node_agent = cfg.get("respond", {}).get("node_agent")
    if node_agent:
        want_files[node_agent["token_file"]] = ("driftwatch-admin-token", "admin")
    check(secret_files == want_files, f"{name}: token files {want_files} are the mounted Secret items {secret_files}")
    # fsGroup makes a 0440 Secret file readable by the non-root user.
    if any(v["secret"].get("defaultMode") == 0o440 for v in vols.values() if "secret" in v):
        check(psc.get("fsGroup") == (sc.get("runAsGroup") or psc.get("runAsGroup")), f"{name}: token file group-readable by the process (fsGroup)")
    check("Bearer" not in text and "token:" not in text.replace("token_file", ""), f"{name}: no credential in the responder's ConfigMap")
    check(dep["spec"]["template"]["metadata"]["annotations"].get("checksum/config"), f"{name}: the config checksum rolls the Deployment")

    # Service: selects the responder's pods only; the agent's Service does not select them.
    svc = by_kind.get("Service")
    check(svc is not None and _selects(svc["spec"]["selector"], labels) and [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 8792)],
          f"{name}: responder Service")
    agent_pod_labels = ds["spec"]["template"]["metadata"]["labels"] if ds else {}
    check(svc is not None and not _selects(svc["spec"]["selector"], agent_pod_labels), f"{name}: the responder's Service selects agent pods")
    for (k, n), d in agent_docs.items():
        if k == "Service":
            check(not _selects(d["spec"]["selector"], labels), f"{name}: the agent's Service {n} selects responder pods")
        if k == "ServiceMonitor":
            check(not _selects(d["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]), f"{name}: the agent's ServiceMonitor scrapes the responder as job driftwatch")
    check(labels["app.kubernetes.io/name"] != "driftwatch", f"{name}: responder job label (app.kubernetes.io/name) is the agent's: the rules' up{{job=\"driftwatch\"}} would count it")

    # NetworkPolicy: its pods; ingress only to its port; egress only DNS and the API server.
    np = by_kind.get("NetworkPolicy")
    if np:
        spec = np["spec"]
        check(_selects(spec["podSelector"]["matchLabels"], labels) and spec["policyTypes"] == ["Ingress", "Egress"], f"{name}: NetworkPolicy selects the responder, both directions")
        want_in = {"ports": [{"port": "http", "protocol": "TCP"}]}
        if peers:
            want_in["from"] = peers
        check(spec["ingress"] == [want_in], f"{name}: NetworkPolicy ingress {spec['ingress']} (want {[want_in]})")
        dns = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}
        api = {"ports": [{"port": p, "protocol": "TCP"} for p in api_ports]}
        if cidr:
            api["to"] = [{"ipBlock": {"cidr": cidr}}]
        want_out = [dns, api]
        if node_agent:
            # The agents' admin port, to the agent pods only.
            agent_sel = {"app.kubernetes.io/name": "driftwatch", "app.kubernetes.io/instance": "driftwatch"}
            want_out.append({"ports": [{"port": node_agent["port"], "protocol": "TCP"}], "to": [{"podSelector": {"matchLabels": agent_sel}}]})
        check(spec["egress"] == want_out, f"{name}: NetworkPolicy egress {spec['egress']} (want {want_out})")

    sm = by_kind.get("ServiceMonitor")
    if sm:
        try:
            jsonschema.validate(sm, service_monitor_schema)
        except jsonschema.ValidationError as e:
            check(False, f"{name}: responder ServiceMonitor: {e.message} at {list(e.absolute_path)}")
        check(sm["spec"]["endpoints"][0]["port"] == "http" and _selects(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]),
              f"{name}: responder ServiceMonitor scrapes its Service")
    return _respond_config_check(agent, text, name, check)


def check_all(out, agent, names, load, service_monitor_schema):
    failures = []

    def check(cond, msg):
        if not cond:
            failures.append(msg)

    notes = set()
    for name in names:
        note = check_one(name, load(name, "respond"), load(name), agent, service_monitor_schema, check)
        if note:
            notes.add(note)
    if not failures:
        print(f"chart: responder manifests OK (RBAC exact, least privilege, token mount = token_file, off by default); "
              f"rendered config vs the binary: {', '.join(sorted(notes))}")
    return failures
