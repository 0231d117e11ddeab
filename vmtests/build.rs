//! Compiles the bench's floor programs (src/bpf/floor.bpf.c) and the
//! lock-mode tests' tracing program (src/bpf/snoop.bpf.c) with clang into
//! OUT_DIR; floor.rs and lock_suite.rs embed them. Same flags as bpf/build.rs, so the floor
//! is built like the programs it stands in for.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    // The types the signatures need come from the programs' own header.
    let include = manifest.join("../bpf/include");
    println!("cargo:rerun-if-changed={}", include.display());
    println!("cargo:rerun-if-env-changed=CLANG");
    for name in ["floor", "snoop"] {
        compile(
            &manifest.join(format!("src/bpf/{name}.bpf.c")),
            &include,
            &out.join(format!("{name}.bpf.o")),
        );
    }
}

/// One BPF C source into an object, with the flags bpf/build.rs uses.
fn compile(src: &std::path::Path, include: &std::path::Path, obj: &std::path::Path) {
    println!("cargo:rerun-if-changed={}", src.display());

    let arch_define = format!("-D__TARGET_ARCH_{}", bpf_arch());
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let result = Command::new(&clang)
        .args([
            "-target",
            "bpf",
            "-O2",
            "-g",
            "-Wall",
            "-Werror",
            &arch_define,
        ])
        .arg("-I")
        .arg(include)
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(obj)
        .status();
    match result {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("{clang} failed ({status}) compiling {}", src.display()),
        Err(e) => panic!(
            "cannot run {clang} ({e}): the test programs need clang and libbpf-dev; \
             run scripts/setup (or apt-get install -y clang libbpf-dev)"
        ),
    }
}

/// libbpf's headers pick register layouts by the architecture define; the
/// programs use no pt_regs, but it must name the one the bench runs on.
fn bpf_arch() -> &'static str {
    match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") | Ok("x86") => "x86",
        Ok("aarch64") => "arm64",
        Ok("riscv64") => "riscv",
        Ok("s390x") => "s390",
        Ok("powerpc64") => "powerpc",
        Ok("loongarch64") => "loongarch",
        Ok(other) => panic!("no BPF target arch for {other}"),
        Err(_) => panic!("cargo sets CARGO_CFG_TARGET_ARCH"),
    }
}
