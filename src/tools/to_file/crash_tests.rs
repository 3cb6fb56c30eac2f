//! The crash points of `to-file`'s commit, each made by hand on a real
//! directory: what a restart finds, and that each message ends up in the
//! output exactly once.

use std::fs::OpenOptions;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use super::journal::{self, Journal, Record};
use super::output::{FilenameFormat, OutputOptions, Writer};
use crate::tools::consumer::Message;

fn options(dir: &Path, gzip_level: Option<u32>, rotate_size_bytes: u64) -> OutputOptions {
    OutputOptions {
        dir: dir.to_owned(),
        format: FilenameFormat {
            template: "<TOPIC><REV>.log".into(),
            topic: "t".into(),
            host: "h".into(),
            pid: 1,
        },
        datetime_format: "%Y".into(),
        rotate_size_bytes,
        rotate_interval: Duration::ZERO,
        gzip_level,
    }
}

fn message(n: u8) -> Message {
    Message {
        timestamp_ns: 1_000 + i64::from(n),
        attempts: 1,
        id: [b'0' + n; 16],
        body: Bytes::from(format!("m{n}")),
    }
}

fn messages(range: std::ops::Range<u8>) -> Vec<Message> {
    range.map(message).collect()
}

/// Every output file's text, in name order (gzip decoded).
fn output(dir: &Path) -> String {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    let mut text = String::new();
    for name in names {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        if bytes.starts_with(&[0x1f, 0x8b]) {
            flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_string(&mut text)
                .unwrap();
        } else {
            text.push_str(std::str::from_utf8(&bytes).unwrap());
        }
    }
    text
}

fn journal_path(dir: &Path) -> std::path::PathBuf {
    dir.join(".journal")
}

#[test]
fn redeliveries_after_a_restart_are_not_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = Writer::open(options(dir.path(), None, 0), &journal_path(dir.path())).unwrap();
    assert_eq!(writer.commit(&messages(0..3)).unwrap(), 3);
    // The same message twice in one batch is written once.
    assert_eq!(writer.commit(&[message(3), message(3)]).unwrap(), 1);
    drop(writer);
    // Crash after the journal, before the FINs: everything comes again.
    let mut writer = Writer::open(options(dir.path(), None, 0), &journal_path(dir.path())).unwrap();
    assert_eq!(writer.written_count(), 4);
    assert_eq!(writer.commit(&messages(0..5)).unwrap(), 1);
    assert_eq!(output(dir.path()), "m0\nm1\nm2\nm3\nm4\n");
}

#[test]
fn data_past_the_last_commit_is_cut_off() {
    for gzip_level in [None, Some(6)] {
        let dir = tempfile::tempdir().unwrap();
        let journal = journal_path(dir.path());
        let mut writer = Writer::open(options(dir.path(), gzip_level, 0), &journal).unwrap();
        writer.commit(&messages(0..2)).unwrap();
        drop(writer);
        // Crash after the data (torn or whole) and before its commit record,
        // which is torn or missing.
        let file = dir.path().join("t-000000.log");
        OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap()
            .write_all(b"m2\nm")
            .unwrap();
        let mut torn = journal::encode(&Record::Commit {
            committed_bytes: 999,
            keys: vec![journal::key(&message(2).id, message(2).timestamp_ns)],
        });
        torn.truncate(torn.len() - 5);
        OpenOptions::new()
            .append(true)
            .open(&journal)
            .unwrap()
            .write_all(&torn)
            .unwrap();

        let mut writer = Writer::open(options(dir.path(), gzip_level, 0), &journal).unwrap();
        assert_eq!(writer.written_count(), 2);
        assert_eq!(writer.commit(&messages(0..4)).unwrap(), 2);
        assert_eq!(
            output(dir.path()),
            "m0\nm1\nm2\nm3\n",
            "gzip {gzip_level:?}"
        );
    }
}

#[test]
fn a_file_created_or_opened_but_never_committed_stays_unused_or_empty() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_path(dir.path());
    // Crash after creating the first file, before its open record.
    std::fs::write(dir.path().join("t-000000.log"), b"").unwrap();
    let mut writer = Writer::open(options(dir.path(), None, 0), &journal).unwrap();
    writer.commit(&messages(0..1)).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("t-000001.log")).unwrap(),
        b"m0\n"
    );
    drop(writer);
    // Crash after an open record and part of the first batch of a file.
    let (mut raw, _) = Journal::open(&journal).unwrap();
    let opened = journal::Opened {
        name: "t-000002.log".into(),
        datetime: chrono::Utc::now().format("%Y").to_string(),
        rev: 2,
        opened_ms: crate::clock::now_ms(),
        start_bytes: 0,
    };
    raw.append(&Record::Open(opened)).unwrap();
    drop(raw);
    std::fs::write(dir.path().join("t-000002.log"), b"m1\nm2").unwrap();
    let mut writer = Writer::open(options(dir.path(), None, 0), &journal).unwrap();
    assert_eq!(std::fs::read(dir.path().join("t-000002.log")).unwrap(), b"");
    writer.commit(&messages(0..3)).unwrap();
    assert_eq!(output(dir.path()), "m0\nm1\nm2\n");
}

#[test]
fn rotation_by_size_and_a_shortened_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_path(dir.path());
    let mut writer = Writer::open(options(dir.path(), None, 6), &journal).unwrap();
    for n in 0..5 {
        writer.commit(&[message(n)]).unwrap();
    }
    drop(writer);
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert_eq!(read("t-000000.log"), "m0\nm1\n");
    assert_eq!(read("t-000001.log"), "m2\nm3\n");
    assert_eq!(read("t-000002.log"), "m4\n");
    std::fs::write(dir.path().join("t-000002.log"), b"").unwrap();
    let error = Writer::open(options(dir.path(), None, 6), &journal)
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("changed by another program"),
        "{error}"
    );
}

#[test]
fn a_journal_is_used_by_one_writer_at_a_time_and_must_be_one() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal_path(dir.path());
    let _writer = Writer::open(options(dir.path(), None, 0), &journal).unwrap();
    let error = Writer::open(options(dir.path(), None, 0), &journal)
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("in use by another to-file"),
        "{error}"
    );
    let other = dir.path().join(".other");
    std::fs::write(&other, b"hello, world").unwrap();
    let error = Writer::open(options(dir.path(), None, 0), &other)
        .err()
        .unwrap();
    assert!(
        error.to_string().ends_with("not a ledgerq to-file journal"),
        "{error}"
    );
}
