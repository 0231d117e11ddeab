//! How the Vault provider gets and keeps a token: static token (env/file),
//! kubernetes or approle login, renew-self before expiry, a fresh login when
//! renewal fails or after a 403.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretBox;
use tokio::time::Instant;
use vaultrs::api::token::requests::{LookupTokenSelfRequest, RenewTokenSelfRequest};
use zeroize::Zeroizing;

use super::credentials::{self, Credential, Login};
use super::envelope::Envelope;
use super::transport::Reply;
use super::{Token, VaultProvider};
use crate::error::Error;
use crate::settings::VaultAuth;

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

impl VaultProvider {
    fn can_login(&self) -> bool {
        matches!(
            self.settings.auth,
            VaultAuth::Kubernetes { .. }
                | VaultAuth::KubernetesJwt { .. }
                | VaultAuth::AppRole { .. }
        )
    }

    fn auth_error(&self, message: String) -> Error {
        Error::Auth {
            provider: self.name.clone(),
            message,
        }
    }

    /// Gets a token: static (env/file) or by logging in.
    async fn login(&self) -> Result<TokenState, Error> {
        let login = match credentials::read(&self.name, &self.settings.auth)? {
            Credential::Token(token) => return Ok(static_token(token)),
            Credential::Login(login) => login,
        };
        let mount = login.mount();
        tracing::debug!(provider = %self.name, mount, "vault login");
        let reply = self.send_login(&login).await?;
        let status = reply.status;
        if !(200..300).contains(&status) {
            // Vault's error text (which could echo the credential) is not
            // read at all.
            let text = self.refusal(status);
            if crate::upstream::is_unavailable(status) {
                return Err(Error::Unavailable {
                    reference: self.login_ref(),
                    what: self.what(),
                    message: text,
                });
            }
            return Err(self.auth_error(format!(
                "login at auth/{mount} with role {:?} refused: {text}",
                login.role()
            )));
        }
        let parsed = Envelope::parse(&reply.body, |category| {
            self.auth_error(format!("login answer is not Vault JSON: {category:?}"))
        })?;
        let a = parsed
            .auth
            .ok_or_else(|| self.auth_error("login answer has no auth block".into()))?;
        let ttl = Duration::from_secs(a.lease_duration);
        Ok(TokenState {
            token: Arc::new(a.client_token),
            obtained: Instant::now(),
            ttl: Some(ttl),
            renewable: a.renewable,
            login_ttl: Some(ttl),
        })
    }

    /// `POST /v1/auth/{mount}/login` (no token). The credential is wiped
    /// when the caller drops `login`.
    async fn send_login(&self, login: &Login) -> Result<Reply, Error> {
        let reference = self.login_ref();
        match login {
            Login::Kubernetes(request) => self.call(request, None, &reference).await,
            Login::AppRole(request) => self.call(request, None, &reference).await,
        }
    }

    /// `POST /v1/auth/token/renew-self`.
    async fn renew_self(&self, token: &Token) -> Result<(Duration, bool), Error> {
        let renew = RenewTokenSelfRequest { increment: None };
        let reply = self.call(&renew, Some(token), &self.login_ref()).await?;
        if !(200..300).contains(&reply.status) {
            return Err(self.auth_error(format!(
                "token renewal refused: {}",
                self.refusal(reply.status)
            )));
        }
        let a = Envelope::parse_or_default(&reply.body)
            .auth
            .ok_or_else(|| self.auth_error("renewal answer has no auth block".into()))?;
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
        let reply = self
            .call(&LookupTokenSelfRequest {}, Some(&token), &self.login_ref())
            .await?;
        let status = reply.status;
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
        Err(self.auth_error(format!("token refused: {text}")))
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
