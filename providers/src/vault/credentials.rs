//! What the provider authenticates with, read afresh for every login (a
//! token file that Vault Agent rotates, a projected service-account token
//! that the kubelet renews): a token to use as is, or a vaultrs login
//! request that carries the credential.

use std::path::Path;

use vaultrs::api::auth::approle::requests::LoginWithApproleRequest;
use vaultrs::api::auth::kubernetes::requests::LoginWithKubernetesRequest;
use zeroize::{Zeroize, Zeroizing};

use crate::error::Error;
use crate::file::{MAX_TOKEN_BYTES, read_setting_file};
use crate::settings::{SecretIdSource, VaultAuth};

pub(super) enum Credential {
    /// A token given as is (environment or file), used until Vault refuses it.
    Token(Zeroizing<String>),
    Login(Login),
}

/// A login request. vaultrs's request types hold the credential in a plain
/// `String`; it is wiped when the request drops.
pub(super) enum Login {
    Kubernetes(LoginWithKubernetesRequest),
    AppRole(LoginWithApproleRequest),
}

impl Login {
    /// The auth mount (`kubernetes`, `approle`, or the configured one).
    pub(super) fn mount(&self) -> &str {
        match self {
            Login::Kubernetes(r) => &r.mount,
            Login::AppRole(r) => &r.mount,
        }
    }

    /// The role named in errors: the role, or the AppRole's role_id.
    pub(super) fn role(&self) -> &str {
        match self {
            Login::Kubernetes(r) => &r.role,
            Login::AppRole(r) => &r.role_id,
        }
    }
}

impl Drop for Login {
    fn drop(&mut self) {
        match self {
            Login::Kubernetes(r) => r.jwt.zeroize(),
            Login::AppRole(r) => r.secret_id.zeroize(),
        }
    }
}

/// Reads the credential `auth` names; `Error::Auth` of provider `name` when
/// it cannot be read.
pub(super) fn read(name: &str, auth: &VaultAuth) -> Result<Credential, Error> {
    let failed = |message: String| Error::Auth {
        provider: name.to_string(),
        message,
    };
    Ok(match auth {
        VaultAuth::TokenEnv(var) => Credential::Token(env_var(var).map_err(failed)?),
        VaultAuth::TokenFile(path) => {
            Credential::Token(secret_file(path, "token file").map_err(failed)?)
        }
        VaultAuth::Kubernetes {
            role,
            jwt_file,
            mount,
        } => {
            let jwt = secret_file(jwt_file, "service-account token").map_err(failed)?;
            Credential::Login(Login::Kubernetes(LoginWithKubernetesRequest {
                mount: mount.clone(),
                role: role.clone(),
                jwt: into_plain(jwt),
            }))
        }
        VaultAuth::KubernetesJwt { role, jwt, mount } => {
            Credential::Login(Login::Kubernetes(LoginWithKubernetesRequest {
                mount: mount.clone(),
                role: role.clone(),
                jwt: jwt.expose().to_string(),
            }))
        }
        VaultAuth::AppRole {
            role_id,
            secret_id,
            mount,
        } => {
            let secret_id = match secret_id {
                SecretIdSource::Env(var) => env_var(var),
                SecretIdSource::File(path) => secret_file(path, "secret_id file"),
            }
            .map_err(failed)?;
            Credential::Login(Login::AppRole(LoginWithApproleRequest {
                mount: mount.clone(),
                role_id: role_id.clone(),
                secret_id: into_plain(secret_id),
            }))
        }
    })
}

fn env_var(var: &str) -> Result<Zeroizing<String>, String> {
    std::env::var(var)
        .map(Zeroizing::new)
        .map_err(|_| format!("environment variable {var} is not set"))
}

/// A credential file, trimmed. Bounded and regular files only: a FIFO or
/// /dev/zero named here must not hang or fill the agent.
fn secret_file(path: &Path, what: &'static str) -> Result<Zeroizing<String>, String> {
    let bytes = read_setting_file(path, what, MAX_TOKEN_BYTES).map_err(|e| e.to_string())?;
    std::str::from_utf8(&bytes)
        .map(|s| Zeroizing::new(s.trim().to_string()))
        .map_err(|_| format!("{what} {} is not UTF-8 text", path.display()))
}

/// Moves the text out for a vaultrs request (no copy); the request wipes it.
fn into_plain(mut text: Zeroizing<String>) -> String {
    std::mem::take(&mut *text)
}
