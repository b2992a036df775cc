//! The source layout's rules, checked on the source itself: imports follow
//! the data and only point down it. Each file's imports are read from its
//! text (comments and test modules left out): `use crate::...` groups,
//! `crate::a::b` paths, `super::` paths and `mod` declarations.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Module path (`classify::rules`) -> file, for every `.rs` file under src/.
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("src/").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&src(), &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(src()).unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                parts.pop();
            }
            (parts.join("::"), p)
        })
        .collect()
}

/// The code of a file without its test module and comments.
fn code(p: &Path) -> String {
    let text = std::fs::read_to_string(p).expect("source file");
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines().map(|l| l.split("//").next().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

/// Every `a::b::c` path a `use crate::{...};` group names, expanded.
fn expand(prefix: &str, s: &str, out: &mut Vec<String>) {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        let (mut depth, mut cur) = (0, String::new());
        for ch in inner.chars() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(prefix, &std::mem::take(&mut cur), out);
                    continue;
                }
                _ => {}
            }
            cur.push(ch);
        }
        expand(prefix, &cur, out);
    } else if let Some((head, rest)) = s.split_once("::{") {
        expand(&format!("{prefix}{}::", head.trim()), &format!("{{{rest}"), out);
    } else if !s.is_empty() {
        out.push(format!("{prefix}{}", s.split(" as ").next().unwrap_or(s).trim()));
    }
}

/// The module of `mods` a path names (its longest known prefix).
fn resolve<'a>(mods: &'a BTreeMap<String, PathBuf>, path: &str) -> Option<&'a str> {
    let segs: Vec<&str> = path.split("::").filter(|s| *s != "self").collect();
    (1..=segs.len()).rev().find_map(|n| mods.get_key_value(&segs[..n].join("::")).map(|(k, _)| k.as_str()))
}

/// Module -> the modules it imports (not itself, not its ancestors).
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let mut edges = BTreeMap::new();
    for (m, p) in &mods {
        let text = code(p);
        let mut paths = Vec::new();
        for group in text.split("use crate::").skip(1) {
            expand("", group.split(';').next().unwrap_or_default(), &mut paths);
        }
        for piece in text.split("crate::").skip(1) {
            paths.push(piece.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect());
        }
        let parent = m.rsplit_once("::").map_or("", |(a, _)| a);
        for piece in text.split("super::").skip(1) {
            let rest: String = piece.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            paths.push(if parent.is_empty() { rest } else { format!("{parent}::{rest}") });
        }
        for line in text.lines() {
            let l = line.trim().trim_start_matches("pub(crate) ").trim_start_matches("pub ");
            if let Some(name) = l.strip_prefix("mod ").and_then(|r| r.strip_suffix(';')) {
                paths.push(if m.is_empty() { name.to_string() } else { format!("{m}::{name}") });
            }
        }
        let to: BTreeSet<String> = paths
            .iter()
            .filter_map(|p| resolve(&mods, p.trim_end_matches(':')))
            .filter(|t| *t != m && !m.starts_with(&format!("{t}::")) && !t.is_empty())
            .map(str::to_string)
            .collect();
        edges.insert(m.clone(), to);
    }
    edges
}

#[test]
fn classify_and_bpf_do_not_import_the_pipeline_or_the_sinks() {
    for (m, to) in imports() {
        if m.starts_with("classify") || m.starts_with("bpf") {
            let bad: Vec<&String> = to.iter().filter(|t| t.starts_with("pipeline") || t.starts_with("sink")).collect();
            assert!(bad.is_empty(), "{m} imports {bad:?}");
        }
    }
}

#[test]
fn metrics_is_a_leaf() {
    for (m, to) in imports() {
        if m.starts_with("metrics") {
            let bad: Vec<&String> = to.iter().filter(|t| !t.starts_with("metrics") && *t != "abi").collect();
            assert!(bad.is_empty(), "{m} imports {bad:?}: metrics may only use the kernel ABI");
        }
    }
}

#[test]
fn no_import_cycles() {
    let edges = imports();
    // Depth-first search for a back edge; report the cycle it closes.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            return Some(stack[i..].iter().cloned().chain([m.to_string()]).collect());
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_string());
        for t in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(t, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in edges.keys() {
        if let Some(cycle) = visit(m, &edges, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
    // The check sees real edges (a broken parser would pass vacuously).
    assert!(edges["pipeline"].contains("containers") && edges["containers"].contains("procfs"), "{edges:#?}");
}

#[test]
fn files_stay_small() {
    for (m, p) in modules() {
        let lines = code(&p).lines().count();
        assert!(lines <= 900, "{m} ({}) has {lines} lines outside its tests", p.display());
    }
    let main = std::fs::read_to_string(src().join("main.rs")).expect("main.rs");
    assert!(main.lines().count() < 100, "main.rs: {} lines", main.lines().count());
}
