//! Kill a child process mid-write (SIGKILL) and check what survived: every
//! publish whose commit returned is in the log after reopening.
//!
//! The child is this same test binary, run with `LEDGERQ_CRASH_CHILD_DIR`
//! set; it commits batches forever and prints the last offset of each
//! committed batch. With `LEDGERQ_CRASH_CHILD_EXTERNAL_LOG` set it writes
//! as the replicated state does (no WAL, no fsync: the raft log is the
//! WAL), and what must survive is a consistent prefix.

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};

use bytes::Bytes;
use ledgerq_storage::{Command, Outcome, StoreOptions};

const CHILD_ENV: &str = "LEDGERQ_CRASH_CHILD_DIR";
const EXTERNAL_LOG_ENV: &str = "LEDGERQ_CRASH_CHILD_EXTERNAL_LOG";

fn options(dir: impl Into<std::path::PathBuf>, log_is_external: bool) -> StoreOptions {
    let mut options = StoreOptions::new(dir);
    options.log_is_external = log_is_external;
    options
}

#[test]
fn crash_child_writer() {
    // Only does work when started as the child of the test below.
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let external = std::env::var_os(EXTERNAL_LOG_ENV).is_some();
    let (store, mut state) = ledgerq_storage::open(options(dir, external)).unwrap();
    // Bodies big enough that memtables fill and flush during the run.
    let body_size_bytes = if external { 4096 } else { 8 };
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
            .map(|i| {
                let mut body = format!("{round}-{i}-").into_bytes();
                body.resize(body_size_bytes, b'x');
                Bytes::from(body)
            })
            .collect();
        let publish = Command::Publish {
            topic,
            timestamp_ns: 1,
            deliver_at_ms: 0,
            bodies,
            dedup: None,
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
        if external {
            store.write_unsynced(batch).unwrap();
        } else {
            store.commit(batch).unwrap();
        }
        println!("{}", first_offset + count);
    }
}

/// Starts the writer child on `dir`, reads its progress until `offsets`
/// messages were written, SIGKILLs it; returns the last offset it reported.
fn run_child_until(dir: &std::path::Path, external: bool, offsets: u64) -> u64 {
    let mut child = Process::new(std::env::current_exe().unwrap());
    if external {
        child.env(EXTERNAL_LOG_ENV, "1");
    }
    let mut child = child
        .args([
            "--exact",
            "crash_child_writer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut reported = 0u64;
    while reported < offsets {
        let line = lines.next().expect("child alive").unwrap();
        if let Ok(end) = line.trim().parse::<u64>() {
            reported = end;
        }
    }
    child.kill().unwrap(); // SIGKILL, while it is writing the next batches
    child.wait().unwrap();
    reported
}

/// Reopens `dir` and checks that the topic's head (meta family) and its
/// log (log family) agree: every offset below the head, nothing above.
/// Returns the head.
fn reopen_consistent(dir: &std::path::Path, external: bool) -> u64 {
    let (store, state) = ledgerq_storage::open(options(dir, external)).unwrap();
    let Some(topic) = state.topic_id("t") else {
        return 0;
    };
    let next_offset = state.topic(topic).unwrap().meta.next_offset;
    let log = store.read_log(topic, 0, usize::MAX).unwrap();
    assert_eq!(log.len() as u64, next_offset, "no hole in the log");
    for (expected, (offset, _)) in log.iter().enumerate() {
        assert_eq!(*offset, expected as u64);
    }
    next_offset
}

#[test]
fn sigkill_mid_write_keeps_every_committed_batch() {
    let dir = tempfile::tempdir().unwrap();
    let acknowledged = run_child_until(dir.path(), false, 20_000);
    let next_offset = reopen_consistent(dir.path(), false);
    assert!(
        next_offset >= acknowledged,
        "head {next_offset} below acknowledged {acknowledged}"
    );
}

/// Without a WAL, a crash loses what was not flushed yet; the raft log
/// applies it again. What the store keeps must be one consistent prefix
/// across its column families (atomic flush), and memtables that filled
/// up were flushed.
#[test]
fn sigkill_without_a_wal_keeps_a_consistent_flushed_prefix() {
    let dir = tempfile::tempdir().unwrap();
    // 4 KiB bodies: 200 MB written, more than every memtable can hold.
    let written = run_child_until(dir.path(), true, 50_000);
    let next_offset = reopen_consistent(dir.path(), true);
    assert!(next_offset <= written, "nothing beyond what was written");
    assert!(next_offset > 0, "full memtables were flushed");
}
