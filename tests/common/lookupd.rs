//! Lookupd side of the harness: `ledgerq lookupd` on free loopback ports,
//! HTTP requests to it, and a raw protocol V1 client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;

use super::http::{http_request, Response};
use super::{spawn_at, DEADLINE};

/// A `ledgerq lookupd` child process.
pub struct Lookupd {
    pub child: Child,
    pub tcp_address: SocketAddr,
    pub http_address: SocketAddr,
    /// With `--https-address`.
    pub https_address: Option<SocketAddr>,
}

impl Lookupd {
    pub fn start(extra_args: &[&str]) -> Lookupd {
        Self::start_at(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            extra_args,
        )
    }

    /// Starts on the given addresses (to restart one on the same ports).
    pub fn start_at(tcp: SocketAddr, http: SocketAddr, extra_args: &[&str]) -> Lookupd {
        let mut args = vec!["lookupd"];
        args.extend_from_slice(extra_args);
        let spawned = spawn_at(&args, &tcp.to_string(), &http.to_string());
        Lookupd {
            child: spawned.child,
            tcp_address: spawned.tcp_address,
            http_address: spawned.http_address,
            https_address: spawned.https_address,
        }
    }

    pub fn request(&self, method: &str, target: &str) -> Response {
        http_request(self.http_address, method, target, b"")
    }

    pub fn get(&self, target: &str) -> Response {
        self.request("GET", target)
    }

    pub fn post(&self, target: &str) -> Response {
        self.request("POST", target)
    }

    /// `GET target` answered 200; its JSON body.
    pub fn json(&self, target: &str) -> serde_json::Value {
        let response = self.get(target);
        assert_eq!(response.status, 200, "{target}: {response:?}");
        serde_json::from_str(&response.body).expect("JSON body")
    }

    /// The `broadcast_address:tcp_port` of `/lookup?topic=`'s producers, sorted
    /// (empty when the topic is unknown).
    pub fn producers(&self, topic: &str) -> Vec<String> {
        let response = self.get(&format!("/lookup?topic={topic}"));
        if response.status == 404 {
            return Vec::new();
        }
        let found: serde_json::Value = serde_json::from_str(&response.body).expect("JSON");
        let mut producers: Vec<String> = found["producers"]
            .as_array()
            .expect("producers array")
            .iter()
            .map(|p| {
                format!(
                    "{}:{}",
                    p["broadcast_address"].as_str().unwrap(),
                    p["tcp_port"]
                )
            })
            .collect();
        producers.sort();
        producers
    }
}

impl Drop for Lookupd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw lookupd protocol V1 connection.
pub struct V1Client {
    pub stream: TcpStream,
}

impl V1Client {
    /// Connects and sends the magic.
    pub fn connect(address: SocketAddr) -> V1Client {
        let mut client = Self::connect_without_magic(address);
        client.send(b"  V1");
        client
    }

    pub fn connect_without_magic(address: SocketAddr) -> V1Client {
        let stream = TcpStream::connect(address).expect("connect lookupd");
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        V1Client { stream }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// One `[u32 size][bytes]` reply.
    pub fn reply(&mut self) -> String {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).expect("reply size");
        let mut data = vec![0u8; u32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut data).expect("reply body");
        String::from_utf8(data).expect("UTF-8 reply")
    }

    pub fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes());
        self.reply()
    }

    pub fn identify(&mut self, json: &str) -> String {
        let mut frame = b"IDENTIFY\n".to_vec();
        frame.extend_from_slice(&(json.len() as u32).to_be_bytes());
        frame.extend_from_slice(json.as_bytes());
        self.send(&frame);
        self.reply()
    }

    /// Identifies as a node `broadcast_address:tcp_port` (http port + 1).
    pub fn identify_as(&mut self, broadcast_address: &str, tcp_port: u16) -> String {
        self.identify(&format!(
            r#"{{"version":"1.3.0","tcp_port":{tcp_port},"http_port":{},"hostname":"{broadcast_address}","broadcast_address":"{broadcast_address}"}}"#,
            tcp_port + 1
        ))
    }

    /// The server closed the connection (after what was read so far).
    pub fn expect_closed(&mut self) {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("connection still open: {other:?}"),
        }
    }
}
