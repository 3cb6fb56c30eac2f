//! Snapshots of the replicated state: a RocksDB checkpoint of the state
//! store, kept as a directory (its SST files hard-linked: building one
//! copies no data) and sent to a member that lags behind the purged log as
//! a tar archive read straight from it ([`CheckpointTar`]).
//!
//! Files in `<data-dir>/snapshots/`: the current snapshot's directory
//! `<id>/` and its metadata `<id>.meta` (`raft.proto` `SnapshotMeta`). The
//! directory is complete and fsynced before the metadata is written (to a
//! temporary name, fsynced, renamed); a directory without metadata is an
//! unfinished one and is removed at start, as is everything but the
//! current snapshot. (A snapshot of the earlier format, `<id>.tar`, is
//! still served and installed from.)
//!
//! A received snapshot (a tar archive) is unpacked into `<id>.unpacking/`,
//! fsynced and checked (its checkpoint must hold the log id its metadata
//! names) before anything current changes; only then does it become the
//! current snapshot and is copied into the live store. During that copy the
//! file `INSTALLING` exists; a start that finds it copies the current
//! snapshot again before anything else, so a crash mid-copy never leaves a
//! mixed state behind.

use std::fs::{self, File};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use super::convert::{
    log_id_from_pb, snapshot_meta_from_pb, snapshot_meta_to_pb, stored_membership_from_pb,
};
use super::snapshot_data::{CheckpointTar, SnapshotData};
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
    /// Opens the directory, removing what a crash left unfinished and every
    /// snapshot but the current one.
    pub(super) fn open(dir: PathBuf) -> Result<Self, StorageError> {
        fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
        let files = SnapshotFiles { dir };
        let current = files.current()?.map(|(_, path)| path);
        for path in files.list()? {
            let keep = Some(&path) == current.as_ref()
                || current
                    .as_ref()
                    .is_some_and(|c| path == c.with_extension("meta"))
                || path.file_name().is_some_and(|n| n == INSTALLING);
            if !keep {
                remove(&path)?;
            }
        }
        Ok(files)
    }

    fn list(&self) -> Result<Vec<PathBuf>, StorageError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| io_error("list", &self.dir, e))?;
        Ok(entries.filter_map(Result::ok).map(|e| e.path()).collect())
    }

    /// Checkpoints `store` into a new directory and makes it the current
    /// snapshot. The metadata is read from the checkpoint itself, so it
    /// matches the data exactly whatever was applied meanwhile.
    pub(super) fn build(&self, store: &Store) -> Result<(SnapshotMeta, PathBuf), StorageError> {
        let checkpoint = self.dir.join("checkpoint");
        remove(&checkpoint)?;
        store.checkpoint(&checkpoint)?;
        let meta = checkpoint_meta(&checkpoint, snapshot_id())?;
        let snapshot = self.dir.join(&meta.snapshot_id);
        sync_files(&checkpoint)?;
        fs::rename(&checkpoint, &snapshot).map_err(|e| io_error("rename", &checkpoint, e))?;
        self.make_current(&meta, &snapshot)?;
        Ok((meta, snapshot))
    }

    /// The current snapshot (its directory, or an earlier format's archive),
    /// if any: the newest whose metadata is complete (a crash may leave the
    /// previous one behind for a moment).
    pub(super) fn current(&self) -> Result<Option<(SnapshotMeta, PathBuf)>, StorageError> {
        let mut newest: Option<(SnapshotMeta, PathBuf)> = None;
        for path in self.list()? {
            if path.extension().is_none_or(|e| e != "meta") {
                continue;
            }
            let raw = fs::read(&path).map_err(|e| io_error("read", &path, e))?;
            let meta =
                pb::SnapshotMeta::decode(raw.as_slice()).map_err(|e| StorageError::Corrupt {
                    what: "snapshot meta",
                    detail: e.to_string(),
                })?;
            let meta = snapshot_meta_from_pb(meta);
            let directory = path.with_extension("");
            let data = match directory.is_dir() {
                true => directory,
                false => path.with_extension("tar"),
            };
            if newest
                .as_ref()
                .is_none_or(|(n, _)| n.last_log_id < meta.last_log_id)
            {
                newest = Some((meta, data));
            }
        }
        Ok(newest)
    }

    /// The current snapshot's data as openraft sends it.
    pub(super) fn open_data(path: &Path) -> Result<SnapshotData, StorageError> {
        if path.is_dir() {
            let tar = CheckpointTar::open(path).map_err(|e| io_error("open", path, e))?;
            return Ok(SnapshotData::Archive(tar));
        }
        let file = File::open(path).map_err(|e| io_error("open", path, e))?;
        Ok(SnapshotData::File(tokio::fs::File::from_std(file)))
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

    /// Makes `snapshot` (a complete, fsynced directory) the current snapshot
    /// with `meta`, and deletes every other snapshot.
    fn make_current(&self, meta: &SnapshotMeta, snapshot: &Path) -> Result<(), StorageError> {
        sync_dir(&self.dir)?;
        let meta_tmp = self.dir.join(format!("{}.meta.tmp", meta.snapshot_id));
        fs::write(&meta_tmp, snapshot_meta_to_pb(meta).encode_to_vec())
            .map_err(|e| io_error("write", &meta_tmp, e))?;
        File::open(&meta_tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_error("fsync", &meta_tmp, e))?;
        let meta_path = snapshot.with_extension("meta");
        fs::rename(&meta_tmp, &meta_path).map_err(|e| io_error("rename", &meta_tmp, e))?;
        for path in self.list()? {
            let keep = path == snapshot
                || path == meta_path
                || path.file_name().is_some_and(|n| n == INSTALLING);
            let partial = path
                .extension()
                .is_some_and(|e| e == "tmp" || e == "unpacking");
            let receiving = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("receiving-"));
            if !keep && !partial && !receiving {
                remove(&path)?;
            }
        }
        sync_dir(&self.dir)
    }

    /// Takes a received snapshot: unpacks `received` (rewound) into a new
    /// directory, fsyncs it and checks that it holds the state `meta`
    /// describes — all before anything current changes — then makes it the
    /// current snapshot and copies it into `store`.
    pub(super) fn install_received(
        &self,
        meta: &SnapshotMeta,
        received: &mut File,
        store: &Store,
    ) -> Result<(), StorageError> {
        let unpacking = self.dir.join(format!("{}.unpacking", meta.snapshot_id));
        remove(&unpacking)?;
        if let Err(error) = unpack_checked(received, &unpacking, meta) {
            remove(&unpacking)?;
            return Err(error);
        }
        let snapshot = self.dir.join(&meta.snapshot_id);
        remove(&snapshot)?;
        fs::rename(&unpacking, &snapshot).map_err(|e| io_error("rename", &unpacking, e))?;
        self.make_current(meta, &snapshot)?;
        self.replace_marked(&snapshot, store)
    }

    /// Replaces `store`'s contents with the checkpoint in `dir`, under the
    /// `INSTALLING` marker.
    fn replace_marked(&self, dir: &Path, store: &Store) -> Result<(), StorageError> {
        let marker = self.dir.join(INSTALLING);
        fs::write(&marker, b"").map_err(|e| io_error("write", &marker, e))?;
        sync_dir(&self.dir)?;
        store.replace_with_checkpoint(dir)?;
        fs::remove_file(&marker).map_err(|e| io_error("remove", &marker, e))?;
        sync_dir(&self.dir)
    }

    /// Finishes an install a crash interrupted (see the module doc).
    pub(super) fn finish_interrupted_install(&self, store: &Store) -> Result<(), StorageError> {
        if !self.dir.join(INSTALLING).exists() {
            return Ok(());
        }
        let Some((meta, data)) = self.current()? else {
            return Err(StorageError::Corrupt {
                what: "snapshot",
                detail: "an install was interrupted and its snapshot is gone".into(),
            });
        };
        tracing::warn!(snapshot = %meta.snapshot_id, "finishing a snapshot install a crash interrupted");
        if data.is_dir() {
            return self.replace_marked(&data, store);
        }
        // The earlier format: unpack the archive again.
        let unpacked = self.dir.join("install.unpacking");
        remove(&unpacked)?;
        let mut archive = File::open(&data).map_err(|e| io_error("open", &data, e))?;
        unpack_checked(&mut archive, &unpacked, &meta)?;
        self.replace_marked(&unpacked, store)?;
        remove(&unpacked)
    }
}

/// Unpacks the archive `from` (rewound) into `into`, fsyncs it, and checks
/// that it holds the applied log id `meta` names.
fn unpack_checked(from: &mut File, into: &Path, meta: &SnapshotMeta) -> Result<(), StorageError> {
    rewind(from)?;
    tar::Archive::new(&mut *from)
        .unpack(into)
        .map_err(|e| io_error("unpack into", into, e))?;
    sync_files(into)?;
    let found = checkpoint_meta(into, String::new())?;
    if found.last_log_id != meta.last_log_id {
        return Err(StorageError::Corrupt {
            what: "snapshot",
            detail: format!(
                "holds the state of {:?}, its metadata says {:?}",
                found.last_log_id, meta.last_log_id
            ),
        });
    }
    Ok(())
}

/// fsyncs every file in `dir`, then `dir`.
fn sync_files(dir: &Path) -> Result<(), StorageError> {
    for entry in fs::read_dir(dir).map_err(|e| io_error("list", dir, e))? {
        let path = entry.map_err(|e| io_error("list", dir, e))?.path();
        if path.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_error("fsync", &path, e))?;
        }
    }
    sync_dir(dir)
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
