//! `to-file`'s output: file names (nsq_to_file's `--filename-format`
//! tokens), rotation, and [`Writer`], which commits a batch of messages —
//! data written and fsynced, then its journal record fsynced — and drops
//! the messages the journal already holds.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};

use super::journal::{self, Journal, Key, Opened, Record};
use crate::tools::consumer::Message;

/// Expands `--filename-format`: `<TOPIC>`, `<HOST>`, `<PID>`, `<DATETIME>`
/// and `<REV>` (`-` and the revision on six digits, as nsq_to_file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilenameFormat {
    pub template: String,
    pub topic: String,
    pub host: String,
    pub pid: u32,
}

impl FilenameFormat {
    pub fn has_rev(&self) -> bool {
        self.template.contains("<REV>")
    }

    pub fn name(&self, datetime: &str, rev: u32) -> String {
        self.template
            .replace("<TOPIC>", &self.topic)
            .replace("<HOST>", &self.host)
            .replace("<PID>", &self.pid.to_string())
            .replace("<DATETIME>", datetime)
            .replace("<REV>", &format!("-{rev:06}"))
    }

    /// A name must stay inside the output dir.
    pub fn check(&self) -> anyhow::Result<()> {
        let name = self.name("x", 0);
        if self.template.contains('/') || name.is_empty() || name == "." || name == ".." {
            bail!(
                "invalid --filename-format {:?}: a file name without '/'",
                self.template
            );
        }
        Ok(())
    }
}

/// `--datetime-format` must be a valid strftime format.
pub fn check_datetime_format(format: &str) -> anyhow::Result<()> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
        bail!("invalid --datetime-format {format:?}");
    }
    Ok(())
}

/// Settings of the output.
#[derive(Debug, Clone)]
pub struct OutputOptions {
    pub dir: PathBuf,
    pub format: FilenameFormat,
    pub datetime_format: String,
    /// 0: no size rotation.
    pub rotate_size_bytes: u64,
    /// Zero: no time rotation.
    pub rotate_interval: Duration,
    /// Compression level, or `None` for plain text.
    pub gzip_level: Option<u32>,
}

/// The file being written.
struct Current {
    opened: Opened,
    file: File,
    committed_bytes: u64,
}

/// Whether the next batch needs a new file: none yet, the name (date, time
/// or format) changed, or a rotation limit is reached.
pub fn needs_new_file(
    current: Option<(&Opened, u64)>,
    name_now: impl Fn(u32) -> String,
    now_ms: u64,
    options: &OutputOptions,
) -> bool {
    let Some((opened, committed_bytes)) = current else {
        return true;
    };
    let interval_ms = u64::try_from(options.rotate_interval.as_millis()).unwrap_or(u64::MAX);
    name_now(opened.rev) != opened.name
        || (options.rotate_size_bytes > 0 && committed_bytes >= options.rotate_size_bytes)
        || (interval_ms > 0 && now_ms.saturating_sub(opened.opened_ms) >= interval_ms)
}

/// Writes batches into the output dir, exactly once per message key.
pub struct Writer {
    options: OutputOptions,
    journal: Journal,
    seen: HashSet<Key>,
    current: Option<Current>,
}

impl Writer {
    /// Loads the journal at `journal_path` and brings the current file back
    /// to its committed length (what a crash left after it is cut off).
    pub fn open(options: OutputOptions, journal_path: &Path) -> anyhow::Result<Writer> {
        let (journal, state) = Journal::open(journal_path)?;
        let mut current = None;
        if let Some((opened, committed_bytes)) = state.current {
            current = recover(&options.dir, opened, committed_bytes)?;
        }
        Ok(Writer {
            options,
            journal,
            seen: state.seen,
            current,
        })
    }

    /// Messages written so far (by this and earlier runs).
    pub fn written_count(&self) -> usize {
        self.seen.len()
    }

    /// Writes the messages not yet written, fsyncs them, then journals
    /// them. Returns how many were written; every message of `messages` may
    /// be FINed once this returns `Ok`.
    pub fn commit(&mut self, messages: &[Message]) -> anyhow::Result<usize> {
        let mut keys = Vec::new();
        let mut text = Vec::new();
        for message in messages {
            let key = journal::key(&message.id, message.timestamp_ns);
            if self.seen.insert(key) {
                keys.push(key);
                text.extend_from_slice(&message.body);
                text.push(b'\n');
            }
        }
        if keys.is_empty() {
            return Ok(0);
        }
        let data = match self.options.gzip_level {
            Some(level) => gzip_member(&text, level)?,
            None => text,
        };
        let now = crate::clock::now_ms();
        let current = self
            .current
            .as_ref()
            .map(|c| (&c.opened, c.committed_bytes));
        let datetime = chrono::Utc::now()
            .format(&self.options.datetime_format)
            .to_string();
        if needs_new_file(
            current,
            |rev| self.options.format.name(&datetime, rev),
            now,
            &self.options,
        ) {
            self.open_next(&datetime, now)?;
        }
        let current = self.current.as_mut().expect("a current file");
        let path = self.options.dir.join(&current.opened.name);
        current
            .file
            .write_all(&data)
            .and_then(|()| current.file.sync_data())
            .with_context(|| format!("writing {}", path.display()))?;
        current.committed_bytes += data.len() as u64;
        let count = keys.len();
        self.journal.append(&Record::Commit {
            committed_bytes: current.committed_bytes,
            keys,
        })?;
        Ok(count)
    }

