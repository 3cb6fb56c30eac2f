//! TLS settings shared by every listener: nsqd's `--tls-*` flags turned into
//! a rustls server configuration, and what a finished handshake tells us
//! about the peer (version, cipher suite, the client certificate's common
//! name) for `/stats` and AUTH.
//!
//! rustls implements TLS 1.2 and 1.3 only: `--tls-min-version=tls1.0` or
//! `tls1.1` (nsqd's default is tls1.0) therefore means TLS 1.2.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};

/// nsqd's `--tls-required`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsRequired {
    /// TLS is offered, not required.
    False,
    /// TCP clients must upgrade before any command but IDENTIFY; the plain
    /// HTTP listener refuses every request (403 TLS_REQUIRED).
    True,
    /// TCP clients must upgrade; plain HTTP stays open.
    #[value(name = "tcp-https")]
    TcpHttps,
}

/// nsqd's `--tls-client-auth-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClientAuthPolicy {
    /// A client certificate is required; it is not checked against a CA.
    Require,
    /// A client certificate signed by `--tls-root-ca-file` is required.
    RequireVerify,
}

/// nsqd's `--tls-min-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsMinVersion {
    #[value(name = "tls1.0")]
    Tls10,
    #[value(name = "tls1.1")]
    Tls11,
    #[value(name = "tls1.2")]
    Tls12,
    #[value(name = "tls1.3")]
    Tls13,
}

/// The TLS flags of `ledgerq serve` (nsqd's names and defaults).
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM certificate (chain) this node presents; with `--tls-key`, enables
    /// the IDENTIFY `tls_v1` upgrade and the HTTPS listener.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,

    /// PEM certificate authority that client certificates must chain to
    /// (with `--tls-client-auth-policy=require-verify`).
    #[arg(long)]
    pub tls_root_ca_file: Option<PathBuf>,

    /// Client certificates: `require` (any) or `require-verify` (signed by
    /// `--tls-root-ca-file`). Setting it makes TLS required.
    #[arg(long, value_enum)]
    pub tls_client_auth_policy: Option<ClientAuthPolicy>,

    /// Require TLS: `true` (TCP and HTTP), `tcp-https` (TCP only) or `false`.
    #[arg(long, value_enum, default_value = "false")]
    pub tls_required: TlsRequired,

    /// Oldest TLS version accepted (rustls speaks 1.2 and 1.3: 1.0 and 1.1
    /// mean 1.2).
    #[arg(long, value_enum, default_value = "tls1.0")]
    pub tls_min_version: TlsMinVersion,
}

/// TLS as a listener uses it.
#[derive(Clone)]
pub struct ServerTls {
    /// Handshakes for the TCP protocol's `tls_v1` upgrade (no ALPN).
    pub config: Arc<ServerConfig>,
    /// TCP commands other than IDENTIFY need TLS first.
    pub required_for_tcp: bool,
    /// The plain HTTP listener answers 403 TLS_REQUIRED.
    pub required_for_http: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("required_for_tcp", &self.required_for_tcp)
            .field("required_for_http", &self.required_for_http)
            .finish_non_exhaustive()
    }
}

impl TlsArgs {
    /// The listeners' TLS, or None when no certificate is configured.
    /// A policy or a requirement without a certificate is refused, as a
    /// broker that silently serves plaintext would be worse than none.
    pub fn server_tls(&self) -> anyhow::Result<Option<ServerTls>> {
        let required = match (self.tls_required, self.tls_client_auth_policy) {
            (TlsRequired::False, Some(_)) => TlsRequired::True,
            (required, _) => required,
        };
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => (cert, key),
            (None, None) if required == TlsRequired::False => return Ok(None),
            (None, None) => {
                bail!("--tls-required and --tls-client-auth-policy need --tls-cert and --tls-key")
            }
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = match self.tls_min_version {
            TlsMinVersion::Tls13 => &[&rustls::version::TLS13],
            _ => &[&rustls::version::TLS12, &rustls::version::TLS13],
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .context("TLS versions")?;
        let verifier = client_verifier(
            self.tls_client_auth_policy,
            self.tls_root_ca_file.as_deref(),
            provider,
        )?;
        let config = builder
            .with_client_cert_verifier(verifier)
            .with_single_cert(load_certs(cert)?, load_key(key)?)
            .context("--tls-cert and --tls-key do not make a usable pair")?;
        Ok(Some(ServerTls {
            config: Arc::new(config),
            required_for_tcp: required != TlsRequired::False,
            required_for_http: required == TlsRequired::True,
        }))
    }
}

fn client_verifier(
    policy: Option<ClientAuthPolicy>,
    root_ca: Option<&Path>,
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    Ok(match policy {
        None => WebPkiClientVerifier::no_client_auth(),
        Some(ClientAuthPolicy::Require) => Arc::new(AnyClientCert { provider }),
        Some(ClientAuthPolicy::RequireVerify) => {
            let path = root_ca
                .context("--tls-client-auth-policy=require-verify needs --tls-root-ca-file")?;
            WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(path)?), provider)
                .build()
                .context("client certificate verifier")?
        }
    })
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .with_context(|| format!("reading a PEM private key from {}", path.display()))
}

