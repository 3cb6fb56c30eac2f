//! Finding a topic's nodes, as NSQ's Go tools do: the `--nsqd-tcp-address`
//! (or `--nsqd-http-address`) list as given, or `GET /lookup?topic=T` on each
//! `--lookupd-http-address`, merging every producer's
//! `broadcast_address:tcp_port` (or `:http_port`). Also owns the small HTTP
//! client (hyper's, as `lookup_peer.rs` uses) and address checks; JSON
//! parsing is pure and unit-tested.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use clap::Args;
use serde::Deserialize;
use tokio::net::TcpStream;

/// nsq's `--http-client-connect-timeout` default.
const HTTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// nsq's `--http-client-request-timeout` default.
const HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest HTTP reply read (a `/stats` of many topics).
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// Where a consumer or publisher finds its nodes.
#[derive(Debug, Clone, Default, Args)]
pub struct TcpSources {
    /// nsqd TCP address, HOST:PORT (repeatable).
    #[arg(long = "nsqd-tcp-address", value_name = "HOST:PORT")]
    pub nsqd_tcp_addresses: Vec<String>,

    /// lookupd HTTP address, HOST:PORT (repeatable): the topic's nodes are
    /// the producers of `GET /lookup?topic=` on each.
    #[arg(long = "lookupd-http-address", value_name = "HOST:PORT")]
    pub lookupd_http_addresses: Vec<String>,

    /// How to connect to them: TLS and AUTH.
    #[command(flatten)]
    pub security: super::nsq_client::ClientSecurity,
}

/// Which port of a lookupd producer to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Tcp,
    Http,
}

/// `host:port` with a non-empty host and a numeric port (`[v6]:port` too);
/// an `http://` prefix and a trailing `/` are dropped, as nsq's tools do.
pub fn check_address(flag: &str, text: &str) -> anyhow::Result<String> {
    let trimmed = text
        .strip_prefix("http://")
        .unwrap_or(text)
        .trim_end_matches('/');
    let fail = |why: &str| anyhow!("invalid --{flag} {text:?}: {why}");
    if trimmed.contains("://") {
        return Err(fail("only http:// is supported"));
    }
    let (host, port) = trimmed
        .rsplit_once(':')
        .ok_or_else(|| fail("missing :PORT"))?;
    if host.is_empty() || host.contains('/') {
        return Err(fail("missing host"));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(trimmed.to_owned()),
        _ => Err(fail("port must be 1-65535")),
    }
}

/// Checks a list of addresses of `flag`.
pub fn check_addresses(flag: &str, addresses: &[String]) -> anyhow::Result<Vec<String>> {
    addresses
        .iter()
        .map(|address| check_address(flag, address))
        .collect()
}

/// nsq_tail's rule: exactly one of the two kinds of source.
pub fn check_sources(nsqd: &[String], nsqd_flag: &str, lookupd: &[String]) -> anyhow::Result<()> {
    match (nsqd.is_empty(), lookupd.is_empty()) {
        (true, true) => bail!("--{nsqd_flag} or --lookupd-http-address required"),
        (false, false) => bail!("use --{nsqd_flag} or --lookupd-http-address not both"),
        _ => Ok(()),
    }
}

#[derive(Debug, Deserialize)]
struct Producer {
    broadcast_address: String,
    tcp_port: u16,
    http_port: u16,
}

#[derive(Debug, Deserialize)]
struct Lookup {
    #[serde(default)]
    producers: Vec<Producer>,
}

/// The producers' addresses of a `/lookup` reply: nsqlookupd's V1 shape, or
/// the legacy one wrapped in `{"status_code":200,"data":{...}}`.
pub fn parse_lookup(body: &[u8], port: Port) -> anyhow::Result<Vec<String>> {
    let mut json: serde_json::Value = serde_json::from_slice(body)?;
    if let Some(data) = json.get_mut("data") {
        json = data.take();
    }
    let lookup: Lookup = serde_json::from_value(json)?;
    Ok(lookup
        .producers
        .into_iter()
        .map(|producer| {
            let port = match port {
                Port::Tcp => producer.tcp_port,
                Port::Http => producer.http_port,
            };
            join_host_port(&producer.broadcast_address, port)
        })
        .collect())
}

/// `host:port`, bracketing an IPv6 host.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Percent-encodes what a topic or channel name may hold beyond
/// `[.a-zA-Z0-9_-]` (the `#` of `#ephemeral`).
pub fn query_escape(name: &str) -> String {
    name.replace('#', "%23")
}

