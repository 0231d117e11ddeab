// Compiles proto/provider.proto with tonic. prost-build needs `protoc`:
// Debian's protobuf-compiler (scripts/setup installs it) or PROTOC=path.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/provider.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/provider.proto"], &["proto"])?;
    Ok(())
}
