//! `identity: pod` end to end on the host: the real agent (mode disabled:
//! no BPF-LSM here) and the real wrapper over the real socket; callers in
//! cgroups shaped as the kubelet writes them (cgroup v2, systemd driver,
//! containerd), a stand-in Kubernetes API listing the node's pods, and a
//! stand-in Vault with kubernetes auth bound to service accounts and
//! per-path policies. AWS goes to moto (AssumeRoleWithWebIdentity, then
//! GetSecretValue with the assumed credentials).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kernelseal_testkit::kube_api::{AGENT_TOKEN, KubeApi, pod};
use kernelseal_testkit::sa_token::{CLUSTER_KEY, TokenSpec, mint};
use kernelseal_testkit::vault::{Policy, Role, VaultSpec, VaultStandin};
use kernelseal_testkit::{Moto, Reaped, wait_until};

mod support;

use serde_json::json;
use support::{Agent, bin, read};

const NODE: &str = "node-a";
const WEB_UID: &str = "5f0c2a9e-1b7d-4e3a-9c41-0d8e6b2f7a11";
const BILLING_UID: &str = "a3d9e8c1-7f24-4b6a-8e05-c1b2d3e4f5a6";
const WEB_CID: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const BILLING_CID: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const WEB_SECRET: &str = "web-db-pass-7Yq2";
const BILLING_SECRET: &str = "billing-db-pass-Kx91";

/// The tests share the pods' cgroups (same UIDs, same container IDs):
/// one at a time.
static NODE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    NODE_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn dir(name: &str) -> PathBuf {
    support::scratch("podid", name)
}

/// A container's cgroup as the kubelet (systemd driver) and containerd
/// name it; removed on drop.
struct ContainerCgroup(PathBuf);

