//! What openraft streams to a member that lags behind the purged log, and
//! what it writes a received snapshot into: [`SnapshotData`].
//!
//! A snapshot kept here is a checkpoint directory of the state store (its
//! SST files hard-linked, nothing copied). It is sent as a tar archive that
//! is never written out: [`CheckpointTar`] computes the archive's layout
//! when it is opened (a 512-byte header per file, the file's bytes padded
//! to 512, two zero blocks at the end) and serves a read at any offset from
//! the files themselves. It holds their descriptors, so a newer snapshot
//! that deletes the directory meanwhile does not disturb a transfer. The
//! files of a checkpoint never change; RocksDB's info logs (`LOG*`), which a
//! reader of the checkpoint may write, are left out.

use std::fs::File;
use std::io::{self, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

const BLOCK_BYTES: u64 = 512;

/// A snapshot being sent (a checkpoint read as a tar archive, or a
/// snapshot file of the earlier format) or received (a file).
pub enum SnapshotData {
    Archive(CheckpointTar),
    File(tokio::fs::File),
}

/// A checkpoint directory read as a tar archive.
pub struct CheckpointTar {
    parts: Vec<Part>,
    len_bytes: u64,
    position: u64,
}

struct Part {
    start: u64,
    len_bytes: u64,
    source: Source,
}

enum Source {
    Bytes(Box<[u8]>),
    File(File),
    Zeros,
}

impl CheckpointTar {
    /// Lays out the archive of the files in `dir` (sorted by name).
    pub fn open(dir: &Path) -> io::Result<CheckpointTar> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_file() && !name.starts_with("LOG") {
                names.push(name);
            }
        }
        names.sort();
        let mut tar = CheckpointTar {
            parts: Vec::new(),
            len_bytes: 0,
            position: 0,
        };
        for name in names {
            let file = File::open(dir.join(&name))?;
            let size_bytes = file.metadata()?.len();
            let mut header = tar::Header::new_ustar();
            header.set_path(&name)?;
            header.set_size(size_bytes);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_cksum();
            tar.push(Source::Bytes(Box::new(*header.as_bytes())), BLOCK_BYTES);
            tar.push(Source::File(file), size_bytes);
            let padding = (BLOCK_BYTES - size_bytes % BLOCK_BYTES) % BLOCK_BYTES;
            tar.push(Source::Zeros, padding);
        }
        tar.push(Source::Zeros, 2 * BLOCK_BYTES);
        Ok(tar)
    }

    fn push(&mut self, source: Source, len_bytes: u64) {
        if len_bytes == 0 {
            return;
        }
        self.parts.push(Part {
            start: self.len_bytes,
            len_bytes,
            source,
        });
        self.len_bytes += len_bytes;
    }

    /// The archive's size.
    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    /// Reads from `offset` into `buf`, at most to the end of the part that
    /// holds `offset`; 0 at the end of the archive.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if offset >= self.len_bytes || buf.is_empty() {
            return Ok(0);
        }
        let index = self
            .parts
            .partition_point(|p| p.start + p.len_bytes <= offset);
        let part = &self.parts[index];
        let within = offset - part.start;
        let wanted = buf.len().min((part.len_bytes - within) as usize);
        let buf = &mut buf[..wanted];
        match &part.source {
            Source::Bytes(bytes) => buf.copy_from_slice(&bytes[within as usize..][..wanted]),
            Source::Zeros => buf.fill(0),
            Source::File(file) => file.read_exact_at(buf, within)?,
        }
        Ok(wanted)
    }
}

/// Runs blocking file IO without stalling the runtime's other tasks where
/// the runtime allows it.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

impl AsyncRead for CheckpointTar {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let position = self.position;
        let read = blocking(|| self.read_at(position, buf.initialize_unfilled()))?;
        buf.advance(read);
        self.position += read as u64;
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for CheckpointTar {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let target = match position {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.len_bytes.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        self.position = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the archive's start",
            )
        })?;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.position))
    }
}

