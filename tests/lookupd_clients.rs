//! NSQ client libraries that nobody here wrote — pynsq (from PyPI) and nsqjs
//! (from npm), both installed by `.ci/run` — discover two `ledgerq serve`
//! nodes through `ledgerq lookupd` only and consume a topic spread over
//! both. Each runs a small reader script in `tests/clients/` that prints
//! the distinct bodies it FINed.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::lookupd::Lookupd;
use common::{wait_until, Server};

/// Publishes 40 messages to each of two nodes registered with one lookupd,
/// then runs `program script LOOKUPD TOPIC CHANNEL COUNT TIMEOUT` and checks
/// that it received every message. `missing` is how the runtime says the
/// library is not installed, and `install` how to install it.
fn consume_through_lookupd(program: &str, script: &str, missing: &str, install: &str) {
    let lookupd = Lookupd::start(&[]);
    let lookupd_flag = format!("--lookupd-tcp-address={}", lookupd.tcp_address);
    let flags = [lookupd_flag.as_str(), "--broadcast-address=127.0.0.1"];
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let nodes = [
        Server::start(data_a.path(), &flags),
        Server::start(data_b.path(), &flags),
    ];
    let mut expected = BTreeSet::new();
    for (n, node) in nodes.iter().enumerate() {
        for i in 0..40 {
            let body = format!("node{n}-{i}");
            node.post("/pub?topic=invoices", body.as_bytes())
                .assert_ok();
            expected.insert(body);
        }
    }
    wait_until("both nodes registered", || {
        lookupd.producers("invoices").len() == 2
    });

    let script = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(program)
        .arg(script)
        .arg(lookupd.http_address.to_string())
        .args(["invoices", "billing", &expected.len().to_string(), "30"])
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e} ({install})"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains(missing), "not installed: {install}");
    assert!(output.status.success(), "{program} reader failed: {stderr}");
    let received: BTreeSet<String> =
        serde_json::from_slice(&output.stdout).expect("JSON array of bodies");
    assert_eq!(received, expected);
}

#[test]
fn pynsq_reader_consumes_both_nodes_found_through_lookupd() {
    consume_through_lookupd(
        "python3",
        "pynsq_lookupd_reader.py",
        "No module named 'nsq'",
        "pip install pynsq",
    );
}

#[test]
fn nsqjs_reader_consumes_both_nodes_found_through_lookupd() {
    consume_through_lookupd(
        "node",
        "nsqjs_lookupd_reader.js",
        "Cannot find module 'nsqjs'",
        "npm ci --prefix tests/clients",
    );
}
