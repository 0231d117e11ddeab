//! Key-less Vault reads (the whole data map as one JSON value) and the
//! leases of dynamic secrets held, renewed and revoked after the value,
//! against the Vault stand-in.

use std::time::Duration;

use kernelseal_providers::{
    HeldLease, KvEngine, SecretProvider, SecretRef, VaultAuth, VaultProvider, VaultRef,
    VaultSettings,
};
use kernelseal_testkit::vault::{DynamicRole, Policy, VaultSpec, VaultStandin};
use serde_json::json;

fn provider(vault: &VaultStandin, token_file: &std::path::Path) -> VaultProvider {
    let settings = VaultSettings::new(vault.addr(), VaultAuth::TokenFile(token_file.to_path_buf()));
    VaultProvider::new("vault", settings).unwrap()
}

fn vref(mount: Option<&str>, path: &str, key: Option<&str>, engine: Option<KvEngine>) -> SecretRef {
    SecretRef::Vault(VaultRef {
        provider: None,
        mount: mount.map(str::to_string),
        path: path.into(),
        key: key.map(str::to_string),
        version: None,
        engine,
        ttl: None,
    })
}

fn standin(revoke: bool) -> (VaultStandin, tempfile::TempDir) {
    let mut policy = Policy::new()
        .path("secret/data/app", &["read"])
        .path("database/creds/app", &["read"]);
    if revoke {
        policy = policy.path("sys/leases/revoke", &["update"]);
    }
    let vault = VaultStandin::start(
        VaultSpec::default()
            .policy("app", policy)
            .secret(
                "app",
                json!({ "user": "svc", "port": 5432, "nested": { "a": "b" } }),
            )
            .dynamic(
                "database/creds/app",
                DynamicRole {
                    ttl: Duration::from_secs(60),
                    max_ttl: Duration::from_secs(90),
                },
            ),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), vault.create_token(&["app"], 0)).unwrap();
    (vault, dir)
}

#[tokio::test]
async fn a_key_less_ref_reads_the_whole_data_map_as_one_json_object() {
    kernelseal_providers::install_crypto_provider();
    let (vault, dir) = standin(false);
    let p = provider(&vault, &dir.path().join("token"));
    let whole = p.fetch(&vref(None, "app", None, None)).await.unwrap();
    let tree: serde_json::Value = serde_json::from_slice(whole.expose_bytes()).unwrap();
    assert_eq!(
        tree,
        json!({ "user": "svc", "port": 5432, "nested": { "a": "b" } })
    );
    assert_eq!(whole.metadata().source, "vaultRef app");
    // A key taken from it names the keyed ref; a missing one names the key.
    let keyed = vref(None, "app", Some("port"), None);
    assert_eq!(
        whole.select_key("port", &keyed).unwrap().expose_bytes(),
        b"5432"
    );
    let missing = vref(None, "app", Some("nope"), None);
    let e = whole.select_key("nope", &missing).unwrap_err().to_string();
    assert!(e.contains("nope") && !e.contains("svc"), "{e}");
}

#[tokio::test]
async fn a_dynamic_lease_is_renewed_and_revoked_after_its_value_is_gone() {
    kernelseal_providers::install_crypto_provider();
    let (vault, dir) = standin(true);
    let p = provider(&vault, &dir.path().join("token"));
    let creds = vref(Some("database"), "creds/app", None, Some(KvEngine::Dynamic));
    let first = p.fetch(&creds).await.unwrap();
    let second = p.fetch(&creds).await.unwrap();
    assert!(
        !first.same_content(&second),
        "every read is a new credential"
    );
    let held = HeldLease::of(&first).expect("a dynamic read comes with its lease");
    assert_eq!(held.provider, "vault");
    assert_eq!(held.lease.duration, Duration::from_secs(60));
    let tree: serde_json::Value = serde_json::from_slice(first.expose_bytes()).unwrap();
    let user = tree["username"].as_str().unwrap().to_string();
    drop(first);

    assert_eq!(
        p.renew_held(&held).await.unwrap(),
        Some(Duration::from_secs(60))
    );
    assert_eq!(vault.lease_counts().renewed, 1);
    p.revoke_held(&held).await.unwrap();
    assert!(!vault.accepts(&user));
    assert_eq!(vault.lease_counts().revoked, 1);
    assert_eq!(vault.live_leases(), 1, "the second read's lease is its own");
    // Renewing a revoked lease is refused, naming no lease content.
    let e = p.renew_held(&held).await.unwrap_err();
    assert!(e.to_string().contains("lease renewal refused"), "{e}");
}

#[tokio::test]
async fn revoking_without_the_policy_for_it_is_an_error_not_a_silent_success() {
    kernelseal_providers::install_crypto_provider();
    let (vault, dir) = standin(false);
    let p = provider(&vault, &dir.path().join("token"));
    let creds = vref(
        Some("database"),
        "creds/app",
        Some("password"),
        Some(KvEngine::Dynamic),
    );
    let value = p.fetch(&creds).await.unwrap();
    let held = HeldLease::of(&value).unwrap();
    let e = p.revoke_held(&held).await.unwrap_err().to_string();
    assert!(
        e.contains("lease revocation refused") && e.contains("403"),
        "{e}"
    );
    assert_eq!(vault.live_leases(), 1);
}

#[tokio::test]
async fn a_check_revokes_the_dynamic_secrets_it_reads() {
    kernelseal_providers::install_crypto_provider();
    let (vault, dir) = standin(true);
    let text = format!(
        "version: v1\nproviders:\n  vault: {{ type: vault, address: \"{}\", auth: {{ token: {{ file: {} }} }} }}\nsecrets:\n  - name: db\n    selector: {{ uid: 1000 }}\n    secretRefs:\n      - {{ name: DB_PASSWORD, source: {{ vaultRef: {{ mount: database, path: creds/app, key: password, engine: dynamic }} }} }}\n      - name: DSN\n        source:\n          template:\n            text: \"{{{{ db.username }}}}\"\n            refs:\n              db: {{ vaultRef: {{ mount: database, path: creds/app, engine: dynamic }} }}\n",
        vault.addr(),
        dir.path().join("token").display()
    );
    let config = kernelseal_config::parse_str(&text, "cfg.yaml")
        .unwrap()
        .config;
    let rows = kernelseal_providers::check_config(&config).await;
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert!(row.result.is_ok(), "{row:?}");
    }
    // Both reads were for nobody: neither lease is left to run out.
    assert_eq!(vault.lease_counts().issued, 2);
    assert_eq!(vault.lease_counts().revoked, 2);
    assert_eq!(vault.live_leases(), 0);
}

#[tokio::test]
async fn a_dynamic_answer_that_cannot_be_delivered_is_revoked_at_once() {
    kernelseal_providers::install_crypto_provider();
    let (vault, dir) = standin(true);
    let p = provider(&vault, &dir.path().join("token"));
    let missing = vref(
        Some("database"),
        "creds/app",
        Some("no-such-key"),
        Some(KvEngine::Dynamic),
    );
    let e = p.fetch(&missing).await.unwrap_err().to_string();
    assert!(e.contains("no-such-key"), "{e}");
    // Vault issued a credential with the answer; nobody got it.
    assert_eq!(vault.lease_counts().issued, 1);
    assert_eq!(vault.lease_counts().revoked, 1);
    assert_eq!(vault.live_leases(), 0);
}
