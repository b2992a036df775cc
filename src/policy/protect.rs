//! Approvals as the kernel can apply them in protect mode. The kill is
//! decided at exec, in the kernel, before any finding exists: only approvals
//! that name the executable by a literal path or a `dir/*` / `dir/**`
//! prefix (or name no process at all) can be checked there. Pure: the
//! policy and a container's scope in, what to put in the kernel's maps out.

use super::{Policy, Scope, compile::Matcher, spec::RULE_NAMES};

/// `driftwatch.exe.source` codes the kernel keys approvals by, per binary
/// rule (0: a `#!` script the kernel judged, rule `exec_new_script`).
pub const RULE_SOURCES: [(&str, u32); 6] = [
    ("exec_new_binary", crate::abi::DW_SRC_UPPER),
    ("exec_fileless_memfd", crate::abi::DW_SRC_MEMFD),
    ("exec_fileless_deleted", crate::abi::DW_SRC_DELETED),
    ("exec_from_tmpfs", crate::abi::DW_SRC_TMPFS),
    ("exec_from_volume", crate::abi::DW_SRC_VOLUME),
    ("exec_new_script", 0),
];

/// How an allow entry's text approves a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowKind {
    /// This exact path.
    Exact,
    /// Files directly in this directory (text ends in `/`).
    Dir,
    /// Files anywhere below this directory (text ends in `/`).
    Tree,
}

impl AllowKind {
    /// The `DW_ALLOW_*` bit.
    pub fn bit(self) -> u32 {
        match self {
            Self::Exact => crate::abi::DW_ALLOW_EXACT,
            Self::Dir => crate::abi::DW_ALLOW_DIR,
            Self::Tree => crate::abi::DW_ALLOW_TREE,
        }
    }
}

/// One path the kernel lets run, for the sources of the rules it approves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelAllow {
    pub text: String,
    pub kind: AllowKind,
    pub sources: Vec<u32>,
}

/// What the kernel needs for one protect container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelApprovals {
    /// Some approval covers every binary finding of the container.
    pub all: bool,
    pub allows: Vec<KernelAllow>,
    /// Approvals that may approve a binary finding of the container but that
    /// the kernel cannot decide (parent, arguments, other globs): what they
    /// approve is still killed in protect mode (and reported as approved).
    pub undecidable: Vec<String>,
}

/// The binary rules a matcher's `kind`/`rule` keys let through, as sources;
/// None when it cannot approve a binary finding.
fn sources(m: &Matcher) -> Option<Vec<u32>> {
    if m.kind.is_some_and(|k| k != "binary") || m.endpoint.is_some() {
        return None;
    }
    let s: Vec<u32> = RULE_SOURCES
        .iter()
        .filter(|(rule, _)| m.rule.as_ref().is_none_or(|p| p.matches(rule)))
        .map(|(_, src)| *src)
        .collect();
    (!s.is_empty()).then_some(s)
}

/// The approvals in force at unix time `now` that could approve a binary
/// finding of the container `c`, compiled for the kernel.
pub fn kernel_approvals(p: &Policy, c: &Scope, now: i64) -> KernelApprovals {
    let mut out = KernelApprovals::default();
    for a in &p.compiled.approvals {
        if a.expires.is_some_and(|e| now > e) || !a.m.matches_scope(c) {
            continue;
        }
        let Some(sources) = sources(&a.m) else { continue };
        let m = &a.m;
        // A file_path key names a script: only script findings can match it.
        let sources = if m.file_path.is_some() { sources.into_iter().filter(|s| *s == 0).collect() } else { sources };
        if sources.is_empty() {
            continue;
        }
        if m.parent_executable.is_some() || m.command_args.is_some() || m.file_path.is_some() {
            out.undecidable.push(a.name.clone());
            continue;
        }
        let Some(exe) = &m.executable else {
            if sources.len() == RULE_SOURCES.len() {
                out.all = true;
            } else {
                // Every path, for some rules: the root directory's tree.
                out.allows.push(KernelAllow { text: "/".into(), kind: AllowKind::Tree, sources });
            }
            continue;
        };
        let allow = if let Some(text) = exe.literal() {
            KernelAllow { text: text.into(), kind: AllowKind::Exact, sources }
        } else if let Some((dir, recursive)) = exe.dir_prefix() {
            let kind = if recursive { AllowKind::Tree } else { AllowKind::Dir };
            KernelAllow { text: dir.into(), kind, sources }
        } else {
            out.undecidable.push(a.name.clone());
            continue;
        };
        out.allows.push(allow);
    }
    debug_assert!(RULE_SOURCES.iter().all(|(r, _)| RULE_NAMES.contains(r)));
    out
}

/// Learned signatures (`rule|executable|file|endpoint`, see
/// [`super::learned::signature`]) of binaries, as exact paths for the kernel.
/// A script's signature names its interpreter and script: the kernel cannot
/// check that pair at exec, so scripts learn mode saw are still killed.
pub fn learned_allows(signatures: &[String]) -> Vec<KernelAllow> {
    signatures
        .iter()
        .filter_map(|sig| {
            let mut parts = sig.splitn(4, '|');
            let (rule, exe, file) = (parts.next()?, parts.next()?, parts.next()?);
            let source = RULE_SOURCES.iter().find(|(r, s)| *r == rule && *s != 0)?.1;
            (!exe.is_empty() && file.is_empty()).then(|| KernelAllow {
                text: exe.to_string(),
                kind: AllowKind::Exact,
                sources: vec![source],
            })
        })
        .collect()
}

