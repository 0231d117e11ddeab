//! Shared test support: crypto provider, log capture, leak assertions (the
//! moto_server launcher and ports are in `kernelseal-testkit`).
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the crypto provider and a global subscriber that records every
/// log line of this test binary (ours at TRACE, libraries at DEBUG).
pub fn init() {
    kernelseal_providers::install_crypto_provider();
    let buf = LOGS
        .get_or_init(|| Arc::new(Mutex::new(Vec::new())))
        .clone();
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let targets = tracing_subscriber::filter::Targets::new()
        .with_target("kernelseal_providers", tracing::Level::TRACE)
        .with_default(tracing::Level::DEBUG);
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || Sink(buf.clone())),
        )
        .with(targets)
        .try_init();
}

/// Everything logged so far by this test binary.
pub fn logs() -> String {
    let buf = LOGS.get_or_init(|| Arc::new(Mutex::new(Vec::new())));
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

/// Asserts that none of `secrets` appears in `text` (an error's Display and
/// Debug) nor in the captured logs.
pub fn assert_no_leak(text: &str, secrets: &[&str]) {
    let logs = logs();
    for s in secrets {
        assert!(
            !text.contains(s),
            "secret {s:?} leaked into error text: {text}"
        );
        assert!(!logs.contains(s), "secret {s:?} leaked into logs");
    }
}

/// Asserts no leak for an error, checking both Display and Debug.
pub fn assert_err_clean(e: &kernelseal_providers::Error, secrets: &[&str]) {
    assert_no_leak(&format!("{e} {e:?}"), secrets);
}

/// The static credentials moto accepts.
pub fn moto_credentials() -> aws_credential_types::provider::SharedCredentialsProvider {
    aws_credential_types::provider::SharedCredentialsProvider::new(
        aws_credential_types::Credentials::new("testing", "testing", None, None, "test"),
    )
}

/// An SSM client that creates parameters in moto, as a user would.
pub fn ssm_admin(endpoint: &str, region: &str) -> aws_sdk_ssm::Client {
    let conf = aws_sdk_ssm::config::Builder::new()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new(region.to_string()))
        .credentials_provider(moto_credentials())
        .endpoint_url(endpoint)
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

/// Writes (or overwrites) a parameter; its new version.
pub async fn ssm_put(
    ssm: &aws_sdk_ssm::Client,
    name: &str,
    value: &str,
    kind: aws_sdk_ssm::types::ParameterType,
) -> i64 {
    ssm.put_parameter()
        .name(name)
        .value(value)
        .r#type(kind)
        .overwrite(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {name}: {e:?}"))
        .version
}
