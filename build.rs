//! Compiles the eBPF programs (ebpf/*.bpf.c) with clang and generates the Rust
//! view of the kernel<->user ABI (ebpf/include/abi.h) with bindgen, so both
//! sides share one definition.
//!
//! The bindings are also committed as a snapshot (ebpf/include/abi.rs): a
//! normal build checks that bindgen still produces exactly that text, and
//! `DRIFTWATCH_BPF_STUB=1` builds from the snapshot with empty placeholder
//! objects, without clang or libclang (editors, rust-analyzer, `cargo check`).

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

/// Set to 1: no clang, no libclang; empty eBPF objects, bindings from the snapshot.
const STUB_ENV: &str = "DRIFTWATCH_BPF_STUB";
/// Set to 1: write the bindings bindgen generates to the snapshot instead of checking it.
const UPDATE_ENV: &str = "DRIFTWATCH_UPDATE_ABI_SNAPSHOT";
/// The committed bindgen output for ebpf/include/abi.h.
const SNAPSHOT: &str = "ebpf/include/abi.rs";
/// Put before bindgen's output in the snapshot (part of the compared text).
const SNAPSHOT_HEADER: &str = "\
// @generated from ebpf/include/abi.h by build.rs (bindgen). Do not edit: edit abi.h, then
// refresh with `DRIFTWATCH_UPDATE_ABI_SNAPSHOT=1 cargo build` (needs clang/libclang).
// A normal build fails when this file differs from what bindgen generates;
// `DRIFTWATCH_BPF_STUB=1` builds use it instead of running bindgen.
";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let ebpf = Path::new("ebpf");
    rerun_for_tree(ebpf);
    for var in ["CLANG", "LIBCLANG_PATH", STUB_ENV, UPDATE_ENV] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    if flag(STUB_ENV) {
        if flag(UPDATE_ENV) {
            fail(&format!("{UPDATE_ENV}=1 needs bindgen: unset {STUB_ENV} to refresh {SNAPSHOT}"));
        }
        for (_, stem) in bpf_sources(ebpf) {
            fs::write(out.join(format!("{stem}.bpf.o")), b"").expect("write placeholder object");
        }
        let snapshot = fs::read_to_string(SNAPSHOT).unwrap_or_else(|e| fail(&format!("cannot read {SNAPSHOT}: {e}")));
        fs::write(out.join("abi.rs"), snapshot).expect("write abi.rs");
        println!(
            "cargo:warning={STUB_ENV}=1: the eBPF objects are empty placeholders and the ABI comes from {SNAPSHOT}; \
             this binary cannot load its sensor"
        );
        return;
    }

    let target_arch = target_arch();
    let clang = find_clang();
    let arch_include = multiarch_include();
    for (path, stem) in bpf_sources(ebpf) {
        let obj = out.join(format!("{stem}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-g", "-O2", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-D__TARGET_ARCH_{target_arch}"))
            .arg(format!("-I{arch_include}"))
            .arg("-c")
            .arg(&path)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| fail(&format!("cannot run {clang}: {e}")));
        if !status.success() {
            fail(&format!("{clang} failed to compile {}", path.display()));
        }
    }

    let bindings = format!("{SNAPSHOT_HEADER}{}", generate_bindings());
    if flag(UPDATE_ENV) {
        fs::write(SNAPSHOT, &bindings).unwrap_or_else(|e| fail(&format!("cannot write {SNAPSHOT}: {e}")));
        println!("cargo:warning={UPDATE_ENV}=1: wrote {SNAPSHOT}; commit it with abi.h");
    } else {
        check_snapshot(&bindings);
    }
    fs::write(out.join("abi.rs"), bindings).expect("write abi.rs");
}

/// True when the variable is "1"; unset, empty or "0" is false, anything else fails.
fn flag(var: &str) -> bool {
    match env::var(var).as_deref() {
        Ok("1") => true,
        Ok("" | "0") | Err(env::VarError::NotPresent) => false,
        Ok(other) => fail(&format!("{var}={other:?}: expected \"1\" (on) or unset/\"0\" (off)")),
        Err(e) => fail(&format!("{var}: {e}")),
    }
}

/// (path, stem) of every ebpf/<stem>.bpf.c, in name order.
fn bpf_sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut sources: Vec<(PathBuf, String)> = fs::read_dir(dir)
        .expect("read ebpf/")
        .map(|entry| entry.expect("ebpf/ entry").path())
        .filter_map(|path| {
            let stem = path.file_name()?.to_str()?.strip_suffix(".bpf.c")?.to_string();
            Some((path, stem))
        })
        .collect();
    sources.sort();
    sources
}

