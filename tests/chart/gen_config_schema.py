"""Generates the `config:` part of helm/driftwatch/values.schema.json from the agent's
embedded defaults (src/default-config.yaml, what `driftwatch default-config` prints: every
key the agent accepts, with its default) and the few facts the defaults cannot show
(OVERRIDES, read off the config structs in src/config.rs and src/config/).

So `helm install` rejects a `config:` the agent would refuse (an unknown key, a wrong type)
before a pod starts; the agent's own check (`driftwatch check-config`) stays the judge of
values (ranges, paths, regexes).

  python3 tests/chart/gen_config_schema.py          # rewrite values.schema.json's config
  python3 tests/chart/gen_config_schema.py --check  # fail when it is stale (tests/chart/test.sh)

After adding a config key: run it without --check; a key whose default is null, a map with
free keys or a value of more than one type needs an OVERRIDES entry.
"""
import json, sys
import yaml

DEFAULTS = "src/default-config.yaml"
SCHEMA = "helm/driftwatch/values.schema.json"

STR, BOOL, INT = {"type": "string"}, {"type": "boolean"}, {"type": "integer"}
STRINGS = {"type": "array", "items": STR}

# Dotted key -> schema, where the default's type is not the whole story.
OVERRIDES = {
    # Option<SocketAddr>: null turns the health listener off.
    "health_addr": {"type": ["string", "null"]},
    # KubeMode: auto, or a boolean (also as a string).
    "kubernetes.enabled": {"enum": ["auto", True, False, "true", "false"]},
    # Option<bool>: null = on when an endpoint is set.
    "otlp.enabled": {"type": ["boolean", "null"]},
    # Option<OtlpProtocol>.
    "otlp.protocol": {"enum": ["grpc", "http/protobuf", None]},
    # Option<Vec<String>>.
    "alertmanager.urls": {"type": ["array", "null"], "items": STR},
    # BTreeMap<String, String> / BTreeMap<String, Vec<String>>: keys are the user's.
    "otlp.headers": {"type": "object", "additionalProperties": STR},
    "alertmanager.headers": {"type": "object", "additionalProperties": STR},
    "rules.config.approved_digests": {"type": "object", "additionalProperties": STRINGS},
    "rules.package.subcommands": {"type": "object", "additionalProperties": STRINGS},
    # Lists of objects the agent checks itself (policy.rs, redaction.rs).
    "policy.approvals": {"type": "array", "items": {"type": "object"}},
    "policy.modes": {"type": "array", "items": {"type": "object"}},
    "redaction.patterns": {"type": "array", "items": {"type": "object"}},
}


def infer(value, path):
    """The schema of one key from its default: objects closed (unknown keys are errors,
    as serde's deny_unknown_fields makes them), scalars typed, lists by their items."""
    if path in OVERRIDES:
        return OVERRIDES[path]
    if isinstance(value, dict):
        return {
            "type": "object",
            "additionalProperties": False,
            "properties": {k: infer(v, f"{path}.{k}" if path else k) for k, v in value.items()},
        }
    if isinstance(value, bool):
        return dict(BOOL)
    if isinstance(value, int):
        return dict(INT)
    if isinstance(value, str):
        return dict(STR)
    if isinstance(value, list):
        items = {infer(v, path + "[]")["type"] for v in value if not isinstance(v, (dict, list))} if value else set()
        if len(items) == 1:
            return {"type": "array", "items": {"type": items.pop()}}
        return {"type": "array"}
    sys.exit(f"{DEFAULTS}: {path}: default {value!r} says nothing of its type: add it to OVERRIDES in {__file__}")


def generate():
    defaults = yaml.safe_load(open(DEFAULTS))
    unused = set(OVERRIDES) - set(paths(defaults))
    if unused:
        sys.exit(f"{__file__}: OVERRIDES names keys {DEFAULTS} does not have: {sorted(unused)}")
    schema = infer(defaults, "")
    schema["description"] = (
        "Agent configuration merged over the chart's keys (generated from src/default-config.yaml by "
        "tests/chart/gen_config_schema.py): unknown keys and wrong types are rejected here, values by the agent"
    )
    return schema


def paths(d, prefix=""):
    for k, v in d.items():
        p = f"{prefix}.{k}" if prefix else k
        yield p
        if isinstance(v, dict):
            yield from paths(v, p)


def main():
    text = open(SCHEMA).read()
    values = json.loads(text)
    want = generate()
    if "--check" in sys.argv:
        if values["properties"]["config"] != want:
            sys.exit(f"{SCHEMA}: config schema is stale: run python3 {sys.argv[0]} (after a config key changed)")
        print("chart: values.schema.json's config matches src/default-config.yaml")
        return
    values["properties"]["config"] = want
    open(SCHEMA, "w").write(json.dumps(values, indent=2) + "\n")


if __name__ == "__main__":
    main()
