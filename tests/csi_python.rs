//! Runs the independent Python gRPC client (grpcio, stubs generated from
//! csi-shim/proto at test time) against the real `kernelseal csi-provider`.
//! Needs `pip install grpcio grpcio-tools`; outside CI a missing module
//! skips loudly, in CI it fails.

use std::path::Path;
use std::process::Command;

#[test]
fn python_grpc_client_against_the_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let have = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        let msg = "python3 with grpcio + grpcio-tools not found: pip install grpcio grpcio-tools";
        if std::env::var_os("CI").is_some() {
            panic!("{msg} (required in CI)");
        }
        eprintln!("\n!!!!!!!!!! SKIPPING THE PYTHON CSI CLIENT TEST: {msg} !!!!!!!!!!\n");
        return;
    }
    let out = Command::new("python3")
        .arg(root.join("csi-shim/tests/python/csi_client_test.py"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_kernelseal-core"))
        .arg("--proto")
        .arg(root.join("csi-shim/proto/provider.proto"))
        .arg("--fixture")
        .arg(root.join("csi-shim/tests/fixtures/mount_request.json"))
        .output()
        .expect("run python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "python client failed:\n{text}");
    assert!(text.contains("PASS"), "{text}");
}
