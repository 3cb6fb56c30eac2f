//! Compiles `proto/ledgerq/command.proto` (the command wire encoding) and
//! `proto/ledgerq/raft.proto` (the replicated log's records) with
//! prost-build into `$OUT_DIR/ledgerq.{command,raft}.v1.rs`, which
//! `src/pb.rs` includes. Uses the `protoc` that `PROTOC` names, else a
//! vendored one, so a fresh machine needs no system protoc.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let proto_root = manifest_dir.join("../proto");
    let protos = [
        proto_root.join("ledgerq/command.proto"),
        proto_root.join("ledgerq/raft.proto"),
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PROTOC");
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path().map_err(std::io::Error::other)?;
        std::env::set_var("PROTOC", protoc);
    }

    prost_build::Config::new()
        // `bytes` fields decode as `bytes::Bytes`: decoding from a `Bytes`
        // buffer slices the bodies out of it instead of copying them.
        .bytes(["."])
        .compile_protos(&protos, &[proto_root])
}
