//! Compiles `proto/ledgerq/command.proto` (the command wire encoding) with
//! prost-build into `$OUT_DIR/ledgerq.command.v1.rs`, which
//! `src/encoding.rs` includes. Needs `protoc` on the PATH, or `PROTOC` set.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let proto_root = manifest_dir.join("../proto");
    let command_proto = proto_root.join("ledgerq/command.proto");

    println!("cargo:rerun-if-changed={}", command_proto.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PROTOC");

    prost_build::Config::new()
        // `bytes` fields decode as `bytes::Bytes`: decoding from a `Bytes`
        // buffer slices the bodies out of it instead of copying them.
        .bytes(["."])
        .compile_protos(&[command_proto], &[proto_root])
}
