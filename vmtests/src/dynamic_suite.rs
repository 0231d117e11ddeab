//! A dynamic credential (`engine: dynamic`), the process's own, is as
//! closed to root as any other secret, and its lease ends with the process.

use std::time::{Duration, Instant};

use kernelseal_testkit::vault::{DynamicRole, Policy as VaultPolicy, VaultSpec, VaultStandin};

use crate::agent::{Policy, wait_log_line};
use crate::loopback::loopback_up;
use crate::pod_identity_suite::{no_panic, not_in_agent_log, with_agent};
use crate::suite::{Ctx, TestResult, all_allowed, all_refused};
use crate::victim::Victim;

const CREDS: &str = "database/creds/app";

/// Selects the wrapped victim (uid 0) beside the suite's own bindings.
const BINDING: &str = "  - name: dynamic-db\n    selector: { uid: 0 }\n    secretRefs:\n      - { name: DB_USER, source: { vaultRef: { mount: database, path: creds/app, key: username, engine: dynamic } } }\n      - { name: DB_PASSWORD, source: { vaultRef: { mount: database, path: creds/app, key: password, engine: dynamic } } }\n";

fn vault() -> Result<VaultStandin, String> {
    no_panic("starting the Vault stand-in", || {
        VaultStandin::start(
            VaultSpec::default()
                .dynamic(
                    CREDS,
                    DynamicRole {
                        ttl: Duration::from_secs(600),
                        max_ttl: Duration::from_secs(3600),
                    },
                )
                .policy(
                    "app",
                    VaultPolicy::new()
                        .path(CREDS, &["read"])
                        .path("sys/leases/revoke", &["update"]),
                ),
        )
    })
}

/// A wrapped app gets a credential of its own from Vault's dynamic engine;
/// root is refused it on every vector while the same program unwrapped is
/// open; the app's exit revokes the lease.
pub fn dynamic_credential_is_refused_to_root_and_revoked_at_exit(ctx: &mut Ctx) -> TestResult {
    loopback_up()?;
    let vault = vault()?;
    let token = vault.create_token(&["app"], 0);
    let top = format!(
        "podIdentity: disabled\nproviders:\n  vault: {{ type: vault, address: \"{}\" }}\n",
        vault.addr()
    );
    let yaml = Policy::ENFORCE_ALL.yaml_with(BINDING, &top);
    with_agent(ctx, &yaml, &[("VAULT_TOKEN", token.as_str())], || {
        let mut app = Victim::spawn_wrapped()?;
        // A UUID, as the stand-in's database engine mints passwords.
        let seen = app.ask("getenv DB_PASSWORD")?;
        if seen != "env 36" || vault.lease_counts().issued != 1 {
            return Err(format!(
                "the wrapped app's DB_PASSWORD: {seen}; leases issued: {:?}",
                vault.lease_counts()
            ));
        }
        all_refused(
            "the app holding a dynamic credential",
            app.pid,
            app.pid,
            app.addr,
        )?;
        let control = Victim::spawn()?;
        all_allowed("the unwrapped app", control.pid, control.pid, control.addr)?;
        drop(control);

        let pid = app.pid;
        drop(app);
        let exited = Instant::now();
        while vault.lease_counts().revoked != 1 {
            if exited.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "the lease of PID {pid} was not revoked at its exit: {:?}",
                    vault.lease_counts()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        wait_log_line(&[&format!(
            "[LEASE] PID {pid} exited; 1 lease(s) of binding dynamic-db revoked"
        )])?;
        not_in_agent_log(&[("the Vault token", token.as_str())])
    })
}
