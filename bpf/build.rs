//! Compiles the BPF C programs with clang into OUT_DIR; lib.rs embeds them.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    let include = manifest.join("include");
    let src = manifest.join("src/bpf/kernelseal.bpf.c");
    // The object is kernelseal.bpf.c and the parts it includes.
    for p in [&manifest.join("src/bpf"), &include] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-env-changed=CLANG");

    // libbpf's headers pick register layouts by this; the programs use no
    // pt_regs, but the define must name the architecture the agent runs on.
    let arch = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") | Ok("x86") => "x86",
        Ok("aarch64") => "arm64",
        Ok("riscv64") => "riscv",
        Ok("s390x") => "s390",
        Ok("powerpc64") => "powerpc",
        Ok("loongarch64") => "loongarch",
        Ok(other) => panic!("no BPF target arch for {other}"),
        Err(_) => panic!("cargo sets CARGO_CFG_TARGET_ARCH"),
    };
    let arch_define = format!("-D__TARGET_ARCH_{arch}");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let obj = out.join("kernelseal.bpf.o");
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
        .arg(&include)
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .status();
    match result {
        Ok(status) if status.success() => {}
        Ok(status) => panic!("{clang} failed ({status}) compiling {}", src.display()),
        Err(e) => panic!(
            "cannot run {clang} ({e}): the BPF programs need clang and libbpf-dev; \
             run scripts/setup (or apt-get install -y clang libbpf-dev)"
        ),
    }
}
