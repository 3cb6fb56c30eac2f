//! Certificates for TLS tests, made with rcgen in a temporary directory: a
//! CA, node certificates for `localhost` and `127.0.0.1` (server and client
//! use, as a replica-group member needs), client certificates with a chosen
//! common name, and the same from a second, unrelated CA; plus rustls
//! client configurations that trust a CA and may present a certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pair {
    pub fn cert_arg(&self) -> &str {
        self.cert.to_str().expect("UTF-8 temp path")
    }

    pub fn key_arg(&self) -> &str {
        self.key.to_str().expect("UTF-8 temp path")
    }
}

/// A certificate authority whose certificate is in `cert`.
pub struct Ca {
    pub cert: PathBuf,
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    name: String,
}

impl Ca {
    /// A new self-signed CA named `name`, its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-signed CA");
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, cert.pem()).expect("write CA");
        Ca {
            cert: path,
            issuer: Issuer::new(params, key),
            dir: dir.to_path_buf(),
            name: name.to_owned(),
        }
    }

    pub fn cert_arg(&self) -> &str {
        self.cert.to_str().expect("UTF-8 temp path")
    }

    /// A node's certificate: SANs `localhost` and `127.0.0.1`, usable as a
    /// server's and as a client's (raft links are both).
    pub fn node(&self, cn: &str) -> Pair {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let usages = [
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue(cn, names, &usages)
    }

    /// A client certificate with common name `cn` (client use only).
    pub fn client(&self, cn: &str) -> Pair {
        self.issue(cn, Vec::new(), &[ExtendedKeyUsagePurpose::ClientAuth])
    }

    fn issue(&self, cn: &str, names: Vec<String>, usages: &[ExtendedKeyUsagePurpose]) -> Pair {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = usages.to_vec();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let stem = self.dir.join(format!("{}-{cn}", self.name));
        let pair = Pair {
            cert: stem.with_extension("crt"),
            key: stem.with_extension("key"),
        };
        std::fs::write(&pair.cert, cert.pem()).expect("write certificate");
        std::fs::write(&pair.key, key.serialize_pem()).expect("write key");
        pair
    }
}

/// What a TLS test needs: a temp dir, the cluster's CA, an unrelated CA.
pub struct Certs {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub other_ca: Ca,
}

impl Certs {
    pub fn generate() -> Certs {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = Ca::new(dir.path(), "ca");
        let other_ca = Ca::new(dir.path(), "other-ca");
        Certs { dir, ca, other_ca }
    }
}

/// A rustls client configuration trusting `ca`, presenting `client` if
/// given, offering the ALPN protocols `alpn`.
pub fn client_config(ca: &Path, client: Option<&Pair>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read CA") {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pair.cert)
                .expect("read certificate")
                .collect::<Result<_, _>>()
                .expect("certificate PEM");
            let key = PrivateKeyDer::from_pem_file(&pair.key).expect("key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client certificate")
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}
