//! Dynamic secrets (`engine: dynamic`) through the real agent and wrapper,
//! against the Vault stand-in's dynamic engine: every process gets its own
//! credential, whose lease lives exactly as long as the process — renewed
//! while it runs, revoked when it exits, and carried across an agent
//! restart.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kernelseal_testkit::vault::{DynamicRole, Policy, VaultSpec, VaultStandin};
use kernelseal_testkit::{Reaped, wait_until};
use support::{Agent, bin, read, scratch, start_agent};

const CREDS: &str = "database/creds/app";

fn vault(ttl: u64, max_ttl: u64) -> (VaultStandin, String) {
    let vault = VaultStandin::start(
        VaultSpec::default()
            .dynamic(
                CREDS,
                DynamicRole {
                    ttl: Duration::from_secs(ttl),
                    max_ttl: Duration::from_secs(max_ttl),
                },
            )
            .policy(
                "app",
                Policy::new()
                    .path(CREDS, &["read"])
                    .path("sys/leases/revoke", &["update"]),
            ),
    );
    let token = vault.create_token(&["app"], 0);
    (vault, token)
}

/// The agent's config: `secret_refs` (YAML, indented for `secretRefs:`)
/// in a binding for `sh` with `on_rotate`, read from `vault`.
fn config_with(vault: &VaultStandin, on_rotate: &str, secret_refs: &str) -> String {
    format!(
        r#"version: v1
policy: {{ mode: disabled }}
podIdentity: disabled
providers:
  vault: {{ type: vault, address: "{}" }}
secrets:
  - name: db
    selector: {{ binary: sh }}
    onRotate: {on_rotate}
    secretRefs:
{secret_refs}"#,
        vault.addr()
    )
}

/// Username and password, two keys of one dynamic path.
fn config(vault: &VaultStandin, on_rotate: &str) -> String {
    config_with(
        vault,
        on_rotate,
        "      - name: DB_USER
        source: { vaultRef: { mount: database, path: creds/app, key: username, engine: dynamic } }
      - name: DB_PASSWORD
        source: { vaultRef: { mount: database, path: creds/app, key: password, engine: dynamic } }
",
    )
}

fn agent(d: &Path, vault: &VaultStandin, token: &str, on_rotate: &str) -> Agent {
    let token = token.to_string();
    start_agent(d, &config(vault, on_rotate), move |c| {
        c.env("VAULT_TOKEN", token);
    })
}