/// The seeded hash the kernel computes (ebpf/helpers/protect.h): FNV-1a over
/// the text's bytes, then the source folded in as one more symbol outside
/// the byte range.
pub fn allow_hash(seed: u64, text: &str, source: u32) -> u64 {
    const PRIME: u64 = 0x100_0000_01b3;
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    (h ^ (0x100 + u64::from(source))).wrapping_mul(PRIME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{PolicySpec, compile};

    fn policy(yaml: &str) -> Policy {
        let spec: PolicySpec = serde_yaml_ng::from_str(yaml).unwrap();
        Policy::new(compile(&spec).unwrap())
    }

    fn scope(ns: &str) -> Scope<'_> {
        Scope { namespace: Some(ns), ..Default::default() }
    }

    #[test]
    fn approvals_become_kernel_entries_or_are_named_undecidable() {
        let p = policy(
            r#"
approvals:
  - {name: tool, reason: r, match: {namespace: shop, executable: /tmp/x}}
  - {name: plugins, reason: r, match: {namespace: shop, executable: "/opt/plugins/**"}}
  - {name: bin, reason: r, match: {namespace: shop, executable: "/data/bin/*", rule: exec_from_volume}}
  - {name: by-parent, reason: r, match: {namespace: shop, executable: /tmp/y, parent_executable: /bin/sh}}
  - {name: glob, reason: r, match: {namespace: shop, executable: "/tmp/*.bin"}}
  - {name: files, reason: r, match: {namespace: shop, kind: file}}
  - {name: net, reason: r, match: {namespace: shop, endpoint: ":443"}}
  - {name: other-ns, reason: r, match: {namespace: dev}}
  - {name: old, reason: r, expires: "2000-01-01", match: {namespace: shop}}
"#,
        );
        let k = kernel_approvals(&p, &scope("shop"), 1_900_000_000);
        assert!(!k.all);
        let all: Vec<u32> = RULE_SOURCES.iter().map(|(_, s)| *s).collect();
        assert_eq!(
            k.allows,
            vec![
                KernelAllow { text: "/tmp/x".into(), kind: AllowKind::Exact, sources: all.clone() },
                KernelAllow { text: "/opt/plugins/".into(), kind: AllowKind::Tree, sources: all },
                KernelAllow {
                    text: "/data/bin/".into(),
                    kind: AllowKind::Dir,
                    sources: vec![crate::abi::DW_SRC_VOLUME]
                },
            ]
        );
        assert_eq!(k.undecidable, ["by-parent", "glob"]);
    }

    #[test]
    fn an_approval_without_process_keys_allows_everything_or_a_rule_everywhere() {
        let p = policy("approvals: [{name: a, reason: r, match: {namespace: shop, kind: binary}}]");
        assert!(kernel_approvals(&p, &scope("shop"), 0).all);
        assert_eq!(kernel_approvals(&p, &scope("dev"), 0), KernelApprovals::default());
        let p = policy("approvals: [{name: a, reason: r, match: {namespace: shop, rule: exec_fileless_memfd}}]");
        let k = kernel_approvals(&p, &scope("shop"), 0);
        assert!(!k.all);
        assert_eq!(
            k.allows,
            [KernelAllow { text: "/".into(), kind: AllowKind::Tree, sources: vec![crate::abi::DW_SRC_MEMFD] }]
        );
        // A script path can only approve scripts.
        let p = policy("approvals: [{name: s, reason: r, match: {namespace: shop, file_path: /tmp/s.sh}}]");
        assert_eq!(kernel_approvals(&p, &scope("shop"), 0).undecidable, ["s"]);
    }

    #[test]
    fn learned_binaries_become_exact_paths_for_their_rule() {
        let sigs = [
            "exec_new_binary|/tmp/tool||".to_string(),
            "exec_fileless_memfd|/memfd:x||".to_string(),
            "exec_new_script|/bin/sh|/tmp/s.sh|".to_string(),
            "shell_in_container|/bin/sh||".to_string(),
            "file_written||/etc/x|".to_string(),
        ];
        assert_eq!(
            learned_allows(&sigs),
            [
                KernelAllow {
                    text: "/tmp/tool".into(),
                    kind: AllowKind::Exact,
                    sources: vec![crate::abi::DW_SRC_UPPER]
                },
                KernelAllow {
                    text: "/memfd:x".into(),
                    kind: AllowKind::Exact,
                    sources: vec![crate::abi::DW_SRC_MEMFD]
                },
            ]
        );
    }

    #[test]
    fn hash_is_seeded_and_separates_sources_and_texts() {
        let h = allow_hash(0, "/tmp/x", 2);
        assert_ne!(h, allow_hash(1, "/tmp/x", 2));
        assert_ne!(h, allow_hash(0, "/tmp/x", 3));
        assert_ne!(h, allow_hash(0, "/tmp/x/", 2));
        // FNV-1a 64 of "a" is af63dc4c8601ec8c; the source symbol follows.
        let fnv_a = 0xaf63_dc4c_8601_ec8cu64;
        assert_eq!(allow_hash(0, "a", 0), (fnv_a ^ 0x100).wrapping_mul(0x100_0000_01b3));
    }
}