/// A root store holding every certificate of a PEM file.
pub fn load_roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .with_context(|| format!("a CA certificate of {}", path.display()))?;
    }
    Ok(roots)
}

/// `require`: a client must present a certificate and prove it holds its
/// key (the handshake signature is checked); who issued it is not.
#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What a finished server-side handshake says about the session, in
/// nsqd's `/stats` spelling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerTls {
    /// `TLS1.2` or `TLS1.3`.
    pub version: String,
    /// The Go constant name of the cipher suite, as nsqd reports it.
    pub cipher_suite: String,
    /// The negotiated ALPN protocol, or "".
    pub negotiated_protocol: String,
    /// The client presented a certificate.
    pub mutual: bool,
    /// The subject common name of the client certificate, or "".
    pub common_name: String,
}

impl PeerTls {
    pub fn of(connection: &rustls::ServerConnection) -> PeerTls {
        let version = match connection.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS1.2",
            _ => "",
        };
        let cipher_suite = connection
            .negotiated_cipher_suite()
            .and_then(|suite| suite.suite().as_str())
            .map(|name| name.replacen("TLS13_", "TLS_", 1))
            .unwrap_or_default();
        let negotiated_protocol = connection
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let leaf = connection
            .peer_certificates()
            .and_then(|certs| certs.first());
        PeerTls {
            version: version.to_string(),
            cipher_suite,
            negotiated_protocol,
            mutual: leaf.is_some(),
            common_name: leaf.map(|cert| common_name(cert)).unwrap_or_default(),
        }
    }
}

/// The first subject CN of a DER certificate, or "" when it has none or
/// does not parse.
pub fn common_name(cert: &CertificateDer<'_>) -> String {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return String::new();
    };
    let cn = parsed.subject().iter_common_name().next();
    cn.and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<TlsArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            tls: TlsArgs,
        }
        let argv = std::iter::once("x").chain(extra.iter().copied());
        <Wrapper as clap::Parser>::try_parse_from(argv).map(|w| w.tls)
    }

    fn write_pair(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    #[test]
    fn no_certificate_means_no_tls_and_a_requirement_without_one_is_refused() {
        assert!(args(&[]).unwrap().server_tls().unwrap().is_none());
        let required = args(&["--tls-required", "true"]).unwrap();
        assert!(required.server_tls().is_err());
        let policy = args(&["--tls-client-auth-policy", "require"]).unwrap();
        assert!(policy.server_tls().is_err());
        assert!(args(&["--tls-required", "maybe"]).is_err());
    }

    #[test]
    fn policies_and_requirements_follow_nsqd() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = write_pair(dir.path(), "node-1");
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let base = ["--tls-cert", cert, "--tls-key", key];
        let tls = args(&base).unwrap().server_tls().unwrap().unwrap();
        assert!(!tls.required_for_tcp && !tls.required_for_http);
        let with = |extra: &[&str]| {
            let all: Vec<&str> = base.iter().chain(extra).copied().collect();
            args(&all).unwrap().server_tls()
        };
        let tcp_https = with(&["--tls-required", "tcp-https"]).unwrap().unwrap();
        assert!(tcp_https.required_for_tcp && !tcp_https.required_for_http);
        // A client-auth policy forces --tls-required=true, as in nsqd.
        let require = with(&["--tls-client-auth-policy", "require"])
            .unwrap()
            .unwrap();
        assert!(require.required_for_tcp && require.required_for_http);
        // require-verify needs the CA to verify against.
        assert!(with(&["--tls-client-auth-policy", "require-verify"]).is_err());
        let verify = with(&[
            "--tls-client-auth-policy",
            "require-verify",
            "--tls-root-ca-file",
            cert,
        ]);
        assert!(verify.unwrap().is_some());
    }

    #[test]
    fn a_key_that_is_not_pem_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = write_pair(dir.path(), "x");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a key").unwrap();
        let argv = [
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            junk.to_str().unwrap(),
        ];
        let error = args(&argv).unwrap().server_tls().unwrap_err();
        assert!(format!("{error:#}").contains("junk.pem"), "{error:#}");
    }

    #[test]
    fn common_name_is_read_from_the_subject() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = write_pair(dir.path(), "consumer-7");
        let der = load_certs(&cert).unwrap().remove(0);
        assert_eq!(common_name(&der), "consumer-7");
        assert_eq!(common_name(&CertificateDer::from(vec![1, 2, 3])), "");
    }
}
