//! The lookup itself: an image's manifest, then its config, from the
//! registry its reference names (see [`super`] for what is and is not
//! done).

use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{
    IMAGE_CONFIG_MEDIA_TYPE, IMAGE_DOCKER_CONFIG_MEDIA_TYPE, ImageIndexEntry, OciImageManifest,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use super::cache::{Answer, Cache, Found, Key, Scope};
use super::docker_config::Credential;
use super::keyring::{self, Candidate};
use super::pull_secrets::PullSecrets;
use super::references::{References, pinned};
use super::{ImageConfigs, LookupError, PullContext, PulledWith, failure};
use crate::metrics::LookupCounts;
use crate::patch::Entrypoint;

/// Largest image config read. Configs are a few KiB (their history grows
/// with the layers); this bounds what a hostile registry can make the
/// webhook hold.
pub const MAX_CONFIG_BYTES: usize = 4 * 1024 * 1024;

/// How the registries are spoken to, and what is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Registries (`HOST:PORT` as image references write them) spoken to
    /// over plain HTTP; every other one over verified HTTPS.
    pub insecure: Vec<String>,
    /// How long a tag's answer is kept (a digest's is kept for good).
    pub tag_ttl: Duration,
    /// Answers kept at most: this many digests, and this many tags.
    pub capacity: usize,
    /// Time for one lookup, every request included.
    pub timeout: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            insecure: Vec::new(),
            tag_ttl: Duration::from_secs(300),
            capacity: 1024,
            // Under the API server's default webhook timeout (10 s), so
            // that the refusal, not the API server's timeout, is what the
            // user reads.
            timeout: Duration::from_secs(5),
        }
    }
}

