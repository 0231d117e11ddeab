//! The reqwest client every Vault request goes through: timeouts, a small
//! connection pool, no redirects, and the roots Vault's certificate is
//! checked against (the system's plus `caCert`), or none (`tlsSkipVerify`).
//!
//! Built here rather than by vaultrs (`VaultClient::new`): its `Client`
//! trait ties requests to rustify's client, which reads answers without a
//! bound (see [`super::transport`]); it reads `caCert` without a bound and
//! has no pool or connect-timeout settings. The roots are loaded here, as
//! reqwest 0.12 did, rather than by reqwest 0.13's platform verifier,
//! which refuses to build the client when neither the system nor `caCert`
//! gives a root: the provider would fail at start instead of at the
//! handshake with an error that names `caCert`.

use std::time::Duration;

use crate::error::{Error, chain};
use crate::file::{MAX_CA_BYTES, read_setting_file};
use crate::settings::VaultSettings;

/// Idle connections kept per Vault server for reuse.
const POOL_IDLE_PER_HOST: usize = 8;
/// How long an idle connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the client for provider `name`; reads `caCert`, contacts nothing.
pub(super) fn build(name: &str, settings: &VaultSettings) -> Result<reqwest::Client, Error> {
    crate::install_crypto_provider();
    let mut roots = system_roots();
    if let Some(ca) = &settings.ca_cert {
        roots.extend(ca_bundle(name, ca)?);
    }
    let mut builder = reqwest::Client::builder()
        // reqwest keeps every idle connection for 90 s by default: a
        // burst of N requests left N sockets open (1,780 after one CSI
        // Mount). A few are enough to reuse; the rest close at once.
        .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only(roots);
    if settings.tls_skip_verify {
        tracing::warn!(
            provider = name,
            "tlsSkipVerify is set: Vault's certificate is not checked"
        );
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| {
        settings_error(
            name,
            "address",
            format!("cannot build HTTP client: {}", chain(&e)),
        )
    })
}

/// The system's CA certificates that rustls accepts as roots. Stores often
/// hold ancient or malformed ones; they are skipped, and an empty store is
/// no error (a `caCert` or `http://` needs none).
fn system_roots() -> Vec<reqwest::Certificate> {
    let mut probe = rustls::RootCertStore::empty();
    rustls_native_certs::load_native_certs()
        .certs
        .into_iter()
        .filter(|der| probe.add(der.clone()).is_ok())
        .filter_map(|der| reqwest::Certificate::from_der(&der).ok())
        .collect()
}

/// The certificates of the `caCert` PEM bundle; at least one.
fn ca_bundle(name: &str, ca: &std::path::Path) -> Result<Vec<reqwest::Certificate>, Error> {
    let pem = read_setting_file(ca, "CA bundle", MAX_CA_BYTES)
        .map_err(|e| settings_error(name, "caCert", e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| settings_error(name, "caCert", format!("{}: {}", ca.display(), chain(&e))))?;
    if certs.is_empty() {
        return Err(settings_error(
            name,
            "caCert",
            format!("{}: no PEM certificate found", ca.display()),
        ));
    }
    Ok(certs)
}

fn settings_error(name: &str, field: &str, message: String) -> Error {
    Error::Settings {
        provider: name.to_string(),
        field: field.to_string(),
        message,
    }
}
