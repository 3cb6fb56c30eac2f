//! `to-file`'s journal: which output file is current, how many of its bytes
//! are committed, and the key of every message written, as an append-only
//! file of checksummed records, each fsynced before `to-file` goes on.
//!
//! Layout: the magic [`MAGIC`], then records `[u32 LE payload length][u32 LE
//! CRC-32 of the payload][payload]`. Payloads:
//! - `O` (open): `[u16 LE name length][name][u16 LE datetime length]
//!   [datetime][u32 LE rev][u64 LE opened, unix ms][u64 LE start length]`:
//!   from now on data goes to this file of the output dir, whose first
//!   `start length` bytes were there before.
//! - `C` (commit): `[u64 LE committed length][u32 LE count]` then `count` ×
//!   `[16-byte message ID][i64 LE timestamp ns]`: the current file's bytes up
//!   to `committed length` are fsynced and hold these messages.
//!
//! A message's key is its ID and its timestamp: both are the same on every
//! redelivery (and on every replica of a ledgerq group), while two
//! unrelated nodes that happen to number a message alike (ledgerq's IDs are
//! a topic number and an offset) would also have to have published it in
//! the same nanosecond.
//!
//! Loading stops at the first invalid record. At the tail (it reaches or
//! passes the end of the file, or only zeros follow) that is a write cut
//! short by a crash: it is cut off. Anywhere else the journal is corrupt and
//! loading fails, since dropping later commits would forget messages that
//! were written and FINed.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use bytes::{Buf, BufMut};

/// The journal file's first bytes.
pub const MAGIC: &[u8; 8] = b"LQTFJ001";
const RECORD_HEADER_BYTES: usize = 8;
/// Larger payloads are garbage (a commit holds at most a batch of IDs).
const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

/// A message as the journal knows it: its 16-byte ID and its timestamp.
pub type Key = [u8; 24];

/// The key of a message.
pub fn key(id: &[u8; 16], timestamp_ns: i64) -> Key {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(id);
    key[16..].copy_from_slice(&timestamp_ns.to_le_bytes());
    key
}

/// One output file as opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub name: String,
    pub datetime: String,
    pub rev: u32,
    pub opened_ms: u64,
    pub start_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Open(Opened),
    Commit {
        committed_bytes: u64,
        keys: Vec<Key>,
    },
}

/// What a journal says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct State {
    /// The current file and its committed length.
    pub current: Option<(Opened, u64)>,
    pub seen: HashSet<Key>,
}

impl State {
    pub fn apply(&mut self, record: Record) -> anyhow::Result<()> {
        match record {
            Record::Open(opened) => {
                let start = opened.start_bytes;
                self.current = Some((opened, start));
            }
            Record::Commit {
                committed_bytes,
                keys,
            } => {
                let Some((_, committed)) = self.current.as_mut() else {
                    bail!("a commit before any open");
                };
                *committed = committed_bytes;
                self.seen.extend(keys);
            }
        }
        Ok(())
    }
}

fn put_text(buf: &mut Vec<u8>, text: &str) {
    buf.put_u16_le(u16::try_from(text.len()).unwrap_or(u16::MAX));
    buf.put_slice(&text.as_bytes()[..text.len().min(usize::from(u16::MAX))]);
}

/// A record with its header.
pub fn encode(record: &Record) -> Vec<u8> {
    let mut payload = Vec::new();
    match record {
        Record::Open(opened) => {
            payload.put_u8(b'O');
            put_text(&mut payload, &opened.name);
            put_text(&mut payload, &opened.datetime);
            payload.put_u32_le(opened.rev);
            payload.put_u64_le(opened.opened_ms);
            payload.put_u64_le(opened.start_bytes);
        }
        Record::Commit {
            committed_bytes,
            keys,
        } => {
            payload.put_u8(b'C');
            payload.put_u64_le(*committed_bytes);
            payload.put_u32_le(u32::try_from(keys.len()).expect("a batch of IDs"));
            for key in keys {
                payload.put_slice(key);
            }
        }
    }
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + payload.len());
    out.put_u32_le(u32::try_from(payload.len()).expect("a bounded record"));
    out.put_u32_le(crc32(&payload));
    out.extend_from_slice(&payload);
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

