//! Running `ledgerq serve` as a child process: spawn it, learn its address
//! from its log, read its memory use from /proc, stop it with a signal.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::nsq::{self, Connection, Identify};

/// How to start the server.
#[derive(Debug, Clone)]
pub struct ServerCommand {
    pub binary: PathBuf,
    pub data_path: PathBuf,
    /// `127.0.0.1:0` lets the server pick a free port (read back from its log).
    pub tcp_address: SocketAddr,
    /// `None`: `127.0.0.1:0` (a free port, unused by the benchmarks).
    pub http_address: Option<SocketAddr>,
    /// More flags for `ledgerq serve`.
    pub extra_args: Vec<String>,
    /// The server's stderr is appended here.
    pub log_path: PathBuf,
}

impl ServerCommand {
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "serve".to_string(),
            format!("--tcp-address={}", self.tcp_address),
            match self.http_address {
                Some(address) => format!("--http-address={address}"),
                None => "--http-address=127.0.0.1:0".to_string(),
            },
            format!("--data-path={}", self.data_path.display()),
        ];
        if !self
            .extra_args
            .iter()
            .any(|a| a.starts_with("--grpc-address"))
        {
            args.push("--grpc-address=127.0.0.1:0".to_string());
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// The command line, for reports.
    pub fn display(&self) -> String {
        std::iter::once(self.binary.display().to_string())
            .chain(self.args())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Starts the process. It is killed if the handle is dropped.
    pub async fn spawn(&self) -> Result<ServerProcess> {
        let mut log = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .await
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        log.write_all(format!("---- {}\n", self.display()).as_bytes())
            .await?;
        let spawned_at = Instant::now();
        let mut child = Command::new(&self.binary)
            .args(self.args())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let (listening_tx, listening_rx) = oneshot::channel();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail_writer = tail.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut listening_tx = Some(listening_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(address) = listening_address(&line) {
                    if let Some(tx) = listening_tx.take() {
                        let _ = tx.send((address, spawned_at.elapsed()));
                    }
                }
                let _ = log.write_all(line.as_bytes()).await;
                let _ = log.write_all(b"\n").await;
                let mut tail = tail_writer.lock().unwrap();
                if tail.len() == 20 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            let _ = log.flush().await;
        });
        Ok(ServerProcess {
            child,
            pid,
            spawned_at,
            listening: Some(listening_rx),
            tail,
        })
    }
}

/// The address in a `TCP: listening ... tcp_address=<addr> ...` log line.
pub fn listening_address(line: &str) -> Option<SocketAddr> {
    if !line.contains("TCP: listening") {
        return None;
    }
    let start = line.find("tcp_address=")? + "tcp_address=".len();
    let rest = &line[start..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    rest[..end].trim_matches('"').parse().ok()
}

/// Memory figures of a process, from /proc/<pid>/status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    /// Resident set size now (VmRSS), KiB.
    pub rss_kib: u64,
    /// Peak resident set size since the process started (VmHWM), KiB.
    pub hwm_kib: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Result<Memory> {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> Result<u64> {
            let line = text
                .lines()
                .find(|line| line.starts_with(name))
                .ok_or_else(|| anyhow!("{name} missing from {path}"))?;
            line[name.len()..]
                .split_whitespace()
                .next()
                .and_then(|kib| kib.parse().ok())
                .ok_or_else(|| anyhow!("cannot parse {line:?}"))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }

    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    pub fn hwm_mib(&self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }
}

/// How to stop the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    /// SIGTERM: clean shutdown.
    Term,
    /// SIGKILL: crash; the restart recovers from the write-ahead log.
    Kill,
}