/// The nodes of `topic`: `nsqd` as given, or the producers every lookupd
/// knows (a lookupd that fails is reported and skipped, as nsq's tools do;
/// all failing is an error), sorted and deduplicated.
pub async fn nodes(
    topic: &str,
    nsqd: &[String],
    lookupd: &[String],
    port: Port,
) -> anyhow::Result<Vec<String>> {
    if !nsqd.is_empty() {
        return Ok(nsqd.to_vec());
    }
    let path = format!("/lookup?topic={}", query_escape(topic));
    let answers =
        futures::future::join_all(lookupd.iter().map(|address| get(address, &path))).await;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for (address, answer) in lookupd.iter().zip(answers) {
        match answer {
            Ok((404, _)) => {}
            Ok((200, body)) => found.extend(
                parse_lookup(&body, port)
                    .with_context(|| format!("lookupd {address}: malformed /lookup reply"))?,
            ),
            Ok((status, _)) => errors.push(format!("lookupd {address}: status {status}")),
            Err(error) => errors.push(format!("lookupd {address}: {error:#}")),
        }
    }
    if errors.len() == lookupd.len() {
        bail!("{}", errors.join("; "));
    }
    for error in &errors {
        tracing::warn!("{error}");
    }
    found.sort();
    found.dedup();
    if found.is_empty() {
        bail!("no node has topic {topic:?} (according to lookupd)");
    }
    Ok(found)
}

/// `GET http://<address><path>`: the status and the body.
pub async fn get(address: &str, path: &str) -> anyhow::Result<(u16, Bytes)> {
    use http_body_util::{BodyExt, Empty, Limited};
    let stream = tokio::time::timeout(HTTP_CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| anyhow!("connecting timed out after {HTTP_CONNECT_TIMEOUT:?}"))??;
    let request = async {
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, address)
            .header(hyper::header::ACCEPT, "application/vnd.nsq; version=1.0")
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_REPLY_BYTES)
            .collect()
            .await
            .map_err(|error| anyhow!("reading the body: {error}"))?
            .to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(HTTP_REQUEST_TIMEOUT, request)
        .await
        .map_err(|_| anyhow!("no reply within {HTTP_REQUEST_TIMEOUT:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        assert_eq!(
            check_address("x", "127.0.0.1:4150").unwrap(),
            "127.0.0.1:4150"
        );
        assert_eq!(
            check_address("x", "http://localhost:4161/").unwrap(),
            "localhost:4161"
        );
        assert_eq!(check_address("x", "[::1]:4150").unwrap(), "[::1]:4150");
        let error = |text| {
            check_address("nsqd-tcp-address", text)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            error("nope"),
            r#"invalid --nsqd-tcp-address "nope": missing :PORT"#
        );
        assert!(error(":4150").ends_with("missing host"));
        assert!(error("host:0").ends_with("port must be 1-65535"));
        assert!(error("host:99999").ends_with("port must be 1-65535"));
        assert!(error("https://host:1").ends_with("only http:// is supported"));
    }

    #[test]
    fn exactly_one_kind_of_source() {
        let some = ["a:1".to_owned()];
        assert!(check_sources(&some, "nsqd-tcp-address", &[]).is_ok());
        assert!(check_sources(&[], "nsqd-tcp-address", &some).is_ok());
        let neither = check_sources(&[], "nsqd-tcp-address", &[]).unwrap_err();
        assert_eq!(
            neither.to_string(),
            "--nsqd-tcp-address or --lookupd-http-address required"
        );
        assert!(check_sources(&some, "nsqd-http-address", &some).is_err());
    }

    #[test]
    fn lookup_replies_in_both_shapes() {
        let v1 = br#"{"channels":["c"],"producers":[
            {"remote_address":"127.0.0.1:5","hostname":"h","broadcast_address":"10.0.0.1",
             "tcp_port":4150,"http_port":4151,"version":"1.3.0"},
            {"broadcast_address":"::1","tcp_port":4152,"http_port":4153}]}"#;
        assert_eq!(
            parse_lookup(v1, Port::Tcp).unwrap(),
            ["10.0.0.1:4150", "[::1]:4152"]
        );
        let legacy = br#"{"status_code":200,"status_txt":"OK","data":{"producers":[
            {"broadcast_address":"h","tcp_port":1,"http_port":2}]}}"#;
        assert_eq!(parse_lookup(legacy, Port::Http).unwrap(), ["h:2"]);
        assert!(parse_lookup(b"not json", Port::Tcp).is_err());
        assert!(parse_lookup(br#"{"producers":[{"tcp_port":1}]}"#, Port::Tcp).is_err());
    }

    #[test]
    fn names_are_escaped_for_queries() {
        assert_eq!(query_escape("tail1#ephemeral"), "tail1%23ephemeral");
    }
}
