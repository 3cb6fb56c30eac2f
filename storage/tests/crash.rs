//! Kill a child process mid-write (SIGKILL) and check what survived: every
//! publish whose commit returned is in the log after reopening.
//!
//! The child is this same test binary, run with `LEDGERQ_CRASH_CHILD_DIR`
//! set; it commits batches forever and prints the last offset of each
//! committed batch.

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};

use bytes::Bytes;
use ledgerq_storage::{Command, Outcome, StoreOptions};

const CHILD_ENV: &str = "LEDGERQ_CRASH_CHILD_DIR";

#[test]
fn crash_child_writer() {
    // Only does work when started as the child of the test below.
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (store, mut state) = ledgerq_storage::open(StoreOptions::new(dir)).unwrap();
    let mut batch = store.batch();
    let create = Command::CreateTopic { name: "t".into() };
    let Ok(Outcome::TopicCreated { topic, .. }) = state.apply(&create, &mut batch) else {
        panic!("create topic");
    };
    state.flush_dirty(&mut batch);
    store.commit(batch).unwrap();
    for round in 0u64.. {
        let mut batch = store.batch();
        let bodies = (0..50)
            .map(|i| Bytes::from(format!("{round}-{i}")))
            .collect();
        let publish = Command::Publish {
            topic,
            timestamp_ns: 1,
            deliver_at_ms: 0,
            bodies,
        };
        let Ok(Outcome::Published {
            first_offset,
            count,
            ..
        }) = state.apply(&publish, &mut batch)
        else {
            panic!("publish");
        };
        state.flush_dirty(&mut batch);
        store.commit(batch).unwrap();
        println!("{}", first_offset + count);
    }
}

#[test]
fn sigkill_mid_write_keeps_every_committed_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Process::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acknowledged = 0u64;
    while acknowledged < 20_000 {
        let line = lines.next().expect("child alive").unwrap();
        if let Ok(end) = line.trim().parse::<u64>() {
            acknowledged = end;
        }
    }
    child.kill().unwrap(); // SIGKILL, while it is writing the next batches
    child.wait().unwrap();

    let (store, state) = ledgerq_storage::open(StoreOptions::new(dir.path())).unwrap();
    let topic = state.topic_id("t").unwrap();
    let next_offset = state.topic(topic).unwrap().meta.next_offset;
    assert!(
        next_offset >= acknowledged,
        "head {next_offset} below acknowledged {acknowledged}"
    );
    let log = store.read_log(topic, 0, usize::MAX).unwrap();
    assert_eq!(log.len() as u64, next_offset, "no hole in the log");
    for (expected, (offset, _)) in log.iter().enumerate() {
        assert_eq!(*offset, expected as u64);
    }
}