/// A running `ledgerq serve`.
pub struct ServerProcess {
    child: Child,
    pub pid: u32,
    pub spawned_at: Instant,
    listening: Option<oneshot::Receiver<(SocketAddr, Duration)>>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl ServerProcess {
    /// Waits for the `TCP: listening` log line; returns the address and the
    /// time from spawn until the line was read.
    pub async fn wait_listening(&mut self, timeout: Duration) -> Result<(SocketAddr, Duration)> {
        let receiver = self
            .listening
            .take()
            .context("wait_listening called twice")?;
        tokio::select! {
            found = receiver => found.map_err(|_| self.died("before it was listening")),
            status = self.child.wait() => {
                let status = status?;
                Err(self.died(&format!("before it was listening ({status})")))
            }
            _ = tokio::time::sleep(timeout) => {
                bail!("the server did not log `TCP: listening` within {timeout:?}")
            }
        }
    }

    fn died(&self, when: &str) -> anyhow::Error {
        let tail = self.tail.lock().unwrap();
        let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
        anyhow!(
            "the server exited {when}; last log lines:\n{}",
            lines.join("\n")
        )
    }

    pub fn memory(&self) -> Result<Memory> {
        Memory::of(self.pid)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends the signal and waits for the exit; returns the exit status and
    /// the time from signal to exit.
    pub async fn stop(mut self, how: Stop, timeout: Duration) -> Result<(ExitStatus, Duration)> {
        self.stop_in_place(how, timeout).await
    }

    /// As [`ServerProcess::stop`], keeping the handle (its slot can then
    /// take the restarted process).
    pub async fn stop_in_place(
        &mut self,
        how: Stop,
        timeout: Duration,
    ) -> Result<(ExitStatus, Duration)> {
        let signal = match how {
            Stop::Term => libc::SIGTERM,
            Stop::Kill => libc::SIGKILL,
        };
        let started = Instant::now();
        // SAFETY: kill(2) with a pid we own; the child has not been reaped
        // yet (we hold its handle), so the pid cannot have been reused.
        if unsafe { libc::kill(self.pid as libc::pid_t, signal) } != 0 {
            bail!(
                "kill({}, {signal}): {}",
                self.pid,
                std::io::Error::last_os_error()
            );
        }
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok((status?, started.elapsed())),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("the server did not exit within {timeout:?} of {how:?}")
            }
        }
    }
}

/// Result of [`wait_accepting`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Accepting {
    /// From `since` until the first TCP connect succeeded.
    pub connect: Duration,
    /// From `since` until the server answered a command on that connection.
    pub round_trip: Duration,
    /// Connect attempts made.
    pub attempts: u32,
}

/// Polls `address` until the server accepts a connection and answers on
/// it: TCP connect, magic, `NOP`, then `IDENTIFY` (which has a reply), so a
/// completed round trip proves that commands are being processed.
pub async fn wait_accepting(
    address: SocketAddr,
    since: Instant,
    timeout: Duration,
) -> Result<Accepting> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        if let Ok(mut connection) = Connection::connect(address).await {
            let connect = since.elapsed();
            connection.nop().await?;
            let identify = Identify {
                client_id: "accept-probe".to_string(),
                ..Identify::default()
            };
            nsq::command::identify(connection.writer.buf(), &identify)?;
            let reply = tokio::time::timeout(timeout, connection.request())
                .await
                .context("the server accepted but did not answer IDENTIFY")??;
            let round_trip = since.elapsed();
            if reply.is_empty() {
                bail!("empty IDENTIFY reply");
            }
            return Ok(Accepting {
                connect,
                round_trip,
                attempts,
            });
        }
        if since.elapsed() > timeout {
            bail!("the server did not accept connections within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The `ledgerq` binary to benchmark: `$CARGO_TARGET_DIR/release/ledgerq`,
/// else the `ledgerq` next to the running executable, else
/// `<workspace>/target/release/ledgerq`.
pub fn default_binary() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Path::new(&dir).join("release").join("ledgerq");
    }
    if let Some(sibling) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("ledgerq")))
        .filter(|path| path.exists())
    {
        return sibling;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("release")
        .join("ledgerq")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_listening_address() {
        let line = "2025-11-25T15:30:12.000Z  INFO ledgerq::server: TCP: listening \
                    tcp_address=127.0.0.1:40123 data_path=/tmp/x fsync=true";
        assert_eq!(
            listening_address(line),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(listening_address("INFO tcp_address=127.0.0.1:1"), None);
    }

    #[test]
    fn reads_own_memory() {
        let memory = Memory::of(std::process::id()).unwrap();
        assert!(memory.rss_kib > 0);
        assert!(memory.hwm_kib >= memory.rss_kib);
    }
}
