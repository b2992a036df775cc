//! Compiles the eBPF programs (ebpf/*.bpf.c) with clang and generates the Rust
//! view of the kernel<->user ABI (ebpf/include/abi.h) with bindgen, so both
//! sides share one definition.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let ebpf = Path::new("ebpf");
    rerun_for_tree(ebpf);
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");

    let clang = find_clang();
    let arch_include = multiarch_include();
    for entry in fs::read_dir(ebpf).expect("read ebpf/") {
        let path = entry.expect("ebpf/ entry").path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(stem) = name.strip_suffix(".bpf.c") else { continue };
        let obj = out.join(format!("{stem}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86", "-Wall", "-Werror"])
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

    if env::var_os("LIBCLANG_PATH").is_none() {
        for dir in ["/usr/lib/llvm-19/lib", "/usr/lib/llvm-18/lib", "/usr/lib/llvm-17/lib"] {
            if Path::new(dir).exists() {
                // SAFETY: build scripts are single-threaded.
                unsafe { env::set_var("LIBCLANG_PATH", dir) };
                break;
            }
        }
    }
    let bindings = bindgen::Builder::default()
        .header("ebpf/include/abi.h")
        .allowlist_type("dw_.*")
        .allowlist_var("DW_.*")
        .derive_default(true)
        .derive_debug(true)
        .derive_copy(true)
        .prepend_enum_name(false)
        .generate()
        .unwrap_or_else(|e| {
            fail(&format!(
                "bindgen could not parse ebpf/include/abi.h ({e}); install libclang (apt-get install clang-19) or set LIBCLANG_PATH"
            ))
        });
    bindings.write_to_file(out.join("abi.rs")).expect("write abi.rs");
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
        "clang not found: the eBPF programs need clang >= 17 and libbpf headers (apt-get install clang-19 libbpf-dev), or set CLANG=/path/to/clang",
    )
}

fn multiarch_include() -> String {
    // asm/types.h for linux/bpf.h lives in the multiarch dir on Debian.
    let dir = "/usr/include/x86_64-linux-gnu";
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        fail("libbpf headers not found (/usr/include/bpf/bpf_helpers.h): apt-get install libbpf-dev");
    }
    dir.to_string()
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}