/// bindgen's Rust for ebpf/include/abi.h. Formatted with prettyplease (its
/// version is pinned in Cargo.lock), not rustfmt, so that the text does not
/// depend on which rustfmt is installed.
fn generate_bindings() -> String {
    if env::var_os("LIBCLANG_PATH").is_none() {
        for dir in ["/usr/lib/llvm-19/lib", "/usr/lib/llvm-18/lib", "/usr/lib/llvm-17/lib"] {
            if Path::new(dir).exists() {
                // SAFETY: build scripts are single-threaded.
                unsafe { env::set_var("LIBCLANG_PATH", dir) };
                break;
            }
        }
    }
    bindgen::Builder::default()
        .header("ebpf/include/abi.h")
        .allowlist_type("dw_.*")
        .allowlist_var("DW_.*")
        .derive_default(true)
        .derive_debug(true)
        .derive_copy(true)
        .prepend_enum_name(false)
        .formatter(bindgen::Formatter::Prettyplease)
        .generate()
        .unwrap_or_else(|e| {
            fail(&format!(
                "bindgen could not parse ebpf/include/abi.h ({e}); install libclang (apt-get install clang-19) or set LIBCLANG_PATH \
                 (or build with {STUB_ENV}=1 to use {SNAPSHOT} without clang)"
            ))
        })
        .to_string()
}

/// Fails the build unless the committed snapshot is exactly `bindings`.
fn check_snapshot(bindings: &str) {
    let snapshot = match fs::read_to_string(SNAPSHOT) {
        Ok(s) => s,
        Err(e) => fail(&format!(
            "cannot read the ABI bindings snapshot {SNAPSHOT} ({e}): create it with `{UPDATE_ENV}=1 cargo build` and commit it"
        )),
    };
    if snapshot == bindings {
        return;
    }
    let (mut in_snapshot, mut from_bindgen) = (snapshot.lines(), bindings.lines());
    let mut line = 1;
    let difference = loop {
        match (in_snapshot.next(), from_bindgen.next()) {
            (Some(a), Some(b)) if a == b => line += 1,
            (None, None) => break "the same lines with other line endings".to_string(),
            (a, b) => {
                let (a, b) = (a.unwrap_or("<end of file>"), b.unwrap_or("<end of file>"));
                break format!("first difference at line {line}: the snapshot has {a:?}, bindgen gives {b:?}");
            }
        }
    };
    fail(&format!(
        "{SNAPSHOT} is out of date: bindgen's output for ebpf/include/abi.h differs from it \
         ({difference}).\n\
         abi.h is the source of truth: refresh the snapshot with `{UPDATE_ENV}=1 cargo build` and commit it \
         (a bindgen upgrade in Cargo.lock changes the text too)"
    ))
}

fn rerun_for_tree(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                rerun_for_tree(&p);
            } else {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
}

/// The `__TARGET_ARCH_*` name libbpf's bpf_tracing.h wants for the target.
fn target_arch() -> &'static str {
    match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => fail(&format!(
            "driftwatch supports x86_64 (its eBPF programs build for x86_64 and aarch64 only), not target_arch {other}"
        )),
        Err(e) => fail(&format!("CARGO_CFG_TARGET_ARCH: {e}")),
    }
}

fn find_clang() -> String {
    if let Ok(c) = env::var("CLANG") {
        return c;
    }
    for c in ["clang-19", "clang-18", "clang-17", "clang"] {
        if Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return c.to_string();
        }
    }
    fail(
        "clang not found: the eBPF programs need clang >= 17 and libbpf headers (apt-get install clang-19 libbpf-dev), or set CLANG=/path/to/clang \
         (or build with DRIFTWATCH_BPF_STUB=1 for `cargo check` and editors, without eBPF programs)",
    )
}

/// The Debian multiarch include dir of the target (asm/types.h for linux/bpf.h lives there).
fn multiarch_include() -> String {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let dir = format!("/usr/include/{arch}-linux-gnu");
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        fail("libbpf headers not found (/usr/include/bpf/bpf_helpers.h): apt-get install libbpf-dev");
    }
    if !Path::new(&dir).join("asm/types.h").exists() && !Path::new("/usr/include/asm/types.h").exists() {
        fail(&format!(
            "kernel headers for {arch} not found ({dir}/asm/types.h): apt-get install linux-libc-dev \
             (when cross-compiling, the target's: linux-libc-dev:arm64 for aarch64)"
        ));
    }
    dir
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}
