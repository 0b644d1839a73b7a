//! TLS for our listeners: the certificate chain and key come from PEM files, and
//! [`CertificateStore::reload`] (called on `SIGHUP`) swaps them for new handshakes while
//! connections already open keep theirs. A failed reload keeps the old certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not read the certificate chain {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("could not read the private key {path}: {reason}")]
    PrivateKey { path: PathBuf, reason: String },
    #[error("the private key {key} does not belong to the certificate {certificate}")]
    Mismatch { certificate: PathBuf, key: PathBuf },
    #[error("could not set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The crypto provider every TLS use in Hearth shares: ring, which needs no C toolchain and
/// cross-compiles for ARM64.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The current certificate, shared by every TLS listener, swappable at run time.
#[derive(Debug)]
pub(crate) struct CertificateStore {
    files: TlsConfig,
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertificateStore {
    pub(crate) fn load(files: &TlsConfig) -> Result<Arc<CertificateStore>, TlsError> {
        let key = load_certified_key(files)?;
        Ok(Arc::new(CertificateStore {
            files: files.clone(),
            current: RwLock::new(Arc::new(key)),
        }))
    }

    /// Reads the files again; on success new handshakes use the new certificate.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let key = Arc::new(load_certified_key(&self.files)?);
        *self
            .current
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = key;
        Ok(())
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// A rustls server configuration that asks this store for the certificate on every
    /// handshake. ALPN offers HTTP/1.1, the protocol our listeners speak.
    pub(crate) fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

#[derive(Debug)]
struct Resolver(Arc<CertificateStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }
}

fn load_certified_key(files: &TlsConfig) -> Result<CertifiedKey, TlsError> {
    let chain = load_chain(&files.certificate)?;
    let key =
        PrivateKeyDer::from_pem_file(&files.private_key).map_err(|err| TlsError::PrivateKey {
            path: files.private_key.clone(),
            reason: err.to_string(),
        })?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|err| TlsError::PrivateKey {
            path: files.private_key.clone(),
            reason: err.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| TlsError::Mismatch {
        certificate: files.certificate.clone(),
        key: files.private_key.clone(),
    })?;
    Ok(certified)
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| TlsError::Certificate {
            path: path.to_owned(),
            reason: err.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(chain)
}

/// A self-signed certificate and its key, both PEM, for `hearth init --self-signed-cert`:
/// enough to try HTTPS, not to federate with servers that check certificates.
pub fn self_signed(names: Vec<String>) -> Result<(String, String), String> {
    let certified = rcgen::generate_simple_self_signed(names).map_err(|err| err.to_string())?;
    Ok((certified.cert.pem(), certified.signing_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> TlsConfig {
        let (cert, key) = self_signed(vec!["localhost".into()]).expect("generate");
        let files = TlsConfig {
            certificate: dir.join(format!("{name}.crt")),
            private_key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.certificate, cert).expect("write");
        std::fs::write(&files.private_key, key).expect("write");
        files
    }

    #[test]
    fn loads_a_matching_pair() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CertificateStore::load(&write_pair(dir.path(), "a")).expect("load");
        store.server_config().expect("server config");
    }

    #[test]
    fn refuses_a_key_of_another_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write_pair(dir.path(), "a");
        let b = write_pair(dir.path(), "b");
        let mixed = TlsConfig {
            certificate: a.certificate,
            private_key: b.private_key,
        };
        assert!(matches!(
            CertificateStore::load(&mixed),
            Err(TlsError::Mismatch { .. })
        ));
    }

    #[test]
    fn refuses_missing_and_empty_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = write_pair(dir.path(), "a");
        std::fs::write(&files.certificate, "not pem").expect("write");
        assert!(matches!(
            CertificateStore::load(&files),
            Err(TlsError::NoCertificate { .. })
        ));
        std::fs::remove_file(&files.private_key).expect("remove");
        assert!(CertificateStore::load(&files).is_err());
    }

    #[test]
    fn a_failed_reload_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = write_pair(dir.path(), "a");
        let store = CertificateStore::load(&files).expect("load");
        let before = store.current().cert[0].clone();
        std::fs::write(&files.certificate, "garbage").expect("write");
        assert!(store.reload().is_err());
        assert_eq!(store.current().cert[0], before);
    }
}
