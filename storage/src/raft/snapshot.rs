//! Snapshots of the replicated state: a RocksDB checkpoint of the state
//! store, archived (tar) into one file that openraft streams to a member
//! that lags behind the purged log.
//!
//! Files in `<data-dir>/snapshots/`: the current snapshot `<id>.tar` with
//! its metadata `<id>.meta` (`raft.proto` `SnapshotMeta`), written to a
//! temporary name and renamed, the metadata last; only one is kept.
//!
//! A received snapshot is copied into the directory, unpacked and checked
//! (its checkpoint must hold the log id its metadata names) before anything
//! current changes; only then does it become the current snapshot and is
//! copied into the live store. During that copy the file `INSTALLING`
//! exists; a start that finds it copies the current snapshot again before
//! anything else, so a crash mid-copy never leaves a mixed state behind.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use super::convert::{
    log_id_from_pb, snapshot_meta_from_pb, snapshot_meta_to_pb, stored_membership_from_pb,
};
use super::{LogId, SnapshotMeta, StoredMembership};
use crate::error::StorageError;
use crate::keys;
use crate::pb::raft as pb;
use crate::store::Store;

/// The snapshot directory's name inside the data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";
const INSTALLING: &str = "INSTALLING";

pub(super) struct SnapshotFiles {
    dir: PathBuf,
}

fn io_error(what: &str, path: &Path, error: std::io::Error) -> StorageError {
    StorageError::Rocks(format!("{what} {}: {error}", path.display()))
}

impl SnapshotFiles {
    pub(super) fn open(dir: PathBuf) -> Result<Self, StorageError> {
        fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
        let files = SnapshotFiles { dir };
        for entry in files.list()? {
            let name = entry
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let partial = name.ends_with(".tmp") || name.starts_with("receiving-");
            if partial || name == "checkpoint" || name == "install" {
                remove(&entry)?;
            }
        }
        Ok(files)
    }

    fn list(&self) -> Result<Vec<PathBuf>, StorageError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| io_error("list", &self.dir, e))?;
        Ok(entries.filter_map(Result::ok).map(|e| e.path()).collect())
    }

    /// Checkpoints `store`, archives the checkpoint, makes it the current
    /// snapshot. The metadata is read from the checkpoint itself, so it
    /// matches the data exactly whatever was applied meanwhile.
    pub(super) fn build(&self, store: &Store) -> Result<(SnapshotMeta, PathBuf), StorageError> {
        let checkpoint = self.dir.join("checkpoint");
        remove(&checkpoint)?;
        store.checkpoint(&checkpoint)?;
        let meta = checkpoint_meta(&checkpoint, snapshot_id())?;
        let archive = self.dir.join(format!("{}.tar.tmp", meta.snapshot_id));
        archive_dir(&checkpoint, &archive)?;
        remove(&checkpoint)?;
        let path = self.make_current(&meta, &archive)?;
        Ok((meta, path))
    }

    /// The current snapshot, if any.
    pub(super) fn current(&self) -> Result<Option<(SnapshotMeta, PathBuf)>, StorageError> {
        for path in self.list()? {
            if path.extension().is_some_and(|e| e == "meta") {
                let raw = fs::read(&path).map_err(|e| io_error("read", &path, e))?;
                let meta = pb::SnapshotMeta::decode(raw.as_slice()).map_err(|e| {
                    StorageError::Corrupt {
                        what: "snapshot meta",
                        detail: e.to_string(),
                    }
                })?;
                return Ok(Some((
                    snapshot_meta_from_pb(meta),
                    path.with_extension("tar"),
                )));
            }
        }
        Ok(None)
    }

    /// A new file to receive a snapshot into.
    pub(super) fn receiving(&self) -> Result<(PathBuf, File), StorageError> {
        let path = self.dir.join(format!("receiving-{}.tar", snapshot_id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error("create", &path, e))?;
        Ok((path, file))
    }

    /// Makes `archive` (a finished file) the current snapshot with `meta`,
    /// fsynced, and deletes every other snapshot.
    pub(super) fn make_current(
        &self,
        meta: &SnapshotMeta,
        archive: &Path,
    ) -> Result<PathBuf, StorageError> {
        let file = File::open(archive).map_err(|e| io_error("open", archive, e))?;
        file.sync_all().map_err(|e| io_error("fsync", archive, e))?;
        let tar = self.dir.join(format!("{}.tar", meta.snapshot_id));
        fs::rename(archive, &tar).map_err(|e| io_error("rename", archive, e))?;
        let meta_tmp = self.dir.join(format!("{}.meta.tmp", meta.snapshot_id));
        fs::write(&meta_tmp, snapshot_meta_to_pb(meta).encode_to_vec())
            .map_err(|e| io_error("write", &meta_tmp, e))?;
        File::open(&meta_tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_error("fsync", &meta_tmp, e))?;
        let meta_path = tar.with_extension("meta");
        fs::rename(&meta_tmp, &meta_path).map_err(|e| io_error("rename", &meta_tmp, e))?;
        for path in self.list()? {
            let keep = path == tar
                || path == meta_path
                || path.file_name().is_some_and(|n| n == INSTALLING);
            let snapshot_file = path.extension().is_some_and(|e| e == "tar" || e == "meta");
            if !keep && snapshot_file {
                remove(&path)?;
            }
        }
        sync_dir(&self.dir)?;
        Ok(tar)
    }

    /// Takes a received snapshot: copies `received` (rewound) into the
    /// snapshot directory, unpacks it and checks that it holds the state
    /// `meta` describes — all before anything current changes — then makes
    /// it the current snapshot and copies it into `store`.
    pub(super) fn install_received(
        &self,
        meta: &SnapshotMeta,
        received: &mut File,
        store: &Store,
    ) -> Result<(), StorageError> {
        let archive = self.dir.join(format!("{}.tar.tmp", meta.snapshot_id));
        let copied = File::create(&archive).and_then(|mut copy| {
            std::io::copy(received, &mut copy)?;
            copy.sync_all()
        });
        copied.map_err(|e| io_error("copy the received snapshot to", &archive, e))?;
        let unpacked = match self.unpack_checked(&archive, meta) {
            Ok(unpacked) => unpacked,
            Err(error) => {
                remove(&archive)?;
                return Err(error);
            }
        };
        self.make_current(meta, &archive)?;
        self.replace_marked(&unpacked, store)
    }

    /// Unpacks `tar` into `install/` and checks its applied log id.
    fn unpack_checked(&self, tar: &Path, meta: &SnapshotMeta) -> Result<PathBuf, StorageError> {
        let unpacked = self.dir.join("install");
        remove(&unpacked)?;
        let file = File::open(tar).map_err(|e| io_error("open", tar, e))?;
        tar::Archive::new(file)
            .unpack(&unpacked)
            .map_err(|e| io_error("unpack", tar, e))?;
        let found = checkpoint_meta(&unpacked, String::new())?;
        if found.last_log_id != meta.last_log_id {
            remove(&unpacked)?;
            return Err(StorageError::Corrupt {
                what: "snapshot",
                detail: format!(
                    "holds the state of {:?}, its metadata says {:?}",
                    found.last_log_id, meta.last_log_id
                ),
            });
        }
        Ok(unpacked)
    }

    /// Replaces `store`'s contents with the unpacked checkpoint, under the
    /// `INSTALLING` marker.
    fn replace_marked(&self, unpacked: &Path, store: &Store) -> Result<(), StorageError> {
        let marker = self.dir.join(INSTALLING);
        fs::write(&marker, b"").map_err(|e| io_error("write", &marker, e))?;
        sync_dir(&self.dir)?;
        store.replace_with_checkpoint(unpacked)?;
        remove(unpacked)?;
        fs::remove_file(&marker).map_err(|e| io_error("remove", &marker, e))?;
        sync_dir(&self.dir)
    }

    /// Finishes an install a crash interrupted (see the module doc).
    pub(super) fn finish_interrupted_install(&self, store: &Store) -> Result<(), StorageError> {
        if !self.dir.join(INSTALLING).exists() {
            return Ok(());
        }
        let Some((meta, tar)) = self.current()? else {
            return Err(StorageError::Corrupt {
                what: "snapshot",
                detail: "an install was interrupted and its snapshot is gone".into(),
            });
        };
        tracing::warn!(snapshot = %meta.snapshot_id, "finishing a snapshot install a crash interrupted");
        let unpacked = self.unpack_checked(&tar, &meta)?;
        self.replace_marked(&unpacked, store)
    }
}