/// The HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the registry client: {0}")]
pub struct RegistryError(#[source] oci_client::errors::OciDistributionError);

/// Reads images' ENTRYPOINT and CMD from their registries: anonymously,
/// or with the pod's pull secrets when [`Registry::with_pull_secrets`]
/// gave it the means to read them.
pub struct Registry {
    /// For anonymous lookups, shared: `oci-client` keeps one credential
    /// per registry and the tokens it earned in a client, so a lookup with
    /// a credential gets a client of its own ([`Registry::fetch`]).
    anonymous: Client,
    config: RegistryConfig,
    cache: Cache,
    references: References,
    counts: LookupCounts,
    pull_secrets: Option<PullSecrets>,
    credential_ids: CredentialIds,
}

/// How a lookup authenticates.
enum Auth {
    /// Anonymously, and why no credential.
    Anonymous(PulledWith),
    /// With each of these in turn until one is not refused.
    Candidates(Vec<Candidate>),
}

impl Registry {
    /// Installs aws-lc-rs as the process's rustls provider if there is
    /// none yet: the HTTP client brings none of its own, so that the
    /// process keeps one.
    pub fn new(config: RegistryConfig) -> Result<Registry, RegistryError> {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing a race to another installer leaves that one: fine.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        Ok(Registry {
            anonymous: client(&config).map_err(RegistryError)?,
            cache: Cache::new(config.tag_ttl, config.capacity),
            references: References::default(),
            counts: LookupCounts::default(),
            config,
            pull_secrets: None,
            credential_ids: CredentialIds::new(),
        })
    }

    /// Looks images up with the pods' pull secrets, read through
    /// `pull_secrets`.
    pub fn with_pull_secrets(mut self, pull_secrets: PullSecrets) -> Registry {
        self.pull_secrets = Some(pull_secrets);
        self
    }

    /// Counts its lookups and registry reads in `counts` (the webhook's
    /// metrics).
    pub fn counting(mut self, counts: LookupCounts) -> Registry {
        self.counts = counts;
        self
    }

    /// How `reference` is looked up for the pod `pull` describes.
    async fn auth(&self, reference: &Reference, pull: &PullContext) -> Result<Auth, LookupError> {
        let Some(pull_secrets) = &self.pull_secrets else {
            return Ok(Auth::Anonymous(PulledWith::NotRead));
        };
        if pull.secret_names.is_empty() {
            return Ok(Auth::Anonymous(PulledWith::NoneMatched(Vec::new())));
        }
        let secrets = pull_secrets.read(pull).await?;
        let image = format!("{}/{}", reference.registry(), reference.repository());
        let candidates = keyring::candidates(&secrets, &image);
        if candidates.is_empty() {
            return Ok(Auth::Anonymous(PulledWith::NoneMatched(
                pull.secret_names.clone(),
            )));
        }
        Ok(Auth::Candidates(candidates))
    }

    /// Each candidate in turn, each answer kept for its credential; the
    /// first not refused is the answer.
    async fn with_candidates(
        &self,
        reference: &Reference,
        key: &Key,
        candidates: Vec<Candidate>,
    ) -> Answer {
        let mut refused: Vec<String> = Vec::new();
        let mut status = 401;
        for candidate in candidates {
            let scope = Scope::Credential(self.credential_ids.of(&candidate.credential));
            let with = PulledWith::Secrets(vec![candidate.secret.clone()]);
            let fetch = self.fetch_within(reference, Some(&candidate.credential), &with);
            match self.cache.answer(scope, key, fetch).await {
                Err(LookupError::Denied { status: s, .. }) => {
                    status = s;
                    if !refused.contains(&candidate.secret) {
                        refused.push(candidate.secret);
                    }
                }
                other => return other,
            }
        }
        Err(LookupError::Denied {
            image: reference.whole(),
            registry: reference.resolve_registry().into(),
            status,
            with: PulledWith::Secrets(refused),
        })
    }

    async fn fetch_within(
        &self,
        reference: &Reference,
        credential: Option<&Credential>,
        with: &PulledWith,
    ) -> Answer {
        let timeout = self.config.timeout;
        self.counts.read();
        // Boxed: the registry client's future is some 15 KB, which would
        // otherwise be part of every lookup's future — allocated and
        // copied for each review even when the cache answers it.
        let fetch = Box::pin(self.fetch(reference, credential, with));
        match tokio::time::timeout(timeout, fetch).await {
            Ok(answer) => answer,
            Err(_) => Err(LookupError::TimedOut {
                image: reference.whole(),
                registry: reference.resolve_registry().into(),
                after: timeout,
            }),
        }
    }

    async fn fetch(
        &self,
        reference: &Reference,
        credential: Option<&Credential>,
        with: &PulledWith,
    ) -> Answer {
        let own;
        let (client, mut auth) = match credential {
            None => (&self.anonymous, RegistryAuth::Anonymous),
            Some(c) => {
                own = client(&self.config).map_err(|e| LookupError::Failed {
                    image: reference.whole(),
                    registry: reference.resolve_registry().into(),
                    why: format!("building its client: {}", failure::chain(&e)),
                })?;
                let basic = RegistryAuth::Basic(c.username().into(), c.password().into());
                (&own, basic)
            }
        };
        let pulled = client
            .pull_image_manifest_and_list_digest(reference, &auth)
            .await;
        // Our copy; the client's own goes with it, unwiped (see the module
        // documentation).
        if let RegistryAuth::Basic(user, password) = &mut auth {
            user.zeroize();
            password.zeroize();
        }
        let (manifest, digest, index_digest) =
            pulled.map_err(|e| failure::classify(e, reference, with))?;
        let config = self.config_of(client, reference, &manifest, with).await?;
        let entrypoint = entrypoint_of(&config).map_err(|why| LookupError::NotAnImage {
            image: reference.whole(),
            why,
        })?;
        Ok(Found {
            entrypoint,
            pinned: pinned(reference, &index_digest.unwrap_or(digest)),
        })
    }

    /// The config blob, checked for type and size before it is read.
    async fn config_of(
        &self,
        client: &Client,
        reference: &Reference,
        manifest: &OciImageManifest,
        with: &PulledWith,
    ) -> Result<Vec<u8>, LookupError> {
        let not_an_image = |why: String| LookupError::NotAnImage {
            image: reference.whole(),
            why,
        };
        let descriptor = &manifest.config;
        if descriptor.media_type != IMAGE_CONFIG_MEDIA_TYPE
            && descriptor.media_type != IMAGE_DOCKER_CONFIG_MEDIA_TYPE
        {
            return Err(not_an_image(format!(
                "its config is {:?}, an artifact's",
                descriptor.media_type
            )));
        }
        if usize::try_from(descriptor.size).map_or(true, |s| s > MAX_CONFIG_BYTES) {
            return Err(not_an_image(format!(
                "its config is {} bytes, over {MAX_CONFIG_BYTES}",
                descriptor.size
            )));
        }
        let mut stream = client
            .pull_blob_stream(reference, descriptor)
            .await
            .map_err(|e| failure::classify(e, reference, with))?;
        let mut config = Vec::new();
        while let Some(chunk) = stream.next().await {
            // The stream checks the blob's digest at its end.
            let chunk = chunk.map_err(|e| LookupError::Failed {
                image: reference.whole(),
                registry: reference.resolve_registry().into(),
                why: format!("reading its config: {}", failure::chain(&e)),
            })?;
            if config.len() + chunk.len() > MAX_CONFIG_BYTES {
                return Err(not_an_image(format!(
                    "its config is over {MAX_CONFIG_BYTES} bytes"
                )));
            }
            config.extend_from_slice(&chunk);
        }
        Ok(config)
    }
}

#[async_trait::async_trait]
impl ImageConfigs for Registry {
    async fn entrypoint(&self, image: &str, pull: &PullContext) -> Result<Entrypoint, LookupError> {
        let answer = self.look_up(image, pull).await;
        self.counts.answered(answer.is_ok());
        answer
    }
}

impl Registry {
    async fn look_up(&self, image: &str, pull: &PullContext) -> Result<Entrypoint, LookupError> {
        let parsed = self.references.parse(image)?;
        let (reference, key) = (&parsed.reference, &parsed.key);
        let answer = match self.auth(reference, pull).await? {
            Auth::Anonymous(with) => {
                let fetch = self.fetch_within(reference, None, &with);
                let answer = self.cache.answer(Scope::Anonymous, key, fetch).await;
                // A refusal joined from another pod's lookup names that
                // pod's reason: this one's is said.
                match answer {
                    Err(LookupError::Denied {
                        image,
                        registry,
                        status,
                        ..
                    }) => Err(LookupError::Denied {
                        image,
                        registry,
                        status,
                        with,
                    }),
                    other => other,
                }
            }
            Auth::Candidates(candidates) => self.with_candidates(reference, key, candidates).await,
        };
        answer.map(|found| found.entrypoint)
    }
}

/// A client of the registries as `config` says.
fn client(config: &RegistryConfig) -> Result<Client, oci_client::errors::OciDistributionError> {
    let protocol = if config.insecure.is_empty() {
        ClientProtocol::Https
    } else {
        ClientProtocol::HttpsExcept(config.insecure.clone())
    };
    // `Client::new` would fall back to a default client on error, dropping
    // the protocol and timeouts: `try_from` says why instead.
    Client::try_from(ClientConfig {
        protocol,
        platform_resolver: Some(Box::new(platform)),
        connect_timeout: Some(config.timeout),
        read_timeout: Some(config.timeout),
        user_agent: concat!("kernelseal-webhook/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    })
}

/// What an answer read with a credential is kept under: an HMAC-SHA256 of
/// its user name and password with a random key of this process (no
/// password, nor an unsalted hash one could test guesses against, is
/// kept with the answers).
struct CredentialIds(aws_lc_rs::hmac::Key);

impl CredentialIds {
    fn new() -> CredentialIds {
        let mut key = Zeroizing::new([0u8; 32]);
        // The system's random source failing leaves the key zeroed: ids are
        // then still distinct per credential, only guessable.
        let _ = aws_lc_rs::rand::fill(&mut key[..]);
        CredentialIds(aws_lc_rs::hmac::Key::new(
            aws_lc_rs::hmac::HMAC_SHA256,
            &key[..],
        ))
    }

    fn of(&self, credential: &Credential) -> [u8; 32] {
        let mut context = aws_lc_rs::hmac::Context::with_key(&self.0);
        // Length-prefixed: `ab` + `c` and `a` + `bc` differ.
        context.update(&(credential.username().len() as u64).to_be_bytes());
        context.update(credential.username().as_bytes());
        context.update(credential.password().as_bytes());
        let mut id = [0u8; 32];
        id.copy_from_slice(context.sign().as_ref());
        id
    }
}

/// The image of an index to read: `linux` on the webhook's own
/// architecture, else `linux/amd64`, else the first `linux` one.
fn platform(manifests: &[ImageIndexEntry]) -> Option<String> {
    let linux_on = |arch: Option<&str>| {
        manifests.iter().find(|m| {
            m.platform.as_ref().is_some_and(|p| {
                p.os.to_string() == "linux" && arch.is_none_or(|a| p.architecture.to_string() == a)
            })
        })
    };
    linux_on(Some(own_architecture()))
        .or_else(|| linux_on(Some("amd64")))
        .or_else(|| linux_on(None))
        .map(|m| m.digest.clone())
}

/// This process's architecture as images name it (Go's `GOARCH`).
fn own_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        other => other,
    }
}

/// The parts of an image config read here.
#[derive(Deserialize)]
struct ImageConfig {
    #[serde(default)]
    config: Option<ExecConfig>,
}

#[derive(Deserialize)]
struct ExecConfig {
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
}

fn entrypoint_of(config: &[u8]) -> Result<Entrypoint, String> {
    let parsed: ImageConfig = serde_json::from_slice(config).map_err(|e| {
        format!(
            "its config is not an image config ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    let exec = parsed.config.unwrap_or(ExecConfig {
        entrypoint: None,
        cmd: None,
    });
    Ok(Entrypoint {
        entrypoint: exec.entrypoint.unwrap_or_default(),
        cmd: exec.cmd.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entrypoint_and_cmd_are_read_and_absent_or_null_ones_are_empty() {
        let full = br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],
            "Entrypoint":["/docker-entrypoint.sh"],"Cmd":["nginx","-g","daemon off;"]},
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        assert_eq!(
            entrypoint_of(full),
            Ok(Entrypoint {
                entrypoint: vec!["/docker-entrypoint.sh".into()],
                cmd: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
            })
        );
        for bare in [
            &br#"{"config":{"Entrypoint":null,"Cmd":["/bin/sh"]}}"#[..],
            br#"{"config":{"Cmd":["/bin/sh"]}}"#,
        ] {
            assert_eq!(
                entrypoint_of(bare).map(|e| (e.entrypoint, e.cmd)),
                Ok((vec![], vec!["/bin/sh".to_string()]))
            );
        }
        assert_eq!(entrypoint_of(b"{}"), Ok(Entrypoint::default()));
        let e = entrypoint_of(b"<html>secret</html>").unwrap_err();
        assert!(
            e.contains("not an image config") && !e.contains("secret"),
            "{e}"
        );
    }

    #[test]
    fn an_index_resolves_to_linux_on_this_architecture_then_amd64() {
        let entry = |os: &str, arch: &str, digest: &str| -> ImageIndexEntry {
            serde_json::from_value(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest, "size": 1,
                "platform": { "os": os, "architecture": arch }
            }))
            .unwrap()
        };
        let attestation = entry("unknown", "unknown", "sha256:att");
        let index = [
            attestation.clone(),
            entry("windows", own_architecture(), "sha256:win"),
            entry("linux", "s390x", "sha256:s390x"),
            entry("linux", "amd64", "sha256:amd64"),
            entry("linux", own_architecture(), "sha256:own"),
        ];
        let want = if own_architecture() == "amd64" {
            "sha256:amd64"
        } else {
            "sha256:own"
        };
        assert_eq!(platform(&index).as_deref(), Some(want));
        assert_eq!(
            platform(&[attestation.clone(), entry("linux", "s390x", "sha256:s390x")]).as_deref(),
            Some("sha256:s390x")
        );
        assert_eq!(platform(&[attestation]), None);
    }
}
