//! Expansion end to end: the real agent (mode disabled) and the real
//! wrapper. A JSON file, an AWS secret holding a JSON object and every SSM
//! parameter below a path (moto) are each delivered as several variables
//! or files, named by the documented mapping; a rotated JSON file rewrites
//! each expanded file with its own part.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kernelseal_testkit::{Moto, wait_until};

mod support;

use support::{Agent, bin, read};

fn dir(name: &str) -> PathBuf {
    support::scratch("expand", name)
}

fn agent(d: &Path, config: &str, extra: &[&str], env: &[(&str, &str)]) -> Agent {
    support::start_agent(d, config, |c| {
        c.args(extra);
        c.envs(env.iter().copied());
    })
}

/// `sh -c script` through the wrapper; its stdout, or a panic with its
/// stderr and the agent's log.
fn wrapped(agent: &Agent, script: &str) -> String {
    let out = Command::new(bin())
        .arg("exec")
        .arg("--socket")
        .arg(&agent.socket)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\nagent: {}",
        String::from_utf8_lossy(&out.stderr),
        read(&agent.log)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A wrapper start the agent refuses: its stderr.
fn refused(agent: &Agent) -> String {
    let out = Command::new(bin())
        .arg("exec")
        .arg("--socket")
        .arg(&agent.socket)
        .args(["--", "sh", "-c", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the wrapper was not refused");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_not_logged(agent: &Agent, values: &[&str]) {
    let log = read(&agent.log);
    for v in values {
        assert!(!log.contains(v), "{v:?} in the agent log: {log}");
    }
}

#[test]
fn a_json_file_is_delivered_key_by_key_and_by_path() {
    let d = dir("file-env");
    let json = d.join("db.json");
    std::fs::write(
        &json,
        r#"{"user":"exp-user","pass-word":"exp-pw-41c","2fa":"exp-otp","conn":{"host":"exp-host","ports":[5432,6432]}}"#,
    )
    .unwrap();
    let config = format!(
        "version: v1\npolicy: {{ mode: disabled }}\nsecrets:\n  - name: app\n    selector: {{ binary: sh }}\n    secretRefs:\n      - {{ keys: all, prefix: DB_, source: {{ fileRef: {p} }} }}\n      - {{ keys: all, source: {{ fileRef: {p} }} }}\n      - jmesPath:\n          - {{ path: conn.host, name: PGHOST }}\n          - {{ path: 'conn.ports[-1]', name: PGPORT }}\n        source: {{ fileRef: {p} }}\n",
        p = json.display()
    );
    let agent = agent(&d, &config, &[], &[]);
    let out = wrapped(
        &agent,
        "echo \"$DB_user|$DB_pass_word|$DB_2fa|$DB_conn|$_2fa|$pass_word|$PGHOST|$PGPORT\"",
    );
    assert_eq!(
        out.trim(),
        r#"exp-user|exp-pw-41c|exp-otp|{"host":"exp-host","ports":[5432,6432]}|exp-otp|exp-pw-41c|exp-host|6432"#
    );
    let log = read(&agent.log);
    assert!(
        log.contains("DB_pass_word") && log.contains("PGPORT"),
        "{log}"
    );
    assert_not_logged(&agent, &["exp-pw-41c", "exp-otp", "exp-host"]);
}

#[test]
fn a_json_that_is_not_an_object_refuses_the_wrapper_naming_the_ref() {
    let d = dir("not-object");
    let json = d.join("list.json");
    std::fs::write(&json, r#"["exp-listed-9"]"#).unwrap();
    let config = format!(
        "version: v1\npolicy: {{ mode: disabled }}\nsecrets:\n  - name: app\n    selector: {{ binary: sh }}\n    secretRefs:\n      - {{ keys: all, source: {{ fileRef: {} }} }}\n",
        json.display()
    );
    let agent = agent(&d, &config, &[], &[]);
    let err = refused(&agent);
    assert!(
        err.contains(&format!(
            "fileRef {}: keys: keys: all needs a JSON object; the value is an array",
            json.display()
        )),
        "{err}"
    );
    assert!(!err.contains("exp-listed-9"), "{err}");
    assert_not_logged(&agent, &["exp-listed-9"]);
}

#[test]
fn expanded_files_are_written_and_each_rewritten_with_its_part() {
    let d = dir("file-rotate");
    let shm = PathBuf::from(format!("/dev/shm/ks-expand-{}", std::process::id()));
    let json = d.join("tls.json");
    std::fs::write(&json, r#"{"tls.crt":"crt-one","tls.key":"key-one"}"#).unwrap();
    let config = format!(
        "version: v1\npolicy: {{ mode: disabled }}\nsecrets:\n  - name: files\n    selector: {{ binary: sh }}\n    delivery: file\n    secretRefs:\n      - {{ keys: all, prefix: app-, source: {{ fileRef: {{ path: {}, ttl: 1s }} }} }}\n",
        json.display()
    );
    let agent = agent(&d, &config, &["--secrets-dir", shm.to_str().unwrap()], &[]);
    let seen = d.join("seen");
    let script = format!(
        "while true; do cat \"$KERNELSEAL_SECRETS_DIR/app-tls.crt\" \"$KERNELSEAL_SECRETS_DIR/app-tls.key\" >> {s}; echo >> {s}; sleep 0.2; done",
        s = seen.display()
    );
    let app = kernelseal_testkit::Reaped(
        Command::new(bin())
            .arg("exec")
            .arg("--socket")
            .arg(&agent.socket)
            .args(["--", "sh", "-c", &script])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(
        10,
        || read(&seen).contains("crt-onekey-one"),
        || format!("files not delivered: {}", read(&agent.log)),
    );
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&json, r#"{"tls.crt":"crt-two","tls.key":"key-two"}"#).unwrap();
    wait_until(
        20,
        || read(&seen).contains("crt-twokey-two"),
        || format!("files not rewritten: {}", read(&agent.log)),
    );
    drop(app);
    let log = read(&agent.log);
    assert!(
        log.contains("rewrote app-tls.crt for PID") && log.contains("rewrote app-tls.key for PID"),
        "{log}"
    );
    assert_not_logged(&agent, &["crt-one", "key-two"]);
    let _ = std::fs::remove_dir_all(&shm);
}

#[test]
fn an_aws_json_secret_and_an_ssm_path_are_expanded_from_moto() {
    let Some(moto) = Moto::start("EXPANSION DELIVERY TEST") else {
        return;
    };
    let ep = moto.endpoint.as_str();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let sm = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::config::Builder::new()
                .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
                .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                    "testing", "testing", None, None, "t",
                ))
                .endpoint_url(ep)
                .build(),
        );
        sm.create_secret()
            .name("prod/db")
            .secret_string(r#"{"username":"aws-user-1","password":"aws-pw-77d","engine":"pg"}"#)
            .send()
            .await
            .unwrap();
        let ssm = aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::new()
                .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
                .region(aws_sdk_ssm::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_ssm::config::Credentials::new(
                    "testing", "testing", None, None, "t",
                ))
                .endpoint_url(ep)
                .build(),
        );
        for i in 0..12 {
            ssm.put_parameter()
                .name(format!("/prod/app/k{i:02}"))
                .value(format!("ssm-v-{i:02}"))
                .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                .send()
                .await
                .unwrap();
        }
        ssm.put_parameter()
            .name("/prod/app/db/password")
            .value("ssm-nested-pw")
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send()
            .await
            .unwrap();
    });
    let d = dir("moto");
    let config = format!(
        "version: v1\npolicy: {{ mode: disabled }}\nproviders:\n  east: {{ type: aws, region: us-east-1, endpoints: {{ us-east-1: \"{ep}\" }}, ssmEndpoints: {{ us-east-1: \"{ep}\" }} }}\nsecrets:\n  - name: app\n    selector: {{ binary: sh }}\n    secretRefs:\n      - {{ keys: all, prefix: DB_, source: {{ awsRef: {{ secretId: prod/db }} }} }}\n      - {{ jmesPath: [{{ path: password, name: PGPASSWORD }}], source: {{ awsRef: {{ secretId: prod/db }} }} }}\n      - {{ keys: all, prefix: APP_, source: {{ ssmRef: {{ path: /prod/app/, recursive: true }} }} }}\n"
    );
    let agent = agent(
        &d,
        &config,
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let out = wrapped(
        &agent,
        "echo \"$DB_username|$DB_password|$DB_engine|$PGPASSWORD|$APP_k00|$APP_k11|$APP_db_password\"; env | grep -c '^APP_'",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "aws-user-1|aws-pw-77d|pg|aws-pw-77d|ssm-v-00|ssm-v-11|ssm-nested-pw"
    );
    assert_eq!(lines[1], "13", "every parameter below the path: {out}");
    assert_not_logged(&agent, &["aws-pw-77d", "ssm-v-", "ssm-nested-pw"]);
}

#[test]
fn a_whole_vault_kv_path_is_delivered_key_by_key() {
    use kernelseal_testkit::vault::{Policy, VaultSpec, VaultStandin};
    let d = dir("vault-kv");
    let vault = VaultStandin::start(
        VaultSpec::default()
            .policy("app", Policy::new().path("secret/data/shop/*", &["read"]))
            .secret(
                "shop/db",
                serde_json::json!({ "user": "kv-user", "pass-word": "kv-pw-7e1", "port": 5432 }),
            ),
    );
    let token = vault.create_token(&["app"], 0);
    let config = format!(
        "version: v1\npolicy: {{ mode: disabled }}\nproviders:\n  vault: {{ type: vault, address: \"{}\" }}\nsecrets:\n  - name: app\n    selector: {{ binary: sh }}\n    secretRefs:\n      - {{ keys: all, prefix: DB_, source: {{ vaultRef: {{ path: shop/db }} }} }}\n",
        vault.addr()
    );
    let agent = agent(&d, &config, &[], &[("VAULT_TOKEN", token.as_str())]);
    let out = wrapped(&agent, "echo \"$DB_user|$DB_pass_word|$DB_port\"");
    assert_eq!(out.trim(), "kv-user|kv-pw-7e1|5432");
    // The whole path is one read, whatever the number of keys.
    assert_eq!(vault.reads("shop/db"), 1);
    assert_not_logged(&agent, &["kv-pw-7e1", &token]);
}

#[test]
fn a_template_is_delivered_as_a_file_and_a_missing_key_names_it() {
    let d = dir("template-file");
    let json = d.join("db.json");
    std::fs::write(&json, r#"{"username":"tpl-user","password":"tpl-pw-93f"}"#).unwrap();
    let config = format!(
        "version: v1\npolicy: {{ mode: disabled }}\nsecrets:\n  - name: files\n    selector: {{ binary: sh }}\n    delivery: file\n    secretRefs:\n      - name: .pgpass\n        source:\n          template:\n            text: \"db:5432:app:{{{{ db.username }}}}:{{{{ db.password }}}}\\n\"\n            refs:\n              db: {{ fileRef: {} }}\n",
        json.display()
    );
    let shm = PathBuf::from(format!("/dev/shm/ks-expand-tpl-{}", std::process::id()));
    let secrets_dir = ["--secrets-dir", shm.to_str().unwrap()];
    let agent = agent(&d, &config, &secrets_dir, &[]);
    let out = wrapped(&agent, "cat \"$KERNELSEAL_SECRETS_DIR/.pgpass\"");
    assert_eq!(out, "db:5432:app:tpl-user:tpl-pw-93f\n");
    assert_not_logged(&agent, &["tpl-pw-93f"]);

    // A key the value lacks: the wrapper is refused, naming the template's
    // ref and key, never the value.
    std::fs::write(&json, r#"{"user":"tpl-user","password":"tpl-pw-93f"}"#).unwrap();
    let d2 = dir("template-missing");
    let agent = self::agent(&d2, &config, &secrets_dir, &[]);
    let err = refused(&agent);
    assert!(err.contains("ref db has no key \"username\""), "{err}");
    assert!(!err.contains("tpl-pw-93f"), "{err}");
    drop(agent);
    let _ = std::fs::remove_dir_all(&shm);
}
