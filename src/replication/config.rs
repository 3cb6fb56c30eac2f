//! The redundancy-mode flags, checked before anything starts: `--node-id`,
//! `--replicas 1=HOST:PORT,2=HOST:PORT,...` (the gRPC addresses of the
//! initial members, the same list on every node) and `--grpc-address`.
//! Pure: strings in, a [`ReplicaConfig`] or a clear error out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ledgerq_storage::raft::NodeId;

/// Why the redundancy-mode flags cannot be used; the node exits at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--replicas entry {entry:?} is not ID=HOST:PORT")]
    Malformed { entry: String },
    #[error("--replicas entry {entry:?}: {reason}")]
    BadId { entry: String, reason: String },
    #[error("--replicas entry {entry:?}: address {address:?} is not HOST:PORT")]
    BadAddress { entry: String, address: String },
    #[error("--replicas lists node {0} twice")]
    DuplicateId(NodeId),
    #[error("--replicas lists the address {0} twice")]
    DuplicateAddress(String),
    #[error("--replicas does not list this node's --node-id {0}")]
    MissingSelf(NodeId),
    #[error("--replicas needs --node-id")]
    MissingNodeId,
    #[error("--node-id 0 is reserved; ids start at 1")]
    ZeroNodeId,
}

/// A replica group as the flags describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    pub node_id: NodeId,
    /// Every initial member's gRPC address, this node's included.
    pub replicas: BTreeMap<NodeId, String>,
    pub grpc_address: SocketAddr,
    pub forward_timeout: Duration,
}

/// Parses `--replicas` (entries separated by commas).
pub fn parse_replicas(list: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut replicas = BTreeMap::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (id, address) = entry
            .split_once('=')
            .ok_or_else(|| ConfigError::Malformed {
                entry: entry.to_owned(),
            })?;
        let id: NodeId =
            id.trim()
                .parse()
                .map_err(|e: std::num::ParseIntError| ConfigError::BadId {
                    entry: entry.to_owned(),
                    reason: e.to_string(),
                })?;
        if id == 0 {
            return Err(ConfigError::ZeroNodeId);
        }
        let address = address.trim();
        if !is_host_port(address) {
            return Err(ConfigError::BadAddress {
                entry: entry.to_owned(),
                address: address.to_owned(),
            });
        }
        if replicas.values().any(|a| a == address) {
            return Err(ConfigError::DuplicateAddress(address.to_owned()));
        }
        if replicas.insert(id, address.to_owned()).is_some() {
            return Err(ConfigError::DuplicateId(id));
        }
    }
    Ok(replicas)
}

/// `HOST:PORT` with a non-empty host and a port number.
pub fn is_host_port(address: &str) -> bool {
    if address.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match address.rsplit_once(':') {
        Some((host, port)) => {
            let host_ok = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
            host_ok && port.parse::<u16>().is_ok()
        }
        None => false,
    }
}

impl ReplicaConfig {
    /// The redundancy-mode config, `None` without `--replicas`.
    pub fn from_flags(
        node_id: Option<NodeId>,
        replicas: Option<&str>,
        grpc_address: SocketAddr,
        forward_timeout: Duration,
    ) -> Result<Option<ReplicaConfig>, ConfigError> {
        let Some(replicas) = replicas else {
            return Ok(None);
        };
        let node_id = node_id.ok_or(ConfigError::MissingNodeId)?;
        if node_id == 0 {
            return Err(ConfigError::ZeroNodeId);
        }
        let replicas = parse_replicas(replicas)?;
        if !replicas.contains_key(&node_id) {
            return Err(ConfigError::MissingSelf(node_id));
        }
        Ok(Some(ReplicaConfig {
            node_id,
            replicas,
            grpc_address,
            forward_timeout,
        }))
    }

    /// The member that initializes a new group: the lowest id.
    pub fn initializer(&self) -> NodeId {
        *self.replicas.keys().next().expect("at least this node")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(node: Option<u64>, list: &str) -> Result<Option<ReplicaConfig>, ConfigError> {
        let grpc = "127.0.0.1:4153".parse().unwrap();
        ReplicaConfig::from_flags(node, Some(list), grpc, Duration::from_secs(5))
    }

    #[test]
    fn three_members_parse() {
        let parsed = config(
            Some(2),
            "1=127.0.0.1:4153, 2=node-b.local:4153,3=[::1]:4153",
        )
        .unwrap()
        .unwrap();
        assert_eq!(parsed.node_id, 2);
        assert_eq!(parsed.replicas.len(), 3);
        assert_eq!(parsed.replicas[&2], "node-b.local:4153");
        assert_eq!(parsed.initializer(), 1);
    }

    #[test]
    fn without_replicas_it_is_single_node() {
        let grpc = "127.0.0.1:4153".parse().unwrap();
        let parsed = ReplicaConfig::from_flags(Some(1), None, grpc, Duration::from_secs(5));
        assert_eq!(parsed, Ok(None));
    }

    #[test]
    fn bad_lists_are_refused_clearly() {
        let cases = [
            (Some(1), "1=a:1,1=b:2", ConfigError::DuplicateId(1)),
            (
                Some(1),
                "1=a:1,2=a:1",
                ConfigError::DuplicateAddress("a:1".into()),
            ),
            (Some(4), "1=a:1,2=b:2", ConfigError::MissingSelf(4)),
            (None, "1=a:1", ConfigError::MissingNodeId),
            (Some(0), "1=a:1", ConfigError::ZeroNodeId),
            (Some(1), "1=a:1,0=b:2", ConfigError::ZeroNodeId),
            (
                Some(1),
                "1:a:1",
                ConfigError::Malformed {
                    entry: "1:a:1".into(),
                },
            ),
            (
                Some(1),
                "1=a:1,2=nohostport",
                ConfigError::BadAddress {
                    entry: "2=nohostport".into(),
                    address: "nohostport".into(),
                },
            ),
            (
                Some(1),
                "1=a:99999",
                ConfigError::BadAddress {
                    entry: "1=a:99999".into(),
                    address: "a:99999".into(),
                },
            ),
        ];
        for (node, list, expected) in cases {
            assert_eq!(config(node, list), Err(expected), "{list}");
        }
        assert!(matches!(
            config(Some(1), "x=a:1"),
            Err(ConfigError::BadId { .. })
        ));
    }
}
