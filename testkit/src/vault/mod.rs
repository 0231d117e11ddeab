//! A stand-in for HashiCorp Vault that authorizes as Vault does: a pod
//! logs in with its service-account token to a kubernetes auth role, and
//! the token it gets reads only what the role's policies grant.
//!
//! Served over plain HTTP on 127.0.0.1, on a thread of its own (usable from
//! sync and async tests alike) until dropped:
//!
//! - `POST|PUT /v1/auth/<auth_mount>/login` `{"role","jwt"}`: the kubernetes
//!   auth method, its checks in the order of vault-plugin-auth-kubernetes
//!   0.24 under Vault's default configuration (no `pem_keys`, no `issuer`),
//!   each refused with the plugin's status and text: `role` and `jwt`
//!   given (400 `missing role`, `missing jwt`), the role known (400
//!   `invalid role name "<role>"`), the JWT well-formed (403 `permission
//!   denied`), `aud` holding the role's `audience` if set (403 `invalid
//!   audience (aud) claim: audience claim does not match any expected
//!   audience`), `exp`/`nbf`/`iat` with a minute's leeway (403 `invalid
//!   expiration time (exp) claim: token is expired`, …), the account's
//!   name and namespace bound, `*` globs allowed (403 `service account name
//!   not authorized`, `namespace not authorized`), and last the signature,
//!   which Vault leaves to the API server's TokenReview (403 `permission
//!   denied`). The answer's `auth` block is Vault's: `client_token`
//!   (`hvs.…`), `accessor`, `policies` and `token_policies` (sorted, with
//!   `default`), `metadata` {`role`, `service_account_name`,
//!   `service_account_namespace`, `service_account_secret_name`,
//!   `service_account_uid`}, `lease_duration`, `renewable: true`.
//! - `GET /v1/<kv_mount>/data/<path>[?version=N]`: KV v2, `data.data` and
//!   `data.metadata` (`version`, `created_time`, …), `lease_duration: 0`;
//!   404 `{"errors":[]}` for a path or version that does not exist.
//! - `POST|PUT /v1/auth/token/renew-self` `[{"increment"}]`: extends the
//!   token by its TTL (or the increment) and answers its `auth` block.
//!   `GET /v1/auth/token/lookup-self`: the token's `data` (`policies`,
//!   `ttl`, `meta`, …).
//! - `GET /v1/<creds path>` of a dynamic role ([`VaultSpec::dynamic`],
//!   `database/creds/app`): a new credential (`data.username`,
//!   `data.password`) per read, with its own `lease_id`
//!   (`<creds path>/<uuid>`), `lease_duration` (the role's TTL) and
//!   `renewable: true`.
//! - `PUT /v1/sys/leases/renew` `{"lease_id","increment"}`: the lease's
//!   new `lease_duration`, the increment (else the role's TTL) capped at
//!   what is left of its max TTL; 400 `lease not found` for a lease that
//!   is unknown, revoked or ran out (Vault's expiration manager revokes a
//!   lease at the end of its TTL), `lease_id must be specified` without
//!   one. `PUT /v1/sys/leases/revoke` `{"lease_id"}`: 204, whether or not
//!   the lease exists. `PUT /v1/sys/leases/lookup`: `data` {`id`,
//!   `issue_time`, `expire_time`, `last_renewal`, `renewable`, `ttl`}, 400
//!   `invalid lease` for an unknown one.
//! - Every request but the login needs a token (`X-Vault-Token` or
//!   `Authorization: Bearer`) whose policies grant the capability
//!   (GET → `read`, POST/PUT → `update`, …) on the API path, matched as
//!   Vault matches ACL paths ([`Policy`]). Refusals are Vault's 403s: no
//!   token `permission denied`; unknown, revoked or expired token `2 errors
//!   occurred: permission denied, invalid token`; not granted `1 error
//!   occurred: permission denied` (each in Vault's multierror text). The
//!   built-in `default` policy lets a token renew and look up itself and
//!   renew and look up leases, not revoke them; a `default` in
//!   [`VaultSpec::policies`] replaces it.
//! - Other paths: 404 `no handler for route` once the ACL allows the
//!   request; other methods 405. Malformed JSON: 400 `failed to parse JSON
//!   input`. The stand-in logs nothing, and no input makes it panic.
//!
//! It counts requests received, whatever their answer: logins (total and
//! per role named), KV reads per path, renewals; and leases issued,
//! renewed, revoked and expired ([`LeaseCounts`]), and those live.
//!
//! Left out: the API server behind the login (the stand-in checks an HS256
//! signature where Vault calls TokenReview, so a deleted pod's token still
//! logs in), `iss` checks (off in Vault's default configuration), namespace
//! selectors, token max TTL and periodic tokens, writes through the API
//! (tests write with [`VaultStandin::put_secret`]), KV v1, the dynamic
//! engines' configuration and role paths (roles come from the spec),
//! revocation of a token's leases with the token, `sys/leases/revoke-prefix`
//! and `revoke-force`, KV soft deletion and metadata paths,
//! `X-Vault-Namespace` (ignored),
//! percent-decoding of paths, response wrapping, TLS.

mod acl;
mod http;
mod kv;
mod leases;
mod login;
mod reply;
mod spec;
mod tokens;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use serde_json::{Map, Value};

pub use acl::{PathRule, Policy};
pub use leases::{DynamicRole, LeaseCounts};
pub use login::{CLOCK_SKEW_LEEWAY_SECS, Role};
pub use spec::VaultSpec;

/// Everything a request may change.
struct State {
    roles: BTreeMap<String, Role>,
    policies: BTreeMap<String, Policy>,
    kv: kv::KvStore,
    leases: leases::LeaseStore,
    tokens: tokens::TokenStore,
}