fn snapshot_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:x}")
}

/// The applied log id and membership a checkpoint holds.
fn checkpoint_meta(dir: &Path, snapshot_id: String) -> Result<SnapshotMeta, StorageError> {
    let (last_log_id, last_membership) =
        read_raft_meta(|key| Store::read_checkpoint_meta(dir, key))?;
    let last = last_log_id.map(|id| format!("{}-{}-", id.leader_id.term, id.index));
    Ok(SnapshotMeta {
        last_log_id,
        last_membership,
        snapshot_id: format!("{}{snapshot_id}", last.unwrap_or_default()),
    })
}

/// Reads the raft applied log id and membership from a state store's meta.
pub(super) fn read_raft_meta(
    read: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, StorageError>,
) -> Result<(Option<LogId>, StoredMembership), StorageError> {
    let corrupt = |e: prost::DecodeError| StorageError::Corrupt {
        what: "raft state meta",
        detail: e.to_string(),
    };
    let applied = match read(keys::META_RAFT_APPLIED)? {
        Some(raw) => Some(log_id_from_pb(
            &pb::LogId::decode(raw.as_slice()).map_err(corrupt)?,
        )),
        None => None,
    };
    let membership = match read(keys::META_RAFT_MEMBERSHIP)? {
        Some(raw) => stored_membership_from_pb(
            pb::StoredMembership::decode(raw.as_slice()).map_err(corrupt)?,
        ),
        None => StoredMembership::default(),
    };
    Ok((applied, membership))
}

fn archive_dir(dir: &Path, archive: &Path) -> Result<(), StorageError> {
    let file = File::create(archive).map_err(|e| io_error("create", archive, e))?;
    let mut builder = tar::Builder::new(file);
    builder
        .append_dir_all(".", dir)
        .and_then(|()| builder.into_inner())
        .and_then(|file| file.sync_all())
        .map_err(|e| io_error("archive", dir, e))
}

/// Rewinds a received file so it can be read from the start.
pub(super) fn rewind(file: &mut File) -> Result<(), StorageError> {
    file.seek(SeekFrom::Start(0))
        .map(|_| ())
        .map_err(|e| StorageError::Rocks(format!("rewind snapshot: {e}")))
}

fn remove(path: &Path) -> Result<(), StorageError> {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error("remove", path, e)),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("fsync", dir, e))
}
