# Sourced by bench/instructions.sh and bench/footprint.sh: builds the pipeline
# bench (benches/pipeline.rs) and prints the path of its executable.
pipeline_bench_bin() {
  cargo bench --bench pipeline --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "pipeline" and m.get("executable"):
        print(m["executable"])'
}
