//! How the Vault provider gets and keeps a token: static token (env/file),
//! kubernetes or approle login, renew-self before expiry, a fresh login when
//! renewal fails or after a 403.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretBox;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::{Response, Token, VaultProvider};
use crate::error::Error;
use crate::file::{MAX_TOKEN_BYTES, read_setting_file};
use crate::settings::{SecretIdSource, VaultAuth};

pub(super) struct TokenState {
    pub(super) token: Token,
    obtained: Instant,
    /// `lease_duration` of the token; `None` when unknown (static tokens).
    ttl: Option<Duration>,
    renewable: bool,
    /// The ttl the login granted; a renewal that returns much less means the
    /// token is near its max TTL and a fresh login is due.
    login_ttl: Option<Duration>,
}

impl TokenState {
    /// Renew once two thirds of the lease have passed, like Vault Agent.
    fn due(&self) -> bool {
        self.ttl
            .is_some_and(|ttl| !ttl.is_zero() && self.obtained.elapsed() >= ttl - ttl / 3)
    }
}

#[derive(Deserialize)]
pub(super) struct AuthBlock {
    client_token: SecretBox<str>,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

impl VaultProvider {
    fn can_login(&self) -> bool {
        matches!(
            self.settings.auth,
            VaultAuth::Kubernetes { .. }
                | VaultAuth::KubernetesJwt { .. }
                | VaultAuth::AppRole { .. }
        )
    }