impl AsyncRead for SnapshotData {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotData::Archive(tar) => Pin::new(tar).poll_read(cx, buf),
            SnapshotData::File(file) => Pin::new(file).poll_read(cx, buf),
        }
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        match self.get_mut() {
            SnapshotData::Archive(tar) => Pin::new(tar).start_seek(position),
            SnapshotData::File(file) => Pin::new(file).start_seek(position),
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match self.get_mut() {
            SnapshotData::Archive(tar) => Pin::new(tar).poll_complete(cx),
            SnapshotData::File(file) => Pin::new(file).poll_complete(cx),
        }
    }
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "a snapshot being sent cannot be written",
    )
}

impl AsyncWrite for SnapshotData {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            SnapshotData::Archive(_) => Poll::Ready(Err(read_only())),
            SnapshotData::File(file) => Pin::new(file).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotData::Archive(_) => Poll::Ready(Ok(())),
            SnapshotData::File(file) => Pin::new(file).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            SnapshotData::Archive(_) => Poll::Ready(Ok(())),
            SnapshotData::File(file) => Pin::new(file).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use tokio::io::{AsyncReadExt, AsyncSeekExt};

    fn sample_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("000012.sst"), vec![7u8; 1500]).unwrap();
        std::fs::write(dir.path().join("CURRENT"), b"MANIFEST-000005\n").unwrap();
        std::fs::write(dir.path().join("empty"), b"").unwrap();
        std::fs::write(dir.path().join("LOG"), b"written by a reader").unwrap();
        std::fs::create_dir(dir.path().join("subdir")).unwrap();
        dir
    }

    fn whole(tar: &CheckpointTar, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; step];
        loop {
            let read = tar.read_at(out.len() as u64, &mut buf).unwrap();
            if read == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..read]);
        }
    }

    #[test]
    fn the_archive_unpacks_to_the_directorys_files() {
        let dir = sample_dir();
        let tar = CheckpointTar::open(dir.path()).unwrap();
        let bytes = whole(&tar, 333);
        assert_eq!(bytes.len() as u64, tar.len_bytes());
        assert_eq!(bytes.len() % 512, 0);
        let mut found = Vec::new();
        let mut archive = tar::Archive::new(bytes.as_slice());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            found.push((name, content));
        }
        let expected = vec![
            ("000012.sst".to_owned(), vec![7u8; 1500]),
            ("CURRENT".to_owned(), b"MANIFEST-000005\n".to_vec()),
            ("empty".to_owned(), Vec::new()),
        ];
        assert_eq!(found, expected);
    }

    #[test]
    fn reads_at_any_offset_agree_with_a_whole_read() {
        let dir = sample_dir();
        let tar = CheckpointTar::open(dir.path()).unwrap();
        let bytes = whole(&tar, 4096);
        for offset in [0u64, 1, 511, 512, 513, 1999, 2012, 2047, 2048, 2600] {
            let mut buf = [0u8; 100];
            let read = tar.read_at(offset, &mut buf).unwrap();
            assert!(read > 0, "offset {offset}");
            assert_eq!(&buf[..read], &bytes[offset as usize..][..read]);
        }
        assert_eq!(tar.read_at(tar.len_bytes(), &mut [0u8; 8]).unwrap(), 0);
    }

    #[tokio::test]
    async fn seeks_and_reads_as_openraft_sends_chunks() {
        let dir = sample_dir();
        let expected = whole(&CheckpointTar::open(dir.path()).unwrap(), 4096);
        let mut data = SnapshotData::Archive(CheckpointTar::open(dir.path()).unwrap());
        let end = data.seek(SeekFrom::End(0)).await.unwrap();
        assert_eq!(end, expected.len() as u64);
        let mut sent = Vec::new();
        while (sent.len() as u64) < end {
            data.seek(SeekFrom::Start(sent.len() as u64)).await.unwrap();
            let mut chunk = vec![0u8; 700];
            let read = data.read(&mut chunk).await.unwrap();
            assert!(read > 0);
            sent.extend_from_slice(&chunk[..read]);
        }
        assert_eq!(sent, expected);
        assert!(data.seek(SeekFrom::Current(-1_000_000)).await.is_err());
    }

    #[test]
    fn a_transfer_survives_the_directory_being_deleted() {
        let dir = sample_dir();
        let tar = CheckpointTar::open(dir.path()).unwrap();
        let before = whole(&tar, 4096);
        std::fs::remove_dir_all(dir.path()).unwrap();
        assert_eq!(whole(&tar, 4096), before);
    }
}