fn take_text(payload: &mut &[u8]) -> Option<String> {
    let length = usize::from(payload.try_get_u16_le().ok()?);
    let text = payload.get(..length)?;
    let text = String::from_utf8(text.to_vec()).ok()?;
    payload.advance(length);
    Some(text)
}

fn decode_payload(mut payload: &[u8]) -> Option<Record> {
    let record = match payload.try_get_u8().ok()? {
        b'O' => Record::Open(Opened {
            name: take_text(&mut payload)?,
            datetime: take_text(&mut payload)?,
            rev: payload.try_get_u32_le().ok()?,
            opened_ms: payload.try_get_u64_le().ok()?,
            start_bytes: payload.try_get_u64_le().ok()?,
        }),
        b'C' => {
            let committed_bytes = payload.try_get_u64_le().ok()?;
            let count = usize::try_from(payload.try_get_u32_le().ok()?).ok()?;
            if payload.len() != count.checked_mul(24)? {
                return None;
            }
            let keys = payload
                .chunks_exact(24)
                .map(|chunk| chunk.try_into().expect("24 bytes"))
                .collect();
            payload = &[];
            Record::Commit {
                committed_bytes,
                keys,
            }
        }
        _ => return None,
    };
    payload.is_empty().then_some(record)
}

/// The records of a journal's bytes (after the magic) and the length of
/// its valid prefix; `Err` when an invalid record is not a torn tail.
pub fn decode_all(bytes: &[u8]) -> anyhow::Result<(Vec<Record>, usize)> {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let record = rest.get(..RECORD_HEADER_BYTES).and_then(|header| {
            let length = usize::try_from(u32::from_le_bytes(header[..4].try_into().ok()?)).ok()?;
            let checksum = u32::from_le_bytes(header[4..].try_into().ok()?);
            let end = RECORD_HEADER_BYTES.checked_add(length)?;
            let payload = rest.get(RECORD_HEADER_BYTES..end)?;
            (length <= MAX_PAYLOAD_BYTES && crc32(payload) == checksum)
                .then(|| decode_payload(payload).map(|record| (record, end)))
                .flatten()
        });
        match record {
            Some((record, length)) => {
                records.push(record);
                offset += length;
            }
            None if is_torn_tail(rest) => break,
            None => bail!("journal corrupt at byte {}", offset + MAGIC.len()),
        }
    }
    Ok((records, offset))
}

/// An invalid record that a crash can explain: it runs to or past the end,
/// or only zeros follow it.
fn is_torn_tail(rest: &[u8]) -> bool {
    let Some(header) = rest.get(..RECORD_HEADER_BYTES) else {
        return true;
    };
    let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    rest.len() <= RECORD_HEADER_BYTES.saturating_add(length) || rest.iter().all(|&b| b == 0)
}

