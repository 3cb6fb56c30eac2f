//! Compiles `proto/ledgerq/cluster.proto` (the replica group's gRPC
//! service) with tonic-prost-build into `$OUT_DIR/ledgerq.cluster.v1.rs`,
//! which `src/replication/rpc.rs` includes. The raft and command messages
//! it carries are the storage crate's own (`ledgerq_storage::pb`), not
//! copies. Needs `protoc` on the PATH, or `PROTOC` set.

fn main() -> std::io::Result<()> {
    let proto = "proto/ledgerq/cluster.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-changed=proto/ledgerq/raft.proto");
    println!("cargo:rerun-if-changed=proto/ledgerq/command.proto");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PROTOC");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .extern_path(".ledgerq.raft.v1", "::ledgerq_storage::pb::raft")
        .extern_path(".ledgerq.command.v1", "::ledgerq_storage::pb::command")
        .compile_protos(&[proto], &["proto"])
}
