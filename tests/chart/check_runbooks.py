"""Runbooks (docs/runbooks/*.md) name only what exists, in one structure (run by
tests/chart/test.sh):
  - every page but README.md: `# <alert>`, then ## Meaning, ## Impact, ## Diagnosis,
    ## Mitigation, in that order (the Prometheus Operator runbooks' structure);
  - every dotted name in backquotes is a chart value (helm/driftwatch/values.yaml; under
    `config.` an agent config key), an agent config key (src/default-config.yaml, in full
    or its tail, e.g. `retention.max_bytes` inside a response.capture paragraph), or a
    field of a finding, file or other tool named in KNOWN_PREFIXES;
  - every page is linked from README.md's table.
"""
import glob, os, re, sys
import yaml

values = yaml.safe_load(open("helm/driftwatch/values.yaml"))
config = yaml.safe_load(open("src/default-config.yaml"))
# Findings' fields, files and other tools' settings: not ours to check here.
KNOWN_PREFIXES = ("driftwatch.", "process.", "file.", "k8s.", "container.", "manifest.json", "ld.so.preload",
                  "runtimeSpec.", "prometheus.prometheusSpec.", "app.kubernetes.io", "kubernetes.io")
# Values whose content is Kubernetes' or the user's own (any key below them is fine).
FREE_FORM = {"resources", "nodeSelector", "affinity", "tolerations", "podAnnotations", "podLabels",
             "podSecurityContext", "tlsConfig", "labels", "annotations", "config"}


def resolve(tree, parts, free=()):
    node = tree
    for i, p in enumerate(parts):
        if isinstance(node, dict) and p in node:
            if p in free and i < len(parts) - 1:
                return True
            node = node[p]
        else:
            return False
    return True


def config_paths(d, prefix=()):
    for k, v in d.items():
        yield prefix + (k,)
        if isinstance(v, dict):
            yield from config_paths(v, prefix + (k,))


CONFIG_PATHS = {".".join(p) for p in config_paths(config)}


def known(name):
    if name.startswith(KNOWN_PREFIXES):
        return True
    parts = name.split(".")
    if parts[0] == "config" and len(parts) > 1:
        return resolve(config, parts[1:])
    if resolve(values, parts, FREE_FORM) or name in CONFIG_PATHS:
        return True
    return any(p.endswith("." + name) for p in CONFIG_PATHS)


bad = []
readme = open("docs/runbooks/README.md").read()
for path in sorted(glob.glob("docs/runbooks/*.md")):
    name = os.path.basename(path)[:-3]
    text = open(path).read()
    # Code blocks are commands and output, not names of settings.
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for m in sorted(set(re.findall(r"`([a-zA-Z_][a-zA-Z0-9_]*(?:\.[a-zA-Z0-9_*<>-]+)+)`", prose))):
        if not known(m):
            bad.append(f"{path}: `{m}` is neither a chart value nor an agent config key")
    if name == "README":
        continue
    heads = re.findall(r"^## (.+)$", text, re.M)
    if text.split("\n", 1)[0] != f"# {name}" or heads != ["Meaning", "Impact", "Diagnosis", "Mitigation"]:
        bad.append(f"{path}: want '# {name}' and ## Meaning, Impact, Diagnosis, Mitigation; got {heads}")
    if f"]({name}.md)" not in readme:
        bad.append(f"{path}: not linked from docs/runbooks/README.md")
if bad:
    sys.exit("runbooks:\n  " + "\n  ".join(bad))
print(f"runbooks: {len(glob.glob('docs/runbooks/*.md')) - 1} pages: Meaning/Impact/Diagnosis/Mitigation, every value and config key they name exists")
