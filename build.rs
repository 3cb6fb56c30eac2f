//! Compiles the gRPC services with tonic-prost-build into `$OUT_DIR`:
//! `proto/ledgerq/cluster.proto` (the replica group's service, included by
//! `src/replication/rpc.rs`; its raft and command messages are the storage
//! crate's own, `ledgerq_storage::pb`, not copies) and
//! `proto/ledgerq/admin/v1/admin.proto` (the admin API, included by
//! `src/admin/mod.rs`, with a file descriptor set for gRPC reflection).
//! Uses the `protoc` that `PROTOC` names, else a vendored one, so a fresh
//! machine needs no system protoc.

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    for file in [
        "proto/ledgerq/cluster.proto",
        "proto/ledgerq/raft.proto",
        "proto/ledgerq/command.proto",
        "proto/ledgerq/admin/v1/admin.proto",
        "build.rs",
    ] {
        println!("cargo:rerun-if-changed={file}");
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path().map_err(std::io::Error::other)?;
        std::env::set_var("PROTOC", protoc);
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .extern_path(".ledgerq.raft.v1", "::ledgerq_storage::pb::raft")
        .extern_path(".ledgerq.command.v1", "::ledgerq_storage::pb::command")
        .compile_protos(&["proto/ledgerq/cluster.proto"], &["proto"])?;
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        // The answers print as JSON (`ledgerq admin --output json`).
        .message_attribute(".ledgerq.admin.v1", "#[derive(serde::Serialize)]")
        .file_descriptor_set_path(out_dir.join("admin_descriptor.bin"))
        .compile_protos(&["proto/ledgerq/admin/v1/admin.proto"], &["proto"])
}