    /// Creates the next file (the first free revision when the format has
    /// `<REV>`, else appends to the named file) and journals it before any
    /// data goes in.
    fn open_next(&mut self, datetime: &str, now: u64) -> anyhow::Result<()> {
        let format = &self.options.format;
        let mut rev = match &self.current {
            Some(current) if current.opened.datetime == datetime => current.opened.rev + 1,
            _ => 0,
        };
        let (name, file) = loop {
            let name = format.name(datetime, rev);
            let path = self.options.dir.join(&name);
            let mut open = OpenOptions::new();
            open.append(true);
            if format.has_rev() {
                open.create_new(true);
            } else {
                open.create(true);
            }
            match open.open(&path) {
                Ok(file) => break (name, file),
                Err(error) if error.kind() == ErrorKind::AlreadyExists => rev += 1,
                Err(error) => {
                    return Err(error).with_context(|| format!("creating {}", path.display()))
                }
            }
        };
        journal::sync_dir(&self.options.dir)?;
        let start_bytes = file.metadata()?.len();
        let opened = Opened {
            name,
            datetime: datetime.to_owned(),
            rev,
            opened_ms: now,
            start_bytes,
        };
        self.journal.append(&Record::Open(opened.clone()))?;
        self.current = Some(Current {
            opened,
            file,
            committed_bytes: start_bytes,
        });
        Ok(())
    }
}

/// Reopens the journal's current file, cut back to `committed_bytes`. A file
/// that is gone was taken away whole: writing goes on in a new one. One
/// shorter than its committed length was changed by someone else: refused.
fn recover(dir: &Path, opened: Opened, committed_bytes: u64) -> anyhow::Result<Option<Current>> {
    let path = dir.join(&opened.name);
    let file = match OpenOptions::new().append(true).open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == ErrorKind::NotFound => {
            tracing::warn!(file = %path.display(), "the current output file is gone; starting a new one");
            return Ok(None);
        }
        Err(error) => return Err(error).with_context(|| format!("opening {}", path.display())),
    };
    let length = file.metadata()?.len();
    if length < committed_bytes {
        bail!(
            "{} has {length} bytes but the journal says {committed_bytes} were written: \
             it was changed by another program",
            path.display()
        );
    }
    if length > committed_bytes {
        tracing::info!(
            file = %path.display(),
            dropped_bytes = length - committed_bytes,
            "cutting off data written after the last commit"
        );
        file.set_len(committed_bytes)?;
        file.sync_all()?;
    }
    Ok(Some(Current {
        opened,
        file,
        committed_bytes,
    }))
}

/// One complete gzip member (concatenated members are one valid gzip file).
pub fn gzip_member(text: &[u8], level: u32) -> anyhow::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    encoder.write_all(text)?;
    Ok(encoder.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(template: &str) -> FilenameFormat {
        FilenameFormat {
            template: template.into(),
            topic: "orders".into(),
            host: "box".into(),
            pid: 42,
        }
    }

    fn options(rotate_size_bytes: u64, rotate_interval: Duration) -> OutputOptions {
        OutputOptions {
            dir: PathBuf::from("/nonexistent"),
            format: format("<TOPIC>.<HOST><REV>.<DATETIME>.log"),
            datetime_format: "%Y-%m-%d_%H".into(),
            rotate_size_bytes,
            rotate_interval,
            gzip_level: None,
        }
    }

    #[test]
    fn file_names() {
        let default = format("<TOPIC>.<HOST><REV>.<DATETIME>.log");
        assert_eq!(
            default.name("2024-05-01_13", 0),
            "orders.box-000000.2024-05-01_13.log"
        );
        assert_eq!(default.name("d", 12), "orders.box-000012.d.log");
        assert!(default.has_rev());
        assert_eq!(format("<PID>-<TOPIC>").name("d", 0), "42-orders");
        assert!(!format("<TOPIC>.log").has_rev());
        assert!(format("a/<TOPIC>").check().is_err());
        assert!(format("..").check().is_err());
        assert!(default.check().is_ok());
    }

    #[test]
    fn datetime_formats() {
        assert!(check_datetime_format("%Y-%m-%d_%H").is_ok());
        assert!(check_datetime_format("%Q").is_err());
    }

    #[test]
    fn rotation() {
        let opened = Opened {
            name: "orders.box-000001.d.log".into(),
            datetime: "d".into(),
            rev: 1,
            opened_ms: 1_000,
            start_bytes: 0,
        };
        let same = |rev: u32| format("<TOPIC>.<HOST><REV>.d.log").name("d", rev);
        let later = |rev: u32| format("<TOPIC>.<HOST><REV>.e.log").name("e", rev);
        let plain = options(0, Duration::ZERO);
        assert!(needs_new_file(None, same, 1_000, &plain));
        assert!(!needs_new_file(Some((&opened, 10)), same, 99_999, &plain));
        assert!(needs_new_file(Some((&opened, 10)), later, 1_000, &plain));
        let by_size = options(10, Duration::ZERO);
        assert!(!needs_new_file(Some((&opened, 9)), same, 1_000, &by_size));
        assert!(needs_new_file(Some((&opened, 10)), same, 1_000, &by_size));
        let by_time = options(0, Duration::from_secs(1));
        assert!(!needs_new_file(Some((&opened, 0)), same, 1_999, &by_time));
        assert!(needs_new_file(Some((&opened, 0)), same, 2_000, &by_time));
    }

    #[test]
    fn gzip_members_concatenate() {
        use std::io::Read as _;
        let mut file = gzip_member(b"a\nb\n", 6).unwrap();
        file.extend(gzip_member(b"c\n", 1).unwrap());
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&file[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "a\nb\nc\n");
    }
}