#[derive(Default)]
struct Counts {
    logins: usize,
    logins_by_role: BTreeMap<String, usize>,
    reads: BTreeMap<String, usize>,
    renewals: usize,
}

/// What the server and the test handle share.
struct Shared {
    /// `auth/<mount>/login`
    login_path: String,
    /// `<mount>/data/`
    kv_data_prefix: String,
    signing_key: Vec<u8>,
    state: Mutex<State>,
    counts: Mutex<Counts>,
}

/// A lock that a panicking test thread cannot leave unusable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn count_login(&self, role: Option<&str>) {
        let mut c = lock(&self.counts);
        c.logins += 1;
        if let Some(role) = role {
            *c.logins_by_role.entry(role.to_string()).or_default() += 1;
        }
    }

    fn count_read(&self, path: &str) {
        *lock(&self.counts)
            .reads
            .entry(path.to_string())
            .or_default() += 1;
    }

    fn count_renewal(&self) {
        lock(&self.counts).renewals += 1;
    }
}

/// The running stand-in; stops serving when dropped.
pub struct VaultStandin {
    addr: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl VaultStandin {
    /// Starts serving `spec` on a free port of 127.0.0.1; ready on return.
    pub fn start(spec: VaultSpec) -> VaultStandin {
        let mut kv = kv::KvStore::default();
        for (path, data) in spec.secrets {
            kv.put(&path, data);
        }
        for (name, role) in &spec.roles {
            role.check(name);
        }
        let mut leases = leases::LeaseStore::default();
        for (path, role) in spec.dynamic {
            leases.add_role(&path, role);
        }
        let shared = Arc::new(Shared {
            login_path: format!("auth/{}/login", spec.auth_mount),
            kv_data_prefix: format!("{}/data/", spec.kv_mount),
            signing_key: spec.signing_key,
            state: Mutex::new(State {
                roles: spec.roles,
                policies: spec.policies,
                kv,
                leases,
                tokens: tokens::TokenStore::default(),
            }),
            counts: Mutex::new(Counts::default()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the Vault stand-in");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = format!("http://{}", listener.local_addr().expect("local address"));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let app = http::router(Arc::clone(&shared));
        let server = std::thread::Builder::new()
            .name("vault-standin".into())
            .spawn(move || serve(listener, app, stopped))
            .expect("spawn the Vault stand-in thread");
        VaultStandin {
            addr,
            shared,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// `http://127.0.0.1:PORT`, for the provider's `address`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Login requests received, whatever the answer.
    pub fn logins(&self) -> usize {
        lock(&self.shared.counts).logins
    }

    /// Login requests naming `role`, whatever the answer.
    pub fn logins_for(&self, role: &str) -> usize {
        let counts = lock(&self.shared.counts);
        counts.logins_by_role.get(role).copied().unwrap_or(0)
    }

    /// KV reads of `path` (under the mount: `team-a/app`) received, any
    /// version, whatever the answer.
    pub fn reads(&self, path: &str) -> usize {
        lock(&self.shared.counts)
            .reads
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// KV reads received, all paths.
    pub fn total_reads(&self) -> usize {
        lock(&self.shared.counts).reads.values().sum()
    }

    /// renew-self requests received, whatever the answer.
    pub fn renewals(&self) -> usize {
        lock(&self.shared.counts).renewals
    }

    /// Leases issued, renewed, revoked and expired so far.
    pub fn lease_counts(&self) -> LeaseCounts {
        self.shared.state().leases.counts()
    }

    /// Leases live now (issued, neither revoked nor run out).
    pub fn live_leases(&self) -> usize {
        self.shared.state().leases.live()
    }

    /// Whether a dynamic credential's `username` still works: its lease is
    /// live.
    pub fn accepts(&self, username: &str) -> bool {
        self.shared.state().leases.accepts(username)
    }

    /// Whether a dynamic credential's `username` logs in with `password`:
    /// both came from one read and its lease is live.
    pub fn accepts_login(&self, username: &str, password: &str) -> bool {
        self.shared.state().leases.accepts_login(username, password)
    }

    /// Writes `data` as the next version of `path`.
    pub fn put_secret(&self, path: &str, data: Value) {
        self.shared.state().kv.put(path, data);
    }

    /// Removes `path` with all its versions.
    pub fn delete_secret(&self, path: &str) {
        self.shared.state().kv.delete(path);
    }

    /// Writes a role; later logins use it, tokens already issued keep theirs.
    pub fn set_role(&self, name: &str, role: Role) {
        role.check(name);
        self.shared.state().roles.insert(name.to_string(), role);
    }

    pub fn remove_role(&self, name: &str) {
        self.shared.state().roles.remove(name);
    }

    /// Writes a policy; it applies at once to every token that names it.
    pub fn set_policy(&self, name: &str, policy: Policy) {
        self.shared
            .state()
            .policies
            .insert(name.to_string(), policy);
    }

    /// A token with `policies` (and `default`) for `ttl_secs` (0: 768h), as
    /// `vault token create` makes one.
    pub fn create_token(&self, policies: &[&str], ttl_secs: u64) -> String {
        let policies: Vec<String> = policies.iter().map(|p| p.to_string()).collect();
        let mut state = self.shared.state();
        state.tokens.issue(&policies, Map::new(), ttl_secs).0
    }

    /// Revokes every token issued so far: their next request gets 403.
    pub fn revoke_tokens(&self) {
        self.shared.state().tokens.revoke_all();
    }
}

impl Drop for VaultStandin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// The server thread: serves until `stopped`, then drops its runtime, which
/// ends every open connection.
fn serve(
    listener: std::net::TcpListener,
    app: axum::Router,
    stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the Vault stand-in's runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let _ = stopped.await;
        server.abort();
    });
}