    /// Gets a token: static (env/file) or by logging in.
    async fn login(&self) -> Result<TokenState, Error> {
        let auth_err = |message: String| Error::Auth {
            provider: self.name.clone(),
            message,
        };
        // Bounded and regular files only: a FIFO or /dev/zero named here
        // must not hang or fill the agent.
        let read_secret_file = |path: &std::path::Path, what: &'static str| {
            let bytes = read_setting_file(path, what, MAX_TOKEN_BYTES)
                .map_err(|e| auth_err(e.to_string()))?;
            std::str::from_utf8(&bytes)
                .map(|s| Zeroizing::new(s.trim().to_string()))
                .map_err(|_| auth_err(format!("{what} {} is not UTF-8 text", path.display())))
        };
        let (mount, role, body, creds): (&str, &str, Zeroizing<Vec<u8>>, Vec<Zeroizing<String>>) =
            match &self.settings.auth {
                VaultAuth::TokenEnv(var) => {
                    let t = std::env::var(var)
                        .map_err(|_| auth_err(format!("environment variable {var} is not set")))?;
                    return Ok(static_token(Zeroizing::new(t)));
                }
                VaultAuth::TokenFile(path) => {
                    return Ok(static_token(read_secret_file(path, "token file")?));
                }
                VaultAuth::Kubernetes {
                    role,
                    jwt_file,
                    mount,
                } => {
                    let jwt = read_secret_file(jwt_file, "service-account token")?;
                    #[derive(Serialize)]
                    struct Login<'a> {
                        role: &'a str,
                        jwt: &'a str,
                    }
                    let body = Zeroizing::new(
                        serde_json::to_vec(&Login { role, jwt: &jwt }).unwrap_or_default(),
                    );
                    (mount, role, body, vec![jwt])
                }
                VaultAuth::KubernetesJwt { role, jwt, mount } => {
                    let jwt = Zeroizing::new(jwt.expose().to_string());
                    #[derive(Serialize)]
                    struct Login<'a> {
                        role: &'a str,
                        jwt: &'a str,
                    }
                    let body = Zeroizing::new(
                        serde_json::to_vec(&Login { role, jwt: &jwt }).unwrap_or_default(),
                    );
                    (mount, role, body, vec![jwt])
                }
                VaultAuth::AppRole {
                    role_id,
                    secret_id,
                    mount,
                } => {
                    let sid = match secret_id {
                        SecretIdSource::Env(var) => {
                            Zeroizing::new(std::env::var(var).map_err(|_| {
                                auth_err(format!("environment variable {var} is not set"))
                            })?)
                        }
                        SecretIdSource::File(p) => read_secret_file(p, "secret_id file")?,
                    };
                    #[derive(Serialize)]
                    struct Login<'a> {
                        role_id: &'a str,
                        secret_id: &'a str,
                    }
                    let body = Zeroizing::new(
                        serde_json::to_vec(&Login {
                            role_id,
                            secret_id: &sid,
                        })
                        .unwrap_or_default(),
                    );
                    (mount, role_id, body, vec![sid])
                }
            };
        let url = format!("{}/v1/auth/{mount}/login", self.settings.address);
        tracing::debug!(provider = %self.name, mount, "vault login");
        let req = self
            .http
            .post(&url)
            .headers(self.headers(None))
            .header("Content-Type", "application/json")
            .body(body.to_vec());
        let (status, resp) = self.send(req, &self.login_ref()).await?;
        // The credentials sent are wiped when `creds` drops; Vault's error
        // text (which could echo them) is not read at all.
        drop(creds);
        if !(200..300).contains(&status) {
            let text = self.refusal(status);
            if crate::upstream::is_unavailable(status) {
                return Err(Error::Unavailable {
                    reference: self.login_ref(),
                    what: self.what(),
                    message: text,
                });
            }
            return Err(auth_err(format!(
                "login at auth/{mount} with role {role:?} refused: {text}"
            )));
        }
        let parsed: Response = serde_json::from_slice(&resp).map_err(|e| {
            auth_err(format!(
                "login answer is not Vault JSON: {:?}",
                e.classify()
            ))
        })?;
        let a = parsed
            .auth
            .ok_or_else(|| auth_err("login answer has no auth block".into()))?;
        let ttl = Duration::from_secs(a.lease_duration);
        Ok(TokenState {
            token: Arc::new(a.client_token),
            obtained: Instant::now(),
            ttl: Some(ttl),
            renewable: a.renewable,
            login_ttl: Some(ttl),
        })
    }

    /// `POST /v1/auth/token/renew-self`.
    async fn renew_self(&self, token: &Token) -> Result<(Duration, bool), Error> {
        let url = format!("{}/v1/auth/token/renew-self", self.settings.address);
        let req = self
            .http
            .post(&url)
            .headers(self.headers(Some(token)))
            .header("Content-Type", "application/json")
            .body("{}");
        let (status, body) = self.send(req, &self.login_ref()).await?;
        if !(200..300).contains(&status) {
            return Err(Error::Auth {
                provider: self.name.clone(),
                message: format!("token renewal refused: {}", self.refusal(status)),
            });
        }
        let parsed: Response = serde_json::from_slice(&body).unwrap_or_default();
        let a = parsed.auth.ok_or_else(|| Error::Auth {
            provider: self.name.clone(),
            message: "renewal answer has no auth block".into(),
        })?;
        Ok((Duration::from_secs(a.lease_duration), a.renewable))
    }

    /// The token to use now: renewed when two thirds of its lease passed,
    /// replaced by a fresh login when renewal fails or nears the max TTL.
    pub(super) async fn token(&self) -> Result<Token, Error> {
        let mut state = self.state.lock().await;
        if let Some(s) = state.as_mut() {
            if !s.due() {
                return Ok(Arc::clone(&s.token));
            }
            if s.renewable {
                match self.renew_self(&s.token).await {
                    Ok((ttl, renewable)) => {
                        let near_max = s.login_ttl.is_some_and(|l| ttl < l / 10);
                        if !(near_max && self.can_login()) {
                            tracing::debug!(provider = %self.name, ?ttl, "vault token renewed");
                            s.obtained = Instant::now();
                            s.ttl = Some(ttl);
                            s.renewable = renewable;
                            return Ok(Arc::clone(&s.token));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(provider = %self.name, error = %e, "vault token renewal failed; logging in again");
                    }
                }
            }
            if !self.can_login() {
                // A static token cannot be replaced by us; let Vault decide.
                return Ok(Arc::clone(&s.token));
            }
        }
        let fresh = self.login().await?;
        let t = Arc::clone(&fresh.token);
        *state = Some(fresh);
        Ok(t)
    }

    /// Checks with Vault, now, that our credentials are accepted: a fresh
    /// login for login methods (a token obtained earlier proves nothing
    /// about the credential today), `lookup-self` for a static token.
    pub(super) async fn check_credentials(&self) -> Result<(), Error> {
        if self.can_login() {
            let mut state = self.state.lock().await;
            let fresh = self.login().await?;
            *state = Some(fresh);
            return Ok(());
        }
        let token = self.token().await?;
        let url = format!("{}/v1/auth/token/lookup-self", self.settings.address);
        let req = self.http.get(&url).headers(self.headers(Some(&token)));
        let (status, _body) = self.send(req, &self.login_ref()).await?;
        if (200..300).contains(&status) {
            return Ok(());
        }
        let text = self.refusal(status);
        if crate::upstream::is_unavailable(status) {
            return Err(Error::Unavailable {
                reference: self.login_ref(),
                what: self.what(),
                message: text,
            });
        }
        self.forget(&token).await;
        Err(Error::Auth {
            provider: self.name.clone(),
            message: format!("token refused: {text}"),
        })
    }

    /// Drops `used` after a 403 so that the next call logs in (or re-reads a
    /// static token, which Vault Agent may have rotated). Only that token:
    /// a thousand concurrent 403s must not cause a thousand logins.
    pub(super) async fn forget(&self, used: &Token) {
        let mut state = self.state.lock().await;
        if state.as_ref().is_some_and(|s| Arc::ptr_eq(&s.token, used)) {
            *state = None;
        }
    }
}

fn static_token(t: Zeroizing<String>) -> TokenState {
    TokenState {
        token: Arc::new(SecretBox::new(t.as_str().into())),
        obtained: Instant::now(),
        ttl: None,
        renewable: false,
        login_ttl: None,
    }
}