/// An app through the wrapper that writes the credential it got to `out`
/// and then sleeps (as `sh`, so that the binding selects it).
fn app(socket: &Path, out: &Path) -> Child {
    Command::new(bin())
        .args(["exec", "--timeout", "5s", "--socket"])
        .arg(socket)
        .args(["--", "sh", "-c"])
        .arg(r#"printf '%s %s' "$DB_USER" "$DB_PASSWORD" > "$0.tmp" && mv "$0.tmp" "$0"; exec sleep 600"#)
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The credential the app wrote: (username, password).
fn credential(out: &Path) -> (String, String) {
    wait_until(
        20,
        || out.exists(),
        || format!("no credential at {}", out.display()),
    );
    let text = read(out);
    let (user, password) = text.split_once(' ').expect("username and password");
    assert!(!user.is_empty() && !password.is_empty(), "{text:?}");
    (user.to_string(), password.to_string())
}

fn out(d: &Path, name: &str) -> PathBuf {
    d.join(format!("{name}.cred"))
}

#[test]
fn each_process_gets_its_own_credential_renewed_while_it_lives_and_revoked_when_it_exits() {
    let d = scratch("dynamic", "own");
    let (vault, token) = vault(3, 3600);
    let agent = agent(&d, &vault, &token, "none");

    let mut first = Reaped(app(&agent.socket, &out(&d, "first")));
    let second = Reaped(app(&agent.socket, &out(&d, "second")));
    let (user1, pass1) = credential(&out(&d, "first"));
    let (user2, pass2) = credential(&out(&d, "second"));
    assert_ne!(user1, user2, "two processes share a credential");
    assert_ne!(pass1, pass2);
    // Username and password of each came from one read.
    assert!(vault.accepts_login(&user1, &pass1));
    assert!(vault.accepts_login(&user2, &pass2));
    // One read per process, whatever the number of keys it takes.
    assert_eq!(vault.lease_counts().issued, 2);

    // Past three TTLs, the credentials still work: their leases were renewed.
    std::thread::sleep(Duration::from_secs(8));
    assert!(vault.accepts_login(&user1, &pass1), "{}", read(&agent.log));
    assert!(vault.accepts_login(&user2, &pass2));
    let counts = vault.lease_counts();
    assert!(counts.renewed >= 4, "{counts:?}");
    assert_eq!(counts.expired, 0, "{counts:?}");

    // The first exits: its lease is revoked, not left to run out.
    let killed = Instant::now();
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    wait_until(
        10,
        || vault.lease_counts().revoked == 1,
        || format!("lease not revoked: {}", read(&agent.log)),
    );
    eprintln!("revoked {:?} after the kill", killed.elapsed());
    assert!(!vault.accepts(&user1));
    assert!(vault.accepts_login(&user2, &pass2));
    assert!(
        read(&agent.log).contains("[LEASE] PID"),
        "{}",
        read(&agent.log)
    );
    drop(second);
    wait_until(10, || vault.live_leases() == 0, || read(&agent.log));
    assert_eq!(vault.lease_counts().revoked, 2);
    assert_eq!(vault.lease_counts().expired, 0);
    // No credential in the agent's log.
    let log = read(&agent.log);
    for secret in [&pass1, &pass2, &token] {
        assert!(!log.contains(secret.as_str()), "{log}");
    }
}

#[test]
fn leases_outlive_an_agent_killed_and_restarted() {
    let d = scratch("dynamic", "restart");
    let (vault, token) = vault(3, 3600);
    let mut agent = agent(&d, &vault, &token, "none");
    let survivor = Reaped(app(&agent.socket, &out(&d, "survivor")));
    let mut dies = Reaped(app(&agent.socket, &out(&d, "dies")));
    let (user_s, pass_s) = credential(&out(&d, "survivor"));
    let (user_d, _) = credential(&out(&d, "dies"));
    let records = std::fs::read_dir(d.join("leases")).unwrap().count();
    assert_eq!(records, 2, "one lease record per process");

    // SIGKILL: the agent cannot revoke anything on its way out.
    agent._child.0.kill().unwrap();
    agent._child.0.wait().unwrap();
    dies.0.kill().unwrap();
    dies.0.wait().unwrap();
    assert!(vault.accepts(&user_d), "nobody revoked it yet");
    let renewed_before = vault.lease_counts().renewed;

    let log_before = read(&agent.log);
    std::fs::rename(&agent.log, d.join("agent-1.log")).unwrap();
    let agent = self::agent(&d, &vault, &token, "none");
    // The dead process's lease is revoked at start; the living one's lease
    // is renewed again.
    wait_until(
        10,
        || !vault.accepts(&user_d),
        || {
            format!(
                "lease of the dead process not revoked: {}",
                read(&agent.log)
            )
        },
    );
    wait_until(
        10,
        || vault.lease_counts().renewed > renewed_before,
        || format!("no renewal after the restart: {}", read(&agent.log)),
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        vault.accepts_login(&user_s, &pass_s),
        "{}",
        read(&agent.log)
    );
    assert_eq!(vault.lease_counts().expired, 0);
    assert_eq!(std::fs::read_dir(d.join("leases")).unwrap().count(), 1);
    let log = read(&agent.log);
    assert!(
        log.contains("1 process(es) still alive, 1 lease(s) of exited processes revoked"),
        "{log}"
    );
    assert!(!log.contains(&pass_s) && !log_before.contains(&pass_s));

    // And its exit still revokes it.
    drop(survivor);
    wait_until(10, || !vault.accepts(&user_s), || read(&agent.log));
    assert_eq!(std::fs::read_dir(d.join("leases")).unwrap().count(), 0);
}

#[test]
fn a_lease_near_its_max_ttl_restarts_the_process_per_on_rotate() {
    let d = scratch("dynamic", "max-ttl");
    // Renewed at ~2s, Vault grants 2s of the 4s max TTL left... then less
    // than asked: the process is told to restart while the credential
    // still works.
    let (vault, token) = vault(3, 5);
    let agent = agent(&d, &vault, &token, "restart");
    let mut app = Reaped(app(&agent.socket, &out(&d, "app")));
    let (user, _) = credential(&out(&d, "app"));
    let mut status = None;
    wait_until(
        15,
        || {
            status = app.0.try_wait().unwrap();
            status.is_some()
        },
        || format!("not restarted: {}", read(&agent.log)),
    );
    let status = status.unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGTERM)
    );
    let log = read(&agent.log);
    assert!(
        log.contains("(its max TTL)") && log.contains("terminated for a restart"),
        "{log}"
    );
    // Its exit revoked the credential rather than letting it run out.
    wait_until(10, || !vault.accepts(&user), || read(&agent.log));
    assert_eq!(
        vault.lease_counts().revoked,
        1,
        "{:?}",
        vault.lease_counts()
    );
}

