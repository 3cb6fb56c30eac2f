//! Mutual TLS on the gRPC port (`--grpc-tls-cert`, `--grpc-tls-key`,
//! `--grpc-tls-root-ca-file`, all three or none), with tonic's own rustls
//! support (ring).
//!
//! One policy for the whole port: with TLS on, every client — a member's
//! raft and forwarding traffic, the admin API, health, reflection — must
//! present a certificate signed by the root CA; the admin bearer token
//! (`--grpc-admin-token-file`) still applies on top. The raft client
//! presents this node's certificate and checks each peer's against the
//! same CA, so a member needs a certificate valid for both server and
//! client use, naming the address the others dial (`--replicas`).
//! Certificates are read once, at start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::tls::{load_certs, load_key, load_roots};

/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// The gRPC TLS flags of `ledgerq serve`.
#[derive(Debug, Clone, Args)]
pub struct GrpcTlsArgs {
    /// PEM certificate (chain) this node presents on `--grpc-address` and,
    /// as a client, to the other members (server and client usage).
    #[arg(long)]
    pub grpc_tls_cert: Option<PathBuf>,

    /// PEM private key of `--grpc-tls-cert`.
    #[arg(long)]
    pub grpc_tls_key: Option<PathBuf>,

    /// PEM CA that every gRPC client's and every member's certificate must
    /// chain to.
    #[arg(long)]
    pub grpc_tls_root_ca_file: Option<PathBuf>,
}

/// Loaded, checked PEM files: what both sides of a member's gRPC need.
#[derive(Clone)]
pub struct GrpcTls {
    identity: Identity,
    root_ca: Certificate,
}

impl std::fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTls").finish_non_exhaustive()
    }
}

impl GrpcTlsArgs {
    /// The port's TLS, or None when no flag is set; a partial set is an
    /// error rather than a silently plaintext port.
    pub fn load(&self) -> anyhow::Result<Option<GrpcTls>> {
        let (cert, key, ca) = match (
            &self.grpc_tls_cert,
            &self.grpc_tls_key,
            &self.grpc_tls_root_ca_file,
        ) {
            (None, None, None) => return Ok(None),
            (Some(cert), Some(key), Some(ca)) => (cert, key, ca),
            _ => bail!(
                "--grpc-tls-cert, --grpc-tls-key and --grpc-tls-root-ca-file go together \
                 (gRPC TLS is mutual)"
            ),
        };
        install_ring_provider();
        Ok(Some(GrpcTls {
            identity: identity(cert, key)?,
            root_ca: root_ca(ca)?,
        }))
    }
}

impl GrpcTls {
    /// The server side: client certificates from the root CA required.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.root_ca.clone())
            .timeout(HANDSHAKE_DEADLINE)
    }

    /// The raft client side: this node's certificate, peers checked
    /// against the root CA.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.root_ca.clone())
            .identity(self.identity.clone())
            .timeout(HANDSHAKE_DEADLINE)
    }
}

/// A client configuration trusting `ca`, presenting `cert` and `key` if
/// given (`ledgerq admin --tls-*`).
pub fn client_config(
    ca: &Path,
    cert_and_key: Option<(&Path, &Path)>,
) -> anyhow::Result<ClientTlsConfig> {
    install_ring_provider();
    let mut config = ClientTlsConfig::new()
        .ca_certificate(root_ca(ca)?)
        .timeout(HANDSHAKE_DEADLINE);
    if let Some((cert, key)) = cert_and_key {
        config = config.identity(identity(cert, key)?);
    }
    Ok(config)
}

/// A certificate and its key as tonic takes them, checked first so that
/// an error names the file (tonic's parser would not).
fn identity(cert: &Path, key: &Path) -> anyhow::Result<Identity> {
    load_certs(cert)?;
    load_key(key)?;
    Ok(Identity::from_pem(read(cert)?, read(key)?))
}

/// A CA file as tonic takes it, checked to hold usable CA certificates.
fn root_ca(path: &Path) -> anyhow::Result<Certificate> {
    load_roots(path)?;
    Ok(Certificate::from_pem(read(path)?))
}

/// tonic's server builds its rustls configuration with the process-wide
/// crypto provider; ring is the only one compiled in, and saying so here
/// keeps it so should another provider ever be linked.
fn install_ring_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> GrpcTlsArgs {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            tls: GrpcTlsArgs,
        }
        let argv = std::iter::once("x").chain(extra.iter().copied());
        <Wrapper as clap::Parser>::parse_from(argv).tls
    }

    #[test]
    fn all_three_files_or_none() {
        assert!(args(&[]).load().unwrap().is_none());
        let partial = args(&["--grpc-tls-cert", "c.pem", "--grpc-tls-key", "k.pem"]);
        let error = partial.load().unwrap_err().to_string();
        assert!(error.contains("go together"), "{error}");
    }

    #[test]
    fn a_missing_or_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not PEM").unwrap();
        let junk = junk.to_str().unwrap();
        let all = args(&[
            "--grpc-tls-cert",
            junk,
            "--grpc-tls-key",
            junk,
            "--grpc-tls-root-ca-file",
            junk,
        ]);
        let error = format!("{:#}", all.load().unwrap_err());
        assert!(error.contains("junk.pem"), "{error}");
        let missing = client_config(&dir.path().join("ca.pem"), None).unwrap_err();
        assert!(format!("{missing:#}").contains("ca.pem"), "{missing:#}");
    }
}
