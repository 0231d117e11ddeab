//! The Vault stand-in over HTTP, as a client sees it: who may log in, what
//! a token may read, Vault's refusals, and the counts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use kernelseal_testkit::sa_token::{self, CLUSTER_KEY, TokenSpec};
use kernelseal_testkit::vault::{DynamicRole, Policy, Role, VaultSpec, VaultStandin};
use serde_json::{Value, json};

const POD_UID: &str = "7c1e2d3f-0000-4a5b-8c9d-112233445566";

struct Answer {
    status: u16,
    body: Value,
}

/// One HTTP/1.1 request on its own connection.
fn call(vault: &VaultStandin, method: &str, path: &str, token: Option<&str>, body: &str) -> Answer {
    let host = vault.addr().strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let token = token.map_or(String::new(), |t| format!("X-Vault-Token: {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{token}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: no-store"),
        "{head}"
    );
    Answer {
        status,
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

fn login(vault: &VaultStandin, role: &str, jwt: &str) -> Answer {
    let body = json!({ "role": role, "jwt": jwt }).to_string();
    call(vault, "POST", "/v1/auth/kubernetes/login", None, &body)
}

fn read(vault: &VaultStandin, path: &str, token: Option<&str>) -> Answer {
    call(vault, "GET", &format!("/v1/secret/data/{path}"), token, "")
}

fn errors(a: &Answer) -> Vec<&str> {
    a.body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors array in {}", a.body))
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect()
}

fn pod_token(namespace: &str, service_account: &str) -> String {
    sa_token::mint(
        &TokenSpec::new(namespace, service_account, "pod-1", POD_UID),
        CLUSTER_KEY,
    )
}

/// Team A's app may read `team-a/*`; team B's app `team-b/*`.
fn two_teams() -> VaultStandin {
    VaultStandin::start(
        VaultSpec::default()
            .role(
                "app-a",
                Role::new(&["app"], &["team-a"], &["team-a-read"])
                    .audience("vault")
                    .token_ttl_secs(3600),
            )
            .role("app-b", Role::new(&["app"], &["team-b"], &["team-b-read"]))
            .policy(
                "team-a-read",
                Policy::new().path("secret/data/team-a/*", &["read"]),
            )
            .policy(
                "team-b-read",
                Policy::new().path("secret/data/team-b/*", &["read"]),
            )
            .secret("team-a/db", json!({ "password": "a-secret" }))
            .secret("team-b/db", json!({ "password": "b-secret" })),
    )
}

fn client_token(a: &Answer) -> String {
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["auth"]["client_token"].as_str().unwrap().to_string()
}

#[test]
fn bound_service_account_logs_in() {
    let vault = two_teams();
    let a = login(&vault, "app-a", &pod_token("team-a", "app"));
    assert_eq!(a.status, 200, "{}", a.body);
    let auth = &a.body["auth"];
    assert!(auth["client_token"].as_str().unwrap().starts_with("hvs."));
    assert!(auth["accessor"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(auth["policies"], json!(["default", "team-a-read"]));
    assert_eq!(auth["token_policies"], auth["policies"]);
    assert_eq!(auth["lease_duration"], 3600);
    assert_eq!(auth["renewable"], true);
    let meta = &auth["metadata"];
    assert_eq!(meta["role"], "app-a");
    assert_eq!(meta["service_account_name"], "app");
    assert_eq!(meta["service_account_namespace"], "team-a");
    let spec = TokenSpec::new("team-a", "app", "pod-1", POD_UID);
    assert_eq!(
        meta["service_account_uid"],
        spec.service_account_uid.as_str()
    );
    assert_eq!(a.body["data"], Value::Null);
    // No audience on the role: any audience is accepted; the default TTL
    // is Vault's 768h.
    let legacy = TokenSpec {
        audiences: vec!["api".into()],
        omit_pod: true,
        ..TokenSpec::new("team-b", "app", "p", "u")
    };
    let b = login(&vault, "app-b", &sa_token::mint(&legacy, CLUSTER_KEY));
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(b.body["auth"]["lease_duration"], 2_764_800);
}

#[test]
fn login_refusals_are_vaults() {
    let vault = two_teams();
    let refused = |role: &str, jwt: &str, status: u16, message: &str| {
        let a = login(&vault, role, jwt);
        assert_eq!(
            (a.status, errors(&a)),
            (status, vec![message]),
            "role {role}"
        );
    };
    let spec = TokenSpec::new("team-a", "app", "pod-1", POD_UID);
    refused(
        "app-a",
        &pod_token("team-a", "other"),
        403,
        "service account name not authorized",
    );
    refused(
        "app-a",
        &pod_token("team-b", "app"),
        403,
        "namespace not authorized",
    );
    let wrong_aud = TokenSpec {
        audiences: vec!["sts.amazonaws.com".into()],
        ..spec.clone()
    };
    refused(
        "app-a",
        &sa_token::mint(&wrong_aud, CLUSTER_KEY),
        403,
        "invalid audience (aud) claim: audience claim does not match any expected audience",
    );
    let expired = TokenSpec {
        expires_in_secs: -120,
        ..spec.clone()
    };
    refused(
        "app-a",
        &sa_token::mint(&expired, CLUSTER_KEY),
        403,
        "invalid expiration time (exp) claim: token is expired",
    );
    refused(
        "app-a",
        &sa_token::mint_with_bad_signature(&spec, CLUSTER_KEY),
        403,
        "permission denied",
    );
    refused(
        "app-a",
        &sa_token::mint(&spec, b"another cluster"),
        403,
        "permission denied",
    );
    refused("app-a", "not.a-jwt", 403, "permission denied");
    refused(
        "nope",
        &pod_token("team-a", "app"),
        400,
        "invalid role name \"nope\"",
    );
    refused("app-a", "", 400, "missing jwt");
    refused("", "x", 400, "missing role");
    // Vault's leeway: a minute past `exp` still logs in.
    let just_expired = TokenSpec {
        expires_in_secs: -10,
        ..spec
    };
    assert_eq!(
        login(&vault, "app-a", &sa_token::mint(&just_expired, CLUSTER_KEY)).status,
        200
    );

    for body in ["{", "[1]", "{\"role\": 5, \"jwt\": \"x\"}"] {
        let a = call(&vault, "POST", "/v1/auth/kubernetes/login", None, body);
        assert_eq!(a.status, 400, "{body}: {}", a.body);
        assert_eq!(errors(&a).len(), 1, "{body}");
    }
    assert_eq!(
        call(&vault, "GET", "/v1/auth/kubernetes/login", None, "").status,
        405
    );
}

#[test]
fn reads_follow_the_policies() {
    let vault = two_teams();
    let token = client_token(&login(&vault, "app-a", &pod_token("team-a", "app")));
    let a = read(&vault, "team-a/db", Some(&token));
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["data"]["data"], json!({ "password": "a-secret" }));
    assert_eq!(a.body["data"]["metadata"]["version"], 1);
    assert_eq!(a.body["lease_duration"], 0);

    let other = read(&vault, "team-b/db", Some(&token));
    assert_eq!(
        (other.status, errors(&other)),
        (403, vec!["1 error occurred:\n\t* permission denied\n\n"])
    );
    let none = read(&vault, "team-a/db", None);
    assert_eq!(
        (none.status, errors(&none)),
        (403, vec!["permission denied"])
    );
    let bogus = read(&vault, "team-a/db", Some("hvs.bogus"));
    assert_eq!(
        (bogus.status, errors(&bogus)),
        (
            403,
            vec!["2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"]
        )
    );
    let missing = read(&vault, "team-a/gone", Some(&token));
    assert_eq!((missing.status, errors(&missing).len()), (404, 0));

    // A new version; `?version=` reads an older one.
    vault.put_secret("team-a/db", json!({ "password": "rotated" }));
    let latest = read(&vault, "team-a/db", Some(&token));
    assert_eq!(latest.body["data"]["data"]["password"], "rotated");
    assert_eq!(latest.body["data"]["metadata"]["version"], 2);
    let first = read(&vault, "team-a/db?version=1", Some(&token));
    assert_eq!(first.body["data"]["data"]["password"], "a-secret");
    assert_eq!(
        read(&vault, "team-a/db?version=3", Some(&token)).status,
        404
    );
    assert_eq!(
        read(&vault, "team-a/db?version=x", Some(&token)).status,
        400
    );

    // Policies apply at once; a path no mount serves is 404 once allowed.
    vault.set_policy(
        "team-a-read",
        Policy::new().path("secret/data/team-a/*", &["deny"]),
    );
    assert_eq!(read(&vault, "team-a/db", Some(&token)).status, 403);
    vault.set_policy("team-a-read", Policy::new().path("*", &["read"]));
    let nowhere = call(&vault, "GET", "/v1/nomount/x", Some(&token), "");
    assert_eq!(
        (nowhere.status, errors(&nowhere)),
        (
            404,
            vec!["no handler for route \"nomount/x\". route entry not found."]
        )
    );
    assert_eq!(
        call(
            &vault,
            "PUT",
            "/v1/secret/data/team-a/db",
            Some(&token),
            "{}"
        )
        .status,
        403
    );

    vault.revoke_tokens();
    assert_eq!(read(&vault, "team-a/db", Some(&token)).status, 403);
}

#[test]
fn tokens_renew_and_expire() {
    let vault = two_teams();
    vault.set_role(
        "short",
        Role::new(&["*"], &["*"], &["team-a-read"]).token_ttl_secs(1),
    );
    let token = client_token(&login(&vault, "short", &pod_token("anywhere", "anyone")));
    let renewed = call(
        &vault,
        "POST",
        "/v1/auth/token/renew-self",
        Some(&token),
        "",
    );
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    assert_eq!(renewed.body["auth"]["client_token"], token.as_str());
    assert_eq!(renewed.body["auth"]["lease_duration"], 1);
    let longer = call(
        &vault,
        "PUT",
        "/v1/auth/token/renew-self",
        Some(&token),
        "{\"increment\":\"2s\"}",
    );
    assert_eq!(longer.body["auth"]["lease_duration"], 2);
    let me = call(
        &vault,
        "GET",
        "/v1/auth/token/lookup-self",
        Some(&token),
        "",
    );
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(
        me.body["data"]["policies"],
        json!(["default", "team-a-read"])
    );
    assert_eq!(me.body["data"]["meta"]["role"], "short");
    let lease = json!({ "lease_id": "database/creds/app/x", "increment": 60 }).to_string();
    let renew = call(&vault, "PUT", "/v1/sys/leases/renew", Some(&token), &lease);
    assert_eq!(
        (renew.status, errors(&renew)),
        (400, vec!["lease not found"])
    );
    assert_eq!(
        call(
            &vault,
            "POST",
            "/v1/auth/token/renew-self",
            Some("hvs.bogus"),
            ""
        )
        .status,
        403
    );
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(read(&vault, "team-a/db", Some(&token)).status, 403);
    assert_eq!(
        call(
            &vault,
            "POST",
            "/v1/auth/token/renew-self",
            Some(&token),
            ""
        )
        .status,
        403
    );
    assert_eq!(vault.renewals(), 4);

    // A role removed: no more logins; a static token works as issued.
    vault.remove_role("short");
    assert_eq!(login(&vault, "short", &pod_token("a", "b")).status, 400);
    let static_token = vault.create_token(&["team-b-read"], 0);
    assert_eq!(read(&vault, "team-b/db", Some(&static_token)).status, 200);
}

#[test]
fn counts_requests() {
    let vault = two_teams();
    let a = client_token(&login(&vault, "app-a", &pod_token("team-a", "app")));
    let b = client_token(&login(&vault, "app-b", &pod_token("team-b", "app")));
    assert_eq!(
        login(&vault, "app-b", &pod_token("team-a", "app")).status,
        403
    );
    for _ in 0..3 {
        assert_eq!(read(&vault, "team-a/db", Some(&a)).status, 200);
    }
    assert_eq!(read(&vault, "team-b/db", Some(&b)).status, 200);
    assert_eq!(read(&vault, "team-b/db", Some(&a)).status, 403);
    assert_eq!(read(&vault, "team-b/db?version=1", Some(&b)).status, 200);
    assert_eq!(
        (
            vault.logins(),
            vault.logins_for("app-a"),
            vault.logins_for("app-b")
        ),
        (3, 1, 2)
    );
    assert_eq!(
        (
            vault.reads("team-a/db"),
            vault.reads("team-b/db"),
            vault.total_reads()
        ),
        (3, 3, 6)
    );
    assert_eq!((vault.reads("team-c/db"), vault.renewals()), (0, 0));
}

#[test]
fn other_mounts() {
    let vault = VaultStandin::start(VaultSpec {
        auth_mount: "k8s-prod".into(),
        kv_mount: "kv".into(),
        ..VaultSpec::default()
            .role("app", Role::new(&["app"], &["ns"], &["p"]))
            .policy("p", Policy::new().path("kv/data/+/db", &["read"]))
            .secret("team/db", json!({ "k": "v" }))
    });
    let body = json!({ "role": "app", "jwt": pod_token("ns", "app") }).to_string();
    let token = client_token(&call(&vault, "PUT", "/v1/auth/k8s-prod/login", None, &body));
    let a = call(&vault, "GET", "/v1/kv/data/team/db", Some(&token), "");
    assert_eq!(a.body["data"]["data"]["k"], "v");
    assert_eq!(vault.reads("team/db"), 1);
}

/// `database/creds/app` with a 60 s lease, 90 s at most.
fn dynamic_vault() -> VaultStandin {
    VaultStandin::start(
        VaultSpec::default()
            .dynamic(
                "database/creds/app",
                DynamicRole {
                    ttl: Duration::from_secs(60),
                    max_ttl: Duration::from_secs(90),
                },
            )
            .dynamic(
                "database/creds/brief",
                DynamicRole {
                    ttl: Duration::from_secs(1),
                    max_ttl: Duration::from_secs(1),
                },
            )
            .policy(
                "db",
                Policy::new()
                    .path("database/creds/*", &["read"])
                    .path("sys/leases/revoke", &["update"]),
            )
            .policy(
                "db-read-only",
                Policy::new().path("database/creds/app", &["read"]),
            ),
    )
}

fn lease_call(vault: &VaultStandin, what: &str, token: &str, body: Value) -> Answer {
    call(
        vault,
        "PUT",
        &format!("/v1/sys/leases/{what}"),
        Some(token),
        &body.to_string(),
    )
}

#[test]
fn dynamic_credentials_are_one_lease_each_renewed_within_max_ttl_and_revoked() {
    let vault = dynamic_vault();
    let token = vault.create_token(&["db"], 0);
    let creds = |t: &str| call(&vault, "GET", "/v1/database/creds/app", Some(t), "");
    let (a, b) = (creds(&token), creds(&token));
    assert_eq!((a.status, b.status), (200, 200), "{}", a.body);
    assert_ne!(a.body["data"]["username"], b.body["data"]["username"]);
    assert_ne!(a.body["data"]["password"], b.body["data"]["password"]);
    assert_ne!(a.body["lease_id"], b.body["lease_id"]);
    assert_eq!(a.body["lease_duration"], 60);
    assert_eq!(a.body["renewable"], true);
    let lease = a.body["lease_id"].as_str().unwrap().to_string();
    assert!(lease.starts_with("database/creds/app/"), "{lease}");
    let user = a.body["data"]["username"].as_str().unwrap().to_string();
    assert!(vault.accepts(&user));

    // The default policy renews and looks up; the increment is capped at
    // what is left of the 90 s max TTL.
    let renewed = lease_call(
        &vault,
        "renew",
        &token,
        json!({ "lease_id": lease, "increment": "1h" }),
    );
    assert_eq!(renewed.status, 200, "{}", renewed.body);
    assert_eq!(renewed.body["lease_id"], lease.as_str());
    let duration = renewed.body["lease_duration"].as_u64().unwrap();
    assert!((85..=90).contains(&duration), "{duration}");
    let looked = lease_call(&vault, "lookup", &token, json!({ "lease_id": lease }));
    assert_eq!(looked.status, 200, "{}", looked.body);
    assert_eq!(looked.body["data"]["id"], lease.as_str());
    assert!(
        looked.body["data"]["last_renewal"].is_string(),
        "{}",
        looked.body
    );

    // Revoking needs a policy for it: the default policy has none.
    let reader = vault.create_token(&["db-read-only"], 0);
    assert_eq!(creds(&reader).status, 200);
    let refused = lease_call(&vault, "revoke", &reader, json!({ "lease_id": lease }));
    assert_eq!(refused.status, 403);
    assert!(vault.accepts(&user));
    let revoked = lease_call(&vault, "revoke", &token, json!({ "lease_id": lease }));
    assert_eq!(revoked.status, 204);
    assert!(!vault.accepts(&user));
    // Again, and an unknown lease: still 204.
    assert_eq!(
        lease_call(&vault, "revoke", &token, json!({ "lease_id": lease })).status,
        204
    );
    let gone = lease_call(&vault, "renew", &token, json!({ "lease_id": lease }));
    assert_eq!((gone.status, errors(&gone)), (400, vec!["lease not found"]));
    let gone = lease_call(&vault, "lookup", &token, json!({ "lease_id": lease }));
    assert_eq!((gone.status, errors(&gone)), (400, vec!["invalid lease"]));
    let none = lease_call(&vault, "renew", &token, json!({}));
    assert_eq!(
        (none.status, errors(&none)),
        (400, vec!["lease_id must be specified"])
    );

    let counts = vault.lease_counts();
    assert_eq!(
        (
            counts.issued,
            counts.renewed,
            counts.revoked,
            counts.expired
        ),
        (3, 1, 1, 0)
    );
    assert_eq!(vault.live_leases(), 2);
}

#[test]
fn a_lease_that_runs_out_is_revoked_and_cannot_be_renewed() {
    let vault = dynamic_vault();
    let token = vault.create_token(&["db"], 0);
    let a = call(&vault, "GET", "/v1/database/creds/brief", Some(&token), "");
    assert_eq!(a.status, 200, "{}", a.body);
    let user = a.body["data"]["username"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!vault.accepts(&user));
    let late = lease_call(
        &vault,
        "renew",
        &token,
        json!({ "lease_id": a.body["lease_id"] }),
    );
    assert_eq!((late.status, errors(&late)), (400, vec!["lease not found"]));
    assert_eq!((vault.live_leases(), vault.lease_counts().expired), (0, 1));
    // Without a grant on the creds path, no credential.
    let other = vault.create_token(&["db-read-only"], 0);
    let refused = call(&vault, "GET", "/v1/database/creds/brief", Some(&other), "");
    assert_eq!(refused.status, 403);
}