/// The open journal file (locked against a second `to-file`).
pub struct Journal {
    file: File,
    pub path: PathBuf,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, locks it, cuts a torn tail
    /// off and returns what it says.
    pub fn open(path: &Path) -> anyhow::Result<(Journal, State)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("opening journal {}", path.display()))?;
        // SAFETY: flock on a descriptor that `file` owns for the whole call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!("journal {} is in use by another to-file", path.display());
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let journal = Journal {
            file,
            path: path.to_owned(),
        };
        let fail = |why: String| anyhow!("journal {}: {why}", path.display());
        if bytes.len() < MAGIC.len() && MAGIC.starts_with(&bytes) {
            // New, or its creation was cut short.
            journal.file.set_len(0)?;
            (&journal.file).write_all(MAGIC)?;
            journal.sync()?;
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
            return Ok((journal, State::default()));
        }
        if !bytes.starts_with(MAGIC) {
            return Err(fail("not a ledgerq to-file journal".into()));
        }
        let (records, valid_bytes) =
            decode_all(&bytes[MAGIC.len()..]).map_err(|error| fail(error.to_string()))?;
        let mut state = State::default();
        for record in records {
            state
                .apply(record)
                .map_err(|error| fail(error.to_string()))?;
        }
        let valid_bytes = (MAGIC.len() + valid_bytes) as u64;
        if valid_bytes < bytes.len() as u64 {
            tracing::warn!(
                journal = %path.display(),
                dropped_bytes = bytes.len() as u64 - valid_bytes,
                "cutting off a record torn by a crash"
            );
            journal.file.set_len(valid_bytes)?;
            journal.sync()?;
        }
        let mut file = &journal.file;
        file.seek(SeekFrom::End(0))?;
        Ok((journal, state))
    }

    /// Appends `record` and fsyncs it.
    pub fn append(&mut self, record: &Record) -> anyhow::Result<()> {
        self.file
            .write_all(&encode(record))
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("writing journal {}", self.path.display()))
    }

    fn sync(&self) -> anyhow::Result<()> {
        self.file
            .sync_all()
            .with_context(|| format!("syncing journal {}", self.path.display()))
    }
}

/// fsyncs a directory, so the files created in it survive a crash.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(name: &str, start_bytes: u64) -> Record {
        Record::Open(Opened {
            name: name.into(),
            datetime: "2024-05-01_13".into(),
            rev: 2,
            opened_ms: 1_700_000_000_000,
            start_bytes,
        })
    }

    fn commit(committed_bytes: u64, ids: &[u8]) -> Record {
        let keys = ids.iter().map(|&n| key(&[n; 16], i64::from(n))).collect();
        Record::Commit {
            committed_bytes,
            keys,
        }
    }

    fn bytes_of(records: &[Record]) -> Vec<u8> {
        records.iter().flat_map(encode).collect()
    }

    #[test]
    fn records_round_trip_and_replay() {
        let records = vec![
            open("a.log", 5),
            commit(10, &[1, 2]),
            open("b.log", 0),
            commit(3, &[3]),
        ];
        let bytes = bytes_of(&records);
        let (decoded, valid) = decode_all(&bytes).unwrap();
        assert_eq!((decoded.clone(), valid), (records, bytes.len()));
        let mut state = State::default();
        for record in decoded {
            state.apply(record).unwrap();
        }
        let (current, committed) = state.current.unwrap();
        assert_eq!(
            (current.name.as_str(), current.rev, committed),
            ("b.log", 2, 3)
        );
        assert_eq!(state.seen.len(), 3);
        assert!(state.seen.contains(&key(&[2; 16], 2)));
        assert!(
            !state.seen.contains(&key(&[2; 16], 3)),
            "the timestamp is part of the key"
        );
    }

    #[test]
    fn every_cut_of_the_last_record_is_a_torn_tail() {
        let first = bytes_of(&[open("a.log", 0)]);
        let whole = bytes_of(&[open("a.log", 0), commit(10, &[1, 2, 3])]);
        for cut in first.len()..whole.len() {
            let (records, valid) = decode_all(&whole[..cut]).unwrap();
            assert_eq!((records.len(), valid), (1, first.len()), "cut at {cut}");
        }
        let mut zeros = first.clone();
        zeros.extend_from_slice(&[0; 100]);
        assert_eq!(decode_all(&zeros).unwrap().1, first.len());
    }

    #[test]
    fn a_bad_record_before_good_ones_is_corruption() {
        let mut bytes = bytes_of(&[open("a.log", 0), commit(10, &[1]), commit(20, &[2])]);
        let second = encode(&open("a.log", 0)).len();
        bytes[second + RECORD_HEADER_BYTES + 3] ^= 0xff;
        let error = decode_all(&bytes).unwrap_err().to_string();
        assert_eq!(
            error,
            format!("journal corrupt at byte {}", second + MAGIC.len())
        );
        let commit_first = bytes_of(&[commit(1, &[1])]);
        let mut state = State::default();
        let (records, _) = decode_all(&commit_first).unwrap();
        assert!(state.apply(records[0].clone()).is_err());
    }
}