#[test]
fn a_refused_delivery_revokes_what_it_read() {
    let d = scratch("dynamic", "refused");
    let (vault, token) = vault(60, 3600);
    // Neither key exists in the answer: the binding is refused, and the
    // credential read for it is revoked at once rather than left to run
    // out unused.
    let text = config(&vault, "none")
        .replace("key: username", "key: user")
        .replace("key: password", "key: pass");
    let agent = start_agent(&d, &text, |c| {
        c.env("VAULT_TOKEN", &token);
    });
    let o = Command::new(bin())
        .args(["exec", "--timeout", "5s", "--socket"])
        .arg(&agent.socket)
        .args(["--", "sh", "-c", "exit 0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains("\"user\"") || stderr.contains("user"),
        "{stderr}"
    );
    assert_eq!(vault.lease_counts().issued, 1, "one read for both keys");
    wait_until(
        10,
        || vault.lease_counts().revoked == 1,
        || format!("unused lease not revoked: {}", read(&agent.log)),
    );
    assert_eq!(vault.live_leases(), 0);
}

#[test]
fn a_template_over_a_dynamic_secret_renders_the_process_own_credential() {
    let d = scratch("dynamic", "template");
    let (vault, token) = vault(60, 3600);
    let text = config_with(
        &vault,
        "none",
        r#"      - name: DATABASE_URL
        source:
          template:
            text: "postgresql://{{ db.username }}:{{ db.password }}@db:5432/app"
            refs:
              db: { vaultRef: { mount: database, path: creds/app, engine: dynamic } }
"#,
    );
    let agent = start_agent(&d, &text, |c| {
        c.env("VAULT_TOKEN", &token);
    });
    let out = d.join("url");
    let mut app = Reaped(
        Command::new(bin())
            .args(["exec", "--timeout", "5s", "--socket"])
            .arg(&agent.socket)
            .args(["--", "sh", "-c"])
            .arg(r#"printf '%s' "$DATABASE_URL" > "$0.tmp" && mv "$0.tmp" "$0"; exec sleep 600"#)
            .arg(&out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(20, || out.exists(), || read(&agent.log));
    let url = read(&out);
    let creds = url
        .strip_prefix("postgresql://")
        .and_then(|r| r.strip_suffix("@db:5432/app"))
        .unwrap_or_else(|| panic!("not a DSN: {url:?}"));
    let (user, password) = creds.split_once(':').unwrap();
    // Both from the one read, and that read's lease held for the process.
    assert!(vault.accepts_login(user, password));
    assert_eq!(vault.lease_counts().issued, 1);
    app.0.kill().unwrap();
    app.0.wait().unwrap();
    wait_until(10, || !vault.accepts(user), || read(&agent.log));
    assert!(!read(&agent.log).contains(password));
}