impl ContainerCgroup {
    fn new(pod_uid: &str, container_id: &str) -> Self {
        let dir = kernelseal_testkit::cgroup::container_cgroup(pod_uid, container_id);
        std::fs::create_dir_all(&dir).expect("create a kubelet-shaped cgroup (run as root)");
        ContainerCgroup(dir)
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        // Innermost first; a parent shared with another pod stays (EBUSY).
        for d in self.0.ancestors().take(4) {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// The node: a pod list with the two pods, their containers started.
fn node(rt: &tokio::runtime::Runtime) -> KubeApi {
    let api = rt.block_on(KubeApi::start());
    api.pods(|p| {
        let mut web = pod("shop", "web", WEB_UID, NODE, &["app"]);
        web["spec"]["serviceAccountName"] = json!("web");
        p.add(web);
        let mut billing = pod("shop", "billing", BILLING_UID, NODE, &["app"]);
        billing["spec"]["serviceAccountName"] = json!("billing");
        p.add(billing);
        p.start_container(WEB_UID, "app", WEB_CID);
        p.start_container(BILLING_UID, "app", BILLING_CID);
    });
    api
}

/// Vault: one role per service account, each reading only its own path.
fn vault() -> VaultStandin {
    VaultStandin::start(
        VaultSpec::default()
            .role(
                "web",
                Role::new(&["web"], &["shop"], &["web-read"]).audience("vault"),
            )
            .role(
                "billing",
                Role::new(&["billing"], &["shop"], &["billing-read"]).audience("vault"),
            )
            .policy(
                "web-read",
                Policy::new().path("secret/data/web/*", &["read"]),
            )
            .policy(
                "billing-read",
                Policy::new().path("secret/data/billing/*", &["read"]),
            )
            .secret("web/db", json!({ "password": WEB_SECRET }))
            .secret("billing/db", json!({ "password": BILLING_SECRET })),
    )
}

fn config(vault_addr: &str) -> String {
    format!(
        r#"version: v1
policy: {{ mode: disabled }}
podIdentity: required
providers:
  vault: {{ type: vault, address: "{vault_addr}" }}
secrets:
  - name: web
    selector: {{ serviceAccount: web, binary: printenv }}
    identity: pod
    secretRefs:
      - {{ name: DB_PASSWORD, source: {{ vaultRef: {{ path: web/db, key: password }} }} }}
  - name: web-reads-billing
    selector: {{ serviceAccount: web, binary: env }}
    identity: pod
    secretRefs:
      - {{ name: DB_PASSWORD, source: {{ vaultRef: {{ path: billing/db, key: password }} }} }}
  - name: web-rotating
    selector: {{ serviceAccount: web, binary: sh }}
    identity: pod
    onRotate: restart
    secretRefs:
      - {{ name: DB_PASSWORD, source: {{ vaultRef: {{ path: web/db, key: password, ttl: 1s }} }} }}
  - name: billing
    selector: {{ serviceAccount: billing, binary: printenv }}
    identity: pod
    secretRefs:
      - {{ name: DB_PASSWORD, source: {{ vaultRef: {{ path: billing/db, key: password }} }} }}
"#
    )
}

fn start_agent(d: &Path, api: &KubeApi, config_text: &str, env: &[(&str, &str)]) -> Agent {
    let kubeconfig = api.kubeconfig(d, AGENT_TOKEN);
    support::start_agent(d, config_text, |c| {
        c.env("KUBECONFIG", &kubeconfig)
            .env("NODE_NAME", NODE)
            .envs(env.iter().copied());
    })
}

/// A projected token of `pod_uid`'s pod, written where the wrapper is
/// told to read it.
fn token_file(d: &Path, name: &str, spec: &TokenSpec) -> (PathBuf, String) {
    let jwt = mint(spec, CLUSTER_KEY);
    let path = d.join(name);
    std::fs::write(&path, &jwt).unwrap();
    (path, jwt)
}

fn web_token() -> TokenSpec {
    TokenSpec::new("shop", "web", "web", WEB_UID)
}

fn billing_token() -> TokenSpec {
    TokenSpec::new("shop", "billing", "billing", BILLING_UID)
}

/// `cmd` through the wrapper, inside the container's cgroup.
fn wrapped_in(cgroup: &ContainerCgroup, socket: &Path, token: &Path, cmd: &[&str]) -> Output {
    wrapper_in(cgroup, socket, token, cmd).output().unwrap()
}

fn wrapper_in(cgroup: &ContainerCgroup, socket: &Path, token: &Path, cmd: &[&str]) -> Command {
    let procs = cgroup.0.join("cgroup.procs");
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(r#"echo $$ > "$0" && exec "$@""#)
        .arg(&procs)
        .arg(bin())
        .arg("exec")
        .arg("--socket")
        .arg(socket)
        .arg("--timeout")
        .arg("3s")
        .arg("--token-file")
        .arg(token)
        .arg("--")
        .args(cmd)
        .stdin(Stdio::null());
    c
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn assert_clean(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "{what} shows a secret or token: {text}");
    }
}

#[test]
fn each_pod_reads_vault_as_itself_and_is_refused_the_others_secret() {
    let _node = one_at_a_time();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = node(&rt);
    let vault = vault();
    let d = dir("two-pods");
    let agent = start_agent(&d, &api, &config(vault.addr()), &[]);
    let web_cg = ContainerCgroup::new(WEB_UID, WEB_CID);
    let billing_cg = ContainerCgroup::new(BILLING_UID, BILLING_CID);
    let (web_tok, web_jwt) = token_file(&d, "web-token", &web_token());
    let (billing_tok, billing_jwt) = token_file(&d, "billing-token", &billing_token());

    let web = wrapped_in(
        &web_cg,
        &agent.socket,
        &web_tok,
        &["printenv", "DB_PASSWORD"],
    );
    let (out, err) = text(&web);
    assert!(web.status.success(), "web: {err}");
    assert_eq!(out.trim(), WEB_SECRET);
    let billing = wrapped_in(
        &billing_cg,
        &agent.socket,
        &billing_tok,
        &["printenv", "DB_PASSWORD"],
    );
    let (out, err) = text(&billing);
    assert!(billing.status.success(), "billing: {err}");
    assert_eq!(out.trim(), BILLING_SECRET);
    assert_eq!(vault.logins_for("web"), 1);
    assert_eq!(vault.logins_for("billing"), 1);

    // web's own login may not read billing's path: Vault says 403.
    let stolen = wrapped_in(&web_cg, &agent.socket, &web_tok, &["env"]);
    let (out, err) = text(&stolen);
    assert_eq!(stolen.status.code(), Some(125), "{out} {err}");
    assert!(
        err.contains("binding \"web-reads-billing\"") && err.contains("permission denied"),
        "the refusal names the binding and Vault's answer: {err}"
    );
    assert!(
        !err.contains("gave up after"),
        "Vault's no is final: not retried until the timeout: {err}"
    );
    assert_clean("the wrapper", &(out + &err), &[BILLING_SECRET, &web_jwt]);

    // A caller presenting another pod's token: refused before any call.
    let (logins, reads) = (vault.logins(), vault.total_reads());
    let borrowed = wrapped_in(
        &web_cg,
        &agent.socket,
        &billing_tok,
        &["printenv", "DB_PASSWORD"],
    );
    let (out, err) = text(&borrowed);
    assert_eq!(borrowed.status.code(), Some(125), "{out} {err}");
    assert!(
        err.contains(&format!(
            "the service-account token belongs to pod {BILLING_UID}"
        )) && err.contains(&format!("not to the calling pod {WEB_UID}")),
        "{err}"
    );
    assert_eq!((vault.logins(), vault.total_reads()), (logins, reads));
    assert_clean(
        "the wrapper",
        &(out + &err),
        &[&billing_jwt, BILLING_SECRET],
    );

    // Warm: the same pods again cost Vault nothing.
    for _ in 0..3 {
        let again = wrapped_in(
            &web_cg,
            &agent.socket,
            &web_tok,
            &["printenv", "DB_PASSWORD"],
        );
        assert!(again.status.success());
    }
    assert_eq!((vault.logins(), vault.total_reads()), (logins, reads));

    let log = read(&agent.log);
    assert!(
        log.contains("reads as the pod (identity: pod): the service-account token belongs to pod"),
        "the refusal is logged: {log}"
    );
    assert_clean(
        "the agent's log",
        &log,
        &[WEB_SECRET, BILLING_SECRET, &web_jwt, &billing_jwt],
    );
}

#[test]
fn a_rotated_token_is_used_by_the_next_request_and_an_expired_one_is_refused() {
    let _node = one_at_a_time();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = node(&rt);
    let vault = vault();
    let d = dir("rotation");
    let agent = start_agent(&d, &api, &config(vault.addr()), &[]);
    let web_cg = ContainerCgroup::new(WEB_UID, WEB_CID);
    let (tok, _) = token_file(&d, "token", &web_token());
    let first = wrapped_in(&web_cg, &agent.socket, &tok, &["printenv", "DB_PASSWORD"]);
    assert!(first.status.success(), "{:?}", text(&first));
    assert_eq!(vault.logins_for("web"), 1);

    // The kubelet rotates the projected token: the next start sends the
    // new one, whose first use is a login of its own.
    let rotated = TokenSpec {
        expires_in_secs: 7200,
        ..web_token()
    };
    let (_, new_jwt) = token_file(&d, "token", &rotated);
    let second = wrapped_in(&web_cg, &agent.socket, &tok, &["printenv", "DB_PASSWORD"]);
    let (out, err) = text(&second);
    assert!(second.status.success(), "{err}");
    assert_eq!(out.trim(), WEB_SECRET);
    assert_eq!(vault.logins_for("web"), 2, "the new token logged in");
    assert_eq!(
        vault.reads("web/db"),
        1,
        "the identity's cache still serves"
    );

    // An expired token never reaches Vault.
    let expired = TokenSpec {
        expires_in_secs: -120,
        ..web_token()
    };
    token_file(&d, "token", &expired);
    let third = wrapped_in(&web_cg, &agent.socket, &tok, &["printenv", "DB_PASSWORD"]);
    let (out, err) = text(&third);
    assert_eq!(third.status.code(), Some(125), "{out} {err}");
    assert!(err.contains("the service-account token expired"), "{err}");
    assert_eq!(vault.logins_for("web"), 2);
    assert_clean(
        "the agent's log",
        &read(&agent.log),
        &[&new_jwt, WEB_SECRET],
    );
}

#[test]
fn a_secret_read_as_the_pod_rotates_while_the_app_runs() {
    let _node = one_at_a_time();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = node(&rt);
    let vault = vault();
    let d = dir("rotates");
    let agent = start_agent(&d, &api, &config(vault.addr()), &[]);
    let web_cg = ContainerCgroup::new(WEB_UID, WEB_CID);
    let (tok, _) = token_file(&d, "token", &web_token());
    let script = r#"trap 'kill $! 2>/dev/null; echo "restarted; had $DB_PASSWORD"; exit 0' TERM; echo started; sleep 60 & wait"#;
    let mut app = Reaped(
        wrapper_in(&web_cg, &agent.socket, &tok, &["sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_until(
        10,
        || read(&agent.log).contains("[INJECT] Secrets injected into PID"),
        || format!("not delivered: {}", read(&agent.log)),
    );
    // A new version in Vault: the identity's cache sees it on refresh
    // (ttl 1s) and the binding's onRotate restarts the app.
    vault.put_secret("web/db", json!({ "password": "web-db-pass-v2" }));
    wait_until(
        15,
        || matches!(app.0.try_wait(), Ok(Some(_))),
        || format!("not restarted: {}", read(&agent.log)),
    );
    let mut out = String::new();
    std::io::Read::read_to_string(app.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(
        out.contains(&format!("restarted; had {WEB_SECRET}")),
        "{out}"
    );
    let log = read(&agent.log);
    assert!(
        log.contains("terminated for a restart with the new value (binding web-rotating)"),
        "{log}"
    );
    assert_clean("the agent's log", &log, &[WEB_SECRET, "web-db-pass-v2"]);
}

#[test]
fn aws_reads_as_the_pod_through_web_identity() {
    let _node = one_at_a_time();
    let Some(moto) = Moto::start("POD IDENTITY AWS TEST") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
        let conf = aws_sdk_secretsmanager::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("admin", "admin", None, None, "test"))
            .endpoint_url(&moto.endpoint)
            .build();
        aws_sdk_secretsmanager::Client::from_conf(conf)
            .create_secret()
            .name("shop/web")
            .secret_string(r#"{"api_key":"aws-web-key-Q81"}"#)
            .send()
            .await
            .expect("create the secret in moto");
    });
    let api = node(&rt);
    let d = dir("aws");
    // web's service account carries IRSA's annotation; billing's none.
    api.pods(|p| {
        p.add_service_account(
            "shop",
            "web",
            json!({ "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/web" }),
        );
        p.add_service_account("shop", "billing", json!({}));
    });
    let config = r#"version: v1
policy: { mode: disabled }
podIdentity: required
providers:
  aws: { type: aws, region: us-east-1 }
secrets:
  - name: web
    selector: { serviceAccount: web, binary: printenv }
    identity: pod
    secretRefs:
      - { name: API_KEY, source: { awsRef: { secretId: shop/web, jsonKey: api_key } } }
  - name: web-named-role
    selector: { serviceAccount: web, binary: env }
    identity: { awsRoleArn: "arn:aws:iam::123456789012:role/web-explicit" }
    secretRefs:
      - { name: API_KEY, source: { awsRef: { secretId: shop/web, jsonKey: api_key } } }
  - name: billing
    selector: { serviceAccount: billing }
    identity: pod
    secretRefs:
      - { name: API_KEY, source: { awsRef: { secretId: shop/web, jsonKey: api_key } } }
"#;
    // No credentials of the agent's own: only the pod's web identity works.
    let agent = start_agent(
        &d,
        &api,
        config,
        &[
            ("AWS_ENDPOINT_URL", &moto.endpoint),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let web_cg = ContainerCgroup::new(WEB_UID, WEB_CID);
    let sts = TokenSpec {
        audiences: vec!["sts.amazonaws.com".into()],
        ..web_token()
    };
    let (tok, jwt) = token_file(&d, "sts-token", &sts);
    // The role from the service account's annotation…
    let out = wrapped_in(&web_cg, &agent.socket, &tok, &["printenv", "API_KEY"]);
    let (stdout, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(stdout.trim(), "aws-web-key-Q81");
    // …or the one the binding names.
    let named = wrapped_in(&web_cg, &agent.socket, &tok, &["env"]);
    let (stdout, err) = text(&named);
    assert!(named.status.success(), "{err}");
    assert!(stdout.contains("API_KEY=aws-web-key-Q81"), "{stdout}");
    // Neither: refused with what to set.
    let billing_cg = ContainerCgroup::new(BILLING_UID, BILLING_CID);
    let billing_sts = TokenSpec {
        audiences: vec!["sts.amazonaws.com".into()],
        ..billing_token()
    };
    let (billing_tok, _) = token_file(&d, "billing-sts-token", &billing_sts);
    let none = wrapped_in(
        &billing_cg,
        &agent.socket,
        &billing_tok,
        &["printenv", "API_KEY"],
    );
    let (_, err) = text(&none);
    assert_eq!(none.status.code(), Some(125), "{err}");
    assert!(
        err.contains(
            "no IAM role is named: set identity.awsRoleArn on the binding or annotate service \
             account shop/billing with eks.amazonaws.com/role-arn"
        ),
        "{err}"
    );
    // A Vault-audience token is not one STS takes: refused by the agent.
    let (vault_tok, _) = token_file(&d, "vault-token", &web_token());
    let wrong = wrapped_in(&web_cg, &agent.socket, &vault_tok, &["printenv", "API_KEY"]);
    let (_, err) = text(&wrong);
    assert_eq!(wrong.status.code(), Some(125));
    assert!(
        err.contains("no service-account token for audience \"sts.amazonaws.com\""),
        "{err}"
    );
    assert_clean(
        "the agent's log",
        &read(&agent.log),
        &[&jwt, "aws-web-key-Q81"],
    );
}
