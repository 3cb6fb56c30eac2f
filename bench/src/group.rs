//! A three-member ledgerq replica group on loopback (redundancy mode), for
//! the benchmark matrix's `replicated` mode: start it, find its leader
//! through `GET /cluster`, time failovers (SIGKILL the leader, restart it),
//! stop it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::nsq::Connection;
use crate::ports::free_address;
use crate::server::{self, ServerCommand, ServerProcess, Stop};

pub const MEMBERS: usize = 3;

pub struct Group {
    /// Node ids, in the order of `members`, `commands`, `tcp` and `http`.
    pub ids: Vec<u64>,
    pub members: Vec<ServerProcess>,
    commands: Vec<ServerCommand>,
    pub tcp: Vec<SocketAddr>,
    pub http: Vec<SocketAddr>,
    /// Index (0-based) of the leader in `members`.
    pub leader: usize,
    /// The leader's command line, for reports.
    pub display: String,
}

/// `GET path` over HTTP/1.0, the body as JSON.
pub async fn get_json(address: SocketAddr, path: &str) -> Result<serde_json::Value> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let body = text.split_once("\r\n\r\n").context("no HTTP body")?.1;
    Ok(serde_json::from_str(body)?)
}

impl Group {
    /// Starts the members (`extra` flags on each) and waits for a leader
    /// that accepts connections.
    pub async fn start(binary: &Path, work: &Path, extra: &[&str]) -> Result<Group> {
        let grpc: Vec<SocketAddr> = (0..MEMBERS).map(|_| free_address()).collect();
        let http: Vec<SocketAddr> = (0..MEMBERS).map(|_| free_address()).collect();
        let replicas = grpc
            .iter()
            .enumerate()
            .map(|(i, address)| format!("{}={address}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        let mut tcp = Vec::new();
        let mut commands = Vec::new();
        for i in 0..MEMBERS {
            let mut extra_args = vec![
                format!("--node-id={}", i + 1),
                format!("--replicas={replicas}"),
                format!("--grpc-address={}", grpc[i]),
            ];
            extra_args.extend(extra.iter().map(|s| s.to_string()));
            let command = ServerCommand {
                binary: binary.to_path_buf(),
                data_path: work.join(format!("replicated-{}-data", i + 1)),
                tcp_address: "127.0.0.1:0".parse()?,
                http_address: Some(http[i]),
                extra_args,
                log_path: work.join(format!("replicated-{}.log", i + 1)),
            };
            let mut process = command.spawn().await?;
            let (address, _) = process.wait_listening(Duration::from_secs(30)).await?;
            members.push(process);
            tcp.push(address);
            commands.push(command);
        }
        let ids: Vec<u64> = (1..=MEMBERS as u64).collect();
        let leader = wait_for_leader(&ids, &http, Duration::from_secs(30)).await?;
        server::wait_accepting(tcp[leader], Instant::now(), Duration::from_secs(30)).await?;
        Ok(Group {
            ids,
            members,
            display: commands[leader].display(),
            commands,
            tcp,
            http,
            leader,
        })
    }

    /// SIGKILLs the leader, then publishes through the surviving members
    /// until one answers `OK`: the time from the kill to that `OK` (what a
    /// client that retries on another member waits during a failover).
    /// Then restarts the killed member on its data dir and waits until all
    /// three agree on a leader again, ready for the next round.
    pub async fn time_failover(&mut self, topic: &str) -> Result<Duration> {
        let killed = self.leader;
        let survivors: Vec<usize> = (0..self.members.len()).filter(|&i| i != killed).collect();
        let killed_at = Instant::now();
        self.members[killed]
            .stop_in_place(Stop::Kill, Duration::from_secs(10))
            .await?;
        let elapsed = publish_through(&survivors, &self.tcp, topic, killed_at).await?;
        let restarted = self.commands[killed].spawn().await?;
        self.members[killed] = restarted;
        let (address, _) = self.members[killed]
            .wait_listening(Duration::from_secs(30))
            .await?;
        self.tcp[killed] = address;
        self.leader = wait_for_leader(&self.ids, &self.http, Duration::from_secs(30)).await?;
        server::wait_accepting(
            self.tcp[self.leader],
            Instant::now(),
            Duration::from_secs(30),
        )
        .await?;
        self.wait_caught_up(killed, Duration::from_secs(120))
            .await?;
        Ok(elapsed)
    }

    /// Waits until member `member` has applied what the leader had
    /// committed when this was called (so that the next round does not
    /// start with a member still replaying its log).
    async fn wait_caught_up(&self, member: usize, timeout: Duration) -> Result<()> {
        let index = |view: &serde_json::Value, field: &str| view[field].as_u64().unwrap_or(0);
        let leader_view = get_json(self.http[self.leader], "/cluster").await?;
        let committed = index(&leader_view, "committed_index");
        let deadline = Instant::now() + timeout;
        loop {
            let view = get_json(self.http[member], "/cluster").await?;
            if index(&view, "applied_index") >= committed {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "member {} did not catch up within {timeout:?}",
                    self.ids[member]
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM to every member.
    pub async fn stop(self) -> Result<()> {
        for member in self.members {
            member.stop(Stop::Term, Duration::from_secs(60)).await?;
        }
        Ok(())
    }
}

/// Publishes through the members at `survivors` in turn until one answers
/// `OK`; the time since `since`.
async fn publish_through(
    survivors: &[usize],
    tcp: &[SocketAddr],
    topic: &str,
    since: Instant,
) -> Result<Duration> {
    let deadline = since + Duration::from_secs(60);
    loop {
        for &member in survivors {
            let attempt = tokio::time::timeout(Duration::from_secs(10), async {
                let mut connection = Connection::connect(tcp[member]).await?;
                connection.publish(topic, b"after the failover").await
            });
            if let Ok(Ok(())) = attempt.await {
                return Ok(since.elapsed());
            }
        }
        if Instant::now() > deadline {
            bail!("no surviving member accepted a publish within 60 s of the leader's SIGKILL");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls every member's `/cluster` until they agree on a leader among
/// `ids`; returns its position.
async fn wait_for_leader(ids: &[u64], http: &[SocketAddr], timeout: Duration) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut leaders = Vec::new();
        for address in http {
            let view = get_json(*address, "/cluster").await.ok();
            leaders.push(view.and_then(|v| v["leader_id"].as_u64()));
        }
        if let Some(Some(leader)) = leaders.first() {
            let position = ids.iter().position(|id| id == leader);
            if let (true, Some(position)) = (leaders.iter().all(|l| *l == Some(*leader)), position)
            {
                return Ok(position);
            }
        }
        if Instant::now() > deadline {
            bail!("the replica group elected no leader within {timeout:?}: {leaders:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
