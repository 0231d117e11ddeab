//! The webhook's certificate, read from PEM files and read again when they
//! change (cert-manager rotates them in place): a new connection gets the
//! current certificate, a connection already open keeps the one it began
//! with, and a half-written or broken pair is refused with the old one
//! kept.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate pair cannot be used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{cert} and {key}: {message}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        message: String,
    },
}

/// When the two files last changed, and their sizes.
type Stamp = [(SystemTime, u64); 2];

/// The certificate and key files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// Reads and checks the pair: a chain, a key, and the key matching the
    /// chain's first certificate.
    pub fn load(&self) -> Result<CertifiedKey, TlsError> {
        let file_err = |path: &Path, message: String| TlsError::File {
            path: path.to_path_buf(),
            message,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(|e| file_err(&self.cert, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_err(&self.cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(file_err(&self.cert, "no CERTIFICATE in it".into()));
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| file_err(&self.key, format!("no usable private key ({e})")))?;
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        let certified =
            CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Pair {
                cert: self.cert.clone(),
                key: self.key.clone(),
                message: e.to_string(),
            })?;
        Ok(certified)
    }

    /// When each file last changed (and its size): a change of either means
    /// a reload.
    fn stamp(&self) -> Option<Stamp> {
        let one = |p: &Path| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        };
        Some([one(&self.cert)?, one(&self.key)?])
    }
}

/// The certificate in force, replaceable while the server runs.
pub struct ReloadingCert {
    files: CertFiles,
    current: RwLock<(Arc<CertifiedKey>, Option<Stamp>)>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Loads the pair once; an error here stops the start.
    pub fn new(files: CertFiles) -> Result<Arc<Self>, TlsError> {
        let stamp = files.stamp();
        let key = files.load()?;
        Ok(Arc::new(ReloadingCert {
            files,
            current: RwLock::new((Arc::new(key), stamp)),
        }))
    }

    /// Reads the files again if they changed: `Ok(true)` when the new pair
    /// is in force, `Err` (old pair kept) when it is not usable.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamp = self.files.stamp();
        if stamp.is_none() || stamp == self.current.read().unwrap_or_else(|p| p.into_inner()).1 {
            return Ok(false);
        }
        let key = self.files.load()?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(key), stamp);
        Ok(true)
    }

    /// Checks the files every `every` until the process ends.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            match self.reload_if_changed() {
                Ok(true) => tracing::info!(
                    cert = %self.files.cert.display(),
                    "[WEBHOOK] certificate reloaded; new connections use it"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    "[WEBHOOK] the certificate files changed but cannot be used ({e}); \
                     keeping the previous certificate"
                ),
            }
        }
    }

    /// A server config that presents the current certificate.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let mut c = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        c
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .0
                .clone(),
        )
    }
}
